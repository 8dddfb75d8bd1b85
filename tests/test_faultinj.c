/*
 * Fault injection (issue 6, part 4): built only against
 * libbraid-faultinj.a, where every allocation, mapping, thread creation and
 * new descriptor (epoll, eventfd, socket, pipe, accept) goes through a
 * fault site (src/util.h).  For each site, a scenario first runs
 * untouched to count the site's calls, then once for every N, in a forked
 * child, with the Nth call of the site failing.  Every braid call must
 * return its result or one of the errors it documents that such a failure
 * can explain, the child must neither crash, hang nor abort, and LSan must
 * find no leak when it exits.
 *
 * The scenario, in four runtimes:
 *  - two workers: sleeps, a channel and a mutex, joins, blocking-pool work,
 *    a TCP echo, spawn options, a JoinSet, join_all, a oneshot, a growing
 *    unbounded channel, notify, tokens, task-locals, a buffered reader,
 *    files, name resolution, select, a semaphore, a broadcast channel,
 *    signals, and a dump that names the test's static functions from the
 *    executable's symbol table; then a second root task (the runtime
 *    stays usable);
 *  - two workers with migration (where it exists: x86-64): a TCP echo and
 *    a channel between tasks on different workers;
 *  - deterministic mode, with more never-started tasks than its chooser
 *    holds at first;
 *  - the live console and a trace: a client asks for a snapshot, and the
 *    trace file is written when the runtime is freed.
 */
#include "test.h"
#include "util.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* A braid call's result: non-negative, or one of the errors listed (as
 * negative values); anything else fails the test. */
#define CHECK_RC(expr, ...) \
    check_rc(__FILE__, __LINE__, #expr, (long long)(expr), (const int[]){ __VA_ARGS__, 0 })

static long long check_rc(const char *file, int line, const char *what, long long r,
                          const int *allowed)
{
    if (r >= 0)
        return r;
    for (; *allowed; allowed++)
        if (r == *allowed)
            return r;
    fprintf(stderr, "%s:%d: %s returned %lld (%s), not one of its documented errors\n", file,
            line, what, r, r >= -4095 ? braid_strerror((int)r) : "not an errno");
    fflush(stderr);
    _exit(1);
}

/* What an injected failure makes of runtime_new (POLL and FD: EMFILE). */
#define RT_ERRORS -ENOMEM, -EAGAIN, -EMFILE
/* A call on a socket whose peer may have given up after a failure of its
 * own, or that may fail to register with epoll. */
#define IO_ERRORS -ENOMEM, -ECONNRESET, -EPIPE

static void *sleeper(void *arg)
{
    CHECK_RC(braid_sleep_ms(1), -ECANCELED); /* a JoinSet's free cancels it */
    return arg;
}

/* No fault armed: everything must succeed (the scenario really ran). */
static bool strict;
/* What the scenario did, checked when strict. */
static atomic_int echoed, received, blocked, signalled, dumped, broadcast_seen, det_ran,
    snapshot_ok, migrated_pongs;

/* ---- a channel and a mutex ---- */

struct shared {
    braid_mutex mu;
    long counter;
    braid_chan *ch;
};

static void *producer(void *arg)
{
    struct shared *s = arg;
    for (int i = 0; i < 8; i++) {
        if (CHECK_RC(braid_chan_send(s->ch, &i), -ENOMEM) < 0)
            break;
        CHECK_EQ(braid_mutex_lock(&s->mu), 0);
        s->counter++;
        CHECK_EQ(braid_mutex_unlock(&s->mu), 0);
    }
    CHECK_EQ(braid_chan_close(s->ch), 0);
    return NULL;
}

static void producer_drop(void *arg)
{
    struct shared *s = arg;
    CHECK_EQ(braid_chan_close(s->ch), 0);
}

static void *blocking_job(void *arg)
{
    usleep(1000);
    return (void *)((uintptr_t)arg * 2);
}

static void free_chan(braid_chan *ch)
{
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* Spawn fn(arg) with an arg_drop, which runs instead of fn if the task
 * gets no stack: it must release whatever the others wait for. */
static int spawn_dropping(braid_task *t, braid_fn fn, void *arg, void (*drop)(void *))
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = drop;
    return (int)CHECK_RC(braid_spawn_ex(t, &o, fn, arg), -ENOMEM);
}

/* Join t (if spawned, that is spawn_rc == 0) and check its fate; a task
 * that could not get a stack, or a blocking job no thread could take,
 * panics with a message saying so. */
static void join_task(int spawn_rc, braid_task t, void **value)
{
    if (value)
        *value = NULL;
    if (spawn_rc != 0)
        return;
    braid_outcome o = BRAID_OUTCOME_INIT;
    int f = braid_join_ex(t, &o);
    CHECK(f == BRAID_OK || f == BRAID_PANICKED);
    if (f == BRAID_PANICKED && !strstr(o.message, "stack") && !strstr(o.message, "memory") &&
        !strstr(o.message, "thread"))
        TEST_FAIL("unexpected panic: %s", o.message);
    if (value)
        *value = f == BRAID_OK ? o.value : NULL;
}

/* ---- TCP: listen, connect, accept, read, write ---- */

/* Owns the listener: closing it resets a connection still in its backlog,
 * so that the client learns at once that nobody will answer. */
static void *server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int c = (int)CHECK_RC(braid_accept_until(lfd, NULL, NULL, braid_deadline_ms(5000)), -EMFILE,
                          -ENOMEM, -ECANCELED);
    if (c == -EMFILE) /* the listener stays usable: try again */
        c = (int)CHECK_RC(braid_accept_until(lfd, NULL, NULL, braid_deadline_ms(5000)), -ENOMEM,
                          -ECANCELED);
    CHECK_EQ(braid_close(lfd), 0);
    if (c < 0)
        return NULL;
    char buf[16];
    /* -ECANCELED: the client's connect failed after the kernel had made the
     * connection, and tcp_echo cancels the server. */
    ssize_t n = CHECK_RC(braid_read_exact(c, buf, 5), IO_ERRORS, -ECANCELED);
    if (n == 5)
        CHECK_RC(braid_write_all(c, buf, 5), IO_ERRORS, -ECANCELED);
    CHECK_EQ(braid_close(c), 0);
    return NULL;
}

