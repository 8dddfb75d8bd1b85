/* Stacks: sizes, laziness, recycling, trimming, colouring. */
#include "test.h"
#include "task.h"

static volatile int depth_sink;

static void *use_arg_bytes(void *arg)
{
    depth_sink = test_use_stack((size_t)(uintptr_t)arg);
    return NULL;
}

/* One frame of n bytes, touched at its deepest byte. */
static __attribute__((noinline)) void *use_flat(void *arg)
{
    size_t n = (uintptr_t)arg;
    volatile char buf[n];
    buf[0] = 1;
    buf[n - 1] = 1;
    depth_sink = buf[0] + buf[n - 1];
    return NULL;
}

static void *sizes_root(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    size_t sizes[] = { 16 << 10, 64 << 10, 8 << 20 };
    for (size_t i = 0; i < 3; i++) {
        o.stack_size = sizes[i];
        braid_task t;
        /* Nine tenths of the stack (frames add ~5% to that): fine. */
        CHECK_EQ(braid_spawn_ex(&t, &o, use_arg_bytes, (void *)(uintptr_t)(sizes[i] / 10 * 9)), 0);
        CHECK_EQ(braid_join(t, NULL), BRAID_OK);
        /* All of it but 1 KiB (for the frames that start a task): the task
         * record and its cache colour do not count against it.  Spawned 16
         * times to go through every colour. */
        for (int c = 0; c < 16; c++) {
            CHECK_EQ(braid_spawn_ex(&t, &o, use_flat, (void *)(uintptr_t)(sizes[i] - 1024)), 0);
            CHECK_EQ(braid_join(t, NULL), BRAID_OK);
        }
        if (test_instrumented() || test_no_isolation())
            continue; /* no overflow detection under the sanitizers (or LTO) */
        /* Twice the stack: a panic, not a crash. */
        CHECK_EQ(braid_spawn_ex(&t, &o, use_arg_bytes, (void *)(uintptr_t)(sizes[i] * 2)), 0);
        braid_outcome out = BRAID_OUTCOME_INIT;
        CHECK_EQ(braid_join_ex(t, &out), BRAID_PANICKED);
        CHECK(strstr(out.message, "stack overflow") != NULL);
    }
    return NULL;
}

TEST(stack_sizes_are_honoured)
{
#if defined(TEST_ASAN)
    SKIP("ASan's frames are larger than the sizes this test computes with");
#endif
    test_run(2, sizes_root, NULL);
}

static void *noop(void *arg)
{
    return arg;
}

static void *unstarted_root(void *arg)
{
    (void)arg;
    enum { N = 100000 };
    static braid_task h[N];
    long before = test_status_kb("VmRSS");
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], noop, NULL), 0);
    long after = test_status_kb("VmRSS");
    /* A hundred thousand tasks that have not started: records only (32
     * bytes each, a few MB with the queues), no stacks (which would be 400
     * MB). */
    if (after - before > 40 * 1024)
        TEST_FAIL("unstarted tasks cost %ld kB", after - before);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(unstarted_tasks_hold_no_stack)
{
    if (test_instrumented())
        SKIP("memory figures are the tools' own");
    test_run(1, unstarted_root, NULL);
}

static atomic_int started, release;

static void *deep_sleeper(void *arg)
{
    (void)arg;
    depth_sink = test_use_stack(48 << 10); /* 48 KiB of the stack touched */
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&release))
        braid_sleep_ms(1);
    return NULL;
}

static void *trim_root(void *arg)
{
    (void)arg;
    enum { N = 4000 };
    static braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], deep_sleeper, NULL), 0);
    test_await(&started, N);
    long peak = test_status_kb("VmRSS");
    printf("peak %ld kB\n", peak);
    atomic_store(&release, 1);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    /* 4000 stacks of 48 KiB were touched (190 MB).  Once the workers are
     * idle they give the excess back; wait for that, with a generous bound. */
    uint64_t give_up = test_now_ms() + 20000;
    long now;
    while ((now = test_status_kb("VmRSS")) > peak - 120 * 1024) {
        if (test_now_ms() > give_up)
            TEST_FAIL("stacks not trimmed: %ld kB at the peak, %ld kB now", peak, now);
        braid_sleep_ms(10); /* lets the workers go idle */
    }
    return NULL;
}

TEST(idle_workers_trim_free_stacks)
{
    if (test_instrumented())
        SKIP("memory figures are the tools' own");
    test_run(2, trim_root, NULL);
}

/* Consecutive tasks of a worker lay their records at different offsets in
 * their top pages (cache colouring: see task.c). */
static void *record_offset(void *arg)
{
    (void)arg;
    return (void *)((uintptr_t)braid__task_current() & 4095);
}

static void *colours_root(void *arg)
{
    (void)arg;
    enum { N = 16 };
    braid_task t[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&t[i], record_offset, NULL), 0);
    bool seen[4096 / 64] = { false };
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        void *off;
        CHECK_EQ(braid_join(t[i], &off), BRAID_OK);
        distinct += !seen[(uintptr_t)off / 64];
        seen[(uintptr_t)off / 64] = true;
    }
    CHECK_EQ(distinct, N);
    return NULL;
}

TEST(task_records_are_cache_coloured)
{
    test_run(1, colours_root, NULL); /* one worker: one colour sequence */
}
