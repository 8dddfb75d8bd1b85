#include "sched.h"
#include "console.h"
#include "det.h"
#include "panic.h"
#include "io.h"
#include "util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

BRAID_TLS braid__worker *braid__tls_worker;
BRAID_TLS braid__task *braid__tls_task;
#ifdef BRAID_TSAN
_Atomic uint64_t braid__fence_word;
#endif

/* ---- owner-only lists ---------------------------------------------------- */

static inline void list_push(braid__task **head, braid__task **tail, braid__task *t)
{
    t->next = NULL;
    if (*tail)
        (*tail)->next = t;
    else
        *head = t;
    *tail = t;
}

static inline braid__task *ready_pop(braid__worker *w)
{
    braid__task *t = w->ready_head;
    if (t) {
        /* Task records sit on separate stack pages and are usually cold:
         * fetch the next one now, it is likely the next to run. */
        if (t->next)
            __builtin_prefetch(t->next);
        w->ready_head = t->next;
        if (!w->ready_head)
            w->ready_tail = NULL;
        t->next = NULL;
    }
    return t;
}

/* Move the yield list to the back of the ready list. */
static void release_yielders(braid__worker *w)
{
    if (!w->yield_head)
        return;
    if (w->ready_tail)
        w->ready_tail->next = w->yield_head;
    else
        w->ready_head = w->yield_head;
    w->ready_tail = w->yield_tail;
    w->yield_head = w->yield_tail = NULL;
}

/* Move everything woken from other threads to the ready list, oldest first.
 * Returns whether anything was there. */
static bool drain_inbox(braid__worker *w)
{
    if (!atomic_load_explicit(&w->inbox, memory_order_relaxed))
        return false;
    /* Acquire pairs with the pushers' release: their writes to t->next and
     * everything they did before waking are visible. */
    braid__task *t = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
    braid__task *rev = NULL;
    while (t) {
        braid__task *n = t->next;
        t->next = rev;
        rev = t;
        t = n;
    }
    while (rev) {
        braid__task *n = rev->next;
        list_push(&w->ready_head, &w->ready_tail, rev);
        rev = n;
    }
    return true;
}

/* ---- enqueueing ---------------------------------------------------------- */

void braid__sched_enqueue_local(braid__worker *w, braid__task *t)
{
    if (braid__tls_task) {
        /* Woken by the running task: it runs next; a task displaced from the
         * slot keeps its turn at the back of the ready list. */
        if (w->lifo)
            list_push(&w->ready_head, &w->ready_tail, w->lifo);
        w->lifo = t;
    } else {
        list_push(&w->ready_head, &w->ready_tail, t);
    }
}

void braid__sched_enqueue_ready(braid__worker *w, braid__task *t)
{
    list_push(&w->ready_head, &w->ready_tail, t);
}

void braid__sched_unpark(braid__worker *w)
{
    /* NOTIFIED survives until the worker's next park, so a wake that arrives
     * while it is still running is not lost. */
    uint32_t was = atomic_exchange_explicit(&w->park, BRAID_PARK_NOTIFIED, memory_order_seq_cst);
    if (was == BRAID_PARK_PARKED)
        braid__futex_wake(&w->park, 1);
    else if (was == BRAID_PARK_POLLING)
        braid__io_wake(w);
}

static inline bool is_parked(uint32_t park)
{
    return park == BRAID_PARK_PARKED || park == BRAID_PARK_POLLING;
}

