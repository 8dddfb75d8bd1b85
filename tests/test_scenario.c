/*
 * Randomized scenarios in deterministic mode (tests/scenario.h): for each
 * seed, a random workload is generated, run twice and checked (every task
 * ends once, every defer runs once, no channel value lost or duplicated,
 * mutual exclusion, cancellation completes; the two runs log the same
 * events).  BRAID_SCENARIO_SEEDS sets how many seeds (the default is scaled
 * to the tool), BRAID_SCENARIO_FIRST the first one (default: one derived
 * from the time, printed); BRAID_SEED=n replays seed n alone, printing its
 * event log.  Whatever ends the process in a seed (a crash, an abort, a
 * sanitizer's report) first prints that seed.
 *
 * For the tests below only: BRAID_SCENARIO_CRASH=n:how crashes at seed n,
 * inside a task, with how = segv, bus, abort or uaf (a use after free,
 * which only ASan reports).
 */
#include "test.h"
#include "scenario.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

/* About 5 s each on an idle machine: a test process must stay under ~20 s
 * on a loaded one (make soak runs many more). */
static uint64_t default_seeds(void)
{
    if (test_under_valgrind())
        return 250;
    if (test_emulated())
        return 300;
#if defined(TEST_TSAN)
    return 100;
#elif defined(TEST_ASAN)
    return 1000;
#else
    return 3000;
#endif
}

static char hint[256];
static volatile sig_atomic_t current_seed_lo, current_seed_hi, seed_running;

/* ---- saying which seed it was, from a signal handler ---- */

/* Append s to buf at *n (async-signal-safe). */
static void put_str(char *buf, size_t cap, size_t *n, const char *s)
{
    while (*s && *n < cap)
        buf[(*n)++] = *s++;
}

static void put_u64(char *buf, size_t cap, size_t *n, uint64_t v)
{
    char digits[20];
    int k = 0;
    do
        digits[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k > 0 && *n < cap)
        buf[(*n)++] = digits[--k];
}

/* "<what> at scenario seed N; replay: BRAID_SEED=N <program> scenario_seeds" */
static void report_seed(const char *what)
{
    if (!seed_running)
        return;
    uint64_t seed = (uint64_t)(uint32_t)current_seed_hi << 32 | (uint32_t)current_seed_lo;
    char msg[512];
    size_t n = 0;
    put_str(msg, sizeof msg, &n, "\n");
    put_str(msg, sizeof msg, &n, what);
    put_str(msg, sizeof msg, &n, " at scenario seed ");
    put_u64(msg, sizeof msg, &n, seed);
    put_str(msg, sizeof msg, &n, "; replay: BRAID_SEED=");
    put_u64(msg, sizeof msg, &n, seed);
    put_str(msg, sizeof msg, &n, " ");
    put_str(msg, sizeof msg, &n, program_invocation_name);
    put_str(msg, sizeof msg, &n, " scenario_seeds\n");
    if (write(2, msg, n) < 0)
        _exit(3);
}

/* A scenario that never ends is a failure too. */
static void on_alarm(int sig)
{
    (void)sig;
    report_seed("did not finish");
    _exit(2);
}

static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGABRT };
#define NCRASH (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction previous[NCRASH];

/* Print the seed, then let the signal do what it did before: the
 * previous handler (a sanitizer's report) or the default (the process
 * dies of it).  A fault returns to the faulting instruction, which faults
 * again under that handler; a sent signal is sent again. */
static void on_crash(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    report_seed(sig == SIGABRT ? "abort" : sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
    for (size_t k = 0; k < NCRASH; k++)
        if (crash_signals[k] == sig)
            sigaction(sig, &previous[k], NULL);
    if (si->si_code <= 0)
        raise(sig);
}

/* Sanitizers die through their own exit path, which calls this. */
static void on_sanitizer_death(void)
{
    report_seed("sanitizer report");
}

extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

/* braid's fault handler, installed over these while a runtime exists,
 * passes on the faults it does not turn into panics (src/panic.c). */
static void install_crash_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < NCRASH; k++)
        sigaction(crash_signals[k], &sa, &previous[k]);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(on_sanitizer_death);
}

