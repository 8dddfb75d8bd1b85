/* Every waiting call, in turn: cancelled while it waits it returns
 * -ECANCELED, past its deadline -ETIMEDOUT, and either way the object is
 * left as it was (checked by using it afterwards). */
#include "test.h"

static braid_chan *full, *empty_ch;
static braid_oneshot *os;
static braid_bcast *bc;
static braid_bcast_rx *bcrx;
static braid_watch *wa;
static braid_mutex mu = BRAID_MUTEX_INIT;
static braid_rwlock rw = BRAID_RWLOCK_INIT;
static braid_sem sem = BRAID_SEM_INIT(0);
static braid_cond cv = BRAID_COND_INIT;
static braid_barrier bar;
static braid_notify *nt;
static braid_token *tok;
static braid_joinset *js;
static braid_task sleeper;

/* Each op blocks (the objects are set up so that it must) until deadline. */
typedef int (*op_fn)(uint64_t deadline);

static int op_send(uint64_t d)
{
    int v = 1;
    return braid_chan_send_until(full, &v, d);
}
static int op_recv(uint64_t d)
{
    int v;
    return braid_chan_recv_until(empty_ch, &v, d);
}
static int op_select(uint64_t d)
{
    int a = 1, b;
    braid_select_case sc[2] = { { full, BRAID_SELECT_SEND, &a, 0 },
                                { empty_ch, BRAID_SELECT_RECV, &b, 0 } };
    return braid_select(sc, 2, d, 0);
}
static int op_oneshot(uint64_t d)
{
    int v;
    return braid_oneshot_recv_until(os, &v, d);
}
static int op_bcast(uint64_t d)
{
    int v;
    return braid_bcast_recv_until(bcrx, &v, NULL, d);
}
static int op_watch(uint64_t d)
{
    uint64_t ver;
    int v;
    braid_watch_get(wa, NULL, &ver);
    return braid_watch_changed_until(wa, &ver, &v, d);
}
static int op_mutex(uint64_t d)
{
    return braid_mutex_lock_until(&mu, d);
}
static int op_rdlock(uint64_t d)
{
    return braid_rwlock_rdlock_until(&rw, d);
}
static int op_sem(uint64_t d)
{
    return braid_sem_acquire_until(&sem, 1, d);
}
static int op_cond(uint64_t d)
{
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    int rc = braid_cond_wait_until(&cv, &mu, d);
    CHECK_EQ(braid_mutex_unlock(&mu), 0); /* held again whatever happened */
    return rc;
}
static int op_barrier(uint64_t d)
{
    return braid_barrier_wait_until(&bar, d);
}
static int op_notify(uint64_t d)
{
    return braid_notify_wait_until(nt, d);
}
static int op_token(uint64_t d)
{
    return braid_token_wait_until(tok, d);
}
static int op_joinset(uint64_t d)
{
    return braid_joinset_join_next_until(js, NULL, NULL, d);
}
static int op_join(uint64_t d)
{
    return braid_join_until(sleeper, NULL, d);
}
static int op_sleep(uint64_t d)
{
    return braid_sleep_until(d);
}

static const struct {
    const char *name;
    op_fn fn;
} ops[] = {
    { "chan send", op_send },       { "chan recv", op_recv },   { "select", op_select },
    { "oneshot recv", op_oneshot }, { "bcast recv", op_bcast }, { "watch changed", op_watch },
    { "mutex lock", op_mutex },     { "rwlock rdlock", op_rdlock }, { "sem acquire", op_sem },
    { "cond wait", op_cond },       { "barrier wait", op_barrier }, { "notify wait", op_notify },
    { "token wait", op_token },     { "joinset next", op_joinset }, { "join", op_join },
    { "sleep", op_sleep },
};
#define NOPS (sizeof ops / sizeof ops[0])

static void *run_op(void *arg)
{
    return (void *)(intptr_t)ops[(uintptr_t)arg].fn(BRAID_FOREVER);
}

static void *long_sleep(void *arg)
{
    (void)arg;
    braid_sleep_ms(100000);
    return NULL;
}

static void setup(void)
{
    int v = 0;
    CHECK_EQ(braid_chan_new(&full, sizeof(int), 1), 0);
    CHECK_EQ(braid_chan_send(full, &v), 0);
    CHECK_EQ(braid_chan_new(&empty_ch, sizeof(int), 1), 0);
    CHECK_EQ(braid_oneshot_new(&os, sizeof(int)), 0);
    CHECK_EQ(braid_bcast_new(&bc, sizeof(int), 4), 0);
    CHECK_EQ(braid_bcast_subscribe(bc, &bcrx), 0);
    CHECK_EQ(braid_watch_new(&wa, sizeof(int), &v), 0);
    CHECK_EQ(braid_barrier_init(&bar, 2), 0);
    CHECK_EQ(braid_notify_new(&nt), 0);
    CHECK_EQ(braid_token_new(&tok, NULL), 0);
    CHECK_EQ(braid_joinset_new(&js), 0);
    CHECK_EQ(braid_joinset_spawn(js, NULL, long_sleep, NULL, NULL), 0);
    CHECK_EQ(braid_spawn(&sleeper, long_sleep, NULL), 0);
    CHECK_EQ(braid_rwlock_wrlock(&rw), 0);
}

