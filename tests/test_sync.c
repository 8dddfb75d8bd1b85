/* Mutex, rwlock, semaphore, condition variable, barrier, once: semantics,
 * fairness, deadlines, cancellation, and stress across workers and
 * threads. */
#include "test.h"

#include <pthread.h>

static braid_mutex mu = BRAID_MUTEX_INIT;
static char order[64];
static atomic_int order_pos;

static void note(char c)
{
    order[atomic_fetch_add(&order_pos, 1)] = c;
}

static void reset_order(void)
{
    memset(order, 0, sizeof order);
    atomic_store(&order_pos, 0);
}

/* ---- mutex ---- */

static void *lock_note_unlock(void *arg)
{
    int rc = braid_mutex_lock(&mu);
    if (rc)
        return (void *)(intptr_t)rc;
    note((char)(uintptr_t)arg);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    return NULL;
}

static void *mutex_root(void *arg)
{
    (void)arg;
    reset_order();
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    CHECK_EQ(braid_mutex_lock(&mu), -EDEADLK);
    CHECK_EQ(braid_mutex_trylock(&mu), -EBUSY);
    CHECK_EQ(braid_mutex_destroy(&mu), -EBUSY);
    braid_task h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_spawn(&h[i], lock_note_unlock, (void *)(uintptr_t)('a' + i)), 0);
        CHECK_EQ(braid_yield(), 0); /* one worker: h[i] now waits, in order */
    }
    /* Unlock hands over in FIFO order; we queue behind them. */
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    CHECK_EQ(braid_mutex_unlock(&mu), -EPERM);
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    note('r');
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    CHECK_STR(order, "abcr");
    CHECK_EQ(braid_mutex_destroy(&mu), 0);
    return NULL;
}

TEST(mutex_hands_over_in_fifo_order)
{
    test_run(1, mutex_root, NULL);
}

static void *other_unlocks(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)braid_mutex_unlock(&mu);
}

static void *mutex_wait_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    /* Someone else cannot unlock it. */
    braid_task o;
    CHECK_EQ(braid_spawn(&o, other_unlocks, NULL), 0);
    void *r;
    CHECK_EQ(braid_join(o, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, -EPERM);
    /* A cancelled waiter leaves nothing behind. */
    braid_task w[2];
    CHECK_EQ(braid_spawn(&w[0], lock_note_unlock, (void *)'x'), 0);
    CHECK_EQ(braid_yield(), 0); /* one worker: it waits now */
    CHECK_EQ(braid_spawn(&w[1], lock_note_unlock, (void *)'y'), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_cancel(w[0]), 0);
    CHECK_EQ(braid_join(w[0], &r), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)r, -ECANCELED);
    reset_order();
    CHECK_EQ(braid_mutex_unlock(&mu), 0); /* goes to w[1] */
    CHECK_EQ(braid_join(w[1], &r), BRAID_OK);
    CHECK_STR(order, "y");
    return NULL;
}

static void *timed_lock(void *arg)
{
    (void)arg;
    uint64_t t0 = braid_now_ns();
    int rc = braid_mutex_lock_until(&mu, braid_deadline_ms(20));
    CHECK(braid_now_ns() - t0 >= 20000000u);
    return (void *)(intptr_t)rc;
}

TEST(mutex_ownership_cancel_and_deadline)
{
    test_run(1, mutex_wait_root, NULL);
    /* A plain thread holds it; a task times out. */
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    void *r = test_run(2, timed_lock, NULL);
    CHECK_EQ((intptr_t)r, -ETIMEDOUT);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    CHECK_EQ(braid_mutex_destroy(&mu), 0);
}

/* Counter under the mutex from tasks on 4 workers and 2 threads. */
enum { ADDERS = 8, ADDS = 20000 };
static long counter;
static atomic_int inside;

