/* Spawning, joining, handles and misuse. */
#include "test.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>

static void *ret_arg(void *arg)
{
    return arg;
}

static void *add_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

/* ---- values through join ---- */

static void *spawn_join_values_root(void *arg)
{
    (void)arg;
    enum { N = 1000 };
    static braid_task h[N];
    for (uintptr_t i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], add_one, (void *)i), 0);
    uint64_t sum = 0;
    for (uintptr_t i = 0; i < N; i++) {
        void *r = NULL;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK_EQ((uintptr_t)r, i + 1);
        sum += (uintptr_t)r;
    }
    CHECK_EQ(sum, (uint64_t)N * (N + 1) / 2);
    return (void *)7;
}

TEST(spawn_join_values)
{
    CHECK_EQ((uintptr_t)test_run(2, spawn_join_values_root, NULL), 7);
    CHECK_EQ((uintptr_t)test_run(1, spawn_join_values_root, NULL), 7);
    CHECK_EQ((uintptr_t)test_run(4, spawn_join_values_root, NULL), 7);
}

TEST(run_returns_root_fate_and_value)
{
    void *r = NULL;
    CHECK_EQ(braid_run(ret_arg, (void *)99, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 99);
    CHECK_EQ(braid_run(ret_arg, NULL, NULL), BRAID_OK);
}

/* ---- handles ---- */

static void *handle_checks_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, ret_arg, (void *)5), 0);
    uint64_t id = braid_task_id(h);
    CHECK(id != 0);
    CHECK(id != braid_current_id());
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK(braid_is_finished(h) == false); /* consumed */
    CHECK_EQ(braid_task_id(h), id);         /* the id is still readable */
    CHECK_EQ(braid_join(h, &r), -ESRCH);
    CHECK_EQ(braid_detach(h), -ESRCH);
    CHECK_EQ(braid_cancel(h), -ESRCH);

    braid_task zero = { 0 };
    CHECK_EQ(braid_join(zero, &r), -EINVAL);
    CHECK_EQ(braid_cancel(zero), -EINVAL);
    CHECK_EQ(braid_detach(zero), -EINVAL);
    CHECK(!braid_is_finished(zero));
    CHECK_EQ(braid_task_id(zero), 0);

    /* Made-up handles: random bits never crash. */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        braid_task junk = { x };
        int rc = braid_join(junk, &r);
        CHECK(rc == -EINVAL || rc == -ESRCH);
        rc = braid_cancel(junk);
        CHECK(rc == -EINVAL || rc == -ESRCH);
        CHECK(!braid_is_finished(junk));
    }
    /* Own handle. */
    return NULL;
}

TEST(stale_and_madeup_handles)
{
    test_run(2, handle_checks_root, NULL);
}

static braid_task self_handle;
static atomic_int self_ready;

static void *join_self(void *arg)
{
    (void)arg;
    while (!atomic_load(&self_ready))
        braid_yield();
    void *r;
    CHECK_EQ(braid_join(self_handle, &r), -EDEADLK);
    return (void *)1;
}

static void *join_self_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_spawn(&self_handle, join_self, NULL), 0);
    atomic_store(&self_ready, 1);
    void *r;
    CHECK_EQ(braid_join(self_handle, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 1);
    return NULL;
}

TEST(join_own_handle_is_edeadlk)
{
    test_run(2, join_self_root, NULL);
}

/* A second joiner while the first waits gets -EBUSY, and so does detach. */
static braid_task busy_target;
static atomic_int busy_release, busy_joining;

static void *busy_sleeper(void *arg)
{
    (void)arg;
    while (!atomic_load(&busy_release))
        braid_sleep_ms(1);
    return (void *)3;
}

static void *busy_first_joiner(void *arg)
{
    (void)arg;
    void *r;
    atomic_store(&busy_joining, 1);
    CHECK_EQ(braid_join(busy_target, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 3);
    return NULL;
}

static void *busy_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_spawn(&busy_target, busy_sleeper, NULL), 0);
    braid_task j;
    CHECK_EQ(braid_spawn(&j, busy_first_joiner, NULL), 0);
    /* One worker: once the joiner has started, it runs until it parks in
     * braid_join, registered as the waiter, before we run again. */
    while (!atomic_load(&busy_joining))
        braid_yield();
    void *r;
    CHECK_EQ(braid_join(busy_target, &r), -EBUSY);
    CHECK_EQ(braid_detach(busy_target), -EBUSY);
    atomic_store(&busy_release, 1);
    CHECK_EQ(braid_join(j, NULL), BRAID_OK);
    CHECK_EQ(braid_join(busy_target, &r), -ESRCH);
    return NULL;
}

