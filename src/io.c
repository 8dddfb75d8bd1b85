/*
 * The reactor (see io.h): the descriptor table, epoll per worker, the
 * wait-retry loop under every I/O call, braid_wait_fd() and braid_close().
 */
#include "io.h"
#include "det.h"
#include "sched.h"
#include "util.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(BRAID_READABLE == POLLIN && BRAID_WRITABLE == POLLOUT && BRAID_ERROR == POLLERR &&
                   BRAID_HANGUP == POLLHUP && EPOLLIN == POLLIN && EPOLLOUT == POLLOUT &&
                   EPOLLERR == POLLERR && EPOLLHUP == POLLHUP,
               "readiness bits are poll's");

/* epoll data of the eventfd that wakes a worker out of epoll_wait;
 * descriptors use gen << 32 | fd. */
#define WAKER_TOKEN UINT64_MAX
#define READ_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define WRITE_EVENTS (EPOLLOUT | EPOLLHUP | EPOLLERR)
/* A plain thread blocked in poll(2) looks again this often, so that a
 * braid_close() of its descriptor (which poll does not notice) ends it. */
#define THREAD_SLICE_MS 100

/* ---- the descriptor table ------------------------------------------------
 * One for the process, as descriptors are: a task of any runtime, or a
 * plain thread, may close a descriptor another task waits on.  Chunks are
 * never freed (they stay reachable from here), so a late event or waker can
 * always look at its entry. */

#define IO_CHUNKS 16384 /* descriptors 0 .. 16M-1 */
static _Atomic(braid__io *) io_chunks[IO_CHUNKS];

static braid__io *io_lookup(int fd, bool create)
{
    if (fd < 0 || (unsigned)fd / BRAID_IO_CHUNK >= IO_CHUNKS)
        return NULL;
    _Atomic(braid__io *) *slot = &io_chunks[(unsigned)fd / BRAID_IO_CHUNK];
    braid__io *chunk = atomic_load_explicit(slot, memory_order_acquire);
    if (!chunk && create) {
        braid__io *fresh = braid__calloc(BRAID_IO_CHUNK, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong_explicit(slot, &chunk, fresh, memory_order_acq_rel,
                                                    memory_order_acquire))
            chunk = fresh;
        else
            free(fresh);
    }
    return chunk ? &chunk[(unsigned)fd % BRAID_IO_CHUNK] : NULL;
}

/* Calls in progress hold a reference, so that braid_close() can wait for
 * them before the number goes back to the kernel.  Fails (-EBADF) while a
 * braid_close() of fd is under way; *gen: the life the call belongs to. */
static int io_enter(braid__io *io, uint32_t *gen)
{
    for (;;) {
        uint32_t g = atomic_load_explicit(&io->gen, memory_order_seq_cst);
        if (!atomic_load_explicit(&io->closing, memory_order_seq_cst)) {
            atomic_fetch_add_explicit(&io->refs, 1, memory_order_seq_cst);
            if (!atomic_load_explicit(&io->closing, memory_order_seq_cst) &&
                atomic_load_explicit(&io->gen, memory_order_seq_cst) == g) {
                *gen = g;
                return 0;
            }
            atomic_fetch_sub_explicit(&io->refs, 1, memory_order_release);
        }
        /* A closer holds the lock from close(2) until it clears closing: a
         * call still seeing closing once it gets the lock is on the old
         * descriptor; one seeing it cleared is on a new one. */
        braid__spin_lock(&io->lock);
        bool still = atomic_load_explicit(&io->closing, memory_order_relaxed);
        braid__spin_unlock(&io->lock);
        if (still || atomic_load_explicit(&io->gen, memory_order_acquire) != g)
            return -EBADF;
    }
}

static void io_leave(braid__io *io)
{
    atomic_fetch_sub_explicit(&io->refs, 1, memory_order_release);
}

/* Claim every waiter of q, to be finished (woken) once the lock is
 * dropped, each with result rc. */
static void io_claim_all(braid__wq *q, int rc, braid__wnode **chain, int *count)
{
    *count += (int)braid__wq_claim_all(q, rc, chain);
}

/* ---- per-worker epoll ---------------------------------------------------- */