static void add_many(void)
{
    int n = (int)test_scale(ADDS);
    for (int i = 0; i < n; i++) {
        int rc = i % 7 ? braid_mutex_lock(&mu) : braid_mutex_lock_until(&mu, braid_deadline_ms(1));
        if (rc == -ETIMEDOUT) {
            i--;
            continue;
        }
        CHECK_EQ(rc, 0);
        CHECK_EQ(atomic_fetch_add(&inside, 1), 0);
        counter++;
        atomic_fetch_sub(&inside, 1);
        CHECK_EQ(braid_mutex_unlock(&mu), 0);
    }
}

static void *add_task(void *arg)
{
    (void)arg;
    add_many();
    return NULL;
}

static void *add_thread(void *arg)
{
    (void)arg;
    add_many();
    return NULL;
}

TEST(mutex_stress_across_workers_and_threads)
{
    counter = 0;
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 4;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[ADDERS];
    for (int i = 0; i < ADDERS; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], add_task, NULL), 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, add_thread, NULL), 0);
    for (int i = 0; i < ADDERS; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_EQ(counter, (long)(ADDERS + 2) * test_scale(ADDS));
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_mutex_destroy(&mu), 0);
}

/* ---- rwlock ---- */

static braid_rwlock rw = BRAID_RWLOCK_INIT;

static void *reader_note(void *arg)
{
    CHECK_EQ(braid_rwlock_rdlock(&rw), 0);
    note((char)(uintptr_t)arg);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    return NULL;
}

static void *writer_note(void *arg)
{
    CHECK_EQ(braid_rwlock_wrlock(&rw), 0);
    note((char)(uintptr_t)arg);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    return NULL;
}

static void *rwlock_root(void *arg)
{
    (void)arg;
    reset_order();
    /* Readers share. */
    CHECK_EQ(braid_rwlock_rdlock(&rw), 0);
    CHECK_EQ(braid_rwlock_tryrdlock(&rw), 0);
    CHECK_EQ(braid_rwlock_trywrlock(&rw), -EBUSY);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    /* A waiting writer holds back a later reader (no writer starvation),
     * and is served before it. */
    braid_task w, r;
    CHECK_EQ(braid_spawn(&w, writer_note, (void *)'W'), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_rwlock_tryrdlock(&rw), -EBUSY);
    CHECK_EQ(braid_spawn(&r, reader_note, (void *)'R'), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0); /* our read hold */
    CHECK_EQ(braid_join(w, NULL), BRAID_OK);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    CHECK_STR(order, "WR");
    /* A writer excludes; readers queued behind it go in together. */
    reset_order();
    CHECK_EQ(braid_rwlock_wrlock(&rw), 0);
    CHECK_EQ(braid_rwlock_wrlock(&rw), -EDEADLK);
    braid_task rs[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_spawn(&rs[i], reader_note, (void *)(uintptr_t)('1' + i)), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(order_pos, 0);
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_join(rs[i], NULL), BRAID_OK);
    CHECK_EQ(order_pos, 3);
    (void)t0;
    CHECK_EQ(braid_rwlock_unlock(&rw), -EPERM);
    CHECK_EQ(braid_rwlock_destroy(&rw), 0);
    return NULL;
}

TEST(rwlock_shares_excludes_and_is_fair)
{
    test_run(1, rwlock_root, NULL);
}