TEST(concurrent_join_is_ebusy)
{
    test_run(1, busy_root, NULL);
}

/* ---- plain threads ---- */

struct plain_ctx {
    braid_runtime *rt;
    braid_task h;
};

static void *slow_value(void *arg)
{
    braid_sleep_ms(20);
    return arg;
}

TEST(join_and_spawn_from_plain_thread)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[64];
    for (uintptr_t i = 0; i < 64; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], slow_value, (void *)i), 0);
    for (uintptr_t i = 0; i < 64; i++) {
        void *r = NULL;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK_EQ((uintptr_t)r, i);
    }
    /* Task-only calls from a plain thread. */
    braid_task x;
    CHECK_EQ(braid_spawn(&x, ret_arg, NULL), -EPERM);
    CHECK_EQ(braid_yield(), -EPERM);
    CHECK_EQ(braid_sleep_ms(1), -EPERM);
    braid_call c = { ret_arg, NULL, NULL };
    CHECK_EQ(braid_join_all(&c, 1), -EPERM);
    CHECK_EQ(braid_worker_index(), -EPERM);
    CHECK_EQ(braid_current_id(), 0);
    CHECK(braid_current_runtime() == NULL);
    braid_defer d;
    CHECK_EQ(braid_defer_push(&d, free, NULL), -EPERM);
    CHECK(!braid_cancel_shield(true));
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static void *misuse_root(void *arg)
{
    braid_runtime *rt = arg;
    CHECK_EQ(braid_run(ret_arg, NULL, NULL), -EPERM);
    CHECK_EQ(braid_block_on(rt, ret_arg, NULL, NULL), -EPERM);
    CHECK_EQ(braid_runtime_free(rt), -EPERM);
    braid_runtime *other;
    CHECK_EQ(braid_runtime_new(NULL, &other), -EPERM);
    CHECK(braid_current_runtime() == rt);
    CHECK_EQ(braid_spawn(NULL, NULL, NULL), -EINVAL);
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.stack_size = (size_t)2 << 30;
    CHECK_EQ(braid_spawn_ex(NULL, &o, ret_arg, NULL), -EINVAL);
    return NULL;
}

TEST(runtime_calls_inside_task_are_eperm)
{
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(NULL, &rt), 0);
    CHECK_EQ(braid_block_on(rt, misuse_root, rt, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_runtime_free(NULL), -EINVAL);
    CHECK_EQ(braid_block_on(NULL, ret_arg, NULL, NULL), -EINVAL);
    CHECK_EQ(braid_spawn_on(NULL, NULL, ret_arg, NULL), -EINVAL);
    CHECK_EQ(braid_runtime_new(NULL, NULL), -EINVAL);
}

TEST(errno_is_never_set)
{
    errno = 1234;
    braid_task zero = { 0 };
    CHECK_EQ(braid_join(zero, NULL), -EINVAL);
    CHECK_EQ(braid_sleep_ms(1), -EPERM);
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(NULL, &rt), 0);
    CHECK_EQ(braid_block_on(rt, ret_arg, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(errno, 1234);
}

static void *errno_keeper(void *arg)
{
    int mine = (int)(uintptr_t)arg;
    errno = mine;
    for (int i = 0; i < 50; i++) {
        braid_yield();
        CHECK_EQ(errno, mine);
        braid_sleep_ms(0);
        CHECK_EQ(errno, mine);
    }
    return NULL;
}

static void *errno_root(void *arg)
{
    (void)arg;
    braid_task h[8];
    for (uintptr_t i = 0; i < 8; i++)
        CHECK_EQ(braid_spawn(&h[i], errno_keeper, (void *)(i + 100)), 0);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(errno_is_per_task)
{
    test_run(1, errno_root, NULL);
    test_run(2, errno_root, NULL);
}

/* ---- detach ---- */

static atomic_int detached_ran;

static void *detached_body(void *arg)
{
    (void)arg;
    braid_sleep_ms(5);
    atomic_fetch_add(&detached_ran, 1);
    return NULL;
}

static void *detach_root(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        CHECK_EQ(braid_spawn(NULL, detached_body, NULL), 0);
    braid_task h[100];
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(braid_spawn(&h[i], detached_body, NULL), 0);
        CHECK_EQ(braid_detach(h[i]), 0);
        CHECK_EQ(braid_detach(h[i]), -ESRCH);
        CHECK_EQ(braid_join(h[i], NULL), -ESRCH);
    }
    while (atomic_load(&detached_ran) < 200)
        braid_sleep_ms(1);
    return NULL;
}

TEST(detached_tasks_run_and_handles_are_consumed)
{
    test_run(2, detach_root, NULL);
    CHECK_EQ(atomic_load(&detached_ran), 200);
}

static void *detach_finished_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, ret_arg, NULL), 0);
    while (!braid_is_finished(h))
        braid_yield();
    CHECK_EQ(braid_detach(h), 0);
    CHECK_EQ(braid_join(h, NULL), -ESRCH);
    return NULL;
}

