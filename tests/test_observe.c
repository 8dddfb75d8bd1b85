/* Seeing inside: spawn sites, braid_dump, SIGQUIT, deadlock reports,
 * metrics, the blocked-task watchdog, stack depth. */
#include "test.h"

#include "symbolize.h"

#include <elf.h>
#include <link.h>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* ---- helpers ---------------------------------------------------------------------- */

/* braid_dump(rt) into a string (caller frees). */
static char *dump_string(braid_runtime *rt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    CHECK_EQ(braid_dump(rt, f), 0);
    fclose(f);
    return buf;
}

static braid_runtime *new_rt(unsigned workers, unsigned off, unsigned watchdog_ms,
                             braid_observe_hook hook, void *arg)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.observe_off = off;
    cfg.watchdog_ms = watchdog_ms;
    cfg.observe_hook = hook;
    cfg.observe_hook_arg = arg;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    return rt;
}

static braid_task spawn_named(const char *name, braid_fn fn, void *arg)
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = name;
    braid_task t;
    CHECK_EQ(braid_spawn_ex(&t, &o, fn, arg), 0);
    return t;
}

/* Send stderr to a temporary file until stderr_take(). */
static FILE *captured;
static int saved_stderr = -1;

static void stderr_capture(void)
{
    fflush(stderr);
    captured = tmpfile();
    CHECK(captured != NULL);
    saved_stderr = dup(2);
    CHECK(saved_stderr >= 0);
    CHECK(dup2(fileno(captured), 2) == 2);
}

/* Restore stderr; returns what was written meanwhile (caller frees). */
static char *stderr_take(void)
{
    fflush(stderr);
    CHECK(dup2(saved_stderr, 2) == 2);
    close(saved_stderr);
    long n = ftell(captured);
    CHECK(n >= 0);
    char *buf = calloc(1, (size_t)n + 1);
    rewind(captured);
    CHECK_EQ(fread(buf, 1, (size_t)n, captured), n);
    fclose(captured);
    return buf;
}

/* ---- the dump shows every state ------------------------------------------------------- */

struct world {
    braid_chan *ch;
    braid_mutex mu;
    int pipe_task[2], pipe_job[2];
    braid_task inner;
};

/* Not inlined, so that it is a frame of its own that the dump names. */
__attribute__((noinline)) static void *sleeper(void *arg)
{
    (void)arg;
    braid_sleep_ms(3600 * 1000);
    return NULL;
}

static void *receiver(void *arg)
{
    struct world *w = arg;
    int v;
    braid_chan_recv(w->ch, &v);
    return NULL;
}

static void *joiner(void *arg)
{
    struct world *w = arg;
    braid_join(w->inner, NULL);
    return NULL;
}

static void *locker(void *arg)
{
    struct world *w = arg;
    if (braid_mutex_lock(&w->mu) == 0)
        braid_mutex_unlock(&w->mu);
    return NULL;
}

static void *fd_reader(void *arg)
{
    struct world *w = arg;
    char c;
    braid_read(w->pipe_task[0], &c, 1);
    return NULL;
}

static void *blocking_read(void *arg)
{
    struct world *w = arg;
    char c;
    ssize_t n = read(w->pipe_job[0], &c, 1);
    (void)n;
    return NULL;
}

static void *offloader(void *arg)
{
    braid_task t;
    CHECK_EQ(braid_spawn_blocking(&t, blocking_read, arg), 0);
    braid_join(t, NULL);
    return NULL;
}

static _Atomic bool yielder_stop;

static void *yielder(void *arg)
{
    (void)arg;
    while (!atomic_load(&yielder_stop))
        braid_yield();
    return NULL;
}

static bool has_all(const char *d, const char *const *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strstr(d, want[i]))
            return false;
    return true;
}

static int site_line;

static void *dump_root(void *arg)
{
    (void)arg;
    struct world w;
    CHECK_EQ(braid_chan_new(&w.ch, sizeof(int), 0), 0);
    CHECK_EQ(braid_mutex_init(&w.mu), 0);
    CHECK_EQ(pipe2(w.pipe_task, O_NONBLOCK), 0);
    CHECK_EQ(pipe(w.pipe_job), 0);
    CHECK_EQ(braid_mutex_lock(&w.mu), 0);
    braid_task ts[8];
    braid_spawn_opts so = BRAID_SPAWN_OPTS_INIT;
    so.name = "sleeper";
    site_line = __LINE__ + 1;
    CHECK_EQ(braid_spawn_ex(&ts[0], &so, sleeper, NULL), 0);
    ts[1] = spawn_named("receiver", receiver, &w);
    w.inner = ts[1];
    ts[2] = spawn_named("joiner", joiner, &w);
    ts[3] = spawn_named("locker", locker, &w);
    ts[4] = spawn_named("fdreader", fd_reader, &w);
    ts[5] = spawn_named("offloader", offloader, &w);
    ts[6] = spawn_named("yielder", yielder, NULL);
    char want[8][128];
    snprintf(want[0], 128, "\"sleeper\": waiting on sleep until +");
    snprintf(want[1], 128, "\"receiver\": waiting on channel receive");
    snprintf(want[2], 128, "\"joiner\": waiting on join of task %llu",
             (unsigned long long)braid_task_id(ts[1]));
    snprintf(want[3], 128, "\"locker\": waiting on mutex");
    snprintf(want[4], 128, "\"fdreader\": waiting on fd %d", w.pipe_task[0]);
    snprintf(want[5], 128, "\"offloader\": waiting on join of task");
    snprintf(want[6], 128, "\"yielder\": runnable (yielded)");
    snprintf(want[7], 128, "task %llu: running on worker %d",
             (unsigned long long)braid_current_id(), braid_worker_index());
    const char *wp[9];
    for (int i = 0; i < 8; i++)
        wp[i] = want[i];
    wp[8] = ": waiting on blocking pool"; /* the blocking proxy */
    char *d = NULL;
    /* Poll until every task has reached its state (each gets there on its
     * own, on either worker). */
    for (int tries = 0; tries < 2000; tries++) {
        free(d);
        d = dump_string(NULL);
        if (has_all(d, wp, 9))
            break;
        braid_sleep_ms(5);
    }
    if (!has_all(d, wp, 9)) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("the dump lacks a state");
    }
    char site[256];
    snprintf(site, sizeof site, "spawned at %s:%d by task %llu", __FILE__, site_line,
             (unsigned long long)braid_current_id());
    CHECK(strstr(d, site) != NULL);
    CHECK(strstr(d, "braid dump: runtime") != NULL);
    CHECK(strstr(d, "#0 0x") != NULL);
    /* The sleeper's frames (none with the portable context switch) are
     * named from the test binary's .symtab: dladdr knows neither the
     * static sleeper nor libbraid's functions (task_entry: static). */
    const char *sl = strstr(d, "\"sleeper\": waiting");
    const char *sl_end = strstr(sl, "\n  task ");
    size_t sl_len = sl_end ? (size_t)(sl_end - sl) : strlen(sl);
    if (!test_portable_ctx()) {
        CHECK(memmem(sl, sl_len, "#0 0x", 5) != NULL);
        CHECK(memmem(sl, sl_len, " sleeper+0x", 11) != NULL ||
              memmem(sl, sl_len, " sleeper.lto_priv", 17) != NULL); /* gcc -flto */
        CHECK(memmem(sl, sl_len, " task_entry", 11) != NULL);
    }
    CHECK(strstr(d, "KiB deep") != NULL);
    CHECK(strstr(d, "end of braid dump") != NULL);
    free(d);
    /* Release everyone. */
    braid_cancel(ts[0]);
    int v = 1;
    CHECK_EQ(braid_chan_send(w.ch, &v), 0);
    braid_mutex_unlock(&w.mu);
    CHECK_EQ(write(w.pipe_task[1], "x", 1), 1);
    CHECK_EQ(write(w.pipe_job[1], "x", 1), 1);
    atomic_store(&yielder_stop, true);
    for (int i = 0; i < 7; i++)
        if (i != 1)
            CHECK(braid_join(ts[i], NULL) >= 0);
    braid_close(w.pipe_task[0]);
    close(w.pipe_task[1]);
    close(w.pipe_job[0]);
    close(w.pipe_job[1]);
    braid_chan_sender_drop(w.ch);
    braid_chan_receiver_drop(w.ch);
    return NULL;
}