static void close_fd(void *arg)
{
    CHECK_EQ(braid_close((int)(intptr_t)arg), 0);
}

/* An echo through a listener and a connection of this runtime; returns
 * whether the bytes came back. */
static bool tcp_echo(void)
{
    int lfd = (int)CHECK_RC(braid_tcp_listen("127.0.0.1:0", 0), -EMFILE, -ENOMEM);
    if (lfd < 0)
        return false;
    char addr[64];
    CHECK(braid_local_addr(lfd, addr, sizeof addr) > 0);
    braid_task srv;
    int src = spawn_dropping(&srv, server, (void *)(intptr_t)lfd, close_fd);
    if (src < 0) {
        CHECK_EQ(braid_close(lfd), 0);
        return false;
    }
    bool ok = false;
    /* The server's accept may fail first, and it closes the listener:
     * -ECONNREFUSED, or -ECONNRESET if the connection was already queued. */
    int c = (int)CHECK_RC(braid_tcp_connect_until(addr, braid_deadline_ms(5000)), -EMFILE,
                          -ENOMEM, -ECONNREFUSED, -ECONNRESET);
    if (c >= 0) {
        ssize_t n = CHECK_RC(braid_write_all(c, "hello", 5), IO_ERRORS);
        char buf[8];
        if (n == 5) {
            /* 0 or -ECONNRESET: the server's accept failed. */
            n = CHECK_RC(braid_read_exact_until(c, buf, 5, braid_deadline_ms(5000)), IO_ERRORS);
            ok = n == 5 && memcmp(buf, "hello", 5) == 0;
        }
        CHECK_EQ(braid_close(c), 0);
        join_task(src, srv, NULL);
    } else {
        CHECK_EQ(braid_cancel(srv), 0); /* nobody will connect */
        int f = braid_join(srv, NULL);
        /* OK: the server had ended already, its own accept having failed. */
        CHECK(f == BRAID_OK || f == BRAID_CANCELLED || f == BRAID_PANICKED);
    }
    return ok;
}

