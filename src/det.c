/* Deterministic mode: the PRNG, the choice of the next task, virtual
 * time (det.h). */
#include "det.h"
#include "task.h"

#include <stdlib.h>

/* Room for this many never-started tasks from the start; beyond it the
 * array grows, and if it cannot, gather_new takes what fits. */
#define PENDING_MIN 64

int braid__det_new(braid__det **out, uint64_t seed)
{
    braid__det *d = braid__calloc(1, sizeof *d);
    uint64_t *pending = braid__malloc(PENDING_MIN * sizeof *pending);
    if (!d || !pending) {
        free(d);
        free(pending);
        return -ENOMEM;
    }
    d->seed = seed;
    d->rng = seed;
    d->now = BRAID__DET_EPOCH;
    d->pending = pending;
    d->cap = PENDING_MIN;
    *out = d;
    return 0;
}

void braid__det_free(braid__det *d)
{
    if (d)
        free(d->pending);
    free(d);
}

/* splitmix64: any seed, 0 included, gives a good sequence. */
uint64_t braid__det_rand(braid__det *d)
{
    uint64_t z = (d->rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Grow d->pending for `more` handles if it can; returns the room there is. */
static size_t pending_room(braid__det *d, size_t more)
{
    if (d->npending + more > d->cap) {
        size_t cap = d->cap;
        while (cap < d->npending + more)
            cap *= 2;
        uint64_t *p = braid__realloc(d->pending, cap * sizeof *p);
        if (p) {
            d->pending = p;
            d->cap = cap;
        }
    }
    return d->cap - d->npending;
}

/* Gather the never-started tasks (oldest first, so that a choice depends
 * only on the PRNG) into d->pending, where any of them can be picked.  If
 * the array cannot grow, the oldest that fit: the others stay queued for a
 * later choice (no longer the seed's alone, but every task still starts). */
static void gather_new(braid__worker *w, braid__det *d)
{
    size_t ninject = braid__inject_len(&w->rt->inject);
    size_t nring = braid__ring_len(&w->ring);
    size_t room = pending_room(d, ninject + nring + 1);
    if (ninject && room) {
        size_t got = braid__inject_pop(&w->rt->inject, d->pending + d->npending,
                                       BRAID_MIN(ninject, room));
        d->npending += got;
        room -= got;
    }
    uint64_t h;
    while (nring-- && room && braid__ring_pop(&w->ring, &h)) {
        d->pending[d->npending++] = h;
        room--;
    }
    h = atomic_load_explicit(&w->ring.newest, memory_order_relaxed);
    if (h && room) {
        atomic_store_explicit(&w->ring.newest, 0, memory_order_relaxed);
        d->pending[d->npending++] = h;
    }
}

static braid__task *ready_take(braid__worker *w, size_t k)
{
    braid__task **pp = &w->ready_head, *prev = NULL;
    while (k--) {
        prev = *pp;
        pp = &prev->next;
    }
    braid__task *t = *pp;
    *pp = t->next;
    if (w->ready_tail == t)
        w->ready_tail = prev;
    t->next = NULL;
    return t;
}

braid__task *braid__det_choose(braid__worker *w)
{
    braid__det *d = w->det;
    gather_new(w, d);
    size_t nready = 0;
    for (braid__task *t = w->ready_head; t; t = t->next)
        nready++;
    for (;;) {
        size_t n = nready + d->npending;
        if (!n)
            return NULL;
        size_t k = (size_t)(braid__det_rand(d) % n);
        if (k < nready)
            return ready_take(w, k);
        k -= nready;
        uint64_t h = d->pending[k];
        /* Keep the others in order: the next choice must not depend on
         * how this one was removed beyond the PRNG. */
        for (size_t i = k + 1; i < d->npending; i++)
            d->pending[i - 1] = d->pending[i];
        d->npending--;
        braid__task *t = braid__task_start_queued(w, h);
        if (t)
            return t; /* else stale, or ended without running */
    }
}

bool braid__det_advance(braid__worker *w)
{
    uint64_t next = braid__wheel_next_ns(&w->wheel);
    if (!next)
        return false;
    if (next > w->det->now)
        w->det->now = next;
    return true;
}

int braid__det_from_env(braid_config *cfg)
{
    const char *v = getenv("BRAID_SEED");
    if (!v || !*v)
        return 0;
    if (*v < '0' || *v > '9')
        return -EINVAL; /* strtoull would take blanks and a sign */
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(v, &end, 0);
    if (errno || *end)
        return -EINVAL;
    cfg->deterministic = true;
    cfg->seed = seed;
    return 0;
}
