/*
 * The live console: a runtime's task list and metrics served on a Unix
 * socket, for tools/braid-console (tokio-console's job).
 *
 * The server is a plain thread, not a task: the console exists to look at
 * programs whose tasks misbehave, and a runtime whose workers are all stuck
 * in a blocking call must still answer.  It sleeps in poll(2) on the
 * listening socket, its clients and an eventfd that braid_runtime_free()
 * uses to stop it, so an idle console costs nothing.
 *
 * Protocol (line-based so that `socat - UNIX:path` is a usable client):
 * the client sends "snapshot\n"; the runtime answers with tab-separated
 * records and a final "end\n":
 *
 *   braid-console 2
 *   runtime  workers=N alive=N spawned=N completed=N panicked=N ... now_ns=N
 *   worker   <index> polls=N steals=N parks=N queued=N timers=N busy_ns=N
 *   warn     <text>                  (the watchdog's reports, newest last)
 *   task     <id> <name> <state> <worker> <ns in state> <busy ns>
 *            <stack bytes touched> <spawn site>
 *   end
 *
 * busy_ns is the worker's time not parked since it started, and now_ns the
 * runtime's clock (CLOCK_MONOTONIC) when the counters were read: a client
 * derives the load over an interval from two snapshots.
 *
 * Any other line gets "error unknown request" and the connection stays
 * open.  A client that does not read its answer within a second is dropped,
 * so a stuck client cannot stall the console for others.
 */
#include "internal.h"
#include "console.h"
#include "observe.h"
#include "sched.h"
#include "util.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <time.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONSOLE_CLIENTS 16
#define CONSOLE_LINE 64
#define CONSOLE_SEND_MS 1000
#define CONSOLE_WARNINGS 8
#define CONSOLE_WARNING_LEN 192

struct console_client {
    int fd;
    size_t len;
    char line[CONSOLE_LINE];
};

struct braid__console {
    braid_runtime *rt;
    pthread_t thread;
    _Atomic uint32_t ready;         /* 1: the runtime is complete (futex) */
    int listen_fd, stop_fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool from_env;                  /* holds BRAID_CONSOLE's path */
    struct console_client clients[CONSOLE_CLIENTS];
    /* The observer's latest reports, oldest first once full. */
    pthread_mutex_t warn_lock;
    unsigned nwarn;
    char warn[CONSOLE_WARNINGS][CONSOLE_WARNING_LEN];
};

/* Write the records of one snapshot of c's runtime (everything between
 * the header line and "end"). */
static void snapshot(braid__console *c, FILE *f);

/* Only one runtime at a time serves BRAID_CONSOLE's path. */
static _Atomic bool env_path_taken;

static int open_listener(braid__console *c, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len + 1);
    memcpy(c->path, path, len + 1);
    int rc = braid__unlink_stale_socket(path);
    if (rc < 0)
        return rc;
    int fd = braid__socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* Task names and stacks are the program's business: owner only.  The
     * chmod leaves a moment in which the umask applies; a socket is not
     * readable for that, only connectable. */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, 8) < 0) {
        rc = -errno;
        close(fd);
        unlink(path);
        return rc;
    }
    c->listen_fd = fd;
    return 0;
}

static void drop_client(struct console_client *cl)
{
    close(cl->fd);
    cl->fd = -1;
    cl->len = 0;
}

/* Send all of buf, waiting at most CONSOLE_SEND_MS for the client to read. */
static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return false;
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, CONSOLE_SEND_MS) <= 0)
            return false;
    }
    return true;
}

static bool answer(braid__console *c, struct console_client *cl, const char *req)
{
    if (strcmp(req, "snapshot") != 0) {
        static const char err[] = "error unknown request\n";
        return send_all(cl->fd, err, sizeof err - 1);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return false;
    fputs("braid-console 2\n", f);
    snapshot(c, f);
    fputs("end\n", f);
    bool ok = fclose(f) == 0 && send_all(cl->fd, buf, len);
    free(buf);
    return ok;
}

/* Read what the client sent and answer each complete line. */
static void serve(braid__console *c, struct console_client *cl)
{
    ssize_t n = recv(cl->fd, cl->line + cl->len, sizeof cl->line - cl->len, MSG_DONTWAIT);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            drop_client(cl);
        return;
    }
    cl->len += (size_t)n;
    char *nl;
    while (cl->fd >= 0 && (nl = memchr(cl->line, '\n', cl->len)) != NULL) {
        *nl = '\0';
        size_t used = (size_t)(nl - cl->line) + 1;
        if (!answer(c, cl, cl->line)) {
            drop_client(cl);
            return;
        }
        memmove(cl->line, cl->line + used, cl->len - used);
        cl->len -= used;
    }
    if (cl->len == sizeof cl->line)
        drop_client(cl); /* a line no request is this long */
}

