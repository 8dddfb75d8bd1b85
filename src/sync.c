/*
 * Locks and other synchronization: mutex, rwlock, semaphore, condition
 * variable, barrier, once, notify.
 *
 * Each keeps its waiters in a braid__wq under a small spin lock (wait.h);
 * the mutex, rwlock and semaphore also have an atomic state word so that
 * the uncontended paths are one CAS.  A waiter is always woken with its
 * request granted (the lock handed over, the permits taken), which is what
 * makes them FIFO-fair and lets a timed-out or cancelled waiter leave with
 * nothing half-done.
 *
 * The public structs are opaque arrays of words; each is cast to its
 * layout here, with the sizes checked at compile time.
 */
#include "task.h"
#include "util.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

/* Who holds a lock: the task (its record's address), or the plain thread
 * (the address of a thread-local), with the low bit set to tell them
 * apart; never 0. */
static BRAID_TLS char thread_tag;

static uint64_t self_owner(braid__task *t)
{
    return t ? (uint64_t)(uintptr_t)t : (uint64_t)(uintptr_t)&thread_tag | 1;
}

/* Queue a one-node wait for the caller in q (under lock l, held on entry
 * and dropped here), wait, and settle it.  Returns the node's result, or
 * -ETIMEDOUT / -ECANCELED with the node withdrawn; then on_leave (if not
 * NULL) runs under the lock, for primitives whose state a departing waiter
 * changes, and may chain nodes to finish. */
static int queue_and_wait(braid__spin *l, braid__wq *q, braid__task *t, uint8_t reason,
                          uint64_t arg, uint64_t deadline_ns, bool cancellable,
                          void (*on_leave)(void *obj, braid__wnode **list), void *obj)
{
    braid__wait w;
    braid__wnode node;
    braid__wait_init(&w, t, reason);
    braid__wnode_init(&node, &w, 0, NULL, arg);
    braid__wq_push(q, &node);
    braid__spin_unlock(l);
    int rc = braid__wait_block(&w, deadline_ns, cancellable);
    if (rc < 0) {
        braid__wnode *list = NULL;
        braid__spin_lock(l);
        rc = braid__wnode_withdraw(q, &node, rc);
        if (rc < 0 && on_leave)
            on_leave(obj, &list);
        braid__spin_unlock(l);
        braid__wnode_finish_chain(list);
        if (rc < 0)
            return rc;
        braid__wait_settle(&w);
    }
    return node.result;
}

static int entry_check(const void *obj, braid__task **t)
{
    if (!obj)
        return -EINVAL;
    *t = braid__task_current();
    if (*t && braid__task_should_cancel(*t))
        return -ECANCELED;
    return 0;
}

/* ---- mutex ----------------------------------------------------------------- */

enum { M_FREE = 0, M_HELD = 1, M_CONTENDED = 2 };

typedef struct {
    _Atomic uint32_t state;
    braid__spin qlock;
    _Atomic uint64_t owner;
    braid__wq q;
} mutex_impl;

_Static_assert(sizeof(mutex_impl) <= sizeof(braid_mutex), "braid_mutex too small");

int braid_mutex_init(braid_mutex *m)
{
    if (!m)
        return -EINVAL;
    memset(m, 0, sizeof *m);
    return 0;
}

static int mutex_lock_impl(mutex_impl *m, braid__task *t, uint64_t deadline_ns, bool cancellable)
{
    uint64_t me = self_owner(t);
    uint32_t s = M_FREE;
    if (BRAID_LIKELY(atomic_compare_exchange_strong_explicit(&m->state, &s, M_HELD,
                                                             memory_order_acquire,
                                                             memory_order_relaxed))) {
        atomic_store_explicit(&m->owner, me, memory_order_relaxed);
        braid__budget_spend(t);
        return 0;
    }
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) == me)
        return -EDEADLK;
    braid__spin_lock(&m->qlock);
    for (;;) {
        s = atomic_load_explicit(&m->state, memory_order_relaxed);
        if (s == M_FREE) {
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, M_HELD, memory_order_acquire,
                                                      memory_order_relaxed)) {
                braid__spin_unlock(&m->qlock);
                atomic_store_explicit(&m->owner, me, memory_order_relaxed);
                return 0;
            }
        } else if (s == M_CONTENDED ||
                   atomic_compare_exchange_weak_explicit(&m->state, &s, M_CONTENDED,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed)) {
            break;
        }
    }
    int rc = queue_and_wait(&m->qlock, &m->q, t, BRAID_WAIT_MUTEX, 0, deadline_ns, cancellable,
                            NULL, NULL);
    if (rc == 0) /* handed over by the unlocker */
        atomic_store_explicit(&m->owner, me, memory_order_relaxed);
    return rc;
}

