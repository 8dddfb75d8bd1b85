/* Servers under stress: 10,000 concurrent connections, peers vanishing
 * mid-request, slowloris clients, descriptor exhaustion, garbage.  All on
 * 127.0.0.1.  The clients of the connection-count tests run in a child
 * process (this same binary, see child_main), so that client and server
 * each stay within the descriptor limit. */
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Raise the soft descriptor limit to at least want (within the hard one). */
static bool raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return false;
    if (rl.rlim_cur >= want)
        return true;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        return false;
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* ---- the client process -------------------------------------------------- */

static const char *child_addr;
static bool child_hold;
static braid_barrier child_barrier;
static atomic_int child_failures;

/* Connect and do one echo round (so the server has accepted us), then,
 * if child_hold, keep the connection until every client has got that far. */
static void *child_client(void *arg)
{
    (void)arg;
    int fd = braid_tcp_connect_until(child_addr, braid_deadline_ms(60000));
    char buf[6];
    if (fd < 0 || braid_write_all(fd, "hello\n", 6) != 6 || braid_read_exact(fd, buf, 6) != 6 ||
        memcmp(buf, "hello\n", 6))
        atomic_fetch_add(&child_failures, 1);
    if (child_hold)
        braid_barrier_wait(&child_barrier);
    if (fd >= 0)
        braid_close(fd);
    return NULL;
}

static void *child_root(void *arg)
{
    long n = (long)(intptr_t)arg;
    braid_task *t = calloc((size_t)n, sizeof *t);
    if (!t || braid_barrier_init(&child_barrier, (unsigned)n) < 0)
        return (void *)1;
    for (long i = 0; i < n; i++)
        if (braid_spawn(&t[i], child_client, NULL) < 0)
            return (void *)1;
    for (long i = 0; i < n; i++)
        braid_join(t[i], NULL);
    braid_barrier_destroy(&child_barrier);
    free(t);
    return (void *)(intptr_t)atomic_load(&child_failures);
}

/* BRAID_TEST_CLIENTS="N HOLD ADDR": be the client process and exit. */
__attribute__((constructor)) static void child_main(void)
{
    const char *spec = getenv("BRAID_TEST_CLIENTS");
    if (!spec)
        return;
    char *end;
    long n = strtol(spec, &end, 10);
    child_hold = strtol(end, &end, 10) != 0;
    child_addr = end + 1;
    raise_nofile((rlim_t)n + 64);
    void *failures = test_run(2, child_root, (void *)(intptr_t)n);
    _exit(failures ? 1 : 0);
}

#define PIDFD_NONE (-2)

/* Start the client process for n connections to addr (see
 * child_client); its pidfd (readable when it exits), PIDFD_NONE if the kernel (or valgrind) has none, or -1. */
static int spawn_clients(long n, bool hold, const char *addr, pid_t *pid)
{
    test_need_exec();
    char spec[96];
    snprintf(spec, sizeof spec, "BRAID_TEST_CLIENTS=%ld %d %s", n, hold, addr);
    char *env[] = { spec, NULL };
    char self[PATH_MAX + 32];
    test_sibling("test_net_robust", self, sizeof self);
    char *argv[] = { self, "--list", NULL };
    struct test_cmd c;
    char **run = test_runner_argv(&c, argv);
    *pid = fork();
    if (*pid == 0) {
        execvpe(run[0], run, env);
        _exit(127);
    }
    if (*pid < 0)
        return -1;
    int pfd = (int)syscall(SYS_pidfd_open, *pid, 0);
    if (pfd >= 0)
        fcntl(pfd, F_SETFL, O_NONBLOCK);
    return pfd < 0 && errno == ENOSYS ? PIDFD_NONE : pfd;
}