TEST(dump_states)
{
    braid_runtime *rt = new_rt(2, 0, 0, NULL, NULL);
    CHECK_EQ(braid_block_on(rt, dump_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* From a plain thread, with tasks not started yet on a current-thread
 * runtime nobody drives. */
static void *noop(void *arg)
{
    return arg;
}

TEST(dump_from_thread)
{
    braid_runtime *rt = new_rt(1, 0, 0, NULL, NULL);
    braid_task t[3];
    int line = __LINE__ + 2;
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_spawn_on(rt, &t[i], noop, NULL), 0);
    char *d = dump_string(rt);
    CHECK(strstr(d, "3 tasks alive, 3 in the injection queue") != NULL);
    CHECK(strstr(d, "worker 0: 0 started tasks") != NULL);
    /* Each listed, without being taken off the queue (the joins below
     * find them there). */
    CHECK(strstr(d, "\ninjection queue: 3 not started\n") != NULL);
    for (int i = 0; i < 3; i++) {
        char want[256];
        snprintf(want, sizeof want,
                 "  task %llu: not started, in the injection queue\n"
                 "    spawned at %s:%d from a thread\n",
                 (unsigned long long)braid_task_id(t[i]), __FILE__, line);
        if (!strstr(d, want)) {
            fprintf(stderr, "%s", d);
            TEST_FAIL("no entry for task %d of the injection queue", i);
        }
    }
    free(d);
    CHECK_EQ(braid_dump(NULL, stderr), -EINVAL); /* no runtime here */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_cancel(t[i]), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_CANCELLED);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- SIGQUIT: a child dumps on stderr and keeps going ---------------------------------------- */

static void *child_root(void *arg)
{
    (void)arg;
    braid_task t = spawn_named("child-sleeper", sleeper, NULL);
    CHECK_EQ(braid_signal_catch(SIGUSR2), 0);
    for (;;) { /* until the sleeper sleeps, so the parent's dump shows it */
        char *d = dump_string(NULL);
        bool asleep = strstr(d, "\"child-sleeper\": waiting on sleep") != NULL;
        free(d);
        if (asleep)
            break;
        braid_sleep_ms(1);
    }
    printf("ready\n");
    fflush(stdout);
    CHECK_EQ(braid_signal_wait(SIGUSR2), SIGUSR2);
    printf("continued\n");
    fflush(stdout);
    braid_cancel(t);
    braid_join(t, NULL);
    return NULL;
}

/* The child's part runs before main when the parent sets the variable. */
__attribute__((constructor)) static void sigquit_child(void)
{
    if (!getenv("BRAID_OBSERVE_CHILD"))
        return;
    dup2(1, 2);
    _exit(braid_run(child_root, NULL, NULL) == 0 ? 0 : 3);
}

/* Read lines from fd until one contains stop; returns everything read. */
static char *read_until(FILE *in, const char *stop)
{
    size_t cap = 1 << 16, len = 0;
    char *all = calloc(1, cap);
    char line[1024];
    while (fgets(line, sizeof line, in)) {
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            cap *= 2;
            all = realloc(all, cap);
        }
        memcpy(all + len, line, n + 1);
        len += n;
        if (strstr(line, stop))
            return all;
    }
    fprintf(stderr, "%s", all);
    TEST_FAIL("end of output before \"%s\"", stop);
}

TEST(sigquit_dump)
{
    test_need_exec();
    char self[PATH_MAX];
    test_sibling("test_observe", self, sizeof self);
    setenv("BRAID_OBSERVE_CHILD", "1", 1);
    char *argv[] = { self, NULL };
    pid_t pid;
    int fd = test_spawn_piped(argv, &pid);
    unsetenv("BRAID_OBSERVE_CHILD");
    FILE *in = fdopen(fd, "r");
    free(read_until(in, "ready"));
    CHECK_EQ(kill(pid, SIGQUIT), 0);
    char *d = read_until(in, "end of braid dump");
    CHECK(strstr(d, "braid dump: runtime") != NULL);
    CHECK(strstr(d, "\"child-sleeper\": waiting on sleep") != NULL);
    free(d);
    CHECK_EQ(kill(pid, SIGUSR2), 0);
    free(read_until(in, "continued"));
    fclose(in);
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- deadlocks ------------------------------------------------------------------------------ */

struct hook_log {
    _Atomic int deadlocks, blocked;
    _Atomic uint64_t task;
    _Atomic uint64_t blocked_at; /* braid_now_ns() of the last blocked report */
    braid_chan *release; /* sent on by the hook to end a deadlock */
};

static void hook(braid_runtime *rt, int event, uint64_t task, void *user)
{
    (void)rt;
    struct hook_log *h = user;
    if (event == BRAID_EVENT_DEADLOCK) {
        atomic_fetch_add(&h->deadlocks, 1);
        int v = 7;
        if (h->release)
            CHECK_EQ(braid_chan_send(h->release, &v), 0);
    } else if (event == BRAID_EVENT_BLOCKED) {
        atomic_store(&h->task, task);
        atomic_store(&h->blocked_at, braid_now_ns());
        atomic_fetch_add(&h->blocked, 1);
    }
}

/* deadlocks stuck tasks in a row, each waiting on a channel that only the
 * deadlock hook sends on: each deadlock must be reported (with the dump
 * naming the stuck task), the hook's send ending it. */
static const char *const stuck_names[] = { "stuck", "stuck-again" };
static int stuck_count;
static bool stuck_after_io;
static int io_fds[2];

/* The root waits on an empty socket until a deadline: the socket stays
 * registered with its worker's epoll, with no task waiting on it. */
static void socket_round_trip(void)
{
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, io_fds), 0);
    CHECK_EQ(braid_wait_fd(io_fds[0], BRAID_READABLE, braid_deadline_ms(1)), -ETIMEDOUT);
}

static void *stuck_root(void *arg)
{
    struct hook_log *h = arg;
    if (stuck_after_io)
        socket_round_trip();
    for (int i = 0; i < stuck_count; i++) {
        braid_task t = spawn_named(stuck_names[i], receiver, &(struct world){ .ch = h->release });
        CHECK_EQ(braid_join(t, NULL), BRAID_OK); /* ends only when the hook sends */
    }
    return NULL;
}

static void check_deadlocks(int deadlocks, bool after_io)
{
    if (test_emulated())
        SKIP("qemu-user runs threads of its own, so no deadlock is ever certain");
    stuck_count = deadlocks;
    stuck_after_io = after_io;
    struct hook_log h = { 0 };
    CHECK_EQ(braid_chan_new(&h.release, sizeof(int), 1), 0);
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_WATCHDOG, 0, hook, &h);
    stderr_capture();
    int rc = braid_block_on(rt, stuck_root, &h, NULL);
    char *err = stderr_take();
    CHECK_EQ(rc, 0);
    CHECK_EQ(atomic_load(&h.deadlocks), deadlocks);
    const char *report = err;
    for (int i = 0; i < deadlocks; i++) {
        char want[96];
        snprintf(want, sizeof want, "\"%s\": waiting on channel receive", stuck_names[i]);
        report = strstr(report, "braid: deadlock: all 2 tasks");
        if (!report || !strstr(report, want)) {
            fprintf(stderr, "%s", err);
            TEST_FAIL("no report of deadlock %d on stderr", i + 1);
        }
        report++;
    }
    free(err);
    CHECK_EQ(braid_runtime_free(rt), 0);
    braid_chan_sender_drop(h.release);
    braid_chan_receiver_drop(h.release);
    if (after_io) {
        CHECK_EQ(braid_close(io_fds[0]), 0);
        CHECK_EQ(braid_close(io_fds[1]), 0);
    }
}