static void *rw_timed_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_rwlock_rdlock(&rw), 0);
    CHECK_EQ(braid_rwlock_wrlock_until(&rw, braid_deadline_ms(10)), -ETIMEDOUT);
    /* The writer that gave up no longer holds readers back. */
    CHECK_EQ(braid_rwlock_tryrdlock(&rw), 0);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    CHECK_EQ(braid_rwlock_wrlock_until(&rw, braid_deadline_ms(10)), 0);
    CHECK_EQ(braid_rwlock_rdlock_until(&rw, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    return NULL;
}

TEST(rwlock_deadlines)
{
    test_run(2, rw_timed_root, NULL);
    CHECK_EQ(braid_rwlock_destroy(&rw), 0);
}

/* Readers see a consistent pair; writers update it; across 4 workers. */
static long pair_a, pair_b;
static atomic_int rw_writers_in, rw_readers_in;

static void *rw_stress_task(void *arg)
{
    int id = (int)(uintptr_t)arg, n = (int)test_scale(5000);
    for (int i = 0; i < n; i++) {
        if ((i + id) % 5 == 0) {
            CHECK_EQ(braid_rwlock_wrlock(&rw), 0);
            CHECK_EQ(atomic_fetch_add(&rw_writers_in, 1), 0);
            CHECK_EQ(atomic_load(&rw_readers_in), 0);
            pair_a++;
            pair_b++;
            atomic_fetch_sub(&rw_writers_in, 1);
        } else {
            CHECK_EQ(braid_rwlock_rdlock(&rw), 0);
            atomic_fetch_add(&rw_readers_in, 1);
            CHECK_EQ(atomic_load(&rw_writers_in), 0);
            CHECK_EQ(pair_a, pair_b);
            atomic_fetch_sub(&rw_readers_in, 1);
        }
        CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    }
    return NULL;
}

TEST(rwlock_stress)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 4;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[8];
    for (int i = 0; i < 8; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], rw_stress_task, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(pair_a, pair_b);
    CHECK_EQ(braid_rwlock_destroy(&rw), 0);
}

/* ---- semaphore ---- */

static braid_sem sem = BRAID_SEM_INIT(3);

static void *acquire_note(void *arg)
{
    uint64_t n = (uintptr_t)arg;
    int rc = braid_sem_acquire(&sem, n);
    if (rc == 0)
        note((char)('0' + n));
    return (void *)(intptr_t)rc;
}

