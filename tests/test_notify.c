/* braid_notify: permits, FIFO wake-ups, cancellation, plain threads. */
#include "test.h"

#include <pthread.h>

static braid_notify *nt;
static atomic_int woken, order_pos;
static int order[16];

static void *waiter(void *arg)
{
    int rc = braid_notify_wait(nt);
    if (rc == 0) {
        order[atomic_fetch_add(&order_pos, 1)] = (int)(uintptr_t)arg;
        atomic_fetch_add(&woken, 1);
    }
    return (void *)(intptr_t)rc;
}

static void *fifo_root(void *arg)
{
    (void)arg;
    braid_task h[4];
    for (uintptr_t i = 0; i < 4; i++) {
        CHECK_EQ(braid_spawn(&h[i], waiter, (void *)i), 0);
        braid_yield(); /* one worker: waiter i is now queued, in order */
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(braid_notify_one(nt), 0);
        braid_yield();
        CHECK_EQ(atomic_load(&woken), i + 1);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
        CHECK_EQ(order[i], i);
    }
    /* A permit is stored when nobody waits, once. */
    CHECK_EQ(braid_notify_one(nt), 0);
    CHECK_EQ(braid_notify_one(nt), 0);
    CHECK_EQ(braid_notify_wait(nt), 0);
    /* notify_waiters stores nothing and wakes everyone. */
    for (uintptr_t i = 0; i < 4; i++) {
        CHECK_EQ(braid_spawn(&h[i], waiter, (void *)i), 0);
        braid_yield();
    }
    CHECK_EQ(braid_notify_waiters(nt), 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&woken), 8);
    return NULL;
}

TEST(notify_fifo_permit_and_broadcast)
{
    CHECK_EQ(braid_notify_new(&nt), 0);
    test_run(1, fifo_root, NULL);
    CHECK_EQ(braid_notify_free(nt), 0);
}

static void *cancel_root(void *arg)
{
    (void)arg;
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, waiter, (void *)1), 0);
    braid_yield();
    CHECK_EQ(braid_spawn(&b, waiter, (void *)2), 0);
    braid_yield();
    /* Pick a, then cancel it before it runs: it was notified, and says so
     * (the wake-up is not lost); its task still ends cancelled. */
    CHECK_EQ(braid_notify_one(nt), 0);
    CHECK_EQ(braid_cancel(a), 0);
    void *r;
    CHECK_EQ(braid_join(a, &r), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)r, 0);
    /* Cancel a waiter that was not picked: it leaves the queue, and the
     * next wake-up goes to the one behind it. */
    braid_task c;
    CHECK_EQ(braid_spawn(&c, waiter, (void *)3), 0);
    braid_yield(); /* queue: b, c */
    CHECK_EQ(braid_cancel(b), 0);
    CHECK_EQ(braid_join(b, &r), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)r, -ECANCELED);
    CHECK_EQ(braid_notify_one(nt), 0);
    CHECK_EQ(braid_join(c, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, 0);
    CHECK_EQ(braid_notify_free(nt), 0);
    CHECK_EQ(braid_notify_new(&nt), 0);
    return NULL;
}

TEST(notify_cancelled_waiter_loses_nothing)
{
    atomic_store(&woken, 0);
    atomic_store(&order_pos, 0);
    CHECK_EQ(braid_notify_new(&nt), 0);
    test_run(1, cancel_root, NULL);
    CHECK_EQ(braid_notify_free(nt), 0);
}

static void *notifier_task(void *arg)
{
    (void)arg;
    braid_sleep_ms(20);
    CHECK_EQ(braid_notify_one(nt), 0);
    return NULL;
}

TEST(notify_plain_thread_waits_for_task)
{
    CHECK_EQ(braid_notify_new(&nt), 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_spawn_on(rt, NULL, notifier_task, NULL), 0);
    CHECK_EQ(braid_notify_wait(nt), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_notify_free(nt), 0);
    CHECK_EQ(braid_notify_wait(NULL), -EINVAL);
    CHECK_EQ(braid_notify_one(NULL), -EINVAL);
    CHECK_EQ(braid_notify_free(NULL), -EINVAL);
}

/* Ping-pong between workers and plain threads: no lost wake-ups. */
static braid_notify *ping, *pong;

static void *ponger(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        CHECK_EQ(braid_notify_wait(ping), 0);
        CHECK_EQ(braid_notify_one(pong), 0);
    }
    return NULL;
}

static void *pinger(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        CHECK_EQ(braid_notify_one(ping), 0);
        CHECK_EQ(braid_notify_wait(pong), 0);
    }
    return NULL;
}

static void *pingpong_root(void *arg)
{
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, ponger, arg), 0);
    CHECK_EQ(braid_spawn(&b, pinger, arg), 0);
    CHECK_EQ(braid_join(a, NULL), BRAID_OK);
    CHECK_EQ(braid_join(b, NULL), BRAID_OK);
    return NULL;
}

TEST(notify_ping_pong)
{
    CHECK_EQ(braid_notify_new(&ping), 0);
    CHECK_EQ(braid_notify_new(&pong), 0);
    long n = test_scale(20000);
    test_run(1, pingpong_root, (void *)(intptr_t)n);
    test_run(2, pingpong_root, (void *)(intptr_t)n);
    test_run(4, pingpong_root, (void *)(intptr_t)n);
    /* And a plain thread against a task. */
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task t;
    CHECK_EQ(braid_spawn_on(rt, &t, ponger, (void *)(intptr_t)n), 0);
    pinger((void *)(intptr_t)n);
    CHECK_EQ(braid_join(t, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_notify_free(ping), 0);
    CHECK_EQ(braid_notify_free(pong), 0);
}
