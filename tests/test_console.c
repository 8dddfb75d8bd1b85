/* The live console: the runtime's socket protocol, its errors, the
 * BRAID_CONSOLE variable, and tools/braid-console (once, its per-worker
 * load, and live under tmux watching examples/console.c). */
#include "test.h"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

static char sock_path[108];

static inline void cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static void make_path(const char *tag)
{
    snprintf(sock_path, sizeof sock_path, "/tmp/braid-console-%s-%d.sock", tag, (int)getpid());
    unlink(sock_path);
}

static braid_runtime *console_rt(unsigned workers, const char *path, int *rc)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.console_path = path;
    cfg.observe_off = BRAID_OBSERVE_NO_WATCHDOG | BRAID_OBSERVE_NO_DEADLOCK;
    braid_runtime *rt = NULL;
    *rc = braid_runtime_new(&cfg, &rt);
    return rt;
}

static int connect_console(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send req and read the answer up to "end\n" or an "error" line. */
static char *ask(int fd, const char *req)
{
    CHECK_EQ(write(fd, req, strlen(req)), (long)strlen(req));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    CHECK(buf != NULL);
    for (;;) {
        buf[n] = 0;
        if ((n >= 4 && strcmp(buf + n - 4, "end\n") == 0) ||
            (strncmp(buf, "error", 5) == 0 && n > 0 && buf[n - 1] == '\n'))
            return buf;
        if (n + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            CHECK(buf != NULL);
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        CHECK(poll(&p, 1, 30000) == 1);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        CHECK(r > 0);
        n += (size_t)r;
    }
}

/* The record of the task called name, or NULL. */
static const char *find_task(const char *snap, const char *name)
{
    char key[64];
    for (const char *p = snap; (p = strstr(p, "\ntask\t")) != NULL; p++) {
        const char *f = strchr(p + 6, '\t');
        snprintf(key, sizeof key, "\t%s\t", name);
        if (f && strncmp(f, key, strlen(key)) == 0)
            return p + 1;
    }
    return NULL;
}

/* Field i (0: "task") of the record at rec. */
static unsigned long long field(const char *rec, int i)
{
    for (; i > 0; i--) {
        rec = strchr(rec, '\t');
        CHECK(rec != NULL);
        rec++;
    }
    return strtoull(rec, NULL, 10);
}

static bool has_state(const char *snap, const char *name, const char *state)
{
    const char *rec = find_task(snap, name);
    const char *nl = rec ? strchr(rec, '\n') : NULL;
    const char *s = rec ? strstr(rec, state) : NULL;
    return s && s < nl;
}

/* ---- the tasks a snapshot shows ---------------------------------------------------------- */

static braid_chan *never;           /* nobody sends on it */

static void *sleeper(void *arg)
{
    (void)arg;
    braid_sleep_ms(600000);
    return NULL;
}

static void *receiver(void *arg)
{
    (void)arg;
    int v;
    braid_chan_recv(never, &v);
    return NULL;
}

/* Runs at least 30 ms of CPU, then waits: its busy time is known. */
static void *worker_task(void *arg)
{
    (void)arg;
    struct timespec t0, t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 30000000L);
    int v;
    braid_chan_recv(never, &v);
    return NULL;
}

static void spawn_named(braid_task *t, const char *name, braid_fn fn)
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = name;
    CHECK_EQ(braid_spawn_ex(t, &o, fn, NULL), 0);
}

struct scene {
    braid_task t[3];
};

static uint64_t scene_t0; /* braid_now_ns() before the scene's tasks were spawned */

static void scene_start(struct scene *s)
{
    scene_t0 = braid_now_ns();
    CHECK_EQ(braid_chan_new(&never, sizeof(int), 0), 0);
    spawn_named(&s->t[0], "sleeper", sleeper);
    spawn_named(&s->t[1], "receiver", receiver);
    spawn_named(&s->t[2], "cruncher", worker_task);
}

static void scene_end(struct scene *s)
{
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_cancel(s->t[i]), 0);
        CHECK_EQ(braid_join(s->t[i], NULL), BRAID_CANCELLED);
    }
    CHECK_EQ(braid_chan_sender_drop(never), 0);
    CHECK_EQ(braid_chan_receiver_drop(never), 0);
}