/* After each op gave up, the objects still work as before. */
static void check_intact(void)
{
    int v = 5;
    CHECK_EQ(braid_chan_len(full), 1);
    CHECK_EQ(braid_chan_len(empty_ch), 0);
    CHECK_EQ(braid_chan_send(empty_ch, &v), 0); /* to a receiver that left: buffered */
    CHECK_EQ(braid_chan_recv(empty_ch, &v), 0);
    CHECK_EQ(braid_sem_available(&sem), 0);
    CHECK_EQ(braid_sem_release(&sem, 1), 0);
    CHECK_EQ(braid_sem_try_acquire(&sem, 1), 0); /* nobody took it */
    CHECK_EQ(braid_barrier_destroy(&bar), 0);   /* arrivals were taken back */
    CHECK_EQ(braid_notify_free(nt), 0);           /* no waiter left */
    CHECK_EQ(braid_notify_new(&nt), 0);
    CHECK(!braid_is_finished(sleeper));
    CHECK_EQ(braid_joinset_len(js), 1);
    CHECK_EQ(braid_mutex_destroy(&mu), 0);
    CHECK_EQ(braid_cond_destroy(&cv), 0);
}

static void teardown(void)
{
    CHECK_EQ(braid_rwlock_unlock(&rw), 0);
    CHECK_EQ(braid_rwlock_destroy(&rw), 0);
    CHECK_EQ(braid_cancel(sleeper), 0);
    CHECK_EQ(braid_join(sleeper, NULL), BRAID_CANCELLED);
    CHECK_EQ(braid_joinset_free(js), 0);
    CHECK_EQ(braid_token_free(tok), 0);
    CHECK_EQ(braid_notify_free(nt), 0);
    CHECK_EQ(braid_watch_free(wa), 0);
    CHECK_EQ(braid_bcast_rx_free(bcrx), 0);
    CHECK_EQ(braid_bcast_free(bc), 0);
    CHECK_EQ(braid_oneshot_sender_drop(os), 0);
    CHECK_EQ(braid_oneshot_receiver_drop(os), 0);
    for (int i = 0; i < 2; i++) {
        braid_chan *c = i ? full : empty_ch;
        CHECK_EQ(braid_chan_sender_drop(c), 0);
        CHECK_EQ(braid_chan_receiver_drop(c), 0);
    }
}

static void *mutex_holder(void *arg)
{
    braid_notify *release = arg;
    CHECK_EQ(braid_mutex_lock(&mu), 0);
    CHECK_EQ(braid_notify_wait(release), 0);
    CHECK_EQ(braid_mutex_unlock(&mu), 0);
    return NULL;
}

/* The mutex op needs the mutex held by another task while it waits. */
static braid_notify *release_holder;
static braid_task holder;

static void hold_mutex_for(size_t i)
{
    if (ops[i].fn != op_mutex)
        return;
    CHECK_EQ(braid_notify_new(&release_holder), 0);
    CHECK_EQ(braid_spawn(&holder, mutex_holder, release_holder), 0);
    CHECK_EQ(braid_yield(), 0); /* one worker: it holds the mutex now */
}

static void release_mutex_for(size_t i)
{
    if (ops[i].fn != op_mutex)
        return;
    CHECK_EQ(braid_notify_one(release_holder), 0);
    CHECK_EQ(braid_join(holder, NULL), BRAID_OK);
    CHECK_EQ(braid_notify_free(release_holder), 0);
}

static void *cancel_root(void *arg)
{
    (void)arg;
    setup();
    for (uintptr_t i = 0; i < NOPS; i++) {
        hold_mutex_for(i);
        braid_task t;
        CHECK_EQ(braid_spawn(&t, run_op, (void *)i), 0);
        CHECK_EQ(braid_yield(), 0); /* one worker: it runs until it waits */
        CHECK(!braid_is_finished(t));
        CHECK_EQ(braid_cancel(t), 0);
        void *r;
        CHECK_EQ(braid_join(t, &r), BRAID_CANCELLED);
        if ((intptr_t)r != -ECANCELED)
            TEST_FAIL("%s returned %d when cancelled", ops[i].name, (int)(intptr_t)r);
        release_mutex_for(i);
        check_intact();
    }
    teardown();
    return NULL;
}

TEST(every_wait_is_a_cancellation_point)
{
    test_run(1, cancel_root, NULL);
}

static void *deadline_root(void *arg)
{
    (void)arg;
    setup();
    for (uintptr_t i = 0; i < NOPS; i++) {
        if (ops[i].fn == op_sleep)
            continue; /* a sleep that reaches its deadline succeeds */
        hold_mutex_for(i);
        uint64_t t0 = braid_now_ns();
        int rc = ops[i].fn(braid_deadline_ms(10));
        if (rc != -ETIMEDOUT)
            TEST_FAIL("%s returned %d at its deadline", ops[i].name, rc);
        CHECK(braid_now_ns() - t0 >= 10000000u);
        release_mutex_for(i);
        check_intact();
    }
    teardown();
    return NULL;
}

TEST(every_wait_has_a_deadline)
{
    test_run(1, deadline_root, NULL);
}
