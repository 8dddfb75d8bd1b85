/*
 * Tasks.
 *
 * A task record lives at the very top of the task's own stack, so a started
 * task costs one stack page plus its 32-byte completion record (handle.h),
 * and a sleeping task's timer entry is part of that same page.  A task that
 * has not started has no task record and no stack: only its completion
 * record, in a run queue.
 *
 * Waking protocol.  A task that waits registers itself with whatever will
 * wake it (a join record, its timer, later a channel), then parks.  The wake
 * word makes parking race-free against wakers on other threads:
 *
 *   IDLE      no wake-up pending (running, or woken and queued)
 *   PARKED    suspended; whoever takes it off PARKED must enqueue it
 *   NOTIFIED  a wake-up arrived; the next park returns at once
 *
 * braid__task_park() moves IDLE -> PARKED (or finds NOTIFIED, resets it
 * and returns); braid__wake() moves PARKED -> IDLE and enqueues the task
 * on its home worker, or anything else -> NOTIFIED.  Only read-modify-
 * writes touch the word, and the task writes it only in park: a plain
 * store of IDLE when it resumed could land after a second waker's NOTIFIED
 * while the task read that waker's condition too early (the store-buffer
 * pattern), and erase the wake-up.  A wake may therefore be spurious, and every
 * wait is a loop that re-checks its condition.  A waker may touch the task
 * only while the task cannot leave its wait: a source wakes a waiter under
 * the lock the waiter must take to unregister (the record lock for joins;
 * timers need none, being on the task's own worker), so a waiter never exits
 * with a wake-up in flight towards it.
 *
 * A task never changes worker once it has run (see sched.h), so the wheel,
 * ready list and live list it is on all belong to one thread.
 */
#ifndef BRAID_TASK_H
#define BRAID_TASK_H

#include "internal.h"
#include "fiber.h"
#include "timer.h"

enum { BRAID_WAKE_IDLE = 0, BRAID_WAKE_PARKED = 1, BRAID_WAKE_NOTIFIED = 2 };

enum { BRAID_KIND_TASK = 0, BRAID_KIND_CALL = 1 };

/* Operations a task may complete without waiting before it must yield (the
 * cooperative budget, wait.h): Tokio's figure. */
#define BRAID_BUDGET 128

/* Why a task is suspended (for dumps and traces). */
enum braid__wait_reason {
    BRAID_WAIT_NONE = 0,
    BRAID_WAIT_RUNNABLE,
    BRAID_WAIT_SLEEP,
    BRAID_WAIT_JOIN,
    BRAID_WAIT_JOIN_ALL,
    BRAID_WAIT_YIELD,
    BRAID_WAIT_NOTIFY,
    BRAID_WAIT_CHAN_SEND,
    BRAID_WAIT_CHAN_RECV,
    BRAID_WAIT_SELECT,
    BRAID_WAIT_MUTEX,
    BRAID_WAIT_RWLOCK,
    BRAID_WAIT_SEM,
    BRAID_WAIT_COND,
    BRAID_WAIT_BARRIER,
    BRAID_WAIT_ONCE,
    BRAID_WAIT_TOKEN,
    BRAID_WAIT_JOINSET,
    BRAID_WAIT_WATCH,
    BRAID_WAIT_IO,
    BRAID_WAIT_BLOCKING,
};

/* A reason's name for dumps and traces ("sleep", "channel receive", ...). */
const char *braid__wait_reason_name(unsigned r);

#define BRAID_NAME_MAX 32

/* What spawn options add to a task; owned by its record, then by the task. */
typedef struct braid__spawn_ext {
    void *arg;
    void (*arg_drop)(void *arg);
    int stack_cls;
    char name[BRAID_NAME_MAX];
} braid__spawn_ext;

typedef struct braid__panic_info braid__panic_info;
typedef struct braid__group braid__group;

struct braid__task {
    /* First cache line: what every switch touches. */
    braid__worker *home;
    braid__task *next;              /* ready, yield or inbox list */
    _Atomic int wake;
    _Atomic bool cancelled;
    bool shield;
    uint8_t kind;
    uint8_t wait_reason;
    braid__fiber fiber;             /* its saved stack pointer first */
    /* The rest. */
    bool panicking;
    bool timer_fired;
    bool timed;                     /* a wait with its timer armed: stays home */
    _Atomic bool off_cpu;           /* migrate: its context is saved (sched.c) */
    uint16_t budget;                /* operations left before a forced yield */
    int stack_cls;
    uint64_t id;                    /* a call's id is its caller's */
    /* For dumps: when it parked, or was made runnable (started, woken,
     * yielded); a running task keeps the stamp of the last.  By the clock
     * of its worker's last scheduling pass (a plain thread's wake: the
     * real one), so never later than the event; cheap, here on the line
     * park already writes.  Atomic (relaxed): a waker on another thread
     * stamps the wake while dumps read it. */
    _Atomic uint64_t since_ns;
    braid__rec *rec;                /* NULL for join_all calls */
    uint32_t rec_index;
    braid_fn fn;
    void *arg;
    braid__group *group;            /* calls: their join_all */
    size_t call_index;
    braid_defer *defers;
    struct braid__local_slot *locals;
    uint32_t nlocals;
    braid__timer timer;
    braid__task *live_prev, *live_next;
    void *slot;                     /* the stack slot this record sits in */
    struct braid__extra_stack *extra_stacks; /* stacks taken after faults */
    braid__spawn_ext *ext;
    braid__panic_info *panic;
    /* What it waits for (a joined task's id, a descriptor), for dumps;
     * set with those wait reasons only.  Its spawn site stays beside its
     * completion record (handle.h). */
    uint64_t wait_obj;
    uint64_t busy_ns;               /* time run, while the console is on */
};

