/* Signals: deliveries to waiting tasks and threads, pending deliveries,
 * several waiters, deadlines, cancellation, several runtimes.  Each test
 * runs in its own process, so catching SIGUSR1/SIGUSR2 stays local. */
#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

/* White-box hooks of src/signal.c: waiters of signo now, deliveries
 * counted by braid's handler. */
unsigned braid__signal_waiters(int signo);
uint32_t braid__signal_deliveries(int signo);

static void pause_1ms(void)
{
    if (braid_current_id() != 0) {
        braid_sleep_ms(1);
    } else {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

/* Wait (from a task or a thread) until cond(signo) >= want. */
#define AWAIT(expr, want)                                                          \
    do {                                                                           \
        uint64_t give_up_ = test_now_ms() + 60000;                                 \
        while ((long long)(expr) < (long long)(want)) {                            \
            if (test_now_ms() > give_up_)                                          \
                TEST_FAIL("waited 60 s for %s >= %s", #expr, #want);               \
            pause_1ms();                                                           \
        }                                                                          \
    } while (0)

static void send_sig(int signo)
{
    CHECK_EQ(kill(getpid(), signo), 0);
}

static void *waiter(void *arg)
{
    return (void *)(intptr_t)braid_signal_wait((int)(intptr_t)arg);
}

/* Long enough for the second waiter of handoff_root to register behind it
 * even on a loaded machine under Valgrind (were it to time out first, the
 * handoff would not be tested and the test would wait forever). */
static void *waiter_2s(void *arg)
{
    return (void *)(intptr_t)braid_signal_wait_until((int)(intptr_t)arg, braid_deadline_ms(2000));
}

static void join_expect(braid_task t, int fate, intptr_t want)
{
    void *res;
    CHECK_EQ(braid_join(t, &res), fate);
    CHECK_EQ((intptr_t)res, want);
}

/* ---- one waiter ---- */

static void *wake_root(void *arg)
{
    (void)arg;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    send_sig(SIGUSR1);
    join_expect(t, BRAID_OK, SIGUSR1);
    CHECK_EQ(braid__signal_waiters(SIGUSR1), 0);
    /* It was delivered to a waiter: nothing is left pending. */
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, 0), -ETIMEDOUT);
    return NULL;
}

TEST(signal_wakes_a_waiting_task)
{
    test_run(1, wake_root, NULL);
}

TEST(signal_wakes_a_waiting_task_two_workers)
{
    test_run(2, wake_root, NULL);
}

/* ---- pending deliveries ---- */

static void *pending_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_signal_catch(SIGUSR1), 0);
    uint32_t base = braid__signal_deliveries(SIGUSR1);
    send_sig(SIGUSR1);
    AWAIT(braid__signal_deliveries(SIGUSR1), base + 1);
    /* Remembered: the next wait returns at once, even past its deadline. */
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, 0), SIGUSR1);
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, braid_deadline_ms(20)), -ETIMEDOUT);
    /* Several deliveries while nobody waits make one pending wake-up. */
    for (uint32_t i = 2; i <= 4; i++) {
        send_sig(SIGUSR1);
        AWAIT(braid__signal_deliveries(SIGUSR1), base + i);
    }
    CHECK_EQ(braid_signal_wait(SIGUSR1), SIGUSR1);
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, 0), -ETIMEDOUT);
    return NULL;
}

TEST(signal_delivered_before_the_wait_is_pending)
{
    test_run(1, pending_root, NULL);
}

TEST(signal_pending_on_a_plain_thread)
{
    pending_root(NULL);
}

/* ---- several waiters ---- */

static void *many_root(void *arg)
{
    (void)arg;
    enum { N = 4 };
    braid_task t[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&t[i], waiter, (void *)(intptr_t)SIGUSR2), 0);
    AWAIT(braid__signal_waiters(SIGUSR2), N);
    send_sig(SIGUSR2);
    for (int i = 0; i < N; i++)
        join_expect(t[i], BRAID_OK, SIGUSR2);
    CHECK_EQ(braid_signal_wait_until(SIGUSR2, 0), -ETIMEDOUT);
    /* Again, with the same tasks' successors. */
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&t[i], waiter, (void *)(intptr_t)SIGUSR2), 0);
    AWAIT(braid__signal_waiters(SIGUSR2), N);
    send_sig(SIGUSR2);
    for (int i = 0; i < N; i++)
        join_expect(t[i], BRAID_OK, SIGUSR2);
    return NULL;
}

