/* Channels and select: ordering, waiting, closing, references, deadlines,
 * cancellation, plain threads, no value lost or duplicated. */
#include "test.h"

#include <pthread.h>

static braid_chan *ch, *ch2;

/* ---- buffered FIFO, try_*, len ---- */

static void *fifo_root(void *arg)
{
    (void)arg;
    int v;
    CHECK_EQ(braid_chan_try_recv(ch, &v), -EAGAIN);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(braid_chan_send(ch, &i), 0);
    CHECK_EQ(braid_chan_len(ch), 8);
    int extra = 99;
    CHECK_EQ(braid_chan_try_send(ch, &extra), -EAGAIN); /* full at 8 */
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(braid_chan_recv(ch, &v), 0);
        CHECK_EQ(v, i);
    }
    CHECK_EQ(braid_chan_len(ch), 0);
    return NULL;
}

TEST(buffered_channel_is_fifo_and_bounded)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 8), 0);
    test_run(1, fifo_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0); /* frees it */
}

/* ---- a full channel makes the sender wait until a receive ---- */

static atomic_int sent_count;

static void *fill_and_send(void *arg)
{
    int n = (int)(uintptr_t)arg;
    for (int i = 0; i < n; i++) {
        CHECK_EQ(braid_chan_send(ch, &i), 0);
        atomic_fetch_add(&sent_count, 1);
    }
    return NULL;
}

static void *full_root(void *arg)
{
    (void)arg;
    atomic_store(&sent_count, 0);
    braid_task p;
    CHECK_EQ(braid_spawn(&p, fill_and_send, (void *)(uintptr_t)3), 0);
    CHECK_EQ(braid_yield(), 0); /* one worker: it sends 2, then waits */
    CHECK_EQ(atomic_load(&sent_count), 2);
    int v;
    CHECK_EQ(braid_chan_recv(ch, &v), 0);
    CHECK_EQ(v, 0);
    /* The waiting sender's value took the freed slot: its send is done. */
    CHECK_EQ(braid_chan_len(ch), 2);
    CHECK_EQ(braid_join(p, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&sent_count), 3);
    for (int i = 1; i < 3; i++) {
        CHECK_EQ(braid_chan_recv(ch, &v), 0);
        CHECK_EQ(v, i);
    }
    return NULL;
}

TEST(full_channel_blocks_sender)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 2), 0);
    test_run(1, full_root, NULL);
    CHECK_EQ(braid_chan_close(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- rendezvous ---- */

static void *rendezvous_root(void *arg)
{
    (void)arg;
    int v = 7;
    CHECK_EQ(braid_chan_try_send(ch, &v), -EAGAIN); /* nobody receives */
    atomic_store(&sent_count, 0);
    braid_task p;
    CHECK_EQ(braid_spawn(&p, fill_and_send, (void *)(uintptr_t)1), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(atomic_load(&sent_count), 0); /* waits for a receiver */
    CHECK_EQ(braid_chan_len(ch), 0);
    CHECK_EQ(braid_chan_recv(ch, &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(braid_join(p, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&sent_count), 1);
    return NULL;
}

TEST(rendezvous_channel_hands_over_directly)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 0), 0);
    test_run(1, rendezvous_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- closing ---- */

static void *recv_expect(void *arg)
{
    int v;
    return (void *)(intptr_t)braid_chan_recv((braid_chan *)arg, &v);
}

static void *send_one(void *arg)
{
    int v = 5;
    return (void *)(intptr_t)braid_chan_send((braid_chan *)arg, &v);
}

static void *close_root(void *arg)
{
    (void)arg;
    /* Waiting receivers of ch and a waiting sender of ch2 (full) learn. */
    braid_task r, s;
    CHECK_EQ(braid_spawn(&r, recv_expect, ch), 0);
    int v = 1;
    CHECK_EQ(braid_chan_send(ch2, &v), 0);
    CHECK_EQ(braid_spawn(&s, send_one, ch2), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_chan_close(ch), 0);
    CHECK_EQ(braid_chan_close(ch2), 0);
    void *rv;
    CHECK_EQ(braid_join(r, &rv), BRAID_OK);
    CHECK_EQ((intptr_t)rv, -EPIPE);
    CHECK_EQ(braid_join(s, &rv), BRAID_OK);
    CHECK_EQ((intptr_t)rv, -EPIPE);
    /* Buffered values are still delivered after close, then -EPIPE. */
    CHECK_EQ(braid_chan_recv(ch2, &v), 0);
    CHECK_EQ(v, 1);
    CHECK_EQ(braid_chan_recv(ch2, &v), -EPIPE);
    CHECK_EQ(braid_chan_try_recv(ch2, &v), -EPIPE);
    CHECK_EQ(braid_chan_send(ch2, &v), -EPIPE);
    CHECK_EQ(braid_chan_try_send(ch2, &v), -EPIPE);
    CHECK_EQ(braid_chan_close(ch2), 0); /* twice: harmless */
    return NULL;
}

TEST(close_wakes_waiters_and_drains)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 4), 0);
    CHECK_EQ(braid_chan_new(&ch2, sizeof(int), 1), 0);
    test_run(1, close_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch2), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch2), 0);
}