int braid_mutex_lock_until(braid_mutex *mu, uint64_t deadline_ns)
{
    braid__task *t;
    int rc = entry_check(mu, &t);
    return rc ? rc : mutex_lock_impl((mutex_impl *)mu, t, deadline_ns, true);
}

int braid_mutex_lock(braid_mutex *mu)
{
    return braid_mutex_lock_until(mu, BRAID_FOREVER);
}

int braid_mutex_trylock(braid_mutex *mu)
{
    if (!mu)
        return -EINVAL;
    mutex_impl *m = (mutex_impl *)mu;
    uint32_t s = M_FREE;
    if (!atomic_compare_exchange_strong_explicit(&m->state, &s, M_HELD, memory_order_acquire,
                                                 memory_order_relaxed))
        return -EBUSY;
    atomic_store_explicit(&m->owner, self_owner(braid__task_current()), memory_order_relaxed);
    return 0;
}

static int mutex_unlock_impl(mutex_impl *m, braid__task *t)
{
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != self_owner(t))
        return -EPERM;
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    uint32_t s = M_HELD;
    if (BRAID_LIKELY(atomic_compare_exchange_strong_explicit(&m->state, &s, M_FREE,
                                                             memory_order_release,
                                                             memory_order_relaxed)))
        return 0;
    /* Contended: hand the lock to the first waiter, which keeps it held. */
    braid__spin_lock(&m->qlock);
    braid__wnode *n = braid__wq_claim(&m->q);
    if (n) {
        n->result = 0;
        if (braid__wq_empty(&m->q))
            atomic_store_explicit(&m->state, M_HELD, memory_order_relaxed);
    } else {
        atomic_store_explicit(&m->state, M_FREE, memory_order_release);
    }
    braid__spin_unlock(&m->qlock);
    if (n)
        braid__wnode_finish(n);
    return 0;
}

int braid_mutex_unlock(braid_mutex *mu)
{
    if (!mu)
        return -EINVAL;
    return mutex_unlock_impl((mutex_impl *)mu, braid__task_current());
}

int braid_mutex_destroy(braid_mutex *mu)
{
    if (!mu)
        return -EINVAL;
    mutex_impl *m = (mutex_impl *)mu;
    return atomic_load_explicit(&m->state, memory_order_acquire) == M_FREE ? 0 : -EBUSY;
}

/* ---- rwlock --------------------------------------------------------------- */

#define RW_READERS UINT64_C(0xffffffff)
#define RW_WRITER (UINT64_C(1) << 32)
#define RW_QUEUED (UINT64_C(1) << 33)

typedef struct {
    _Atomic uint64_t state;
    braid__spin qlock;
    braid__wq q;            /* node arg: 1 for a writer, 0 for a reader */
    _Atomic uint64_t writer;
} rwlock_impl;

_Static_assert(sizeof(rwlock_impl) <= sizeof(braid_rwlock), "braid_rwlock too small");

int braid_rwlock_init(braid_rwlock *l)
{
    if (!l)
        return -EINVAL;
    memset(l, 0, sizeof *l);
    return 0;
}