void braid__sched_enqueue_remote(braid__task *t)
{
    braid__worker *home = t->home;
    braid__task *head = atomic_load_explicit(&home->inbox, memory_order_relaxed);
    do {
        t->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&home->inbox, &head, t, memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* t may already be running and gone: only home is touched from here.
     * Sequentially consistent with the worker's "publish PARKED, then look at
     * the inbox": one of the two sides sees the other. */
    if (is_parked(atomic_load_explicit(&home->park, memory_order_seq_cst)))
        braid__sched_unpark(home);
}

static void notify(braid_runtime *rt, bool fenced);

/* ---- the shared queue (migrate) -------------------------------------------
 * Started tasks that the scheduler context woke: events the worker polled,
 * timers.  The owner runs them one at a time; an idle worker takes half of
 * them if the owner is held up (preempted by the kernel, or running a long
 * task), as Tokio's workers steal from each other's local queues. */

void braid__sched_share(braid__worker *w, braid__task *t)
{
    braid__spin_lock(&w->sq_lock);
    list_push(&w->sq_head, &w->sq_tail, t);
    uint32_t len = braid__load_relaxed(&w->sq_len) + 1;
    atomic_store_explicit(&w->sq_len, len, memory_order_relaxed);
    braid__spin_unlock(&w->sq_lock);
    /* Beyond the one task the owner runs next, get an idle worker to take
     * some.  It may be the poller, asleep in an epoll whose events this
     * worker's own poll has just taken (its periodic work, a timer's
     * I/O check): nothing else would wake it. */
    if (len == 2)
        notify(w->rt, true);
}

/* Take up to max tasks from v's shared queue, oldest first, as a list. */
static braid__task *sq_take(braid__worker *v, uint32_t max)
{
    if (!atomic_load_explicit(&v->sq_len, memory_order_relaxed))
        return NULL;
    braid__spin_lock(&v->sq_lock);
    braid__task *head = v->sq_head, *t = head;
    uint32_t n = 0;
    while (t && ++n < max)
        t = t->next;
    if (t) {
        v->sq_head = t->next;
        t->next = NULL;
    } else {
        v->sq_head = NULL;
    }
    if (!v->sq_head)
        v->sq_tail = NULL;
    atomic_store_explicit(&v->sq_len, braid__load_relaxed(&v->sq_len) - n,
                          memory_order_relaxed);
    braid__spin_unlock(&v->sq_lock);
    return head;
}

/* An idle worker takes half of a held-up worker's shared queue; the tasks
 * move to it (outside the queue's lock: moving takes the live locks). */
static braid__task *sq_steal(braid__worker *w, braid__worker *v)
{
    uint32_t len = atomic_load_explicit(&v->sq_len, memory_order_relaxed);
    braid__task *t = len ? sq_take(v, (len + 1) / 2) : NULL;
    if (!t)
        return NULL;
    braid__task *first = t;
    for (braid__task *n; t; t = n) {
        n = t->next;
        t->next = NULL;
        braid__task_move(t, w);
        if (t != first) /* stealable again, should this worker be held up */
            braid__sched_share(w, t);
    }
    return first;
}

void braid__sched_yield_enqueue(braid__worker *w, braid__task *t)
{
    list_push(&w->yield_head, &w->yield_tail, t);
}

/* ---- idle workers -------------------------------------------------------- */

static bool try_start_searching(braid__worker *w)
{
    if (w->searching)
        return true;
    braid_runtime *rt = w->rt;
    uint32_t n = atomic_load_explicit(&rt->searching, memory_order_relaxed);
    do {
        if (2 * n >= rt->nworkers)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&rt->searching, &n, n + 1, memory_order_seq_cst,
                                                    memory_order_relaxed));
    w->searching = true;
    return true;
}

static void stop_searching(braid__worker *w, bool found_work)
{
    if (!w->searching)
        return;
    w->searching = false;
    uint32_t was = atomic_fetch_sub_explicit(&w->rt->searching, 1, memory_order_seq_cst);
    if (was == 1 && found_work)
        braid__sched_notify(w->rt); /* the last searcher hands the search on */
}

static inline void idle_set(braid_runtime *rt, unsigned i)
{
    atomic_fetch_or_explicit(&rt->idle[i / 64], UINT64_C(1) << (i % 64), memory_order_seq_cst);
}