TEST(signal_wakes_every_waiter)
{
    test_run(1, many_root, NULL);
}

TEST(signal_wakes_every_waiter_two_workers)
{
    test_run(2, many_root, NULL);
}

/* The first waiter waits on the pipe; when it gives up, the next one
 * takes over and still gets the delivery. */
static void *handoff_root(void *arg)
{
    (void)arg;
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, waiter_2s, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    CHECK_EQ(braid_spawn(&b, waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 2);
    join_expect(a, BRAID_OK, -ETIMEDOUT);
    CHECK_EQ(braid__signal_waiters(SIGUSR1), 1);
    send_sig(SIGUSR1);
    join_expect(b, BRAID_OK, SIGUSR1);
    return NULL;
}

TEST(signal_waiter_handoff)
{
    test_run(1, handoff_root, NULL);
}

TEST(signal_waiter_handoff_two_workers)
{
    test_run(2, handoff_root, NULL);
}

/* Each signal wakes only its own waiters. */
static void *separate_root(void *arg)
{
    (void)arg;
    braid_task one, two;
    CHECK_EQ(braid_spawn(&one, waiter, (void *)(intptr_t)SIGUSR1), 0);
    CHECK_EQ(braid_spawn(&two, waiter, (void *)(intptr_t)SIGUSR2), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    AWAIT(braid__signal_waiters(SIGUSR2), 1);
    send_sig(SIGUSR2);
    join_expect(two, BRAID_OK, SIGUSR2);
    CHECK_EQ(braid_join_until(one, NULL, braid_deadline_ms(20)), -ETIMEDOUT);
    send_sig(SIGUSR1);
    join_expect(one, BRAID_OK, SIGUSR1);
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, 0), -ETIMEDOUT);
    CHECK_EQ(braid_signal_wait_until(SIGUSR2, 0), -ETIMEDOUT);
    return NULL;
}

TEST(signal_wakes_only_its_waiters)
{
    test_run(2, separate_root, NULL);
}

/* ---- deadlines and cancellation ---- */

static void *deadline_root(void *arg)
{
    (void)arg;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, braid_deadline_ms(30)), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 30000000u);
    CHECK_EQ(braid__signal_waiters(SIGUSR1), 0);
    return NULL;
}

TEST(signal_deadline)
{
    test_run(1, deadline_root, NULL);
    deadline_root(NULL); /* and on a plain thread */
}

static atomic_int stage;

static void *cancelled_waits(void *arg)
{
    (void)arg;
    atomic_store(&stage, 1);
    while (braid_sleep_ms(1) == 0) {
    }
    /* Cancelled: returns at once and leaves the pending delivery. */
    CHECK_EQ(braid_signal_wait(SIGUSR1), -ECANCELED);
    return NULL;
}

static void *cancel_root(void *arg)
{
    (void)arg;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    CHECK_EQ(braid_cancel(t), 0);
    join_expect(t, BRAID_CANCELLED, -ECANCELED);
    CHECK_EQ(braid__signal_waiters(SIGUSR1), 0);

    /* Two waiters, the reader cancelled: the other one still wakes. */
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    CHECK_EQ(braid_spawn(&b, waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 2);
    CHECK_EQ(braid_cancel(a), 0);
    join_expect(a, BRAID_CANCELLED, -ECANCELED);
    send_sig(SIGUSR1);
    join_expect(b, BRAID_OK, SIGUSR1);

    /* A pending delivery survives a cancelled wait. */
    uint32_t base = braid__signal_deliveries(SIGUSR1);
    send_sig(SIGUSR1);
    AWAIT(braid__signal_deliveries(SIGUSR1), base + 1);
    atomic_store(&stage, 0);
    CHECK_EQ(braid_spawn(&t, cancelled_waits, NULL), 0);
    test_await(&stage, 1);
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);
    CHECK_EQ(braid_signal_wait_until(SIGUSR1, 0), SIGUSR1);
    return NULL;
}

TEST(signal_cancellation)
{
    test_run(1, cancel_root, NULL);
}

TEST(signal_cancellation_two_workers)
{
    test_run(2, cancel_root, NULL);
}

/* ---- plain threads and several runtimes ---- */

static void *thread_waiter(void *arg)
{
    return (void *)(intptr_t)braid_signal_wait((int)(intptr_t)arg);
}