static bool rw_try_read(rwlock_impl *l)
{
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
    while (!(s & (RW_WRITER | RW_QUEUED)) && (s & RW_READERS) != RW_READERS)
        if (atomic_compare_exchange_weak_explicit(&l->state, &s, s + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static bool rw_try_write(rwlock_impl *l)
{
    uint64_t s = 0;
    return atomic_compare_exchange_strong_explicit(&l->state, &s, RW_WRITER, memory_order_acquire,
                                                   memory_order_relaxed);
}

/* With qlock held: grant the head of the queue what it waits for, as long
 * as it can be granted: one writer, or a run of readers. */
static void rw_grant(rwlock_impl *l, braid__wnode **list)
{
    braid__wnode *n;
    while ((n = l->q.head)) {
        uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
        if (n->arg) {
            if (s & (RW_WRITER | RW_READERS))
                return;
            if (!atomic_compare_exchange_weak_explicit(&l->state, &s, s | RW_WRITER,
                                                       memory_order_acquire, memory_order_relaxed))
                continue;
        } else {
            if (s & RW_WRITER)
                return;
            atomic_fetch_add_explicit(&l->state, 1, memory_order_acquire);
        }
        braid__wq_remove(&l->q, n);
        braid__wnode_claim(n);
        n->result = 0;
        braid__wnode_chain(list, n);
        if (n->arg)
            break;
    }
    if (braid__wq_empty(&l->q))
        atomic_fetch_and_explicit(&l->state, ~RW_QUEUED, memory_order_relaxed);
}

static int rw_lock(braid_rwlock *lk, bool write, uint64_t deadline_ns)
{
    braid__task *t;
    int rc = entry_check(lk, &t);
    if (rc)
        return rc;
    rwlock_impl *l = (rwlock_impl *)lk;
    uint64_t me = self_owner(t);
    if (write && atomic_load_explicit(&l->writer, memory_order_relaxed) == me)
        return -EDEADLK;
    if (write ? rw_try_write(l) : rw_try_read(l)) {
        if (write)
            atomic_store_explicit(&l->writer, me, memory_order_relaxed);
        braid__budget_spend(t);
        return 0;
    }
    braid__spin_lock(&l->qlock);
    if (braid__wq_empty(&l->q) && (write ? rw_try_write(l) : rw_try_read(l))) {
        braid__spin_unlock(&l->qlock);
    } else {
        /* QUEUED first: no new reader or writer gets past the queue. */
        atomic_fetch_or_explicit(&l->state, RW_QUEUED, memory_order_relaxed);
        braid__wait w;
        braid__wnode node;
        braid__wait_init(&w, t, BRAID_WAIT_RWLOCK);
        braid__wnode_init(&node, &w, 0, NULL, write);
        braid__wq_push(&l->q, &node);
        braid__wnode *list = NULL;
        rw_grant(l, &list); /* the lock may have come free meanwhile */
        braid__spin_unlock(&l->qlock);
        braid__wnode_finish_chain(list);
        rc = braid__wait_block(&w, deadline_ns, true);
        if (rc < 0) {
            list = NULL;
            braid__spin_lock(&l->qlock);
            rc = braid__wnode_withdraw(&l->q, &node, rc);
            if (rc < 0)
                rw_grant(l, &list);
            braid__spin_unlock(&l->qlock);
            braid__wnode_finish_chain(list);
            if (rc < 0)
                return rc;
            braid__wait_settle(&w);
        }
    }
    if (write)
        atomic_store_explicit(&l->writer, me, memory_order_relaxed);
    return 0;
}

int braid_rwlock_rdlock_until(braid_rwlock *l, uint64_t deadline_ns)
{
    return rw_lock(l, false, deadline_ns);
}

int braid_rwlock_rdlock(braid_rwlock *l)
{
    return rw_lock(l, false, BRAID_FOREVER);
}

int braid_rwlock_wrlock_until(braid_rwlock *l, uint64_t deadline_ns)
{
    return rw_lock(l, true, deadline_ns);
}

int braid_rwlock_wrlock(braid_rwlock *l)
{
    return rw_lock(l, true, BRAID_FOREVER);
}

int braid_rwlock_tryrdlock(braid_rwlock *lk)
{
    if (!lk)
        return -EINVAL;
    return rw_try_read((rwlock_impl *)lk) ? 0 : -EBUSY;
}

int braid_rwlock_trywrlock(braid_rwlock *lk)
{
    if (!lk)
        return -EINVAL;
    rwlock_impl *l = (rwlock_impl *)lk;
    if (!rw_try_write(l))
        return -EBUSY;
    atomic_store_explicit(&l->writer, self_owner(braid__task_current()), memory_order_relaxed);
    return 0;
}

int braid_rwlock_unlock(braid_rwlock *lk)
{
    if (!lk)
        return -EINVAL;
    rwlock_impl *l = (rwlock_impl *)lk;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed), after;
    if (s & RW_WRITER) {
        if (atomic_load_explicit(&l->writer, memory_order_relaxed) !=
            self_owner(braid__task_current()))
            return -EPERM;
        atomic_store_explicit(&l->writer, 0, memory_order_relaxed);
        after = atomic_fetch_and_explicit(&l->state, ~RW_WRITER, memory_order_release) & ~RW_WRITER;
    } else {
        do {
            if (!(s & RW_READERS))
                return -EPERM;
        } while (!atomic_compare_exchange_weak_explicit(&l->state, &s, s - 1, memory_order_release,
                                                        memory_order_relaxed));
        after = s - 1;
    }
    if ((after & RW_QUEUED) && !(after & RW_READERS)) {
        braid__wnode *list = NULL;
        braid__spin_lock(&l->qlock);
        rw_grant(l, &list);
        braid__spin_unlock(&l->qlock);
        braid__wnode_finish_chain(list);
    }
    return 0;
}

int braid_rwlock_destroy(braid_rwlock *lk)
{
    if (!lk)
        return -EINVAL;
    return atomic_load_explicit(&((rwlock_impl *)lk)->state, memory_order_acquire) ? -EBUSY : 0;
}

/* ---- semaphore ------------------------------------------------------------- */

#define SEM_COUNT ((UINT64_C(1) << 62) - 1)
#define SEM_CLOSED (UINT64_C(1) << 62)
#define SEM_QUEUED (UINT64_C(1) << 63)

typedef struct {
    _Atomic uint64_t state; /* first: BRAID_SEM_INIT sets the count */
    braid__spin qlock;
    braid__wq q;            /* node arg: permits wanted */
} sem_impl;

_Static_assert(sizeof(sem_impl) <= sizeof(braid_sem), "braid_sem too small");

int braid_sem_init(braid_sem *s, uint64_t permits)
{
    if (!s || permits > SEM_COUNT)
        return -EINVAL;
    memset(s, 0, sizeof *s);
    atomic_init(&((sem_impl *)s)->state, permits);
    return 0;
}

static bool sem_try(sem_impl *s, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    while (!(v & (SEM_CLOSED | SEM_QUEUED)) && (v & SEM_COUNT) >= n)
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, v - n, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

/* With qlock held: take n permits if no one queues before us, else mark
 * the semaphore queued.  One compare-and-swap decides both, so that a
 * release either sees the mark (and grants under qlock, after the caller
 * queued) or lands before it (and the take sees its permits): a separate
 * try and mark would let a release slip between them and wake no one. */
static bool sem_take_or_queue(sem_impl *s, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    for (;;) {
        bool take = braid__wq_empty(&s->q) && (v & SEM_COUNT) >= n;
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, take ? v - n : v | SEM_QUEUED,
                                                  memory_order_acquire, memory_order_relaxed))
            return take;
    }
}

/* With qlock held: give permits to the waiters at the head, in order. */
static void sem_grant(sem_impl *s, braid__wnode **list)
{
    braid__wnode *n;
    while ((n = s->q.head)) {
        uint64_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
        if ((v & SEM_COUNT) < n->arg)
            return;
        if (!atomic_compare_exchange_weak_explicit(&s->state, &v, v - n->arg, memory_order_acquire,
                                                   memory_order_relaxed))
            continue;
        braid__wq_remove(&s->q, n);
        braid__wnode_claim(n);
        n->result = 0;
        braid__wnode_chain(list, n);
    }
    atomic_fetch_and_explicit(&s->state, ~SEM_QUEUED, memory_order_relaxed);
}

static void sem_on_leave(void *obj, braid__wnode **list)
{
    sem_grant(obj, list); /* a large request leaving may let smaller ones in */
}

int braid_sem_acquire_until(braid_sem *sem, uint64_t n, uint64_t deadline_ns)
{
    braid__task *t;
    int rc = entry_check(sem, &t);
    if (rc)
        return rc;
    sem_impl *s = (sem_impl *)sem;
    if (n > SEM_COUNT)
        return -EINVAL;
    if (sem_try(s, n)) {
        braid__budget_spend(t);
        return 0;
    }
    braid__spin_lock(&s->qlock);
    if (atomic_load_explicit(&s->state, memory_order_relaxed) & SEM_CLOSED) {
        braid__spin_unlock(&s->qlock);
        return -EPIPE;
    }
    if (sem_take_or_queue(s, n)) {
        braid__spin_unlock(&s->qlock);
        return 0;
    }
    return queue_and_wait(&s->qlock, &s->q, t, BRAID_WAIT_SEM, n, deadline_ns, true, sem_on_leave,
                          s);
}

int braid_sem_acquire(braid_sem *s, uint64_t n)
{
    return braid_sem_acquire_until(s, n, BRAID_FOREVER);
}

int braid_sem_try_acquire(braid_sem *sem, uint64_t n)
{
    if (!sem || n > SEM_COUNT)
        return -EINVAL;
    sem_impl *s = (sem_impl *)sem;
    if (sem_try(s, n))
        return 0;
    return atomic_load_explicit(&s->state, memory_order_relaxed) & SEM_CLOSED ? -EPIPE : -EAGAIN;
}

int braid_sem_release(braid_sem *sem, uint64_t n)
{
    if (!sem)
        return -EINVAL;
    sem_impl *s = (sem_impl *)sem;
    uint64_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    do {
        if ((v & SEM_COUNT) + n > SEM_COUNT || n > SEM_COUNT)
            return -EOVERFLOW;
    } while (!atomic_compare_exchange_weak_explicit(&s->state, &v, v + n, memory_order_release,
                                                    memory_order_relaxed));
    if (v & SEM_QUEUED) {
        braid__wnode *list = NULL;
        braid__spin_lock(&s->qlock);
        sem_grant(s, &list);
        braid__spin_unlock(&s->qlock);
        braid__wnode_finish_chain(list);
    }
    return 0;
}

int braid_sem_close(braid_sem *sem)
{
    if (!sem)
        return -EINVAL;
    sem_impl *s = (sem_impl *)sem;
    braid__wnode *list = NULL;
    braid__spin_lock(&s->qlock);
    atomic_fetch_or_explicit(&s->state, SEM_CLOSED, memory_order_relaxed);
    braid__wq_claim_all(&s->q, -EPIPE, &list);
    atomic_fetch_and_explicit(&s->state, ~SEM_QUEUED, memory_order_relaxed);
    braid__spin_unlock(&s->qlock);
    braid__wnode_finish_chain(list);
    return 0;
}

uint64_t braid_sem_available(braid_sem *sem)
{
    if (!sem)
        return 0;
    return atomic_load_explicit(&((sem_impl *)sem)->state, memory_order_relaxed) & SEM_COUNT;
}

int braid_sem_destroy(braid_sem *sem)
{
    if (!sem)
        return -EINVAL;
    sem_impl *s = (sem_impl *)sem;
    braid__spin_lock(&s->qlock);
    bool busy = !braid__wq_empty(&s->q);
    braid__spin_unlock(&s->qlock);
    return busy ? -EBUSY : 0;
}

/* ---- condition variable ---------------------------------------------------- */

typedef struct {
    braid__spin qlock;
    braid__wq q;
} cond_impl;

_Static_assert(sizeof(cond_impl) <= sizeof(braid_cond), "braid_cond too small");

int braid_cond_init(braid_cond *c)
{
    if (!c)
        return -EINVAL;
    memset(c, 0, sizeof *c);
    return 0;
}

int braid_cond_wait_until(braid_cond *cv, braid_mutex *mu, uint64_t deadline_ns)
{
    if (!cv || !mu)
        return -EINVAL;
    cond_impl *c = (cond_impl *)cv;
    mutex_impl *m = (mutex_impl *)mu;
    braid__task *t = braid__task_current();
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != self_owner(t))
        return -EPERM;
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    braid__spin_lock(&c->qlock);
    /* Queued before the mutex is released: a signal sent by whoever takes
     * the mutex next cannot be missed. */
    braid__wait w;
    braid__wnode node;
    braid__wait_init(&w, t, BRAID_WAIT_COND);
    braid__wnode_init(&node, &w, 0, NULL, 0);
    braid__wq_push(&c->q, &node);
    braid__spin_unlock(&c->qlock);
    mutex_unlock_impl(m, t);
    int rc = braid__wait_block(&w, deadline_ns, true);
    if (rc < 0) {
        braid__spin_lock(&c->qlock);
        rc = braid__wnode_withdraw(&c->q, &node, rc);
        braid__spin_unlock(&c->qlock);
        if (rc >= 0) /* signalled meanwhile: report that */
            rc = braid__wait_settle(&w);
    }
    /* Take the mutex back whatever happened; not a cancellation point. */
    while (mutex_lock_impl(m, t, BRAID_FOREVER, false) != 0)
        ;
    return rc < 0 ? rc : 0;
}