/* Clear worker i's idle bit; true if this call cleared it. */
static inline bool idle_clear(braid_runtime *rt, unsigned i)
{
    uint64_t bit = UINT64_C(1) << (i % 64);
    return atomic_fetch_and_explicit(&rt->idle[i / 64], ~bit, memory_order_seq_cst) & bit;
}

/* Wake one parked worker to search, unless one is searching already.
 *
 * fenced: whether to order the caller's queue push before the checks (the
 * Dekker handshake with park()).  Work pushed to the injection queue needs
 * it, or it could sit there with every worker asleep.  Work pushed to the
 * caller's own ring does not: the owner is running and will take it itself
 * if the wake-up is missed, so spawning skips the fence (as Go's runqput
 * and wakep do) and a missed notification only costs parallelism. */
static void notify(braid_runtime *rt, bool fenced)
{
    if (fenced)
        braid__fence();
    /* Sequentially consistent loads (plain loads on x86): a caller whose
     * push was itself a sequentially consistent read-modify-write needs no
     * fence before them. */
    if (atomic_load_explicit(&rt->searching, memory_order_seq_cst) != 0)
        return; /* a searcher will find the work */
    bool any = false;
    for (unsigned k = 0; k < rt->idle_words && !any; k++)
        any = atomic_load_explicit(&rt->idle[k], memory_order_seq_cst) != 0;
    if (!any)
        return;
    /* Only the notifier that moves searching from 0 to 1 wakes a worker; the
     * count it adds belongs to the worker it wakes. */
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&rt->searching, &zero, 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return;
    for (unsigned k = 0; k < rt->idle_words; k++) {
        uint64_t bits = atomic_load_explicit(&rt->idle[k], memory_order_relaxed);
        while (bits) {
            unsigned i = k * 64 + (unsigned)__builtin_ctzll(bits);
            if (idle_clear(rt, i)) {
                braid__sched_unpark(rt->workers[i]);
                return;
            }
            bits = atomic_load_explicit(&rt->idle[k], memory_order_relaxed);
        }
    }
    atomic_fetch_sub_explicit(&rt->searching, 1, memory_order_seq_cst);
}

/* notify() for work published by a plain (release) store: the newest-spawn
 * slot.  A searcher finds the work only if it can see it, and the store may
 * not be visible yet when the searcher, giving up, looks one last time
 * (park's has_work): the work would then wait for its own worker, which a
 * task that does not suspend may hold for good (a qemu-aarch64 run of
 * test_trace's steal waited 60 s).  With a searcher counted, the fence
 * makes the store visible before searching is read again: a searcher
 * still counted then looks after it.  Without one, notify() wakes a
 * worker anyway; the fence is paid only while someone searches. */
static void notify_after_store(braid_runtime *rt)
{
    if (atomic_load_explicit(&rt->searching, memory_order_seq_cst) != 0) {
        braid__fence();
        if (atomic_load_explicit(&rt->searching, memory_order_seq_cst) != 0)
            return;
    }
    notify(rt, false);
}

void braid__sched_notify(braid_runtime *rt)
{
    notify(rt, true);
}

/* ---- never-started tasks ------------------------------------------------- */

bool braid__sched_push_new(braid__worker *w, uint64_t handle)
{
    uint64_t older = atomic_load_explicit(&w->ring.newest, memory_order_relaxed);
    if (older) {
        /* The previous newest becomes stealable; with two tasks waiting,
         * another worker is worth waking. */
        if (BRAID_UNLIKELY(braid__ring_push(&w->ring, &w->rt->inject, older) == 0))
            return false;
        atomic_store_explicit(&w->ring.newest, handle, memory_order_release);
        notify_after_store(w->rt);
        return true;
    }
    /* Release: a thief that reads the slot sees the record. */
    atomic_store_explicit(&w->ring.newest, handle, memory_order_release);
    if (braid__ring_len(&w->ring))
        notify_after_store(w->rt);
    else
        w->notify_pending = true;
    return true;
}

