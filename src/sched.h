/*
 * The scheduler: workers, their queues, parking, stealing.
 *
 * Each worker is one thread with a loop on its own native stack (the
 * "scheduler context").  A task that gives up the CPU picks the next task
 * itself, on its own stack, and switches to it directly (pick_local in
 * sched.c); only when there is no cheap local work, or when the periodic
 * work is due, does it switch to the scheduler context, which looks further
 * (sched_next), steals, or parks.  The order:
 *
 *   1. every 61st decision: the periodic work (timers, the inbox, the
 *      shutdown sweep) and the injection queue first, so that none of them
 *      can be starved by local work;
 *   2. the LIFO slot: the task most recently woken by the running task
 *      (message passing hands the CPU straight to the receiver); at most 3
 *      times in a row, so two tasks waking each other cannot starve the rest;
 *   3. the ready list: started tasks that were woken (FIFO);
 *   4. the inbox: started tasks woken from other threads (an MPSC stack);
 *   5. the newest spawn, then the local ring: tasks never started (FIFO);
 *   6. the yield list: tasks that called braid_yield() go behind all of the
 *      above, as yielding means "after the runnable work";
 *      (1-6 are pick_local; the rest only in the scheduler context:)
 *   7. the injection queue;
 *   8. the timers;
 *   9. other workers' rings and newest spawns: steal half of a ring;
 *  10. park.
 *
 * Started tasks never change worker.  The compiler caches the address of
 * errno (glibc's __errno_location is declared const) and of other
 * thread-locals in callee-saved registers across calls, so a task resumed
 * on another thread would use the old thread's errno.  Hence only tasks that
 * have never run (ring entries) are stealable, and a wake always sends a
 * started task back to its home worker: directly into the ready list or LIFO
 * slot when the waker runs on that worker, else through the home's inbox
 * and, if the home is parked, a futex wake.  This also keeps a pair of tasks
 * that talk to each other on one core.
 *
 * Finding work for idle workers (after Tokio's idle protocol):
 *
 *   - "searching" counts workers looking for work to steal; at most half of
 *     the workers may search at once;
 *   - a worker that adds stealable work calls notify: if nobody is
 *     searching and some worker is parked, it wakes exactly one, which
 *     starts out searching (the CAS of searching from 0 to 1 decides which
 *     notifier does it, so a burst of spawns wakes one worker, not a herd);
 *   - a searcher that finds work stops searching; if it was the last
 *     searcher it notifies once more, so workers ramp up one by one while
 *     there is work;
 *   - a worker about to park publishes that it is parked (its idle bit),
 *     then looks at every queue once more: a notifier that pushed work
 *     before seeing the idle bit is thereby not missed (both sides use
 *     sequentially consistent operations).
 *
 * A spawn from a task does not notify at once when it leaves just one task
 * waiting: the spawner's worker will most likely run it as soon as the
 * spawner suspends, and waking another CPU costs tens of microseconds.  The
 * notification is sent at the next scheduling decision if the task is still
 * waiting by then, and at once when a second one joins it.
 *
 * In deterministic mode (det.h) steps 2-6 become one draw, by a seeded
 * PRNG, among all the runnable tasks (yielders only when nothing else is).
 *
 * Parking is one function (park in sched.c) waiting, with the next timer
 * deadline as timeout, on the worker's futex word, or in epoll_wait once
 * the worker has descriptors registered (io.h).
 */
#ifndef BRAID_SCHED_H
#define BRAID_SCHED_H

#include "internal.h"
#include "fiber.h"
#include "handle.h"
#include "queue.h"
#include "stack.h"
#include "task.h"
#include "timer.h"
#include "trace.h"
#include "observe.h"
#include "wait.h"

#include <pthread.h>
#include <signal.h>

#define BRAID_EVENT_INTERVAL 61
#define BRAID_LIFO_CAP 3
#define BRAID_COLOURS 16 /* cache lines of stagger between task records */

/* POLLING: parked in epoll_wait (io.h), woken through the eventfd. */
enum {
    BRAID_PARK_RUNNING = 0,
    BRAID_PARK_PARKED = 1,
    BRAID_PARK_NOTIFIED = 2,
    BRAID_PARK_POLLING = 3
};