/* Ask for snapshots until every task of the scene waits (the tasks park
 * soon after they start; no sleep guesses how soon). */
static char *settled_snapshot(int fd)
{
    for (uint64_t t0 = test_now_ms(); test_now_ms() - t0 < 30000;) {
        char *snap = ask(fd, "snapshot\n");
        if (has_state(snap, "sleeper", "waiting on sleep") &&
            has_state(snap, "receiver", "waiting on channel receive") &&
            has_state(snap, "cruncher", "waiting on channel receive"))
            return snap;
        free(snap);
        struct timespec ts = { 0, 5000000 };
        nanosleep(&ts, NULL);
    }
    TEST_FAIL("the tasks never showed as waiting");
}

static int client_line; /* of the blocking job's spawn in snapshot_root */

static void *client(void *arg)
{
    (void)arg;
    int fd = connect_console(sock_path);
    CHECK(fd >= 0);
    char *snap = settled_snapshot(fd);
    uint64_t age = braid_now_ns() - scene_t0;
    CHECK(strncmp(snap, "braid-console 2\nruntime\tworkers=2\t", 34) == 0);
    CHECK(strstr(snap, "\tnow_ns=") != NULL);
    CHECK(strstr(snap, "\nworker\t0\tpolls=") != NULL);
    CHECK(strstr(snap, "\nworker\t1\tpolls=") != NULL);
    CHECK(strstr(snap, "\tbusy_ns=") != NULL);
    const char *rec = find_task(snap, "cruncher");
    CHECK(field(rec, 6) >= 25000000ull);   /* its busy time: >= 30 ms of CPU */
    /* Its time in state counts from when it began to wait, after its run. */
    CHECK(field(rec, 5) + 25000000ull <= age);
    CHECK(strstr(rec, "test_console.c:") != NULL);
    rec = find_task(snap, "sleeper");
    CHECK(field(rec, 6) < 25000000ull);
    CHECK(field(rec, 7) > 0);              /* stack touched */
    /* The root waits for this job, which runs on the blocking pool (its
     * handle is a task that waits for the pool). */
    CHECK(has_state(snap, "root", "waiting on join of task"));
    const char *proxy = strstr(snap, "\twaiting on blocking pool\t");
    CHECK(proxy != NULL);
    char site[128]; /* where snapshot_root started the job */
    snprintf(site, sizeof site, "\t%s:%d\n", __FILE__, client_line);
    size_t site_len = strlen(site);
    const char *end = strchr(proxy, '\n') + 1;
    CHECK(end - proxy >= (ptrdiff_t)site_len && strncmp(end - site_len, site, site_len) == 0);
    free(snap);
    /* A bad request is answered and the connection stays usable. */
    snap = ask(fd, "hello\n");
    CHECK_STR(snap, "error unknown request\n");
    free(snap);
    /* Several clients at once. */
    int fd2 = connect_console(sock_path);
    CHECK(fd2 >= 0);
    snap = ask(fd2, "snapshot\n");
    CHECK(find_task(snap, "receiver") != NULL);
    free(snap);
    close(fd2);
    /* A client that asks and leaves without reading harms nobody. */
    int fd3 = connect_console(sock_path);
    CHECK(fd3 >= 0);
    CHECK_EQ(write(fd3, "snapshot\nsnapshot\n", 18), 18);
    close(fd3);
    snap = ask(fd, "snapshot\n");
    CHECK(find_task(snap, "sleeper") != NULL);
    free(snap);
    close(fd);
    return NULL;
}

static void *snapshot_root(void *arg)
{
    (void)arg;
    struct scene s;
    scene_start(&s);
    braid_task c;
    client_line = __LINE__ + 1;
    CHECK_EQ(braid_spawn_blocking(&c, client, NULL), 0);
    CHECK_EQ(braid_join(c, NULL), BRAID_OK);
    scene_end(&s);
    return NULL;
}

static void run_named_root(braid_runtime *rt, braid_fn fn)
{
    braid_task root;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "root";
    CHECK_EQ(braid_spawn_on_ex(rt, &root, &o, fn, NULL), 0);
    CHECK_EQ(braid_join(root, NULL), BRAID_OK);
}

