/*
 * The blocking pool, braid_spawn_blocking, file helpers and name
 * resolution.
 *
 * A job is a small struct, usually on the stack of the task that waits for
 * it.  The task hands it to the pool and waits with the protocol of wait.h
 * (one braid__wait, one node that is never in a queue): the pool thread
 * that ran the job claims the node and finishes it.  A job is QUEUED (the
 * task may still withdraw it: cancellation or deadline, nothing happened),
 * RUNNING (it runs to the end and the task waits for that, uncancellably,
 * since the job may be writing into the task's buffers), or DONE.  The one
 * exception is resolution, whose job is on the heap and owns copies of its
 * inputs: a caller that gives up on a running resolution leaves it to the
 * pool thread, which frees the result (a slow DNS server must not keep a
 * deadline from firing).
 *
 * braid_spawn_blocking() returns the handle of an ordinary task, a proxy,
 * whose body submits the job and waits for it.  So join, detach, cancel and
 * JoinSet work unchanged; cancelling the proxy while its job is queued
 * withdraws the job, and once the job runs the proxy finishes BRAID_OK with
 * fn's value whatever cancel requests came meanwhile (BRAID__FATE_OK_FINAL).
 *
 * Threads are handed their job directly by the submitter (an idle thread is
 * popped and given the job, or a new thread is created with it), so a
 * wake-up is never lost or wasted; the queue only holds jobs that found no
 * thread.  Idle threads wait on their own condition variable; the most
 * recently idle is reused first, so the surplus is at the bottom of the
 * stack and times out after the keep-alive.
 *
 * Resolution is the libuv trap: getaddrinfo against a dead DNS server
 * blocks for seconds, and a burst of them would take every thread while
 * file reads wait behind.  So resolution jobs may hold at most half of the
 * threads (at least one); a thread never takes one beyond that, and file
 * and user jobs go past them in the queue.
 */
#include "blocking.h"
#include "det.h"
#include "panic.h"
#include "sched.h"
#include "task.h"
#include "util.h"
#include "wait.h"

#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BP_DEFAULT_THREADS 512
#define BP_DEFAULT_KEEPALIVE_MS 10000

enum { BJ_GENERAL = 0, BJ_RESOLVE = 1 };
enum { BJ_QUEUED = 0, BJ_RUNNING = 1, BJ_DONE = 2 };
enum { BJ_CANCELLABLE = 1, BJ_ORPHANABLE = 2 };

typedef struct bjob bjob;
struct bjob {
    bjob *next, *prev;              /* in a queue */
    void (*run)(bjob *j);           /* on a pool thread */
    void (*orphan)(bjob *j);        /* frees a job its caller left (resolution) */
    uint64_t seq;                   /* submission order, across the two queues */
    uint8_t cls, state;             /* BJ_GENERAL/RESOLVE; BJ_QUEUED/RUNNING/DONE */
    bool abandoned;
    braid__panic_info *panic;       /* braid_panic() inside run */
    braid__wait wait;
    braid__wnode node;
};

typedef struct bjob_queue {
    bjob *head, *tail;
} bjob_queue;

typedef struct bthread bthread;
struct bthread {
    bthread *all_next;              /* every thread not yet joined */
    bthread *idle_next, *idle_prev;
    braid__bpool *pool;
    pthread_t tid;
    pthread_cond_t cond;
    bjob *job;                      /* handed over by a submitter */
    bool idle, exited;
};

struct braid__bpool {
    pthread_mutex_t lock;
    bjob_queue general, resolve;
    bthread *all, *idle;
    unsigned max, resolve_max;
    unsigned nthreads, nidle, running, resolving, queued;
    uint64_t keepalive_ns, seq;
    bool stopping;
};

_Atomic bool braid__bpool_fail_create;
int (*braid__resolve_hook)(const char *, const char *, const struct addrinfo *,
                           struct addrinfo **);

/* ---- queues (under the pool lock) -------------------------------------------- */

static bjob_queue *bp_queue_of(braid__bpool *p, const bjob *j)
{
    return j->cls == BJ_RESOLVE ? &p->resolve : &p->general;
}

