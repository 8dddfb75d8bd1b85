/* Cancellation: cancellation points, shields, unstarted tasks, races. */
#include "test.h"

#include <pthread.h>

static atomic_int ran, dropped, entered;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return (void *)1;
}

static void drop_arg(void *arg)
{
    CHECK_EQ((uintptr_t)arg, 0xabc);
    atomic_fetch_add(&dropped, 1);
}

/* ---- a task that has not started never runs ---- */

static void *unstarted_root(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = drop_arg;
    o.name = "never";
    enum { N = 100 };
    braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn_ex(&h[i], &o, mark_ran, (void *)0xabc), 0);
    /* One worker and no suspension since: none has started. */
    for (int i = 0; i < N; i++) {
        CHECK_EQ(braid_cancel(h[i]), 0);
        CHECK(braid_is_finished(h[i])); /* finished at once, by the cancel */
        CHECK_EQ(braid_cancel(h[i]), 0); /* again: no change */
    }
    CHECK_EQ(atomic_load(&dropped), N);
    for (int i = 0; i < N; i++) {
        braid_outcome o2 = BRAID_OUTCOME_INIT;
        CHECK_EQ(braid_join_ex(h[i], &o2), BRAID_CANCELLED);
        CHECK(o2.value == NULL);
        CHECK_STR(o2.message, "");
    }
    CHECK_EQ(atomic_load(&ran), 0);
    return NULL;
}

TEST(cancelled_before_start_never_runs_and_drops_arg)
{
    test_run(1, unstarted_root, NULL);
    CHECK_EQ(atomic_load(&ran), 0);
    CHECK_EQ(atomic_load(&dropped), 100);
}

/* ---- every cancellation point ---- */

static void *sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&entered, 1);
    int rc = braid_sleep_ms(60000);
    CHECK_EQ(rc, -ECANCELED);
    /* Every cancellation point now says so, every time. */
    CHECK_EQ(braid_sleep_ms(1), -ECANCELED);
    CHECK_EQ(braid_yield(), -ECANCELED);
    CHECK_EQ(braid_sleep_until(0), -ECANCELED);
    braid_task h;
    CHECK_EQ(braid_spawn(&h, mark_ran, NULL), 0); /* spawning still works */
    CHECK_EQ(braid_join(h, NULL), -ECANCELED);
    braid_call c = { mark_ran, NULL, NULL };
    CHECK_EQ(braid_join_all(&c, 1), -ECANCELED);
    CHECK(braid_cancelled());
    /* Shielded: blocking works again, then the handle is still valid. */
    CHECK(!braid_cancel_shield(true));
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 1);
    CHECK_EQ(braid_sleep_ms(1), 0);
    CHECK(braid_cancel_shield(false));
    CHECK_EQ(braid_sleep_ms(1), -ECANCELED);
    return (void *)0x55;
}

static void *points_root(void *arg)
{
    (void)arg;
    braid_task h;
    atomic_store(&entered, 0);
    CHECK_EQ(braid_spawn(&h, sleeper, NULL), 0);
    test_await(&entered, 1); /* it is sleeping, or about to */
    CHECK(!braid_is_finished(h));
    CHECK_EQ(braid_cancel(h), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(h, &o), BRAID_CANCELLED);
    CHECK_EQ((uintptr_t)o.value, 0x55); /* what it returned, to be freed */
    return NULL;
}

TEST(cancellation_points_return_ecanceled_every_time)
{
    test_run(2, points_root, NULL);
    test_run(1, points_root, NULL);
}

static void *shielded_worker(void *arg)
{
    (void)arg;
    braid_cancel_shield(true);
    atomic_fetch_add(&entered, 1);
    /* A shielded sleep is not interrupted. */
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_sleep_ms(50), 0);
    CHECK(braid_now_ns() - t0 >= 50000000u);
    CHECK(braid_cancelled());
    braid_cancel_shield(false);
    CHECK_EQ(braid_yield(), -ECANCELED);
    return NULL;
}

static void *shield_root(void *arg)
{
    (void)arg;
    braid_task h;
    atomic_store(&entered, 0);
    CHECK_EQ(braid_spawn(&h, shielded_worker, NULL), 0);
    test_await(&entered, 1);
    CHECK_EQ(braid_cancel(h), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_CANCELLED);
    return NULL;
}

TEST(shield_defers_cancellation)
{
    test_run(2, shield_root, NULL);
}

/* ---- cancelling a finished task changes nothing ---- */