TEST(deadlock_report)
{
    check_deadlocks(1, false);
}

/* Two deadlocks in a row are both reported: the hook's send ends the
 * first, after which the root makes a second. */
TEST(deadlock_reported_again)
{
    check_deadlocks(2, false);
}

/* A worker that has a descriptor registered sleeps in epoll_wait, yet
 * with no task waiting on one, no event can wake anybody. */
TEST(deadlock_after_io)
{
    check_deadlocks(1, true);
}

/* Not a deadlock: a task waits on a pipe that another process writes to
 * after a while (no thread of this process could wake it). */
static void *pipe_root(void *arg)
{
    struct world w = { .pipe_task = { *(int *)arg, -1 } };
    braid_task r = spawn_named("piped", fd_reader, &w);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    return NULL;
}

TEST(no_deadlock_while_a_task_waits_on_a_descriptor)
{
    if (test_emulated())
        SKIP("qemu-user runs threads of its own, so no deadlock is ever certain");
    struct hook_log h = { 0 };
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_WATCHDOG, 0, hook, &h);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Only async-signal-safe calls in a child of a threaded parent.
         * Long enough for several of the observer's looks, 100 ms apart. */
        struct timespec ts = { 0, 600 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        _exit(write(p[1], "x", 1) == 1 ? 0 : 1);
    }
    CHECK_EQ(braid_block_on(rt, pipe_root, &p[0], NULL), 0);
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(atomic_load(&h.deadlocks), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_close(p[0]), 0);
    close(p[1]);
}

/* Not a deadlock: a task waits for a plain thread of the program's own,
 * which braid cannot see into, and another for a timer. */
static void *helper_thread(void *arg)
{
    struct hook_log *h = arg;
    usleep(600 * 1000);
    int v = 1;
    CHECK_EQ(braid_chan_send(h->release, &v), 0);
    return NULL;
}

static void *short_sleeper(void *arg)
{
    (void)arg;
    braid_sleep_ms(400);
    return NULL;
}

static void *waiting_root(void *arg)
{
    struct hook_log *h = arg;
    braid_task s = spawn_named("timer", short_sleeper, NULL);
    CHECK_EQ(braid_join(s, NULL), BRAID_OK);
    int v;
    CHECK_EQ(braid_chan_recv(h->release, &v), 0);
    return NULL;
}

TEST(no_false_deadlock)
{
    struct hook_log h = { 0 }; /* the hook's: no release, so a false report hangs nothing */
    struct hook_log rootlog = { 0 };
    CHECK_EQ(braid_chan_new(&rootlog.release, sizeof(int), 1), 0);
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_WATCHDOG, 0, hook, &h);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, helper_thread, &rootlog), 0);
    CHECK_EQ(braid_block_on(rt, waiting_root, &rootlog, NULL), 0);
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&h.deadlocks), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    braid_chan_sender_drop(rootlog.release);
    braid_chan_receiver_drop(rootlog.release);
}

/* ---- not-started tasks and time in state ---------------------------------------------------- */

enum { N_QUEUED = 40 };

static int queued_line;

static void *queued_root(void *arg)
{
    (void)arg;
    braid_task t[N_QUEUED];
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "first";
    queued_line = __LINE__ + 1;
    CHECK_EQ(braid_spawn_ex(&t[0], &o, noop, NULL), 0);
    for (int i = 1; i < N_QUEUED; i++)
        CHECK_EQ(braid_spawn(&t[i], noop, NULL), 0);
    char *d = dump_string(NULL); /* without suspending: none has started */
    char want[256];
    snprintf(want, sizeof want, "worker 0: 1 started tasks, %d not started in its queue\n",
             N_QUEUED);
    CHECK(strstr(d, want) != NULL);
    snprintf(want, sizeof want,
             "  task %llu \"first\": not started, queued on worker 0\n"
             "    spawned at %s:%d by task %llu\n",
             (unsigned long long)braid_task_id(t[0]), __FILE__, queued_line,
             (unsigned long long)braid_current_id());
    bool ok = strstr(d, want) != NULL;
    snprintf(want, sizeof want, "  task %llu: not started, queued on worker 0\n",
             (unsigned long long)braid_task_id(t[1]));
    ok = ok && strstr(d, want);
    /* The newest is listed first (it runs first), then the ring up to the
     * cap; the rest are counted. */
    snprintf(want, sizeof want, "  task %llu: not started, queued on worker 0\n",
             (unsigned long long)braid_task_id(t[N_QUEUED - 1]));
    ok = ok && strstr(d, want);
    snprintf(want, sizeof want, "\n  ... and %d more\nend of braid dump\n", N_QUEUED - 32);
    ok = ok && strstr(d, want);
    if (!ok) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("the not-started tasks are not listed");
    }
    free(d);
    /* Untouched by the dump: every one still runs. */
    for (int i = 0; i < N_QUEUED; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_OK);
    return NULL;
}