/* ---- references ---- */

static void *producer_drops(void *arg)
{
    braid_chan *c = arg;
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_chan_send(c, &i), 0);
    CHECK_EQ(braid_chan_sender_drop(c), 0);
    return NULL;
}

static void *refs_root(void *arg)
{
    (void)arg;
    braid_chan *c;
    CHECK_EQ(braid_chan_new(&c, sizeof(int), BRAID_CHAN_UNBOUNDED), 0);
    braid_task p[2];
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(braid_chan_sender_dup(c), 0);
        CHECK_EQ(braid_spawn(&p[i], producer_drops, c), 0);
    }
    CHECK_EQ(braid_chan_sender_drop(c), 0); /* ours: the producers hold the rest */
    int v, got = 0;
    while (braid_chan_recv(c, &v) == 0)
        got++;
    CHECK_EQ(got, 6); /* then the last sender's drop closed it */
    for (int i = 0; i < 2; i++)
        CHECK_EQ(braid_join(p[i], NULL), BRAID_OK);
    CHECK_EQ(braid_chan_sender_drop(c), -EINVAL); /* none left */

    /* The last receiver gone: sends fail at once, waiting ones too. */
    braid_chan *d;
    CHECK_EQ(braid_chan_new(&d, sizeof(int), 1), 0);
    v = 1;
    CHECK_EQ(braid_chan_send(d, &v), 0);
    braid_task s;
    CHECK_EQ(braid_spawn(&s, send_one, d), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_chan_receiver_drop(d), 0);
    void *rv;
    CHECK_EQ(braid_join(s, &rv), BRAID_OK);
    CHECK_EQ((intptr_t)rv, -EPIPE);
    CHECK_EQ(braid_chan_send(d, &v), -EPIPE);
    CHECK_EQ(braid_chan_len(d), 0);
    CHECK_EQ(braid_chan_sender_drop(d), 0); /* both gone: freed */
    CHECK_EQ(braid_chan_receiver_drop(c), 0);
    return NULL;
}

TEST(last_sender_closes_last_reference_frees)
{
    test_run(2, refs_root, NULL);
}

/* ---- bad input ---- */

TEST(bad_arguments)
{
    braid_chan *c;
    CHECK_EQ(braid_chan_new(NULL, 4, 1), -EINVAL);
    CHECK_EQ(braid_chan_new(&c, 0, 1), -EINVAL);
    CHECK_EQ(braid_chan_new(&c, 65537, 1), -EINVAL);
    int v = 0;
    CHECK_EQ(braid_chan_send(NULL, &v), -EINVAL);
    CHECK_EQ(braid_chan_recv(NULL, &v), -EINVAL);
    /* Not a channel (zeroed memory): rejected, not trusted. */
    uint64_t fake[32] = { 0 };
    CHECK_EQ(braid_chan_send((braid_chan *)fake, &v), -EINVAL);
    CHECK_EQ(braid_chan_close((braid_chan *)fake), -EINVAL);
    CHECK_EQ(braid_chan_sender_drop((braid_chan *)fake), -EINVAL);
    CHECK_EQ(braid_chan_new(&c, 4, 1), 0);
    CHECK_EQ(braid_chan_send(c, NULL), -EINVAL);
    CHECK_EQ(braid_chan_recv(c, NULL), -EINVAL);
    braid_select_case sc = { c, 42, &v, 0 };
    CHECK_EQ(braid_select(&sc, 1, BRAID_FOREVER, 0), -EINVAL);
    CHECK_EQ(braid_select(&sc, 0, BRAID_FOREVER, 0), -EINVAL);
    CHECK_EQ(braid_chan_sender_drop(c), 0);
    CHECK_EQ(braid_chan_receiver_drop(c), 0);
}

