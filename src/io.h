/*
 * The reactor: readiness of file descriptors, folded into worker parking.
 *
 * Each worker owns an epoll instance and an eventfd.  A descriptor is
 * registered (edge-triggered, for reading and writing at once) with the
 * epoll of the worker whose task first has to wait on it.  Started tasks
 * never change worker, so the events of a connection's socket are then
 * handled by the very thread that runs the connection's task: no
 * cross-thread wake-up per event.
 *
 * Per descriptor number the process keeps a braid__io (a table indexed by
 * fd, chunks allocated on first use and never freed, so an event or a
 * waker never touches freed memory).  The edge-triggered
 * protocol is a sequence number: a call reads io->seq, tries the system
 * call, and on EAGAIN waits only if seq has not moved since (under io's
 * lock, where the reactor bumps it), so an event arriving between the
 * failed attempt and the wait is never lost.
 *
 * A worker with registrations parks in epoll_wait (BRAID_PARK_POLLING) and
 * is woken through its eventfd; one without parks on its futex word as
 * before.  While it runs tasks it polls epoll without blocking every
 * BRAID_EVENT_INTERVAL scheduling decisions.
 */
#ifndef BRAID_IO_H
#define BRAID_IO_H

#include "internal.h"
#include "wait.h"

typedef struct braid__io {
    braid__spin lock;
    _Atomic uint32_t gen;           /* bumped by braid_close(): a new life */
    _Atomic uint64_t seq;           /* bumped by every event */
    _Atomic uint64_t drained;       /* seq + 1 before a short stream read; 0: none */
    _Atomic bool stream;            /* a stream socket or a pipe (see io_register) */
    _Atomic bool ended;             /* an event reported hang-up or error: sticky */
    _Atomic uint32_t refs;          /* calls in progress on the descriptor */
    _Atomic bool closing;           /* braid_close() is between its steps */
    bool nopoll;                    /* epoll refused it: always ready */
    braid__worker *owner;           /* whose epoll holds it; NULL: none */
    braid__wq readers, writers, both; /* both: braid_wait_fd for either */
} braid__io;

#define BRAID_IO_CHUNK 1024

/* Per-worker epoll and eventfd. */
int braid__io_worker_init(braid__worker *w);
void braid__io_worker_destroy(braid__worker *w);

/* The shared epoll and eventfd of a runtime whose tasks migrate (made
 * after the workers; closed after them). */
int braid__io_rt_init(braid_runtime *rt);
void braid__io_rt_destroy(braid_runtime *rt);

/* Handle w's ready descriptors (with migration, the runtime's), waiting
 * for them until deadline_ns (0: no deadline) if block, else not at all.
 * Called from w's scheduler context.  Returns how many tasks it woke. */
int braid__io_poll(braid__worker *w, bool block, uint64_t deadline_ns);

/* Wake w out of braid__io_poll() (any thread). */
void braid__io_wake(braid__worker *w);

/* A descriptor braid has just created: forget whatever the table still
 * remembers of an earlier descriptor with the same number (closed with
 * close(2) behind braid's back). */
void braid__io_fresh(int fd);

/* The loop under every call that may wait on fd: fn(fd, ctx) is tried,
 * and while it returns -EAGAIN the caller waits for fd to become ready in
 * direction want (BRAID_READABLE or BRAID_WRITABLE) and tries again.
 * stream_len: for a read of that many bytes from a stream, where a shorter
 * result means the kernel's buffer is empty (0 for anything else). */
typedef ssize_t (*braid__io_fn)(int fd, void *ctx);
ssize_t braid__io_do(int fd, unsigned want, uint64_t deadline_ns, braid__io_fn fn, void *ctx,
                     size_t stream_len);

#endif