static void *finished_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, mark_ran, NULL), 0);
    while (!braid_is_finished(h))
        braid_yield();
    CHECK_EQ(braid_cancel(h), 0);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 1);
    return NULL;
}

TEST(cancel_after_finish_is_ok)
{
    test_run(2, finished_root, NULL);
}

/* ---- a cancelled joiner: -ECANCELED and the handle stays valid ---- */

static atomic_int release_child;

static void *waits_for_release(void *arg)
{
    (void)arg;
    braid_cancel_shield(true);
    while (!atomic_load(&release_child))
        braid_sleep_ms(1);
    return (void *)9;
}

static void *joiner(void *arg)
{
    braid_task *child = arg;
    void *r;
    atomic_fetch_add(&entered, 1);
    CHECK_EQ(braid_join(*child, &r), -ECANCELED);
    /* The handle is still ours: join it shielded. */
    braid_cancel_shield(true);
    atomic_store(&release_child, 1);
    CHECK_EQ(braid_join(*child, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 9);
    return NULL;
}

static void *joiner_root(void *arg)
{
    (void)arg;
    static braid_task child;
    braid_task j;
    CHECK_EQ(braid_spawn(&child, waits_for_release, NULL), 0);
    atomic_store(&entered, 0);
    CHECK_EQ(braid_spawn(&j, joiner, &child), 0);
    test_await(&entered, 1); /* it is joining, or about to */
    CHECK_EQ(braid_cancel(j), 0);
    CHECK_EQ(braid_join(j, NULL), BRAID_CANCELLED);
    return NULL;
}

TEST(cancelled_joiner_keeps_handle)
{
    atomic_store(&release_child, 0);
    test_run(2, joiner_root, NULL);
}

/* ---- children of a cancelled task keep running ---- */

static atomic_int child_done;

static void *long_child(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_sleep_ms(50), 0);
    atomic_store(&child_done, 1);
    return NULL;
}

static void *parent(void *arg)
{
    braid_task *out = arg;
    CHECK_EQ(braid_spawn(out, long_child, NULL), 0);
    atomic_fetch_add(&entered, 1);
    braid_sleep_ms(60000);
    return NULL;
}

static void *orphan_root(void *arg)
{
    (void)arg;
    braid_task p, c;
    atomic_store(&entered, 0);
    CHECK_EQ(braid_spawn(&p, parent, &c), 0);
    test_await(&entered, 1); /* c has been spawned */
    CHECK_EQ(braid_cancel(p), 0);
    CHECK_EQ(braid_join(p, NULL), BRAID_CANCELLED);
    CHECK_EQ(braid_join(c, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&child_done), 1);
    return NULL;
}

TEST(children_of_cancelled_task_keep_running)
{
    test_run(2, orphan_root, NULL);
}

/* ---- cancel from a plain thread ---- */

TEST(cancel_from_plain_thread)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[20];
    for (int i = 0; i < 20; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], sleeper, NULL), 0);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(braid_cancel(h[i]), 0);
    for (int i = 0; i < 20; i++) {
        int f = braid_join(h[i], NULL);
        CHECK(f == BRAID_CANCELLED);
    }
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- cancellation racing completion ---- */

static void *short_task(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    if (n % 3 == 0)
        braid_yield();
    if (n % 5 == 0)
        braid_sleep_ms(0);
    return (void *)n;
}

static void *race_root(void *arg)
{
    long rounds = (long)(intptr_t)arg;
    long ok = 0, cancelled = 0;
    for (long i = 0; i < rounds; i++) {
        braid_task h;
        CHECK_EQ(braid_spawn(&h, short_task, (void *)(uintptr_t)i), 0);
        if (i % 2)
            braid_yield();
        CHECK_EQ(braid_cancel(h), 0);
        void *r = (void *)1;
        int f = braid_join(h, &r);
        if (f == BRAID_OK) {
            CHECK_EQ((uintptr_t)r, (uintptr_t)i);
            ok++;
        } else {
            CHECK_EQ(f, BRAID_CANCELLED);
            /* Either never ran (NULL) or ran to the end (its value). */
            CHECK(r == NULL || (uintptr_t)r == (uintptr_t)i);
            cancelled++;
        }
    }
    CHECK_EQ(ok + cancelled, rounds);
    return NULL;
}

TEST(cancel_races_completion)
{
    test_run(2, race_root, (void *)(intptr_t)test_scale(20000));
    test_run(4, race_root, (void *)(intptr_t)test_scale(20000));
}