static void *sem_root(void *arg)
{
    (void)arg;
    reset_order();
    CHECK_EQ(braid_sem_available(&sem), 3);
    CHECK_EQ(braid_sem_acquire(&sem, 3), 0);
    CHECK_EQ(braid_sem_try_acquire(&sem, 1), -EAGAIN);
    /* FIFO: the big request at the head holds back a small one. */
    braid_task big, small;
    CHECK_EQ(braid_spawn(&big, acquire_note, (void *)2), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_spawn(&small, acquire_note, (void *)1), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_sem_release(&sem, 1), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(order_pos, 0); /* 1 free, the head wants 2 */
    CHECK_EQ(braid_sem_release(&sem, 2), 0);
    CHECK_EQ(braid_join(big, NULL), BRAID_OK);
    CHECK_EQ(braid_join(small, NULL), BRAID_OK);
    CHECK_STR(order, "21");
    CHECK_EQ(braid_sem_available(&sem), 0);
    /* Timeout, then close. */
    CHECK_EQ(braid_sem_acquire_until(&sem, 1, braid_deadline_ms(10)), -ETIMEDOUT);
    braid_task w;
    CHECK_EQ(braid_spawn(&w, acquire_note, (void *)1), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_sem_close(&sem), 0);
    void *r;
    CHECK_EQ(braid_join(w, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, -EPIPE);
    CHECK_EQ(braid_sem_acquire(&sem, 1), -EPIPE);
    CHECK_EQ(braid_sem_release(&sem, UINT64_C(1) << 62), -EOVERFLOW);
    CHECK_EQ(braid_sem_destroy(&sem), 0);
    return NULL;
}

TEST(semaphore_fifo_timeout_close)
{
    test_run(1, sem_root, NULL);
}

/* At most 3 inside at once, from 12 tasks on 4 workers. */
static atomic_int sem_inside, sem_max;

static void *sem_limited(void *arg)
{
    (void)arg;
    for (int i = 0; i < (int)test_scale(2000); i++) {
        CHECK_EQ(braid_sem_acquire(&sem, 1), 0);
        int now = atomic_fetch_add(&sem_inside, 1) + 1;
        int m = atomic_load(&sem_max);
        while (now > m && !atomic_compare_exchange_weak(&sem_max, &m, now))
            ;
        if (i % 16 == 0)
            braid_yield();
        atomic_fetch_sub(&sem_inside, 1);
        CHECK_EQ(braid_sem_release(&sem, 1), 0);
    }
    return NULL;
}

/* permits on sem; tasks running fn on a runtime of workers, and threads
 * running it beside them; every permit back at the end. */
static void sem_crowd(uint64_t permits, unsigned workers, int tasks, int threads, braid_fn fn)
{
    CHECK_EQ(braid_sem_init(&sem, permits), 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[16];
    pthread_t th[4];
    for (int i = 0; i < tasks; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], fn, NULL), 0);
    for (int i = 0; i < threads; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, fn, NULL), 0);
    for (int i = 0; i < tasks; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    for (int i = 0; i < threads; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_sem_available(&sem), permits);
}

TEST(semaphore_stress_limits_concurrency)
{
    sem_crowd(3, 4, 12, 0, sem_limited);
    CHECK(atomic_load(&sem_max) <= 3);
}

/* One permit passed among two tasks on two workers and two plain threads,
 * all running at once: a release that lands between a waiter's last try
 * and its queueing would leave the permit free and every one of them
 * queued for good.  The deadline turns that into a failure. */
static atomic_int sem_started;

static void *sem_pingpong(void *arg)
{
    (void)arg;
    /* Two tasks spinning here hold both workers: they run in parallel. */
    atomic_fetch_add(&sem_started, 1);
    while (atomic_load(&sem_started) < 4)
        sched_yield();
    for (int i = 0; i < (int)test_scale(50000); i++) {
        int rc = braid_sem_acquire_until(&sem, 1, braid_deadline_ms(20000));
        if (rc != 0)
            TEST_FAIL("acquire %d: %s, %llu permits free", i, braid_strerror(rc),
                      (unsigned long long)braid_sem_available(&sem));
        CHECK(atomic_fetch_add(&sem_inside, 1) == 0);
        atomic_fetch_sub(&sem_inside, 1);
        CHECK_EQ(braid_sem_release(&sem, 1), 0);
    }
    return NULL;
}

TEST(semaphore_one_permit_tasks_and_threads)
{
    sem_crowd(1, 2, 2, 2, sem_pingpong);
}

/* ---- condition variable ---- */

static braid_cond cv = BRAID_COND_INIT;
static int ready_count;

static void *cond_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    while (ready_count == 0) {
        int rc = braid_cond_wait(&cv, &mu);
        if (rc) {
            CHECK_EQ(braid_mutex_unlock(&mu), 0); /* held again even so */
            return (void *)(intptr_t)rc;
        }
    }
    ready_count--;
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    return NULL;
}

