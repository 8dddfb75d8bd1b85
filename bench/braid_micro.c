/*
 * Microbenchmarks of braid's basic paths, on one worker (the calling
 * thread), in a warm process: what a spawn, a join, a switch cost when
 * nothing is cold.  Prints one "name=<ns per op>" line each.
 *
 *     braid-micro [N [NAME]]   (default 1,000,000 operations each; NAME runs
 *                              one of them, once, without a warm-up round)
 *
 * bench/instructions.sh runs NAME under callgrind at two sizes to count the
 * instructions per operation.
 */
#include <braid.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t n_ops;
static const char *only;
static braid_notify *done;
static braid_mutex mu = BRAID_MUTEX_INIT;

static void *empty(void *arg)
{
    return arg;
}

static void *yielder(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; i < n_ops; i++)
        braid_yield();
    return NULL;
}

static void *link_task(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    if (k == 1)
        braid_notify_one(done);
    else
        braid_spawn(NULL, link_task, (void *)(k - 1));
    return NULL;
}

static void report(const char *name, uint64_t t0, uint64_t ops)
{
    printf("%s=%.1f\n", name, (double)(braid_now_ns() - t0) / (double)ops);
}

static bool want(const char *name)
{
    return !only || strcmp(only, name) == 0;
}

static void *root(void *arg)
{
    (void)arg;
    /* Warm the caches and stacks first (not when measuring one). */
    for (int round = only ? 1 : 0; round < 2; round++) {
        uint64_t t0 = braid_now_ns();
        for (uint64_t i = 0; want("spawn_join_inline") && i < n_ops; i++) {
            braid_task h;
            braid_spawn(&h, empty, NULL);
            braid_join(h, NULL);
        }
        if (round && want("spawn_join_inline"))
            report("spawn_join_inline_ns", t0, n_ops);

        t0 = braid_now_ns();
        if (want("chained_link") && n_ops) {
            braid_spawn(NULL, link_task, (void *)(uintptr_t)n_ops);
            braid_notify_wait(done);
            if (round)
                report("chained_link_ns", t0, n_ops);
        }

        t0 = braid_now_ns();
        if (want("yield_pair")) {
            braid_task a, b;
            braid_spawn(&a, yielder, NULL);
            braid_spawn(&b, yielder, NULL);
            braid_join(a, NULL);
            braid_join(b, NULL);
            if (round)
                report("yield_pair_ns", t0, 2 * n_ops);
        }

        t0 = braid_now_ns();
        for (uint64_t i = 0; want("yield_alone") && i < n_ops; i++)
            braid_yield();
        if (round && want("yield_alone"))
            report("yield_alone_ns", t0, n_ops);

        t0 = braid_now_ns();
        for (uint64_t i = 0; want("mutex_uncontended") && i < n_ops; i++) {
            braid_mutex_lock(&mu);
            braid_mutex_unlock(&mu);
        }
        if (round && want("mutex_uncontended"))
            report("mutex_lock_unlock_ns", t0, n_ops);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    n_ops = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    only = argc > 2 ? argv[2] : NULL;
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    if (braid_notify_new(&done) || braid_runtime_new(&cfg, &rt))
        return 2;
    int fate = braid_block_on(rt, root, NULL, NULL);
    braid_runtime_free(rt);
    braid_notify_free(done);
    return fate == BRAID_OK ? 0 : 1;
}