/* ---- plain threads send and receive too ---- */

static void *echo_task(void *arg)
{
    (void)arg;
    int v;
    while (braid_chan_recv(ch, &v) == 0) {
        v *= 2;
        CHECK_EQ(braid_chan_send(ch2, &v), 0);
    }
    return NULL;
}

TEST(plain_thread_talks_to_a_task)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 0), 0);
    CHECK_EQ(braid_chan_new(&ch2, sizeof(int), 0), 0);
    braid_task e;
    CHECK_EQ(braid_spawn_on(rt, &e, echo_task, NULL), 0);
    for (int i = 0; i < 1000; i++) {
        int v = i, w;
        CHECK_EQ(braid_chan_send(ch, &v), 0);
        CHECK_EQ(braid_chan_recv(ch2, &w), 0);
        CHECK_EQ(w, 2 * i);
    }
    int w;
    CHECK_EQ(braid_chan_recv_until(ch2, &w, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK_EQ(braid_chan_close(ch), 0);
    CHECK_EQ(braid_join(e, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch2), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch2), 0);
}

/* ---- deadlines leave nothing half-done ---- */

static void *deadline_root(void *arg)
{
    (void)arg;
    int v = 1;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_chan_recv_until(ch, &v, braid_deadline_ms(20)), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 20000000u);
    CHECK_EQ(braid_chan_send(ch, &v), 0); /* fills it (capacity 1) */
    v = 2;
    CHECK_EQ(braid_chan_send_until(ch, &v, braid_deadline_ms(20)), -ETIMEDOUT);
    CHECK_EQ(braid_chan_len(ch), 1); /* the timed-out value is not in */
    /* A past deadline still completes what needs no waiting. */
    CHECK_EQ(braid_chan_recv_until(ch, &v, 0), 0);
    CHECK_EQ(v, 1);
    CHECK_EQ(braid_chan_recv_until(ch, &v, 0), -ETIMEDOUT);
    return NULL;
}

TEST(deadlines_time_out_cleanly)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 1), 0);
    test_run(2, deadline_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- cancellation ---- */

static void *cancel_root(void *arg)
{
    (void)arg;
    braid_task r1, r2;
    CHECK_EQ(braid_spawn(&r1, recv_expect, ch), 0);
    CHECK_EQ(braid_spawn(&r2, recv_expect, ch), 0);
    CHECK_EQ(braid_yield(), 0); /* both wait, r1 first */
    CHECK_EQ(braid_cancel(r1), 0);
    void *rv;
    CHECK_EQ(braid_join(r1, &rv), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)rv, -ECANCELED);
    /* The value goes to r2, not to the cancelled waiter. */
    int v = 3;
    CHECK_EQ(braid_chan_send(ch, &v), 0);
    CHECK_EQ(braid_join(r2, &rv), BRAID_OK);
    CHECK_EQ((intptr_t)rv, 0);
    CHECK_EQ(braid_chan_len(ch), 0);
    CHECK_EQ(braid_chan_send(ch, &v), 0);
    return NULL;
}

TEST(cancelled_waiter_loses_nothing)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 4), 0);
    test_run(1, cancel_root, NULL);
    CHECK_EQ(braid_chan_len(ch), 1);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

static atomic_int started;

static void *cancelled_self(void *arg)
{
    (void)arg;
    atomic_store(&started, 1);
    while (!braid_cancelled())
        (void)braid_sleep_ms(1);
    int v = 0;
    CHECK_EQ(braid_chan_try_recv(ch, &v), -ECANCELED);
    CHECK_EQ(braid_chan_send(ch, &v), -ECANCELED);
    CHECK_EQ(braid_chan_len(ch), 1);
    return NULL;
}

static void *cancel_point_root(void *arg)
{
    (void)arg;
    int v = 1;
    CHECK_EQ(braid_chan_send(ch, &v), 0);
    braid_task t;
    CHECK_EQ(braid_spawn(&t, cancelled_self, NULL), 0);
    test_await(&started, 1);
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);
    return NULL;
}

