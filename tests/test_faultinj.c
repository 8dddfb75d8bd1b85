/*
 * Fault injection (issue 6, part 4): built only against
 * libbraid-faultinj.a, where every allocation, stack mapping, thread
 * creation, epoll/eventfd creation and accept goes through a fault site.
 * For each site, a scenario (a two-worker runtime; tasks that sleep, use a
 * channel and a mutex, join, run blocking-pool work, listen, connect,
 * accept, read and write) first runs untouched to count the site's calls,
 * then once for every N, in a forked child, with the Nth call of the site
 * failing.  Every braid call must return 0 (or its result) or a negative
 * errno, the child must neither crash, hang nor abort, and LSan must find
 * no leak when it exits.
 */
#include "test.h"
#include "util.h"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sys/wait.h>

/* A braid call's result: a non-negative result or a negative errno. */
#define CHECK_RC(expr) check_rc((long long)(expr), #expr, __LINE__)

static long long check_rc(long long r, const char *expr, int line)
{
    if (r < -4095)
        TEST_FAIL("line %d: %s returned %lld, not a negative errno", line, expr, r);
    return r;
}

static void *sleeper(void *arg)
{
    CHECK_RC(braid_sleep_ms(1));
    return arg;
}

/* No fault armed: everything must succeed (the scenario really ran). */
static bool strict;
/* What the scenario did, checked when strict. */
static atomic_int echoed, received, blocked;

struct shared {
    braid_mutex mu;
    long counter;
    braid_chan *ch;
};

static void *producer(void *arg)
{
    struct shared *s = arg;
    for (int i = 0; i < 8; i++) {
        int rc = (int)CHECK_RC(braid_chan_send(s->ch, &i));
        if (rc < 0)
            break;
        if (CHECK_RC(braid_mutex_lock(&s->mu)) == 0) {
            s->counter++;
            CHECK_EQ(braid_mutex_unlock(&s->mu), 0);
        }
    }
    CHECK_RC(braid_chan_close(s->ch));
    return NULL;
}

static void *blocking_job(void *arg)
{
    usleep(1000);
    return (void *)((uintptr_t)arg * 2);
}

static void *server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int c = (int)CHECK_RC(braid_accept_until(lfd, NULL, NULL, braid_deadline_ms(5000)));
    if (c == -EMFILE) /* the listener stays usable: try again */
        c = (int)CHECK_RC(braid_accept_until(lfd, NULL, NULL, braid_deadline_ms(5000)));
    if (c < 0)
        return (void *)(intptr_t)c;
    char buf[16];
    ssize_t n = CHECK_RC(braid_read_exact(c, buf, 5));
    if (n == 5)
        CHECK_RC(braid_write_all(c, buf, 5));
    CHECK_RC(braid_close(c));
    return NULL;
}

static void free_chan(braid_chan *ch)
{
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* Join t (if spawned) and check its fate; a task that could not get a
 * stack panics with a message saying so. */
static void join_task(int spawned, braid_task t, void **value)
{
    if (spawned != 0)
        return;
    braid_outcome o = BRAID_OUTCOME_INIT;
    int f = (int)CHECK_RC(braid_join_ex(t, &o));
    CHECK(f == BRAID_OK || f == BRAID_PANICKED);
    if (f == BRAID_PANICKED && !strstr(o.message, "stack") && !strstr(o.message, "memory") &&
        !strstr(o.message, "thread"))
        TEST_FAIL("unexpected panic: %s", o.message);
    if (value)
        *value = f == BRAID_OK ? o.value : NULL;
}

/* A task owning a malloc'd argument, freed by the task or by arg_drop. */
static void *owns_arg(void *arg)
{
    free(arg);
    return NULL;
}

static void *local_user(void *arg)
{
    braid_local_key *key = arg;
    void *v = malloc(16);
    if (!v)
        return NULL;
    if (CHECK_RC(braid_local_set(*key, v)) < 0)
        free(v);
    return NULL;
}

static void *line_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    CHECK_RC(braid_write_all(fd, "one\ntwo\n", 8));
    CHECK_RC(braid_close(fd));
    return NULL;
}

/* More of the API: spawn options, JoinSet, join_all, oneshot, an
 * unbounded channel that grows, notify, tokens, task-locals, a buffered
 * reader, files and name resolution on the blocking pool. */