bool braid__sched_take_newest(braid__worker *w, uint64_t handle)
{
    if (atomic_load_explicit(&w->ring.newest, memory_order_relaxed) != handle)
        return false;
    atomic_store_explicit(&w->ring.newest, 0, memory_order_relaxed);
    return true;
}

bool braid__sched_inject(braid_runtime *rt, uint64_t handle)
{
    if (!braid__inject_push(&rt->inject, &handle, 1, true))
        return false;
    notify(rt, false); /* the push's read-modify-write was the fence */
    return true;
}

/* Take a batch from the injection queue into the ring and start one. */
static braid__task *start_from_inject(braid__worker *w)
{
    braid_runtime *rt = w->rt;
    uint64_t batch[BRAID_RING_CAP / 2];
    for (;;) {
        size_t len = braid__inject_len(&rt->inject);
        if (!len)
            return NULL;
        size_t want = BRAID_MIN(len / rt->nworkers + 1, (size_t)BRAID_RING_CAP / 2);
        want = BRAID_MIN(want, (size_t)braid__ring_free(&w->ring) + 1);
        size_t n = braid__inject_pop(&rt->inject, batch, want);
        if (!n)
            return NULL;
        if (n > 1)
            braid__ring_push_batch(&w->ring, batch + 1, (uint32_t)(n - 1));
        braid__task *t = braid__task_start_queued(w, batch[0]);
        if (t)
            return t;
        uint64_t h;
        while (braid__ring_pop(&w->ring, &h))
            if ((t = braid__task_start_queued(w, h)))
                return t;
    }
}

static braid__task *start_from_ring(braid__worker *w)
{
    uint64_t h = atomic_load_explicit(&w->ring.newest, memory_order_relaxed);
    if (h) {
        atomic_store_explicit(&w->ring.newest, 0, memory_order_relaxed);
        braid__task *t = braid__task_start_queued(w, h);
        if (t)
            return t;
    }
    while (braid__ring_pop(&w->ring, &h)) {
        braid__task *t = braid__task_start_queued(w, h);
        if (t)
            return t;
    }
    return NULL;
}

static braid__task *steal(braid__worker *w)
{
    braid_runtime *rt = w->rt;
    if (rt->nworkers < 2 || !try_start_searching(w))
        return NULL;
    /* xorshift: a cheap random first victim spreads thieves out. */
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    unsigned start = (unsigned)(w->rng % rt->nworkers);
    for (unsigned k = 0; k < rt->nworkers; k++) {
        braid__worker *v = rt->workers[(start + k) % rt->nworkers];
        uint64_t h;
        if (v == w)
            continue;
        braid__task *s;
        if (BRAID_UNLIKELY(w->migrate) && (s = sq_steal(w, v))) {
            BRAID__TRACE(w, BRAID_TR_STEAL, 0, s->id, v->index);
            return s;
        }
        if (braid__ring_steal(&v->ring, &w->ring, &h)) {
            braid__task *t = braid__task_start_queued(w, h);
            if (!t)
                t = start_from_ring(w);
            if (t) {
                BRAID__TRACE(w, BRAID_TR_STEAL, 0, t->id, v->index);
                return t;
            }
        }
        /* The victim's newest spawn: it runs it itself when its current
         * task suspends, but we are idle now.  Whoever claims it first
         * starts it. */
        h = atomic_load_explicit(&v->ring.newest, memory_order_acquire);
        braid__task *t = h ? braid__task_start_queued(w, h) : NULL;
        if (t) {
            BRAID__TRACE(w, BRAID_TR_STEAL, 0, t->id, v->index);
            return t;
        }
    }
    return start_from_inject(w);
}

/* ---- timers -------------------------------------------------------------- */

static void fire_timer(braid__timer *tm)
{
    braid__task *t = BRAID_CONTAINER_OF(tm, braid__task, timer);
    t->timer_fired = true;
    braid__wake(t);
}