int braid__io_worker_init(braid__worker *w)
{
    w->epfd = braid__epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->evfd = braid__eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = WAKER_TOKEN };
    if (w->evfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0) {
        int rc = -errno;
        braid__io_worker_destroy(w);
        return rc;
    }
    return 0;
}

/* With migration every descriptor goes to one epoll, so that whichever
 * worker polls wakes the task and takes it (task.c).  The parked worker
 * holding the poller role (sched.c) waits on it directly, woken through
 * the runtime's eventfd in the same epoll.  A busy worker's periodic poll
 * may take that wake-up instead: it passes it on (io_events). */
int braid__io_rt_init(braid_runtime *rt)
{
    if (!rt->migrate)
        return 0;
    rt->epfd = braid__epoll_create1(EPOLL_CLOEXEC);
    if (rt->epfd < 0)
        return -errno;
    rt->evfd = braid__eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = WAKER_TOKEN };
    if (rt->evfd < 0 || epoll_ctl(rt->epfd, EPOLL_CTL_ADD, rt->evfd, &ev) < 0)
        return -errno;
    return 0;
}

void braid__io_rt_destroy(braid_runtime *rt)
{
    if (rt->evfd >= 0)
        close(rt->evfd);
    if (rt->epfd >= 0)
        close(rt->epfd);
    rt->epfd = rt->evfd = -1;
}

static int epfd_of(const braid__worker *w)
{
    return w->rt->migrate ? w->rt->epfd : w->epfd;
}

static void io_new_life(braid__io *io, int fd, braid__wnode **chain);

/* w goes: forget the registrations that point at it, so that a later
 * runtime using the same descriptors registers them afresh. */
static void io_forget_worker(braid__worker *w)
{
    for (unsigned c = 0; c < IO_CHUNKS; c++) {
        braid__io *chunk = atomic_load_explicit(&io_chunks[c], memory_order_acquire);
        for (unsigned i = 0; chunk && i < BRAID_IO_CHUNK; i++) {
            braid__io *io = &chunk[i];
            braid__wnode *chain = NULL;
            braid__spin_lock(&io->lock);
            if (io->owner == w)
                io_new_life(io, (int)(c * BRAID_IO_CHUNK + i), &chain);
            braid__spin_unlock(&io->lock);
            braid__wnode_finish_chain(chain);
        }
    }
}

void braid__io_worker_destroy(braid__worker *w)
{
    /* With migration has_io stays false: the runtime's flag says. */
    if (w->has_io || atomic_load_explicit(&w->rt->io_used, memory_order_relaxed))
        io_forget_worker(w);
    if (w->evfd >= 0)
        close(w->evfd);
    if (w->epfd >= 0)
        close(w->epfd);
    w->epfd = w->evfd = -1;
}

static void evfd_signal(int evfd)
{
    /* Edge-triggered: every write is an event, the counter is never read;
     * only if it ever saturates is it drained. */
    uint64_t one = 1;
    int saved = errno;
    while (write(evfd, &one, sizeof one) < 0 && errno == EAGAIN) {
        uint64_t drain;
        if (read(evfd, &drain, sizeof drain) < 0)
            break;
    }
    errno = saved;
}

void braid__io_wake(braid__worker *w)
{
    /* With migration only the poller polls: the runtime's eventfd is its. */
    evfd_signal(w->rt->migrate ? w->rt->evfd : w->evfd);
}

/* Whether a read from fd that returns less than asked means that fd has
 * nothing more buffered: true of stream sockets and pipes, not of datagram
 * sockets (one message per read) or terminals (one line). */
static bool is_stream(int fd)
{
    struct stat st;
    int type = 0;
    socklen_t len = sizeof type;
    if (fstat(fd, &st) < 0)
        return false;
    if (S_ISFIFO(st.st_mode))
        return true;
    return S_ISSOCK(st.st_mode) && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
           type == SOCK_STREAM;
}

