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

/* The kernel's limit on mappings (vm.max_map_count). */
static long max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long n = 65530;
    if (f && fscanf(f, "%ld", &n) != 1)
        n = 65530;
    if (f)
        fclose(f);
    return n;
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
    /* Guard regions cost no mapping where the kernel has
     * MADV_GUARD_INSTALL: a few dozen mappings in all.  Elsewhere (older
     * kernels, qemu-user) they are mprotect()ed regions, at most 3/8 of the
     * kernel's limit, each splitting its arena's mapping: up to 3/4 of the
     * limit (docs/design.md). */
    if (maps >= max_map_count() * 3 / 4 + 1000)
        TEST_FAIL("%ld mappings, limit %ld", maps, max_map_count());
    if (test_no_isolation())
        return NULL;
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
    if (test_emulated()) /* 100,000 tasks there took all of 24 GiB */
        SKIP("under qemu-user task stacks become resident");
    target = 1000000;
    CHECK_EQ(braid_run(million_root, NULL, NULL), BRAID_OK);
    CHECK_EQ(atomic_load(&ended), target);
}