/* ---- more of the API ---- */

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
    if (CHECK_RC(braid_local_set(*key, v), -ENOMEM) < 0)
        free(v);
    return NULL;
}

static void *line_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    CHECK_RC(braid_write_all(fd, "one\ntwo\n", 8), -ENOMEM);
    CHECK_EQ(braid_close(fd), 0);
    return NULL;
}

/* Spawn options, JoinSet, join_all, oneshot, an unbounded channel that
 * grows, notify, tokens, task-locals, a buffered reader, files and name
 * resolution on the blocking pool. */
static void extras(void)
{
    /* spawn_ex with a name and an arg_drop. */
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "owner";
    o.arg_drop = free;
    void *a = malloc(32);
    CHECK(a != NULL);
    braid_task t;
    int rc = (int)CHECK_RC(braid_spawn_ex(&t, &o, owns_arg, a), -ENOMEM);
    if (rc < 0)
        free(a); /* not spawned: still ours */
    join_task(rc, t, NULL);

    /* JoinSet: tasks and blocking work. */
    braid_joinset *js;
    if (CHECK_RC(braid_joinset_new(&js), -ENOMEM) == 0) {
        int n = 0;
        for (int i = 0; i < 3; i++)
            n += CHECK_RC(braid_joinset_spawn(js, NULL, sleeper, (void *)(uintptr_t)i, NULL),
                          -ENOMEM) == 0;
        n += CHECK_RC(braid_joinset_spawn_blocking(js, NULL, blocking_job, (void *)1, NULL),
                      -ENOMEM) == 0;
        braid_outcome out = BRAID_OUTCOME_INIT;
        int f = (int)CHECK_RC(braid_joinset_join_next(js, &out, NULL), -ENOENT);
        CHECK(f >= 0 || n == 0);
        CHECK_EQ(braid_joinset_free(js), 0);
    }

    /* join_all. */
    braid_call calls[3] = { { sleeper, (void *)1, NULL }, { sleeper, (void *)2, NULL },
                            { sleeper, (void *)3, NULL } };
    rc = (int)CHECK_RC(braid_join_all(calls, 3), -ENOMEM);
    if (strict)
        CHECK_EQ(rc, 0);

    /* oneshot. */
    braid_oneshot *os;
    if (CHECK_RC(braid_oneshot_new(&os, sizeof(int)), -ENOMEM) == 0) {
        int v = 7, w = 0;
        CHECK_EQ(braid_oneshot_send(os, &v), 0);
        CHECK_EQ(braid_oneshot_recv(os, &w), 0);
        CHECK_EQ(w, 7);
    }

    /* An unbounded channel that has to grow. */
    braid_chan *ch;
    if (CHECK_RC(braid_chan_new(&ch, sizeof(int), BRAID_CHAN_UNBOUNDED), -ENOMEM) == 0) {
        int sent = 0;
        for (int i = 0; i < 200; i++)
            sent += CHECK_RC(braid_chan_send(ch, &i), -ENOMEM) == 0;
        int v, got = 0;
        while (CHECK_RC(braid_chan_try_recv(ch, &v), -EAGAIN) == 0)
            got++;
        CHECK_EQ(got, sent);
        free_chan(ch);
    }

    /* notify and tokens. */
    braid_notify *nt;
    if (CHECK_RC(braid_notify_new(&nt), -ENOMEM) == 0) {
        CHECK_EQ(braid_notify_one(nt), 0);
        CHECK_EQ(braid_notify_wait(nt), 0);
        CHECK_EQ(braid_notify_free(nt), 0);
    }
    braid_token *parent, *child;
    if (CHECK_RC(braid_token_new(&parent, NULL), -ENOMEM) == 0) {
        if (CHECK_RC(braid_token_new(&child, parent), -ENOMEM) == 0) {
            CHECK_EQ(braid_token_cancel(parent), 0);
            CHECK_EQ(braid_token_wait(child), 0);
            CHECK_EQ(braid_token_free(child), 0);
        }
        CHECK_EQ(braid_token_free(parent), 0);
    }

    /* Task-locals, freed by their destructor. */
    braid_local_key key;
    CHECK_EQ(braid_local_key_create(&key, free), 0);
    braid_task lt;
    rc = (int)CHECK_RC(braid_spawn(&lt, local_user, &key), -ENOMEM);
    join_task(rc, lt, NULL);
    CHECK_EQ(braid_local_key_delete(key), 0);

    /* A buffered reader over a pipe. */
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    braid_task wt;
    rc = spawn_dropping(&wt, line_writer, (void *)(intptr_t)p[1], close_fd);
    if (rc < 0)
        close(p[1]);
    braid_reader *r;
    if (CHECK_RC(braid_reader_new(&r, p[0], 0), -ENOMEM) == 0) {
        const char *line;
        int lines = 0;
        while (CHECK_RC(braid_reader_line(r, &line), -ENOMEM) > 0)
            lines++;
        if (strict)
            CHECK_EQ(lines, 2);
        braid_reader_free(r);
    }
    join_task(rc, wt, NULL);
    CHECK_EQ(braid_close(p[0]), 0);

    /* Files and name resolution on the blocking pool (-EAGAIN: no pool
     * thread could be created). */
    char path[64];
    snprintf(path, sizeof path, "/tmp/braid-faultinj-%d", (int)getpid());
    if (CHECK_RC(braid_file_write_all(path, "data", 4), -ENOMEM, -EAGAIN) == 0) {
        void *data;
        size_t len;
        if (CHECK_RC(braid_file_read_all(path, &data, &len), -ENOMEM, -EAGAIN) == 0) {
            CHECK_EQ(len, 4);
            free(data);
        }
    }
    unlink(path);
    struct addrinfo *res;
    if (CHECK_RC(braid_resolve("127.0.0.1", "80", NULL, &res), -ENOMEM, -EAGAIN) == 0)
        freeaddrinfo(res);
}