TEST(channel_calls_are_cancellation_points)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 4), 0);
    test_run(2, cancel_point_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- a woken receiver on the same worker runs next ---- */

static char run_log[8];
static atomic_int log_pos;
static braid_notify *nt;

static void *logs_after_recv(void *arg)
{
    (void)arg;
    int v;
    CHECK_EQ(braid_chan_recv(ch, &v), 0);
    run_log[atomic_fetch_add(&log_pos, 1)] = 'R';
    return NULL;
}

static void *logs_after_notify(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_notify_wait(nt), 0);
    run_log[atomic_fetch_add(&log_pos, 1)] = 'B';
    return NULL;
}

static void *lifo_root(void *arg)
{
    (void)arg;
    braid_task r, b;
    CHECK_EQ(braid_spawn(&r, logs_after_recv, NULL), 0);
    CHECK_EQ(braid_spawn(&b, logs_after_notify, NULL), 0);
    CHECK_EQ(braid_yield(), 0); /* both wait */
    CHECK_EQ(braid_notify_one(nt), 0);    /* b is woken first... */
    int v = 1;
    CHECK_EQ(braid_chan_send(ch, &v), 0); /* ...but r, woken by a send, runs next */
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    CHECK_EQ(braid_join(b, NULL), BRAID_OK);
    CHECK_EQ(run_log[0], 'R');
    CHECK_EQ(run_log[1], 'B');
    return NULL;
}

TEST(woken_receiver_runs_next)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 0), 0);
    CHECK_EQ(braid_notify_new(&nt), 0);
    test_run(1, lifo_root, NULL);
    CHECK_EQ(braid_notify_free(nt), 0);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- the cooperative budget ---- */

static atomic_int other_ran;

static void *sets_flag(void *arg)
{
    (void)arg;
    atomic_store(&other_ran, 1);
    return NULL;
}

static void *drains(void *arg)
{
    int n = (int)(uintptr_t)arg, v, seen_other_before_end = 0;
    for (int i = 0; i < n; i++) {
        CHECK_EQ(braid_chan_recv(ch, &v), 0); /* never waits: all buffered */
        if (i == n - 1)
            seen_other_before_end = atomic_load(&other_ran);
    }
    return (void *)(intptr_t)seen_other_before_end;
}

static void *budget_root(void *arg)
{
    (void)arg;
    enum { N = 10000 };
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_chan_send(ch, &i), 0);
    braid_task d, f;
    CHECK_EQ(braid_spawn(&d, drains, (void *)(uintptr_t)N), 0);
    CHECK_EQ(braid_spawn(&f, sets_flag, NULL), 0);
    void *seen;
    CHECK_EQ(braid_join(d, &seen), BRAID_OK); /* runs d inline */
    CHECK_EQ((intptr_t)seen, 1);
    CHECK_EQ(braid_join(f, NULL), BRAID_OK);
    return NULL;
}

TEST(busy_consumer_yields_on_budget)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), BRAID_CHAN_UNBOUNDED), 0);
    test_run(1, budget_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* ---- M producers, K consumers (tasks and threads), nothing lost ---- */

enum { PRODUCERS = 4, CONSUMERS = 3, PER_PRODUCER = 20000 };
static atomic_uchar seen[PRODUCERS * PER_PRODUCER];
static atomic_int received, duplicates;

static void *produce(void *arg)
{
    int base = (int)(uintptr_t)arg * PER_PRODUCER;
    int n = (int)test_scale(PER_PRODUCER);
    for (int i = 0; i < n; i++) {
        int v = base + i;
        /* Timed sends that may expire exercise the give-up race. */
        int rc;
        while ((rc = braid_chan_send_until(ch, &v, braid_deadline_ms(i % 3 ? 1000 : 0))) ==
               -ETIMEDOUT)
            ;
        CHECK_EQ(rc, 0);
    }
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    return NULL;
}

static void consume_all(void)
{
    int v = 0, rc;
    for (;;) {
        rc = braid_chan_recv_until(ch, &v, braid_deadline_ms(v % 2 ? 1 : 1000));
        if (rc == -ETIMEDOUT)
            continue;
        if (rc == -EPIPE)
            break;
        CHECK_EQ(rc, 0);
        if (atomic_exchange(&seen[v], 1))
            atomic_fetch_add(&duplicates, 1);
        atomic_fetch_add(&received, 1);
    }
}

static void *consume_task(void *arg)
{
    (void)arg;
    consume_all();
    return NULL;
}

static void *consume_thread(void *arg)
{
    (void)arg;
    consume_all();
    return NULL;
}

static void mpmc(size_t capacity)
{
    memset(seen, 0, sizeof seen);
    atomic_store(&received, 0);
    atomic_store(&duplicates, 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 4;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), capacity), 0);
    braid_task p[PRODUCERS], c[CONSUMERS];
    for (int i = 0; i < PRODUCERS; i++) {
        CHECK_EQ(braid_chan_sender_dup(ch), 0);
        CHECK_EQ(braid_spawn_on(rt, &p[i], produce, (void *)(uintptr_t)i), 0);
    }
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    for (int i = 0; i < CONSUMERS; i++)
        CHECK_EQ(braid_spawn_on(rt, &c[i], consume_task, NULL), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, consume_thread, NULL), 0);
    for (int i = 0; i < PRODUCERS; i++)
        CHECK_EQ(braid_join(p[i], NULL), BRAID_OK);
    for (int i = 0; i < CONSUMERS; i++)
        CHECK_EQ(braid_join(c[i], NULL), BRAID_OK);
    CHECK_EQ(pthread_join(th, NULL), 0);
    int n = (int)test_scale(PER_PRODUCER);
    CHECK_EQ(atomic_load(&duplicates), 0);
    CHECK_EQ(atomic_load(&received), PRODUCERS * n);
    for (int i = 0; i < PRODUCERS; i++)
        for (int j = 0; j < n; j++)
            if (!atomic_load(&seen[i * PER_PRODUCER + j]))
                TEST_FAIL("value %d lost", i * PER_PRODUCER + j);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

