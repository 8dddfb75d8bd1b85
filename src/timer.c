#include "timer.h"

#include <string.h>

#define L0_MASK (BRAID_WHEEL_L0_SLOTS - 1)
#define UP_BITS 6
#define UP_MASK (BRAID_WHEEL_UP_SLOTS - 1)
/* The furthest tick a timer can be filed at, relative to elapsed. */
#define MAX_SPAN ((UINT64_C(1) << (BRAID_WHEEL_L0_BITS + UP_BITS * BRAID_WHEEL_UP_LEVELS)) - 1)

/* log2 of the ticks one slot of upper level l (1-based) spans. */
static inline unsigned up_shift(unsigned l)
{
    return BRAID_WHEEL_L0_BITS + UP_BITS * (l - 1);
}

void braid__wheel_init(braid__wheel *w, uint64_t now_ns)
{
    memset(w, 0, sizeof *w);
    w->elapsed = braid__tick_floor(now_ns);
}

static void push(braid__timer **head, braid__timer *t)
{
    t->next = *head;
    if (*head)
        (*head)->pprev = &t->next;
    *head = t;
    t->pprev = head;
}

/* File t by its tick, relative to elapsed (t->tick > elapsed). */
static void file(braid__wheel *w, braid__timer *t)
{
    uint64_t tick = t->tick;
    if (tick - w->elapsed < BRAID_WHEEL_L0_SLOTS) {
        unsigned s = (unsigned)tick & L0_MASK;
        push(&w->l0[s], t);
        w->l0_occupied[s / 64] |= UINT64_C(1) << (s % 64);
        w->l0_summary |= UINT64_C(1) << (s / 64);
        t->level = 0;
        t->slot = (uint16_t)s;
        return;
    }
    if (tick - w->elapsed > MAX_SPAN)
        tick = w->elapsed + MAX_SPAN; /* re-filed when that slot comes round */
    /* The level is that of the highest bit in which the tick's 4096-tick
     * block differs from elapsed's, so that everything in one slot of level
     * l shares the current window of level l + 1.  The blocks differ: the
     * tick is at least a block away. */
    uint64_t x = (w->elapsed ^ tick) >> BRAID_WHEEL_L0_BITS;
    unsigned l = 1 + (63u - (unsigned)__builtin_clzll(x)) / UP_BITS;
    if (l > BRAID_WHEEL_UP_LEVELS)
        l = BRAID_WHEEL_UP_LEVELS;
    unsigned s = (unsigned)(tick >> up_shift(l)) & UP_MASK;
    push(&w->up[l - 1][s], t);
    w->up_occupied[l - 1] |= UINT64_C(1) << s;
    t->level = (uint8_t)l;
    t->slot = (uint16_t)s;
}

bool braid__timer_arm(braid__wheel *w, braid__timer *t, uint64_t deadline_ns)
{
    t->tick = braid__tick_ceil(deadline_ns);
    if (t->tick <= w->elapsed) {
        t->pprev = NULL;
        return false;
    }
    file(w, t);
    w->count++;
    return true;
}

static void clear_slot_bit(braid__wheel *w, unsigned level, unsigned s)
{
    if (level == 0) {
        w->l0_occupied[s / 64] &= ~(UINT64_C(1) << (s % 64));
        if (!w->l0_occupied[s / 64])
            w->l0_summary &= ~(UINT64_C(1) << (s / 64));
    } else {
        w->up_occupied[level - 1] &= ~(UINT64_C(1) << s);
    }
}

void braid__timer_disarm(braid__wheel *w, braid__timer *t)
{
    if (!t->pprev)
        return;
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    braid__timer *head = t->level ? w->up[t->level - 1][t->slot] : w->l0[t->slot];
    if (!head)
        clear_slot_bit(w, t->level, t->slot);
    t->pprev = NULL;
    t->next = NULL;
    w->count--;
}

