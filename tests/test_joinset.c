/* JoinSet, cancellation tokens, and joins with a deadline. */
#include "test.h"

#include <pthread.h>

static void *sleep_then_return(void *arg)
{
    int rc = braid_sleep_ms((uintptr_t)arg);
    if (rc)
        return (void *)(intptr_t)rc;
    return arg;
}

static void *panics(void *arg)
{
    (void)arg;
    braid_panic("joinset member failed");
}

/* ---- join with a deadline ---- */

static void *join_until_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, sleep_then_return, (void *)50), 0);
    void *r;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_join_until(h, &r, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 10000000u);
    CHECK(!braid_is_finished(h));
    /* The handle is still good. */
    CHECK_EQ(braid_join_until(h, &r, braid_deadline_ms(10000)), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 50);
    return NULL;
}

TEST(join_until_times_out_and_keeps_the_handle)
{
    test_run(2, join_until_root, NULL);
}

TEST(join_until_from_a_plain_thread)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h;
    CHECK_EQ(braid_spawn_on(rt, &h, sleep_then_return, (void *)50), 0);
    void *r;
    CHECK_EQ(braid_join_until(h, &r, braid_deadline_ms(5)), -ETIMEDOUT);
    braid_outcome out = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex_until(h, &out, braid_deadline_ms(10000)), BRAID_OK);
    CHECK_EQ((uintptr_t)out.value, 50);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- JoinSet ---- */

/* A task that ends with value once released (the permit is stored if the
 * release comes first). */
struct gate {
    braid_notify *go;
    uintptr_t value;
};

static void *wait_gate(void *arg)
{
    struct gate *g = arg;
    CHECK_EQ(braid_notify_wait(g->go), 0);
    return (void *)g->value;
}

static void *joinset_root(void *arg)
{
    (void)arg;
    braid_joinset *s;
    CHECK_EQ(braid_joinset_new(&s), 0);
    braid_outcome out = BRAID_OUTCOME_INIT;
    uint64_t id;
    CHECK_EQ(braid_joinset_join_next(s, &out, &id), -ENOENT);
    /* Spawned in one order, finished in another (the root releases them
     * one by one, so the order does not depend on timing): joined in
     * finish order. */
    uint64_t ids[3];
    struct gate gates[3];
    for (int i = 0; i < 3; i++) {
        gates[i].value = (uintptr_t)(i + 1);
        CHECK_EQ(braid_notify_new(&gates[i].go), 0);
        CHECK_EQ(braid_joinset_spawn(s, NULL, wait_gate, &gates[i], &ids[i]), 0);
    }
    CHECK_EQ(braid_joinset_len(s), 3);
    int order[3] = { 1, 2, 0 };
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_notify_one(gates[order[i]].go), 0);
        CHECK_EQ(braid_joinset_join_next(s, &out, &id), BRAID_OK);
        CHECK_EQ((uintptr_t)out.value, gates[order[i]].value);
        CHECK_EQ(id, ids[order[i]]);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_notify_free(gates[i].go), 0);
    CHECK_EQ(braid_joinset_len(s), 0);
    CHECK_EQ(braid_joinset_join_next(s, &out, &id), -ENOENT);
    /* A panic is an outcome like any other. */
    CHECK_EQ(braid_joinset_spawn(s, NULL, panics, NULL, &id), 0);
    CHECK_EQ(braid_joinset_join_next(s, &out, NULL), BRAID_PANICKED);
    CHECK(strstr(out.message, "joinset member failed") != NULL);
    /* Deadline on join_next. */
    CHECK_EQ(braid_joinset_spawn(s, NULL, sleep_then_return, (void *)10000, NULL), 0);
    CHECK_EQ(braid_joinset_join_next_until(s, &out, NULL, braid_deadline_ms(10)), -ETIMEDOUT);
    /* cancel_all: they end cancelled, and stay in the set until joined. */
    CHECK_EQ(braid_joinset_spawn(s, NULL, sleep_then_return, (void *)10000, NULL), 0);
    CHECK_EQ(braid_joinset_cancel_all(s), 0);
    CHECK_EQ(braid_joinset_len(s), 2);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(braid_joinset_join_next(s, &out, NULL), BRAID_CANCELLED);
    /* Freeing a set cancels and waits for what is left. */
    for (int i = 0; i < 100; i++)
        CHECK_EQ(braid_joinset_spawn(s, NULL, sleep_then_return, (void *)10000, NULL), 0);
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_joinset_free(s), 0);
    CHECK(braid_now_ns() - t0 < 5000000000u);
    return NULL;
}

