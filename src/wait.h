/*
 * Waiting on a primitive: the one protocol under every channel, lock,
 * semaphore, notify and select.
 *
 * A blocking call puts a braid__wait on its own stack (who waits: a task,
 * or a plain thread when task is NULL) and one braid__wnode per queue it
 * waits in (one for a lock, one per case for a select).  Each primitive
 * keeps its waiters in a braid__wq under its own lock.
 *
 * Exactly one party decides how a wait ends:
 *
 *   - a waker (holding the primitive's lock) claims a node and unlinks it,
 *     performs the operation for the waiter (copies the value, hands over
 *     the lock), then calls braid__wnode_finish();
 *   - the waiter, when its deadline passes or it is cancelled, gives up.
 *
 * A wait with one node (most) is decided under the primitive's lock: a
 * node still queued is the waiter's to withdraw (braid__wnode_withdraw), an
 * unlinked one was claimed, and the waker just records that in the claim
 * word.  A select's nodes sit in several queues under several locks, so its
 * wait is decided by one CAS on the claim word, 0 -> index + 1 by a waker or
 * 0 -> BRAID__GAVE_UP by the waiter, who then unlinks its nodes; a waker
 * that meets a node whose wait is already decided unlinks it and goes on.
 *
 * So an operation is either done entirely, by a waker, or not at all: a
 * waiter that loses the race to give up returns success.
 *
 * The done word says when the waker no longer touches the waiter: set after
 * the waker's last access to the wait (and, for a task that was running,
 * to the task), so a waiter that sees its claim taken waits for done before
 * its stack frame may go.  A parked task is enqueued only after done is
 * set, so in the usual case it never waits at all.
 */
#ifndef BRAID_WAIT_H
#define BRAID_WAIT_H

#include "internal.h"
#include "task.h"

#define BRAID__GAVE_UP UINT32_MAX

typedef struct braid__wait {
    braid__task *task;              /* NULL: a plain thread */
    _Atomic uint32_t claim;         /* 0, the winning node's index + 1, or GAVE_UP */
    _Atomic uint32_t done;          /* 1: the waker is finished with us; 2: a thread sleeps */
    uint8_t reason;                 /* enum braid__wait_reason, for dumps */
    bool multi;                     /* nodes in several queues (select) */
} braid__wait;

typedef struct braid__wnode {
    struct braid__wnode *next, *prev;
    braid__wait *wait;
    uint32_t index;                 /* this node's case, for a select */
    bool queued;
    int result;                     /* set by the waker: 0 or a negative error */
    void *buf;                      /* the operation's data (item to send, receive buffer) */
    uint64_t arg;                   /* the operation's size (permits wanted, ...) */
} braid__wnode;

typedef struct braid__wq {
    braid__wnode *head, *tail;
} braid__wq;

/* A spin lock for a primitive's short critical sections (a few pointer
 * moves and one small copy): cheaper than a mutex when uncontended, and it
 * yields the CPU when the holder is slow to come back. */
typedef struct braid__spin {
    _Atomic uint32_t v;
} braid__spin;

void braid__spin_lock_slow(braid__spin *l);

static inline void braid__spin_lock(braid__spin *l)
{
    if (BRAID_UNLIKELY(atomic_exchange_explicit(&l->v, 1, memory_order_acquire)))
        braid__spin_lock_slow(l);
}

static inline bool braid__spin_trylock(braid__spin *l)
{
    return !atomic_load_explicit(&l->v, memory_order_relaxed) &&
           !atomic_exchange_explicit(&l->v, 1, memory_order_acquire);
}

