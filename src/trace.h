/*
 * The execution trace (braid_config.trace_path or BRAID_TRACE=file.json).
 *
 * Recording.  Each worker appends fixed-size events to its own buffer, a
 * list of chunks that only its thread touches: no lock, no atomic, one
 * clock read per event.  Other threads (plain threads spawning or waking,
 * the blocking pool's threads) append to one shared buffer under a mutex.
 * The buffers are read once, at the runtime's end, after every thread that
 * could write them has been joined.  Memory is bounded: the buffers take
 * their chunks from one budget of trace_max_bytes (an atomic operation per
 * chunk, not per event), and the events that do not fit are dropped and
 * counted (the file's otherData.dropped_events).
 *
 * Writing.  trace.c merges the buffers by time and writes Chrome Trace
 * Event JSON (ui.perfetto.dev, chrome://tracing): one track per worker
 * thread with a slice per run of a task, one track per task with its
 * states (queued, running, waiting and why, runnable), instants for
 * spawn, wake, cancel, steal, panic, and flow arrows from a spawn or a
 * wake to the run it caused.
 *
 * When tracing is off, every hook is one test of a pointer that is NULL
 * (the worker's or the runtime's trace field): BRAID__TRACE and
 * BRAID__TRACING below.
 */
#ifndef BRAID_TRACE_H
#define BRAID_TRACE_H

#include "internal.h"

enum braid__trace_kind {
    BRAID_TR_SPAWN = 1, /* task: the new id, arg: the spawner's id (0: a thread) */
    BRAID_TR_START,     /* task record laid out; reason: kind; a name slot may follow */
    BRAID_TR_RUN,       /* switched to; reason: BRAID_KIND_* */
    BRAID_TR_SUSPEND,   /* switched away from; reason: its wait_reason */
    BRAID_TR_END,       /* arg: the fate; reason: BRAID_KIND_* */
    BRAID_TR_WAKE,      /* task: woken, arg: the waker's id (0: none) */
    BRAID_TR_CANCEL,    /* task: cancelled, arg: the canceller's id */
    BRAID_TR_DROP,      /* never started; arg: the fate */
    BRAID_TR_STEAL,     /* task: the one started, arg: the victim's index */
    BRAID_TR_PARK,
    BRAID_TR_UNPARK,
};

typedef struct braid__trace_buf braid__trace_buf;
typedef struct braid__trace braid__trace;

#define BRAID__TRACING(x) BRAID_UNLIKELY((x)->trace != NULL)

/* Record an event on worker w's buffer (w: the calling thread's worker). */
#define BRAID__TRACE(w, kind, reason, task, arg)                               \
    do {                                                                       \
        if (BRAID__TRACING(w))                                                 \
            braid__trace_rec((w)->trace, (kind), (reason), (task), (arg));     \
    } while (0)

/* Record an event of runtime rt from any thread. */
#define BRAID__TRACE_RT(rt, kind, reason, task, arg)                           \
    do {                                                                       \
        if (BRAID__TRACING(rt))                                                \
            braid__trace_rec_rt((rt), (kind), (reason), (task), (arg));        \
    } while (0)

void braid__trace_rec(braid__trace_buf *b, int kind, unsigned reason, uint64_t task,
                      uint64_t arg);
void braid__trace_rec_rt(braid_runtime *rt, int kind, unsigned reason, uint64_t task,
                         uint64_t arg);

/* The running task from suspends, or ends if from_ends (NULL: none), and to
 * starts running (NULL: the scheduler context). */
void braid__trace_switch(braid__trace_buf *b, const braid__task *from, bool from_ends,
                         const braid__task *to);

/* The running task t ends with the given fate (braid__task_exit's). */
void braid__trace_end(braid__trace_buf *b, const braid__task *t, int fate);

/* A task record was laid out (its name is recorded with it). */
void braid__trace_start(braid__trace_buf *b, const braid__task *t);

/* The calling thread makes t runnable (before queueing it: t may be gone
 * after). */
void braid__trace_wake(const braid__task *t);

/* Set up tracing for a runtime being built, if its configuration or the
 * environment asks for it: rt->trace and each worker's trace.  Returns 0
 * or -ENOMEM. */
int braid__trace_init(braid_runtime *rt);

/* Write the trace file (when the runtime was fully built) and free it;
 * every thread that could record has been joined. */
void braid__trace_finish(braid_runtime *rt, bool write);

#endif
