/*
 * A program to watch with tools/braid-console, the live console:
 *
 *     BRAID_CONSOLE=/tmp/braid.sock build/ex/console &
 *     build/tools/braid-console /tmp/braid.sock
 *
 * Its tasks wait on different things (a channel nobody sends on, a long
 * sleep, Ctrl-C), and one of them, the cruncher, makes the classic
 * mistake: it computes for 300 ms at a time without suspending, as a
 * blocking call would, and holds up every other task of its worker.  The
 * watchdog reports it each time, on stderr and in the console's WARNING
 * lines.  Runs until SIGINT (Ctrl-C).
 */
#include <braid.h>
#include <signal.h>
#include <stdint.h>
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
    braid_sleep_ms(3600000); /* an hour */
    return NULL;
}

static void *cruncher(void *arg)
{
    (void)arg;
    uint64_t sum = 0;
    do {
        uint64_t until = braid_now_ns() + 300 * UINT64_C(1000000);
        while (braid_now_ns() < until) /* the mistake: no suspension */
            sum += until;
    } while (braid_sleep_ms(700) == 0); /* until cancelled */
    return (void *)(uintptr_t)sum;
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
    braid_signal_catch(SIGINT); /* before anything can be watched */
    braid_chan_new(&inbox, sizeof(int), 0);
    braid_task t[3];
    spawn_named(&t[0], "consumer", consumer);
    spawn_named(&t[1], "napper", napper);
    spawn_named(&t[2], "cruncher", cruncher);
    printf("running; Ctrl-C ends it\n");
    fflush(stdout);
    braid_signal_wait(SIGINT);
    for (int i = 0; i < 3; i++)
        braid_cancel(t[i]);
    for (int i = 0; i < 3; i++)
        braid_join(t[i], NULL);
    braid_chan_sender_drop(inbox);
    braid_chan_receiver_drop(inbox);
    return NULL;
}

int main(void)
{
    /* The default configuration: BRAID_CONSOLE, if set, names the socket. */
    return braid_run(root, NULL, NULL) == BRAID_OK ? 0 : 1;
}
