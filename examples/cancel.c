/*
 * Cancellation, defers and shields.
 *
 *  - A ticker is cancelled while it works: its next blocking call returns
 *    -ECANCELED, it releases what it holds and returns; its joiner sees the
 *    fate BRAID_CANCELLED and still gets the value it returned.
 *  - A defer releases a resource when the task panics, and on the normal
 *    path when it is popped with run = true.
 *  - A shield lets a two-step commit finish although cancellation was
 *    requested half-way; the request takes effect after the shield.
 *  - A task cancelled before it ever ran never runs: its arg_drop frees
 *    its argument.
 *
 * The runtime has one worker, so that "before it ever ran" is certain: a
 * spawned task cannot start until the root task suspends.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* guide:begin ticker */
static void close_log(void *arg)
{
    printf("%s: log closed\n", (const char *)arg);
}

static void *ticker(void *arg)
{
    braid_chan *ticks = arg;
    braid_defer closer;
    braid_defer_push(&closer, close_log, "ticker");
    uintptr_t sent = 0;
    for (;;) {
        if (braid_sleep_ms(1) == -ECANCELED)
            break;
        if (braid_chan_send(ticks, &sent) == -ECANCELED)
            break;
        sent++;
    }
    braid_defer_pop(&closer, true); /* the return path runs it too */
    return (void *)sent;
}
/* guide:end ticker */

/* guide:begin panicky */
static void free_table(void *table)
{
    printf("panicky: table freed\n");
    free(table);
}

static void *panicky(void *arg)
{
    (void)arg;
    int *table = calloc(4, sizeof *table);
    BRAID_ASSERT(table != NULL);
    braid_defer freer;
    braid_defer_push(&freer, free_table, table);
    BRAID_ASSERT(table[0] == 1); /* fails: the defer runs, then the task ends */
    braid_defer_pop(&freer, true);
    return NULL;
}
/* guide:end panicky */

/* guide:begin commit */
static void *commit(void *arg)
{
    braid_notify *started = arg;
    bool was = braid_cancel_shield(true);
    braid_notify_one(started);
    braid_sleep_ms(20); /* shielded: sleeps the full 20 ms although cancelled */
    printf("commit: step 1 written\n");
    braid_sleep_ms(20);
    printf("commit: step 2 written\n");
    braid_cancel_shield(was);
    if (braid_yield() == -ECANCELED) /* the first cancellation point after the shield */
        printf("commit: cancellation seen after the commit\n");
    return NULL;
}
/* guide:end commit */

static void drop_job(void *arg)
{
    printf("job: dropped without running\n");
    free(arg);
}

static void *job(void *arg)
{
    printf("job: running\n"); /* never printed: cancelled before it starts */
    free(arg);
    return NULL;
}

static void *root(void *arg)
{
    (void)arg;
    /* guide:begin cancel */
    braid_chan *ticks;
    braid_chan_new(&ticks, sizeof(uintptr_t), 0); /* rendezvous: each send waits for us */
    braid_task t;
    braid_spawn(&t, ticker, ticks);
    uintptr_t tick;
    for (int i = 0; i < 3; i++)
        braid_chan_recv(ticks, &tick);
    braid_cancel(t); /* does not wait: the ticker sees it at its next blocking call */
    void *sent;
    int fate = braid_join(t, &sent);
    if (fate == BRAID_CANCELLED)
        printf("ticker: cancelled after %lu ticks\n", (unsigned long)(uintptr_t)sent);
    braid_chan_sender_drop(ticks);
    braid_chan_receiver_drop(ticks);
    /* guide:end cancel */

    braid_outcome out = BRAID_OUTCOME_INIT;
    braid_spawn(&t, panicky, NULL);
    braid_join_ex(t, &out);
    if (out.status == BRAID_PANICKED)
        printf("panicky: panicked: %s\n", out.message);

    /* guide:begin shield */
    braid_notify *started;
    braid_notify_new(&started);
    braid_spawn(&t, commit, started);
    braid_notify_wait(started); /* the commit is under way */
    braid_cancel(t);
    printf("commit: cancel requested\n");
    if (braid_join(t, NULL) == BRAID_CANCELLED)
        printf("commit: cancelled\n");
    braid_notify_free(started);
    /* guide:end shield */

    /* guide:begin arg_drop */
    braid_spawn_opts opts = BRAID_SPAWN_OPTS_INIT;
    opts.arg_drop = drop_job;
    braid_spawn_ex(&t, &opts, job, malloc(64));
    braid_cancel(t); /* it has not started: it never will */
    if (braid_join(t, NULL) == BRAID_CANCELLED)
        printf("job: cancelled\n");
    /* guide:end arg_drop */
    return NULL;
}

int main(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    int rc = braid_runtime_new(&cfg, &rt);
    if (rc == 0) {
        rc = braid_block_on(rt, root, NULL, NULL);
        braid_runtime_free(rt);
    }
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid: %s\n", braid_strerror(rc));
        return 1;
    }
    return 0;
}