int braid_cond_wait(braid_cond *c, braid_mutex *m)
{
    return braid_cond_wait_until(c, m, BRAID_FOREVER);
}

static int cond_wake(braid_cond *cv, bool all)
{
    if (!cv)
        return -EINVAL;
    cond_impl *c = (cond_impl *)cv;
    braid__wnode *list = NULL, *n;
    braid__spin_lock(&c->qlock);
    while ((n = braid__wq_claim(&c->q))) {
        n->result = 0;
        braid__wnode_chain(&list, n);
        if (!all)
            break;
    }
    braid__spin_unlock(&c->qlock);
    braid__wnode_finish_chain(list);
    return 0;
}

int braid_cond_signal(braid_cond *c)
{
    return cond_wake(c, false);
}

int braid_cond_broadcast(braid_cond *c)
{
    return cond_wake(c, true);
}

int braid_cond_destroy(braid_cond *cv)
{
    if (!cv)
        return -EINVAL;
    cond_impl *c = (cond_impl *)cv;
    braid__spin_lock(&c->qlock);
    bool busy = !braid__wq_empty(&c->q);
    braid__spin_unlock(&c->qlock);
    return busy ? -EBUSY : 0;
}

/* ---- barrier --------------------------------------------------------------- */

typedef struct {
    braid__spin qlock;
    uint32_t n, arrived;
    braid__wq q;
} barrier_impl;