/* ---- select, semaphore, broadcast, signals, a dump ---- */

static braid_sem sem;
static atomic_int in_sem;

static void *sem_user(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_sem_acquire(&sem, 1), 0);
        CHECK(atomic_fetch_add(&in_sem, 1) == 0);
        CHECK_EQ(braid_yield(), 0);
        atomic_fetch_sub(&in_sem, 1);
        CHECK_EQ(braid_sem_release(&sem, 1), 0);
    }
    return NULL;
}

static void select_and_sem(void)
{
    braid_chan *c[2];
    if (CHECK_RC(braid_chan_new(&c[0], sizeof(int), 1), -ENOMEM) < 0)
        return;
    if (CHECK_RC(braid_chan_new(&c[1], sizeof(int), 1), -ENOMEM) < 0) {
        free_chan(c[0]);
        return;
    }
    int v = 1, in = 0;
    /* A buffer is allocated at a channel's first send, a select's too: the
     * biased select sends first, and without memory must fail as a whole
     * (a completed case's result is 0 or -EPIPE). */
    if (CHECK_RC(braid_chan_send(c[0], &v), -ENOMEM) == 0) {
        braid_select_case cs[2] = { { c[1], BRAID_SELECT_SEND, &v, 0 },
                                    { c[0], BRAID_SELECT_RECV, &in, 0 } };
        int rc = (int)CHECK_RC(
            braid_select(cs, 2, braid_deadline_ms(1000), BRAID_SELECT_BIASED), -ENOMEM);
        CHECK(rc < 0 || (rc == 0 && cs[0].result == 0));
    }
    /* Now the one that was taken is not ready any more: drain both and
     * wait on two empty receives until the deadline. */
    CHECK_RC(braid_chan_try_recv(c[0], &in), -EAGAIN);
    CHECK_RC(braid_chan_try_recv(c[1], &in), -EAGAIN);
    braid_select_case idle[2] = { { c[0], BRAID_SELECT_RECV, &in, 0 },
                                  { c[1], BRAID_SELECT_RECV, &in, 0 } };
    CHECK_RC(braid_select(idle, 2, braid_deadline_ms(2), 0), -ETIMEDOUT, -ENOMEM);
    free_chan(c[0]);
    free_chan(c[1]);

    CHECK_EQ(braid_sem_init(&sem, 1), 0);
    braid_task t[2];
    int trc[2];
    for (int i = 0; i < 2; i++)
        trc[i] = (int)CHECK_RC(braid_spawn(&t[i], sem_user, NULL), -ENOMEM);
    for (int i = 0; i < 2; i++)
        join_task(trc[i], t[i], NULL);
    CHECK_EQ(braid_sem_available(&sem), 1);
    CHECK_EQ(braid_sem_destroy(&sem), 0);
}

