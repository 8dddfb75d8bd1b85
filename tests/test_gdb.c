/*
 * The gdb extension (gdb/braid.py), driven by gdb in batch mode: a child
 * process runs tasks in known states, and gdb lists them and prints their
 * backtraces, attached to the live child and from a core file of it
 * (written by gdb's gcore, so no core limit or core pattern is involved).
 *
 * Skips when gdb is not installed, when attaching is not permitted
 * (ptrace restricted in a container) or gdb has no Python (those three
 * fail instead with BRAID_REQUIRE_TOOLS=1), under Valgrind (gdb would attach to
 * Valgrind, not to the program) and under an emulator (make
 * test-aarch64).
 */
#include "test.h"

#include <sys/stat.h>
#include <sys/wait.h>

/* ---- the target: a child process with tasks in known states --------------- */

static atomic_int started;
static int block_fd; /* never written: the blocker task waits on it forever */
static uint64_t ids[5];
enum { ROOT, SLEEPER, JOINER, RECEIVER, BLOCKER };

static void *gdb_sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&started, 1);
    braid_sleep_ms(600000);
    return NULL;
}

static void *gdb_joiner(void *arg)
{
    atomic_fetch_add(&started, 1);
    braid_join(*(braid_task *)arg, NULL);
    return NULL;
}

static void *gdb_receiver(void *arg)
{
    int v;
    atomic_fetch_add(&started, 1);
    braid_chan_recv(arg, &v);
    return NULL;
}

/* Runs (as far as braid knows) forever: blocks its worker in read(2), once
 * it has told the test that every task is in its state. */
static void *gdb_blocker(void *arg)
{
    (void)arg;
    printf("ready %llu %llu %llu %llu %llu\n", (unsigned long long)ids[ROOT],
           (unsigned long long)ids[SLEEPER], (unsigned long long)ids[JOINER],
           (unsigned long long)ids[RECEIVER], (unsigned long long)braid_current_id());
    fflush(stdout);
    char c;
    while (read(block_fd, &c, 1) != 0)
        ;
    return NULL;
}

static braid_task spawn_named(const char *name, braid_fn fn, void *arg)
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = name;
    braid_task h;
    CHECK_EQ(braid_spawn_ex(&h, &o, fn, arg), 0);
    return h;
}

/* One worker: every task runs on this thread, so a task that has set its
 * flag has also suspended by the time the root runs again. */
static void *gdb_root(void *arg)
{
    (void)arg;
    braid_chan *ch;
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 1), 0);
    static braid_task sleeper;
    ids[ROOT] = braid_current_id();
    sleeper = spawn_named("gdb-sleeper", gdb_sleeper, NULL);
    ids[SLEEPER] = braid_task_id(sleeper);
    ids[JOINER] = braid_task_id(spawn_named("gdb-joiner", gdb_joiner, &sleeper));
    ids[RECEIVER] = braid_task_id(spawn_named("gdb-receiver", gdb_receiver, ch));
    while (atomic_load(&started) < 3)
        braid_yield();
    spawn_named("gdb-blocker", gdb_blocker, NULL);
    braid_sleep_ms(600000);
    return NULL;
}

/* Start the target; returns its pid and fills got[] with the task ids.
 * for_gcore: guard the stacks with mprotect, not with guard markers
 * (MADV_GUARD_INSTALL, Linux 6.13): gdb's gcore reads memory in 1 MiB
 * blocks and leaves out every block that holds a marker, that is every
 * task stack. */