struct braid__worker {
    /* Owner-only state. */
    braid_runtime *rt;
    unsigned index;
    braid__trace_buf *trace;        /* NULL unless tracing (trace.h) */
    braid__fiber sched;             /* the scheduler context */
    braid__task *lifo;
    unsigned lifo_streak;
    braid__task *ready_head, *ready_tail;
    braid__task *yield_head, *yield_tail;
    braid__task *live;              /* started tasks homed here, for shutdown and
                                       dumps; under live_lock when tasks migrate */
    uintptr_t prev;                 /* the task just switched away from: ended
                                       (bit 0 set; its stack is still in use),
                                       or parked, with migration (sched.c) */
    uint32_t tick;
    braid__rec *watch;              /* current-thread: block_on's root record */
    braid__det *det;                /* deterministic mode (det.h), else NULL */
    bool searching;
    bool notify_pending;
    bool shutdown_seen;
    uint64_t rng;
    unsigned colour;                /* of the next task started (task.c) */
    braid__task *donor;             /* an ended task whose record and stack
                                       the next task started may take */
    int *errno_loc;                 /* the worker thread's errno */
    bool timing;                    /* the console is on: account busy time */
    bool switch_hooks;              /* trace or timing: one test per switch */
    bool migrate;                   /* rt->migrate, on this hot line */
    uint64_t run_start;             /* timing: when the running task started */
    braid__wheel wheel;
    int epfd, evfd;                 /* the reactor (io.h) */
    bool has_io;                    /* some descriptor is registered with epfd */
    braid__rec_cache recs;
    braid__stack_cache stacks;
    /* Fault handling (panic.c). */
    void *altstack, *rescue;
    size_t altstack_size, rescue_size;
    stack_t old_altstack;
    bool altstack_installed;
    int fault_sig;
    uintptr_t fault_addr, fault_pc;
    bool fault_overflow;

    /* Read by other threads. */
    _Atomic uint64_t spawned, finished;

    /* Counters and dump jobs (observe.h): written by the worker, read by
     * others. */
    BRAID_ALIGNED_LINE braid__wobs obs;

    /* Shared with thieves, wakers and notifiers: separate cache lines. */
    BRAID_ALIGNED_LINE braid__ring ring;
    BRAID_ALIGNED_LINE _Atomic(braid__task *) inbox;
    BRAID_ALIGNED_LINE _Atomic uint32_t park;
    pthread_t thread;
    bool has_thread;
    braid__spin live_lock;          /* migrate: guards live against movers */
    /* migrate: tasks the scheduler context woke (events, timers), which an
     * idle worker may take over (sched.c, "shared queue"). */
    braid__spin sq_lock;
    braid__task *sq_head, *sq_tail;
    _Atomic uint32_t sq_len;
};

struct braid_runtime {
    braid_config cfg;
    unsigned nworkers;
    braid__worker **workers;
    braid__inject inject;
    braid__stack_pool stacks;
    braid__rec_pool recs;
    unsigned idle_words;
    _Atomic uint64_t *idle;         /* bit i: worker i is parked and notifiable */
    /* Each group on its own cache line: the flags are read by every task
     * start, the counters written by every spawn from outside. */
    BRAID_ALIGNED_LINE _Atomic uint32_t searching;
    BRAID_ALIGNED_LINE _Atomic int shutdown;
    _Atomic int stop;
    BRAID_ALIGNED_LINE _Atomic uint64_t ext_finished;
    _Atomic uint32_t quiesce;       /* bumped when a worker idles during shutdown */
    _Atomic bool tainted;
    _Atomic bool driving;           /* current-thread: a block_on runs the worker */
    pthread_t driver;               /* current-thread: the one thread that drives it */
    bool has_driver;
    uint64_t park_deadline;         /* current-thread shutdown: latest wake-up */
    struct braid__bpool *blocking;  /* the blocking pool (blocking.h) */
    braid__det *det;                /* deterministic mode (det.h), else NULL */
    braid__trace *trace;            /* NULL unless tracing (trace.h) */
    braid_runtime *reg_prev, *reg_next; /* braid__runtimes (debug.c) */
    struct braid__robs *obs;        /* the observer (observe.c) */
    struct braid__console *console; /* the live console (console.c), or NULL */
    /* Migration (cfg.migrate with two workers or more): one epoll for every
     * descriptor, which the parked worker holding poller waits on, woken
     * through evfd (io.c, sched.c). */
    bool migrate;
    int epfd, evfd;                 /* -1 unless migrate */
    BRAID_ALIGNED_LINE _Atomic(braid__worker *) poller;
    _Atomic bool io_used;           /* migrate: some descriptor is registered */
};