TEST(mpmc_rendezvous_loses_nothing)
{
    mpmc(0);
}

TEST(mpmc_bounded_loses_nothing)
{
    mpmc(16);
}

TEST(mpmc_unbounded_loses_nothing)
{
    mpmc(BRAID_CHAN_UNBOUNDED);
}

/* ---- select ---- */

static void *select_basic_root(void *arg)
{
    (void)arg;
    int a = 0, b = 0, out = 42;
    braid_select_case sc[2] = {
        { ch, BRAID_SELECT_RECV, &a, 0 },
        { ch2, BRAID_SELECT_RECV, &b, 0 },
    };
    CHECK_EQ(braid_select(sc, 2, BRAID_FOREVER, BRAID_SELECT_NOWAIT), -EAGAIN);
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_select(sc, 2, braid_deadline_ms(20), 0), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 20000000u);
    /* Ready case: taken at once. */
    CHECK_EQ(braid_chan_send(ch2, &out), 0);
    CHECK_EQ(braid_select(sc, 2, BRAID_FOREVER, 0), 1);
    CHECK_EQ(b, 42);
    CHECK_EQ(sc[1].result, 0);
    /* Waiting (one worker: the sender starts once the select waits): a
     * sender on the second channel completes the second case. */
    braid_task s;
    CHECK_EQ(braid_spawn(&s, send_one, ch2), 0);
    b = 0;
    CHECK_EQ(braid_select(sc, 2, BRAID_FOREVER, 0), 1);
    CHECK_EQ(b, 5);
    CHECK_EQ(braid_join(s, NULL), BRAID_OK);
    /* The other case's node was withdrawn: a later send to ch is not lost. */
    CHECK_EQ(braid_chan_send(ch, &out), 0);
    CHECK_EQ(braid_chan_len(ch), 1);
    CHECK_EQ(braid_chan_recv(ch, &a), 0);
    /* A send case, and a closed channel completing with -EPIPE. */
    braid_select_case snd[2] = {
        { ch, BRAID_SELECT_SEND, &out, 0 },
        { NULL, BRAID_SELECT_RECV, &b, 0 }, /* ignored */
    };
    CHECK_EQ(braid_select(snd, 2, BRAID_FOREVER, 0), 0);
    CHECK_EQ(braid_chan_recv(ch, &a), 0);
    CHECK_EQ(a, 42);
    CHECK_EQ(braid_chan_close(ch2), 0);
    CHECK_EQ(braid_select(sc, 2, BRAID_FOREVER, 0), 1);
    CHECK_EQ(sc[1].result, -EPIPE);
    return NULL;
}

TEST(select_waits_times_out_and_withdraws)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 1), 0);
    CHECK_EQ(braid_chan_new(&ch2, sizeof(int), 1), 0);
    test_run(1, select_basic_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch2), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch2), 0);
}

