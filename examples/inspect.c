/*
 * Looking inside a running program: a dump of every task, and the
 * runtime's counters.  One task waits on a channel nobody sends on, one
 * sleeps for a minute, and the root, after letting them start, writes a
 * dump and a few metrics before cancelling both.  A real program would
 * get the same dump from `kill -QUIT <pid>`.
 */
#include <braid.h>
#include <inttypes.h>
#include <stdio.h>

static braid_chan *inbox;

static void *consumer(void *arg)
{
    (void)arg;
    int job;
    braid_chan_recv(inbox, &job); /* nobody ever sends */
    return NULL;
}

static void *napper(void *arg)
{
    (void)arg;
    braid_sleep_ms(60000);
    return NULL;
}

static void spawn_named(braid_task *t, const char *name, braid_fn fn)
{
    braid_spawn_opts opts = BRAID_SPAWN_OPTS_INIT;
    opts.name = name;
    braid_spawn_ex(t, &opts, fn, NULL);
}

static void *root(void *arg)
{
    (void)arg;
    braid_chan_new(&inbox, sizeof(int), 0);
    braid_task c, n;
    spawn_named(&c, "consumer", consumer);
    spawn_named(&n, "napper", napper);
    braid_yield(); /* one worker: both run until they wait */

    /* guide:begin dump */
    braid_dump(NULL, stdout); /* NULL: the caller's runtime */

    braid_metrics m = BRAID_METRICS_INIT;
    braid_metrics_get(NULL, &m);
    printf("%" PRIu64 " tasks alive, %" PRIu64 " spawned, %" PRIu64 " completed\n",
           m.tasks_alive, m.tasks_spawned, m.tasks_completed);
    /* guide:end dump */

    braid_cancel(c);
    braid_cancel(n);
    braid_join(c, NULL);
    braid_join(n, NULL);
    braid_chan_sender_drop(inbox);
    braid_chan_receiver_drop(inbox);
    return NULL;
}

int main(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1; /* a fixed schedule for the example */
    braid_runtime *rt;
    if (braid_runtime_new(&cfg, &rt) != 0)
        return 1;
    int fate = braid_block_on(rt, root, NULL, NULL);
    braid_runtime_free(rt);
    return fate == BRAID_OK ? 0 : 1;
}