_Static_assert(sizeof(barrier_impl) <= sizeof(braid_barrier), "braid_barrier too small");

int braid_barrier_init(braid_barrier *bar, unsigned n)
{
    if (!bar || n == 0)
        return -EINVAL;
    memset(bar, 0, sizeof *bar);
    ((barrier_impl *)bar)->n = n;
    return 0;
}

static void barrier_on_leave(void *obj, braid__wnode **list)
{
    (void)list;
    ((barrier_impl *)obj)->arrived--; /* gave up: no longer counts */
}

int braid_barrier_wait_until(braid_barrier *bar, uint64_t deadline_ns)
{
    braid__task *t;
    int rc = entry_check(bar, &t);
    if (rc)
        return rc;
    barrier_impl *b = (barrier_impl *)bar;
    if (b->n == 0)
        return -EINVAL;
    braid__spin_lock(&b->qlock);
    if (++b->arrived < b->n)
        return queue_and_wait(&b->qlock, &b->q, t, BRAID_WAIT_BARRIER, 0, deadline_ns, true,
                              barrier_on_leave, b);
    /* The last to arrive releases the group and leads it. */
    b->arrived = 0;
    braid__wnode *list = NULL;
    braid__wq_claim_all(&b->q, 0, &list);
    braid__spin_unlock(&b->qlock);
    braid__wnode_finish_chain(list);
    return BRAID_BARRIER_LEADER;
}