static void *bcast_reader(void *arg)
{
    braid_bcast_rx *rx = arg;
    int v, seen = 0;
    for (;;) {
        int rc = (int)CHECK_RC(braid_bcast_recv_until(rx, &v, NULL, braid_deadline_ms(5000)),
                               -EPIPE);
        if (rc < 0)
            break;
        CHECK_EQ(v, seen++);
    }
    return (void *)(intptr_t)seen;
}

static void broadcast(void)
{
    braid_bcast *b;
    if (CHECK_RC(braid_bcast_new(&b, sizeof(int), 4), -ENOMEM) < 0)
        return;
    braid_bcast_rx *rx[2];
    int nrx = 0;
    for (int i = 0; i < 2; i++)
        nrx += CHECK_RC(braid_bcast_subscribe(b, &rx[nrx]), -ENOMEM) == 0;
    braid_task t[2];
    int trc[2];
    for (int i = 0; i < nrx; i++)
        trc[i] = (int)CHECK_RC(braid_spawn(&t[i], bcast_reader, rx[i]), -ENOMEM);
    for (int v = 0; v < 3; v++)
        CHECK_EQ(braid_bcast_send(b, &v), nrx);
    CHECK_EQ(braid_bcast_close(b), 0);
    for (int i = 0; i < nrx; i++) {
        void *seen = NULL;
        if (trc[i] == 0)
            join_task(0, t[i], &seen);
        atomic_fetch_add(&broadcast_seen, (int)(intptr_t)seen);
        CHECK_EQ(braid_bcast_rx_free(rx[i]), 0);
    }
    CHECK_EQ(braid_bcast_free(b), 0);
}

static void *signal_waiter(void *arg)
{
    (void)arg;
    int rc = (int)CHECK_RC(braid_signal_wait_until(SIGUSR2, braid_deadline_ms(5000)), -ENOMEM,
                           -EMFILE);
    if (rc == SIGUSR2)
        atomic_fetch_add(&signalled, 1);
    return NULL;
}

static void signals(void)
{
    /* Caught first: a delivery before the waiter waits is kept for it. */
    if (CHECK_RC(braid_signal_catch(SIGUSR2), -EMFILE) < 0)
        return;
    braid_task t;
    int rc = (int)CHECK_RC(braid_spawn(&t, signal_waiter, NULL), -ENOMEM);
    CHECK_EQ(kill(getpid(), SIGUSR2), 0);
    join_task(rc, t, NULL);
}

static atomic_int dump_target_waiting;

/* A static function: a dump can only name it from the executable's
 * symbol table (braid's symbolizer), dladdr() knows no local symbol. */
static __attribute__((noinline)) void *dump_target(void *arg)
{
    atomic_store(&dump_target_waiting, 1);
    CHECK_EQ(braid_notify_wait(arg), 0);
    return NULL;
}