TEST(joinset_completion_order_cancel_and_free)
{
    test_run(2, joinset_root, NULL);
}

/* Two join_next waiters, A queued first, and one member that finishes;
 * A is cancelled just before.  Whichever of the member's end and A's
 * cancellation A sees first, the member is joined exactly once and B
 * never waits for good: it gets the member, or -ENOENT once A has taken
 * it.  Seeds of the deterministic mode vary which task runs first. */
struct two_waiters {
    braid_joinset *set;
    braid_notify *go;
    atomic_int queued;
    int rc[2];
};

static void *member_on_notify(void *arg)
{
    struct two_waiters *w = arg;
    CHECK_EQ(braid_notify_wait(w->go), 0);
    return (void *)7;
}

static void *next_waiter(void *arg)
{
    struct two_waiters *w = arg;
    int me = atomic_fetch_add(&w->queued, 1);
    braid_outcome out = BRAID_OUTCOME_INIT;
    w->rc[me] = braid_joinset_join_next(w->set, &out, NULL);
    CHECK(w->rc[me] < 0 || (uintptr_t)out.value == 7);
    return NULL;
}

static void *two_waiters_root(void *arg)
{
    struct two_waiters *w = arg;
    CHECK_EQ(braid_joinset_new(&w->set), 0);
    CHECK_EQ(braid_notify_new(&w->go), 0);
    CHECK_EQ(braid_joinset_spawn(w->set, NULL, member_on_notify, w, NULL), 0);
    braid_task t[2];
    for (int i = 0; i < 2; i++) {
        /* One worker: a waiter seen queued has also parked. */
        CHECK_EQ(braid_spawn(&t[i], next_waiter, w), 0);
        while (atomic_load(&w->queued) == i)
            CHECK_EQ(braid_yield(), 0);
    }
    CHECK_EQ(braid_cancel(t[0]), 0);
    CHECK_EQ(braid_notify_one(w->go), 0);
    int fate = braid_join(t[0], NULL);
    CHECK(fate == BRAID_OK || fate == BRAID_CANCELLED);
    int rc = braid_join_until(t[1], NULL, braid_deadline_ms(60000));
    if (rc != BRAID_OK)
        TEST_FAIL("the second waiter never returned (A: %d, set length %zu)", w->rc[0],
                  braid_joinset_len(w->set));
    /* Exactly one of them joined the member. */
    CHECK((w->rc[0] == BRAID_OK) != (w->rc[1] == BRAID_OK));
    CHECK(w->rc[0] == BRAID_OK || w->rc[0] == -ECANCELED);
    CHECK(w->rc[1] == BRAID_OK || w->rc[1] == -ENOENT);
    CHECK_EQ(braid_joinset_len(w->set), 0);
    CHECK_EQ(braid_joinset_free(w->set), 0);
    CHECK_EQ(braid_notify_free(w->go), 0);
    return NULL;
}

TEST(joinset_woken_waiter_cancelled_strands_nobody)
{
    int took[2] = { 0, 0 };
    for (uint64_t seed = 1; seed <= 200; seed++) {
        struct two_waiters w = { 0 };
        test_run_seeded(seed, two_waiters_root, &w);
        took[w.rc[0] == BRAID_OK]++;
    }
    /* Both orders happened: the member's end first (A takes it, B gets
     * -ENOENT), and A's cancellation first (B takes it). */
    CHECK(took[0] > 0 && took[1] > 0);
}