static void extras(void)
{
    /* spawn_ex with a name and an arg_drop. */
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "owner";
    o.arg_drop = free;
    void *a = malloc(32);
    CHECK(a != NULL);
    braid_task t;
    int rc = (int)CHECK_RC(braid_spawn_ex(&t, &o, owns_arg, a));
    if (rc < 0)
        free(a); /* not spawned: still ours */
    join_task(rc, t, NULL);

    /* JoinSet: tasks and blocking work. */
    braid_joinset *js;
    if (CHECK_RC(braid_joinset_new(&js)) == 0) {
        int n = 0;
        for (int i = 0; i < 3; i++)
            n += CHECK_RC(braid_joinset_spawn(js, NULL, sleeper, (void *)(uintptr_t)i, NULL)) == 0;
        n += CHECK_RC(braid_joinset_spawn_blocking(js, NULL, blocking_job, (void *)1, NULL)) == 0;
        braid_outcome out = BRAID_OUTCOME_INIT;
        int f = (int)CHECK_RC(braid_joinset_join_next(js, &out, NULL));
        CHECK(f >= 0 || (f == -ENOENT && n == 0));
        CHECK_EQ(braid_joinset_free(js), 0);
    }

    /* join_all. */
    braid_call calls[3] = { { sleeper, (void *)1, NULL }, { sleeper, (void *)2, NULL },
                            { sleeper, (void *)3, NULL } };
    rc = (int)CHECK_RC(braid_join_all(calls, 3));
    if (strict)
        CHECK_EQ(rc, 0);

    /* oneshot. */
    braid_oneshot *os;
    if (CHECK_RC(braid_oneshot_new(&os, sizeof(int))) == 0) {
        int v = 7, w = 0;
        CHECK_EQ(braid_oneshot_send(os, &v), 0);
        CHECK_EQ(braid_oneshot_recv(os, &w), 0);
        CHECK_EQ(w, 7);
    }

    /* An unbounded channel that has to grow. */
    braid_chan *ch;
    if (CHECK_RC(braid_chan_new(&ch, sizeof(int), BRAID_CHAN_UNBOUNDED)) == 0) {
        int sent = 0;
        for (int i = 0; i < 200; i++) {
            rc = (int)CHECK_RC(braid_chan_send(ch, &i));
            CHECK(rc == 0 || rc == -ENOMEM);
            sent += rc == 0;
        }
        int v, got = 0;
        while (CHECK_RC(braid_chan_try_recv(ch, &v)) == 0)
            got++;
        CHECK_EQ(got, sent);
        free_chan(ch);
    }

    /* notify and tokens. */
    braid_notify *nt;
    if (CHECK_RC(braid_notify_new(&nt)) == 0) {
        CHECK_EQ(braid_notify_one(nt), 0);
        CHECK_EQ(braid_notify_wait(nt), 0);
        CHECK_EQ(braid_notify_free(nt), 0);
    }
    braid_token *parent, *child;
    if (CHECK_RC(braid_token_new(&parent, NULL)) == 0) {
        if (CHECK_RC(braid_token_new(&child, parent)) == 0) {
            CHECK_EQ(braid_token_cancel(parent), 0);
            CHECK_EQ(braid_token_wait(child), 0);
            CHECK_EQ(braid_token_free(child), 0);
        }
        CHECK_EQ(braid_token_free(parent), 0);
    }

    /* Task-locals, freed by their destructor. */
    braid_local_key key;
    if (CHECK_RC(braid_local_key_create(&key, free)) == 0) {
        braid_task lt;
        rc = (int)CHECK_RC(braid_spawn(&lt, local_user, &key));
        join_task(rc, lt, NULL);
        CHECK_EQ(braid_local_key_delete(key), 0);
    }

    /* A buffered reader over a pipe. */
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    braid_task wt;
    rc = (int)CHECK_RC(braid_spawn(&wt, line_writer, (void *)(intptr_t)p[1]));
    if (rc < 0)
        close(p[1]);
    braid_reader *r;
    if (CHECK_RC(braid_reader_new(&r, p[0], 0)) == 0) {
        const char *line;
        int lines = 0;
        while (CHECK_RC(braid_reader_line(r, &line)) > 0)
            lines++;
        if (strict)
            CHECK_EQ(lines, 2);
        braid_reader_free(r);
    }
    join_task(rc, wt, NULL);
    CHECK_RC(braid_close(p[0]));

    /* Files and name resolution on the blocking pool. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/braid-faultinj-%d", (int)getpid());
    if (CHECK_RC(braid_file_write_all(path, "data", 4)) == 0) {
        void *data;
        size_t len;
        if (CHECK_RC(braid_file_read_all(path, &data, &len)) == 0) {
            CHECK_EQ(len, 4);
            free(data);
        }
    }
    unlink(path);
    struct addrinfo *res;
    if (CHECK_RC(braid_resolve("127.0.0.1", "80", NULL, &res)) == 0)
        freeaddrinfo(res);
}

static void *root(void *arg)
{
    (void)arg;
    /* Sleepers. */
    braid_task sl[4];
    int sl_rc[4];
    for (int i = 0; i < 4; i++) {
        sl_rc[i] = (int)CHECK_RC(braid_spawn(&sl[i], sleeper, (void *)(uintptr_t)i));
        CHECK(sl_rc[i] == 0 || sl_rc[i] == -ENOMEM);
    }
    /* A channel and a mutex. */
    struct shared s = { .counter = 0 };
    CHECK_EQ(braid_mutex_init(&s.mu), 0);
    int rc = (int)CHECK_RC(braid_chan_new(&s.ch, sizeof(int), 2));
    if (rc == 0) {
        braid_task p;
        int prc = (int)CHECK_RC(braid_spawn(&p, producer, &s));
        if (prc == 0) {
            int v, got = 0;
            while (CHECK_RC(braid_chan_recv(s.ch, &v)) == 0)
                CHECK_EQ(v, got++);
            atomic_store(&received, got);
            join_task(prc, p, NULL);
        }
        free_chan(s.ch);
    } else {
        CHECK_EQ(rc, -ENOMEM);
    }
    CHECK_EQ(braid_mutex_destroy(&s.mu), 0);
    /* Blocking pool. */
    braid_task bj;
    int brc = (int)CHECK_RC(braid_spawn_blocking(&bj, blocking_job, (void *)21));
    if (brc == 0) {
        void *v = NULL;
        join_task(0, bj, &v);
        CHECK(v == NULL || (uintptr_t)v == 42);
        if (v)
            atomic_fetch_add(&blocked, 1);
    }
    /* TCP: listen, connect, accept, read, write. */
    int lfd = (int)CHECK_RC(braid_tcp_listen("127.0.0.1:0", 0));
    if (lfd >= 0) {
        char addr[64];
        CHECK_RC(braid_local_addr(lfd, addr, sizeof addr));
        braid_task srv;
        int src = (int)CHECK_RC(braid_spawn(&srv, server, (void *)(intptr_t)lfd));
        if (src == 0) {
            int c = (int)CHECK_RC(braid_tcp_connect_until(addr, braid_deadline_ms(5000)));
            if (c >= 0) {
                ssize_t n = CHECK_RC(braid_write_all(c, "hello", 5));
                char buf[8];
                if (n == 5) {
                    n = CHECK_RC(braid_read_exact_until(c, buf, 5, braid_deadline_ms(5000)));
                    /* The server's accept may have failed: then nothing comes back. */
                    if (n == 5) {
                        CHECK(memcmp(buf, "hello", 5) == 0);
                        atomic_fetch_add(&echoed, 1);
                    }
                }
                CHECK_RC(braid_close(c));
            }
            /* If connect failed, the server's accept times out. */
            join_task(src, srv, NULL);
        }
        CHECK_RC(braid_close(lfd));
    }
    for (int i = 0; i < 4; i++) {
        void *v = NULL;
        join_task(sl_rc[i], sl[i], &v);
    }
    extras();
    return NULL;
}