static void dump(void)
{
    braid_notify *nt;
    if (CHECK_RC(braid_notify_new(&nt), -ENOMEM) < 0)
        return;
    atomic_store(&dump_target_waiting, 0);
    braid_task t;
    int rc = (int)CHECK_RC(braid_spawn(&t, dump_target, nt), -ENOMEM);
    while (rc == 0 && !atomic_load(&dump_target_waiting) && !braid_is_finished(t))
        CHECK_EQ(braid_yield(), 0);
    /* The flag is set just before the wait: on the other worker the task
     * may not have parked yet, and a running task elsewhere shows no
     * frames.  Dump until it shows them (a failed allocation may keep the
     * symbolizer from naming them: then give up after a while). */
    for (int tries = 0; rc == 0 && tries < 200; tries++) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        CHECK(f != NULL);
        CHECK_EQ(braid_dump(NULL, f), 0);
        CHECK_EQ(fclose(f), 0);
        bool named = strstr(text, "dump_target+0x") != NULL;
        free(text);
        if (named) {
            atomic_fetch_add(&dumped, 1);
            break;
        }
        CHECK_RC(braid_sleep_ms(1), -ENOMEM);
    }
    CHECK_EQ(braid_notify_one(nt), 0);
    join_task(rc, t, NULL);
    CHECK_EQ(braid_notify_free(nt), 0);
}

static void *root(void *arg)
{
    (void)arg;
    /* Sleepers. */
    braid_task sl[4];
    int sl_rc[4];
    for (int i = 0; i < 4; i++)
        sl_rc[i] = (int)CHECK_RC(braid_spawn(&sl[i], sleeper, (void *)(uintptr_t)i), -ENOMEM);
    /* A channel and a mutex. */
    struct shared s = { .counter = 0 };
    CHECK_EQ(braid_mutex_init(&s.mu), 0);
    if (CHECK_RC(braid_chan_new(&s.ch, sizeof(int), 2), -ENOMEM) == 0) {
        braid_task p;
        int prc = spawn_dropping(&p, producer, &s, producer_drop);
        if (prc == 0) {
            int v, got = 0;
            while (CHECK_RC(braid_chan_recv(s.ch, &v), -EPIPE) == 0)
                CHECK_EQ(v, got++);
            atomic_store(&received, got);
            join_task(prc, p, NULL);
        }
        free_chan(s.ch);
    }
    CHECK_EQ(braid_mutex_destroy(&s.mu), 0);
    /* Blocking pool. */
    braid_task bj;
    int brc = (int)CHECK_RC(braid_spawn_blocking(&bj, blocking_job, (void *)21), -ENOMEM);
    void *v = NULL;
    join_task(brc, bj, &v);
    CHECK(v == NULL || (uintptr_t)v == 42);
    if (v)
        atomic_fetch_add(&blocked, 1);
    if (tcp_echo())
        atomic_fetch_add(&echoed, 1);
    for (int i = 0; i < 4; i++)
        join_task(sl_rc[i], sl[i], NULL);
    extras();
    select_and_sem();
    broadcast();
    signals();
    dump();
    return NULL;
}

/* ---- the runtimes ---- */

/* runtime_new with cfg; NULL after a clean failure. */
static braid_runtime *new_runtime(const braid_config *cfg)
{
    braid_runtime *rt;
    int rc = (int)CHECK_RC(braid_runtime_new(cfg, &rt), RT_ERRORS);
    if (rc < 0) {
        CHECK(rt == NULL);
        return NULL;
    }
    return rt;
}

/* block_on: the root's fate, or -ENOMEM (no record for it). */
static int run_root(braid_runtime *rt, braid_fn fn, void *arg)
{
    int rc = (int)CHECK_RC(braid_block_on(rt, fn, arg, NULL), -ENOMEM);
    CHECK(rc < 0 || rc == BRAID_OK || rc == BRAID_PANICKED);
    if (strict)
        CHECK_EQ(rc, BRAID_OK);
    return rc;
}

