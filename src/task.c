/*
 * Task lifecycle: spawning, starting, finishing, joining, detaching and
 * cancelling, and the park/wake protocol described in task.h.
 */
#include "task.h"
#include "handle.h"
#include "local.h"
#include "panic.h"
#include "sched.h"
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- park and wake --------------------------------------------------------- */

static void live_insert(braid__worker *w, braid__task *t);
static void live_remove(braid__worker *w, braid__task *t);

/* Whether t, woken by worker w of a migrating runtime, may continue on w
 * (or, woken at home, be taken by another worker).  Not with a timer armed
 * (it sits in the home worker's wheel, which only that worker touches),
 * and never a join_all caller or call: a group lives on one worker.  t is
 * parked and the waker owns it: its fields are stable. */
static bool may_move(const braid__task *t, const braid__worker *w)
{
    return w->rt == t->home->rt && t->kind == BRAID_KIND_TASK && !t->timed &&
           t->wait_reason != BRAID_WAIT_JOIN_ALL;
}

void braid__task_move(braid__task *t, braid__worker *w)
{
    /* Parked is not yet off the CPU: its old worker may still be saving
     * its registers (the switch follows the park).  At home that is
     * harmless, since the same worker runs it next; here wait for the
     * switch to finish. */
    unsigned spins = 0;
    while (!atomic_load_explicit(&t->off_cpu, memory_order_acquire))
        braid__spin_backoff(&spins);
    braid__worker *old = t->home;
    braid__live_lock(old);
    live_remove(old, t);
    braid__live_unlock(old);
    t->home = w;
    braid__live_lock(w);
    live_insert(w, t);
    braid__live_unlock(w);
}

/* A wake from worker w of a migrating runtime: kept out of line, off the
 * path of the usual wakes. */
static __attribute__((noinline)) void wake_migrating(braid__task *t, braid__worker *w)
{
    if (!may_move(t, w)) {
        if (w == t->home)
            braid__sched_enqueue_local(w, t);
        else
            braid__sched_enqueue_remote(t);
        return;
    }
    if (t->home != w)
        braid__task_move(t, w);
    /* Woken by the scheduler context (an event, a timer): where an idle
     * worker can take it if this one is held up. */
    if (!braid__tls_task)
        braid__sched_share(w, t);
    else
        braid__sched_enqueue_local(w, t);
}

void braid__wake_enqueue(braid__task *t)
{
    if (BRAID__TRACING(t->home))
        braid__trace_wake(t);
    braid__worker *w = braid__tls_worker;
    /* Runnable from now, stamped before t is queued where it can run: by
     * the waker's clock, or the real one on a plain thread. */
    if (!w) {
        braid__task_stamp(t, braid__now_ns());
        braid__sched_enqueue_remote(t);
        return;
    }
    braid__task_stamp(t, braid__load_relaxed(&w->obs.now_ns));
    if (w == t->home && !BRAID_UNLIKELY(w->migrate))
        braid__sched_enqueue_local(w, t);
    else if (BRAID_UNLIKELY(w->migrate))
        wake_migrating(t, w);
    else
        braid__sched_enqueue_remote(t);
}

void braid__wake(braid__task *t)
{
    if (braid__wake_mark(t))
        braid__wake_enqueue(t);
}

void braid__task_cancel_running(braid__task *t)
{
    /* The flag before the wake: a task that finds NOTIFIED re-checks it. */
    atomic_store_explicit(&t->cancelled, true, memory_order_seq_cst);
    braid__wake(t);
}

