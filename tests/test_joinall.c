/* braid_join_all: concurrency within one task. */
#include "test.h"
#include "sched.h" /* BRAID_EVENT_INTERVAL */

#include <pthread.h>

struct probe {
    uint64_t caller_id;
    int worker;
    pthread_t thread;
};

static struct probe probe;
static atomic_int active, max_active;

static void *call_body(void *arg)
{
    uintptr_t ms = (uintptr_t)arg;
    CHECK_EQ(braid_current_id(), probe.caller_id);
    CHECK_EQ(braid_worker_index(), probe.worker);
    CHECK(pthread_equal(pthread_self(), probe.thread));
    int now = atomic_fetch_add(&active, 1) + 1;
    int prev = atomic_load(&max_active);
    while (now > prev && !atomic_compare_exchange_weak(&max_active, &prev, now))
        ;
    CHECK_EQ(braid_sleep_ms(ms), 0);
    atomic_fetch_sub(&active, 1);
    return (void *)(ms * 2);
}

static void *interleave_root(void *arg)
{
    (void)arg;
    probe.caller_id = braid_current_id();
    probe.worker = braid_worker_index();
    probe.thread = pthread_self();
    braid_call calls[10];
    for (uintptr_t i = 0; i < 10; i++)
        calls[i] = (braid_call){ call_body, (void *)(100 + i), NULL };
    uint64_t t0 = test_now_ms();
    CHECK_EQ(braid_join_all(calls, 10), 0);
    uint64_t took = test_now_ms() - t0;
    CHECK(took >= 109);
    if (took > 109 + (test_instrumented() ? 1500 : 200))
        TEST_FAIL("join_all of 10 sleeps took %llu ms", (unsigned long long)took);
    for (uintptr_t i = 0; i < 10; i++)
        CHECK_EQ((uintptr_t)calls[i].result, (100 + i) * 2);
    CHECK_EQ(atomic_load(&max_active), 10); /* they all slept at once */
    CHECK_EQ(braid_join_all(NULL, 0), 0);
    CHECK_EQ(braid_join_all(NULL, 3), -EINVAL);
    CHECK_EQ(braid_join_all(calls, SIZE_MAX), -EINVAL);
    CHECK_EQ(braid_join_all(calls, SIZE_MAX / 16), -ENOMEM);
    return NULL;
}

TEST(calls_run_concurrently_on_the_callers_worker)
{
    test_run(4, interleave_root, NULL);
}

/* ---- a panicking call cancels the rest and re-raises ---- */

static atomic_int cancelled_calls, defers_run, waiting_calls;

static void count_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&defers_run, 1);
}

static void *waits_long(void *arg)
{
    (void)arg;
    braid_defer d;
    braid_defer_push(&d, count_defer, NULL);
    atomic_fetch_add(&waiting_calls, 1);
    int rc = braid_sleep_ms(60000);
    if (rc == -ECANCELED)
        atomic_fetch_add(&cancelled_calls, 1);
    braid_defer_pop(&d, true);
    return NULL;
}

static void *panics_soon(void *arg)
{
    (void)arg;
    braid_sleep_ms(10);
    braid_panic("call %d failed", 3);
}

static atomic_int after_join_all;

static void *panic_group(void *arg)
{
    (void)arg;
    braid_call calls[] = {
        { waits_long, NULL, NULL },
        { panics_soon, NULL, NULL },
        { waits_long, NULL, NULL },
    };
    braid_join_all(calls, 3);
    atomic_store(&after_join_all, 1); /* never reached: the panic propagates */
    return NULL;
}

static void *panic_root(void *arg)
{
    (void)arg;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, panic_group, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(t, &o), BRAID_PANICKED);
    CHECK_STR(o.message, "call 3 failed");
    CHECK(o.file && strstr(o.file, "test_joinall.c"));
    CHECK_EQ(atomic_load(&cancelled_calls), 2);
    CHECK_EQ(atomic_load(&defers_run), 2);
    CHECK_EQ(atomic_load(&after_join_all), 0);
    return NULL;
}

TEST(panic_in_a_call_cancels_others_and_propagates)
{
    test_run(2, panic_root, NULL);
}

/* ---- cancelling the caller cancels the calls ---- */

static void *cancel_group(void *arg)
{
    (void)arg;
    braid_call calls[] = {
        { waits_long, NULL, NULL },
        { waits_long, NULL, NULL },
    };
    int rc = braid_join_all(calls, 2);
    CHECK_EQ(rc, -ECANCELED);
    return NULL;
}

static void *cancel_root(void *arg)
{
    (void)arg;
    braid_task t;
    atomic_store(&waiting_calls, 0);
    CHECK_EQ(braid_spawn(&t, cancel_group, NULL), 0);
    test_await(&waiting_calls, 2); /* both calls are in their sleep */
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);
    CHECK_EQ(atomic_load(&cancelled_calls), 2);
    return NULL;
}

TEST(cancelling_the_caller_cancels_the_calls)
{
    atomic_store(&cancelled_calls, 0);
    test_run(2, cancel_root, NULL);
}

/* ---- nesting ---- */