/* Register io (descriptor fd, life gen) with w's epoll; io's lock held. */
static int io_register(braid__io *io, int fd, uint32_t gen, braid__worker *w)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = (uint64_t)gen << 32 | (uint32_t)fd,
    };
    int epfd = epfd_of(w);
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno == EPERM) { /* a regular file or directory: always ready */
            io->nopoll = true;
            return 0;
        }
        if (errno != EEXIST) /* EEXIST: an earlier life's registration lives on */
            return -errno;
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -errno;
    }
    io->owner = w;
    if (!w->rt->migrate)
        w->has_io = true;
    else if (!atomic_exchange_explicit(&w->rt->io_used, true, memory_order_seq_cst))
        braid__sched_notify(w->rt); /* workers parked before this poll nothing */
    atomic_fetch_add_explicit(&w->obs.io_registered, 1, memory_order_relaxed);
    atomic_store_explicit(&io->stream, is_stream(fd), memory_order_relaxed);
    return 0;
}

static void io_unregister(braid__io *io, int fd)
{
    if (io->owner) {
        struct epoll_event ev = { 0 };
        (void)epoll_ctl(epfd_of(io->owner), EPOLL_CTL_DEL, fd, &ev);
        atomic_fetch_sub_explicit(&io->owner->obs.io_registered, 1, memory_order_relaxed);
        io->owner = NULL;
    }
    io->nopoll = false;
}

static int epoll_wait_until(int epfd, struct epoll_event *evs, int n, bool block,
                            uint64_t deadline_ns)
{
    if (!block)
        return epoll_wait(epfd, evs, n, 0);
    if (!deadline_ns)
        return epoll_wait(epfd, evs, n, -1);
    uint64_t now = braid__now_ns();
    uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
#if defined(SYS_epoll_pwait2) && !defined(BRAID_TSAN)
    /* Nanosecond timeouts keep timers as punctual as the futex park.  (Not
     * under TSan: it delivers signals to a thread blocked in a system call
     * only if it intercepts that call, and it does not intercept syscall().) */
    static _Atomic bool no_pwait2;
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
        long r = syscall(SYS_epoll_pwait2, epfd, evs, n, &ts, NULL, 0);
        if (r >= 0 || errno != ENOSYS)
            return (int)r;
        atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
    }
#endif
    uint64_t ms = (left + 999999) / 1000000;
    return epoll_wait(epfd, evs, n, ms > INT32_MAX ? INT32_MAX : (int)ms);
}

/* An event for descriptor fd in its life gen: wake whom it concerns. */
static int io_event(int fd, uint32_t gen, uint32_t events)
{
    braid__io *io = io_lookup(fd, false);
    braid__wnode *chain = NULL;
    int woken = 0;
    if (!io)
        return 0;
    braid__spin_lock(&io->lock);
    if (atomic_load_explicit(&io->gen, memory_order_relaxed) == gen) {
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) /* before seq: see braid__io_do */
            atomic_store_explicit(&io->ended, true, memory_order_relaxed);
        atomic_fetch_add_explicit(&io->seq, 1, memory_order_release);
        if (events & READ_EVENTS)
            io_claim_all(&io->readers, 0, &chain, &woken);
        if (events & WRITE_EVENTS)
            io_claim_all(&io->writers, 0, &chain, &woken);
        io_claim_all(&io->both, 0, &chain, &woken);
    }
    braid__spin_unlock(&io->lock);
    braid__wnode_finish_chain(chain);
    return woken;
}

int braid__io_poll(braid__worker *w, bool block, uint64_t deadline_ns)
{
    struct epoll_event evs[128];
    int saved = errno, woken = 0;
    braid_runtime *rt = w->rt;
    int n = epoll_wait_until(epfd_of(w), evs, 128, block, deadline_ns);
    for (int i = 0; i < n; i++) {
        uint64_t d = evs[i].data.u64;
        if (d != WAKER_TOKEN) {
            woken += io_event((int)(uint32_t)d, (uint32_t)(d >> 32), evs[i].events);
        } else if (rt->migrate && !block) {
            /* The poller's wake-up, taken by a busy worker: pass it on. */
            braid__worker *p = atomic_load_explicit(&rt->poller, memory_order_acquire);
            if (p && p != w)
                evfd_signal(rt->evfd);
        }
    }
    errno = saved;
    return woken;
}

/* Start a new life of io: wake its waiters with -EBADF, forget its
 * registration; io's lock held. */