static void accept_clients(braid__console *c)
{
    for (;;) {
        /* On failure the connection waits in the backlog: the next poll
         * finds the listener readable again. */
        int fd = braid__accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        struct console_client *slot = NULL;
        for (int i = 0; i < CONSOLE_CLIENTS && !slot; i++)
            if (c->clients[i].fd < 0)
                slot = &c->clients[i];
        if (!slot) {
            close(fd); /* full: the client sees EOF and can retry */
            continue;
        }
        slot->fd = fd;
        slot->len = 0;
    }
}

static void *console_main(void *arg)
{
    braid__console *c = arg;
    pthread_setname_np(pthread_self(), "braid-console");
    /* A snapshot reads the workers, the observer and the blocking pool:
     * answer nobody before the runtime has them all. */
    while (!atomic_load_explicit(&c->ready, memory_order_acquire))
        braid__futex_wait(&c->ready, 0, 0);
    for (;;) {
        struct pollfd p[CONSOLE_CLIENTS + 2];
        p[0] = (struct pollfd){ .fd = c->stop_fd, .events = POLLIN };
        p[1] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
        for (int i = 0; i < CONSOLE_CLIENTS; i++)
            p[i + 2] = (struct pollfd){ .fd = c->clients[i].fd, .events = POLLIN };
        if (poll(p, CONSOLE_CLIENTS + 2, -1) < 0)
            continue;
        if (p[0].revents)
            return NULL;
        if (p[1].revents)
            accept_clients(c);
        for (int i = 0; i < CONSOLE_CLIENTS; i++)
            if (c->clients[i].fd >= 0 && p[i + 2].revents)
                serve(c, &c->clients[i]);
    }
}

/* Listen on path, with a server thread that answers once the runtime is
 * ready (braid__console_serve).  -ENAMETOOLONG, -EADDRINUSE (another live
 * program serves that path), -EEXIST (a file that is not a socket),
 * -ENOMEM, -EAGAIN, or the errno of socket/bind/listen/eventfd. */