static void poll_timers(braid__worker *w)
{
    if (!w->wheel.count)
        return;
    uint64_t now = braid__worker_now(w);
    /* Descriptors first when a timer is due: an I/O call whose data came
     * before its deadline must not time out while the event still sits in
     * epoll (braid__io_do may wait without trying its system call). */
    if (braid__io_used(w)) {
        uint64_t next = braid__wheel_next_ns(&w->wheel);
        if (next && next <= now)
            braid__io_poll(w, false, 0);
    }
    braid__wheel_advance(&w->wheel, now, fire_timer);
}

/* ---- choosing the next task ---------------------------------------------- */

static void maintenance(braid__worker *w)
{
    if (BRAID_UNLIKELY(atomic_load_explicit(&w->rt->shutdown, memory_order_acquire)) &&
        !w->shutdown_seen) {
        w->shutdown_seen = true;
        braid__task_cancel_all(w);
    }
    if (braid__io_used(w))
        braid__io_poll(w, false, 0);
    poll_timers(w);
    drain_inbox(w);
    release_yielders(w);
    braid__obs_pass(w);
}

/* The runnable work that is cheap to find: the LIFO slot, the ready list,
 * the inbox, the newest spawn, the ring, and last the tasks that yielded.
 * This is all a task looks at when it gives up the CPU (on its own stack,
 * which therefore stays shallow: a simple task touches one stack page);
 * the rest (injection queue, timers, stealing, parking) happens on the
 * worker's own stack, in sched_next, which also runs every
 * BRAID_EVENT_INTERVAL decisions so that yielders cannot starve it. */
static braid__task *det_pick(braid__worker *w);

static braid__task *pick_local(braid__worker *w)
{
    braid__task *t;
    if (BRAID_UNLIKELY(w->det != NULL))
        return det_pick(w);
    if ((t = w->lifo)) {
        w->lifo = NULL;
        if (w->lifo_streak < BRAID_LIFO_CAP) {
            w->lifo_streak++;
            return t;
        }
        list_push(&w->ready_head, &w->ready_tail, t);
    }
    w->lifo_streak = 0;
    if ((t = ready_pop(w)))
        return t;
    if (BRAID_UNLIKELY(w->migrate) && (t = sq_take(w, 1)))
        return t;
    if (drain_inbox(w) && (t = ready_pop(w)))
        return t;
    if ((t = start_from_ring(w)))
        return t;
    if (w->yield_head) {
        release_yielders(w);
        return ready_pop(w);
    }
    return NULL;
}

/* Deterministic mode (det.h): the same queues, but the next task is drawn
 * from all the runnable ones by the seeded PRNG; yielders still come last. */
static braid__task *det_pick(braid__worker *w)
{
    if (w->lifo) {
        list_push(&w->ready_head, &w->ready_tail, w->lifo);
        w->lifo = NULL;
    }
    drain_inbox(w);
    braid__task *t = braid__det_choose(w);
    if (!t && w->yield_head) {
        release_yielders(w);
        t = braid__det_choose(w);
    }
    return t;
}

static void notify_pending_slow(braid__worker *w);

static inline void check_notify(braid__worker *w)
{
    if (BRAID_UNLIKELY(w->notify_pending))
        notify_pending_slow(w);
}

/* The task a spawn left waiting is still waiting although this worker moves
 * on to another task: get help. */
static void notify_pending_slow(braid__worker *w)
{
    w->notify_pending = false;
    if (braid__ring_len(&w->ring) || atomic_load_explicit(&w->ring.newest, memory_order_relaxed))
        notify_after_store(w->rt);
}

/* The single place that decides what a worker runs next, in the scheduler
 * context.  Every BRAID_EVENT_INTERVAL decisions (switch_out counts them
 * too) it first does the periodic work and looks at the injection queue
 * first, so that neither can be starved by local work.  NULL when nothing
 * is runnable locally. */