static inline void braid__spin_unlock(braid__spin *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* Prepare a wait for task t (the caller), or for the calling plain thread
 * if t is NULL.  reason: enum braid__wait_reason. */
static inline void braid__wait_init(braid__wait *w, braid__task *t, uint8_t reason)
{
    w->task = t;
    atomic_init(&w->claim, 0);
    atomic_init(&w->done, 0);
    w->reason = reason;
    w->multi = false;
}

static inline void braid__wnode_init(braid__wnode *n, braid__wait *w, uint32_t index, void *buf,
                                     uint64_t arg)
{
    n->next = n->prev = NULL;
    n->wait = w;
    n->index = index;
    n->queued = false;
    n->result = 0;
    n->buf = buf;
    n->arg = arg;
}

/* Queue operations; all under the owning primitive's lock. */
static inline bool braid__wq_empty(const braid__wq *q)
{
    return q->head == NULL;
}

static inline void braid__wq_push(braid__wq *q, braid__wnode *n)
{
    n->next = NULL;
    n->prev = q->tail;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    n->queued = true;
}

/* No-op if n is not queued. */
static inline void braid__wq_remove(braid__wq *q, braid__wnode *n)
{
    if (!n->queued)
        return;
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
    n->next = n->prev = NULL;
    n->queued = false;
}


/* Whether q holds a node whose wait is still open (a peek, for select's
 * readiness check; it may unlink decided ones). */
bool braid__wq_has_open(braid__wq *q);

/* Claim n, just unlinked under the lock, for the caller: false if its
 * (select) wait is decided already. */
static inline bool braid__wnode_claim(braid__wnode *n)
{
    braid__wait *w = n->wait;
    if (!w->multi) {
        atomic_store_explicit(&w->claim, n->index + 1, memory_order_release);
        return true;
    }
    uint32_t open = 0;
    return atomic_compare_exchange_strong_explicit(&w->claim, &open, n->index + 1,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* The first node whose wait is still open, claimed for the caller and
 * unlinked; decided ones met on the way are unlinked.  NULL if none. */
static inline braid__wnode *braid__wq_claim(braid__wq *q)
{
    braid__wnode *n;
    while ((n = q->head)) {
        braid__wq_remove(q, n);
        if (braid__wnode_claim(n))
            return n;
    }
    return NULL;
}

void braid__wnode_finish_thread(braid__wait *w);

/* The waker's last step, after performing a claimed node's operation (the
 * primitive's lock may be held or not): wake the waiter.  n and its wait
 * must not be touched afterwards. */
static inline void braid__wnode_finish(braid__wnode *n)
{
    braid__wait *w = n->wait;
    braid__task *t = w->task;
    if (!t) {
        braid__wnode_finish_thread(w);
        return;
    }
    /* Mark the task woken first (its last access), then release the wait,
     * then enqueue: a task that was parked cannot run, and so cannot leave,
     * before the enqueue, after which we touch nothing; one that was
     * running may leave as soon as it sees done. */
    bool parked = braid__wake_mark(t);
    atomic_store_explicit(&w->done, 1, memory_order_release);
    if (parked)
        braid__wake_enqueue(t);
}

/* A one-node wait that braid__wait_block() ended with error rc: decide it,
 * with the primitive's lock held.  Returns rc if n was still queued (it is
 * withdrawn: nothing happened), or n's index if a waker claimed it first;
 * then the operation is done, and once the lock is dropped the caller must
 * call braid__wait_settle() before n goes out of scope. */
static inline int braid__wnode_withdraw(braid__wq *q, braid__wnode *n, int rc)
{
    if (n->queued) {
        braid__wq_remove(q, n);
        return rc;
    }
    return (int)n->index;
}

/* Give up a select's wait: false if a waker claimed it first. */
static inline bool braid__wait_give_up(braid__wait *w)
{
    uint32_t open = 0;
    return atomic_compare_exchange_strong_explicit(&w->claim, &open, BRAID__GAVE_UP,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* Once w is claimed: wait until its waker is finished with it (usually it
 * is) and return the winning index. */
int braid__wait_settle_slow(braid__wait *w);

static inline int braid__wait_settle(braid__wait *w)
{
    if (BRAID_LIKELY(atomic_load_explicit(&w->done, memory_order_acquire) == 1))
        return (int)atomic_load_explicit(&w->claim, memory_order_relaxed) - 1;
    return braid__wait_settle_slow(w);
}

/* The deadline passed or the task was cancelled: give up a select's wait
 * (or find it claimed); a one-node wait returns rc, for its caller to
 * decide under its lock. */
static inline int braid__wait_give_up_or_settle(braid__wait *w, int rc)
{
    if (!w->multi || braid__wait_give_up(w))
        return rc;
    return braid__wait_settle(w);
}

/* Claimed nodes to finish once the lock is dropped: chained through next. */
static inline void braid__wnode_chain(braid__wnode **list, braid__wnode *n)
{
    n->next = *list;
    *list = n;
}

/* Claim every open waiter of q with result, chained on *list for
 * braid__wnode_finish_chain() once the lock is dropped; returns how many. */
static inline unsigned braid__wq_claim_all(braid__wq *q, int result, braid__wnode **list)
{
    unsigned count = 0;
    for (braid__wnode *n; (n = braid__wq_claim(q)); count++) {
        n->result = result;
        braid__wnode_chain(list, n);
    }
    return count;
}

void braid__wnode_finish_chain(braid__wnode *list);

/* Wait until a waker claims one of w's nodes (returns that node's index),
 * or until deadline_ns passes (-ETIMEDOUT) or the task is cancelled
 * (-ECANCELED, if cancellable).  On a negative return a select's wait has
 * been given up, and the caller must unlink its nodes (braid__wq_remove
 * under each primitive's lock) before they go out of scope; a one-node wait
 * is not decided yet: the caller must call braid__wnode_withdraw(). */
int braid__wait_block_slow(braid__wait *w, uint64_t deadline_ns, bool cancellable);

/* The loop of a task's wait; timed: its timer is armed (for the slow path;
 * the fast path, without a deadline, compiles without the timer check). */
static inline int braid__wait_task(braid__wait *w, braid__task *t, bool cancellable, bool timed)
{
    uint8_t saved_reason = t->wait_reason;
    t->wait_reason = w->reason;
    int rc;
    for (;;) {
        if (atomic_load_explicit(&w->claim, memory_order_acquire)) {
            rc = braid__wait_settle(w);
            break;
        }
        if (timed && t->timer_fired) {
            rc = braid__wait_give_up_or_settle(w, -ETIMEDOUT);
            break;
        }
        if (braid__task_park(t, cancellable) < 0) {
            rc = braid__wait_give_up_or_settle(w, -ECANCELED);
            break;
        }
    }
    t->wait_reason = saved_reason;
    return rc;
}

static inline int braid__wait_block(braid__wait *w, uint64_t deadline_ns, bool cancellable)
{
    braid__task *t = w->task;
    if (!t || deadline_ns != BRAID_FOREVER)
        return braid__wait_block_slow(w, deadline_ns, cancellable);
    return braid__wait_task(w, t, cancellable, false);
}

/* Cooperative budget: each operation of task t (NULL: a plain thread)
 * that completes without waiting spends one unit; when the budget runs out
 * the task yields (without being a cancellation point), so a task whose
 * channel and lock operations always succeed cannot keep its worker from
 * the others.  Parking refills it. */
void braid__budget_yield(braid__task *t);

static inline void braid__budget_spend(braid__task *t)
{
    if (t && BRAID_UNLIKELY(--t->budget == 0))
        braid__budget_yield(t);
}

#endif