int braid_barrier_wait(braid_barrier *b)
{
    return braid_barrier_wait_until(b, BRAID_FOREVER);
}

int braid_barrier_destroy(braid_barrier *bar)
{
    if (!bar)
        return -EINVAL;
    barrier_impl *b = (barrier_impl *)bar;
    braid__spin_lock(&b->qlock);
    bool busy = b->arrived != 0;
    braid__spin_unlock(&b->qlock);
    return busy ? -EBUSY : 0;
}

/* ---- once ------------------------------------------------------------------- */

enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

typedef struct {
    _Atomic uint32_t state;
    braid__spin qlock;
    braid__wq q;
} once_impl;

_Static_assert(sizeof(once_impl) <= sizeof(braid_once), "braid_once too small");

/* Wake every waiter with result rc (0: done; -EAGAIN: try again). */
static void once_release(once_impl *o, uint32_t state, int rc)
{
    braid__wnode *list = NULL;
    braid__spin_lock(&o->qlock);
    atomic_store_explicit(&o->state, state, memory_order_release);
    braid__wq_claim_all(&o->q, rc, &list);
    braid__spin_unlock(&o->qlock);
    braid__wnode_finish_chain(list);
}

static void once_reset_on_panic(void *p)
{
    once_release(p, ONCE_NEW, -EAGAIN);
}