static void bp_enqueue(braid__bpool *p, bjob *j)
{
    bjob_queue *q = bp_queue_of(p, j);
    j->next = NULL;
    j->prev = q->tail;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    p->queued++;
}

static void bp_dequeue(braid__bpool *p, bjob *j)
{
    bjob_queue *q = bp_queue_of(p, j);
    if (j->prev)
        j->prev->next = j->next;
    else
        q->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        q->tail = j->prev;
    p->queued--;
}

static bool bp_eligible(const braid__bpool *p, const bjob *j)
{
    return j->cls != BJ_RESOLVE || p->resolving < p->resolve_max;
}

/* j is about to run on a thread. */
static void bp_mark_running(braid__bpool *p, bjob *j)
{
    j->state = BJ_RUNNING;
    p->running++;
    if (j->cls == BJ_RESOLVE)
        p->resolving++;
}

/* The oldest queued job a thread may take now, dequeued and marked
 * running; NULL if none. */
static bjob *bp_take_next(braid__bpool *p)
{
    bjob *g = p->general.head, *r = p->resolve.head;
    if (r && !bp_eligible(p, r))
        r = NULL;
    bjob *j = g && (!r || g->seq < r->seq) ? g : r;
    if (j) {
        bp_dequeue(p, j);
        bp_mark_running(p, j);
    }
    return j;
}

/* ---- threads ----------------------------------------------------------------- */

static void idle_push(braid__bpool *p, bthread *t)
{
    t->idle = true;
    t->idle_prev = NULL;
    t->idle_next = p->idle;
    if (p->idle)
        p->idle->idle_prev = t;
    p->idle = t;
    p->nidle++;
}

static void idle_remove(braid__bpool *p, bthread *t)
{
    if (t->idle_prev)
        t->idle_prev->idle_next = t->idle_next;
    else
        p->idle = t->idle_next;
    if (t->idle_next)
        t->idle_next->idle_prev = t->idle_prev;
    t->idle = false;
    p->nidle--;
}

static BRAID_TLS bjob *tls_job;
static BRAID_TLS jmp_buf *tls_panic_env;

/* Run j; a braid_panic() inside it lands back here (its frames are
 * abandoned, as a task's are). */
static void bp_run(bjob *j)
{
    jmp_buf env;
    tls_job = j;
    tls_panic_env = &env;
    if (!setjmp(env))
        j->run(j);
    tls_job = NULL;
    tls_panic_env = NULL;
}

bool braid__blocking_in_job(void)
{
    return tls_job != NULL;
}

void braid__blocking_panic(braid__panic_info *info)
{
    bjob *j = tls_job;
    if (!j->panic)
        j->panic = info;
    else
        braid__panic_info_free(info);
    longjmp(*tls_panic_env, 1);
}

/* j has run: wake its waiter, or clean up after one that left. */
static void bp_finish(braid__bpool *p, bjob *j)
{
    pthread_mutex_lock(&p->lock);
    j->state = BJ_DONE;
    p->running--;
    if (j->cls == BJ_RESOLVE)
        p->resolving--;
    bool orphan = j->abandoned;
    if (!orphan)
        braid__wnode_claim(&j->node);
    pthread_mutex_unlock(&p->lock);
    if (orphan)
        j->orphan(j);
    else
        braid__wnode_finish(&j->node);
}

/* Wait idle for a job, under the lock.  False when the keep-alive ran out
 * (or the pool stops) with nothing handed over. */
static bool bp_idle_wait(braid__bpool *p, bthread *me)
{
    struct timespec ts;
    uint64_t at = braid__now_ns() + p->keepalive_ns;
    ts.tv_sec = (time_t)(at / 1000000000u);
    ts.tv_nsec = (long)(at % 1000000000u);
    idle_push(p, me);
    int rc = 0;
    while (!me->job && !p->stopping && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&me->cond, &p->lock, &ts);
    if (me->idle) /* a submitter that hands over a job unlinks us itself */
        idle_remove(p, me);
    return me->job != NULL;
}

