#include "timer.h"

#define SLOT_BITS 6
#define SLOT_MASK (BRAID_WHEEL_SLOTS - 1)
/* The furthest tick a timer can be filed at, relative to elapsed. */
#define MAX_SPAN ((UINT64_C(1) << (SLOT_BITS * BRAID_WHEEL_LEVELS)) - 1)

static inline uint64_t slot_ticks(unsigned level)
{
    return UINT64_C(1) << (SLOT_BITS * level);
}

void braid__wheel_init(braid__wheel *w, uint64_t now_ns)
{
    *w = (braid__wheel){ .elapsed = braid__tick_floor(now_ns) };
}

/* The level at which a tick belongs: that of the highest bit in which it
 * differs from elapsed, so that everything in one level-n slot shares the
 * current level-(n+1) window. */
static unsigned level_for(uint64_t elapsed, uint64_t tick)
{
    uint64_t masked = (elapsed ^ tick) | SLOT_MASK;
    unsigned significant = 63u - (unsigned)__builtin_clzll(masked);
    unsigned level = significant / SLOT_BITS;
    return level < BRAID_WHEEL_LEVELS ? level : BRAID_WHEEL_LEVELS - 1;
}

static void file(braid__wheel *w, braid__timer *t)
{
    uint64_t tick = t->tick;
    if (tick - w->elapsed > MAX_SPAN)
        tick = w->elapsed + MAX_SPAN; /* re-filed when that slot comes round */
    unsigned level = level_for(w->elapsed, tick);
    unsigned slot = (unsigned)(tick >> (SLOT_BITS * level)) & SLOT_MASK;
    braid__timer **head = &w->slots[level][slot];
    t->level = (uint8_t)level;
    t->slot = (uint8_t)slot;
    t->next = *head;
    if (*head)
        (*head)->pprev = &t->next;
    *head = t;
    t->pprev = head;
    w->occupied[level] |= UINT64_C(1) << slot;
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

static void unlink_timer(braid__wheel *w, braid__timer *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    if (!w->slots[t->level][t->slot])
        w->occupied[t->level] &= ~(UINT64_C(1) << t->slot);
    t->pprev = NULL;
    t->next = NULL;
}

void braid__timer_disarm(braid__wheel *w, braid__timer *t)
{
    if (!t->pprev)
        return;
    unlink_timer(w, t);
    w->count--;
}

/* The first tick of the next occupied slot after the current one, searching
 * from the lowest level (whose slots all come before any higher level's);
 * sets *level and *slot.  False if the wheel is empty.
 *
 * A timer is never filed in the current slot of its level: it would differ
 * from elapsed in a lower level.  So an occupied slot at or before the
 * current one belongs to the next window of its level; only deadlines
 * beyond the wheel's span, clamped into the top level, land there. */
static bool next_slot(const braid__wheel *w, uint64_t *tick, unsigned *level, unsigned *slot)
{
    for (unsigned l = 0; l < BRAID_WHEEL_LEVELS; l++) {
        uint64_t occ = w->occupied[l];
        if (!occ)
            continue;
        uint64_t span = slot_ticks(l);
        uint64_t level_span = span << SLOT_BITS;
        unsigned now_slot = (unsigned)(w->elapsed >> (SLOT_BITS * l)) & SLOT_MASK;
        unsigned from = (now_slot + 1) & SLOT_MASK;
        uint64_t rotated = (occ >> from) | (from ? occ << (64 - from) : 0);
        unsigned s = (from + (unsigned)__builtin_ctzll(rotated)) & SLOT_MASK;
        uint64_t start = (w->elapsed & ~(level_span - 1)) + (uint64_t)s * span;
        if (s <= now_slot)
            start += level_span;
        *tick = start;
        *level = l;
        *slot = s;
        return true;
    }
    return false;
}

size_t braid__wheel_advance(braid__wheel *w, uint64_t now_ns, void (*fire)(braid__timer *t))
{
    uint64_t now = braid__tick_floor(now_ns);
    size_t fired = 0;
    uint64_t tick;
    unsigned level, slot;
    while (w->count && next_slot(w, &tick, &level, &slot) && tick <= now) {
        braid__timer *list = w->slots[level][slot];
        w->slots[level][slot] = NULL;
        w->occupied[level] &= ~(UINT64_C(1) << slot);
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
                file(w, t); /* cascade to a lower level */
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