/* Wait (as a task) for the client process; its exit status or -1. */
static int reap_clients(int pidfd, pid_t pid, uint64_t deadline_ns)
{
    int rc = 0;
    if (pidfd == PIDFD_NONE) { /* no pidfd_open (valgrind): look every ms */
        siginfo_t si = { 0 };
        while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && !si.si_pid &&
               rc == 0)
            rc = braid_now_ns() < deadline_ns ? braid_sleep_ms(1) : -ETIMEDOUT;
    } else {
        rc = braid_wait_fd(pidfd, BRAID_READABLE, deadline_ns);
        braid_close(pidfd);
    }
    if (rc < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* ---- an echo server that counts its connections ----------------------------- */

static int srv_fd;
static atomic_int srv_live, srv_peak, srv_served, srv_emfile;
static uint64_t srv_idle_ms; /* 0: no idle deadline */
static atomic_bool srv_hold; /* connections stay open until accept fails */

static void *srv_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int live = atomic_fetch_add(&srv_live, 1) + 1, peak = atomic_load(&srv_peak);
    while (live > peak && !atomic_compare_exchange_weak(&srv_peak, &peak, live))
        ;
    braid_reader *r;
    if (braid_reader_new(&r, fd, 256) == 0) {
        const char *line;
        ssize_t n;
        for (;;) {
            uint64_t d = srv_idle_ms ? braid_deadline_ms(srv_idle_ms) : BRAID_FOREVER;
            n = braid_reader_line_until(r, &line, d);
            if (n <= 0 || line[n - 1] != '\n' || braid_write_all(fd, line, (size_t)n) != n)
                break;
            atomic_fetch_add(&srv_served, 1);
        }
        braid_reader_free(r);
    }
    /* Polled, but on the event itself: the acceptor has met the limit. */
    for (int i = 0; atomic_load(&srv_hold) && !atomic_load(&srv_emfile) && i < 60000; i++)
        braid_sleep_ms(1);
    atomic_fetch_sub(&srv_live, 1);
    braid_close(fd);
    return NULL;
}

static void *srv_accept(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = braid_accept(srv_fd, NULL, NULL);
        if (fd == -EMFILE || fd == -ENFILE) {
            /* Back off: connections must end before accepting can work. */
            atomic_fetch_add(&srv_emfile, 1);
            braid_sleep_ms(20);
            continue;
        }
        if (fd < 0)
            return NULL;
        braid_task t;
        if (braid_spawn(&t, srv_conn, (void *)(intptr_t)fd) == 0)
            braid_detach(t);
        else
            braid_close(fd);
    }
}

/* Listen on a fresh port (its address in addr); srv_serve accepts. */
static void srv_listen(char *addr, size_t n)
{
    srv_fd = braid_tcp_listen("127.0.0.1:0", 4096);
    CHECK(srv_fd >= 0);
    CHECK(braid_local_addr(srv_fd, addr, n) > 0);
}

static braid_task srv_serve(void)
{
    braid_task t;
    CHECK_EQ(braid_spawn(&t, srv_accept, NULL), 0);
    return t;
}

static braid_task srv_start(char *addr, size_t n)
{
    srv_listen(addr, n);
    return srv_serve();
}

/* Stop accepting and wait until every connection task has ended. */
static void srv_stop(braid_task acceptor)
{
    CHECK_EQ(braid_close(srv_fd), 0);
    CHECK_EQ(braid_join(acceptor, NULL), BRAID_OK);
    uint64_t give_up = test_now_ms() + 60000;
    while (atomic_load(&srv_live) > 0 && test_now_ms() < give_up)
        braid_sleep_ms(1);
    CHECK_EQ(atomic_load(&srv_live), 0);
}

/* ---- 10,000 concurrent connections ------------------------------------------- */

static void *many_root(void *arg)
{
    long n = (long)(intptr_t)arg;
    char addr[64];
    braid_task acc = srv_start(addr, sizeof addr);
    pid_t pid;
    int pfd = spawn_clients(n, true, addr, &pid);
    CHECK(pfd != -1);
    CHECK_EQ(reap_clients(pfd, pid, braid_deadline_ms(240000)), 0);
    srv_stop(acc);
    CHECK_EQ(atomic_load(&srv_peak), n); /* all were open at once */
    CHECK_EQ(atomic_load(&srv_served), n);
    return NULL;
}

TEST(ten_thousand_concurrent_connections)
{
    long n = test_scale(10000);
    if (!raise_nofile((rlim_t)n + 64))
        SKIP("the descriptor limit's hard maximum is below 10,064");
    test_run(2, many_root, (void *)(intptr_t)n);
}

/* ---- descriptor exhaustion: -EMFILE, back off, recover ------------------------- */