static int console_open(braid_runtime *rt, const char *path, braid__console **out)
{
    braid__console *c = braid__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->rt = rt;
    c->listen_fd = -1;
    pthread_mutex_init(&c->warn_lock, NULL);
    for (int i = 0; i < CONSOLE_CLIENTS; i++)
        c->clients[i].fd = -1;
    int rc = open_listener(c, path);
    if (rc == 0) {
        c->stop_fd = braid__eventfd(0, EFD_CLOEXEC);
        rc = c->stop_fd < 0 ? -errno : 0;
    }
    if (rc == 0) {
        int e = braid__pthread_create(&c->thread, NULL, console_main, c);
        rc = !e ? 0 : e == ENOMEM ? -ENOMEM : -EAGAIN;
        if (rc < 0)
            close(c->stop_fd);
    }
    if (rc < 0) {
        if (c->listen_fd >= 0) {
            close(c->listen_fd);
            unlink(c->path);
        }
        pthread_mutex_destroy(&c->warn_lock);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void console_stop(braid__console *c)
{
    if (!c || c->stop_fd < 0)
        return;
    uint64_t one = 1;
    while (write(c->stop_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    atomic_store_explicit(&c->ready, 1, memory_order_release); /* if never served */
    braid__futex_wake(&c->ready, 1);
    pthread_join(c->thread, NULL);
    for (int i = 0; i < CONSOLE_CLIENTS; i++)
        if (c->clients[i].fd >= 0)
            close(c->clients[i].fd);
    close(c->listen_fd);
    close(c->stop_fd);
    c->stop_fd = -1;
    unlink(c->path);
}

void braid__console_account(braid__worker *w, braid__task *from)
{
    uint64_t now = braid__now_ns();
    if (from) {
        from->busy_ns += now - w->run_start;
        /* The state it enters began now: the worker's coarse clock (its
         * last scheduling pass) that braid__task_park stamped may be as
         * old as the run that just ended. */
        braid__task_stamp(from, now);
    }
    w->run_start = now;
}

void braid__console_warn(braid_runtime *rt, const char *summary)
{
    braid__console *c = rt->console;
    if (!c)
        return;
    char stamp[16] = "?";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    pthread_mutex_lock(&c->warn_lock);
    unsigned slot = c->nwarn++ % CONSOLE_WARNINGS;
    snprintf(c->warn[slot], sizeof c->warn[slot], "%s %s", stamp, summary);
    pthread_mutex_unlock(&c->warn_lock);
}

static void write_metrics(braid_runtime *rt, FILE *f)
{
    braid_worker_metrics *wm = braid__calloc(rt->nworkers, sizeof *wm);
    braid_metrics m = BRAID_METRICS_INIT;
    m.max_workers = wm ? rt->nworkers : 0;
    m.workers = wm;
    braid_metrics_get(rt, &m);
    uint64_t now = braid__now_ns(); /* the busy times' clock, read just after them */
    fprintf(f,
            "runtime\tworkers=%u\talive=%" PRIu64 "\tspawned=%" PRIu64 "\tcompleted=%" PRIu64
            "\tpanicked=%" PRIu64 "\tcancelled=%" PRIu64 "\tinjected=%" PRIu64 "\ttimers=%" PRIu64
            "\tfds=%" PRIu64 "\tblocking=%u/%u/%u\tnow_ns=%" PRIu64 "\n",
            m.nworkers, m.tasks_alive, m.tasks_spawned, m.tasks_completed, m.tasks_panicked,
            m.tasks_cancelled, m.global_queue, m.timers, m.io_registered, m.blocking_busy,
            m.blocking_idle, m.blocking_queued, now);
    for (unsigned i = 0; wm && i < rt->nworkers; i++)
        fprintf(f,
                "worker\t%u\tpolls=%" PRIu64 "\tsteals=%" PRIu64 "\tparks=%" PRIu64
                "\tqueued=%" PRIu64 "\ttimers=%" PRIu64 "\tbusy_ns=%" PRIu64 "\n",
                i, wm[i].polls, wm[i].steals, wm[i].parks, wm[i].local_queue, wm[i].timers,
                wm[i].busy_ns);
    free(wm);
}

/* The task records first: collecting them waits for every worker to reach
 * a scheduling point, and the counters are then read as of the same
 * moment, after it. */
static void snapshot(braid__console *c, FILE *f)
{
    braid_runtime *rt = c->rt;
    char *tasks = NULL;
    size_t len = 0;
    FILE *tf = open_memstream(&tasks, &len);
    if (tf) {
        braid__obs_records(rt, tf);
        fclose(tf);
    }
    write_metrics(rt, f);
    pthread_mutex_lock(&c->warn_lock);
    unsigned n = BRAID_MIN(c->nwarn, CONSOLE_WARNINGS);
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "warn\t%s\n", c->warn[(c->nwarn - n + i) % CONSOLE_WARNINGS]);
    pthread_mutex_unlock(&c->warn_lock);
    if (tasks)
        fwrite(tasks, 1, len, f);
    free(tasks);
}

/* The environment asks for a console, it does not require one. */
static void env_failed(const char *path, int rc)
{
    char msg[160];
    snprintf(msg, sizeof msg, "braid: BRAID_CONSOLE=%.80s: %s; no console\n", path,
             braid_strerror(rc));
    braid__write_stderr(msg);
}

/* Before the workers' threads start: their timing flag is theirs after. */
int braid__console_setup(braid_runtime *rt)
{
    const char *path = rt->cfg.console_path;
    bool from_env = false;
    if (!path) {
        path = getenv("BRAID_CONSOLE");
        bool expected = false;
        if (!path || !*path ||
            !atomic_compare_exchange_strong(&env_path_taken, &expected, true))
            return 0;
        from_env = true;
    }
    int rc = console_open(rt, path, &rt->console);
    if (rc < 0 && from_env) {
        atomic_store(&env_path_taken, false);
        env_failed(path, rc);
        return 0;
    }
    if (rc < 0)
        return rc;
    rt->console->from_env = from_env;
    for (unsigned i = 0; i < rt->nworkers; i++)
        rt->workers[i]->timing = true;
    return 0;
}

void braid__console_serve(braid_runtime *rt)
{
    braid__console *c = rt->console;
    if (!c)
        return;
    atomic_store_explicit(&c->ready, 1, memory_order_release);
    braid__futex_wake(&c->ready, 1);
}

void braid__console_stop_serving(braid_runtime *rt)
{
    braid__console *c = rt->console;
    if (c && c->stop_fd >= 0) {
        console_stop(c);
        if (c->from_env)
            atomic_store(&env_path_taken, false);
    }
}

void braid__console_free(braid_runtime *rt)
{
    braid__console *c = rt->console;
    if (!c)
        return;
    braid__console_stop_serving(rt);
    rt->console = NULL;
    pthread_mutex_destroy(&c->warn_lock);
    free(c);
}
