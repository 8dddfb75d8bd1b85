/*
 * Running out of memory and address space: spawning fails with -ENOMEM,
 * nothing leaks, and the runtime keeps working once memory is back.
 */
#include "test.h"

#include <sys/resource.h>

/* Run root on a runtime of the given workers while the address space is
 * limited to limit bytes. */
static void run_limited(unsigned workers, size_t limit, braid_fn root, void *arg)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    struct rlimit old, low;
    CHECK_EQ(getrlimit(RLIMIT_AS, &old), 0);
    low = old;
    low.rlim_cur = limit;
    CHECK_EQ(setrlimit(RLIMIT_AS, &low), 0);
    int rc = braid_block_on(rt, root, arg, NULL);
    CHECK_EQ(setrlimit(RLIMIT_AS, &old), 0);
    CHECK_EQ(rc, BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* This process's address space in use, in bytes. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static void *value(void *arg)
{
    braid_yield();
    return arg;
}

enum { MAX = 20000000 };

static void *hog_root(void *arg)
{
    /* With a low address-space limit, spawning (records, stacks) fails at
     * some point: the failure must be a clean -ENOMEM. */
    braid_task *h = arg;
    long n = 0;
    int rc = 0;
    while (n < MAX && (rc = braid_spawn(&h[n], value, (void *)(uintptr_t)n)) == 0)
        n++;
    CHECK_EQ(rc, -ENOMEM);
    CHECK(n > 10);
    /* Those that were spawned either run or fail cleanly for want of a
     * stack; either way every handle joins. */
    /* How many got a stack before the limit depends on what else the
     * process had mapped (a CI run once had none): either way is clean. */
    for (long i = 0; i < n; i++) {
        braid_outcome o = BRAID_OUTCOME_INIT;
        int f = braid_join_ex(h[i], &o);
        if (f == BRAID_OK) {
            CHECK_EQ((uintptr_t)o.value, (uintptr_t)i);
        } else {
            CHECK_EQ(f, BRAID_PANICKED);
            CHECK(strstr(o.message, "out of memory") != NULL);
        }
    }
    /* Memory is back: the runtime works as before. */
    braid_task again;
    CHECK_EQ(braid_spawn(&again, value, (void *)7), 0);
    void *r;
    CHECK_EQ(braid_join(again, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 7);
    return NULL;
}

TEST(spawn_reports_enomem_and_runtime_survives)
{
    if (test_instrumented())
        SKIP("sanitizers and Valgrind need the address space");
    if (test_emulated())
        SKIP("qemu-user does not apply RLIMIT_AS to the emulated program");
    if (test_migrating())
        SKIP("with migration the freed stacks sit in the cache of whichever worker each task "
             "ended on, out of reach of the spawning worker once the address space is full");
    braid_task *h = malloc(sizeof *h * MAX);
    CHECK(h != NULL);
    memset(h, 0, sizeof *h * MAX); /* touch it now, not under the limit */
    run_limited(2, vm_size() + ((size_t)160 << 20), hog_root, h);
    free(h);
}

static void *big_stack(void *arg)
{
    volatile char buf[64 * 1024];
    buf[0] = 1;
    braid_sleep_ms(50); /* stay alive, holding the stack */
    return (void *)(uintptr_t)(buf[0] + (uintptr_t)arg);
}

static void *stack_oom_root(void *arg)
{
    (void)arg;
    /* 1 GiB stacks under a 3 GiB limit: a few fit, then a task cannot get
     * a stack; its arg_drop runs and it reports the failure. */
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.stack_size = (size_t)1 << 30;
    braid_task h[16];
    int spawned = 0, refused = 0;
    for (int i = 0; i < 16; i++) {
        int rc = braid_spawn_ex(&h[spawned], &o, big_stack, (void *)(uintptr_t)i);
        if (rc == 0)
            spawned++;
        else {
            CHECK_EQ(rc, -ENOMEM);
            refused++;
        }
    }
    for (int i = 0; i < 20; i++)
        braid_yield(); /* let them all start */
    int ok = 0, failed = 0;
    for (int i = 0; i < spawned; i++) {
        braid_outcome out = BRAID_OUTCOME_INIT;
        int f = braid_join_ex(h[i], &out);
        if (f == BRAID_OK)
            ok++;
        else {
            CHECK_EQ(f, BRAID_PANICKED);
            CHECK(strstr(out.message, "no stack") != NULL);
            failed++;
        }
    }
    CHECK(ok > 0);
    CHECK(failed + refused > 0);
    return NULL;
}

TEST(huge_stacks_fail_cleanly)
{
    if (test_instrumented())
        SKIP("sanitizers and Valgrind need the address space");
    if (test_emulated())
        SKIP("qemu-user does not apply RLIMIT_AS to the emulated program");
    run_limited(1, (size_t)3 << 30, stack_oom_root, NULL);
}