int braid__task_park(braid__task *t, bool cancellable)
{
    if (cancellable && braid__task_should_cancel(t))
        return -ECANCELED;
    /* Set again once the switch below has saved its registers (sched.c);
     * ordered before PARKED by the CAS. */
    if (BRAID_UNLIKELY(t->home->migrate))
        atomic_store_explicit(&t->off_cpu, false, memory_order_relaxed);
    /* Stamped before PARKED is published: from then on, the waker stamps
     * the wake. */
    uint64_t runnable_since = atomic_load_explicit(&t->since_ns, memory_order_relaxed);
    braid__task_stamp(t, braid__load_relaxed(&t->home->obs.now_ns));
    int expect = BRAID_WAKE_IDLE;
    if (!atomic_compare_exchange_strong_explicit(&t->wake, &expect, BRAID_WAKE_PARKED,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        /* An exchange, not a store: a waker may be writing NOTIFIED again
         * right now, and it must then stay for the next park. */
        atomic_exchange_explicit(&t->wake, BRAID_WAKE_IDLE, memory_order_acq_rel);
        braid__task_stamp(t, runnable_since);
        return 0; /* a wake-up was already pending */
    }
    braid__sched_suspend(t); /* the waker that enqueued us left the word IDLE */
    t->budget = BRAID_BUDGET; /* it let the others run */
    return 0;
}

void braid__task_yield_now(braid__task *t)
{
    uint8_t reason = t->wait_reason;
    t->wait_reason = BRAID_WAIT_YIELD;
    braid__task_stamp(t, braid__load_relaxed(&t->home->obs.now_ns));
    braid__sched_yield_enqueue(t->home, t);
    braid__sched_suspend(t);
    t->wait_reason = reason;
}

/* ---- accounting ------------------------------------------------------------ */

/* The calling thread's worker if it belongs to rt, so that its record cache
 * and counters may be used (records go back to the runtime they came
 * from), else NULL. */
static inline braid__worker *local_worker(braid_runtime *rt)
{
    braid__worker *w = braid__tls_worker;
    return w && w->rt == rt ? w : NULL;
}

/* Spawns by a worker of rt are counted here; the others are counted by the
 * injection queue they go through (braid__inject_push). */
static void count_spawned(braid__worker *w, int delta)
{
    atomic_store_explicit(&w->spawned, braid__load_relaxed(&w->spawned) + (uint64_t)delta,
                          memory_order_release);
}

static void count_finished(braid_runtime *rt, braid__worker *w, int fate)
{
    if (w) {
        if (BRAID_UNLIKELY(fate != BRAID_OK))
            braid__obs_bump(fate == BRAID_PANICKED ? &w->obs.panicked : &w->obs.cancelled);
        atomic_store_explicit(&w->finished, braid__load_relaxed(&w->finished) + 1,
                              memory_order_release);
    } else {
        braid__obs_ext_finished(rt, fate);
        atomic_fetch_add_explicit(&rt->ext_finished, 1, memory_order_seq_cst);
        /* seq_cst, as shutdown's store and its read of ext_finished: each
         * side stores, then reads the other's word. */
        if (atomic_load_explicit(&rt->shutdown, memory_order_seq_cst)) {
            atomic_fetch_add_explicit(&rt->quiesce, 1, memory_order_release);
            braid__futex_wake(&rt->quiesce, INT_MAX);
        }
    }
}

/* ---- finishing ------------------------------------------------------------- */

static void waiter_wake(braid__waiter *wt, uint32_t index, uint64_t state)
{
    if (wt->task)
        braid__wake(wt->task);
    else if (wt->set)
        braid__joinset_finished(wt->set, braid__rec_gen(state) << BRAID_REC_INDEX_BITS | index);
    else
        braid__waiter_signal(wt);
}

/* Complete record r of runtime rt: publish the fate and value (the panic
 * report when PANICKED), wake the joiner, or free the record if it was
 * detached.  w is the calling thread's worker if it belongs to rt, else
 * NULL.  name is only used to report a detached task's panic. */
static void rec_finish(braid_runtime *rt, braid__worker *w, braid__rec *r, uint32_t index, int fate,
                       void *value, const char *name)
{
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire), ns;
    if (s & BRAID_REC_NOHANDLE) {
        /* Spawned detached: its only handle went into a run queue and was
         * consumed by the claim, so no other thread can hold the lock or
         * ever will (a stale queue entry only reads the state).  No CAS. */
        if (fate == BRAID_PANICKED) {
            braid__panic_report(rt, braid__rec_gen(s), name, value);
            braid__panic_info_free(value);
        }
        atomic_store_explicit(&r->state, 0, memory_order_release);
        braid__rec_free(w ? &w->recs : NULL, r, index);
        count_finished(rt, w, fate == BRAID__FATE_OK_FINAL ? BRAID_OK : fate);
        return;
    }
    r->b = value; /* nobody reads b while the task runs */
    bool final = fate == BRAID__FATE_OK_FINAL;
    if (final)
        fate = BRAID_OK;
    unsigned spins = 0;
    int f;
    for (;;) {
        if (s & BRAID_REC_LOCK) {
            braid__spin_backoff(&spins);
            s = atomic_load_explicit(&r->state, memory_order_acquire);
            continue;
        }
        f = fate == BRAID_OK && (s & BRAID_REC_CANCEL) && !final ? BRAID_CANCELLED : fate;
        if (s & BRAID_REC_DETACHED) {
            ns = 0; /* FREE, generation 0 */
        } else {
            ns = (s & ~(uint64_t)(BRAID_REC_PHASE | BRAID_REC_FATE)) | BRAID_REC_DONE |
                 ((uint64_t)f << BRAID_REC_FATE_SHIFT);
            /* Hold the lock while waking, so the joiner cannot leave first. */
            if (s & BRAID_REC_WAITING)
                ns |= BRAID_REC_LOCK;
        }
        /* Release: everything the task did happens-before its join. */
        if (atomic_compare_exchange_weak_explicit(&r->state, &s, ns, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    if (s & BRAID_REC_DETACHED) {
        if (f == BRAID_PANICKED) {
            braid__panic_report(rt, braid__rec_gen(s), name, value);
            braid__panic_info_free(value);
        }
        braid__rec_free(w ? &w->recs : NULL, r, index);
    } else if (s & BRAID_REC_WAITING) {
        /* WAITING stays set: the result is now reserved for this waiter. */
        waiter_wake(r->waiter, index, s);
        braid__rec_unlock(r, ns);
    }
    count_finished(rt, w, f);
}

/* A claimed (RUNNING, locked) record whose task will never run: drop its
 * argument and complete it. */
static void drop_unstarted(braid__rec *r, uint32_t index, uint64_t claimed, int fate,
                           braid__panic_info *info)
{
    void *b = r->b;
    braid__spawn_ext *ext = (claimed & BRAID_REC_EXT) ? b : NULL;
    void *arg = ext ? ext->arg : b;
    r->a.task = NULL;
    braid__rec_unlock(r, claimed);
    if (ext && ext->arg_drop)
        ext->arg_drop(arg);
    braid_runtime *rt = braid__rec_owner(index)->rt;
    BRAID__TRACE_RT(rt, BRAID_TR_DROP, BRAID_KIND_TASK, braid__rec_gen(claimed), fate);
    rec_finish(rt, local_worker(rt), r, index, fate, fate == BRAID_PANICKED ? (void *)info : NULL,
               ext ? ext->name : NULL);
    free(ext);
}

/* Claim a QUEUED record for starting (or dropping): returns its state, now
 * RUNNING with LOCK held, or 0 if someone else got it first. */
static uint64_t claim(braid__rec *r, uint64_t gen)
{
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (braid__rec_gen(s) != gen || braid__rec_phase(s) != BRAID_REC_QUEUED)
            return 0;
        if (s & BRAID_REC_LOCK) {
            braid__spin_backoff(&spins);
            s = atomic_load_explicit(&r->state, memory_order_acquire);
            continue;
        }
        uint64_t ns = (s & ~(uint64_t)BRAID_REC_PHASE) | BRAID_REC_RUNNING | BRAID_REC_LOCK;
        if (atomic_compare_exchange_weak_explicit(&r->state, &s, ns, memory_order_acquire,
                                                  memory_order_acquire))
            return ns;
    }
}

/* ---- starting ---------------------------------------------------------------- */

static void task_entry(void *p)
{
    braid__fiber_entered();
    braid__task *t = p;
    braid__sched_after_switch(t->home);
    void *ret = NULL;
    int fate = BRAID_OK;
    if (atomic_load_explicit(&t->cancelled, memory_order_acquire)) {
        /* Cancelled between being claimed and first running: it never runs. */
        if (t->ext && t->ext->arg_drop)
            t->ext->arg_drop(t->arg);
        fate = BRAID_CANCELLED;
    } else {
        ret = t->fn(t->arg);
    }
    braid__task_exit(t, fate, ret);
}

static void live_insert(braid__worker *w, braid__task *t)
{
    t->live_prev = NULL;
    t->live_next = w->live;
    if (w->live)
        w->live->live_prev = t;
    w->live = t;
}

static void live_remove(braid__worker *w, braid__task *t)
{
    if (t->live_prev)
        t->live_prev->live_next = t->live_next;
    else
        w->live = t->live_next;
    if (t->live_next)
        t->live_next->live_prev = t->live_prev;
}

/* The fields a task starts with.  Field by field rather than memset: this
 * runs for every task, and the fields left out are written before they are
 * read (next by every enqueue, timer_fired by every sleep, the tool fields
 * only when a tool is present, the live links by the live list). */
static inline void task_fields(braid__worker *w, braid__task *t, void *slot, int cls, uint64_t id,
                               braid_fn fn, void *arg)
{
    atomic_init(&t->wake, BRAID_WAKE_IDLE);
    atomic_init(&t->cancelled, false);
    t->shield = false;
    t->panicking = false;
    t->kind = BRAID_KIND_TASK;
    t->wait_reason = BRAID_WAIT_NONE;
    t->budget = BRAID_BUDGET;
    t->home = w;
    t->slot = slot;
    t->stack_cls = cls;
    t->id = id;
    t->fn = fn;
    t->arg = arg;
    t->rec = NULL;
    t->group = NULL;
    t->defers = NULL;
    t->locals = NULL;
    t->nlocals = 0;
    t->timer.pprev = NULL;
    t->extra_stacks = NULL;
    t->ext = NULL;
    t->panic = NULL;
    atomic_init(&t->since_ns, braid__load_relaxed(&w->obs.now_ns));
    t->wait_obj = 0;
    t->busy_ns = 0;
    t->timed = false; /* off_cpu needs no start: set at every park */
}

/* Lay out a task record at the top of a stack slot and make its fiber. */
braid__task *braid__task_init(braid__worker *w, void *slot, int cls, uint64_t id, braid_fn fn,
                              void *arg)
{
    braid__stack_pool *pool = &w->rt->stacks;
    char *top = braid__stack_top(pool, cls, slot);
    braid__fiber_reuse(top);
    /* Cache colouring.  A task's hottest lines (this record, then its
     * innermost frames) sit at the top of its stack; at one fixed offset in
     * a page they would all compete for the few L2 sets that offset maps to
     * (32 sets of 16 ways on this 2 MiB L2: ~500 lines), and a worker with
     * more than ~500 live tasks would miss to L3 on every switch (yield_many
     * on one worker: 11 ns per yield at 500 tasks, 40 at 1,000).  Starting
     * each task one more line down, over BRAID_COLOURS lines, spreads them. */
    w->colour = (w->colour + 1) & (BRAID_COLOURS - 1);
    uintptr_t at = ((uintptr_t)top - sizeof(braid__task)) & ~(uintptr_t)63;
    braid__task *t = (braid__task *)(at - (uintptr_t)w->colour * 64);
    task_fields(w, t, slot, cls, id, fn, arg);
    char *lo = braid__stack_lo(pool, cls, slot);
    braid__fiber_make(&t->fiber, lo, (size_t)((char *)t - lo), task_entry, t);
    braid__live_lock(w);
    live_insert(w, t);
    braid__live_unlock(w);
    return t;
}

/* Whether t, a task that has ended, may give its record and stack to the
 * task its worker starts next.  Tools follow each fiber's life (fiber.h),
 * and traces and the console record each end and start: they get the
 * usual path. */
static inline bool can_donate(const braid__worker *w, const braid__task *t, int cls)
{
#if defined(BRAID_CTX_PORTABLE)
    (void)w, (void)t, (void)cls;
    return false;
#else
    return t->stack_cls == cls && !braid__under_tools && !w->switch_hooks && !w->det &&
           t->kind == BRAID_KIND_TASK && !t->extra_stacks;
#endif
}

/* Start a task in the record and stack of w->donor, a task that has ended
 * and is choosing its successor (sched.c, switch_out): the record keeps its
 * place in the live list and its colour, and the stack is entered afresh by
 * braid__task_rerun rather than made and switched to. */
static braid__task *task_reuse(braid__worker *w, uint64_t id, braid_fn fn, void *arg)
{
    braid__task *t = w->donor;
    w->donor = NULL;
    free(t->ext);
    braid__live_lock(w); /* with migration, other workers read live tasks */
    task_fields(w, t, t->slot, t->stack_cls, id, fn, arg);
    braid__live_unlock(w);
    return t;
}

BRAID_NORETURN void braid__task_rerun(braid__task *t)
{
#if defined(BRAID_CTX_PORTABLE)
    (void)t;
    braid__die("braid: a task's stack was handed on without a jump (internal error)\n");
#else
    braid__stack_pool *pool = &t->home->rt->stacks;
    char *lo = braid__stack_lo(pool, t->stack_cls, t->slot);
    /* Where braid__fiber_make puts a fresh context's first frame. */
    uintptr_t top = ((uintptr_t)lo + (size_t)((char *)t - lo)) & ~(uintptr_t)15;
    braid__ctx_jump((void *)top, task_entry, t);
#endif
}

/* Start the task of a record claimed by the caller (claimed: its locked
 * state).  Returns the task, or NULL if it ended without running. */
static braid__task *start_claimed(braid__worker *w, braid__rec *r, uint32_t index,
                                  uint64_t claimed, braid__waiter *joiner)
{
    braid_runtime *rt = w->rt;
    braid__spawn_ext *ext = (claimed & BRAID_REC_EXT) ? r->b : NULL;
    if ((claimed & BRAID_REC_CANCEL) || atomic_load_explicit(&rt->shutdown, memory_order_relaxed)) {
        drop_unstarted(r, index, claimed, BRAID_CANCELLED, NULL);
        return NULL;
    }
    int cls = ext ? ext->stack_cls : rt->stacks.default_cls;
    braid__task *t;
    if (w->donor && can_donate(w, w->donor, cls)) {
        t = task_reuse(w, braid__rec_gen(claimed), r->a.fn, ext ? ext->arg : r->b);
    } else {
        void *slot = braid__stack_get(&rt->stacks, &w->stacks, cls);
        if (!slot) {
            drop_unstarted(r, index, claimed, BRAID_PANICKED,
                           braid__panic_info_fmt(NULL, 0, "out of memory: no stack for task %llu",
                                                 (unsigned long long)braid__rec_gen(claimed)));
            return NULL;
        }
        t = braid__task_init(w, slot, cls, braid__rec_gen(claimed), r->a.fn,
                             ext ? ext->arg : r->b);
    }
    t->rec = r;
    t->rec_index = index;
    t->ext = ext;
    if (BRAID__TRACING(w))
        braid__trace_start(w->trace, t);
    r->a.task = t;
    if (joiner) {
        r->waiter = joiner;
        claimed |= BRAID_REC_WAITING;
    }
    braid__rec_unlock(r, claimed);
    return t;
}

braid__task *braid__task_start_queued(braid__worker *w, uint64_t handle)
{
    braid_task h = { handle };
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return NULL;
    uint64_t claimed = claim(r, braid__handle_gen(h));
    if (!claimed)
        return NULL; /* started, cancelled or joined inline by someone else */
    return start_claimed(w, r, braid__handle_index(h), claimed, NULL);
}

/* ---- ending ------------------------------------------------------------------ */

/* Out of line, so that its buffer is not part of every task's last frame. */
static __attribute__((noinline, cold)) void warn_pushed_defers(braid__task *t)
{
    char msg[160];
    snprintf(msg, sizeof msg, "braid: task %llu returned with defers still pushed; they were not run\n",
             (unsigned long long)t->id);
    braid__write_stderr(msg);
    t->defers = NULL;
}

void braid__task_exit(braid__task *t, int fate, void *value)
{
    if (BRAID__TRACING(t->home))
        braid__trace_end(t->home->trace, t, fate);
    if (t->locals)
        braid__local_destroy(t);
    if (BRAID_UNLIKELY(t->defers && fate != BRAID_PANICKED))
        warn_pushed_defers(t);
    if (t->kind == BRAID_KIND_CALL) {
        braid__call_finish(t, fate, value);
    } else {
        braid__panic_info *info = t->panic;
        t->panic = NULL;
        /* A task only ever runs on a worker of its record's runtime. */
        rec_finish(t->home->rt, t->home, t->rec, t->rec_index, fate,
                   fate == BRAID_PANICKED ? (void *)info : value, t->ext ? t->ext->name : NULL);
    }
    braid__sched_exit(t);
}

void braid__task_release(braid__worker *w, braid__task *t)
{
    braid__stack_pool *pool = &w->rt->stacks;
    braid__live_lock(w);
    live_remove(w, t);
    braid__live_unlock(w);
    braid__fiber_release(&t->fiber);
    if (t->ext)
        free(t->ext);
    if (t->extra_stacks)
        braid__panic_release_extra(w, t);
    braid__stack_put(pool, &w->stacks, t->stack_cls, t->slot);
}

void braid__task_cancel_all(braid__worker *w)
{
    /* Its wakes stay local (every task here has home w): no lock taken
     * inside. */
    braid__live_lock(w);
    for (braid__task *t = w->live; t; t = t->live_next) {
        if (!t->rec) {
            braid__task_cancel_running(t);
            continue;
        }
        uint64_t ls = braid__rec_lock(t->rec, t->id);
        if (!ls)
            continue;
        if (braid__rec_phase(ls) == BRAID_REC_RUNNING) {
            ls |= BRAID_REC_CANCEL;
            braid__task_cancel_running(t);
        }
        braid__rec_unlock(t->rec, ls);
    }
    braid__live_unlock(w);
}

/* ---- spawning ------------------------------------------------------------- */

static int make_ext(braid_runtime *rt, const braid_spawn_opts *o, void *arg,
                    braid__spawn_ext **out)
{
    *out = NULL;
    if (!o)
        return 0;
    if (o->size && o->size < offsetof(braid_spawn_opts, arg_drop) + sizeof o->arg_drop)
        return -EINVAL;
    int cls = braid__stack_class_of(&rt->stacks, o->stack_size);
    if (cls < 0)
        return cls;
    if (!o->name && !o->arg_drop && cls == rt->stacks.default_cls)
        return 0;
    braid__spawn_ext *ext = braid__malloc(sizeof *ext);
    if (!ext)
        return -ENOMEM;
    ext->arg = arg;
    ext->arg_drop = o->arg_drop;
    ext->stack_cls = cls;
    ext->name[0] = 0;
    if (o->name)
        snprintf(ext->name, sizeof ext->name, "%s", o->name);
    *out = ext;
    return 0;
}

/* Where a task was spawned (file NULL: not recorded), and by which task. */
static inline void site_set(braid__rec *r, uint32_t index, const char *file, int line,
                            uint64_t parent)
{
    braid__site *s = braid__rec_site(r, index);
    s->file = file;
    s->line = (uint32_t)line;
    s->parent = parent;
}

/* Spawn on rt; w is the calling thread's worker if it belongs to rt and a
 * task is running on it (its ring is then used), else NULL. */
int braid__spawn(braid_runtime *rt, braid__worker *w, braid_task *out, const braid_spawn_opts *o,
                 braid_fn fn, void *arg, const char *file, int line)
{
    if (!fn)
        return -EINVAL;
    braid__spawn_ext *ext;
    int rc = make_ext(rt, o, arg, &ext);
    if (rc < 0)
        return rc;
    if (BRAID_UNLIKELY(braid__stack_exhausted(&rt->stacks))) {
        /* The last attempt to map stacks failed: see whether there is room
         * now rather than queue a task that cannot start. */
        int cls = ext ? ext->stack_cls : rt->stacks.default_cls;
        void *probe = braid__stack_get(&rt->stacks, w ? &w->stacks : NULL, cls);
        if (!probe) {
            free(ext);
            return -ENOMEM;
        }
        braid__stack_put(&rt->stacks, w ? &w->stacks : NULL, cls, probe);
    }
    uint32_t index;
    braid__rec_cache *cache = w ? &w->recs : braid__rec_thread_cache(&rt->recs);
    braid__rec *r = braid__rec_alloc(&rt->recs, cache, &index);
    if (!r) {
        free(ext);
        return -ENOMEM;
    }
    uint64_t id = braid__next_id(cache);
    r->a.fn = fn;
    r->b = ext ? (void *)ext : arg;
    r->waiter = NULL;
    site_set(r, index, file, line, braid_current_id());
    uint64_t s = id << BRAID_REC_INDEX_BITS | BRAID_REC_QUEUED;
    if (!out)
        s |= BRAID_REC_DETACHED | BRAID_REC_NOHANDLE;
    if (ext)
        s |= BRAID_REC_EXT;
    if (atomic_load_explicit(&rt->shutdown, memory_order_relaxed))
        s |= BRAID_REC_CANCEL; /* it will be dropped, never run */
    atomic_store_explicit(&r->state, s, memory_order_release);
    braid_task h = braid__handle_make(id, index);
    /* Recorded before it is queued: it may run at once elsewhere. */
    BRAID__TRACE_RT(rt, BRAID_TR_SPAWN, 0, id, braid_current_id());
    /* Counted before it is queued, so that a shutdown never sees it finish
     * before it was spawned. */
    if (w)
        count_spawned(w, 1);
    bool ok = w ? braid__sched_push_new(w, h.bits) : braid__sched_inject(rt, h.bits);
    if (!ok) {
        if (w)
            count_spawned(w, -1);
        atomic_store_explicit(&r->state, 0, memory_order_relaxed);
        braid__rec_free(cache, r, index);
        free(ext);
        return -ENOMEM;
    }
    if (out)
        *out = h;
    return 0;
}

int braid_spawn_ex_at(const char *file, int line, braid_task *out, const braid_spawn_opts *opts,
                      braid_fn fn, void *arg)
{
    braid__worker *w = braid__tls_worker;
    if (!braid__tls_task)
        return -EPERM;
    return braid__spawn(w->rt, w, out, opts, fn, arg, file, line);
}

int braid_spawn_ex(braid_task *out, const braid_spawn_opts *opts, braid_fn fn, void *arg)
{
    return braid_spawn_ex_at(NULL, 0, out, opts, fn, arg);
}

int braid_spawn_on_ex_at(const char *file, int line, braid_runtime *rt, braid_task *out,
                         const braid_spawn_opts *opts, braid_fn fn, void *arg)
{
    if (!rt)
        return -EINVAL;
    /* The caller's worker serves the spawn only if it is one of rt's and
     * a task runs on it (its ring); otherwise the injection queue. */
    braid__worker *w = braid__tls_worker;
    return braid__spawn(rt, w && w->rt == rt && braid__tls_task ? w : NULL, out, opts, fn, arg,
                        file, line);
}

int braid_spawn_on_ex(braid_runtime *rt, braid_task *out, const braid_spawn_opts *opts,
                      braid_fn fn, void *arg)
{
    return braid_spawn_on_ex_at(NULL, 0, rt, out, opts, fn, arg);
}

int braid_spawn_on_at(const char *file, int line, braid_runtime *rt, braid_task *out, braid_fn fn,
                      void *arg)
{
    return braid_spawn_on_ex_at(file, line, rt, out, NULL, fn, arg);
}

int braid_spawn_on(braid_runtime *rt, braid_task *out, braid_fn fn, void *arg)
{
    return braid_spawn_on_ex_at(NULL, 0, rt, out, NULL, fn, arg);
}

/* braid_spawn from a task when the worker's caches can serve it: the same
 * steps as braid__spawn without options, without its checks for the rare
 * cases (which it falls back to). */
static inline int spawn_fast(const char *file, int line, braid_task *out, braid_fn fn, void *arg)
{
    braid__task *self = braid__tls_task;
    if (BRAID_UNLIKELY(!self || !fn))
        return self ? -EINVAL : -EPERM;
    braid__worker *w = self->home;
    braid_runtime *rt = w->rt;
    braid__rec_cache *c = &w->recs;
    if (BRAID_UNLIKELY(!c->n || c->id_next == c->id_end || !(c->id_next & BRAID_REC_GEN_MASK) ||
                       braid__stack_exhausted(&rt->stacks)))
        return braid__spawn(rt, w, out, NULL, fn, arg, file, line);
    struct braid__rec_slot *s = &c->slot[--c->n];
    braid__rec *r = s->r;
    uint64_t id = c->id_next++ & BRAID_REC_GEN_MASK;
    r->a.fn = fn;
    r->b = arg;
    r->waiter = NULL;
    site_set(r, s->index, file, line, self->id);
    uint64_t st = id << BRAID_REC_INDEX_BITS | BRAID_REC_QUEUED;
    if (!out)
        st |= BRAID_REC_DETACHED | BRAID_REC_NOHANDLE;
    if (BRAID_UNLIKELY(atomic_load_explicit(&rt->shutdown, memory_order_relaxed)))
        st |= BRAID_REC_CANCEL;
    atomic_store_explicit(&r->state, st, memory_order_release);
    braid_task h = braid__handle_make(id, s->index);
    BRAID__TRACE(w, BRAID_TR_SPAWN, 0, id, self->id);
    count_spawned(w, 1);
    if (BRAID_UNLIKELY(!braid__sched_push_new(w, h.bits))) {
        count_spawned(w, -1);
        atomic_store_explicit(&r->state, 0, memory_order_relaxed);
        braid__rec_free(c, r, s->index);
        return -ENOMEM;
    }
    if (out)
        *out = h;
    return 0;
}

int braid_spawn(braid_task *out, braid_fn fn, void *arg)
{
    return spawn_fast(NULL, 0, out, fn, arg);
}

int braid_spawn_at(const char *file, int line, braid_task *out, braid_fn fn, void *arg)
{
    return spawn_fast(file, line, out, fn, arg);
}

/* ---- joining ------------------------------------------------------------------ */

/* Take the value (or panic report) out of a DONE record and free it.
 * Spins while a finisher still holds the lock (it is waking us).  wt is the
 * caller's waiter if it registered one.  Returns the fate, -ESRCH if
 * someone else consumed it first, or -EBUSY if another joiner waited for
 * it. */
static int consume(braid__rec *r, uint64_t gen, uint32_t index, const braid__waiter *wt,
                   void **value, braid__panic_info **info)
{
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    unsigned spins = 0;
    void *v;
    for (;;) {
        if (braid__rec_gen(s) != gen || braid__rec_phase(s) != BRAID_REC_DONE)
            return -ESRCH;
        if (s & BRAID_REC_LOCK) {
            braid__spin_backoff(&spins);
            s = atomic_load_explicit(&r->state, memory_order_acquire);
            continue;
        }
        /* The result belongs to the joiner that waited for it. */
        if ((s & BRAID_REC_WAITING) && r->waiter != wt)
            return -EBUSY;
        v = r->b; /* read before the record can be reused */
        if (atomic_compare_exchange_weak_explicit(&r->state, &s, 0, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    braid__rec_pool *pool = braid__rec_owner(index);
    braid__worker *w = local_worker(pool->rt);
    braid__rec_free(w ? &w->recs : braid__rec_thread_cache(pool), r, index);
    int fate = braid__rec_fate(s);
    *info = fate == BRAID_PANICKED ? v : NULL;
    *value = fate == BRAID_PANICKED ? NULL : v;
    return fate;
}

/* Register wt as r's waiter.  Returns 1 if registered, 0 if the task is
 * already done, or a negative error. */
static int register_waiter(braid__rec *r, uint64_t gen, braid__waiter *wt)
{
    uint64_t ls = braid__rec_lock(r, gen);
    if (!ls)
        return -ESRCH;
    int rc = 1;
    if (braid__rec_phase(ls) == BRAID_REC_DONE)
        rc = 0;
    else if (ls & BRAID_REC_DETACHED)
        rc = -ESRCH;
    else if (ls & BRAID_REC_WAITING)
        rc = -EBUSY;
    if (rc == 1) {
        r->waiter = wt;
        ls |= BRAID_REC_WAITING;
    }
    braid__rec_unlock(r, ls);
    return rc;
}

/* A registered joiner stops waiting (deadline, cancellation): unless the
 * task finished first (then the join goes on: 0), withdraw, leaving the
 * handle valid for a later join, and return rc.  The finisher wakes us
 * under the record lock, so once we hold it nobody touches our waiter. */
static int give_up_join(braid__rec *r, uint64_t gen, int rc)
{
    uint64_t ls = braid__rec_lock(r, gen);
    if (!ls)
        return rc;
    if (braid__rec_phase(ls) == BRAID_REC_DONE) {
        braid__rec_unlock(r, ls);
        return 0;
    }
    braid__rec_unlock(r, ls & ~(uint64_t)BRAID_REC_WAITING);
    return rc;
}

/* Wait, as a task, until the record of h is DONE, or deadline_ns. */
static int wait_as_task(braid__task *self, braid_task h, braid__rec *r, braid__waiter *wt,
                        uint64_t deadline_ns)
{
    braid__worker *w = self->home;
    uint64_t gen = braid__handle_gen(h);
    uint32_t index = braid__handle_index(h);
    int rc = 1;
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    /* Joining a task of this runtime that has not started: run it here,
     * now, instead of waiting for a worker to get to it.  This keeps
     * fork-join recursion to one live stack per level.  When the task is
     * the newest entry of our own ring (spawned just before, or its later
     * siblings already joined), take the entry back too. */
    if (braid__rec_phase(s) == BRAID_REC_QUEUED && !(s & BRAID_REC_WAITING) &&
        braid__rec_owner(index)->rt == w->rt) {
        if (!braid__sched_take_newest(w, h.bits))
            braid__ring_unpush(&w->ring, h.bits);
        uint64_t claimed = claim(r, gen);
        if (claimed) {
            /* Another joiner may have registered since we looked: then it
             * is that one's join, and ours is the second (-EBUSY). */
            bool second = claimed & BRAID_REC_WAITING;
            braid__task *t = start_claimed(w, r, index, claimed, second ? NULL : wt);
            if (t)
                braid__sched_enqueue_local(w, t);
            if (second)
                return -EBUSY;
            if (!t)
                return 0; /* it ended without running */
            rc = 1;
        } else {
            rc = register_waiter(r, gen, wt);
        }
    } else {
        rc = register_waiter(r, gen, wt);
    }
    if (rc <= 0)
        return rc;
    bool timed = deadline_ns != BRAID_FOREVER;
    self->timer_fired = timed && !braid__task_timer_arm(self, deadline_ns);
    self->wait_reason = BRAID_WAIT_JOIN;
    self->wait_obj = gen;
    rc = 0;
    while (braid__rec_phase(atomic_load_explicit(&r->state, memory_order_acquire)) !=
           BRAID_REC_DONE) {
        if (self->timer_fired) {
            rc = give_up_join(r, gen, -ETIMEDOUT);
            break;
        }
        if (braid__task_park(self, true) < 0) {
            rc = give_up_join(r, gen, -ECANCELED);
            break;
        }
    }
    if (timed)
        braid__task_timer_done(self);
    self->wait_reason = BRAID_WAIT_NONE;
    return rc;
}

/* Wait, as a plain thread, until r is DONE. */
static int wait_as_thread(braid__rec *r, uint64_t gen, braid__waiter *wt, uint64_t deadline_ns)
{
    int rc = register_waiter(r, gen, wt);
    if (rc <= 0)
        return rc;
    if (!braid__waiter_block_until(wt, deadline_ns))
        return give_up_join(r, gen, -ETIMEDOUT);
    return 0;
}

static int take_result(braid__rec *r, uint64_t gen, uint32_t index, const braid__waiter *wt,
                       braid_outcome *out, size_t out_size, void **result);

static int join_impl(braid_task h, braid_outcome *out, void **result, uint64_t deadline_ns)
{
    size_t out_size = 0;
    if (out) {
        out_size = out->size ? out->size : sizeof(braid_outcome);
        if (out_size < offsetof(braid_outcome, message))
            return -EINVAL;
    }
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return -EINVAL;
    uint64_t gen = braid__handle_gen(h);
    uint32_t index = braid__handle_index(h);
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    if (braid__rec_gen(s) != gen || braid__rec_phase(s) == BRAID_REC_FREE ||
        (s & BRAID_REC_DETACHED))
        return -ESRCH;
    braid__task *self = braid__task_current();
    if (self) {
        if (self->id == gen)
            return -EDEADLK;
        if (braid__task_should_cancel(self))
            return -ECANCELED;
    }
    /* The waiter lives until consume() returns: a finisher may still be
     * touching it until it drops the record lock. */
    braid__waiter wt = { self, 0, NULL };
    if (braid__rec_phase(s) != BRAID_REC_DONE) {
        int rc = self ? wait_as_task(self, h, r, &wt, deadline_ns)
                      : wait_as_thread(r, gen, &wt, deadline_ns);
        if (rc < 0)
            return rc;
    }
    return take_result(r, gen, index, &wt, out, out_size, result);
}

/* Consume a DONE record for joiner wt and report its outcome. */
static int take_result(braid__rec *r, uint64_t gen, uint32_t index, const braid__waiter *wt,
                       braid_outcome *out, size_t out_size, void **result)
{
    void *value;
    braid__panic_info *info;
    int fate = consume(r, gen, index, wt, &value, &info);
    if (fate < 0)
        return fate;
    if (result)
        *result = value;
    if (out) {
        out->status = fate;
        out->value = value;
        out->file = NULL;
        out->line = 0;
        if (out_size > offsetof(braid_outcome, message))
            out->message[0] = 0;
        if (info)
            braid__panic_info_fill(info, out, out_size);
    }
    braid__panic_info_free(info);
    return fate;
}

int braid__join_register(braid_task h, braid__waiter *wt)
{
    braid__rec *r = braid__rec_lookup(h);
    return r ? register_waiter(r, braid__handle_gen(h), wt) : -EINVAL;
}

int braid__join_take(braid_task h, const braid__waiter *wt, braid_outcome *out)
{
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return -EINVAL;
    size_t out_size = out ? (out->size ? out->size : sizeof(braid_outcome)) : 0;
    if (out && out_size < offsetof(braid_outcome, message))
        return -EINVAL;
    return take_result(r, braid__handle_gen(h), braid__handle_index(h), wt, out, out_size, NULL);
}

int braid_join(braid_task t, void **result)
{
    return join_impl(t, NULL, result, BRAID_FOREVER);
}

int braid_join_until(braid_task t, void **result, uint64_t deadline_ns)
{
    return join_impl(t, NULL, result, deadline_ns);
}

int braid_join_ex(braid_task t, braid_outcome *out)
{
    if (!out)
        return -EINVAL;
    return join_impl(t, out, NULL, BRAID_FOREVER);
}

int braid_join_ex_until(braid_task t, braid_outcome *out, uint64_t deadline_ns)
{
    if (!out)
        return -EINVAL;
    return join_impl(t, out, NULL, deadline_ns);
}

/* ---- detach, cancel, inspect ------------------------------------------------- */

int braid_detach(braid_task h)
{
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return -EINVAL;
    uint64_t gen = braid__handle_gen(h);
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (braid__rec_gen(s) != gen || braid__rec_phase(s) == BRAID_REC_FREE ||
            (s & BRAID_REC_DETACHED))
            return -ESRCH;
        if (s & BRAID_REC_WAITING)
            return -EBUSY;
        if (s & BRAID_REC_LOCK) {
            braid__spin_backoff(&spins);
            s = atomic_load_explicit(&r->state, memory_order_acquire);
            continue;
        }
        if (braid__rec_phase(s) == BRAID_REC_DONE) {
            /* Already over: this is the last use of the record.  A panic that
             * nobody will now see is reported, as for any detached task. */
            uint32_t index = braid__handle_index(h);
            braid_runtime *rt = braid__rec_owner(index)->rt;
            void *value;
            braid__panic_info *info;
            int fate = consume(r, gen, index, NULL, &value, &info);
            if (fate < 0)
                return fate;
            if (info) {
                braid__panic_report(rt, gen, NULL, info);
                braid__panic_info_free(info);
            }
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(&r->state, &s, s | BRAID_REC_DETACHED,
                                                  memory_order_acq_rel, memory_order_acquire))
            return 0;
    }
}

int braid_cancel(braid_task h)
{
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return -EINVAL;
    uint64_t gen = braid__handle_gen(h);
    uint64_t ls = braid__rec_lock(r, gen);
    if (!ls)
        return -ESRCH;
    if (ls & BRAID_REC_DETACHED) {
        braid__rec_unlock(r, ls);
        return -ESRCH;
    }
    BRAID__TRACE_RT(braid__rec_owner(braid__handle_index(h))->rt, BRAID_TR_CANCEL, 0, gen,
                    braid_current_id());
    switch (braid__rec_phase(ls)) {
    case BRAID_REC_QUEUED:
        /* Never started: it never will.  Claim it and finish it here. */
        ls = (ls & ~(uint64_t)BRAID_REC_PHASE) | BRAID_REC_RUNNING | BRAID_REC_CANCEL;
        drop_unstarted(r, braid__handle_index(h), ls, BRAID_CANCELLED, NULL);
        return 0;
    case BRAID_REC_RUNNING:
        if (!(ls & BRAID_REC_CANCEL)) {
            ls |= BRAID_REC_CANCEL;
            if (r->a.task)
                braid__task_cancel_running(r->a.task);
        }
        break;
    default:
        break; /* finished: nothing changes */
    }
    braid__rec_unlock(r, ls);
    return 0;
}

bool braid_is_finished(braid_task h)
{
    braid__rec *r = braid__rec_lookup(h);
    if (!r)
        return false;
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    return braid__rec_gen(s) == braid__handle_gen(h) && braid__rec_phase(s) == BRAID_REC_DONE;
}

uint64_t braid_task_id(braid_task h)
{
    return braid__handle_gen(h);
}

uint64_t braid_current_id(void)
{
    braid__task *t = braid__task_current();
    return t ? t->id : 0;
}

int braid_worker_index(void)
{
    braid__worker *w = braid__tls_worker;
    return w ? (int)w->index : -EPERM;
}

bool braid_cancelled(void)
{
    braid__task *t = braid__task_current();
    return t && atomic_load_explicit(&t->cancelled, memory_order_acquire);
}

bool braid_cancel_shield(bool on)
{
    braid__task *t = braid__task_current();
    if (!t)
        return false;
    bool was = t->shield;
    t->shield = on;
    return was;
}

void braid__rec_teardown(braid__rec *r, uint64_t state)
{
    if (braid__rec_phase(state) == BRAID_REC_DONE && braid__rec_fate(state) == BRAID_PANICKED)
        braid__panic_info_free(r->b);
    else if (braid__rec_phase(state) == BRAID_REC_QUEUED && (state & BRAID_REC_EXT))
        free(r->b);
}

static const char *const wait_reason_names[] = {
    [BRAID_WAIT_NONE] = "nothing",
    [BRAID_WAIT_RUNNABLE] = "runnable",
    [BRAID_WAIT_SLEEP] = "sleep",
    [BRAID_WAIT_JOIN] = "join",
    [BRAID_WAIT_JOIN_ALL] = "join_all",
    [BRAID_WAIT_YIELD] = "yield",
    [BRAID_WAIT_NOTIFY] = "notify",
    [BRAID_WAIT_CHAN_SEND] = "channel send",
    [BRAID_WAIT_CHAN_RECV] = "channel receive",
    [BRAID_WAIT_SELECT] = "select",
    [BRAID_WAIT_MUTEX] = "mutex",
    [BRAID_WAIT_RWLOCK] = "rwlock",
    [BRAID_WAIT_SEM] = "semaphore",
    [BRAID_WAIT_COND] = "condition variable",
    [BRAID_WAIT_BARRIER] = "barrier",
    [BRAID_WAIT_ONCE] = "once",
    [BRAID_WAIT_TOKEN] = "cancellation token",
    [BRAID_WAIT_JOINSET] = "joinset",
    [BRAID_WAIT_WATCH] = "watch channel",
    [BRAID_WAIT_IO] = "fd",
    [BRAID_WAIT_BLOCKING] = "blocking pool",
};

const char *braid__wait_reason_name(unsigned r)
{
    return r < sizeof wait_reason_names / sizeof *wait_reason_names && wait_reason_names[r]
               ? wait_reason_names[r]
               : "?";
}