static void io_new_life(braid__io *io, int fd, braid__wnode **chain)
{
    int woken = 0;
    atomic_fetch_add_explicit(&io->gen, 1, memory_order_seq_cst);
    atomic_store_explicit(&io->drained, 0, memory_order_relaxed);
    atomic_store_explicit(&io->stream, false, memory_order_relaxed);
    atomic_store_explicit(&io->ended, false, memory_order_relaxed);
    io_claim_all(&io->readers, -EBADF, chain, &woken);
    io_claim_all(&io->writers, -EBADF, chain, &woken);
    io_claim_all(&io->both, -EBADF, chain, &woken);
    io_unregister(io, fd);
}

void braid__io_fresh(int fd)
{
    braid__io *io = io_lookup(fd, false);
    if (!io)
        return;
    braid__wnode *chain = NULL;
    braid__spin_lock(&io->lock);
    if (io->owner || io->nopoll)
        io_new_life(io, fd, &chain);
    braid__spin_unlock(&io->lock);
    braid__wnode_finish_chain(chain);
}

/* ---- waiting ------------------------------------------------------------- */

/* Wait, as task t, until io (descriptor fd, life gen) has an event for
 * want, unless one arrived since seq was s0.  0: try again; 1: try again,
 * but the descriptor cannot be polled; or -EBADF (closed), -ETIMEDOUT,
 * -ECANCELED, or an epoll_ctl error. */
static int io_wait(braid__task *t, braid__io *io, int fd, uint32_t gen, unsigned want, uint64_t s0,
                   uint64_t deadline_ns)
{
    braid__wq *q = want == BRAID_READABLE ? &io->readers
                   : want == BRAID_WRITABLE ? &io->writers
                                           : &io->both;
    braid__wait wt;
    braid__wnode n;
    braid__spin_lock(&io->lock);
    int rc = 0;
    if (atomic_load_explicit(&io->gen, memory_order_relaxed) != gen)
        rc = -EBADF;
    else if (atomic_load_explicit(&io->seq, memory_order_relaxed) != s0)
        rc = 1;
    else if (!io->owner && !io->nopoll)
        rc = io_register(io, fd, gen, t->home);
    if (rc || io->nopoll) {
        rc = rc < 0 ? rc : io->nopoll;
        braid__spin_unlock(&io->lock);
        return rc;
    }
    braid__wait_init(&wt, t, BRAID_WAIT_IO);
    t->wait_obj = (uint64_t)fd;
    braid__wnode_init(&n, &wt, 0, NULL, want);
    braid__wq_push(q, &n);
    /* Counted for deadlock reports: an event may still wake this task. */
    _Atomic uint64_t *waiting = &t->home->obs.io_waiting;
    atomic_fetch_add_explicit(waiting, 1, memory_order_relaxed);
    braid__spin_unlock(&io->lock);

    rc = braid__wait_block(&wt, deadline_ns, true);
    if (rc < 0) {
        braid__spin_lock(&io->lock);
        rc = braid__wnode_withdraw(q, &n, rc);
        braid__spin_unlock(&io->lock);
        if (rc >= 0) /* woken just as we gave up: take the wake-up */
            braid__wait_settle(&wt);
    }
    atomic_fetch_sub_explicit(waiting, 1, memory_order_relaxed);
    return rc < 0 ? rc : n.result;
}

/* A plain thread: poll(2) in slices (see THREAD_SLICE_MS). */
static ssize_t thread_do(int fd, unsigned want, uint64_t deadline_ns, braid__io_fn fn, void *ctx)
{
    for (;;) {
        ssize_t r = fn(fd, ctx);
        if (r != -EAGAIN)
            return r;
        uint64_t now = braid__now_ns();
        if (now >= deadline_ns)
            return -ETIMEDOUT;
        uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
        struct pollfd p = { .fd = fd, .events = (short)want };
        int saved = errno;
        int k = poll(&p, 1, (int)BRAID_MIN(left_ms, (uint64_t)THREAD_SLICE_MS));
        errno = saved;
        if (k > 0 && (p.revents & POLLNVAL))
            return -EBADF;
    }
}