/* The scenario; every failure along the way must be clean. */
static void scenario(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    int rc = (int)CHECK_RC(braid_runtime_new(&cfg, &rt));
    if (rc < 0) {
        CHECK(rc == -ENOMEM || rc == -EAGAIN || rc == -EMFILE);
        CHECK(rt == NULL);
        return;
    }
    void *result;
    rc = (int)CHECK_RC(braid_block_on(rt, root, NULL, &result));
    CHECK(rc == BRAID_OK || rc == -ENOMEM || rc == BRAID_PANICKED);
    if (strict) {
        CHECK_EQ(rc, BRAID_OK);
        CHECK_EQ(atomic_load(&echoed), 1);
        CHECK_EQ(atomic_load(&received), 8);
        CHECK_EQ(atomic_load(&blocked), 1);
    }
    /* The runtime stays usable: a second root task after the failure. */
    rc = (int)CHECK_RC(braid_block_on(rt, sleeper, (void *)5, &result));
    CHECK(rc == BRAID_OK || rc == -ENOMEM || rc == BRAID_PANICKED);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static const char *const site_names[BRAID__FAULT_NSITES] = {
    [BRAID__FAULT_ALLOC] = "alloc",   [BRAID__FAULT_MMAP] = "mmap",
    [BRAID__FAULT_THREAD] = "thread", [BRAID__FAULT_POLL] = "epoll/eventfd",
    [BRAID__FAULT_ACCEPT] = "accept",
};

/* Run the scenario in a child with the nth call of site failing (n == 0:
 * none).  Returns the child's wait status; *calls receives the number of
 * calls the site saw, *fired whether the failure happened. */
static int run_child(enum braid__fault_site site, unsigned long n, unsigned long *calls,
                     bool *fired)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(30); /* a hang is a failure, reported as SIGALRM */
        braid__fault_arm(site, n);
        strict = n == 0;
        scenario();
        unsigned long report[2] = { braid__fault_calls(site), braid__fault_fired() };
        braid__fault_arm(site, 0);
        if (write(fds[1], report, sizeof report) != sizeof report)
            _exit(3);
        close(fds[1]);
        exit(0); /* exit, not _exit: LSan checks for leaks at exit */
    }
    close(fds[1]);
    unsigned long report[2] = { 0, 0 };
    ssize_t got = read(fds[0], report, sizeof report);
    close(fds[0]);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (got == sizeof report) {
        *calls = report[0];
        *fired = report[1] != 0;
    }
    return status;
}

