/*
 * Seeing inside: per-worker counters, dumps, the observer thread
 * (SIGQUIT dumps, the blocked-worker watchdog, deadlock reports).
 * docs/design.md, "Seeing inside", has the design; observe.c the code.
 *
 * Counters are written by their worker alone (a relaxed load and store:
 * plain moves, on lines no other thread writes) and summed by readers.
 * Everything another thread must see of a worker's tasks (dumps) is read
 * by that worker itself, on its own thread, when it serves a job posted
 * in its `job` slot: at its periodic maintenance or when it wakes from
 * parking.  So the live lists and task records are only ever touched by
 * their own worker, and no lock is added to the hot paths.
 */
#ifndef BRAID_OBSERVE_H
#define BRAID_OBSERVE_H

#include "internal.h"

#include <pthread.h>
#include <stdio.h>

struct braid__obs_job;
struct braid__robs;

typedef struct braid__wobs {
    _Atomic uint64_t polls;         /* tasks resumed or started */
    _Atomic uint64_t steals, parks;
    _Atomic uint64_t idle_ns;       /* time asleep in park, past sleeps */
    _Atomic uint64_t parked_at;     /* when the current sleep began; 0: awake */
    _Atomic uint64_t panicked, cancelled;
    _Atomic uint64_t timers;        /* wheel.count at the last scheduling pass */
    _Atomic uint64_t io_registered; /* read-modify-writes: braid_close may run elsewhere */
    _Atomic uint64_t now_ns;        /* the clock at the last scheduling pass */
    _Atomic uint64_t io_waiting;    /* its tasks waiting on a descriptor (read-modify-writes) */
    _Atomic uint32_t asleep_for_good; /* parked with no timer */
    _Atomic(struct braid__obs_job *) job; /* a dump job waiting for this worker */
    uint64_t start_ns;
    /* The thread running the worker, for the watchdog's signal: set by it
     * under thread_lock (a spin lock, held for a pthread_kill at most)
     * while it runs the scheduler. */
    _Atomic uint32_t thread_lock;
    pthread_t thread;
    bool thread_known;
    /* The worker thread's own stack, for a sample taken outside any task
     * (set by braid__obs_worker_thread; 0: unknown, as for a driving thread). */
    uintptr_t thread_stack_lo, thread_stack_hi;
} braid__wobs;

/* Owner-only counter increment. */
static inline void braid__obs_bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Serve a job posted for w (call on w's thread, outside any task of w or
 * from the task that is its caller). */
void braid__obs_serve_slow(braid__worker *w);

static inline void braid__obs_serve(_Atomic(struct braid__obs_job *) *slot, braid__worker *w)
{
    if (BRAID_UNLIKELY(atomic_load_explicit(slot, memory_order_relaxed) != NULL))
        braid__obs_serve_slow(w);
}

/* The worker's scheduling pass (maintenance, before and after parking):
 * refresh the clock and the timer count, serve a dump job. */
void braid__obs_pass(braid__worker *w);

/* Worker set-up and the thread that runs it (sched.c). */
void braid__obs_worker_init(braid__worker *w);
/* On a thread braid started for w: note its stack for samples. */
void braid__obs_worker_thread(braid__worker *w);
void braid__obs_thread_enter(braid__worker *w);
void braid__obs_thread_leave(braid__worker *w);

/* A task of rt finished with fate on a plain thread (no worker counters). */
void braid__obs_ext_finished(braid_runtime *rt, int fate);

/* Plain threads blocked in a braid call without a deadline (for the
 * deadlock check: they cannot act).  Counted around their futex wait. */
extern _Atomic int braid__obs_blocked_threads;

/* Every started task of rt as console records (console.c), by their
 * workers as braid_dump() does.  Any thread but rt's own workers. */
void braid__obs_records(braid_runtime *rt, FILE *f);

/* The observer of a runtime: started by braid_runtime_new, stopped first
 * thing by braid_runtime_free.  Returns 0, -ENOMEM or -EAGAIN. */
int braid__obs_start(braid_runtime *rt);
void braid__obs_stop(braid_runtime *rt);

#endif