ssize_t braid__io_do(int fd, unsigned want, uint64_t deadline_ns, braid__io_fn fn, void *ctx,
                     size_t stream_len)
{
    braid__task *t = braid__tls_task;
    if (!t)
        return thread_do(fd, want, deadline_ns, fn, ctx);
    if (braid__task_should_cancel(t))
        return -ECANCELED;
    braid__io *io = io_lookup(fd, true);
    if (!io)
        return fd < 0 ? -EBADF : -ENOMEM;
    uint32_t gen;
    ssize_t r = io_enter(io, &gen);
    if (r < 0)
        return r;
    for (;;) {
        uint64_t s0 = atomic_load_explicit(&io->seq, memory_order_acquire);
        /* The last read came up short and no event has been handled since:
         * the read would find nothing, so wait for the next event at once
         * (as Tokio does), saving a system call per message.  Data that
         * arrived meanwhile has its event queued in epoll: no wake-up is
         * lost, the worker handles it when it next polls.  Not once the
         * peer has hung up: a short read may have taken the last bytes
         * before an end of stream whose event was handled before s0 was
         * read, and no event will come again (the flag is set before seq
         * moves, so seeing s0 means seeing the flag).  Nor when the
         * deadline has passed: such a call must still take what is there.
         * (A later deadline cannot fire before the event is handled: the
         * worker polls epoll before it fires due timers, see sched.c.) */
        if (stream_len && atomic_load_explicit(&io->drained, memory_order_relaxed) == s0 + 1 &&
            !atomic_load_explicit(&io->ended, memory_order_relaxed) &&
            (deadline_ns == BRAID_FOREVER || deadline_ns > braid__worker_now(t->home)))
            r = -EAGAIN;
        else
            r = fn(fd, ctx);
        if (r != -EAGAIN) {
            if (r > 0 && (size_t)r < stream_len &&
                atomic_load_explicit(&io->stream, memory_order_relaxed))
                atomic_store_explicit(&io->drained, s0 + 1, memory_order_relaxed);
            break;
        }
        r = io_wait(t, io, fd, gen, want, s0, deadline_ns);
        if (r < 0)
            break;
        if (r == 1) /* not pollable, yet not ready (rare): let others run */
            braid__task_yield_now(t);
    }
    io_leave(io);
    braid__budget_spend(t);
    return r;
}

/* ---- braid_wait_fd and braid_close --------------------------------------- */

static ssize_t poll_now(int fd, void *ctx)
{
    struct pollfd p = { .fd = fd, .events = (short)*(unsigned *)ctx };
    int saved = errno;
    int k = poll(&p, 1, 0);
    int err = errno;
    errno = saved;
    if (k < 0)
        return err == EINTR ? -EAGAIN : -err;
    if (p.revents & POLLNVAL)
        return -EBADF;
    return k ? (ssize_t)(p.revents & (POLLIN | POLLOUT | POLLERR | POLLHUP)) : -EAGAIN;
}

int braid_wait_fd(int fd, unsigned events, uint64_t deadline_ns)
{
    events &= BRAID_READABLE | BRAID_WRITABLE;
    if (!events)
        return -EINVAL;
    /* Readiness is only known by asking (poll_now): edge-triggered events
     * say that something changed, not what holds now. */
    return (int)braid__io_do(fd, events, deadline_ns, poll_now, &events, 0);
}

int braid_close(int fd)
{
    braid__io *io = io_lookup(fd, false);
    if (!io) {
        if (fd < 0)
            return -EBADF;
        return close(fd) < 0 ? -errno : 0;
    }
    braid__wnode *chain = NULL;
    braid__spin_lock(&io->lock);
    atomic_store_explicit(&io->closing, true, memory_order_seq_cst);
    io_new_life(io, fd, &chain);
    braid__spin_unlock(&io->lock);
    braid__wnode_finish_chain(chain);

    /* Calls in progress are in a non-blocking system call or just woken:
     * they leave soon. */
    braid__task *t = braid__tls_task;
    unsigned spins = 0;
    while (atomic_load_explicit(&io->refs, memory_order_seq_cst)) {
        if (t)
            braid__task_yield_now(t);
        else
            braid__spin_backoff(&spins);
    }
    braid__spin_lock(&io->lock);
    int saved = errno;
    int rc = close(fd) < 0 && errno != EINTR ? -errno : 0;
    errno = saved;
    atomic_store_explicit(&io->closing, false, memory_order_seq_cst);
    braid__spin_unlock(&io->lock);
    return rc;
}
