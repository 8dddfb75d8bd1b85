/*
 * Timers: one hierarchical timing wheel per worker.
 *
 * Six levels of 64 slots; a level-0 slot is one millisecond, a level-n slot
 * 64^n ms, so the wheel spans 64^6 ms (about 2.2 years; later deadlines wait
 * in the last level and are re-filed when it comes round).  Each level keeps
 * a 64-bit occupancy mask, so the next expiry is found with a few bit
 * operations whatever the number of timers.  As time advances, the entries
 * of a higher-level slot cascade into lower levels until they fire.
 *
 * A task's timer entry lives inside the task itself and only the task's
 * home worker touches its wheel, so there is no lock: insert, remove and
 * expiry are plain list operations.  Deadlines are rounded up to the next
 * millisecond tick, so a timer never fires early.
 */
#ifndef BRAID_TIMER_H
#define BRAID_TIMER_H

#include "internal.h"

#define BRAID_WHEEL_LEVELS 6
#define BRAID_WHEEL_SLOTS 64

typedef struct braid__timer {
    struct braid__timer *next;
    struct braid__timer **pprev;    /* NULL when not armed */
    uint64_t tick;                  /* deadline, in ms ticks */
    uint8_t level, slot;
} braid__timer;

typedef struct braid__wheel {
    uint64_t elapsed;               /* every tick <= elapsed has been processed */
    size_t count;
    uint64_t occupied[BRAID_WHEEL_LEVELS];
    braid__timer *slots[BRAID_WHEEL_LEVELS][BRAID_WHEEL_SLOTS];
} braid__wheel;

static inline uint64_t braid__tick_floor(uint64_t ns)
{
    return ns / 1000000u;
}

static inline uint64_t braid__tick_ceil(uint64_t ns)
{
    return ns / 1000000u + (ns % 1000000u != 0);
}

void braid__wheel_init(braid__wheel *w, uint64_t now_ns);

/* Arm t for deadline_ns.  Returns false (t not armed) if the deadline has
 * already passed as far as the wheel is concerned. */
bool braid__timer_arm(braid__wheel *w, braid__timer *t, uint64_t deadline_ns);

/* Disarm t if it is armed. */
void braid__timer_disarm(braid__wheel *w, braid__timer *t);

static inline bool braid__timer_armed(const braid__timer *t)
{
    return t->pprev != NULL;
}

/* Advance the wheel to now_ns and call fire(t) for every timer that expired;
 * fire may not touch the wheel.  Returns how many fired. */
size_t braid__wheel_advance(braid__wheel *w, uint64_t now_ns, void (*fire)(braid__timer *t));

/* The earliest time (ns) at which advancing could fire or cascade a timer,
 * or 0 if no timer is armed. */
uint64_t braid__wheel_next_ns(const braid__wheel *w);

#endif