/* The worker running on this thread, if any, and the task it is running
 * (NULL on a plain thread and in the scheduler context).  Thread-locals
 * rather than worker fields: one TLS load, and readable from a signal
 * handler. */
extern BRAID_TLS braid__worker *braid__tls_worker;
extern BRAID_TLS braid__task *braid__tls_task;

static inline braid__task *braid__task_current(void)
{
    return braid__tls_task;
}

/* Stamp t's new state with the time now_ns (see since_ns). */
static inline void braid__task_stamp(braid__task *t, uint64_t now_ns)
{
    atomic_store_explicit(&t->since_ns, now_ns, memory_order_relaxed);
}

/* Suspend until woken.  Returns 0 when woken (possibly spuriously), or
 * -ECANCELED without suspending if cancellable and the task is cancelled and
 * not shielded.  The caller must have registered with its wake sources. */
int braid__task_park(braid__task *t, bool cancellable);

/* Whether a cancellation point should fire now. */
static inline bool braid__task_should_cancel(const braid__task *t)
{
    return !t->shield && atomic_load_explicit(&t->cancelled, memory_order_acquire);
}

/* migrate: re-home on w, the calling thread's worker, the parked task t
 * that the caller owns (woken, queued nowhere).  Waits until t's old
 * worker has saved its registers. */
void braid__task_move(braid__task *t, struct braid__worker *w);

/* Wake t (see the protocol above).  Any thread. */
void braid__wake(braid__task *t);

/* braid__wake in two steps, for a waker that must release the waiter in
 * between (wait.c): mark t woken (its only access to t), which returns
 * whether t was parked; if so, enqueue it (t cannot run before that). */
static inline bool braid__wake_mark(braid__task *t)
{
    /* acq_rel: the condition this waker set is visible to the task when it
     * resumes or when its next park reads NOTIFIED (NOTIFIED is written
     * again over NOTIFIED for that); PARKED means we own enqueueing it. */
    int v = atomic_load_explicit(&t->wake, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &t->wake, &v, v == BRAID_WAKE_PARKED ? BRAID_WAKE_IDLE : BRAID_WAKE_NOTIFIED,
        memory_order_acq_rel, memory_order_relaxed))
        ;
    return v == BRAID_WAKE_PARKED;
}

void braid__wake_enqueue(braid__task *t);

/* Put t (the running task) behind the runnable work, without the
 * cancellation check of braid_yield (for the cooperative budget). */
void braid__task_yield_now(braid__task *t);

/* Mark t cancelled and wake it.  The caller guarantees t stays alive. */
void braid__task_cancel_running(braid__task *t);

/* A fate for braid__task_exit only: BRAID_OK even if a cancel was requested
 * meanwhile (a blocking-pool proxy whose job ran: its value is real). */
#define BRAID__FATE_OK_FINAL 3

/* End the running task with the given fate; never returns. */
BRAID_NORETURN void braid__task_exit(braid__task *t, int fate, void *value);

/* Start the task of a queued record that the caller has just taken from a
 * queue: returns the new task (ready to be switched to, homed on w), or
 * NULL if the entry was stale or the task ended without running. */
braid__task *braid__task_start_queued(braid__worker *w, uint64_t handle);

/* Lay out a fresh task record at the top of stack slot (of class cls) and
 * make its fiber; the caller fills in the rest. */
braid__task *braid__task_init(braid__worker *w, void *slot, int cls, uint64_t id, braid_fn fn,
                              void *arg);

/* Spawn on rt; w is the calling thread's worker if it belongs to rt and a
 * task runs on it (its ring is used), else NULL (the injection queue).
 * file and line: the spawn site (file NULL: none recorded). */
int braid__spawn(braid_runtime *rt, braid__worker *w, braid_task *out, const braid_spawn_opts *o,
                 braid_fn fn, void *arg, const char *file, int line);

/* A join_all call ended (joinall.c). */
void braid__call_finish(braid__task *t, int fate, void *value);

/* Cancel every live task of w; used by shutdown. */
void braid__task_cancel_all(braid__worker *w);

/* Release what a dead task still holds once nothing runs on its stack. */
void braid__task_release(braid__worker *w, braid__task *t);

/* Run the task its donor's record now holds, from the top of the stack the
 * caller, that donor, is still running on.  Never returns. */
BRAID_NORETURN void braid__task_rerun(braid__task *t);

#endif
