/*
 * Waiting on a primitive: the one protocol under every channel, lock,
 * semaphore, notify and select.
 *
 * A blocking call puts a braid__wait on its own stack (who waits: a task,
 * or a plain thread when task is NULL) and one braid__wnode per queue it
 * waits in (one for a lock, one per case for a select).  Each primitive
 * keeps its waiters in a braid__wq under its own lock.
 *
 * Exactly one party decides how a wait ends, through one CAS on the wait's
 * claim word:
 *
 *   - a waker (holding the primitive's lock) claims a node, 0 -> index + 1,
 *     unlinks it, performs the operation for the waiter (copies the value,
 *     hands over the lock), then calls braid__wnode_finish();
 *   - the waiter, when its deadline passes or it is cancelled, gives up,
 *     0 -> BRAID__GAVE_UP, and unlinks its still-queued nodes itself under
 *     each primitive's lock.  A waker that meets a node whose wait is
 *     already decided just unlinks it and goes on.
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

#define BRAID__GAVE_UP UINT32_MAX

typedef struct braid__wait {
    braid__task *task;              /* NULL: a plain thread */
    _Atomic uint32_t claim;         /* 0, the winning node's index + 1, or GAVE_UP */
    _Atomic uint32_t done;          /* 1: the waker is finished with us; 2: a thread sleeps */
    uint8_t reason;                 /* enum braid__wait_reason, for dumps */
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

/* Prepare a wait for the calling task or thread (-EPERM never: plain
 * threads may wait too).  reason: enum braid__wait_reason. */
void braid__wait_init(braid__wait *w, uint8_t reason);

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

void braid__wq_push(braid__wq *q, braid__wnode *n);
void braid__wq_remove(braid__wq *q, braid__wnode *n); /* no-op if not queued */

/* The first node whose wait is still open, claimed for the caller and
 * unlinked; decided ones met on the way are unlinked.  NULL if none. */
braid__wnode *braid__wq_claim(braid__wq *q);

/* Whether q holds a node whose wait is still open (a peek, for select's
 * readiness check; it may unlink decided ones). */
bool braid__wq_has_open(braid__wq *q);

/* Claim n (already unlinked or about to be) for the caller: false if its
 * wait is decided. */
static inline bool braid__wnode_claim(braid__wnode *n)
{
    uint32_t open = 0;
    return atomic_compare_exchange_strong_explicit(&n->wait->claim, &open, n->index + 1,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* The waker's last step, after performing a claimed node's operation (the
 * primitive's lock may be held or not): wake the waiter.  n and its wait
 * must not be touched afterwards. */
void braid__wnode_finish(braid__wnode *n);

/* Wait until a waker claims one of w's nodes (returns that node's index),
 * or until deadline_ns passes (-ETIMEDOUT) or the task is cancelled
 * (-ECANCELED, if cancellable) and the wait could be given up.  After a
 * negative return the caller must unlink its nodes (braid__wq_remove under
 * each primitive's lock) before they go out of scope. */
int braid__wait_block(braid__wait *w, uint64_t deadline_ns, bool cancellable);

/* A wait decided before blocking (the operation completed at once, or the
 * call gave up without queueing): nothing to do.  Provided for symmetry in
 * select, which gives up its own wait when it finds a case ready. */
static inline bool braid__wait_give_up(braid__wait *w)
{
    uint32_t open = 0;
    return atomic_compare_exchange_strong_explicit(&w->claim, &open, BRAID__GAVE_UP,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* After a give-up failed (a waker won the race): wait until that waker is
 * finished and return the winning index. */
int braid__wait_settle(braid__wait *w);

/* Cooperative budget: each operation that completes without waiting spends
 * one unit; when a task's budget runs out it yields (without being a
 * cancellation point), so a task whose channel and lock operations always
 * succeed cannot keep its worker from the others. */
void braid__budget_spend(void);

#endif