int braid_once_call(braid_once *once, void (*fn)(void *), void *arg)
{
    if (!once || !fn)
        return -EINVAL;
    once_impl *o = (once_impl *)once;
    if (atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_DONE)
        return 0;
    braid__task *t = braid__task_current();
    for (;;) {
        if (t && braid__task_should_cancel(t))
            return -ECANCELED;
        braid__spin_lock(&o->qlock);
        uint32_t s = atomic_load_explicit(&o->state, memory_order_acquire);
        if (s == ONCE_DONE) {
            braid__spin_unlock(&o->qlock);
            return 0;
        }
        if (s == ONCE_NEW) {
            atomic_store_explicit(&o->state, ONCE_RUNNING, memory_order_relaxed);
            braid__spin_unlock(&o->qlock);
            braid_defer d;
            bool deferred = t && braid_defer_push(&d, once_reset_on_panic, o) == 0;
            fn(arg);
            if (deferred)
                braid_defer_pop(&d, false);
            once_release(o, ONCE_DONE, 0);
            return 0;
        }
        int rc = queue_and_wait(&o->qlock, &o->q, t, BRAID_WAIT_ONCE, 0, BRAID_FOREVER, true,
                                NULL, NULL);
        if (rc == 0)
            return 0;
        if (rc != -EAGAIN)
            return rc;
        /* The runner panicked: try again (perhaps running it ourselves). */
    }
}

/* ---- notify ------------------------------------------------------------------ */

struct braid_notify {
    braid__spin qlock;
    bool permit;
    braid__wq q;
};

int braid_notify_new(braid_notify **out)
{
    if (!out)
        return -EINVAL;
    braid_notify *n = braid__calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    *out = n;
    return 0;
}

int braid_notify_free(braid_notify *n)
{
    if (!n)
        return -EINVAL;
    braid__spin_lock(&n->qlock);
    bool busy = !braid__wq_empty(&n->q);
    braid__spin_unlock(&n->qlock);
    if (busy)
        return -EBUSY;
    free(n);
    return 0;
}

int braid_notify_one(braid_notify *nt)
{
    if (!nt)
        return -EINVAL;
    braid__spin_lock(&nt->qlock);
    braid__wnode *n = braid__wq_claim(&nt->q);
    if (n)
        n->result = 0;
    else
        nt->permit = true;
    braid__spin_unlock(&nt->qlock);
    if (n)
        braid__wnode_finish(n);
    return 0;
}

int braid_notify_waiters(braid_notify *nt)
{
    if (!nt)
        return -EINVAL;
    braid__wnode *list = NULL;
    braid__spin_lock(&nt->qlock);
    braid__wq_claim_all(&nt->q, 0, &list);
    braid__spin_unlock(&nt->qlock);
    braid__wnode_finish_chain(list);
    return 0;
}

int braid_notify_wait_until(braid_notify *nt, uint64_t deadline_ns)
{
    braid__task *t;
    int rc = entry_check(nt, &t);
    if (rc)
        return rc;
    braid__spin_lock(&nt->qlock);
    if (nt->permit) {
        nt->permit = false;
        braid__spin_unlock(&nt->qlock);
        return 0;
    }
    return queue_and_wait(&nt->qlock, &nt->q, t, BRAID_WAIT_NOTIFY, 0, deadline_ns, true, NULL,
                          NULL);
}

int braid_notify_wait(braid_notify *n)
{
    return braid_notify_wait_until(n, BRAID_FOREVER);
}