static void *select_fair_root(void *arg)
{
    (void)arg;
    int counts[2] = { 0, 0 }, biased_first = 0, v = 1, a, b;
    braid_select_case sc[2] = {
        { ch, BRAID_SELECT_RECV, &a, 0 },
        { ch2, BRAID_SELECT_RECV, &b, 0 },
    };
    for (int i = 0; i < 1000; i++) {
        /* Both ready every time. */
        if (braid_chan_len(ch) == 0)
            CHECK_EQ(braid_chan_send(ch, &v), 0);
        if (braid_chan_len(ch2) == 0)
            CHECK_EQ(braid_chan_send(ch2, &v), 0);
        int k = braid_select(sc, 2, BRAID_FOREVER, 0);
        CHECK(k == 0 || k == 1);
        counts[k]++;
        if (braid_chan_len(ch) == 0)
            CHECK_EQ(braid_chan_send(ch, &v), 0);
        if (braid_chan_len(ch2) == 0)
            CHECK_EQ(braid_chan_send(ch2, &v), 0);
        biased_first += braid_select(sc, 2, BRAID_FOREVER, BRAID_SELECT_BIASED) == 0;
    }
    /* Random choice: each side far from never (binomial(1000, .5) is
     * below 350 with probability about 1e-21). */
    CHECK(counts[0] > 350 && counts[1] > 350);
    CHECK_EQ(biased_first, 1000);
    return NULL;
}

TEST(select_is_fair_or_biased)
{
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 1), 0);
    CHECK_EQ(braid_chan_new(&ch2, sizeof(int), 1), 0);
    test_run(1, select_fair_root, NULL);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch2), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch2), 0);
}

/* Many selects over two channels racing many senders across workers:
 * every value is received exactly once. */
enum { SEL_SENDERS = 4, SEL_PER = 5000, SEL_RECEIVERS = 3 };
static atomic_uchar sel_seen[SEL_SENDERS * SEL_PER];

static void *sel_sender(void *arg)
{
    int id = (int)(uintptr_t)arg, n = (int)test_scale(SEL_PER);
    braid_chan *target = id % 2 ? ch : ch2;
    for (int i = 0; i < n; i++) {
        int v = id * SEL_PER + i;
        CHECK_EQ(braid_chan_send(target, &v), 0);
    }
    CHECK_EQ(braid_chan_sender_drop(target), 0);
    return NULL;
}

static void *sel_receiver(void *arg)
{
    (void)arg;
    int a = 0, b = 0, closed = 0;
    braid_select_case sc[2] = {
        { ch, BRAID_SELECT_RECV, &a, 0 },
        { ch2, BRAID_SELECT_RECV, &b, 0 },
    };
    while (closed < 2) {
        int k = braid_select(sc, 2, braid_deadline_ms(a & 1 ? 1 : 100), 0);
        if (k == -ETIMEDOUT)
            continue;
        CHECK(k == 0 || k == 1);
        if (sc[k].result == -EPIPE) {
            sc[k].chan = NULL; /* drop the case */
            closed++;
            continue;
        }
        int v = k == 0 ? a : b;
        if (atomic_exchange(&sel_seen[v], 1))
            TEST_FAIL("value %d received twice", v);
        atomic_fetch_add(&received, 1);
    }
    return NULL;
}

TEST(select_stress_loses_nothing)
{
    memset(sel_seen, 0, sizeof sel_seen);
    atomic_store(&received, 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 4;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 0), 0);
    CHECK_EQ(braid_chan_new(&ch2, sizeof(int), 2), 0);
    /* Each channel gets two senders; the creator's reference is dropped. */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(braid_chan_sender_dup(ch), 0);
        CHECK_EQ(braid_chan_sender_dup(ch2), 0);
    }
    braid_task s[SEL_SENDERS], r[SEL_RECEIVERS];
    for (int i = 0; i < SEL_SENDERS; i++)
        CHECK_EQ(braid_spawn_on(rt, &s[i], sel_sender, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < SEL_RECEIVERS; i++)
        CHECK_EQ(braid_spawn_on(rt, &r[i], sel_receiver, NULL), 0);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_sender_drop(ch2), 0);
    for (int i = 0; i < SEL_SENDERS; i++)
        CHECK_EQ(braid_join(s[i], NULL), BRAID_OK);
    for (int i = 0; i < SEL_RECEIVERS; i++)
        CHECK_EQ(braid_join(r[i], NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&received), SEL_SENDERS * (int)test_scale(SEL_PER));
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch2), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}