static braid__task *sched_next(braid__worker *w)
{
    braid__task *t;
    if (w->tick <= 1) {
        w->tick = BRAID_EVENT_INTERVAL;
        maintenance(w);
        if ((t = start_from_inject(w)))
            goto found;
    } else {
        w->tick--;
    }
    if ((t = pick_local(w)) || (t = start_from_inject(w)))
        goto found;
    if (w->yield_head) {
        release_yielders(w);
        t = ready_pop(w);
        goto found;
    }
    poll_timers(w);
    t = ready_pop(w);
found:
    check_notify(w);
    return t;
}

/* ---- switching ------------------------------------------------------------ */

/* Finish the switch away from the previous task: release it if it ended
 * (its stack could not be recycled while it was still running on it), or,
 * with migration, mark it off the CPU (a waker on another worker that took
 * it may now resume it; task.c, braid__task_move). */
void braid__sched_after_switch(braid__worker *w)
{
    uintptr_t p = w->prev;
    if (BRAID_UNLIKELY(p != 0)) {
        w->prev = 0;
        if (p & 1)
            braid__task_release(w, (braid__task *)(p - 1));
        else
            atomic_store_explicit(&((braid__task *)p)->off_cpu, true, memory_order_release);
    }
}

/* What a switch from `from` (NULL: the scheduler) to t records when a
 * trace or the console is on: kept out of line, behind one flag. */
static __attribute__((noinline)) void run_switch_hooks(braid__worker *w, braid__task *from,
                                                       bool dying, braid__task *t)
{
    if (w->trace)
        braid__trace_switch(w->trace, from, dying, t);
    if (w->timing)
        braid__console_account(w, from);
}

/*
 * Give up the CPU from task `from` (which has queued itself somewhere, or
 * parked, or ended).  The next task is chosen right here, on from's stack,
 * and switched to directly: one context switch per hand-off instead of two
 * through the scheduler context.  Only when no cheap local work is there
 * does the worker go back to its scheduler context to look further, steal
 * or park.  The task a current-thread block_on waits for returns to the
 * scheduler context when it ends, so that block_on returns at once.
 */
static void switch_out(braid__worker *w, braid__task *from, bool dying)
{
    braid__tls_task = NULL;
    braid__task *t = NULL;
    /* When the periodic work is due, or block_on's root has ended, leave it
     * to the scheduler context. */
    if (BRAID_LIKELY(w->tick > 1) && !(dying && BRAID_UNLIKELY(from->rec == w->watch && w->watch))) {
        w->tick--;
        if (dying) /* it may give its record and stack to the next task */
            w->donor = from;
        t = pick_local(w);
        if (dying)
            w->donor = NULL;
        check_notify(w);
    }
    if (t)
        braid__obs_bump(&w->obs.polls);
    if (t == from) {
        braid__tls_task = from;
        if (dying) /* the next task took from's record and stack */
            braid__task_rerun(from);
        return; /* a yield with nothing else to run, or an early wake */
    }
    if (BRAID_UNLIKELY(w->switch_hooks))
        run_switch_hooks(w, from, dying, t);
    braid__tls_task = t;
    braid__fiber *to = t ? &t->fiber : &w->sched;
    if (dying) {
        w->prev = (uintptr_t)from | 1;
        braid__fiber_exit(&from->fiber, to);
    } else if (BRAID_UNLIKELY(w->migrate)) {
        w->prev = (uintptr_t)from;
    }
    braid__fiber_switch(&from->fiber, to);
    /* from->home, not w: a migrating task may resume on another worker. */
    braid__sched_after_switch(from->home);
}

void braid__sched_suspend(braid__task *t)
{
    /* The other tasks of this thread share its errno: keep ours, and take
     * it along if the task resumes on another thread. */
    int saved = *t->home->errno_loc;
    switch_out(t->home, t, false);
    *t->home->errno_loc = saved;
}

void braid__sched_exit(braid__task *t)
{
    switch_out(t->home, t, true);
    __builtin_unreachable();
}