/* ---- BRAID_SCENARIO_CRASH: a deliberate crash, for the tests below ---- */

static void *crashing_task(void *arg)
{
    const char *how = arg;
    if (strcmp(how, "segv") == 0)
        *(volatile int *)(uintptr_t)16 = 1;
    else if (strcmp(how, "bus") == 0)
        raise(SIGBUS);
    else if (strcmp(how, "uaf") == 0) {
        static char *volatile freed; /* hides the use from the compiler's warning */
        freed = malloc(8);
        free(freed);
        freed[0] = 1;
    }
    abort();
}

static void maybe_crash(uint64_t seed)
{
    const char *v = getenv("BRAID_SCENARIO_CRASH");
    char *how;
    if (!v || !*v || strtoull(v, &how, 0) != seed || *how != ':')
        return;
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_block_on(rt, crashing_task, how + 1, NULL);
    TEST_FAIL("the crash at seed %" PRIu64 " did not happen", seed);
}

static uint64_t run_one(uint64_t seed, bool verbose)
{
    current_seed_lo = (sig_atomic_t)(uint32_t)seed;
    current_seed_hi = (sig_atomic_t)(uint32_t)(seed >> 32);
    snprintf(hint, sizeof hint, "replay: BRAID_SEED=%" PRIu64 " %s scenario_seeds", seed,
             program_invocation_name);
    sc_replay_hint = hint;
    seed_running = 1;
    alarm(test_under_valgrind() ? 120 : 30);
    maybe_crash(seed);
    uint64_t events = sc_check_seed(seed, verbose);
    alarm(0);
    seed_running = 0;
    return events;
}

TEST(scenario_seeds)
{
    signal(SIGALRM, on_alarm);
    install_crash_handlers();
    const char *replay = getenv("BRAID_SEED");
    if (replay && *replay) {
        uint64_t seed = strtoull(replay, NULL, 0);
        printf("replaying seed %" PRIu64 "\n", seed);
        run_one(seed, true);
        return;
    }
    uint64_t n = env_u64("BRAID_SCENARIO_SEEDS", default_seeds());
    uint64_t first = env_u64("BRAID_SCENARIO_FIRST", (uint64_t)time(NULL) * 1000003u);
    printf("seeds %" PRIu64 " .. %" PRIu64 "\n", first, first + n - 1);
    fflush(stdout);
    uint64_t t0 = braid_now_ns(), events = 0;
    for (uint64_t s = first; s < first + n; s++)
        events += run_one(s, false);
    printf("%" PRIu64 " seeds (%" PRIu64 " events each run) in %.1f s\n", n, events,
           (double)(braid_now_ns() - t0) / 1e9);
}

/* The same seed gives the same log; another seed (almost always) another. */
TEST(scenario_hash_depends_on_seed)
{
    struct sc_program pg;
    struct sc_src src = { NULL, 0, 0, 7 };
    sc_generate(&pg, &src, 7);
    pg.nscripts = 2;
    uint64_t h = sc_run(&pg, false, NULL);
    CHECK_EQ(sc_run(&pg, false, NULL), h);
    int differ = 0;
    for (uint64_t s = 1; s <= 8; s++) {
        pg.seed = s * 0x1234567;
        differ += sc_run(&pg, false, NULL) != h;
    }
    CHECK(differ > 0);
}

/* ---- the replay and the crash report, seen from outside ---- */

/* Run this program's scenario_seeds in a child with the environment
 * variables env (NAME=value, NULL-terminated) set; returns what it wrote
 * (stdout and stderr, NUL-terminated, malloc'd) and its wait status. */
