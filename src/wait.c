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

bool braid__wq_has_open(braid__wq *q)
{
    braid__wnode *n;
    while ((n = q->head)) {
        if (!n->wait->multi || atomic_load_explicit(&n->wait->claim, memory_order_acquire) == 0)
            return true;
        braid__wq_remove(q, n);
    }
    return false;
}

void braid__wnode_finish_thread(braid__wait *w)
{
    if (atomic_exchange_explicit(&w->done, 1, memory_order_acq_rel) == 2) {
        /* The address may be gone already: a futex wake only hashes it. */
        braid__futex_wake(&w->done, 1);
    }
}

void braid__wnode_finish_chain(braid__wnode *n)
{
    while (n) {
        braid__wnode *next = n->next; /* read before n may go */
        braid__wnode_finish(n);
        n = next;
    }
}

int braid__wait_settle_slow(braid__wait *w)
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
        if (deadline_ns != BRAID_FOREVER && now >= deadline_ns)
            return braid__wait_give_up_or_settle(w, -ETIMEDOUT);
        braid__futex_wait(&w->done, 2, deadline_ns == BRAID_FOREVER ? 0 : deadline_ns);
        if (atomic_load_explicit(&w->done, memory_order_acquire) == 1)
            return braid__wait_settle(w);
    }
}

int braid__wait_block_slow(braid__wait *w, uint64_t deadline_ns, bool cancellable)
{
    braid__task *t = w->task;
    if (!t) {
        /* Counted for the deadlock check (observe.h). */
        bool forever = deadline_ns == BRAID_FOREVER;
        if (forever)
            atomic_fetch_add_explicit(&braid__obs_blocked_threads, 1, memory_order_seq_cst);
        int rc = wait_thread(w, deadline_ns);
        if (forever)
            atomic_fetch_sub_explicit(&braid__obs_blocked_threads, 1, memory_order_seq_cst);
        return rc;
    }
    if (!braid__task_timer_arm(t, deadline_ns))
        t->timer_fired = true; /* already due */
    int rc = braid__wait_task(w, t, cancellable, true);
    braid__task_timer_done(t);
    return rc;
}

void braid__budget_yield(braid__task *t)
{
    t->budget = BRAID_BUDGET;
    braid__task_yield_now(t);
}