/* With migration, wakers on other workers move tasks between live lists:
 * every use of w->live then holds w's lock. */
static inline void braid__live_lock(braid__worker *w)
{
    if (BRAID_UNLIKELY(w->migrate))
        braid__spin_lock(&w->live_lock);
}

static inline void braid__live_unlock(braid__worker *w)
{
    if (BRAID_UNLIKELY(w->migrate))
        braid__spin_unlock(&w->live_lock);
}

/* Whether w should look at epoll when it runs its periodic work (io.c). */
static inline bool braid__io_used(const braid__worker *w)
{
    return w->has_io ||
           (w->rt->migrate && atomic_load_explicit(&w->rt->io_used, memory_order_relaxed));
}

/* Arm the running task t's timer for deadline_ns in its home worker's
 * wheel: false (and nothing armed) if that is already due.  Until
 * braid__task_timer_done(), t does not migrate: only the home worker
 * touches its wheel. */
static inline bool braid__task_timer_arm(braid__task *t, uint64_t deadline_ns)
{
    t->timer_fired = false;
    t->timed = braid__timer_arm(&t->home->wheel, &t->timer, deadline_ns);
    return t->timed;
}

/* After a wait with a timer armed: disarm it unless it fired. */
static inline void braid__task_timer_done(braid__task *t)
{
    if (!t->timer_fired)
        braid__timer_disarm(&t->home->wheel, &t->timer);
    t->timed = false;
}

/* Run w's scheduling loop on the calling thread until until(arg) holds
 * (checked whenever the worker is about to park), or until the runtime
 * stops when until is NULL. */
void braid__sched_run(braid__worker *w, bool (*until)(void *), void *arg);

/* Switch from the running task t back to the scheduler.  Returns when t
 * is resumed. */
void braid__sched_suspend(braid__task *t);

/* Leave the running task t for good (it has ended). */
BRAID_NORETURN void braid__sched_exit(braid__task *t);

/* Finish a switch: release the task that ended just before.  Every context
 * calls it when it resumes (new tasks in their entry function). */
void braid__sched_after_switch(braid__worker *w);

/* migrate: queue t, woken by w's scheduler context, where idle workers
 * can take it (sched.c). */
void braid__sched_share(braid__worker *w, braid__task *t);

/* Put a started task on w's run queues; w must be the calling thread's
 * worker.  From a task the LIFO slot is used, else the ready list. */
void braid__sched_enqueue_local(braid__worker *w, braid__task *t);

/* Put a started task at the back of w's ready list (owner thread only). */
void braid__sched_enqueue_ready(braid__worker *w, braid__task *t);

/* Queue a started task on its home worker from another thread. */
void braid__sched_enqueue_remote(braid__task *t);

/* Queue the running task behind all runnable work (braid_yield). */
void braid__sched_yield_enqueue(braid__worker *w, braid__task *t);

/* Queue a never-started task (its handle) for w, from its owner thread;
 * notifies idle workers as described above.  False on out of memory. */
bool braid__sched_push_new(braid__worker *w, uint64_t handle);

/* Take back h if it is w's newest spawn (to run it inline). */
bool braid__sched_take_newest(braid__worker *w, uint64_t handle);

/* Queue a never-started task from outside the runtime's workers. */
bool braid__sched_inject(braid_runtime *rt, uint64_t handle);

/* Wake a parked worker to look for work, if nobody is searching. */
void braid__sched_notify(braid_runtime *rt);

/* Wake w whatever it is doing (for shutdown and targeted work). */
void braid__sched_unpark(braid__worker *w);

/* Tasks spawned and finished on rt so far, summed over its workers and
 * the outside (runtime.c).  Any thread. */
uint64_t braid__rt_spawned(braid_runtime *rt);
uint64_t braid__rt_finished(braid_runtime *rt);

/* Worker construction. */
int braid__worker_init(braid__worker *w, braid_runtime *rt, unsigned index);
void braid__worker_destroy(braid__worker *w);

#endif