TEST(signal_plain_thread_waits)
{
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, thread_waiter, (void *)(intptr_t)SIGUSR1), 0);
    AWAIT(braid__signal_waiters(SIGUSR1), 1);
    send_sig(SIGUSR1);
    void *res;
    CHECK_EQ(pthread_join(th, &res), 0);
    CHECK_EQ((intptr_t)res, SIGUSR1);
}

static void *runtime_thread(void *arg)
{
    return test_run((unsigned)(uintptr_t)arg, waiter, (void *)(intptr_t)SIGUSR2);
}

/* Waiters on two runtimes, a plain thread and a task of a third runtime
 * (which is also the one that sends) all wake for one delivery. */
static void *mixed_root(void *arg)
{
    (void)arg;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, waiter, (void *)(intptr_t)SIGUSR2), 0);
    AWAIT(braid__signal_waiters(SIGUSR2), 4);
    send_sig(SIGUSR2);
    join_expect(t, BRAID_OK, SIGUSR2);
    return NULL;
}

TEST(signal_across_runtimes_and_threads)
{
    pthread_t th[3];
    CHECK_EQ(pthread_create(&th[0], NULL, runtime_thread, (void *)(uintptr_t)1), 0);
    CHECK_EQ(pthread_create(&th[1], NULL, runtime_thread, (void *)(uintptr_t)2), 0);
    CHECK_EQ(pthread_create(&th[2], NULL, thread_waiter, (void *)(intptr_t)SIGUSR2), 0);
    test_run(2, mixed_root, NULL);
    for (int i = 0; i < 3; i++) {
        void *res;
        CHECK_EQ(pthread_join(th[i], &res), 0);
        CHECK_EQ((intptr_t)res, SIGUSR2);
    }
}

/* A task waiting in a loop sees every delivery made after it
 * acknowledged the previous one. */
static atomic_int seen;

static void *loop_waiter(void *arg)
{
    (void)arg;
    for (;;) {
        int rc = braid_signal_wait(SIGUSR1);
        if (rc != SIGUSR1)
            return (void *)(intptr_t)rc;
        atomic_fetch_add(&seen, 1);
    }
}

static void *loop_root(void *arg)
{
    (void)arg;
    int n = (int)test_scale(300);
    atomic_store(&seen, 0);
    braid_task t;
    CHECK_EQ(braid_signal_catch(SIGUSR1), 0);
    CHECK_EQ(braid_spawn(&t, loop_waiter, NULL), 0);
    for (int i = 1; i <= n; i++) {
        send_sig(SIGUSR1);
        test_await(&seen, i);
    }
    CHECK_EQ(braid_cancel(t), 0);
    join_expect(t, BRAID_CANCELLED, -ECANCELED);
    CHECK_EQ(atomic_load(&seen), n);
    return NULL;
}

TEST(signal_many_deliveries)
{
    test_run(1, loop_root, NULL);
    test_run(2, loop_root, NULL);
}

/* ---- the handler and the arguments ---- */

TEST(signal_handler_preserves_errno)
{
    CHECK_EQ(braid_signal_catch(SIGUSR1), 0);
    uint32_t base = braid__signal_deliveries(SIGUSR1);
    errno = 4321;
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(errno, 4321);
    AWAIT(braid__signal_deliveries(SIGUSR1), base + 1);
    CHECK_EQ(errno, 4321);
    CHECK_EQ(braid_signal_wait(SIGUSR1), SIGUSR1);
    CHECK_EQ(errno, 4321);
}

TEST(signal_arguments)
{
    CHECK_EQ(braid_signal_catch(0), -EINVAL);
    CHECK_EQ(braid_signal_catch(-1), -EINVAL);
    CHECK_EQ(braid_signal_catch(NSIG), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGKILL), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGSTOP), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGSEGV), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGBUS), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGILL), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGFPE), -EINVAL);
    CHECK_EQ(braid_signal_wait(SIGKILL), -EINVAL);
    CHECK_EQ(braid_signal_wait_until(SIGSEGV, 0), -EINVAL);
    CHECK_EQ(braid_signal_catch(SIGUSR2), 0);
    CHECK_EQ(braid_signal_catch(SIGUSR2), 0); /* idempotent */
    /* Caught: the default action (termination) no longer happens. */
    uint32_t base = braid__signal_deliveries(SIGUSR2);
    send_sig(SIGUSR2);
    AWAIT(braid__signal_deliveries(SIGUSR2), base + 1);
    CHECK_EQ(braid_signal_wait_until(SIGUSR2, 0), SIGUSR2);
}