static void *bp_thread_main(void *arg)
{
    bthread *me = arg;
    braid__bpool *p = me->pool;
    pthread_setname_np(pthread_self(), "braid-blocking");
    pthread_mutex_lock(&p->lock);
    for (;;) {
        bjob *j = me->job ? me->job : bp_take_next(p);
        me->job = NULL;
        if (!j) {
            if (p->stopping || !bp_idle_wait(p, me))
                break;
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        bp_run(j);
        bp_finish(p, j);
        pthread_mutex_lock(&p->lock);
    }
    p->nthreads--;
    me->exited = true; /* joined by the next thread creation, or by the pool's end */
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void bp_thread_free(bthread *t)
{
    pthread_cond_destroy(&t->cond);
    free(t);
}

/* Join the threads that exited on their keep-alive (under the lock; they
 * no longer need it). */
static void bp_reap(braid__bpool *p)
{
    for (bthread **pp = &p->all; *pp;) {
        bthread *t = *pp;
        if (!t->exited) {
            pp = &t->all_next;
            continue;
        }
        *pp = t->all_next;
        pthread_join(t->tid, NULL);
        bp_thread_free(t);
    }
}

/* Start a thread that runs j first.  Under the lock, which keeps nthreads
 * exact for bp_submit's decision; creations are rare, since a thread then
 * stays for the keep-alive.  Returns 0 or -EAGAIN. */
static int bp_spawn_thread(braid__bpool *p, bjob *j)
{
    bp_reap(p);
    if (atomic_load_explicit(&braid__bpool_fail_create, memory_order_relaxed))
        return -EAGAIN;
    bthread *t = braid__calloc(1, sizeof *t);
    if (!t)
        return -EAGAIN;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* braid__now_ns's clock */
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    t->pool = p;
    t->job = j;
    if (braid__pthread_create(&t->tid, NULL, bp_thread_main, t) != 0) {
        bp_thread_free(t);
        return -EAGAIN;
    }
    bp_mark_running(p, j);
    t->all_next = p->all;
    p->all = t;
    p->nthreads++;
    return 0;
}

/* Give j to a thread, or queue it.  Returns 0, or -EAGAIN when there is no
 * thread at all and none could be created (then j would never run). */
static int bp_submit(braid__bpool *p, bjob *j)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    j->seq = p->seq++;
    if (!bp_eligible(p, j)) {
        bp_enqueue(p, j);
    } else if (p->idle) {
        bthread *t = p->idle;
        idle_remove(p, t);
        t->job = j;
        bp_mark_running(p, j);
        pthread_cond_signal(&t->cond);
    } else if (p->nthreads >= p->max || bp_spawn_thread(p, j) < 0) {
        /* A busy thread will get to it; with no thread at all, nobody would. */
        if (p->nthreads > 0)
            bp_enqueue(p, j);
        else
            rc = -EAGAIN;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ---- the pool ---------------------------------------------------------------- */

int braid__bpool_new(braid__bpool **out, unsigned max_threads, uint64_t keepalive_ms)
{
    braid__bpool *p = braid__calloc(1, sizeof *p);
    *out = p;
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    p->max = max_threads ? max_threads : BP_DEFAULT_THREADS;
    p->resolve_max = p->max / 2 ? p->max / 2 : 1;
    if (!keepalive_ms)
        keepalive_ms = BP_DEFAULT_KEEPALIVE_MS;
    p->keepalive_ns = keepalive_ms > UINT64_MAX / 2000000u ? UINT64_MAX / 2 : keepalive_ms * 1000000u;
    return 0;
}

void braid__bpool_free(braid__bpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    for (bthread *t = p->idle; t; t = t->idle_next)
        pthread_cond_signal(&t->cond);
    bthread *all = p->all;
    p->all = NULL;
    pthread_mutex_unlock(&p->lock);
    while (all) {
        bthread *next = all->all_next;
        pthread_join(all->tid, NULL);
        bp_thread_free(all);
        all = next;
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void braid__bpool_get_stats(braid_runtime *rt, braid__bpool_stats *st)
{
    braid__bpool *p = rt->blocking;
    pthread_mutex_lock(&p->lock);
    st->threads = p->nthreads;
    st->idle = p->nidle;
    st->running = p->running;
    st->resolving = p->resolving;
    st->queued = p->queued;
    pthread_mutex_unlock(&p->lock);
}

/* ---- waiting for a job --------------------------------------------------------- */

/* The waiter of j stops waiting early (rc: -ECANCELED or -ETIMEDOUT).
 * Returns rc if j never ran (withdrawn) or, orphanable, was left to its
 * thread; otherwise waits for the end of j and returns 0. */
static int bj_give_up(braid__bpool *p, bjob *j, int rc, unsigned flags)
{
    pthread_mutex_lock(&p->lock);
    uint8_t state = j->state;
    bool left = state == BJ_QUEUED || (state == BJ_RUNNING && (flags & BJ_ORPHANABLE));
    if (state == BJ_QUEUED)
        bp_dequeue(p, j);
    else if (left)
        j->abandoned = true;
    pthread_mutex_unlock(&p->lock);
    if (state == BJ_QUEUED && j->orphan)
        j->orphan(j);
    if (left)
        return rc;
    /* Started: it runs to the end, and may be using the caller's memory. */
    braid__wait_task(&j->wait, j->wait.task, false, false);
    return 0;
}

/* Run j on the pool of task t's runtime and wait for it, like a join.
 * Returns 0 once j has run, or -ECANCELED / -ETIMEDOUT / -EAGAIN (no
 * thread) with j not run, or, orphanable, still running on its own.  A job
 * with an orphan callback is consumed by every error return. */
static int bj_await(braid__task *t, bjob *j, uint64_t deadline_ns, unsigned flags)
{
    braid__bpool *p = t->home->rt->blocking;
    bool cancellable = flags & BJ_CANCELLABLE;
    /* Deterministic mode (det.h): the worker thread itself waits for the
     * job, so no task runs meanwhile and the job takes no virtual time (a
     * deadline that has not passed cannot pass during it). */
    bool det = BRAID_UNLIKELY(t->home->det != NULL);
    int rc = 0;
    if (cancellable && braid__task_should_cancel(t))
        rc = -ECANCELED;
    else if (deadline_ns != BRAID_FOREVER && braid__worker_now(t->home) >= deadline_ns)
        rc = -ETIMEDOUT;
    if (rc == 0) {
        j->state = BJ_QUEUED;
        j->abandoned = false;
        j->panic = NULL;
        braid__wait_init(&j->wait, det ? NULL : t, BRAID_WAIT_BLOCKING);
        braid__wnode_init(&j->node, &j->wait, 0, NULL, 0);
        rc = bp_submit(p, j);
    }
    if (rc < 0) {
        if (j->orphan)
            j->orphan(j);
        return rc;
    }
    rc = braid__wait_block(&j->wait, det ? BRAID_FOREVER : deadline_ns, cancellable);
    return rc >= 0 ? 0 : bj_give_up(p, j, rc, flags);
}

/* ---- braid_spawn_blocking ------------------------------------------------------- */

struct bcall {
    braid_fn fn;
    void *arg;
    void (*arg_drop)(void *arg);
};

struct call_job {
    bjob job;
    braid_fn fn;
    void *arg;
    void *value;
};

static void call_run(bjob *j)
{
    struct call_job *c = BRAID_CONTAINER_OF(j, struct call_job, job);
    c->value = c->fn(c->arg);
}

/* The proxy never ran (cancelled early, or shutdown). */
static void bcall_drop(void *p)
{
    struct bcall *c = p;
    if (c->arg_drop)
        c->arg_drop(c->arg);
    free(c);
}

static void *proxy_main(void *p)
{
    struct bcall c = *(struct bcall *)p;
    free(p);
    braid__task *self = braid__task_current();
    struct call_job cj = { .fn = c.fn, .arg = c.arg };
    cj.job.run = call_run;
    cj.job.cls = BJ_GENERAL;
    int rc = bj_await(self, &cj.job, BRAID_FOREVER, BJ_CANCELLABLE);
    if (rc < 0) {
        if (c.arg_drop)
            c.arg_drop(c.arg);
        if (rc == -EAGAIN)
            braid_panic("blocking pool: no thread could be created to run the job");
        return NULL; /* cancelled: the record's cancel flag makes the fate CANCELLED */
    }
    if (cj.job.panic) {
        self->panic = cj.job.panic;
        braid__panic_unwind(self);
    }
    braid__task_exit(self, BRAID__FATE_OK_FINAL, cj.value);
}

int braid_spawn_blocking_ex_at(const char *file, int line, braid_task *out,
                               const braid_spawn_opts *opts, braid_fn fn, void *arg)
{
    if (!braid__task_current())
        return -EPERM;
    if (!fn || (opts && opts->size && opts->size < sizeof(braid_spawn_opts)))
        return -EINVAL;
    int saved = errno;
    struct bcall *c = braid__malloc(sizeof *c);
    errno = saved;
    if (!c)
        return -ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->arg_drop = opts ? opts->arg_drop : NULL;
    /* The proxy's own arg_drop frees c if the proxy never runs. */
    braid_spawn_opts po = BRAID_SPAWN_OPTS_INIT;
    po.name = opts ? opts->name : NULL;
    po.arg_drop = bcall_drop;
    int rc = braid_spawn_ex_at(file, line, out, &po, proxy_main, c);
    if (rc < 0)
        free(c);
    return rc;
}

int braid_spawn_blocking_ex(braid_task *out, const braid_spawn_opts *opts, braid_fn fn, void *arg)
{
    return braid_spawn_blocking_ex_at(NULL, 0, out, opts, fn, arg);
}

int braid_spawn_blocking_at(const char *file, int line, braid_task *out, braid_fn fn, void *arg)
{
    return braid_spawn_blocking_ex_at(file, line, out, NULL, fn, arg);
}

int braid_spawn_blocking(braid_task *out, braid_fn fn, void *arg)
{
    return braid_spawn_blocking_ex_at(NULL, 0, out, NULL, fn, arg);
}

/* ---- name resolution -------------------------------------------------------- */

struct resolve_job {
    bjob job;
    const char *host, *port;        /* copies, stored after the struct */
    struct addrinfo hints;
    bool has_hints;
    int eai, sys_errno;
    struct addrinfo *res;
};

static int resolve_call(const char *host, const char *port, const struct addrinfo *hints,
                        struct addrinfo **res)
{
    if (braid__resolve_hook)
        return braid__resolve_hook(host, port, hints, res);
    return getaddrinfo(host, port, hints, res);
}

/* The negative errno value braid reports for a getaddrinfo result. */
static int eai_to_errno(int eai, int sys_errno)
{
    switch (eai) {
    case 0:
        return 0;
    case EAI_NONAME:
    case EAI_SERVICE:
        return -ENOENT;
    case EAI_NODATA:
    case EAI_ADDRFAMILY:
        return -ENODATA;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_BADFLAGS:
        return -EINVAL;
    case EAI_FAMILY:
        return -EAFNOSUPPORT;
    case EAI_SOCKTYPE:
        return -ESOCKTNOSUPPORT;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return sys_errno > 0 ? -sys_errno : -EIO;
    default: /* EAI_FAIL and anything newer */
        return -EIO;
    }
}

static void resolve_run(bjob *j)
{
    struct resolve_job *r = BRAID_CONTAINER_OF(j, struct resolve_job, job);
    r->eai = resolve_call(r->host, r->port, r->has_hints ? &r->hints : NULL, &r->res);
    r->sys_errno = r->eai == EAI_SYSTEM ? errno : 0;
}

static void resolve_orphan(bjob *j)
{
    struct resolve_job *r = BRAID_CONTAINER_OF(j, struct resolve_job, job);
    if (r->eai == 0 && r->res)
        freeaddrinfo(r->res);
    free(r);
}

/* The job with copies of its inputs: it may outlive the caller's frame. */
static struct resolve_job *resolve_job_new(const char *host, const char *port,
                                           const struct addrinfo *hints)
{
    size_t hl = host ? strlen(host) + 1 : 0, pl = port ? strlen(port) + 1 : 0;
    struct resolve_job *r = braid__calloc(1, sizeof *r + hl + pl);
    if (!r)
        return NULL;
    char *s = (char *)(r + 1);
    r->host = host ? memcpy(s, host, hl) : NULL;
    r->port = port ? memcpy(s + hl, port, pl) : NULL;
    if (hints) {
        /* Only these four may be set in hints (POSIX). */
        r->hints.ai_flags = hints->ai_flags;
        r->hints.ai_family = hints->ai_family;
        r->hints.ai_socktype = hints->ai_socktype;
        r->hints.ai_protocol = hints->ai_protocol;
        r->has_hints = true;
    }
    r->job.run = resolve_run;
    r->job.orphan = resolve_orphan;
    r->job.cls = BJ_RESOLVE;
    return r;
}

int braid_resolve_until(const char *host, const char *port, const struct addrinfo *hints,
                        struct addrinfo **res, uint64_t deadline_ns)
{
    if (!res)
        return -EINVAL;
    *res = NULL;
    int saved = errno;
    braid__task *t = braid__task_current();
    if (!t) { /* a plain thread may block: no pool needed */
        int eai = resolve_call(host, port, hints, res);
        int rc = eai_to_errno(eai, errno);
        errno = saved;
        return rc;
    }
    struct resolve_job *r = resolve_job_new(host, port, hints);
    errno = saved;
    if (!r)
        return -ENOMEM;
    int rc = bj_await(t, &r->job, deadline_ns, BJ_CANCELLABLE | BJ_ORPHANABLE);
    if (rc < 0)
        return rc; /* r is consumed */
    rc = eai_to_errno(r->eai, r->sys_errno);
    if (rc == 0)
        *res = r->res;
    free(r);
    errno = saved;
    return rc;
}

int braid_resolve(const char *host, const char *port, const struct addrinfo *hints,
                  struct addrinfo **res)
{
    return braid_resolve_until(host, port, hints, res, BRAID_FOREVER);
}

/* ---- files ------------------------------------------------------------------ */

enum { F_OPEN, F_READ, F_WRITE, F_FSYNC, F_CLOSE, F_READ_ALL, F_WRITE_ALL };

struct file_job {
    bjob job;
    int op;
    int fd;
    int flags;
    mode_t mode;
    const char *path;
    void *buf;
    size_t n;
    int64_t off;
    ssize_t result;
    void *data;                     /* read_all's buffer */
};

static ssize_t neg_errno(void)
{
    return errno > 0 ? -(ssize_t)errno : -EIO;
}

static ssize_t file_read(int fd, void *buf, size_t n, int64_t off)
{
    ssize_t r;
    do
        r = off < 0 ? read(fd, buf, n) : pread(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? neg_errno() : r;
}

static ssize_t file_write(int fd, const void *buf, size_t n, int64_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? neg_errno() : -EIO;
        p += w;
        n -= (size_t)w;
        if (off >= 0)
            off += w;
    }
    return 0;
}

/* Read all of fd into a malloc'd, NUL-terminated buffer.  The size from
 * fstat is only a hint (files in /proc say 0 and grow while read). */
static ssize_t file_slurp(int fd, void **data)
{
    struct stat st;
    size_t cap = 4096, len = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        if ((uint64_t)st.st_size >= SIZE_MAX / 2)
            return -EFBIG;
        cap = (size_t)st.st_size + 1;
    }
    char *buf = braid__malloc(cap);
    for (;;) {
        if (buf && len + 1 == cap) {
            char *nb = cap < SIZE_MAX / 2 ? braid__realloc(buf, cap * 2) : NULL;
            if (!nb)
                free(buf);
            buf = nb;
            cap *= 2;
        }
        if (!buf)
            return -ENOMEM;
        ssize_t r = file_read(fd, buf + len, cap - 1 - len, -1);
        if (r < 0) {
            free(buf);
            return r;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = 0;
    *data = buf;
    return (ssize_t)len;
}

static ssize_t file_read_all(const char *path, void **data)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    ssize_t r = file_slurp(fd, data);
    close(fd);
    return r;
}

static ssize_t file_write_all(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return neg_errno();
    ssize_t r = file_write(fd, data, len, -1);
    if (close(fd) < 0 && r == 0 && errno != EINTR)
        r = neg_errno(); /* a deferred write error (NFS) */
    return r;
}

static ssize_t file_exec(struct file_job *f)
{
    switch (f->op) {
    case F_OPEN: {
        int fd = open(f->path, f->flags, f->mode);
        return fd < 0 ? neg_errno() : fd;
    }
    case F_READ:
        return file_read(f->fd, f->buf, f->n, f->off);
    case F_WRITE:
        return file_write(f->fd, f->buf, f->n, f->off);
    case F_FSYNC:
        return fsync(f->fd) < 0 ? neg_errno() : 0;
    case F_CLOSE:
        /* On Linux the descriptor is gone even after EINTR: never retry. */
        return close(f->fd) < 0 && errno != EINTR ? neg_errno() : 0;
    case F_READ_ALL:
        return file_read_all(f->path, &f->data);
    case F_WRITE_ALL:
        return file_write_all(f->path, f->buf, f->n);
    default:
        return -EINVAL;
    }
}

static void file_run(bjob *j)
{
    struct file_job *f = BRAID_CONTAINER_OF(j, struct file_job, job);
    f->result = file_exec(f);
}

/* Run f on the pool from a task, inline on a plain thread (which may block
 * anyway).  errno is the caller's again afterwards. */
static ssize_t file_call(struct file_job *f, unsigned flags)
{
    braid__task *t = braid__task_current();
    if (!t) {
        int saved = errno;
        ssize_t r = file_exec(f);
        errno = saved;
        return r;
    }
    f->job.run = file_run;
    f->job.orphan = NULL;
    f->job.cls = BJ_GENERAL;
    int rc = bj_await(t, &f->job, BRAID_FOREVER, flags);
    return rc < 0 ? rc : f->result;
}

int braid_file_open(const char *path, int flags, mode_t mode)
{
    if (!path)
        return -EINVAL;
    struct file_job f = { .op = F_OPEN, .path = path, .flags = flags, .mode = mode };
    return (int)file_call(&f, BJ_CANCELLABLE);
}

ssize_t braid_file_read(int fd, void *buf, size_t n, int64_t off)
{
    if (!buf && n)
        return -EINVAL;
    struct file_job f = { .op = F_READ, .fd = fd, .buf = buf, .n = n, .off = off };
    return file_call(&f, BJ_CANCELLABLE);
}

int braid_file_write(int fd, const void *buf, size_t n, int64_t off)
{
    if (!buf && n)
        return -EINVAL;
    struct file_job f = { .op = F_WRITE, .fd = fd, .buf = (void *)buf, .n = n, .off = off };
    return (int)file_call(&f, BJ_CANCELLABLE);
}

int braid_file_fsync(int fd)
{
    struct file_job f = { .op = F_FSYNC, .fd = fd };
    return (int)file_call(&f, BJ_CANCELLABLE);
}

int braid_file_close(int fd)
{
    /* Not a cancellation point: a cancelled task closes in its cleanup, and
     * a close that did nothing would leak the descriptor. */
    struct file_job f = { .op = F_CLOSE, .fd = fd };
    return (int)file_call(&f, 0);
}

int braid_file_read_all(const char *path, void **data, size_t *len)
{
    if (!path || !data)
        return -EINVAL;
    *data = NULL;
    if (len)
        *len = 0;
    struct file_job f = { .op = F_READ_ALL, .path = path };
    ssize_t r = file_call(&f, BJ_CANCELLABLE);
    if (r < 0)
        return (int)r;
    *data = f.data;
    if (len)
        *len = (size_t)r;
    return 0;
}

int braid_file_write_all(const char *path, const void *data, size_t len)
{
    if (!path || (!data && len))
        return -EINVAL;
    struct file_job f = { .op = F_WRITE_ALL, .path = path, .buf = (void *)data, .n = len };
    return (int)file_call(&f, BJ_CANCELLABLE);
}
