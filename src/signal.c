/*
 * Signals: a task (or a plain thread) waits for a signal the way it waits
 * for a socket.
 *
 * The handler braid installs for a caught signal does two async-signal-
 * safe things: it bumps the signal's delivery counter (a lock-free atomic)
 * and writes one byte to a process-wide non-blocking self-pipe.  Waiters
 * never look at the bytes; the pipe only wakes them, the counters say
 * what happened.
 *
 * Waiters coordinate under sig_mu (a braid_mutex, so tasks suspend and
 * plain threads block, on any runtime).  One of them at a time, the
 * reader, waits on the pipe with braid_wait_fd(); the others wait on
 * sig_cond.  "Collecting" compares each counter with the value seen last:
 * a signal delivered meanwhile bumps its generation if somebody waits for
 * it (every waiter that saw the old generation returns), or else becomes
 * pending (the next wait consumes it and returns at once).  The reader
 * empties the pipe before its last look at the counters and only then
 * waits, so a delivery after that look leaves a byte that wakes it, and
 * one before it is seen by the look (the handler counts before it
 * writes).  Whoever collects something new, and a reader stepping down
 * (woken, past its deadline, cancelled), broadcasts sig_cond, so another
 * waiter takes over the pipe.
 */
#include "internal.h"
#include "task.h"
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define SIG_N NSIG

/* Written by the handler, read by collectors. */
static _Atomic uint32_t sig_count[SIG_N];
static _Atomic bool sig_caught[SIG_N];
static _Atomic int sig_pipe_rd = -1, sig_pipe_wr = -1;
static pthread_mutex_t sig_catch_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under sig_mu. */
static braid_mutex sig_mu = BRAID_MUTEX_INIT;
static braid_cond sig_cond = BRAID_COND_INIT;
static uint32_t sig_seen[SIG_N];    /* sig_count when last collected */
static uint64_t sig_gen[SIG_N];     /* deliveries to the waiters */
static unsigned sig_waiters[SIG_N];
static bool sig_pending[SIG_N];     /* a delivery nobody waited for */
static bool sig_reader;             /* a waiter waits on the pipe */

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the handler needs lock-free atomics");

static void sig_handler(int signo)
{
    int saved = errno;
    if (signo > 0 && signo < SIG_N)
        atomic_fetch_add_explicit(&sig_count[signo], 1, memory_order_seq_cst);
    int fd = atomic_load_explicit(&sig_pipe_wr, memory_order_acquire);
    if (fd >= 0) {
        char b = (char)signo;
        ssize_t n = write(fd, &b, 1); /* EAGAIN: the pipe is full, so it wakes anyway */
        (void)n;
    }
    errno = saved;
}

static bool sig_reserved(int signo)
{
    switch (signo) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV: /* braid's fault handling and stack overflow detection */
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
        return true;
    default:
        return false;
    }
}

int braid_signal_catch(int signo)
{
    if (signo <= 0 || signo >= SIG_N || sig_reserved(signo))
        return -EINVAL;
    if (atomic_load_explicit(&sig_caught[signo], memory_order_acquire))
        return 0;
    int saved = errno, rc = 0;
    pthread_mutex_lock(&sig_catch_lock);
    if (atomic_load_explicit(&sig_pipe_wr, memory_order_relaxed) < 0) {
        int p[2];
        if (braid__pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
            rc = -errno;
        } else {
            atomic_store_explicit(&sig_pipe_rd, p[0], memory_order_release);
            atomic_store_explicit(&sig_pipe_wr, p[1], memory_order_release);
        }
    }
    if (rc == 0 && !atomic_load_explicit(&sig_caught[signo], memory_order_relaxed)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = sig_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART | SA_ONSTACK;
        if (sigaction(signo, &sa, NULL) != 0) {
            rc = -errno; /* glibc's own signals (32, 33): -EINVAL */
        } else {
            atomic_store_explicit(&sig_caught[signo], true, memory_order_release);
        }
    }
    pthread_mutex_unlock(&sig_catch_lock);
    errno = saved;
    return rc;
}

