/*
 * Deterministic mode (braid_config.deterministic, or BRAID_SEED=n).
 *
 * The runtime is the current-thread flavour (one worker, driven by
 * braid_block_on's thread), and every choice that would otherwise depend
 * on timing is drawn from one seeded PRNG or made in a fixed order:
 *
 *   - which runnable task runs next: every started task that is runnable
 *     (woken, LIFO slot, inbox) and every never-started task (newest spawn,
 *     ring, injection queue) is a candidate, equally likely; tasks that
 *     yielded are candidates only when nothing else is runnable, as
 *     braid_yield promises (tasks waking together, timer ties included,
 *     thereby run in a random order);
 *   - which ready case an unbiased braid_select takes;
 *   - time: a virtual clock (det->now) that starts at BRAID__DET_EPOCH and
 *     stands still while tasks run; when no task is runnable and a timer is
 *     armed it jumps to the next timer (Tokio's paused clock with
 *     auto-advance).  Everything the scheduler, the timers, waits with a
 *     deadline, braid_now_ns() and braid_deadline_ms() read inside the
 *     runtime goes through braid__worker_now().
 *
 * What stays outside: the blocking pool runs each job on a pool thread
 * while the worker thread blocks until it is done (no task runs
 * meanwhile, virtual time does not move), so the schedule is deterministic
 * as far as the jobs are; I/O readiness, wakes and spawns from plain
 * threads and cancellations from outside arrive when they arrive.  A
 * program whose tasks only talk to each other is replayed exactly.
 *
 * The cost when the mode is off: one predictable branch per scheduling
 * decision (pick_local), per timer poll and when a worker is about to park.
 */
#ifndef BRAID_DET_H
#define BRAID_DET_H

#include "sched.h"
#include "util.h"

/* Virtual time at which a deterministic runtime starts: one second, so
 * that no deadline computed from it is 0 (which means "none" in places). */
#define BRAID__DET_EPOCH UINT64_C(1000000000)

struct braid__det {
    uint64_t seed;
    uint64_t rng;                   /* splitmix64 state */
    uint64_t now;                   /* virtual time, ns */
    uint64_t *pending;              /* handles of never-started tasks */
    size_t npending, cap;
};

/* The clock of worker w: virtual time in deterministic mode. */
static inline uint64_t braid__worker_now(const braid__worker *w)
{
    return BRAID_UNLIKELY(w->det != NULL) ? w->det->now : braid__now_ns();
}

/* The clock of the calling thread: its worker's, or the real one. */
static inline uint64_t braid__clock_now(void)
{
    const braid__worker *w = braid__tls_worker;
    return w ? braid__worker_now(w) : braid__now_ns();
}

/* Whether the calling thread is the worker of a deterministic runtime. */
static inline bool braid__det_thread(void)
{
    const braid__worker *w = braid__tls_worker;
    return w && BRAID_UNLIKELY(w->det != NULL);
}

int braid__det_new(braid__det **out, uint64_t seed);
void braid__det_free(braid__det *d);

/* The next pseudo-random number of d. */
uint64_t braid__det_rand(braid__det *d);

/* Choose and take the next task among w's ready list and its
 * never-started tasks (starting it); NULL if there are none.  The caller
 * has moved the LIFO slot and the inbox to the ready list. */
braid__task *braid__det_choose(braid__worker *w);

/* No task is runnable: move virtual time to the next timer.  False if
 * no timer is armed (the worker must really park). */
bool braid__det_advance(braid__worker *w);

/* Read BRAID_SEED into cfg (a default configuration): 0 if unset or
 * applied, -EINVAL if malformed. */
int braid__det_from_env(braid_config *cfg);

#endif
