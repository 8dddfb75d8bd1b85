/*
 * Timers: one timing wheel per worker.
 *
 * Level 0 is a circular array of 4096 one-millisecond slots holding every
 * timer due within the next 4.096 s, whatever the alignment of that window.
 * Above it, hierarchical levels of 64 slots each (a level-1 slot spans 4096
 * ms, each level 64 times the one below; five levels reach 139 years, later
 * deadlines wait in the last slot and are re-filed when it comes round).
 * Occupancy bitmaps (with a summary word for level 0) find the next expiry
 * in a few bit operations whatever the number of timers.  As time advances,
 * the entries of a due upper slot cascade down until they fire.
 *
 * Why a wide level 0: a cascade re-files every entry of a slot at once, and
 * each entry lives in its own task's stack page, so a million timers in one
 * slot (a million tasks sleeping about a second) cost a cascade of tens of
 * milliseconds during which nothing else runs on the worker.  With 4 s of
 * single-millisecond slots, timers shorter than that never cascade.
 *
 * A task's timer entry lives inside the task itself and only the task's
 * home worker touches its wheel, so there is no lock.  Deadlines are rounded
 * up to the next millisecond tick, so a timer never fires early.
 */
#ifndef BRAID_TIMER_H
#define BRAID_TIMER_H

#include "internal.h"

#define BRAID_WHEEL_L0_BITS 12
#define BRAID_WHEEL_L0_SLOTS (1u << BRAID_WHEEL_L0_BITS)
#define BRAID_WHEEL_UP_LEVELS 5
#define BRAID_WHEEL_UP_SLOTS 64

typedef struct braid__timer {
    struct braid__timer *next;
    struct braid__timer **pprev;    /* NULL when not armed */
    uint64_t tick;                  /* deadline, in ms ticks */
    uint16_t slot;
    uint8_t level;                  /* 0, or 1..BRAID_WHEEL_UP_LEVELS */
} braid__timer;

typedef struct braid__wheel {
    uint64_t elapsed;               /* every tick < elapsed has been processed */
    size_t count;
    uint64_t l0_summary;            /* bit i: l0_occupied[i] != 0 */
    uint64_t l0_occupied[BRAID_WHEEL_L0_SLOTS / 64];
    uint64_t up_occupied[BRAID_WHEEL_UP_LEVELS];
    braid__timer *l0[BRAID_WHEEL_L0_SLOTS];
    braid__timer *up[BRAID_WHEEL_UP_LEVELS][BRAID_WHEEL_UP_SLOTS];
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