/* Take sig_mu without being a cancellation point (the waits below are). */
static void sig_lock(void)
{
    bool prev = braid_cancel_shield(true);
    if (braid_mutex_lock(&sig_mu) != 0)
        braid__die("signal: cannot take the waiters' lock");
    braid_cancel_shield(prev);
}

static void sig_unlock(void)
{
    braid_mutex_unlock(&sig_mu);
}

/* Under sig_mu: hand deliveries since the last look to their waiters, or
 * make them pending.  Wakes the waiters if anything was new. */
static void sig_collect(void)
{
    bool any = false;
    for (int s = 1; s < SIG_N; s++) {
        if (!atomic_load_explicit(&sig_caught[s], memory_order_acquire))
            continue;
        uint32_t c = atomic_load_explicit(&sig_count[s], memory_order_seq_cst);
        if (c == sig_seen[s])
            continue;
        sig_seen[s] = c;
        if (sig_waiters[s] > 0) {
            sig_gen[s]++;
            any = true;
        } else {
            sig_pending[s] = true;
        }
    }
    if (any)
        braid_cond_broadcast(&sig_cond);
}

/* Read the pipe empty (its bytes carry nothing the counters do not). */
static void sig_drain(int fd)
{
    int saved = errno;
    char junk[256];
    while (read(fd, junk, sizeof junk) > 0) {
    }
    errno = saved;
}

int braid_signal_wait_until(int signo, uint64_t deadline_ns)
{
    int rc = braid_signal_catch(signo);
    if (rc != 0)
        return rc;
    braid__task *self = braid__task_current();
    if (self && braid__task_should_cancel(self))
        return -ECANCELED;
    int fd = atomic_load_explicit(&sig_pipe_rd, memory_order_acquire);

    sig_lock();
    sig_collect();
    if (sig_pending[signo]) {
        sig_pending[signo] = false;
        sig_unlock();
        return signo;
    }
    uint64_t gen = sig_gen[signo];
    sig_waiters[signo]++;
    for (;;) {
        if (sig_gen[signo] != gen) {
            rc = signo;
            break;
        }
        if (!sig_reader) {
            /* Take over the pipe. */
            sig_reader = true;
            sig_unlock();
            sig_drain(fd);
            sig_lock();
            sig_collect();
            int w = 0;
            if (sig_gen[signo] == gen) {
                sig_unlock();
                w = braid_wait_fd(fd, BRAID_READABLE, deadline_ns);
                sig_lock();
                sig_collect();
            }
            sig_reader = false;
            braid_cond_broadcast(&sig_cond); /* somebody else may take over */
            if (sig_gen[signo] != gen) {
                rc = signo;
                break;
            }
            if (w < 0) {
                rc = w;
                break;
            }
            continue; /* readable: drain and look again */
        }
        int w = braid_cond_wait_until(&sig_cond, &sig_mu, deadline_ns);
        if (w < 0) {
            /* A delivery that came just in time still counts. */
            sig_collect();
            rc = sig_gen[signo] != gen ? signo : w;
            break;
        }
    }
    sig_waiters[signo]--;
    sig_unlock();
    return rc;
}

int braid_signal_wait(int signo)
{
    return braid_signal_wait_until(signo, BRAID_FOREVER);
}

/* White-box hooks for tests/test_signal.c (not in braid.h): how many
 * wait for signo right now, and how many deliveries of it the handler has
 * counted. */
unsigned braid__signal_waiters(int signo);
uint32_t braid__signal_deliveries(int signo);

unsigned braid__signal_waiters(int signo)
{
    if (signo <= 0 || signo >= SIG_N)
        return 0;
    sig_lock();
    unsigned n = sig_waiters[signo];
    sig_unlock();
    return n;
}

uint32_t braid__signal_deliveries(int signo)
{
    if (signo <= 0 || signo >= SIG_N)
        return 0;
    return atomic_load_explicit(&sig_count[signo], memory_order_seq_cst);
}