TEST(joinset_spawn_needs_a_task)
{
    braid_joinset *s;
    CHECK_EQ(braid_joinset_new(&s), 0);
    CHECK_EQ(braid_joinset_spawn(s, NULL, sleep_then_return, NULL, NULL), -EPERM);
    CHECK_EQ(braid_joinset_spawn(NULL, NULL, sleep_then_return, NULL, NULL), -EINVAL);
    CHECK_EQ(braid_joinset_free(s), 0);
}

/* Many short tasks across workers: each joined exactly once. */
static void *quick(void *arg)
{
    return arg;
}

static void *joinset_many_root(void *arg)
{
    (void)arg;
    int n = (int)test_scale(20000);
    braid_joinset *s;
    CHECK_EQ(braid_joinset_new(&s), 0);
    for (int i = 0; i < n; i++)
        CHECK_EQ(braid_joinset_spawn(s, NULL, quick, (void *)(uintptr_t)(i + 1), NULL), 0);
    long sum = 0;
    braid_outcome out = BRAID_OUTCOME_INIT;
    int fate;
    while ((fate = braid_joinset_join_next(s, &out, NULL)) >= 0) {
        CHECK_EQ(fate, BRAID_OK);
        sum += (long)(uintptr_t)out.value;
    }
    CHECK_EQ(fate, -ENOENT);
    CHECK_EQ(sum, (long)n * (n + 1) / 2);
    CHECK_EQ(braid_joinset_free(s), 0);
    return NULL;
}

TEST(joinset_many_tasks)
{
    test_run(4, joinset_many_root, NULL);
}

/* ---- cancellation tokens ---- */

static braid_token *tok;

static void *waits_for_token(void *arg)
{
    braid_token *t = arg;
    return (void *)(intptr_t)braid_token_wait(t);
}

static void *selects_on_token(void *arg)
{
    braid_chan *work = arg;
    int v, got = 0;
    braid_select_case sc[2] = {
        { work, BRAID_SELECT_RECV, &v, 0 },
        { braid_token_chan(tok), BRAID_SELECT_RECV, &v, 0 },
    };
    for (;;) {
        int k = braid_select(sc, 2, BRAID_FOREVER, BRAID_SELECT_BIASED);
        if (k == 1)
            return (void *)(intptr_t)got; /* cancelled */
        CHECK_EQ(k, 0);
        got++;
    }
}