TEST(dump_lists_queued)
{
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_NO_WATCHDOG | BRAID_OBSERVE_NO_DEADLOCK, 0, NULL,
                               NULL);
    CHECK_EQ(braid_block_on(rt, queued_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* The seconds after "<what>, for " in d's line for task id; -1 if none. */
static double state_seconds(const char *d, uint64_t id, const char *what)
{
    char head[160];
    snprintf(head, sizeof head, "  task %llu", (unsigned long long)id);
    for (const char *p = strstr(d, head); p; p = strstr(p + 1, head)) {
        const char *eol = strchr(p, '\n');
        const char *w = strstr(p, what);
        if (!w || (eol && w > eol))
            continue;
        unsigned s, ms;
        if (sscanf(w + strlen(what), ", for %u.%3u s", &s, &ms) == 2)
            return s + ms / 1000.0;
    }
    return -1;
}

struct timing {
    braid_chan *ch;
    _Atomic bool yielder_stop;
};

static void *timed_receiver(void *arg)
{
    struct timing *tm = arg;
    int v;
    CHECK_EQ(braid_chan_recv(tm->ch, &v), 0);
    return NULL;
}

static void *timed_yielder(void *arg)
{
    struct timing *tm = arg;
    while (!atomic_load(&tm->yielder_stop))
        braid_yield();
    return NULL;
}

static void spin_ms(uint64_t ms)
{
    uint64_t until = braid_now_ns() + ms * 1000000u;
    while (braid_now_ns() < until)
        ;
}

/* A task woken after a second of waiting has been runnable (not waiting)
 * for as long as the waker kept the worker since; the waker has been
 * running since it woke from its sleep, not since it went to sleep; the
 * yielder last yielded before the waker ran again.  The
 * lower bounds are exact (a state's stamp is never later than the change
 * of state), the upper ones leave 0.84 s for a slow machine. */
static void *timing_root(void *arg)
{
    (void)arg;
    struct timing tm = { 0 };
    CHECK_EQ(braid_chan_new(&tm.ch, sizeof(int), 1), 0);
    braid_task r = spawn_named("receiver", timed_receiver, &tm);
    braid_task y = spawn_named("yielder", timed_yielder, &tm);
    braid_sleep_ms(1000); /* the receiver waits meanwhile, and the yielder yields */
    int v = 1;
    CHECK_EQ(braid_chan_send(tm.ch, &v), 0); /* wakes the receiver, which cannot run yet */
    spin_ms(60);
    char *d = dump_string(NULL);
    double woken = state_seconds(d, braid_task_id(r), ": runnable (woken from channel receive)");
    double running = state_seconds(d, braid_current_id(), ": running on worker 0");
    double yielded = state_seconds(d, braid_task_id(y), ": runnable (yielded)");
    if (woken < 0.060 || woken >= 0.9 || running < 0.060 || running >= 0.9 || yielded < 0.060 ||
        yielded >= 0.9) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("times in state: woken %.3f, running %.3f, yielded %.3f", woken, running,
                  yielded);
    }
    free(d);
    atomic_store(&tm.yielder_stop, true);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    CHECK_EQ(braid_join(y, NULL), BRAID_OK);
    braid_chan_sender_drop(tm.ch);
    braid_chan_receiver_drop(tm.ch);
    return NULL;
}

TEST(dump_time_in_state)
{
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_NO_WATCHDOG | BRAID_OBSERVE_NO_DEADLOCK, 0, NULL,
                               NULL);
    CHECK_EQ(braid_block_on(rt, timing_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- spawn sites of every kind -------------------------------------------------------------------- */

struct sites {
    int pipe[2];
    int line[5];        /* root (block_on), blocking, blocking_ex, joinset, joinset blocking */
    uint64_t root;
};

static void *read_byte(void *arg)
{
    struct sites *s = arg;
    char c;
    CHECK_EQ(read(s->pipe[0], &c, 1), 1);
    return NULL;
}

/* The "spawned at" line that follows the line of the task named name (or,
 * for name NULL, of task id), as "file:line by ..." up to its end. */
static bool site_is(const char *d, const char *name, uint64_t id, const char *want)
{
    char head[96];
    if (name)
        snprintf(head, sizeof head, " \"%s\": ", name);
    else
        snprintf(head, sizeof head, "  task %llu: ", (unsigned long long)id);
    const char *p = strstr(d, head);
    static const char lead[] = "\n    spawned at ";
    const char *s = p ? strstr(p, lead) : NULL;
    return s && strncmp(s + strlen(lead), want, strlen(want)) == 0;
}

static void *sites_root(void *arg)
{
    struct sites *s = arg;
    s->root = braid_current_id();
    braid_task b, bx;
    s->line[1] = __LINE__ + 1;
    CHECK_EQ(braid_spawn_blocking(&b, read_byte, s), 0);
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "blocking-ex";
    s->line[2] = __LINE__ + 1;
    CHECK_EQ(braid_spawn_blocking_ex(&bx, &o, read_byte, s), 0);
    braid_joinset *js;
    CHECK_EQ(braid_joinset_new(&js), 0);
    o.name = "member";
    s->line[3] = __LINE__ + 1;
    CHECK_EQ(braid_joinset_spawn(js, &o, sleeper, NULL, NULL), 0);
    o.name = "member-blocking";
    s->line[4] = __LINE__ + 1;
    CHECK_EQ(braid_joinset_spawn_blocking(js, &o, read_byte, s, NULL), 0);
    char want[5][160];
    for (int i = 0; i < 5; i++)
        snprintf(want[i], sizeof want[i], "%s:%d %s", __FILE__, s->line[i],
                 i ? "by task" : "from a thread");
    char *d = NULL;
    bool ok = false;
    /* Until each has started (and so shows under its name). */
    for (int tries = 0; tries < 2000 && !ok; tries++) {
        free(d);
        d = dump_string(NULL);
        ok = site_is(d, NULL, s->root, want[0]) &&
             site_is(d, NULL, braid_task_id(b), want[1]) &&
             site_is(d, "blocking-ex", 0, want[2]) && site_is(d, "member", 0, want[3]) &&
             site_is(d, "member-blocking", 0, want[4]);
        if (!ok)
            braid_sleep_ms(5);
    }
    if (!ok) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("a spawn site is missing");
    }
    free(d);
    CHECK_EQ(write(s->pipe[1], "xxx", 3), 3);
    CHECK_EQ(braid_join(b, NULL), BRAID_OK);
    CHECK_EQ(braid_join(bx, NULL), BRAID_OK);
    CHECK_EQ(braid_joinset_free(js), 0);
    return NULL;
}

static void *run_root(void *arg)
{
    int line = *(int *)arg;
    char *d = dump_string(NULL);
    char want[160];
    snprintf(want, sizeof want, "%s:%d from a thread", __FILE__, line);
    if (!site_is(d, NULL, braid_current_id(), want)) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("braid_run's root has no site");
    }
    free(d);
    return NULL;
}

TEST(spawn_sites_everywhere)
{
    struct sites s;
    CHECK_EQ(pipe(s.pipe), 0);
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_WATCHDOG | BRAID_OBSERVE_NO_DEADLOCK, 0, NULL,
                               NULL);
    s.line[0] = __LINE__ + 1;
    CHECK_EQ(braid_block_on(rt, sites_root, &s, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    close(s.pipe[0]);
    close(s.pipe[1]);
    int line = __LINE__ + 1;
    CHECK_EQ(braid_run(run_root, &line, NULL), 0);
}

/* ---- metrics --------------------------------------------------------------------------------- */

enum { N_OK = 50, N_PANIC = 5, N_CANCEL = 7 };

static void *panicker(void *arg)
{
    (void)arg;
    braid_panic("on purpose");
}

static void *metrics_root(void *arg)
{
    (void)arg;
    braid_task t[N_OK];
    for (int i = 0; i < N_OK; i++)
        CHECK_EQ(braid_spawn(&t[i], noop, NULL), 0);
    for (int i = 0; i < N_OK; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_OK);
    for (int i = 0; i < N_PANIC; i++)
        CHECK_EQ(braid_spawn(&t[i], panicker, NULL), 0);
    for (int i = 0; i < N_PANIC; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_PANICKED);
    for (int i = 0; i < N_CANCEL; i++)
        CHECK_EQ(braid_spawn(&t[i], sleeper, NULL), 0);
    for (int i = 0; i < N_CANCEL; i++)
        CHECK_EQ(braid_cancel(t[i]), 0);
    for (int i = 0; i < N_CANCEL; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_CANCELLED);
    braid_metrics m = BRAID_METRICS_INIT;
    braid_worker_metrics wm[4];
    m.workers = wm;
    m.max_workers = 4;
    CHECK_EQ(braid_metrics_get(NULL, &m), 0);
    CHECK_EQ(m.nworkers, 2);
    CHECK_EQ(m.tasks_spawned, 1 + N_OK + N_PANIC + N_CANCEL);
    CHECK_EQ(m.tasks_completed, N_OK + N_PANIC + N_CANCEL);
    CHECK_EQ(m.tasks_alive, 1);
    CHECK_EQ(m.tasks_panicked, N_PANIC);
    CHECK_EQ(m.tasks_cancelled, N_CANCEL);
    CHECK_EQ(m.global_queue, 0);
    uint64_t polls = wm[0].polls + wm[1].polls;
    CHECK(polls >= N_OK + N_PANIC + 1);
    CHECK(wm[braid_worker_index()].busy_ns > 0);
    CHECK_EQ(m.io_registered, 0);
    return NULL;
}

TEST(metrics_counts)
{
    braid_runtime *rt = new_rt(2, 0, 0, NULL, NULL);
    CHECK_EQ(braid_block_on(rt, metrics_root, NULL, NULL), 0);
    braid_metrics m = BRAID_METRICS_INIT;
    CHECK_EQ(braid_metrics_get(rt, &m), 0);
    CHECK_EQ(m.tasks_completed, 1 + N_OK + N_PANIC + N_CANCEL);
    CHECK_EQ(m.tasks_alive, 0);
    CHECK_EQ(m.blocking_busy, 0);
    /* An older caller's smaller struct gets only its fields. */
    braid_metrics small;
    memset(&small, 0xab, sizeof small);
    small.size = offsetof(braid_metrics, max_workers);
    CHECK_EQ(braid_metrics_get(rt, &small), 0);
    CHECK_EQ(small.tasks_spawned, 1 + N_OK + N_PANIC + N_CANCEL);
    CHECK_EQ(small.max_workers, 0xabababab);
    small.size = 8;
    CHECK_EQ(braid_metrics_get(rt, &small), -EINVAL);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- metrics of a known workload --------------------------------------------------------- */

/* Each counter is checked at a moment the workload arranges (tasks queued,
 * asleep, waiting on a pipe, a job running), so a counter that is never
 * bumped, or bumped in the wrong place, fails. */

static braid_metrics metrics_now(braid_worker_metrics *wm, unsigned n)
{
    braid_metrics m = BRAID_METRICS_INIT;
    m.workers = wm;
    m.max_workers = n;
    CHECK_EQ(braid_metrics_get(NULL, &m), 0);
    return m;
}

/* From a task: yield (so that the workers reach scheduling points, where
 * they publish their counters) until cond holds; 10 s at most.  Yielding,
 * not sleeping: a sleep would be one more timer. */
#define AWAIT_METRICS(m, wm, n, cond)                                                     \
    for (uint64_t t0_ = test_now_ms();; braid_yield()) {                                  \
        (m) = metrics_now((wm), (n));                                                     \
        if (cond)                                                                         \
            break;                                                                        \
        if (test_now_ms() - t0_ > 10000)                                                  \
            TEST_FAIL("the metrics never showed %s", #cond);                             \
    }

static atomic_int sleepers_started, reader_waiting, job_running;

static void *counted_sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sleepers_started, 1);
    braid_sleep_ms(3600 * 1000);
    return NULL;
}

static void *pipe_reader(void *arg)
{
    char c;
    atomic_store(&reader_waiting, 1);
    CHECK_EQ(braid_read((int)(intptr_t)arg, &c, 1), 1);
    return NULL;
}

static void *pool_job(void *arg)
{
    char c;
    atomic_store(&job_running, 1);
    CHECK_EQ(read((int)(intptr_t)arg, &c, 1), 1); /* a plain blocking read */
    return NULL;
}

static void yield_until(atomic_int *flag, int want)
{
    for (uint64_t t0 = test_now_ms(); atomic_load(flag) < want; braid_yield())
        if (test_now_ms() - t0 > 60000)
            TEST_FAIL("waited 60 s for an event");
}

enum { INJECTED = 3, QUEUED = 5, SLEEPERS = 6 };

/* One worker, so that what is queued stays queued and the worker is at a
 * scheduling point whenever the root runs. */
static void *one_worker_root(void *arg)
{
    braid_task *injected = arg, t[SLEEPERS + N_PANIC];
    braid_worker_metrics wm[1];
    braid_metrics m;
    for (int i = 0; i < INJECTED; i++)
        CHECK_EQ(braid_join(injected[i], NULL), BRAID_OK);

    /* Spawned tasks wait in the worker's queue until the root suspends. */
    for (int i = 0; i < QUEUED; i++)
        CHECK_EQ(braid_spawn(&t[i], noop, NULL), 0);
    m = metrics_now(wm, 1);
    CHECK_EQ(wm[0].local_queue, QUEUED);
    CHECK_EQ(m.tasks_alive, 1 + QUEUED);
    for (int i = 0; i < QUEUED; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_OK);
    /* Joining a queued task starts it on the spot; its queue entry goes
     * when the worker next looks at the queue. */
    AWAIT_METRICS(m, wm, 1, wm[0].local_queue == 0);

    /* Timers: one per sleeping task. */
    for (int i = 0; i < SLEEPERS; i++)
        CHECK_EQ(braid_spawn(&t[i], counted_sleeper, NULL), 0);
    yield_until(&sleepers_started, SLEEPERS);
    AWAIT_METRICS(m, wm, 1, m.timers == SLEEPERS);
    CHECK_EQ(wm[0].timers, SLEEPERS);

    /* A descriptor registered while a task waits on it, until closed. */
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK), 0);
    braid_task r;
    CHECK_EQ(braid_spawn(&r, pipe_reader, (void *)(intptr_t)p[0]), 0);
    yield_until(&reader_waiting, 1); /* one worker: it ran until it waited */
    m = metrics_now(wm, 1);
    CHECK_EQ(m.io_registered, 1);
    CHECK_EQ(wm[0].io_registered, 1);
    CHECK_EQ(write(p[1], "x", 1), 1);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    CHECK_EQ(braid_close(p[0]), 0);
    close(p[1]);
    m = metrics_now(wm, 1);
    CHECK_EQ(m.io_registered, 0);

    /* The blocking pool: busy while the job runs, idle after. */
    CHECK_EQ(pipe(p), 0);
    m = metrics_now(wm, 1);
    CHECK_EQ(m.blocking_busy + m.blocking_idle, 0);
    braid_task b;
    CHECK_EQ(braid_spawn_blocking(&b, pool_job, (void *)(intptr_t)p[0]), 0);
    yield_until(&job_running, 1);
    m = metrics_now(wm, 1);
    CHECK_EQ(m.blocking_busy, 1);
    CHECK_EQ(m.blocking_queued, 0);
    CHECK_EQ(write(p[1], "x", 1), 1);
    CHECK_EQ(braid_join(b, NULL), BRAID_OK);
    AWAIT_METRICS(m, wm, 1, m.blocking_busy == 0 && m.blocking_idle == 1);
    close(p[0]);
    close(p[1]);

    /* Fates. */
    for (int i = 0; i < N_PANIC; i++)
        CHECK_EQ(braid_spawn(&t[SLEEPERS + i], panicker, NULL), 0);
    for (int i = 0; i < N_PANIC; i++)
        CHECK_EQ(braid_join(t[SLEEPERS + i], NULL), BRAID_PANICKED);
    for (int i = 0; i < SLEEPERS; i++)
        CHECK_EQ(braid_cancel(t[i]), 0);
    for (int i = 0; i < SLEEPERS; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_CANCELLED);
    AWAIT_METRICS(m, wm, 1, m.timers == 0);
    CHECK_EQ(m.tasks_panicked, N_PANIC);
    CHECK_EQ(m.tasks_cancelled, SLEEPERS);
    /* The injected, the root, the queued, the sleepers, the reader, the
     * blocking job's task and the panickers. */
    CHECK_EQ(m.tasks_spawned, INJECTED + 1 + QUEUED + SLEEPERS + 1 + 1 + N_PANIC);
    CHECK_EQ(m.tasks_alive, 1);

    /* Parking: nothing to run while the root sleeps (unless the worker
     * is so slow, under Valgrind, that the sleep is over before it could
     * park). */
    uint64_t parks = wm[0].parks, t0 = test_now_ms();
    do {
        if (test_now_ms() - t0 > 10000)
            TEST_FAIL("the worker never parked");
        braid_sleep_ms(5);
        m = metrics_now(wm, 1);
    } while (wm[0].parks == parks);
    return NULL;
}