static void *emfile_root(void *arg)
{
    (void)arg;
    char addr[64];
    /* The connections the server can hold stay open until accept meets the
     * limit: otherwise a server quick enough never holds enough at once. */
    atomic_store(&srv_hold, true);
    srv_listen(addr, sizeof addr);
    /* Leave room for about 4 accepted connections. */
    int probe = dup(0);
    CHECK(probe >= 0);
    close(probe);
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t old = rl.rlim_cur;
    pid_t pid;
    int pfd = spawn_clients(40, false, addr, &pid); /* before lowering: it needs a pidfd */
    CHECK(pfd != -1);
    rl.rlim_cur = (rlim_t)probe + 5;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    /* Only now: clients that came early wait in the backlog. */
    braid_task acc = srv_serve();
    uint64_t t0 = test_now_ms();
    int status = reap_clients(pfd, pid, braid_deadline_ms(120000));
    uint64_t ms = test_now_ms() - t0;
    rl.rlim_cur = old;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    CHECK_EQ(status, 0); /* every client was served in the end */
    srv_stop(acc);
    CHECK(atomic_load(&srv_emfile) > 0);
    /* Backing off 20 ms per failure: no busy loop. */
    CHECK(atomic_load(&srv_emfile) <= (int)(ms / 20) + 2);
    CHECK_EQ(atomic_load(&srv_served), 40);
    atomic_store(&srv_hold, false);
    return NULL;
}

TEST(descriptor_exhaustion_backs_off_and_recovers)
{
    if (test_under_valgrind()) /* it emulates the limit: accepted sockets are dropped */
        SKIP("valgrind emulates RLIMIT_NOFILE");
    test_run(2, emfile_root, NULL);
}

/* ---- peers that vanish, stall or send garbage ----------------------------------- */

static void *rude_root(void *arg)
{
    (void)arg;
    char addr[64];
    srv_idle_ms = 200;
    braid_task acc = srv_start(addr, sizeof addr);
    /* Half a request, then gone. */
    for (int i = 0; i < 50; i++) {
        int fd = braid_tcp_connect(addr);
        CHECK(fd >= 0);
        CHECK_EQ(braid_write_all(fd, "half a li", 9), 9);
        CHECK_EQ(braid_close(fd), 0);
    }
    /* Gone with data unread: the server's write may fail, nothing else. */
    for (int i = 0; i < 50; i++) {
        int fd = braid_tcp_connect(addr);
        CHECK(fd >= 0);
        CHECK_EQ(braid_write_all(fd, "line\nline\nline\n", 15), 15);
        struct linger lg = { 1, 0 }; /* close with a reset */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        CHECK_EQ(braid_close(fd), 0);
    }
    /* Slowloris: a byte, then silence; the idle deadline drops it. */
    int slow = braid_tcp_connect(addr);
    CHECK(slow >= 0);
    CHECK_EQ(braid_write_all(slow, "G", 1), 1);
    char c;
    uint64_t t0 = test_now_ms();
    CHECK_EQ(braid_read_until(slow, &c, 1, braid_deadline_ms(30000)), 0); /* server closed */
    CHECK(test_now_ms() - t0 >= 150);
    braid_close(slow);
    /* Garbage: a line longer than the server's buffer. */
    int g = braid_tcp_connect(addr);
    CHECK(g >= 0);
    char junk[1024];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 131 + 7) == '\n' ? 'x' : (char)(i * 131 + 7);
    ssize_t w = braid_write_all(g, junk, sizeof junk);
    CHECK(w == (ssize_t)sizeof junk || w == -EPIPE || w == -ECONNRESET);
    ssize_t r = braid_read_until(g, &c, 1, braid_deadline_ms(30000));
    CHECK(r == 0 || r == -ECONNRESET);
    braid_close(g);
    /* And the server still works. */
    int ok = braid_tcp_connect(addr);
    char buf[3];
    CHECK_EQ(braid_write_all(ok, "ok\n", 3), 3);
    CHECK_EQ(braid_read_exact(ok, buf, 3), 3);
    braid_close(ok);
    srv_stop(acc);
    return NULL;
}

TEST(vanishing_stalling_and_garbage_peers)
{
    test_run(2, rude_root, NULL);
}