static void *token_root(void *arg)
{
    (void)arg;
    braid_token *child, *grandchild, *other;
    CHECK_EQ(braid_token_new(&tok, NULL), 0);
    CHECK_EQ(braid_token_new(&child, tok), 0);
    CHECK_EQ(braid_token_new(&grandchild, child), 0);
    CHECK_EQ(braid_token_new(&other, NULL), 0);
    CHECK(!braid_token_is_cancelled(grandchild));
    CHECK_EQ(braid_token_wait_until(grandchild, braid_deadline_ms(5)), -ETIMEDOUT);
    braid_task w, s;
    CHECK_EQ(braid_spawn(&w, waits_for_token, grandchild), 0);
    braid_chan *work;
    CHECK_EQ(braid_chan_new(&work, sizeof(int), 4), 0);
    CHECK_EQ(braid_spawn(&s, selects_on_token, work), 0);
    int v = 1;
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_chan_send(work, &v), 0);
    CHECK_EQ(braid_sleep_ms(5), 0); /* the selector drains them (speed, not correctness) */
    /* Cancelling the child reaches the grandchild, not the parent. */
    CHECK_EQ(braid_token_cancel(child), 0);
    void *r;
    CHECK_EQ(braid_join(w, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, 0);
    CHECK(braid_token_is_cancelled(grandchild));
    CHECK(!braid_token_is_cancelled(tok));
    /* Cancelling the root reaches the selector. */
    CHECK_EQ(braid_token_cancel(tok), 0);
    CHECK_EQ(braid_join(s, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, 3);
    /* A child of a cancelled token starts cancelled. */
    braid_token *late;
    CHECK_EQ(braid_token_new(&late, tok), 0);
    CHECK(braid_token_is_cancelled(late));
    CHECK_EQ(braid_token_wait(late), 0);
    CHECK(!braid_token_is_cancelled(other));
    /* Free in any order; children outlive their parent. */
    CHECK_EQ(braid_token_free(tok), 0);
    CHECK_EQ(braid_token_cancel(grandchild), 0);
    CHECK_EQ(braid_token_free(child), 0);
    CHECK_EQ(braid_token_free(grandchild), 0);
    CHECK_EQ(braid_token_free(late), 0);
    CHECK_EQ(braid_token_free(other), 0);
    CHECK_EQ(braid_chan_sender_drop(work), 0);
    CHECK_EQ(braid_chan_receiver_drop(work), 0);
    CHECK_EQ(braid_token_new(&other, (braid_token *)&v), -EINVAL);
    return NULL;
}

TEST(tokens_cancel_their_subtree)
{
    test_run(2, token_root, NULL);
}

/* Cancelling walks the whole subtree, and only it, however deep: a chain
 * far deeper than a task's stack could recurse through. */
#define CHAIN 100000

static void *token_shapes(void *arg)
{
    (void)arg;
    braid_token *root, *a, *b, *a1, *a2, *b1;
    CHECK_EQ(braid_token_new(&root, NULL), 0);
    CHECK_EQ(braid_token_new(&a, root), 0);
    CHECK_EQ(braid_token_new(&b, root), 0);
    CHECK_EQ(braid_token_new(&a1, a), 0);
    CHECK_EQ(braid_token_new(&a2, a), 0);
    CHECK_EQ(braid_token_new(&b1, b), 0);
    CHECK_EQ(braid_token_cancel(a), 0);
    CHECK(braid_token_is_cancelled(a1) && braid_token_is_cancelled(a2));
    CHECK(!braid_token_is_cancelled(root) && !braid_token_is_cancelled(b));
    CHECK(!braid_token_is_cancelled(b1));
    CHECK_EQ(braid_token_cancel(root), 0);
    CHECK(braid_token_is_cancelled(b) && braid_token_is_cancelled(b1));
    braid_token *all[] = { root, a, b, a1, a2, b1 };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        CHECK_EQ(braid_token_free(all[i]), 0);

    /* Each link also has a leaf, added first so that the link is the
     * first child: a recursion would descend before visiting the leaf, so
     * no compiler could turn it into a loop. */
    long n = test_scale(CHAIN);
    braid_token **chain = malloc((size_t)n * sizeof *chain);
    braid_token **leaf = malloc((size_t)n * sizeof *leaf);
    CHECK(chain && leaf);
    CHECK_EQ(braid_token_new(&chain[0], NULL), 0);
    leaf[0] = NULL;
    for (long i = 1; i < n; i++) {
        CHECK_EQ(braid_token_new(&leaf[i], chain[i - 1]), 0);
        CHECK_EQ(braid_token_new(&chain[i], chain[i - 1]), 0);
    }
    CHECK_EQ(braid_token_cancel(chain[0]), 0);
    CHECK(braid_token_is_cancelled(chain[n - 1]) && braid_token_is_cancelled(leaf[1]));
    for (long i = 0; i < n; i++) {
        CHECK_EQ(braid_token_free(chain[i]), 0);
        if (leaf[i])
            CHECK_EQ(braid_token_free(leaf[i]), 0);
    }
    free(chain);
    free(leaf);
    return NULL;
}

TEST(token_cancel_walks_deep_and_wide_trees)
{
    test_run(1, token_shapes, NULL);
}
