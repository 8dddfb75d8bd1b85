/* Shutdown: cancel what is left, wait for it, free everything. */
#include "test.h"

static atomic_int cleaned, dropped, bodies, started;

static void cleanup(void *arg)
{
    (void)arg;
    atomic_fetch_add(&cleaned, 1);
}

static void *sleeps_with_cleanup(void *arg)
{
    (void)arg;
    braid_defer d;
    braid_defer_push(&d, cleanup, NULL);
    atomic_fetch_add(&started, 1);
    int rc = braid_sleep_ms(60000);
    braid_defer_pop(&d, true);
    return (void *)(intptr_t)rc;
}

static void *leaves_sleepers(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        CHECK_EQ(braid_spawn(NULL, sleeps_with_cleanup, NULL), 0);
    braid_task kept[10];
    for (int i = 0; i < 10; i++)
        CHECK_EQ(braid_spawn(&kept[i], sleeps_with_cleanup, NULL), 0);
    test_await(&started, 110); /* all are now inside their sleep */
    return NULL; /* the kept handles are never joined */
}

TEST(run_cancels_and_waits_for_leftover_tasks)
{
    uint64_t t0 = test_now_ms();
    CHECK_EQ(braid_run(leaves_sleepers, NULL, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&cleaned), 110);
    if (test_now_ms() - t0 > 5000)
        TEST_FAIL("shutdown took %llu ms", (unsigned long long)(test_now_ms() - t0));
}

static void drop(void *arg)
{
    CHECK_EQ((uintptr_t)arg, 0xd0);
    atomic_fetch_add(&dropped, 1);
}

static void *body(void *arg)
{
    (void)arg;
    atomic_fetch_add(&bodies, 1);
    return NULL;
}

static void *leaves_unstarted(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = drop;
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(braid_spawn_ex(i % 2 ? NULL : &(braid_task){ 0 }, &o, body, (void *)0xd0), 0);
    return NULL; /* one worker: none of them has started */
}

TEST(shutdown_drops_unstarted_tasks)
{
    atomic_store(&dropped, 0);
    atomic_store(&bodies, 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, leaves_unstarted, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(atomic_load(&bodies), 0);
    CHECK_EQ(atomic_load(&dropped), 1000);
}

/* A cleanup that spawns: the new task is born cancelled. */
static void spawn_in_cleanup(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = drop;
    CHECK_EQ(braid_spawn_ex(NULL, &o, body, (void *)0xd0), 0);
}

static void *spawner_with_cleanup(void *arg)
{
    (void)arg;
    braid_defer d;
    braid_defer_push(&d, spawn_in_cleanup, NULL);
    atomic_fetch_add(&started, 1);
    braid_sleep_ms(60000);
    braid_defer_pop(&d, true);
    return NULL;
}

static void *spawning_cleanups(void *arg)
{
    (void)arg;
    atomic_store(&started, 0);
    for (int i = 0; i < 50; i++)
        CHECK_EQ(braid_spawn(NULL, spawner_with_cleanup, NULL), 0);
    test_await(&started, 50);
    return NULL;
}

TEST(tasks_spawned_during_shutdown_never_run)
{
    atomic_store(&dropped, 0);
    atomic_store(&bodies, 0);
    CHECK_EQ(braid_run(spawning_cleanups, NULL, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&bodies), 0);
    CHECK_EQ(atomic_load(&dropped), 50);
}

/* Chains of joins all unwind. */
static void *joins_next(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    if (k == 0)
        return (void *)(intptr_t)braid_sleep_ms(60000);
    braid_task h;
    CHECK_EQ(braid_spawn(&h, joins_next, (void *)(k - 1)), 0);
    /* Workers cancel their own tasks as each notices the shutdown, so a
     * level may see its child cancelled before it is cancelled itself, and
     * return normally. */
    int rc = braid_join(h, NULL);
    CHECK(rc == -ECANCELED || rc == BRAID_CANCELLED || rc == BRAID_OK);
    return NULL;
}

static void *leaves_join_chain(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        CHECK_EQ(braid_spawn(NULL, joins_next, (void *)20), 0);
    braid_sleep_ms(20);
    return NULL;
}

TEST(shutdown_unwinds_join_chains)
{
    CHECK_EQ(braid_run(leaves_join_chain, NULL, NULL), BRAID_OK);
}

/* A task that refuses to end: the timeout gives up. */
static braid_runtime *leaked;

static void *stubborn(void *arg)
{
    (void)arg;
    braid_cancel_shield(true);
    atomic_fetch_add(&started, 1);
    braid_sleep_ms(400);
    return NULL;
}

static void *leaves_stubborn(void *arg)
{
    (void)arg;
    atomic_store(&started, 0);
    CHECK_EQ(braid_spawn(NULL, stubborn, NULL), 0);
    test_await(&started, 1);
    return NULL;
}

/* A runtime whose stubborn task outlives a 100 ms shutdown timeout. */
static void check_timeout(unsigned workers)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.shutdown_timeout_ms = 100;
    CHECK_EQ(braid_runtime_new(&cfg, &leaked), 0);
    CHECK_EQ(braid_block_on(leaked, leaves_stubborn, NULL, NULL), BRAID_OK);
    uint64_t t0 = test_now_ms();
    CHECK_EQ(braid_runtime_free(leaked), -ETIMEDOUT);
    uint64_t took = test_now_ms() - t0;
    CHECK(took >= 100);
    CHECK(took < 2500);
    /* The runtime was left running: the stubborn task finishes by itself,
     * and a later free succeeds. */
    int rc;
    while ((rc = braid_runtime_free(leaked)) == -ETIMEDOUT)
        CHECK(test_now_ms() - t0 < 5000);
    CHECK_EQ(rc, 0);
}

TEST(shutdown_timeout_gives_up)
{
    check_timeout(2);
}

TEST(shutdown_timeout_current_thread)
{
    check_timeout(1);
}

/* Many runtimes, one after another and side by side. */
static void *tiny(void *arg)
{
    braid_task h;
    CHECK_EQ(braid_spawn(&h, body, NULL), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    return arg;
}

TEST(many_runtimes)
{
    for (int i = 0; i < (test_instrumented() ? 5 : 50); i++) {
        braid_runtime *a, *b;
        braid_config cfg;
        braid_config_init(&cfg);
        cfg.workers = 2;
        CHECK_EQ(braid_runtime_new(&cfg, &a), 0);
        cfg.workers = 1;
        CHECK_EQ(braid_runtime_new(&cfg, &b), 0);
        CHECK_EQ(braid_block_on(a, tiny, NULL, NULL), BRAID_OK);
        CHECK_EQ(braid_block_on(b, tiny, NULL, NULL), BRAID_OK);
        /* A handle of a freed runtime reads as stale. */
        braid_task h;
        CHECK_EQ(braid_spawn_on(a, &h, body, NULL), 0);
        CHECK_EQ(braid_runtime_free(a), 0);
        int rc = braid_join(h, NULL);
        CHECK(rc == -ESRCH || rc == -EINVAL);
        CHECK_EQ(braid_runtime_free(b), 0);
    }
}
