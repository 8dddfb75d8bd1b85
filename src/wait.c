/* The waiting protocol of wait.h. */
#include "wait.h"
#include "sched.h"
#include "task.h"
#include "util.h"

#include <sched.h>

void braid__spin_lock_slow(braid__spin *l)
{
    unsigned spins = 0;
    do {
        while (atomic_load_explicit(&l->v, memory_order_relaxed)) {
            if (++spins < 128) {
                braid__cpu_relax();
            } else {
                /* The holder may have been preempted: let it run. */
                int saved = errno;
                sched_yield();
                errno = saved;
            }
        }
    } while (atomic_exchange_explicit(&l->v, 1, memory_order_acquire));
}

void braid__wait_init(braid__wait *w, uint8_t reason)
{
    w->task = braid__task_current();
    atomic_init(&w->claim, 0);
    atomic_init(&w->done, 0);
    w->reason = reason;
}

void braid__wq_push(braid__wq *q, braid__wnode *n)
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

void braid__wq_remove(braid__wq *q, braid__wnode *n)
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

braid__wnode *braid__wq_claim(braid__wq *q)
{
    braid__wnode *n;
    while ((n = q->head)) {
        braid__wq_remove(q, n);
        if (braid__wnode_claim(n))
            return n;
    }
    return NULL;
}

bool braid__wq_has_open(braid__wq *q)
{
    braid__wnode *n;
    while ((n = q->head)) {
        if (atomic_load_explicit(&n->wait->claim, memory_order_acquire) == 0)
            return true;
        braid__wq_remove(q, n);
    }
    return false;
}

void braid__wnode_finish(braid__wnode *n)
{
    braid__wait *w = n->wait;
    braid__task *t = w->task;
    if (t) {
        /* Mark the task woken first (its last access), then release the
         * wait, then enqueue: a task that was parked cannot run, and so
         * cannot leave, before the enqueue, after which we touch nothing;
         * one that was running may leave as soon as it sees done. */
        bool parked = braid__wake_mark(t);
        atomic_store_explicit(&w->done, 1, memory_order_release);
        if (parked)
            braid__wake_enqueue(t);
    } else if (atomic_exchange_explicit(&w->done, 1, memory_order_acq_rel) == 2) {
        /* The address may be gone already: a futex wake only hashes it. */
        braid__futex_wake(&w->done, 1);
    }
}

int braid__wait_settle(braid__wait *w)
{
    uint32_t c = atomic_load_explicit(&w->claim, memory_order_acquire);
    unsigned spins = 0;
    if (w->task) {
        while (!atomic_load_explicit(&w->done, memory_order_acquire))
            braid__spin_backoff(&spins);
    } else {
        uint32_t d = 0;
        if (atomic_compare_exchange_strong_explicit(&w->done, &d, 2, memory_order_acq_rel,
                                                    memory_order_acquire) ||
            d == 2) {
            while (atomic_load_explicit(&w->done, memory_order_acquire) != 1)
                braid__futex_wait(&w->done, 2, 0);
        }
    }
    return (int)c - 1;
}

static int wait_thread(braid__wait *w, uint64_t deadline_ns)
{
    uint32_t d = 0;
    if (!atomic_compare_exchange_strong_explicit(&w->done, &d, 2, memory_order_acq_rel,
                                                 memory_order_acquire))
        return braid__wait_settle(w); /* already finished */
    for (;;) {
        uint64_t now = braid__now_ns();
        if (deadline_ns != BRAID_FOREVER && now >= deadline_ns) {
            if (braid__wait_give_up(w))
                return -ETIMEDOUT;
            return braid__wait_settle(w);
        }
        braid__futex_wait(&w->done, 2, deadline_ns == BRAID_FOREVER ? 0 : deadline_ns);
        if (atomic_load_explicit(&w->done, memory_order_acquire) == 1)
            return braid__wait_settle(w);
    }
}

int braid__wait_block(braid__wait *w, uint64_t deadline_ns, bool cancellable)
{
    braid__task *t = w->task;
    if (!t)
        return wait_thread(w, deadline_ns);
    braid__wheel *wheel = &t->home->wheel;
    bool timed = deadline_ns != BRAID_FOREVER;
    t->timer_fired = false;
    if (timed && !braid__timer_arm(wheel, &t->timer, deadline_ns))
        t->timer_fired = true; /* already due */
    uint8_t saved_reason = t->wait_reason;
    t->wait_reason = w->reason;
    int rc;
    for (;;) {
        if (atomic_load_explicit(&w->claim, memory_order_acquire)) {
            rc = braid__wait_settle(w);
            break;
        }
        if (t->timer_fired) {
            rc = braid__wait_give_up(w) ? -ETIMEDOUT : braid__wait_settle(w);
            break;
        }
        if (braid__task_park(t, cancellable) < 0) {
            rc = braid__wait_give_up(w) ? -ECANCELED : braid__wait_settle(w);
            break;
        }
    }
    if (timed && !t->timer_fired)
        braid__timer_disarm(wheel, &t->timer);
    t->wait_reason = saved_reason;
    return rc;
}

void braid__budget_spend(void)
{
    braid__task *t = braid__task_current();
    if (!t || --t->budget)
        return;
    t->budget = BRAID_BUDGET;
    braid__task_yield_now(t);
}