TEST(metrics_one_worker_workload)
{
    atomic_store(&sleepers_started, 0);
    braid_runtime *rt = new_rt(1, 0, 0, NULL, NULL);
    /* From outside any worker, tasks go to the injection queue. */
    braid_task injected[INJECTED];
    for (int i = 0; i < INJECTED; i++)
        CHECK_EQ(braid_spawn_on(rt, &injected[i], noop, NULL), 0);
    braid_metrics m = BRAID_METRICS_INIT;
    CHECK_EQ(braid_metrics_get(rt, &m), 0);
    CHECK_EQ(m.global_queue, INJECTED);
    CHECK_EQ(m.tasks_alive, INJECTED);
    CHECK_EQ(braid_block_on(rt, one_worker_root, injected, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* Two workers: what a task that never suspends spawns can only run on the
 * other worker, which must steal it, and the sleepers that task spawns
 * there stay there, on a worker that then parks. */
enum { FAR_SLEEPERS = 8 };

static _Atomic int holder_worker = -1, thief_worker = -1;
static braid_task far[FAR_SLEEPERS];

static void *thief(void *arg)
{
    (void)arg;
    atomic_store(&thief_worker, braid_worker_index());
    for (int i = 0; i < FAR_SLEEPERS; i++)
        CHECK_EQ(braid_spawn(&far[i], counted_sleeper, NULL), 0);
    return NULL;
}

/* Two spawns: a single one would wait in the spawner's newest slot, and
 * wake no idle worker, until the spawner suspends; the second moves the
 * first to the stealable ring and wakes one. */
static void *holder(void *arg)
{
    braid_task *t = arg;
    atomic_store(&holder_worker, braid_worker_index());
    CHECK_EQ(braid_spawn(&t[0], thief, NULL), 0);
    CHECK_EQ(braid_spawn(&t[1], noop, NULL), 0);
    uint64_t give_up = test_now_ms() + 60000;
    while (atomic_load(&sleepers_started) < FAR_SLEEPERS)
        if (test_now_ms() > give_up)
            TEST_FAIL("the other worker never stole the thief");
    return NULL;
}

static void *two_workers_root(void *arg)
{
    (void)arg;
    braid_task h, t[2];
    braid_worker_metrics wm[2];
    braid_metrics m;
    CHECK_EQ(braid_spawn(&h, holder, t), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    CHECK_EQ(braid_join(t[0], NULL), BRAID_OK);
    CHECK_EQ(braid_join(t[1], NULL), BRAID_OK);
    int thief_w = atomic_load(&thief_worker);
    CHECK(thief_w >= 0 && thief_w != atomic_load(&holder_worker));
    AWAIT_METRICS(m, wm, 2, m.timers == FAR_SLEEPERS);
    CHECK_EQ(wm[thief_w].timers, FAR_SLEEPERS);
    CHECK(wm[thief_w].steals >= 1);
    /* Its tasks all asleep, the thief's worker parks. */
    AWAIT_METRICS(m, wm, 2, wm[thief_w].parks >= 1);
    for (int i = 0; i < FAR_SLEEPERS; i++)
        CHECK_EQ(braid_cancel(far[i]), 0);
    for (int i = 0; i < FAR_SLEEPERS; i++)
        CHECK_EQ(braid_join(far[i], NULL), BRAID_CANCELLED);
    AWAIT_METRICS(m, wm, 2, m.timers == 0);
    CHECK_EQ(m.tasks_cancelled, FAR_SLEEPERS);
    CHECK_EQ(m.tasks_panicked, 0);
    CHECK_EQ(m.tasks_spawned, 1 + 1 + 2 + FAR_SLEEPERS);
    return NULL;
}

TEST(metrics_two_workers_workload)
{
    atomic_store(&sleepers_started, 0);
    /* The holder runs as long as the other worker takes to steal. */
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_WATCHDOG, 0, NULL, NULL);
    CHECK_EQ(braid_block_on(rt, two_workers_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- the watchdog ------------------------------------------------------------------------------ */

static struct hook_log wd_log;

static void *spinner(void *arg)
{
    (void)arg;
    /* Spins until the watchdog has reported it. */
    while (!atomic_load(&wd_log.blocked))
        ;
    return NULL;
}

static void *watchdog_root(void *arg)
{
    (void)arg;
    braid_task t = spawn_named("spinner", spinner, NULL);
    uint64_t id = braid_task_id(t);
    CHECK_EQ(braid_join(t, NULL), BRAID_OK);
    uint64_t got = atomic_load(&wd_log.task);
#ifdef UNDER_TSAN
    /* ThreadSanitizer runs the sampling handler only once the spinner
     * enters an intercepted call: the report comes without the task. */
    CHECK(got == id || got == 0);
#else
    CHECK_EQ(got, id);
#endif
    return NULL;
}

TEST(watchdog_fires)
{
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_DEADLOCK, 50, hook, &wd_log);
    stderr_capture();
    int rc = braid_block_on(rt, watchdog_root, NULL, NULL);
    char *err = stderr_take();
    CHECK_EQ(rc, 0);
    CHECK_EQ(atomic_load(&wd_log.blocked), 1);
    bool ok = strstr(err, "without suspending") != NULL;
#ifndef UNDER_TSAN
    ok = ok && strstr(err, "\"spinner\" (spawned at") && strstr(err, "#0 0x");
#endif
    if (!ok) {
        fprintf(stderr, "%s", err);
        TEST_FAIL("no watchdog report on stderr");
    }
    free(err);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static void *polite(void *arg)
{
    (void)arg;
    uint64_t until = braid_now_ns() + 400 * 1000000ull;
    unsigned sink = 0;
    while (braid_now_ns() < until) {
        for (unsigned i = 0; i < 1000; i++)
            sink += i;
        braid_yield();
        braid_sleep_ms(1);
    }
    return (void *)(uintptr_t)sink;
}

static void *quiet_root(void *arg)
{
    (void)arg;
    braid_task t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn_named("polite", polite, NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_OK);
    return NULL;
}

TEST(watchdog_quiet)
{
    struct hook_log h = { 0 };
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_DEADLOCK, 100, hook, &h);
    CHECK_EQ(braid_block_on(rt, quiet_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(atomic_load(&h.blocked), 0);
}

/* Between braid_block_on calls a current-thread runtime has no thread:
 * tasks waiting there are not a blocked worker.  Nothing to wait for but
 * many watchdog periods passing (no event marks an absent report); then a
 * task that spins under block_on shows the watchdog was watching. */
static void *returns_arg(void *arg)
{
    return arg;
}

static void *spin_until_reported(void *arg)
{
    struct hook_log *h = arg;
    uint64_t until = test_now_ms() + 10000;
    while (!atomic_load(&h->blocked) && test_now_ms() < until)
        ;
    return NULL;
}

TEST(watchdog_ignores_undriven_runtime)
{
    struct hook_log h = { 0 };
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_NO_DEADLOCK, 10, hook, &h);
    CHECK_EQ(braid_spawn_on(rt, NULL, returns_arg, NULL), 0);
    uint64_t until = test_now_ms() + 300;
    while (test_now_ms() < until)
        usleep(10000);
    void *r;
    CHECK_EQ(braid_block_on(rt, returns_arg, (void *)7, &r), 0);
    CHECK_EQ((uintptr_t)r, 7);
    until = test_now_ms() + 200;
    while (test_now_ms() < until)
        usleep(10000);
    CHECK_EQ(atomic_load(&h.blocked), 0);
    stderr_capture();
    CHECK_EQ(braid_block_on(rt, spin_until_reported, &h, NULL), 0);
    free(stderr_take());
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(atomic_load(&h.blocked), 1);
}

/* The watchdog's backtrace of a task blocked in a system call names the
 * function that made the call, although libc's wrapper (read here) keeps
 * no frame pointer: a walk of frame pointers alone goes from read straight
 * to that function's caller. */
static int read_pipe[2];
static struct hook_log read_log;

static void release_reader(braid_runtime *rt, int event, uint64_t task, void *user)
{
    hook(rt, event, task, user);
    if (event == BRAID_EVENT_BLOCKED)
        CHECK_EQ(write(read_pipe[1], "x", 1), 1);
}

__attribute__((noinline)) static void *blocked_in_read(void *arg)
{
    (void)arg;
    char c;
    ssize_t n;
    do
        n = read(read_pipe[0], &c, 1); /* until the watchdog's hook writes */
    while (n < 0 && errno == EINTR);
    CHECK_EQ(n, 1);
    return NULL;
}

static void *read_root(void *arg)
{
    (void)arg;
    braid_task t = spawn_named("reader", blocked_in_read, NULL);
    CHECK_EQ(braid_join(t, NULL), BRAID_OK);
    return NULL;
}

TEST(watchdog_names_blocking_caller)
{
    CHECK_EQ(pipe(read_pipe), 0);
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_DEADLOCK, 50, release_reader, &read_log);
    stderr_capture();
    int rc = braid_block_on(rt, read_root, NULL, NULL);
    char *err = stderr_take();
    CHECK_EQ(rc, 0);
    CHECK_EQ(atomic_load(&read_log.blocked), 1);
    bool ok = strstr(err, "without suspending") != NULL;
#ifndef UNDER_TSAN /* its handler may run too late to see the read, or not at all */
    ok = ok && strstr(err, "\"reader\" (spawned at") && strstr(err, " blocked_in_read+0x");
#endif
    if (!ok) {
        fprintf(stderr, "%s", err);
        TEST_FAIL("the report does not name the function blocked in read()");
    }
    free(err);
    CHECK_EQ(braid_runtime_free(rt), 0);
    close(read_pipe[0]);
    close(read_pipe[1]);
}

/* The threshold of a configuration left as braid_config_init() made it:
 * 100 ms (1 s under Valgrind).  The report says how long the task ran,
 * measured from when the observer last saw its worker move: at least the
 * threshold, and far below the next plausible default. */
static unsigned long long reported_ms(const char *err)
{
    const char *end = strstr(err, " ms without suspending");
    CHECK(end != NULL);
    const char *p = end;
    while (p > err && strncmp(p, " for ", 5) != 0)
        p--;
    CHECK(strncmp(p, " for ", 5) == 0);
    return strtoull(p + 5, NULL, 10);
}

TEST(watchdog_default_threshold)
{
    braid_config cfg;
    braid_config_init(&cfg); /* watchdog_ms left alone */
    cfg.workers = 2;
    cfg.observe_off = BRAID_OBSERVE_NO_DEADLOCK;
    cfg.observe_hook = hook;
    struct hook_log h = { 0 };
    cfg.observe_hook_arg = &h;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    stderr_capture();
    CHECK_EQ(braid_block_on(rt, spin_until_reported, &h, NULL), 0);
    char *err = stderr_take();
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(atomic_load(&h.blocked), 1);
    unsigned long long ms = reported_ms(err), dflt = test_under_valgrind() ? 1000 : 100;
    if (ms < dflt || ms >= 10 * dflt) {
        fprintf(stderr, "%s", err);
        TEST_FAIL("reported after %llu ms, the default threshold is %llu ms", ms, dflt);
    }
    free(err);
}

/* Once per incident: a task that keeps running long past the report is
 * not reported again, but once it has suspended, running too long again
 * is a new incident. */
enum { WD_MS = 50 };

/* Returns the number of reports seen at the end of each incident (in
 * seen[]), or stops early if one is never reported: stderr is captured
 * meanwhile, so the test checks afterwards. */
struct incidents {
    struct hook_log log;
    int seen[2];
};

static void *two_incidents(void *arg)
{
    struct incidents *in = arg;
    for (int i = 0; i < 2; i++) {
        for (uint64_t give_up = test_now_ms() + 10000; atomic_load(&in->log.blocked) <= i;)
            if (test_now_ms() > give_up)
                return NULL;
        /* Four more thresholds: the observer looks four times per
         * threshold, so it sees the same stuck worker many times. */
        spin_ms(4 * WD_MS);
        in->seen[i] = atomic_load(&in->log.blocked);
        braid_sleep_ms(1);
    }
    return NULL;
}

TEST(watchdog_once_per_incident)
{
    struct incidents in = { 0 };
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_DEADLOCK, WD_MS, hook, &in.log);
    stderr_capture();
    CHECK_EQ(braid_block_on(rt, two_incidents, &in, NULL), 0);
    char *err = stderr_take();
    CHECK_EQ(braid_runtime_free(rt), 0);
    int reports = 0;
    for (const char *p = err; (p = strstr(p, "without suspending")) != NULL; p++)
        reports++;
    if (in.seen[0] != 1 || in.seen[1] != 2 || atomic_load(&in.log.blocked) != 2 || reports != 2) {
        fprintf(stderr, "%s", err);
        TEST_FAIL("reports after the first incident: %d, after the second: %d (0: never "
                  "reported), in all: %d, on stderr: %d; want 1, 2, 2, 2",
                  in.seen[0], in.seen[1], atomic_load(&in.log.blocked), reports);
    }
    free(err);
}

/* The off switches: nothing is reported of a task that runs fifteen
 * thresholds without suspending.  (An absent report is no event: the
 * task spins for a fixed time.) */
static void *spin_300ms(void *arg)
{
    (void)arg;
    spin_ms(300);
    return NULL;
}

TEST(watchdog_off)
{
    static const unsigned offs[] = { BRAID_OBSERVE_NO_WATCHDOG, BRAID_OBSERVE_OFF };
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
        struct hook_log h = { 0 };
        braid_runtime *rt = new_rt(2, offs[i] | BRAID_OBSERVE_NO_DEADLOCK, 20, hook, &h);
        stderr_capture();
        CHECK_EQ(braid_block_on(rt, spin_300ms, NULL, NULL), 0);
        char *err = stderr_take();
        CHECK_EQ(braid_runtime_free(rt), 0);
        if (atomic_load(&h.blocked) != 0 || strstr(err, "without suspending")) {
            fprintf(stderr, "%s", err);
            TEST_FAIL("observe_off %#x: the watchdog reported", offs[i]);
        }
        free(err);
    }
}

/* SIGQUIT left alone: the child's runtime has BRAID_OBSERVE_NO_SIGQUIT
 * (or everything off), so SIGQUIT does what it does by default, ending
 * the child, without a dump. */
__attribute__((constructor)) static void quiet_child(void)
{
    const char *off = getenv("BRAID_OBSERVE_QUIET_CHILD");
    if (!off)
        return;
    dup2(1, 2);
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0); /* nor to a core_pattern pipe */
    braid_runtime *rt = new_rt(1, (unsigned)atoi(off), 0, NULL, NULL);
    printf("ready\n");
    fflush(stdout);
    braid_block_on(rt, sleeper, NULL, NULL); /* until SIGQUIT */
    _exit(3);
}

TEST(sigquit_off)
{
    test_need_exec();
    char self[PATH_MAX];
    test_sibling("test_observe", self, sizeof self);
    static const char *const offs[] = { "1" /* NO_SIGQUIT */, "7" /* OFF */ };
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
        setenv("BRAID_OBSERVE_QUIET_CHILD", offs[i], 1);
        char *argv[] = { self, NULL };
        pid_t pid;
        int fd = test_spawn_piped(argv, &pid);
        unsetenv("BRAID_OBSERVE_QUIET_CHILD");
        FILE *in = fdopen(fd, "r");
        free(read_until(in, "ready"));
        CHECK_EQ(kill(pid, SIGQUIT), 0);
        int st = 0;
        for (uint64_t t0 = test_now_ms(); waitpid(pid, &st, WNOHANG) == 0; usleep(10000)) {
            if (test_now_ms() - t0 > 30000) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                TEST_FAIL("observe_off %s: the child survived SIGQUIT", offs[i]);
            }
        }
        char rest[4096];
        size_t n = fread(rest, 1, sizeof rest - 1, in);
        rest[n] = 0;
        fclose(in);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGQUIT || strstr(rest, "braid dump"))
            TEST_FAIL("observe_off %s: status %#x, output after ready:\n%s", offs[i], st, rest);
    }
}

