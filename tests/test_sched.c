/* The scheduler: pinning, stealing, fairness, fork-join. */
#include "test.h"

#include <pthread.h>

/* ---- started tasks never change worker ---- */

static void *stays_put(void *arg)
{
    (void)arg;
    int w = braid_worker_index();
    pthread_t self = pthread_self();
    for (int i = 0; i < 50; i++) {
        if (i % 2)
            braid_yield();
        else
            braid_sleep_ms(i % 3);
        CHECK_EQ(braid_worker_index(), w);
        CHECK(pthread_equal(pthread_self(), self));
    }
    return NULL;
}

static void *pin_root(void *arg)
{
    (void)arg;
    enum { N = 400 };
    static braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], stays_put, NULL), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(started_tasks_stay_on_their_worker)
{
    test_run(4, pin_root, NULL);
}

/* ---- work spreads over the workers ---- */

static atomic_int per_worker[8];

static void burn(uint64_t us)
{
    uint64_t end = braid_now_ns() + us * 1000u;
    while (braid_now_ns() < end)
        ;
}

static void *busy(void *arg)
{
    (void)arg;
    burn(200);
    atomic_fetch_add(&per_worker[braid_worker_index()], 1);
    return NULL;
}

static void *spread_root(void *arg)
{
    (void)arg;
    enum { N = 2000 };
    static braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], busy, NULL), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(idle_workers_steal_work)
{
    if (test_under_valgrind())
        SKIP("Valgrind runs one thread at a time");
    for (int i = 0; i < 8; i++)
        atomic_store(&per_worker[i], 0);
    test_run(2, spread_root, NULL);
    int a = atomic_load(&per_worker[0]), b = atomic_load(&per_worker[1]);
    CHECK_EQ(a + b, 2000);
    /* Both workers took a real share (the joiner runs unstarted children
     * inline, so an even split is not expected). */
    if (a < 100 || b < 100)
        TEST_FAIL("work not spread: %d / %d", a, b);
}

/* ---- the injection queue is not starved by local work ---- */

static atomic_int injected_ran;

static void *injected(void *arg)
{
    (void)arg;
    atomic_store(&injected_ran, 1);
    return NULL;
}

static void *noop(void *arg)
{
    return arg;
}

static void *local_storm(void *arg)
{
    (void)arg;
    /* Keep the local ring busy: spawn and yield without ever waiting. */
    long rounds = 0;
    while (!atomic_load(&injected_ran)) {
        CHECK_EQ(braid_spawn(NULL, noop, NULL), 0);
        CHECK_EQ(braid_yield(), 0);
        rounds++;
        CHECK(rounds < 10000000);
    }
    return (void *)rounds;
}

struct inj_ctx {
    braid_runtime *rt;
};

static void *injector(void *arg)
{
    struct inj_ctx *c = arg;
    usleep(20000);
    braid_task h;
    CHECK_EQ(braid_spawn_on(c->rt, &h, injected, NULL), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    return NULL;
}

TEST(injection_queue_is_checked_fairly)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    struct inj_ctx c = { rt };
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, injector, &c), 0);
    void *rounds;
    CHECK_EQ(braid_block_on(rt, local_storm, NULL, &rounds), BRAID_OK);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK(atomic_load(&injected_ran));
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- fork-join recursion ---- */

static void *fib(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    if (n < 2)
        return (void *)n;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, fib, (void *)(n - 1)), 0);
    uintptr_t b = (uintptr_t)fib((void *)(n - 2));
    void *a;
    CHECK_EQ(braid_join(h, &a), BRAID_OK);
    return (void *)((uintptr_t)a + b);
}

TEST(fib_fork_join)
{
    uintptr_t n = test_under_valgrind() ? 12 : 20;
    uintptr_t want = n == 12 ? 144 : 6765;
    CHECK_EQ((uintptr_t)test_run(1, fib, (void *)n), want);
    CHECK_EQ((uintptr_t)test_run(2, fib, (void *)n), want);
    CHECK_EQ((uintptr_t)test_run(4, fib, (void *)n), want);
}

/* A chain of tasks each spawning and joining the next one deep. */
static void *chain(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    if (k == 0)
        return (void *)1;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, chain, (void *)(k - 1)), 0);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    return (void *)((uintptr_t)r + 1);
}

TEST(deep_join_chain)
{
    uintptr_t depth = (uintptr_t)test_scale(2000);
    CHECK_EQ((uintptr_t)test_run(2, chain, (void *)depth), depth + 1);
}

/* ---- many plain threads spawning at once ---- */

struct spawner {
    braid_runtime *rt;
    int n;
    atomic_long *sum;
};

static void *value_task(void *arg)
{
    return arg;
}

static void *plain_spawner(void *arg)
{
    struct spawner *s = arg;
    enum { BATCH = 100 };
    braid_task h[BATCH];
    for (int done = 0; done < s->n; done += BATCH) {
        for (uintptr_t i = 0; i < BATCH; i++)
            CHECK_EQ(braid_spawn_on(s->rt, &h[i], value_task, (void *)(i + 1)), 0);
        for (int i = 0; i < BATCH; i++) {
            void *r;
            CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
            atomic_fetch_add(s->sum, (long)(uintptr_t)r);
        }
    }
    return NULL;
}

TEST(plain_threads_spawn_concurrently)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    atomic_long sum = 0;
    enum { T = 4 };
    int per = (int)test_scale(20000) / 100 * 100;
    if (per == 0)
        per = 100;
    struct spawner s = { rt, per, &sum };
    pthread_t th[T];
    for (int i = 0; i < T; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, plain_spawner, &s), 0);
    for (int i = 0; i < T; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_EQ(atomic_load(&sum), (long)T * (per / 100) * (100 * 101 / 2));
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- joining across runtimes ---- */

static braid_runtime *other_rt;

static void *in_other(void *arg)
{
    braid_sleep_ms(5);
    return arg;
}

static void *cross_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn_on(other_rt, &h, in_other, (void *)31), 0);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 31);
    return NULL;
}

TEST(join_a_task_of_another_runtime)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    CHECK_EQ(braid_runtime_new(&cfg, &other_rt), 0);
    test_run(2, cross_root, NULL);
    CHECK_EQ(braid_runtime_free(other_rt), 0);
}