static void *cond_root(void *arg)
{
    (void)arg;
    ready_count = 0;
    braid_task h[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_spawn(&h[i], cond_waiter, NULL), 0);
    CHECK_EQ(braid_sleep_ms(5), 0); /* only a speed-up: the loop is correct anyway */
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    ready_count = 1;
    CHECK_EQ(braid_cond_signal(&cv), 0);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    ready_count += 1;
    CHECK_EQ(braid_cond_broadcast(&cv), 0);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    /* Two are through; cancel the third in its wait: it holds the mutex
     * again when braid_cond_wait returns -ECANCELED. */
    int done = 0;
    while (done < 2) {
        done = 0;
        for (int i = 0; i < 3; i++)
            done += braid_is_finished(h[i]);
        CHECK_EQ(braid_sleep_ms(1), 0);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_cancel(h[i]), 0);
    int cancelled = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        int fate = braid_join(h[i], &r);
        cancelled += (intptr_t)r == -ECANCELED;
        CHECK(fate == BRAID_OK || fate == BRAID_CANCELLED);
    }
    CHECK_EQ(cancelled, 1);
    /* A timed wait times out and still holds the mutex. */
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    CHECK_EQ(braid_cond_wait_until(&cv, &mu, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    CHECK_EQ(braid_cond_wait(&cv, &mu), -EPERM); /* mutex not held */
    CHECK_EQ(braid_cond_destroy(&cv), 0);
    return NULL;
}

TEST(cond_signal_broadcast_cancel_timeout)
{
    test_run(2, cond_root, NULL);
    CHECK_EQ(braid_mutex_destroy(&mu), 0);
}

/* ---- barrier ---- */

static braid_barrier bar;
static atomic_int leaders, passed;

static void *barrier_party(void *arg)
{
    (void)arg;
    for (int round = 0; round < 50; round++) {
        int rc = braid_barrier_wait(&bar);
        CHECK(rc == 0 || rc == BRAID_BARRIER_LEADER);
        if (rc == BRAID_BARRIER_LEADER)
            atomic_fetch_add(&leaders, 1);
        atomic_fetch_add(&passed, 1);
    }
    return NULL;
}

static void *barrier_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_barrier_init(&bar, 4), 0);
    braid_task h[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_spawn(&h[i], barrier_party, NULL), 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&leaders), 50); /* one per round */
    CHECK_EQ(atomic_load(&passed), 200);
    /* One who gives up no longer counts. */
    CHECK_EQ(braid_barrier_init(&bar, 2), 0);
    CHECK_EQ(braid_barrier_wait_until(&bar, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK_EQ(braid_barrier_destroy(&bar), 0);
    CHECK_EQ(braid_barrier_init(&bar, 0), -EINVAL);
    return NULL;
}

TEST(barrier_rounds_leader_and_timeout)
{
    test_run(4, barrier_root, NULL);
}

/* ---- once ---- */

static braid_once once = BRAID_ONCE_INIT;
static atomic_int once_runs, once_panics_left;

static void init_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&once_runs, 1);
    braid_sleep_ms(5); /* others arrive and wait meanwhile */
    if (atomic_fetch_sub(&once_panics_left, 1) > 0)
        braid_panic("init failed");
}

static void *once_caller(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)braid_once_call(&once, init_fn, NULL);
}

static void *once_root(void *arg)
{
    (void)arg;
    atomic_store(&once_panics_left, 1);
    braid_task h[8];
    for (int i = 0; i < 8; i++)
        CHECK_EQ(braid_spawn(&h[i], once_caller, NULL), 0);
    int panicked = 0;
    for (int i = 0; i < 8; i++) {
        void *r;
        int fate = braid_join(h[i], &r);
        if (fate == BRAID_PANICKED)
            panicked++;
        else
            CHECK_EQ((intptr_t)r, 0);
    }
    /* The first run panicked; exactly one other caller ran it again. */
    CHECK_EQ(panicked, 1);
    CHECK_EQ(atomic_load(&once_runs), 2);
    CHECK_EQ(braid_once_call(&once, init_fn, NULL), 0);
    CHECK_EQ(atomic_load(&once_runs), 2);
    return NULL;
}

TEST(once_runs_once_and_again_after_a_panic)
{
    test_run(2, once_root, NULL);
}

/* ---- bad input ---- */

TEST(sync_bad_arguments)
{
    CHECK_EQ(braid_mutex_lock(NULL), -EINVAL);
    CHECK_EQ(braid_mutex_unlock(NULL), -EINVAL);
    CHECK_EQ(braid_rwlock_rdlock(NULL), -EINVAL);
    CHECK_EQ(braid_sem_acquire(NULL, 1), -EINVAL);
    CHECK_EQ(braid_sem_init(&sem, UINT64_C(1) << 62), -EINVAL);
    CHECK_EQ(braid_cond_wait(NULL, &mu), -EINVAL);
    CHECK_EQ(braid_barrier_wait(NULL), -EINVAL);
    CHECK_EQ(braid_once_call(NULL, NULL, NULL), -EINVAL);
    braid_mutex m2;
    CHECK_EQ(braid_mutex_init(&m2), 0);
    CHECK_EQ(braid_mutex_unlock(&m2), -EPERM);
    CHECK_EQ(braid_mutex_lock(&m2), 0);
    CHECK_EQ(braid_mutex_unlock(&m2), 0);
    CHECK_EQ(braid_mutex_destroy(&m2), 0);
}