/* The first occupied level-0 slot at or after position p, circularly. */
static unsigned l0_find(const braid__wheel *w, unsigned p)
{
    unsigned wi = p / 64, bi = p % 64;
    uint64_t m = w->l0_occupied[wi] & (~UINT64_C(0) << bi);
    if (m)
        return wi * 64 + (unsigned)__builtin_ctzll(m);
    uint64_t later = wi + 1 < 64 ? w->l0_summary & (~UINT64_C(0) << (wi + 1)) : 0;
    unsigned wj = (unsigned)__builtin_ctzll(later ? later : w->l0_summary);
    return wj * 64 + (unsigned)__builtin_ctzll(w->l0_occupied[wj]);
}

/* The tick at which the wheel next has something to do (fire a level-0
 * slot, or cascade an upper slot), with that slot; false if empty. */
static bool next_slot(const braid__wheel *w, uint64_t *tick, unsigned *level, unsigned *slot)
{
    bool found = false;
    if (w->l0_summary) {
        /* From elapsed itself: a cascade that moved elapsed to a slot's
         * start may leave level-0 entries due at exactly that tick.  (No
         * entry is ever 4096 ticks ahead, so this slot cannot mean later.) */
        unsigned p = (unsigned)w->elapsed & L0_MASK;
        unsigned s = l0_find(w, p);
        *tick = w->elapsed + ((s - p) & L0_MASK);
        *level = 0;
        *slot = s;
        found = true;
    }
    for (unsigned l = 1; l <= BRAID_WHEEL_UP_LEVELS; l++) {
        uint64_t occ = w->up_occupied[l - 1];
        if (!occ)
            continue;
        unsigned shift = up_shift(l);
        uint64_t span = UINT64_C(1) << shift, level_span = span << UP_BITS;
        /* A timer is never filed in the current slot of its level (it would
         * then belong lower), so the search starts after it; an occupied
         * slot at or before it is in the level's next window (only clamped
         * far deadlines land there). */
        unsigned now_slot = (unsigned)(w->elapsed >> shift) & UP_MASK;
        unsigned from = (now_slot + 1) & UP_MASK;
        uint64_t rotated = (occ >> from) | (from ? occ << (64 - from) : 0);
        unsigned s = (from + (unsigned)__builtin_ctzll(rotated)) & UP_MASK;
        uint64_t start = (w->elapsed & ~(level_span - 1)) + (uint64_t)s * span;
        if (s <= now_slot)
            start += level_span;
        /* On a tie the cascade goes first: once elapsed reaches the slot's
         * start it is the current slot and would be skipped. */
        if (!found || start <= *tick) {
            *tick = start;
            *level = l;
            *slot = s;
            found = true;
        }
    }
    return found;
}

size_t braid__wheel_advance(braid__wheel *w, uint64_t now_ns, void (*fire)(braid__timer *t))
{
    uint64_t now = braid__tick_floor(now_ns);
    size_t fired = 0;
    uint64_t tick;
    unsigned level, slot;
    while (w->count && next_slot(w, &tick, &level, &slot) && tick <= now) {
        braid__timer **head = level ? &w->up[level - 1][slot] : &w->l0[slot];
        braid__timer *list = *head;
        *head = NULL;
        clear_slot_bit(w, level, slot);
        if (tick > w->elapsed)
            w->elapsed = tick;
        while (list) {
            braid__timer *t = list;
            list = t->next;
            t->pprev = NULL;
            t->next = NULL;
            if (t->tick <= w->elapsed) {
                w->count--;
                fired++;
                fire(t);
            } else {
                file(w, t); /* cascade down */
            }
        }
    }
    if (now > w->elapsed)
        w->elapsed = now;
    return fired;
}

uint64_t braid__wheel_next_ns(const braid__wheel *w)
{
    uint64_t tick;
    unsigned level, slot;
    if (!w->count || !next_slot(w, &tick, &level, &slot))
        return 0;
    return tick * 1000000u;
}