/* ---- parking ------------------------------------------------------------- */

static bool has_work(braid__worker *w, bool look_everywhere)
{
    braid_runtime *rt = w->rt;
    if (w->lifo || w->ready_head || w->yield_head ||
        atomic_load_explicit(&w->sq_len, memory_order_relaxed) ||
        atomic_load_explicit(&w->inbox, memory_order_seq_cst) || braid__ring_len(&w->ring) ||
        atomic_load_explicit(&w->ring.newest, memory_order_relaxed) ||
        braid__inject_len(&rt->inject))
        return true;
    if (look_everywhere)
        for (unsigned i = 0; i < rt->nworkers; i++)
            if (braid__ring_len(&rt->workers[i]->ring) ||
                atomic_load_explicit(&rt->workers[i]->sq_len, memory_order_relaxed) ||
                atomic_load_explicit(&rt->workers[i]->ring.newest, memory_order_relaxed))
                return true;
    return false;
}

/* With migration one parked worker at a time polls the shared epoll (the
 * poller); the others sleep on their futex. */
static bool take_poller(braid__worker *w)
{
    braid_runtime *rt = w->rt;
    braid__worker *none = NULL;
    return atomic_load_explicit(&rt->io_used, memory_order_relaxed) &&
           atomic_compare_exchange_strong_explicit(&rt->poller, &none, w, memory_order_acq_rel,
                                                   memory_order_relaxed);
}

/* The poller woke: leave the role, and wake an idle worker (if any) to
 * take it over while this one runs what it found (and to take some of it,
 * from the shared queue); otherwise descriptors would wait for this
 * worker's next periodic poll, which a task that runs long delays
 * without bound. */
static void leave_poller(braid__worker *w)
{
    atomic_store_explicit(&w->rt->poller, NULL, memory_order_release);
    notify(w->rt, true);
}