static pid_t start_target(uint64_t got[5], bool for_gcore)
{
    int p[2], blk[2];
    CHECK_EQ(pipe(p), 0);
    CHECK_EQ(pipe(blk), 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Let a debugger that is not our parent attach (Yama). */
        prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
        dup2(p[1], 1);
        close(p[0]);
        close(blk[1]);
        block_fd = blk[0];
        if (for_gcore)
            setenv("BRAID_NO_GUARD_INSTALL", "1", 1);
        braid_config cfg;
        braid_config_init(&cfg);
        cfg.workers = 1;
        braid_runtime *rt;
        CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
        braid_block_on(rt, gdb_root, NULL, NULL);
        _exit(3);
    }
    close(p[1]);
    close(blk[0]);
    /* blk[1] stays open in the test until it exits: the blocker never
     * sees end of file. */
    FILE *f = fdopen(p[0], "r");
    unsigned long long v[5];
    if (!f || fscanf(f, "ready %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4]) != 5)
        TEST_FAIL("the target did not start");
    fclose(f);
    for (int i = 0; i < 5; i++)
        got[i] = v[i];
    return pid;
}

static void stop_target(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- running gdb ---------------------------------------------------------------- */

static bool gdb_installed(void)
{
    const char *path = getenv("PATH");
    char dir[PATH_MAX];
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof dir, "%.*s/gdb", (int)n, path);
        if (access(dir, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static void need_gdb(void)
{
    test_need_exec();
    if (test_under_valgrind())
        SKIP("gdb would attach to Valgrind, not to the program");
    if (test_emulated())
        SKIP("gdb would attach to the emulator, not to the program");
    if (!gdb_installed())
        test_skip_tool("gdb is not installed (apt-get install gdb)");
}

/* gdb/braid.py of the source tree: next to the build directory's parent
 * (build/t-CONFIG/test_gdb), else relative to this file. */
static void script_path(char *out, size_t n)
{
    char self[PATH_MAX];
    test_sibling("../../gdb/braid.py", self, sizeof self);
    if (realpath(self, out) && access(out, R_OK) == 0)
        return;
    snprintf(self, sizeof self, "%s", __FILE__);
    snprintf(out, n, "%s/../gdb/braid.py", dirname(self));
    if (access(out, R_OK) != 0)
        TEST_FAIL("gdb/braid.py not found");
}

/* Run gdb -batch with args (NULL-terminated) and return what it printed. */
static char *run_gdb(const char *const *args)
{
    char out_path[64];
    snprintf(out_path, sizeof out_path, "/tmp/braid-test-gdb-%d.out", (int)getpid());
    const char *argv[64] = { "gdb", "-nx", "-batch" };
    int k = 3;
    for (; *args && k < 63; args++)
        argv[k++] = *args;
    argv[k] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        execvp("gdb", (char *const *)argv);
        _exit(127);
    }
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    char *s = test_read_file(out_path);
    CHECK(s);
    unlink(out_path);
    return s;
}

/* The line of out that holds needle (a static copy), or fail. */
static const char *line_with(const char *out, const char *needle)
{
    static char line[512];
    const char *at = strstr(out, needle);
    if (!at)
        TEST_FAIL("gdb's output lacks \"%s\":\n%s", needle, out);
    const char *b = at, *e = strchr(at, '\n');
    while (b > out && b[-1] != '\n')
        b--;
    size_t n = e ? (size_t)(e - b) : strlen(b);
    snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), b);
    return line;
}

static void check_line(const char *out, const char *name, const char *state)
{
    const char *l = line_with(out, name);
    if (!strstr(l, state))
        TEST_FAIL("task %s: expected \"%s\" in \"%s\"\nall of gdb's output:\n%s", name, state, l,
                  out);
}

/* The output of "braid-bt ID" (up to the next "task " header). */
static char *bt_section(const char *out, uint64_t id)
{
    char head[64];
    snprintf(head, sizeof head, "task %llu ", (unsigned long long)id);
    const char *b = strstr(out, head);
    if (!b)
        TEST_FAIL("no braid-bt output for task %llu:\n%s", (unsigned long long)id, out);
    const char *e = strstr(b + 1, "\ntask ");
    size_t n = e ? (size_t)(e - b) : strlen(b);
    char *s = malloc(n + 1);
    CHECK(s);
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static void check_bt(const char *out, uint64_t id, const char *fn, const char *callee)
{
    char *s = bt_section(out, id);
    if (!strstr(s, fn) || !strstr(s, callee))
        TEST_FAIL("braid-bt %llu: expected %s and %s in:\n%s\nall of gdb's output:\n%s",
                  (unsigned long long)id, fn, callee, s, out);
    free(s);
}

/* Skip when gdb cannot do its part here: no ptrace, no Python. */
static void skip_if_unable(const char *out)
{
    if (strstr(out, "ptrace: Operation not permitted") || strstr(out, "Could not attach") ||
        strstr(out, "not permitted"))
        test_skip_tool("attaching with ptrace is not permitted here");
    if (strstr(out, "Python scripting is not supported"))
        test_skip_tool("this gdb has no Python");
}

static void check_listing(const char *out, const uint64_t id[5])
{
    check_line(out, "gdb-sleeper", "waiting: sleep");
    check_line(out, "gdb-joiner", "waiting: join");
    check_line(out, "gdb-receiver", "waiting: chan_recv");
    /* A running task is told from its thread's braid__tls_task. */
    check_line(out, "gdb-blocker", "running on w0");
    char idtxt[32];
    snprintf(idtxt, sizeof idtxt, "%llu ", (unsigned long long)id[SLEEPER]);
    CHECK(strstr(line_with(out, "gdb-sleeper"), idtxt) != NULL);
    /* A suspended task's frames are found from the registers the assembly
     * switch saved; with the portable (ucontext) one, braid-bt says it
     * cannot (make test-portable). */
    if (test_portable_ctx()) {
        CHECK(strstr(out, "this libbraid uses the portable (ucontext) switch") != NULL);
        return;
    }
    check_bt(out, id[SLEEPER], "gdb_sleeper", "braid_sleep_");
    check_bt(out, id[JOINER], "gdb_joiner", "join_impl");
    check_bt(out, id[RECEIVER], "gdb_receiver", "braid_chan_recv");
}

TEST(gdb_live)
{
    need_gdb();
    char script[PATH_MAX], pidtxt[32], bt[5][48];
    script_path(script, sizeof script);
    uint64_t id[5];
    pid_t pid = start_target(id, false);
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)pid);
    char source[PATH_MAX + 16];
    snprintf(source, sizeof source, "source %s", script);
    for (int i = 0; i < 5; i++)
        snprintf(bt[i], sizeof bt[i], "braid-bt %llu", (unsigned long long)id[i]);
    const char *args[] = { "-p", pidtxt, "-ex", source, "-ex", "info braid-tasks",
                           "-ex", bt[SLEEPER], "-ex", bt[JOINER], "-ex", bt[RECEIVER],
                           "-ex", bt[BLOCKER], "-ex", "detach", NULL };
    char *out = run_gdb(args);
    stop_target(pid);
    skip_if_unable(out);
    check_listing(out, id);
    /* The running task's stack is its thread's: gdb's own bt. */
    check_bt(out, id[BLOCKER], "running on gdb thread", "gdb_blocker");
    free(out);
}

TEST(gdb_core)
{
    need_gdb();
#if defined(TEST_ASAN) || defined(TEST_TSAN)
    SKIP("gcore would copy the sanitizer's shadow memory (minutes, gigabytes)");
#endif
    char script[PATH_MAX], pidtxt[32], bt[5][48], core[64], gcore[96], exe[PATH_MAX];
    script_path(script, sizeof script);
    snprintf(core, sizeof core, "/tmp/braid-test-gdb-%d.core", (int)getpid());
    uint64_t id[5];
    pid_t pid = start_target(id, true);
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)pid);
    snprintf(gcore, sizeof gcore, "gcore %s", core);
    const char *dump[] = { "-p", pidtxt, "-ex", gcore, "-ex", "detach", NULL };
    char *out = run_gdb(dump);
    stop_target(pid);
    skip_if_unable(out);
    struct stat st;
    if (stat(core, &st) != 0)
        TEST_FAIL("gcore wrote no core file:\n%s", out);
    free(out);

    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    CHECK(n > 0);
    exe[n] = 0;
    char source[PATH_MAX + 16];
    snprintf(source, sizeof source, "source %s", script);
    for (int i = 0; i < 5; i++)
        snprintf(bt[i], sizeof bt[i], "braid-bt %llu", (unsigned long long)id[i]);
    const char *args[] = { exe, core, "-ex", source, "-ex", "info braid-tasks",
                           "-ex", bt[SLEEPER], "-ex", bt[JOINER], "-ex", bt[RECEIVER], NULL };
    out = run_gdb(args);
    unlink(core);
    skip_if_unable(out);
    check_listing(out, id);
    free(out);
}
