/* Joins that race: two joiners for one task.  White-box: the tests read a
 * record's state word to know, as an event, that a joiner has registered. */
#include "test.h"
#include "handle.h"

#include <pthread.h>
#include <sched.h>

static braid_task target;
static braid_notify *release_target;
static int first_result = -1;
static void *first_value;
static atomic_int first_done;

static void *ret_arg(void *arg)
{
    return arg;
}

static void *waits_then_returns(void *arg)
{
    CHECK_EQ(braid_notify_wait(release_target), 0);
    return arg;
}

static void *first_joiner(void *arg)
{
    (void)arg;
    first_result = braid_join(target, &first_value);
    atomic_store(&first_done, 1);
    return NULL;
}

static uint64_t target_state(void)
{
    braid__rec *r = braid__rec_lookup(target);
    CHECK(r != NULL);
    return atomic_load(&r->state);
}

/* Spin the calling thread (without letting its worker run anything else)
 * until a joiner has registered for target. */
static void await_registered(void)
{
    uint64_t give_up = test_now_ms() + 60000;
    while (!(target_state() & BRAID_REC_WAITING)) {
        if (test_now_ms() > give_up)
            TEST_FAIL("the first joiner never registered");
        sched_yield();
    }
}

/* The first joiner is a plain thread; the second, the root task, tries
 * while the target has not started.  Joining an unstarted task normally
 * runs it inline; here that would take the first joiner's join over, so
 * the second joiner must get -EBUSY and leave the target queued. */
static void *second_joins_unstarted(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_spawn(&target, ret_arg, (void *)5), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, first_joiner, NULL), 0);
    await_registered();
    CHECK_EQ(braid__rec_phase(target_state()), BRAID_REC_QUEUED);
    void *r = NULL;
    CHECK_EQ(braid_join(target, &r), -EBUSY);
    CHECK_EQ(braid__rec_phase(target_state()), BRAID_REC_QUEUED);
    CHECK_EQ(braid_detach(target), -EBUSY);
    /* Only this task's yields let the target run.  (braid_is_finished would
     * not do: once the first joiner consumes the result the handle is
     * stale.) */
    while (!atomic_load(&first_done))
        CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(first_result, BRAID_OK);
    CHECK_EQ((uintptr_t)first_value, 5);
    return NULL;
}

TEST(second_joiner_of_an_unstarted_task_is_ebusy)
{
    /* One worker: the target cannot start while the root spins. */
    test_run(1, second_joins_unstarted, NULL);
}

/* The target is running (blocked) when both join.  The first joiner is a
 * task of a second current-thread runtime: once woken it runs only when
 * that runtime is driven again, so the test sees the target DONE with its
 * result still unclaimed, reserved for the first joiner. */
static braid_task first_task;

static void *first_joiner_task(void *arg)
{
    (void)arg;
    void *r = NULL;
    CHECK_EQ(braid_join(target, &r), BRAID_OK);
    return r;
}

static void *start_target(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_spawn(&target, waits_then_returns, (void *)6), 0);
    CHECK_EQ(braid_yield(), 0); /* one worker: the target runs and blocks */
    CHECK_EQ(braid__rec_phase(target_state()), BRAID_REC_RUNNING);
    return NULL;
}

static void *start_first_joiner(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_spawn(&first_task, first_joiner_task, NULL), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK(target_state() & BRAID_REC_WAITING);
    return NULL;
}

static void *second_joins_running(void *arg)
{
    (void)arg;
    void *r = NULL;
    CHECK_EQ(braid_join(target, &r), -EBUSY);
    CHECK_EQ(braid_detach(target), -EBUSY);
    CHECK_EQ(braid_notify_one(release_target), 0);
    while (!braid_is_finished(target))
        CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_join(target, &r), -EBUSY); /* reserved for the first */
    CHECK_EQ(braid_detach(target), -EBUSY);
    return NULL;
}

static void *collect_first(void *arg)
{
    (void)arg;
    void *r = NULL;
    CHECK_EQ(braid_join(first_task, &r), BRAID_OK);
    return r;
}

TEST(second_joiner_of_a_running_task_is_ebusy)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt1, *rt2;
    CHECK_EQ(braid_runtime_new(&cfg, &rt1), 0);
    CHECK_EQ(braid_runtime_new(&cfg, &rt2), 0);
    CHECK_EQ(braid_notify_new(&release_target), 0);
    CHECK_EQ(braid_block_on(rt1, start_target, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_block_on(rt2, start_first_joiner, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_block_on(rt1, second_joins_running, NULL, NULL), BRAID_OK);
    void *r = NULL;
    CHECK_EQ(braid_block_on(rt2, collect_first, NULL, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 6);
    CHECK_EQ(braid_runtime_free(rt1), 0);
    CHECK_EQ(braid_runtime_free(rt2), 0);
    CHECK_EQ(braid_notify_free(release_target), 0);
}