TEST(detach_after_finish_frees_record)
{
    test_run(2, detach_finished_root, NULL);
}

/* ---- ids and worker indexes ---- */

static void *id_body(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)braid_current_id();
}

static void *ids_root(void *arg)
{
    (void)arg;
    enum { N = 200 };
    braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], id_body, NULL), 0);
    for (int i = 0; i < N; i++) {
        uint64_t id = braid_task_id(h[i]);
        for (int j = 0; j < i; j++)
            CHECK(braid_task_id(h[j]) != id);
        void *r;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK_EQ((uint64_t)(uintptr_t)r, id);
    }
    int wi = braid_worker_index();
    CHECK(wi >= 0 && wi < 3);
    return NULL;
}

TEST(ids_are_unique_and_match_current_id)
{
    test_run(3, ids_root, NULL);
}

TEST(strerror_names_every_code)
{
    int codes[] = { BRAID_OK, BRAID_PANICKED, BRAID_CANCELLED, -EPERM, -ESRCH, -EINVAL,
                    -EDEADLK, -ECANCELED, -ETIMEDOUT, -ENOMEM, -EAGAIN, -EBUSY, -EIO, 12345 };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = braid_strerror(codes[i]);
        CHECK(s != NULL && *s != 0);
    }
    CHECK(strstr(braid_strerror(BRAID_PANICKED), "panick") != NULL);
    CHECK(strstr(braid_strerror(-EDEADLK), "itself") != NULL);
    CHECK_STR(braid_version(), BRAID_VERSION_STRING);
}

/* ---- spawn does not run the child inline ---- */

static atomic_int inline_flag;

static void *set_flag(void *arg)
{
    (void)arg;
    atomic_store(&inline_flag, 1);
    return NULL;
}

static void *no_inline_root(void *arg)
{
    (void)arg;
    braid_task h[100];
    for (int i = 0; i < 100; i++)
        CHECK_EQ(braid_spawn(&h[i], set_flag, NULL), 0);
    /* One worker: nothing else can have run the children yet. */
    CHECK_EQ(atomic_load(&inline_flag), 0);
    braid_yield();
    CHECK_EQ(atomic_load(&inline_flag), 1);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(spawn_does_not_run_child_inline)
{
    test_run(1, no_inline_root, NULL);
}

/* ---- memory ordering ---- */

struct payload {
    int a[64];
};

static void *writer(void *arg)
{
    struct payload *p = arg;
    for (int i = 0; i < 64; i++)
        p->a[i] = i * 3;
    return p;
}

static void *reader(void *arg)
{
    struct payload *p = arg;
    for (int i = 0; i < 64; i++)
        CHECK_EQ(p->a[i], i + 1);
    return NULL;
}

static void *ordering_root(void *arg)
{
    (void)arg;
    for (int round = 0; round < 200; round++) {
        struct payload *p = malloc(sizeof *p);
        for (int i = 0; i < 64; i++)
            p->a[i] = i + 1; /* before spawn: visible to the task */
        braid_task r, w;
        CHECK_EQ(braid_spawn(&r, reader, p), 0);
        CHECK_EQ(braid_join(r, NULL), BRAID_OK);
        CHECK_EQ(braid_spawn(&w, writer, p), 0);
        void *out;
        CHECK_EQ(braid_join(w, &out), BRAID_OK);
        for (int i = 0; i < 64; i++) /* the task's writes: visible after join */
            CHECK_EQ(((struct payload *)out)->a[i], i * 3);
        free(p);
    }
    return NULL;
}

TEST(memory_ordering_spawn_and_join)
{
    test_run(4, ordering_root, NULL);
}

/* ---- current-thread flavour ---- */

static void *which_thread(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)pthread_self();
}

static void *current_thread_root(void *arg)
{
    (void)arg;
    braid_task h[10];
    for (int i = 0; i < 10; i++)
        CHECK_EQ(braid_spawn(&h[i], which_thread, NULL), 0);
    for (int i = 0; i < 10; i++) {
        void *r;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK((pthread_t)(uintptr_t)r == pthread_self());
    }
    return (void *)(uintptr_t)pthread_self();
}

TEST(current_thread_flavour_runs_on_caller)
{
    void *r = test_run(1, current_thread_root, NULL);
    CHECK((pthread_t)(uintptr_t)r == pthread_self());
}