/* A dump names the task that keeps a worker busy. */
static _Atomic int busy_worker = -1;
static _Atomic bool busy_release;

static void *busy_spinner(void *arg)
{
    (void)arg;
    atomic_store(&busy_worker, braid_worker_index());
    while (!atomic_load(&busy_release))
        ;
    return NULL;
}

TEST(dump_busy_worker)
{
    braid_runtime *rt = new_rt(2, BRAID_OBSERVE_NO_DEADLOCK, 60000, NULL, NULL);
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "busy";
    braid_task t;
    CHECK_EQ(braid_spawn_on_ex(rt, &t, &o, busy_spinner, NULL), 0);
    while (atomic_load(&busy_worker) < 0)
        usleep(1000);
    char *d = dump_string(rt);
    char want[128];
    snprintf(want, sizeof want, "worker %d: busy", atomic_load(&busy_worker));
    bool ok = strstr(d, want) != NULL;
#ifndef UNDER_TSAN
    ok = ok && strstr(d, "\"busy\": running on worker");
#endif
    if (!ok) {
        fprintf(stderr, "%s", d);
        TEST_FAIL("the busy worker is not described");
    }
    free(d);
    atomic_store(&busy_release, true);
    CHECK_EQ(braid_join(t, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- stack depth --------------------------------------------------------------------------------- */

static volatile int depth_sink;

static void *deep_task(void *arg)
{
    (void)arg;
    depth_sink = test_use_stack(61 * 1024); /* at least 60 KiB */
    ssize_t hw = braid_stack_high_water();
    CHECK(hw >= 60 * 1024);
    CHECK(hw <= 260 * 1024); /* the default stack and its record page */
    return NULL;
}

/* The metrics measure the stacks when read: no dump or
 * braid_stack_high_water() call needed. */
static void *deep_then_wait(void *arg)
{
    depth_sink = test_use_stack(65 * 1024); /* at least 64 KiB */
    int v;
    CHECK_EQ(braid_chan_recv(arg, &v), 0);
    return NULL;
}

static void *metrics_depth_root(void *arg)
{
    (void)arg;
    braid_chan *ch;
    CHECK_EQ(braid_chan_new(&ch, sizeof(int), 1), 0);
    braid_task t = spawn_named("deep", deep_then_wait, ch);
    braid_metrics m = BRAID_METRICS_INIT;
    CHECK_EQ(braid_metrics_get(NULL, &m), 0);
    CHECK(m.stack_high_water < 64 * 1024); /* it has not run yet */
    CHECK_EQ(braid_yield(), 0); /* it runs, and waits */
    CHECK_EQ(braid_metrics_get(NULL, &m), 0);
    CHECK(m.stack_high_water >= 64 * 1024);
    CHECK(m.stack_high_water <= 260 * 1024);
    int v = 1;
    CHECK_EQ(braid_chan_send(ch, &v), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_OK);
    CHECK_EQ(braid_metrics_get(NULL, &m), 0); /* a high-water mark stays */
    CHECK(m.stack_high_water >= 64 * 1024);
    braid_chan_sender_drop(ch);
    braid_chan_receiver_drop(ch);
    return NULL;
}

TEST(metrics_stack_high_water)
{
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_OFF, 0, NULL, NULL);
    CHECK_EQ(braid_block_on(rt, metrics_depth_root, NULL, NULL), 0);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

TEST(stack_high_water)
{
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_OFF, 0, NULL, NULL);
    CHECK_EQ(braid_block_on(rt, deep_task, NULL, NULL), 0);
    CHECK_EQ(braid_stack_high_water(), -EPERM);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* The plain functions still work, without a site. */
TEST(spawn_without_site)
{
    braid_runtime *rt = new_rt(1, BRAID_OBSERVE_OFF, 0, NULL, NULL);
    braid_task t;
    CHECK_EQ((braid_spawn_on)(rt, &t, noop, NULL), 0);
    char *d = dump_string(rt);
    CHECK(strstr(d, "1 tasks alive") != NULL);
    free(d);
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- the ELF symbolizer on good and damaged images ---------------------------------- */

/* The load bias of the main program (the first module listed). */
static int first_module(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    *(uintptr_t *)arg = info->dlpi_addr;
    return 1;
}

/* This test binary's file, read whole (caller frees). */
static unsigned char *read_self(size_t *len)
{
    FILE *f = fopen("/proc/self/exe", "rb");
    CHECK(f != NULL);
    CHECK_EQ(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    CHECK(n > (long)sizeof(Elf64_Ehdr));
    rewind(f);
    unsigned char *img = malloc((size_t)n);
    CHECK(img != NULL);
    CHECK_EQ(fread(img, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return img;
}

/* Parse img[0, len), an allocation of exactly len bytes (so that the
 * sanitizers catch a read past its end); a table it accepts is sorted and
 * its names are strings. */
static int parse_checked(const unsigned char *img, size_t len)
{
    braid__symtab t;
    int rc = braid__symtab_parse(img, len, 0, &t);
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        CHECK(i == 0 || t.syms[i - 1].start <= t.syms[i].start);
        CHECK(strlen(t.names + t.syms[i].name) > 0);
    }
    braid__symtab_free(&t);
    return rc;
}

/* img's first len bytes, parsed from an allocation of their size. */
static int parse_prefix(const unsigned char *img, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, img, len);
    int rc = parse_checked(copy, len);
    free(copy);
    return rc;
}

/* gcc's LTO may rename a static function: sleeper.lto_priv.0. */
static bool names_sleeper(const char *name)
{
    return name && strncmp(name, "sleeper", 7) == 0 && (name[7] == 0 || name[7] == '.');
}

TEST(symbolize_elf)
{
    size_t len;
    unsigned char *img = read_self(&len);
    uintptr_t bias = 0;
    dl_iterate_phdr(first_module, &bias);
    braid__symtab t;
    CHECK_EQ(braid__symtab_parse(img, len, bias, &t), 0);
    uintptr_t off = 99;
    const char *name = braid__symtab_find(&t, (uintptr_t)sleeper + 3, &off);
    CHECK(names_sleeper(name));
    CHECK_EQ(off, 3);
    CHECK(braid__symtab_find(&t, 1, &off) == NULL); /* below every function */
    braid__symtab_free(&t);
    name = braid__symbolize((uintptr_t)sleeper + 1, &off);
    CHECK(names_sleeper(name));
    CHECK_EQ(off, 1);
    CHECK(braid__symbolize(0, &off) == NULL);

    /* Truncated: every short prefix, and around the end, where the linker
     * puts the section headers. */
    for (size_t n = 0; n < 200; n++)
        CHECK(parse_prefix(img, n) < 0);
    for (size_t cut = 1; cut < 4096 && cut < len; cut += 97)
        CHECK(parse_prefix(img, len - cut) < 0);
    /* Corrupted: bytes of the ELF header and of the section headers
     * (whose fields locate everything else) set to chosen and random
     * values; the result may parse or not, but is never read outside. */
    Elf64_Ehdr eh;
    memcpy(&eh, img, sizeof eh);
    CHECK(eh.e_shoff < len);
    size_t sh_bytes = (size_t)eh.e_shnum * sizeof(Elf64_Shdr);
    CHECK(sh_bytes > 0 && sh_bytes <= len - eh.e_shoff);
    static const unsigned char pick[] = {0x00, 0x01, 0x02, 0x0b, 0x7f, 0x80, 0xfe, 0xff};
    uint64_t seed = 88172645463325252u;
    for (int round = 0; round < 400; round++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17; /* xorshift */
        size_t at = round % 3 == 0 ? seed % sizeof eh : eh.e_shoff + seed % sh_bytes;
        unsigned char was = img[at];
        img[at] = round & 1 ? pick[(seed >> 32) % sizeof pick] : (unsigned char)(seed >> 40);
        (void)parse_checked(img, len);
        img[at] = was;
    }
    CHECK_EQ(parse_checked(img, len), 0);
    img[EI_CLASS] = ELFCLASS32;
    CHECK_EQ(parse_checked(img, len), -ENOEXEC);
    free(img);
}
