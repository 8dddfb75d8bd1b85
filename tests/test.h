/*
 * A small test harness.  Each tests/test_*.c file is one program holding
 * several TEST()s.  "prog --list" prints their names; "prog NAME" runs one
 * and exits 0 (pass), 77 (skipped) or anything else (fail).  The runner
 * (tests/run-all.sh) runs every test in its own process, with a timeout, in
 * each build configuration.
 *
 * CHECK failures print the location and _exit(1) at once, from whatever
 * thread or task they happen on.
 */
#ifndef BRAID_TEST_H
#define BRAID_TEST_H

#include <braid.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*test_fn)(void);

struct test_entry {
    const char *name;
    test_fn fn;
};

static struct test_entry test_table[256];
static int test_count;

static inline void test_register(const char *name, test_fn fn)
{
    if (test_count < 256)
        test_table[test_count++] = (struct test_entry){ name, fn };
}

#define TEST(name)                                                                 \
    static void name(void);                                                        \
    __attribute__((constructor)) static void register_##name(void)                 \
    {                                                                              \
        test_register(#name, name);                                                \
    }                                                                              \
    static void name(void)

#define TEST_FAIL(...)                                                             \
    do {                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
        fprintf(stderr, __VA_ARGS__);                                              \
        fprintf(stderr, "\n");                                                     \
        fflush(stderr);                                                            \
        _exit(1);                                                                  \
    } while (0)

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond))                                                               \
            TEST_FAIL("CHECK failed: %s", #cond);                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                             \
    do {                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                        \
        if (_a != _b)                                                              \
            TEST_FAIL("CHECK_EQ failed: %s == %s (%lld vs %lld)", #a, #b, _a, _b); \
    } while (0)

#define CHECK_STR(a, b)                                                            \
    do {                                                                           \
        const char *_a = (a), *_b = (b);                                           \
        if (!_a || !_b || strcmp(_a, _b) != 0)                                     \
            TEST_FAIL("CHECK_STR failed: %s == %s (\"%s\" vs \"%s\")", #a, #b,     \
                      _a ? _a : "(null)", _b ? _b : "(null)");                     \
    } while (0)

#define SKIP(why)                                                                  \
    do {                                                                           \
        printf("skipped: %s\n", why);                                              \
        fflush(stdout);                                                            \
        _exit(77);                                                                 \
    } while (0)

/* Skip because a tool the test drives (gdb, tmux, redis-cli...) is
 * missing or cannot work here; but fail when BRAID_REQUIRE_TOOLS=1 says
 * the machine has them all (CI installs them), so that a broken install
 * does not pass as a row of skips. */
#define test_skip_tool(why)                                                        \
    do {                                                                           \
        const char *_req = getenv("BRAID_REQUIRE_TOOLS");                          \
        if (_req && strcmp(_req, "1") == 0)                                        \
            TEST_FAIL("%s, and BRAID_REQUIRE_TOOLS=1 requires it", (why));         \
        SKIP(why);                                                                 \
    } while (0)

/* Whether the program prog is installed (found in PATH). */
static inline __attribute__((unused)) bool test_have_tool(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Whether the test may start other programs (the example binaries, or
 * itself): not when they would need an emulator that the kernel does not
 * start by itself and BRAID_TEST_RUNNER does not name (BRAID_TEST_NO_EXEC
 * says so). */
static inline void test_need_exec(void)
{
    const char *v = getenv("BRAID_TEST_NO_EXEC");
    if (v && *v == '1')
        SKIP("starts another program, which the emulator would not run");
}

/* The programs built with the tests run under BRAID_TEST_RUNNER, like the
 * tests themselves (make test-aarch64: "qemu-aarch64 -L
 * /usr/aarch64-linux-gnu"): under qemu-user an emulated program's exec()
 * is the host kernel's, which cannot start another aarch64 program unless
 * binfmt_misc is set up.  A program named by a path (test_sibling()) is
 * one of ours; a bare name is the host's (found in PATH) and runs as it
 * is. */
struct test_cmd {
    char words[512];
    char *argv[64];
};

/* argv, preceded by the runner's words if argv[0] is a path; c holds the
 * result, which must live until the exec. */
static inline char **test_runner_argv(struct test_cmd *c, char *const argv[])
{
    int k = 0;
    const char *r = getenv("BRAID_TEST_RUNNER");
    if (r && *r && strchr(argv[0], '/')) {
        snprintf(c->words, sizeof c->words, "%s", r);
        char *save = NULL;
        for (char *w = strtok_r(c->words, " \t", &save); w && k < 32;
             w = strtok_r(NULL, " \t", &save))
            c->argv[k++] = w;
    }
    for (int i = 0; argv[i] && k < 63; i++)
        c->argv[k++] = argv[i];
    c->argv[k] = NULL;
    return c->argv;
}

/* The path of the program name built next to this test binary (the
 * examples are built there as ex_NAME, with the same flags).  Under
 * Valgrind /proc/self/exe names the program, not Valgrind. */
static inline void test_sibling(const char *name, char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
        TEST_FAIL("readlink /proc/self/exe failed");
    self[k] = 0;
    snprintf(out, n, "%s/%s", dirname(self), name);
}

/* test_sibling() as a shell command for popen() and system(): the path,
 * after the runner's words if there is a runner. */
static inline void test_sibling_cmd(const char *name, char *out, size_t n)
{
    const char *r = getenv("BRAID_TEST_RUNNER");
    int k = r && *r ? snprintf(out, n, "%s ", r) : 0;
    if (k < 0 || (size_t)k >= n)
        TEST_FAIL("BRAID_TEST_RUNNER is too long");
    test_sibling(name, out + k, n - (size_t)k);
}

/* Start argv[0] (searched in PATH if it has no '/'; a path under the
 * runner, see test_runner_argv()) with its stdout on a pipe; returns the
 * pipe's read end (close-on-exec) and sets *pid.  The child is killed if
 * the test process dies first. */
static inline int test_spawn_piped(char *const argv[], pid_t *pid)
{
    struct test_cmd c;
    char **run = test_runner_argv(&c, argv);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        TEST_FAIL("pipe2 failed");
    fflush(stdout);
    fflush(stderr);
    *pid = fork();
    if (*pid < 0)
        TEST_FAIL("fork failed");
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        execvp(run[0], run);
        fprintf(stderr, "exec %s: %s\n", run[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    return p[0];
}

/* The whole of a file, malloc'd and NUL-terminated; NULL if it cannot be
 * opened. */
static inline __attribute__((unused)) char *test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0, n;
    char *buf = malloc(cap);
    if (!buf)
        TEST_FAIL("out of memory reading %s", path);
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            cap *= 2;
            char *more = realloc(buf, cap);
            if (!more)
                TEST_FAIL("out of memory reading %s", path);
            buf = more;
        }
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* Whether the program runs under qemu-user (make test-aarch64), which
 * does not apply RLIMIT_AS to the emulated program's mappings. */
static inline int test_emulated(void)
{
    const char *v = getenv("BRAID_TEST_EMULATED");
    return v && *v == '1';
}

/* Whether braid converts faults (stack overflows included) in this
 * program: not with a static libbraid built with -flto, whose code the
 * fault handler cannot locate (make test-builds sets
 * BRAID_TEST_NO_ISOLATION for that build; see the Makefile). */
static inline int test_no_isolation(void)
{
    const char *v = getenv("BRAID_TEST_NO_ISOLATION");
    return v && *v == '1';
}

/* Whether the library uses the portable (ucontext) context switch, whose
 * saved registers dumps and gdb cannot walk (make test-portable sets
 * BRAID_TEST_PORTABLE). */
static inline int test_portable_ctx(void)
{
    const char *v = getenv("BRAID_TEST_PORTABLE");
    return v && *v == '1';
}

#define test_need_isolation()                                                    \
    do {                                                                           \
        if (test_no_isolation())                                                   \
            SKIP("a static -flto libbraid converts no fault");                     \
    } while (0)

/* Use n bytes of stack, in 1 KiB frames.  An index the compiler cannot
 * know keeps the whole array in the frame (clang keeps only the bytes used
 * at constant indices), and the result is written after the recursive
 * call, so the frame lives across it (clang turns "return f(..) + x" into
 * a loop). */
static __attribute__((noinline, unused)) int test_use_stack(size_t n)
{
    volatile char frame[1024];
    frame[n % sizeof frame] = 1;
    frame[0] = (char)n;
    frame[1023] = 1;
    if (n <= sizeof frame)
        return frame[0];
    frame[1] = (char)test_use_stack(n - sizeof frame);
    return frame[1] + frame[1023];
}

/* Which tools the test runs under. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif

static inline int test_under_valgrind(void)
{
    const char *v = getenv("BRAID_TEST_VALGRIND");
    return v && *v == '1';
}

/* Whether any tool that slows the program or owns fault signals is on. */
static inline int test_instrumented(void)
{
#if defined(TEST_ASAN) || defined(TEST_TSAN)
    return 1;
#else
    return test_under_valgrind();
#endif
}

/* BRAID_MIGRATE, which every runtime honours over its configuration (the
 * migrate passes of make test set it to 1): -1 unset, else 0 or 1. */
static inline int test_env_migrate(void)
{
    const char *v = getenv("BRAID_MIGRATE");
    return v && *v ? strcmp(v, "0") != 0 : -1;
}

/* Whether the whole suite runs with migrating tasks. */
static inline int test_migrating(void)
{
    return test_env_migrate() == 1;
}

/* Scale a workload down under slow tools. */
static inline long test_scale(long n)
{
    if (test_under_valgrind())
        return n / 50 > 0 ? n / 50 : 1;
#if defined(TEST_TSAN)
    return n / 10 > 0 ? n / 10 : 1;
#elif defined(TEST_ASAN)
    return n / 4 > 0 ? n / 4 : 1;
#else
    return n;
#endif
}

static inline uint64_t test_now_ms(void)
{
    return braid_now_ns() / 1000000u;
}

/* A "Key: value kB" field of /proc/self/status, or -1. */
static inline long test_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':')
            v = atol(line + k + 1);
    if (f)
        fclose(f);
    return v;
}

/* From a task: wait (sleeping 1 ms at a time) until *counter >= want.
 * Tests synchronize on such events, never on sleeps of a guessed length. */
static inline void test_await(atomic_int *counter, int want)
{
    uint64_t give_up = test_now_ms() + 60000;
    while (atomic_load(counter) < want) {
        if (test_now_ms() > give_up)
            TEST_FAIL("waited 60 s for an event (%d of %d)", atomic_load(counter), want);
        braid_sleep_ms(1);
    }
}

/* From a task: spawn fn((void *)(i + 1)) for i < n (at most 64) and join
 * them all, checking that each returned normally. */
static inline void test_spawn_join_n(long n, braid_fn fn)
{
    braid_task h[64];
    if (n > 64)
        TEST_FAIL("test_spawn_join_n: %ld tasks, at most 64", n);
    for (long i = 0; i < n; i++)
        CHECK_EQ(braid_spawn(&h[i], fn, (void *)(uintptr_t)(i + 1)), 0);
    for (long i = 0; i < n; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
}

/* Run fn(arg) as the root task of a fresh runtime made with cfg and free
 * it; checks that everything succeeded and returns the root's result. */
static inline void *test_run_cfg(const braid_config *cfg, braid_fn fn, void *arg)
{
    braid_runtime *rt;
    int rc = braid_runtime_new(cfg, &rt);
    if (rc != 0)
        TEST_FAIL("braid_runtime_new: %s", braid_strerror(rc));
    void *result = NULL;
    rc = braid_block_on(rt, fn, arg, &result);
    if (rc != BRAID_OK)
        TEST_FAIL("braid_block_on: %d (%s)", rc, braid_strerror(rc));
    rc = braid_runtime_free(rt);
    if (rc != 0)
        TEST_FAIL("braid_runtime_free: %s", braid_strerror(rc));
    return result;
}

/* test_run_cfg with the given number of workers (0: default). */
static inline void *test_run(unsigned workers, braid_fn fn, void *arg)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    return test_run_cfg(&cfg, fn, arg);
}

/* test_run_cfg in deterministic mode with seed. */
static inline void *test_run_seeded(uint64_t seed, braid_fn fn, void *arg)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    cfg.seed = seed;
    return test_run_cfg(&cfg, fn, arg);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < test_count; i++)
            printf("%s\n", test_table[i].name);
        return 0;
    }
    if (argc == 2) {
        for (int i = 0; i < test_count; i++) {
            if (strcmp(argv[1], test_table[i].name) == 0) {
                test_table[i].fn();
                fflush(stdout);
                return 0;
            }
        }
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 2;
    }
    fprintf(stderr, "usage: %s --list | TEST\n", argv[0]);
    return 2;
}

#endif