static char *run_child(const char *const *env, int *status)
{
    char self[PATH_MAX];
    test_sibling("test_scenario", self, sizeof self);
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        dup2(p[1], 2);
        unsetenv("BRAID_SEED");
        unsetenv("BRAID_SCENARIO_CRASH");
        for (; *env; env++)
            putenv((char *)*env);
        char *argv[] = { self, "scenario_seeds", NULL };
        struct test_cmd c; /* under the emulator too (make test-aarch64) */
        char **run = test_runner_argv(&c, argv);
        execvp(run[0], run);
        _exit(127);
    }
    close(p[1]);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    CHECK(out != NULL);
    for (;;) {
        if (len + 4096 > cap) {
            out = realloc(out, cap *= 2);
            CHECK(out != NULL);
        }
        ssize_t n = read(p[0], out + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    out[len] = 0;
    close(p[0]);
    CHECK_EQ(waitpid(pid, status, 0), pid);
    return out;
}

/* Drop the lines a sanitizer prints with its process id ("==123==WARNING:
 * ASan doesn't fully support makecontext/swapcontext" in the portable
 * build): they differ between any two processes. */
static void drop_tool_lines(char *out)
{
    char *w = out;
    for (char *line = out; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        size_t d = line[0] == '=' && line[1] == '=' ? strspn(line + 2, "0123456789") : 0;
        if (!(d > 0 && line[2 + d] == '=' && line[3 + d] == '=')) {
            memmove(w, line, n);
            w += n;
        }
        line += n;
    }
    *w = 0;
}

/* BRAID_SEED=n replays seed n in another process: the same output, byte
 * for byte (its event log included); another seed logs other events. */
TEST(scenario_replay_is_reproducible)
{
    test_need_exec();
    static const char *const seeds[] = { "1", "77", "123456789", "0x5eed5eed5eed" };
    char *first_log[4];
    for (int i = 0; i < 4; i++) {
        char var[64];
        snprintf(var, sizeof var, "BRAID_SEED=%s", seeds[i]);
        const char *env[] = { var, NULL };
        int st1, st2;
        char *a = run_child(env, &st1), *b = run_child(env, &st2);
        if (!WIFEXITED(st1) || WEXITSTATUS(st1) != 0 || !WIFEXITED(st2) || WEXITSTATUS(st2) != 0)
            TEST_FAIL("replaying seed %s failed:\n%s", seeds[i], a);
        drop_tool_lines(a);
        drop_tool_lines(b);
        CHECK(strlen(a) > 200); /* the event log was printed */
        if (strcmp(a, b) != 0)
            TEST_FAIL("two replays of seed %s printed different output", seeds[i]);
        free(b);
        /* Without the "replaying seed n" line, which differs anyway. */
        char *nl = strchr(a, '\n');
        CHECK(nl != NULL);
        first_log[i] = a;
        memmove(a, nl + 1, strlen(nl + 1) + 1);
    }
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (strcmp(first_log[i], first_log[j]) == 0)
                TEST_FAIL("seeds %s and %s logged the same events", seeds[i], seeds[j]);
    for (int i = 0; i < 4; i++)
        free(first_log[i]);
}

/* A crash in the middle of the seeds, however it comes, names its seed. */
TEST(scenario_crash_prints_its_seed)
{
    test_need_exec();
    static const char *const kinds[] = { "segv", "bus", "abort", "uaf" };
    static const char *const reports[] = { "SIGSEGV", "SIGBUS", "abort", "sanitizer report" };
#if defined(TEST_ASAN)
    int nkinds = 4;
#else
    int nkinds = 3; /* nothing reports a use after free */
#endif
    for (int i = 0; i < nkinds; i++) {
        char crash[64];
        snprintf(crash, sizeof crash, "BRAID_SCENARIO_CRASH=%d:%s", 1002 + i, kinds[i]);
        const char *env[] = { "BRAID_SCENARIO_FIRST=1000", "BRAID_SCENARIO_SEEDS=10", crash,
                              "ASAN_OPTIONS=detect_leaks=0", NULL };
        int st;
        char *out = run_child(env, &st);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            TEST_FAIL("%s at seed %d: the child did not fail:\n%s", kinds[i], 1002 + i, out);
        char want[96];
        snprintf(want, sizeof want, "%s at scenario seed %d; replay: BRAID_SEED=%d ", reports[i],
                 1002 + i, 1002 + i);
        if (!strstr(out, want))
            TEST_FAIL("%s at seed %d: the output does not name the seed:\n%s", kinds[i],
                      1002 + i, out);
        free(out);
    }
}