static void *leaf(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

static void *inner(void *arg)
{
    uintptr_t base = (uintptr_t)arg;
    braid_call calls[3];
    for (uintptr_t i = 0; i < 3; i++)
        calls[i] = (braid_call){ leaf, (void *)(base + i), NULL };
    CHECK_EQ(braid_join_all(calls, 3), 0);
    uintptr_t sum = 0;
    for (int i = 0; i < 3; i++)
        sum += (uintptr_t)calls[i].result;
    return (void *)sum;
}

static void *nested_root(void *arg)
{
    (void)arg;
    braid_call calls[4];
    for (uintptr_t i = 0; i < 4; i++)
        calls[i] = (braid_call){ inner, (void *)(i * 10), NULL };
    CHECK_EQ(braid_join_all(calls, 4), 0);
    uintptr_t total = 0;
    for (int i = 0; i < 4; i++)
        total += (uintptr_t)calls[i].result;
    /* sum over i of (3 * 10i + 0+1+2 + 3) */
    CHECK_EQ(total, 30 * (0 + 1 + 2 + 3) + 4 * 6);
    return NULL;
}

TEST(nested_join_all)
{
    test_run(2, nested_root, NULL);
}

/* Joining a spawned task from inside a call. */
static void *join_handle(void *arg)
{
    void *r;
    CHECK_EQ(braid_join(*(braid_task *)arg, &r), BRAID_OK);
    return r;
}

static void *spawned_value(void *arg)
{
    braid_sleep_ms(5);
    return arg;
}

static void *mixed_root(void *arg)
{
    (void)arg;
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, spawned_value, (void *)11), 0);
    CHECK_EQ(braid_spawn(&b, spawned_value, (void *)22), 0);
    braid_call calls[] = { { join_handle, &a, NULL }, { join_handle, &b, NULL } };
    CHECK_EQ(braid_join_all(calls, 2), 0);
    CHECK_EQ((uintptr_t)calls[0].result, 11);
    CHECK_EQ((uintptr_t)calls[1].result, 22);
    return NULL;
}

TEST(calls_can_join_spawned_tasks)
{
    test_run(2, mixed_root, NULL);
}

/* Shutdown cancels every live task, calls included, in no particular order:
 * a call can be cancelled before it ever ran while its caller is still
 * parked, unaware.  join_all must then not report success. */
static atomic_int shutdown_rounds, shutdown_lies;

static void *ran_call(void *arg)
{
    braid_yield();
    *(int *)arg = 1;
    braid_yield();
    return NULL;
}

static void *join_all_loop(void *arg)
{
    (void)arg;
    for (;;) {
        int ran[8] = { 0 };
        braid_call calls[8];
        for (int i = 0; i < 8; i++)
            calls[i] = (braid_call){ ran_call, &ran[i], NULL };
        int rc = braid_join_all(calls, 8);
        for (int i = 0; i < 8; i++)
            if (rc == 0 && !ran[i])
                atomic_fetch_add(&shutdown_lies, 1);
        if (rc != 0)
            return NULL;
        atomic_fetch_add(&shutdown_rounds, 1);
    }
}

TEST(shutdown_during_join_all_reports_cancellation)
{
    for (int round = 0; round < 20; round++) {
        braid_config cfg = { .workers = 2 };
        braid_runtime *rt;
        CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
        atomic_store(&shutdown_rounds, 0);
        for (int i = 0; i < 32; i++)
            CHECK_EQ(braid_spawn_on(rt, NULL, join_all_loop, NULL), 0);
        while (atomic_load(&shutdown_rounds) < 64 + round * 16)
            sched_yield();
        CHECK_EQ(braid_runtime_free(rt), 0);
    }
    CHECK_EQ(atomic_load(&shutdown_lies), 0);
}

/* The same in deterministic mode, reproducibly.  A caller and the root
 * wake on the same tick; when the caller has just entered join_all and
 * the root ends before the calls run, the shutdown cancels them at its
 * first periodic pass (every BRAID_EVENT_INTERVAL decisions), so the root
 * first yields k times, for every k across two intervals, to land that pass
 * on every decision. */
static int det_skipped, det_lies;

static void *marks_ran(void *arg)
{
    *(int *)arg = 1;
    braid_yield();
    return NULL;
}

static void *det_caller(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_sleep_ms(5), 0);
    int ran[3] = { 0 };
    braid_call calls[3];
    for (int i = 0; i < 3; i++)
        calls[i] = (braid_call){ marks_ran, &ran[i], NULL };
    int rc = braid_join_all(calls, 3);
    CHECK(rc == 0 || rc == -ECANCELED);
    for (int i = 0; i < 3; i++) {
        det_skipped += !ran[i];
        det_lies += rc == 0 && !ran[i];
    }
    return NULL;
}

static void *det_root(void *arg)
{
    for (intptr_t k = (intptr_t)arg; k > 0; k--)
        CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_spawn(NULL, det_caller, NULL), 0);
    CHECK_EQ(braid_sleep_ms(5), 0);
    return NULL;
}

TEST(shutdown_during_join_all_deterministic)
{
    uint64_t seeds = test_instrumented() ? 2 : 6; /* TSan and Valgrind: a runtime is slow to make */
    for (uint64_t seed = 1; seed <= seeds; seed++) {
        for (intptr_t k = 0; k < 2 * BRAID_EVENT_INTERVAL; k++) {
            test_run_seeded(seed, det_root, (void *)k);
            if (det_lies)
                TEST_FAIL("seed %" PRIu64 ", %d yields: join_all returned 0, yet %d calls "
                          "never ran", seed, (int)k, det_lies);
        }
    }
    CHECK(det_skipped > 0); /* the case happened */
}
