/*
 * Multi-worker stress, meant above all for TSan: many tasks spawning,
 * joining, detaching, cancelling, panicking, sleeping and yielding at once,
 * plus plain threads doing the same from outside, for a bounded time.
 * Invariants checked at the end: every spawned task either ran or had its
 * argument dropped, exactly once; every defer pushed ran exactly once; every
 * join saw a fate consistent with what the task did.
 */
#include "test.h"

#include <pthread.h>

static atomic_long spawned, bodies, drops, defers_pushed, defers_run, joins_ok;
static uint64_t deadline_ns;
static braid_runtime *the_rt;

enum { K_VALUE, K_SLEEP, K_PANIC, K_SPAWNER, K_YIELDER, K_KINDS };

struct job {
    int kind;
    int depth;
    uint64_t seed;
};

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void defer_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&defers_run, 1);
}

static void drop_job(void *arg)
{
    atomic_fetch_add(&drops, 1);
    free(arg);
}

static void *job_body(void *arg);

/* Spawn a job of a random kind; returns 0 or a negative error. */
static int spawn_job(braid_task *out, uint64_t *seed, int depth, braid_runtime *rt)
{
    struct job *j = malloc(sizeof *j);
    CHECK(j != NULL);
    j->kind = (int)(next(seed) % K_KINDS);
    j->depth = depth;
    j->seed = next(seed) | 1;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = drop_job;
    atomic_fetch_add(&spawned, 1);
    int rc = rt ? braid_spawn_on_ex(rt, out, &o, job_body, j) : braid_spawn_ex(out, &o, job_body, j);
    if (rc != 0) {
        atomic_fetch_sub(&spawned, 1);
        free(j);
    }
    return rc;
}

static void check_fate(int fate, void *value)
{
    CHECK(fate == BRAID_OK || fate == BRAID_PANICKED || fate == BRAID_CANCELLED);
    if (fate == BRAID_OK && (uintptr_t)value != 0x600d)
        TEST_FAIL("fate OK but value %p", value);
    else if (fate == BRAID_CANCELLED)
        CHECK(value == NULL || (uintptr_t)value == 0x600d);
    atomic_fetch_add(&joins_ok, 1);
}

static void *call_body(void *arg)
{
    (void)arg;
    braid_sleep_ms(0);
    return (void *)0x600d;
}

static void *job_body(void *arg)
{
    struct job j = *(struct job *)arg;
    free(arg);
    atomic_fetch_add(&bodies, 1);
    braid_defer d;
    braid_defer_push(&d, defer_fn, NULL);
    atomic_fetch_add(&defers_pushed, 1);
    switch (j.kind) {
    case K_VALUE:
        break;
    case K_SLEEP:
        braid_sleep_ms(next(&j.seed) % 3);
        break;
    case K_PANIC:
        braid_yield();
        braid_panic("stress panic");
    case K_YIELDER:
        for (int i = 0; i < 10; i++)
            if (braid_yield() < 0)
                break;
        break;
    case K_SPAWNER:
        if (j.depth < 3) {
            braid_task h[3];
            int n = 0;
            for (int i = 0; i < 3; i++)
                if (spawn_job(&h[n], &j.seed, j.depth + 1, NULL) == 0)
                    n++;
            for (int i = 0; i < n; i++) {
                if (next(&j.seed) % 4 == 0)
                    braid_cancel(h[i]);
                if (next(&j.seed) % 5 == 0) {
                    CHECK_EQ(braid_detach(h[i]), 0);
                    continue;
                }
                void *v = NULL;
                int f = braid_join(h[i], &v);
                if (f == -ECANCELED) {
                    /* We were cancelled: still reap the child. */
                    bool was = braid_cancel_shield(true);
                    f = braid_join(h[i], &v);
                    braid_cancel_shield(was);
                }
                check_fate(f, v);
            }
        }
        break;
    }
    if (next(&j.seed) % 8 == 0) {
        braid_call calls[2] = { { call_body, NULL, NULL }, { call_body, NULL, NULL } };
        int rc = braid_join_all(calls, 2);
        CHECK(rc == 0 || rc == -ECANCELED);
    }
    braid_defer_pop(&d, true);
    return (void *)0x600d;
}

/* An actor keeps spawning and reaping jobs until the deadline. */
static void *actor(void *arg)
{
    uint64_t seed = (uintptr_t)arg * 2654435761u + 1;
    while (braid_now_ns() < deadline_ns) {
        braid_task h;
        if (spawn_job(&h, &seed, 0, NULL) != 0)
            continue;
        switch (next(&seed) % 4) {
        case 0:
            braid_cancel(h);
            /* fall through */
        case 1: {
            void *v = NULL;
            int f = braid_join(h, &v);
            check_fate(f, v);
            break;
        }
        case 2:
            CHECK_EQ(braid_detach(h), 0);
            break;
        default:
            braid_yield();
            braid_cancel(h);
            CHECK_EQ(braid_detach(h), 0);
            break;
        }
    }
    return NULL;
}

/* A plain thread spawning into the runtime and joining or cancelling. */
static void *outsider(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    while (braid_now_ns() < deadline_ns) {
        braid_task h;
        if (spawn_job(&h, &seed, 2, the_rt) != 0)
            continue;
        if (next(&seed) % 3 == 0)
            braid_cancel(h);
        void *v = NULL;
        int f = braid_join(h, &v); /* before reading v */
        check_fate(f, v);
    }
    return NULL;
}

static atomic_long detached_panics;

static void quiet_hook(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    (void)id, (void)name, (void)user;
    CHECK_STR(o->message, "stress panic");
    atomic_fetch_add(&detached_panics, 1);
}

static void *root(void *arg)
{
    test_spawn_join_n((long)(intptr_t)arg, actor);
    return NULL;
}

static void run_stress(unsigned workers, uint64_t ms, long actors)
{
    atomic_store(&spawned, 0);
    atomic_store(&bodies, 0);
    atomic_store(&drops, 0);
    atomic_store(&defers_pushed, 0);
    atomic_store(&defers_run, 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.panic_hook = quiet_hook; /* detached panics are expected here */
    CHECK_EQ(braid_runtime_new(&cfg, &the_rt), 0);
    deadline_ns = braid_now_ns() + ms * 1000000u;
    pthread_t th[2];
    for (uintptr_t i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, outsider, (void *)(i + 77)), 0);
    CHECK_EQ(braid_block_on(the_rt, root, (void *)(intptr_t)actors, NULL), BRAID_OK);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    /* Detached jobs may still be running: the shutdown finishes them. */
    CHECK_EQ(braid_runtime_free(the_rt), 0);
    long s = atomic_load(&spawned), b = atomic_load(&bodies), d = atomic_load(&drops);
    if (s != b + d)
        TEST_FAIL("spawned %ld, ran %ld, dropped %ld", s, b, d);
    CHECK_EQ(atomic_load(&defers_pushed), atomic_load(&defers_run));
    CHECK(s > 100);
    printf("%u workers: %ld tasks (%ld dropped unstarted), %ld joins\n", workers, s, d,
           atomic_load(&joins_ok));
}

TEST(stress_2_workers)
{
    run_stress(2, 1500, 8);
}

TEST(stress_4_workers)
{
    run_stress(4, 1500, 16);
}

TEST(stress_8_workers)
{
    run_stress(8, 1000, 16);
}