TEST(console_snapshot)
{
    make_path("snap");
    int rc;
    braid_runtime *rt = console_rt(2, sock_path, &rc);
    CHECK_EQ(rc, 0);
    struct stat st;
    CHECK_EQ(stat(sock_path, &st), 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0600);
    run_named_root(rt, snapshot_root);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK(stat(sock_path, &st) != 0); /* removed */
}

/* ---- the watchdog's reports ---------------------------------------------------------------- */

static atomic_int seen_warning;

/* A blocking call inside a task, as the watchdog sees it: runs without
 * suspending until the console has shown the report. */
static void *hog(void *arg)
{
    (void)arg;
    while (!atomic_load(&seen_warning))
        cpu_relax();
    return NULL;
}

static void *warn_client(void *arg)
{
    (void)arg;
    int fd = connect_console(sock_path);
    CHECK(fd >= 0);
    for (uint64_t t0 = test_now_ms(); !atomic_load(&seen_warning);) {
        char *snap = ask(fd, "snapshot\n");
        const char *w = strstr(snap, "\nwarn\t");
        if (w && strstr(w, "without suspending"))
            atomic_store(&seen_warning, 1);
        free(snap);
        if (test_now_ms() - t0 > 30000)
            TEST_FAIL("no watchdog report in the console");
    }
    close(fd);
    return NULL;
}

static void *warn_root(void *arg)
{
    (void)arg;
    braid_task h, c;
    CHECK_EQ(braid_spawn(&h, hog, NULL), 0);
    CHECK_EQ(braid_spawn_blocking(&c, warn_client, NULL), 0);
    CHECK_EQ(braid_join(c, NULL), BRAID_OK);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    return NULL;
}