static void describe(int status, char *buf, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (hung)" : "");
    else
        snprintf(buf, n, "exit %d (a failed check or an LSan leak report: see above)",
                 WEXITSTATUS(status));
}

/* Most cases per site, so that the whole test stays within about a minute. */
static unsigned long sweep_cap(void)
{
    const char *v = getenv("BRAID_FAULTINJ_CAP");
    return v ? strtoul(v, NULL, 10) : 400;
}

static void sweep(enum braid__fault_site site)
{
    unsigned long calls = 0;
    bool fired = false;
    char why[64];
    int st = run_child(site, 0, &calls, &fired);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        describe(st, why, sizeof why);
        TEST_FAIL("%s: the scenario without injected faults failed: %s", site_names[site], why);
    }
    /* Calls vary a little from run to run (threads race): sweep some more. */
    unsigned long last = calls + calls / 4 + 2, cap = sweep_cap();
    if (last > cap) last = cap;
    unsigned long ran = 0, fired_count = 0, failed = 0;
    for (unsigned long n = 1; n <= last; n++) {
        unsigned long c = 0;
        bool f = false;
        st = run_child(site, n, &c, &f);
        ran++;
        fired_count += f;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            describe(st, why, sizeof why);
            fprintf(stderr, "FAULT %s call %lu of %lu: %s\n", site_names[site], n, calls, why);
            failed++;
        }
    }
    printf("%s: %lu calls in the scenario, %lu cases run, %lu fired, %lu failed\n",
           site_names[site], calls, ran, fired_count, failed);
    fflush(stdout);
    CHECK_EQ(failed, 0);
    CHECK(calls == 0 || fired_count > 0);
}

TEST(sweep_alloc) { sweep(BRAID__FAULT_ALLOC); }
TEST(sweep_mmap) { sweep(BRAID__FAULT_MMAP); }
TEST(sweep_thread) { sweep(BRAID__FAULT_THREAD); }
TEST(sweep_poll) { sweep(BRAID__FAULT_POLL); }
TEST(sweep_accept) { sweep(BRAID__FAULT_ACCEPT); }