static void phase_main(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt = new_runtime(&cfg);
    if (!rt)
        return;
    run_root(rt, root, NULL);
    if (strict) {
        CHECK_EQ(atomic_load(&echoed), 1);
        CHECK_EQ(atomic_load(&received), 8);
        CHECK_EQ(atomic_load(&blocked), 1);
        CHECK_EQ(atomic_load(&broadcast_seen), 6);
        CHECK_EQ(atomic_load(&signalled), 1);
        CHECK_EQ(atomic_load(&dumped), 1);
    }
    /* The runtime stays usable: a second root task after the failure. */
    run_root(rt, sleeper, (void *)5);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* Migration: an echo (one epoll for the runtime) and a ping-pong between
 * two tasks, which wakes each on the other's worker. */
static void *ponger(void *arg)
{
    braid_chan **c = arg;
    int v;
    while (CHECK_RC(braid_chan_recv(c[0], &v), -EPIPE) == 0)
        if (CHECK_RC(braid_chan_send(c[1], &v), -EPIPE) < 0)
            break;
    CHECK_EQ(braid_chan_close(c[1]), 0);
    return NULL;
}

static void ponger_drop(void *arg)
{
    braid_chan **c = arg;
    CHECK_EQ(braid_chan_close(c[0]), 0);
    CHECK_EQ(braid_chan_close(c[1]), 0);
}

static void *migrate_root(void *arg)
{
    (void)arg;
    if (tcp_echo())
        atomic_fetch_add(&echoed, 1);
    braid_chan *c[2];
    if (CHECK_RC(braid_chan_new(&c[0], sizeof(int), 0), -ENOMEM) < 0)
        return NULL;
    if (CHECK_RC(braid_chan_new(&c[1], sizeof(int), 0), -ENOMEM) < 0) {
        free_chan(c[0]);
        return NULL;
    }
    braid_task t;
    int rc = spawn_dropping(&t, ponger, c, ponger_drop);
    for (int i = 0; rc == 0 && i < 20; i++) {
        int v = i;
        /* -EPIPE: the ponger got no stack. */
        if (CHECK_RC(braid_chan_send(c[0], &v), -EPIPE) < 0 ||
            CHECK_RC(braid_chan_recv(c[1], &v), -EPIPE) < 0)
            break;
        CHECK_EQ(v, i);
        atomic_fetch_add(&migrated_pongs, 1);
    }
    CHECK_EQ(braid_chan_close(c[0]), 0);
    join_task(rc, t, NULL);
    free_chan(c[0]);
    free_chan(c[1]);
    return NULL;
}

static void phase_migrate(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.migrate = true;
    braid_runtime *rt = new_runtime(&cfg);
    if (!rt)
        return;
#if defined(__x86_64__)
    CHECK(braid_runtime_migrates(rt));
#endif
    atomic_store(&echoed, 0);
    run_root(rt, migrate_root, NULL);
    if (strict) {
        CHECK_EQ(atomic_load(&echoed), 1);
        CHECK_EQ(atomic_load(&migrated_pongs), 20);
    }
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* Deterministic mode: more never-started tasks at once than the chooser
 * holds at first (64), so that it has to grow. */
static void *det_task(void *arg)
{
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_sleep_ms((uintptr_t)arg % 3), 0);
    atomic_fetch_add(&det_ran, 1);
    return NULL;
}

static void *det_root(void *arg)
{
    (void)arg;
    braid_task t[100];
    int rc[100];
    for (int i = 0; i < 100; i++)
        rc[i] = (int)CHECK_RC(braid_spawn(&t[i], det_task, (void *)(uintptr_t)i), -ENOMEM);
    for (int i = 0; i < 100; i++)
        join_task(rc[i], t[i], NULL);
    return NULL;
}

static void phase_det(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    cfg.seed = 7;
    braid_runtime *rt = new_runtime(&cfg);
    if (!rt)
        return;
    run_root(rt, det_root, NULL);
    if (strict)
        CHECK_EQ(atomic_load(&det_ran), 100);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* The console's protocol from a plain client: "snapshot\n", answered up
 * to "end\n".  The console may drop a client it cannot serve. */
static bool ask_snapshot(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    CHECK_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ(write(fd, "snapshot\n", 9), 9);
    char buf[1 << 16];
    size_t len = 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        CHECK(poll(&p, 1, 10000) == 1); /* an answer or a hang-up, soon */
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        if (len >= 4 && strcmp(buf + len - 4, "end\n") == 0)
            break;
    }
    close(fd);
    buf[len] = 0;
    return strncmp(buf, "braid-console 2\n", 16) == 0 && len >= 4 &&
           strcmp(buf + len - 4, "end\n") == 0;
}

static void phase_console_trace(void)
{
    char console[64], trace[64];
    snprintf(console, sizeof console, "/tmp/braid-faultinj-%d.sock", (int)getpid());
    snprintf(trace, sizeof trace, "/tmp/braid-faultinj-%d.json", (int)getpid());
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.console_path = console;
    cfg.trace_path = trace;
    braid_runtime *rt = new_runtime(&cfg);
    if (!rt)
        return;
    if (ask_snapshot(console))
        atomic_fetch_add(&snapshot_ok, 1);
    atomic_store(&det_ran, 0);
    run_root(rt, det_root, NULL);
    CHECK_EQ(braid_runtime_free(rt), 0);
    struct stat st;
    if (strict) {
        CHECK_EQ(atomic_load(&snapshot_ok), 1);
        CHECK_EQ(atomic_load(&det_ran), 100);
        char *json = test_read_file(trace);
        CHECK(json && strstr(json, "\"traceEvents\"") && strstr(json, "\"spawn task "));
        free(json);
        CHECK(stat(console, &st) != 0); /* the socket file is gone */
    }
    unlink(trace);
}

/* The scenario; every failure along the way must be clean. */
static void scenario(void)
{
    phase_main();
    phase_migrate();
    phase_det();
    phase_console_trace();
}

static const char *const site_names[BRAID__FAULT_NSITES] = {
    [BRAID__FAULT_ALLOC] = "alloc",   [BRAID__FAULT_MMAP] = "mmap",
    [BRAID__FAULT_THREAD] = "thread", [BRAID__FAULT_POLL] = "epoll/eventfd",
    [BRAID__FAULT_ACCEPT] = "accept", [BRAID__FAULT_FD] = "socket/pipe",
};

/* A child still running after 20 s is hung: its runtime's observer writes
 * a task dump on SIGQUIT (injection off, so that the dump can allocate),
 * and SIGALRM kills it 10 s later, reported as hung. */
static void on_hang(int sig)
{
    (void)sig;
    static const char msg[] = "test_faultinj: the child hangs; its task dump follows\n";
    (void)!write(2, msg, sizeof msg - 1);
    braid__fault_arm(BRAID__FAULT_ALLOC, 0);
    signal(SIGALRM, SIG_DFL);
    alarm(10);
    kill(getpid(), SIGQUIT);
}

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
        /* A shell's background job starts with SIGQUIT ignored, and the
         * runtime then leaves it alone: the dump needs it back. */
        signal(SIGQUIT, SIG_DFL);
        signal(SIGALRM, on_hang); /* a hang is a failure, reported as SIGALRM */
        alarm(20);
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
    return v ? strtoul(v, NULL, 10) : 1000;
}

