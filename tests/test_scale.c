/*
 * Scale: a million concurrent tasks on a default kernel (vm.max_map_count
 * 65530), with every stack still guarded.
 */
#include "test.h"

static atomic_long started, ended;
static long target;

static void *sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
    int rc = braid_sleep_ms(600000);
    CHECK_EQ(rc, -ECANCELED); /* woken by the shutdown */
    atomic_fetch_add_explicit(&ended, 1, memory_order_relaxed);
    return NULL;
}

static volatile int depth_limit = 1 << 30;

static int recurse(int depth)
{
    volatile char buf[512];
    buf[0] = (char)depth;
    if (depth > depth_limit)
        return 0;
    return recurse(depth + 1) + buf[0];
}

static void *overflow(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)recurse(0);
}

static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    while (f && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f)
        fclose(f);
    return n;
}

static void *million_root(void *arg)
{
    (void)arg;
    uint64_t t0 = test_now_ms();
    for (long i = 0; i < target; i++)
        CHECK_EQ(braid_spawn(NULL, sleeper, NULL), 0);
    uint64_t spawned = test_now_ms();
    while (atomic_load(&started) < target)
        braid_sleep_ms(20);
    uint64_t all = test_now_ms();
    long maps = count_maps();
    printf("%ld tasks: spawned in %llu ms, all running after %llu ms; %ld mappings; "
           "VmRSS %ld kB, VmPTE %ld kB\n",
           target, (unsigned long long)(spawned - t0), (unsigned long long)(all - t0), maps,
           test_status_kb("VmRSS"), test_status_kb("VmPTE"));
    CHECK(maps < 10000);
    /* The newest stacks still have guards. */
    braid_task t;
    CHECK_EQ(braid_spawn(&t, overflow, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(t, &o), BRAID_PANICKED);
    CHECK(strstr(o.message, "stack overflow") != NULL);
    return NULL; /* the shutdown cancels the million */
}

TEST(million_concurrent_tasks)
{
    if (test_instrumented())
        SKIP("a million stacks: only in the plain build");
    target = 1000000;
    CHECK_EQ(braid_run(million_root, NULL, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&ended), target);
}