/* Sleep until there may be work, a timer is due or the runtime wakes us. */
static void park(braid__worker *w)
{
    braid_runtime *rt = w->rt;
    bool poller = rt->migrate && take_poller(w);
    uint32_t parked = w->has_io || poller ? BRAID_PARK_POLLING : BRAID_PARK_PARKED;
    if (atomic_exchange_explicit(&w->park, parked, memory_order_seq_cst) == BRAID_PARK_NOTIFIED) {
        atomic_store_explicit(&w->park, BRAID_PARK_RUNNING, memory_order_relaxed);
        if (poller)
            leave_poller(w);
        return; /* a wake-up arrived while we were running */
    }
    bool was_searching = w->searching;
    if (was_searching) {
        w->searching = false;
        atomic_fetch_sub_explicit(&rt->searching, 1, memory_order_seq_cst);
    }
    idle_set(rt, w->index);
    braid__fence();
    if (!has_work(w, was_searching)) {
        uint64_t deadline = braid__wheel_next_ns(&w->wheel);
        if (rt->park_deadline && (!deadline || rt->park_deadline < deadline))
            deadline = rt->park_deadline;
        BRAID__TRACE(w, BRAID_TR_PARK, 0, 0, 0);
        uint64_t slept = braid__now_ns();
        braid__obs_bump(&w->obs.parks);
        atomic_store_explicit(&w->obs.parked_at, slept, memory_order_relaxed);
        atomic_store_explicit(&w->obs.asleep_for_good, !deadline, memory_order_release);
        while (atomic_load_explicit(&w->park, memory_order_acquire) == parked) {
            if (parked == BRAID_PARK_POLLING) {
                if (braid__io_poll(w, true, deadline) > 0)
                    break; /* it woke tasks: run them */
            } else {
                braid__futex_wait(&w->park, BRAID_PARK_PARKED, deadline);
            }
            if (deadline && braid__now_ns() >= deadline)
                break;
        }
        BRAID__TRACE(w, BRAID_TR_UNPARK, 0, 0, 0);
        atomic_store_explicit(&w->obs.asleep_for_good, 0, memory_order_relaxed);
        atomic_store_explicit(&w->obs.idle_ns,
                              braid__load_relaxed(&w->obs.idle_ns) + braid__now_ns() - slept,
                              memory_order_relaxed);
        atomic_store_explicit(&w->obs.parked_at, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&w->park, BRAID_PARK_RUNNING, memory_order_seq_cst);
    /* If a notifier cleared our bit it also counted us as searching. */
    if (!idle_clear(rt, w->index))
        w->searching = true;
    if (poller)
        leave_poller(w);
}

void braid__sched_run(braid__worker *w, bool (*until)(void *), void *arg)
{
    braid_runtime *rt = w->rt;
    braid__worker *prev = braid__tls_worker;
    braid__tls_worker = w;
    w->errno_loc = &errno;
    braid__obs_thread_enter(w);
    for (;;) {
        braid__task *t = sched_next(w);
        if (!t && (t = steal(w)))
            braid__obs_bump(&w->obs.steals);
        if (t) {
            if (w->searching)
                stop_searching(w, true);
            if (BRAID_UNLIKELY(w->switch_hooks))
                run_switch_hooks(w, NULL, false, t);
            braid__obs_bump(&w->obs.polls);
            braid__tls_task = t;
            braid__fiber_switch(&w->sched, &t->fiber);
            braid__tls_task = NULL;
            braid__sched_after_switch(w);
            if (until && until(arg))
                break;
            continue;
        }
        if (until ? until(arg) : atomic_load_explicit(&rt->stop, memory_order_acquire))
            break;
        if (atomic_load_explicit(&rt->shutdown, memory_order_acquire)) {
            if (!w->shutdown_seen) {
                w->shutdown_seen = true;
                braid__task_cancel_all(w);
                continue;
            }
            atomic_fetch_add_explicit(&rt->quiesce, 1, memory_order_release);
            braid__futex_wake(&rt->quiesce, INT_MAX);
        }
        if (BRAID_UNLIKELY(w->det != NULL) && braid__det_advance(w))
            continue; /* virtual time jumped to the next timer */
        if (braid__stack_trim(&rt->stacks, 64))
            continue; /* trimming took time: look for work again */
        /* Before parking too: a worker that parks with tasks asleep on
         * it would otherwise show the timer count of its previous pass
         * for as long as it sleeps. */
        braid__obs_pass(w);
        park(w);
        braid__obs_pass(w);
    }
    stop_searching(w, false);
    braid__obs_thread_leave(w);
    braid__tls_worker = prev;
}

/* ---- construction -------------------------------------------------------- */

int braid__worker_init(braid__worker *w, braid_runtime *rt, unsigned index)
{
    memset(w, 0, sizeof *w);
    w->rt = rt;
    w->index = index;
    w->rng = UINT64_C(0x9e3779b97f4a7c15) * (index + 1);
    w->tick = BRAID_EVENT_INTERVAL;
    w->det = rt->det;
    w->migrate = rt->migrate;
    braid__wheel_init(&w->wheel, braid__worker_now(w));
    braid__ring_init(&w->ring);
    atomic_init(&w->inbox, NULL);
    atomic_init(&w->park, BRAID_PARK_RUNNING);
    atomic_init(&w->spawned, 0);
    atomic_init(&w->finished, 0);
    w->epfd = w->evfd = -1;
    braid__obs_worker_init(w);
    int rc = braid__io_worker_init(w);
    if (rc < 0)
        return rc;
    rc = braid__panic_worker_init(w);
    if (rc < 0)
        braid__io_worker_destroy(w);
    return rc;
}

void braid__worker_destroy(braid__worker *w)
{
    braid__rec_cache_flush(&w->rt->recs, &w->recs);
    braid__stack_cache_flush(&w->rt->stacks, &w->stacks);
    braid__panic_worker_destroy(w);
    braid__io_worker_destroy(w);
}