static void sweep(enum braid__fault_site site)
{
    unsigned long calls = 0;
    bool fired = false;
    char why[96];
    uint64_t t0 = braid_now_ns();
    int st = run_child(site, 0, &calls, &fired);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        describe(st, why, sizeof why);
        TEST_FAIL("%s: the scenario without injected faults failed: %s", site_names[site], why);
    }
    /* Calls vary a little from run to run (threads race): sweep some more. */
    unsigned long last = calls + calls / 4 + 2, cap = sweep_cap();
    if (last > cap)
        last = cap;
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
    printf("%s: %lu calls in the scenario, %lu cases run, %lu fired, %lu failed, %.1f s\n",
           site_names[site], calls, ran, fired_count, failed,
           (double)(braid_now_ns() - t0) / 1e9);
    fflush(stdout);
    CHECK_EQ(failed, 0);
    CHECK(calls > 0 && fired_count > 0);
}

TEST(sweep_alloc) { sweep(BRAID__FAULT_ALLOC); }
TEST(sweep_mmap) { sweep(BRAID__FAULT_MMAP); }
TEST(sweep_thread) { sweep(BRAID__FAULT_THREAD); }
TEST(sweep_poll) { sweep(BRAID__FAULT_POLL); }
TEST(sweep_accept) { sweep(BRAID__FAULT_ACCEPT); }
TEST(sweep_fd) { sweep(BRAID__FAULT_FD); }