TEST(console_shows_watchdog_reports)
{
    make_path("warn");
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.console_path = sock_path;
    cfg.observe_off = BRAID_OBSERVE_NO_DEADLOCK | BRAID_OBSERVE_NO_SIGQUIT;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, warn_root, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- errors ------------------------------------------------------------------------------- */

TEST(console_path_errors)
{
    make_path("err");
    int rc;
    braid_runtime *a = console_rt(2, sock_path, &rc);
    CHECK_EQ(rc, 0);
    /* A live console's path is not taken over. */
    braid_runtime *b = console_rt(2, sock_path, &rc);
    CHECK_EQ(rc, -EADDRINUSE);
    CHECK(b == NULL);
    CHECK_EQ(braid_runtime_free(a), 0);
    /* A stale socket file (its server died without removing it) is. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    a = console_rt(1, sock_path, &rc);
    CHECK_EQ(rc, 0);
    fd = connect_console(sock_path);
    CHECK(fd >= 0);
    char *snap = ask(fd, "snapshot\n");
    CHECK(strstr(snap, "runtime\tworkers=1\t") != NULL);
    free(snap);
    close(fd);
    CHECK_EQ(braid_runtime_free(a), 0);
    /* Not a socket, too long, no such directory. */
    int plain = open(sock_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(plain >= 0);
    close(plain);
    CHECK(console_rt(2, sock_path, &rc) == NULL);
    CHECK_EQ(rc, -EEXIST);
    unlink(sock_path);
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = 0;
    CHECK(console_rt(2, longp, &rc) == NULL);
    CHECK_EQ(rc, -ENAMETOOLONG);
    CHECK(console_rt(2, "/nonexistent-braid-dir/c.sock", &rc) == NULL);
    CHECK_EQ(rc, -ENOENT);
}

/* A client that connects as soon as the socket listens, while the runtime
 * is still being built, is answered once the runtime is complete (a
 * snapshot reads the observer and the blocking pool).  The client spins on
 * connect before the runtime is created, and rounds go on until one of them
 * connected early: that moment is the point of the test. */
static atomic_bool rt_created, client_spinning;
static atomic_int early_connects;

static void *early_client(void *arg)
{
    (void)arg;
    int fd;
    atomic_store(&client_spinning, true);
    for (uint64_t t0 = test_now_ms(); (fd = connect_console(sock_path)) < 0;)
        if (test_now_ms() - t0 > 30000)
            TEST_FAIL("the console never listened");
    if (!atomic_load(&rt_created))
        atomic_fetch_add(&early_connects, 1);
    char *snap = ask(fd, "snapshot\n");
    CHECK(strstr(snap, "\nruntime\tworkers=2\t") != NULL);
    CHECK(strstr(snap, "\nworker\t1\t") != NULL);
    free(snap);
    close(fd);
    return NULL;
}

TEST(console_client_during_creation)
{
    int round = 0;
    for (; round < 2000 && (round < 20 || atomic_load(&early_connects) == 0); round++) {
        make_path("early");
        pthread_t th;
        atomic_store(&rt_created, false);
        atomic_store(&client_spinning, false);
        CHECK_EQ(pthread_create(&th, NULL, early_client, NULL), 0);
        while (!atomic_load(&client_spinning))
            sched_yield();
        int rc;
        braid_runtime *rt = console_rt(2, sock_path, &rc);
        atomic_store(&rt_created, true);
        CHECK_EQ(rc, 0);
        CHECK_EQ(pthread_join(th, NULL), 0);
        CHECK_EQ(braid_runtime_free(rt), 0);
    }
    if (atomic_load(&early_connects) == 0)
        TEST_FAIL("no client connected while the runtime was built, in %d rounds", round);
}

/* BRAID_CONSOLE: the first runtime that can take the path serves it; the
 * others run without a console (and say so), and the path is free again
 * once the first is gone. */
TEST(console_from_environment)
{
    make_path("env");
    setenv("BRAID_CONSOLE", sock_path, 1);
    int rc;
    braid_runtime *a = console_rt(2, NULL, &rc);
    CHECK_EQ(rc, 0);
    braid_runtime *b = console_rt(2, NULL, &rc);
    CHECK_EQ(rc, 0);
    int fd = connect_console(sock_path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ(braid_runtime_free(a), 0);
    CHECK(connect_console(sock_path) < 0);
    CHECK_EQ(braid_runtime_free(b), 0);
    braid_runtime *c = console_rt(2, NULL, &rc);
    CHECK_EQ(rc, 0);
    fd = connect_console(sock_path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ(braid_runtime_free(c), 0);
    unsetenv("BRAID_CONSOLE");
}

/* ---- tools/braid-console ------------------------------------------------------------------- */

static char tool[PATH_MAX], tool_cmd[PATH_MAX + 128]; /* the path; as a shell command */

static void find_tool(void)
{
    test_need_exec();
    test_sibling("../tools/braid-console", tool, sizeof tool);
    test_sibling_cmd("../tools/braid-console", tool_cmd, sizeof tool_cmd);
    if (access(tool, X_OK) != 0)
        TEST_FAIL("%s is not built", tool);
}

/* Run argv to its end; its stdout, NUL-terminated. */
static char *run_capture(char *const argv[], int *status)
{
    pid_t pid;
    int fd = test_spawn_piped(argv, &pid);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    CHECK(out != NULL);
    ssize_t r;
    while ((r = read(fd, out + n, cap - n - 1)) > 0) {
        n += (size_t)r;
        if (n + 1 == cap) {
            out = realloc(out, cap *= 2);
            CHECK(out != NULL);
        }
    }
    out[n] = 0;
    close(fd);
    CHECK_EQ(waitpid(pid, status, 0), pid);
    return out;
}

static void *once_client(void *arg)
{
    (void)arg;
    int fd = connect_console(sock_path);
    CHECK(fd >= 0);
    free(settled_snapshot(fd));
    close(fd);
    char *argv[] = { tool, "--once", "-s", "busy", sock_path, NULL };
    int status;
    char *out = run_capture(argv, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strstr(out, "runtime: workers=2") != NULL);
    CHECK(strstr(out, "sorted by busy") != NULL);
    /* Sorted by busy time: the cruncher (30 ms of CPU) before the tasks
     * that only started to wait (the root may be busier under Valgrind). */
    char *cruncher = strstr(out, "cruncher"), *receiver = strstr(out, "receiver");
    char *sleeper = strstr(out, "sleeper");
    if (!cruncher || !receiver || !sleeper || cruncher > receiver || cruncher > sleeper)
        TEST_FAIL("wrong order:\n%s", out);
    CHECK(strstr(out, "waiting on sleep") != NULL);
    free(out);
    /* A path nobody serves: a message and status 1, no hang. */
    char *bad[] = { tool, "--once", "/nonexistent-braid-dir/c.sock", NULL };
    out = run_capture(bad, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    free(out);
    return NULL;
}

/* The client that run_tool_scene() runs on the blocking pool (ISO C
 * converts no function pointer to void *). */
static braid_fn tool_client;

static void *tool_root(void *arg)
{
    (void)arg;
    struct scene s;
    scene_start(&s);
    braid_task c;
    CHECK_EQ(braid_spawn_blocking(&c, tool_client, NULL), 0);
    CHECK_EQ(braid_join(c, NULL), BRAID_OK);
    scene_end(&s);
    return NULL;
}

static void run_tool_scene(const char *tag, braid_fn client_fn)
{
    make_path(tag);
    int rc;
    braid_runtime *rt = console_rt(2, sock_path, &rc);
    CHECK_EQ(rc, 0);
    braid_task root;
    tool_client = client_fn;
    CHECK_EQ(braid_spawn_on(rt, &root, tool_root, NULL), 0);
    CHECK_EQ(braid_join(root, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

TEST(console_tool_once)
{
    find_tool();
    run_tool_scene("once", once_client);
}

/* ---- each worker's load, over the last interval ------------------------------------------- */

static _Atomic int hog_worker = -1;
static atomic_int hog_stop;

static void *load_hog(void *arg)
{
    (void)arg;
    atomic_store(&hog_worker, braid_worker_index());
    while (!atomic_load(&hog_stop))
        cpu_relax();
    return NULL;
}

/* The tool's output, read screen by screen as it draws them. */
struct screens {
    int fd;
    char *buf;
    size_t len, cap, at;
};

/* The next screen, up to the task table's title (malloc'd). */
static char *next_screen(struct screens *r)
{
    static const char clear[] = "\033[H\033[2J", title[] = "tasks, sorted by";
    for (;;) {
        char *start = r->buf ? memmem(r->buf + r->at, r->len - r->at, clear, sizeof clear - 1)
                             : NULL;
        char *end = start ? memmem(start, (size_t)(r->buf + r->len - start), title,
                                   sizeof title - 1)
                          : NULL;
        if (end) {
            r->at = (size_t)(end - r->buf);
            return strndup(start + sizeof clear - 1, (size_t)(end - start) - (sizeof clear - 1));
        }
        if (r->len + 4096 > r->cap) {
            r->buf = realloc(r->buf, r->cap = 2 * r->cap + 65536);
            CHECK(r->buf != NULL);
        }
        struct pollfd p = { .fd = r->fd, .events = POLLIN };
        if (poll(&p, 1, 30000) != 1)
            TEST_FAIL("braid-console drew nothing for 30 s");
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n <= 0)
            TEST_FAIL("braid-console ended; it wrote:\n%.*s", (int)r->len, r->buf);
        r->len += (size_t)n;
    }
}

/* Worker w's load on a screen, in percent; -1 for "-" (no interval yet). */
static int screen_load(const char *screen, int w)
{
    char key[32];
    snprintf(key, sizeof key, "  worker %d  load ", w);
    const char *p = strstr(screen, key);
    if (!p)
        TEST_FAIL("no load of worker %d on the screen:\n%s", w, screen);
    p += strlen(key);
    while (*p == ' ')
        p++;
    return *p == '-' ? -1 : atoi(p);
}

/* Screens while one worker runs a task that never suspends, then after
 * it stopped: that worker near 100% then near 0, the other near 0
 * throughout.  A load averaged since the start (or since the first
 * screen) would stay high long after the hog stopped. */
static void *load_client(void *arg)
{
    (void)arg;
    while (atomic_load(&hog_worker) < 0)
        usleep(1000);
    int hw = atomic_load(&hog_worker), other = 1 - hw;
    char *argv[] = { tool, "-i", "100", "-n", "40", sock_path, NULL };
    pid_t pid;
    struct screens r = { 0 };
    r.fd = test_spawn_piped(argv, &pid);
    char *s = next_screen(&r);
    if (screen_load(s, 0) != -1 || screen_load(s, 1) != -1)
        TEST_FAIL("a load on the first screen, without an interval:\n%s", s);
    for (int i = 0; i < 2; i++) {
        free(s);
        s = next_screen(&r);
        if (screen_load(s, hw) < 80 || screen_load(s, other) > 25)
            TEST_FAIL("worker %d runs a task that never suspends, worker %d idles:\n%s", hw,
                      other, s);
    }
    atomic_store(&hog_stop, 1);
    /* The screen after may cover the end of the hog's run, and so may the
     * one after if this thread was slow to stop it; not the third. */
    bool idle = false;
    for (int i = 0; i < 3 && !idle; i++) {
        free(s);
        s = next_screen(&r);
        idle = screen_load(s, hw) <= 25 && screen_load(s, other) <= 25;
    }
    if (!idle)
        TEST_FAIL("the hog stopped three screens ago:\n%s", s);
    free(s);
    free(r.buf);
    close(r.fd);
    kill(pid, SIGTERM);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return NULL;
}

static void *load_root(void *arg)
{
    (void)arg;
    braid_task h, c;
    CHECK_EQ(braid_spawn(&h, load_hog, NULL), 0);
    CHECK_EQ(braid_spawn_blocking(&c, load_client, NULL), 0);
    CHECK_EQ(braid_join(c, NULL), BRAID_OK);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    return NULL;
}

TEST(console_tool_load_rate)
{
    find_tool();
    make_path("load");
    int rc;
    braid_runtime *rt = console_rt(2, sock_path, &rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(braid_block_on(rt, load_root, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- live, under tmux, watching examples/console.c --------------------------------------- */

static char tmux_sock[64];

static int tmux(const char *fmt, const char *arg, char **out)
{
    char cmd[1024];
    char inner[512];
    snprintf(inner, sizeof inner, fmt, arg);
    snprintf(cmd, sizeof cmd, "tmux -L %s %s 2>/dev/null", tmux_sock, inner);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    CHECK(buf != NULL);
    n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *capture(void)
{
    char *pane;
    tmux("capture-pane -p -t braid%s", "", &pane);
    return pane;
}

/* Capture the pane until it holds want (or 30 s pass). */
static void await_pane(const char *want)
{
    for (uint64_t t0 = test_now_ms(); test_now_ms() - t0 < 30000;) {
        char *pane = capture();
        bool found = strstr(pane, want) != NULL;
        free(pane);
        if (found)
            return;
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    }
    TEST_FAIL("the console never showed \"%s\"; the pane:\n%s", want, capture());
}

/* A duration as braid-console prints it (12us, 345ms, 67s), in ns. */
static uint64_t parse_duration(const char *s)
{
    char *unit;
    uint64_t v = strtoull(s, &unit, 10);
    CHECK(unit != s);
    if (strncmp(unit, "us", 2) == 0)
        return v * 1000;
    if (strncmp(unit, "ms", 2) == 0)
        return v * 1000000;
    CHECK(*unit == 's');
    return v * 1000000000;
}

/* The task rows of a pane showing "sorted by <what>": each row's IN STATE
 * (column 0) and BUSY (column 1) times into col[][2]; returns how many, or
 * -1 if the pane is not one whole screen sorted that way yet. */
static int pane_rows(const char *pane, const char *what, uint64_t col[][2], int max)
{
    char title[64];
    snprintf(title, sizeof title, " tasks, sorted by %s ", what);
    const char *t = strstr(pane, title);
    const char *head = t ? strstr(t, "SPAWNED AT\n") : NULL;
    if (!head)
        return -1;
    while (t > pane && t[-1] != '\n')
        t--;
    int want = atoi(t), n = 0;
    /* Columns: ID 10, 2 spaces, NAME 20, STATE 28, WRK 3, IN STATE 9, BUSY 9. */
    for (const char *row = strchr(head, '\n') + 1; *row && n < max; n++) {
        const char *nl = strchr(row, '\n');
        if (!nl || nl - row < 85)
            break;
        col[n][0] = parse_duration(row + 66 + strspn(row + 66, " "));
        col[n][1] = parse_duration(row + 76 + strspn(row + 76, " "));
        row = nl + 1;
    }
    return n == want ? n : -1;
}

/* Capture until a whole screen sorted by what is there (30 s at most);
 * then column c must not increase down the table. */
static void check_sorted(const char *what, int c)
{
    uint64_t col[64][2];
    for (uint64_t t0 = test_now_ms();;) {
        char *pane = capture();
        int n = pane_rows(pane, what, col, 64);
        if (n >= 4) {
            for (int i = 1; i < n; i++)
                if (col[i][c] > col[i - 1][c])
                    TEST_FAIL("sorted by %s, row %d is above row %d:\n%s", what, i, i + 1, pane);
            free(pane);
            return;
        }
        if (test_now_ms() - t0 > 30000)
            TEST_FAIL("no whole screen sorted by %s with the example's tasks:\n%s", what, pane);
        free(pane);
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    }
}

TEST(console_tool_live_tmux)
{
    find_tool();
    if (!test_have_tool("tmux"))
        test_skip_tool("tmux is not installed");
    snprintf(tmux_sock, sizeof tmux_sock, "braid-test-%d", (int)getpid());
    make_path("tmux");
    /* The example, its console on sock_path, its output in a log shown if
     * it fails. */
    char ex[PATH_MAX], log[64];
    test_sibling("ex_console", ex, sizeof ex);
    snprintf(log, sizeof log, "/tmp/braid-console-example-%d.log", (int)getpid());
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("BRAID_CONSOLE", sock_path, 1);
        char *argv[] = { ex, NULL };
        struct test_cmd c;
        char **run = test_runner_argv(&c, argv);
        execvp(run[0], run);
        _exit(127);
    }
    for (uint64_t t0 = test_now_ms();; usleep(10000)) {
        int fd = connect_console(sock_path);
        if (fd >= 0) {
            close(fd);
            break;
        }
        if (test_now_ms() - t0 > 30000)
            TEST_FAIL("the example never served its console");
    }
    char cmd[sizeof tool_cmd + sizeof sock_path + 64];
    snprintf(cmd, sizeof cmd, "new-session -d -s braid -x 160 -y 40 '%s -i 100 %s'", tool_cmd,
             sock_path);
    CHECK_EQ(tmux("%s", cmd, NULL), 0);
    await_pane("consumer");
    await_pane("napper");
    await_pane("cruncher");
    await_pane("waiting on channel receive");
    /* The cruncher's 300 ms without suspending, as the watchdog saw it. */
    await_pane("  WARNING ");
    await_pane("without suspending");
    /* Once the cruncher has changed state, it has been in its state for
     * less time than the others in theirs, but it is the busiest: the two
     * orders differ. */
    char row[64];
    snprintf(row, sizeof row, "%-20s %s", "cruncher", "waiting on sleep");
    await_pane(row);
    check_sorted("busy", 1);
    CHECK_EQ(tmux("send-keys -t braid w%s", "", NULL), 0);
    check_sorted("in state", 0);
    CHECK_EQ(tmux("send-keys -t braid q%s", "", NULL), 0);
    /* q ends the program, and with it the session. */
    for (uint64_t t0 = test_now_ms(); tmux("has-session -t braid%s", "", NULL) == 0;) {
        if (test_now_ms() - t0 > 30000)
            TEST_FAIL("braid-console did not quit on q");
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    }
    tmux("kill-server%s", "", NULL);
    /* Ctrl-C ends the example cleanly. */
    CHECK_EQ(kill(pid, SIGINT), 0);
    int status = -1;
    for (uint64_t t0 = test_now_ms(); waitpid(pid, &status, WNOHANG) == 0; usleep(10000))
        if (test_now_ms() - t0 > 30000)
            kill(pid, SIGKILL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *out = test_read_file(log);
        TEST_FAIL("the example ended with status %#x; its output:\n%s", status, out ? out : "");
    }
    unlink(log);
}