TEST(current_thread_runtime_block_on_twice)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    void *r;
    CHECK_EQ(braid_block_on(rt, ret_arg, (void *)1, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 1);
    /* A task spawned from outside runs at the next block_on. */
    braid_task h;
    CHECK_EQ(braid_spawn_on(rt, &h, ret_arg, (void *)2), 0);
    CHECK(!braid_is_finished(h));
    CHECK_EQ(braid_block_on(rt, ret_arg, (void *)3, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 3);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

TEST(workers_default_is_usable_cpus)
{
    cpu_set_t set;
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    /* Restrict to one CPU: the default runtime then has one worker, so its
     * root task runs on the calling thread. */
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            CPU_SET(c, &one);
            break;
        }
    CHECK_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(NULL, &rt), 0);
    void *r;
    CHECK_EQ(braid_block_on(rt, which_thread, NULL, &r), BRAID_OK);
    CHECK((pthread_t)(uintptr_t)r == pthread_self());
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(sched_setaffinity(0, sizeof set, &set), 0);
}

static braid_runtime *bound_rt;

static void *block_on_from_other_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)braid_block_on(bound_rt, ret_arg, NULL, NULL);
}

TEST(current_thread_runtime_is_bound_to_its_thread)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    CHECK_EQ(braid_runtime_new(&cfg, &bound_rt), 0);
    CHECK_EQ(braid_block_on(bound_rt, ret_arg, NULL, NULL), BRAID_OK);
    pthread_t th;
    void *rc;
    CHECK_EQ(pthread_create(&th, NULL, block_on_from_other_thread, NULL), 0);
    CHECK_EQ(pthread_join(th, &rc), 0);
    CHECK_EQ((intptr_t)rc, -EPERM);
    CHECK_EQ(braid_runtime_free(bound_rt), 0);
}

/* ---- an ended task's stack handed to the next ---- */

/* A chain as in bench chained_spawn: each link spawns the next and ends, so
 * the next starts in the stack (and record) the ended one leaves.  Links
 * alternate a name (the record's extension, freed when the stack is handed
 * on) and a larger stack on every third (another stack class: no hand-on). */
enum { HANDON_LINKS = 3000 };
static uintptr_t handon_frame[HANDON_LINKS];
static braid_notify *handon_done;

static void *handon_link(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    handon_frame[k] = (uintptr_t)__builtin_frame_address(0);
    if (k + 1 == HANDON_LINKS) {
        braid_notify_one(handon_done);
        return NULL;
    }
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = (k & 1) ? "odd link" : NULL;
    o.stack_size = (k + 1) % 3 == 0 ? 1024 * 1024 : 0;
    CHECK_EQ(braid_spawn_ex(NULL, &o, handon_link, (void *)(k + 1)), 0);
    return NULL;
}

static void run_handon_chain(void)
{
    CHECK_EQ(braid_spawn(NULL, handon_link, (void *)0), 0);
    CHECK_EQ(braid_notify_wait(handon_done), 0);
}

/* Two chains; malloc's bytes in use around the second, while the runtime
 * lives (its free would release what a hand-on failed to). */
static void *handon_root(void *arg)
{
    size_t *grew = arg;
    run_handon_chain(); /* warm: caches and libc's own first allocations */
    size_t before = mallinfo2().uordblks;
    run_handon_chain();
    size_t after = mallinfo2().uordblks;
    *grew = after > before ? after - before : 0;
    return NULL;
}

TEST(an_ended_task_hands_its_stack_to_the_next)
{
    CHECK_EQ(braid_notify_new(&handon_done), 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    size_t grew = 0;
    CHECK_EQ(braid_block_on(rt, handon_root, &grew, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    braid_notify_free(handon_done);
    /* Each named link's extension is freed as its stack is handed on (or
     * released): 1,500 lost ones would hold far more than this slack. */
    CHECK(grew <= 16 * 1024);
    /* Only the assembly switch can enter a stack afresh, and tools follow
     * each fiber's life, so they take the usual path. */
    if (test_portable_ctx() || test_instrumented())
        return;
    size_t same = 0, with_class_change = 0;
    for (size_t k = 1; k < HANDON_LINKS; k++) {
        bool big = k % 3 == 0, before_big = k > 1 && (k - 1) % 3 == 0;
        if (big || before_big)
            with_class_change += handon_frame[k] == handon_frame[k - 1];
        else
            same += handon_frame[k] == handon_frame[k - 1];
    }
    /* Links of the same class in a row share one stack (1,001 pairs; a
     * few hand-offs go through the scheduler context for its periodic
     * work instead); across classes they cannot. */
    CHECK(same >= 900);
    CHECK_EQ(with_class_change, (size_t)0);
}
