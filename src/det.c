/* Deterministic mode: the PRNG, the choice of the next task, virtual
 * time (det.h). */
#include "det.h"
#include "task.h"

#include <stdlib.h>

int braid__det_new(braid__det **out, uint64_t seed)
{
    braid__det *d = braid__calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->seed = seed;
    d->rng = seed;
    d->now = BRAID__DET_EPOCH;
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

static bool pending_reserve(braid__det *d, size_t more)
{
    if (d->npending + more <= d->cap)
        return true;
    size_t cap = d->cap ? d->cap : 64;
    while (cap < d->npending + more)
        cap *= 2;
    uint64_t *p = realloc(d->pending, cap * sizeof *p);
    if (!p)
        return false;
    d->pending = p;
    d->cap = cap;
    return true;
}

/* Gather the never-started tasks (oldest first, so that a choice depends
 * only on the PRNG) into d->pending, where any of them can be picked.  Out
 * of memory, they stay queued and the ordinary order starts them. */
static void gather_new(braid__worker *w, braid__det *d)
{
    size_t ninject = braid__inject_len(&w->rt->inject);
    size_t nring = braid__ring_len(&w->ring);
    if (!pending_reserve(d, ninject + nring + 1))
        return;
    if (ninject)
        d->npending += braid__inject_pop(&w->rt->inject, d->pending + d->npending, ninject);
    uint64_t h;
    while (nring-- && braid__ring_pop(&w->ring, &h))
        d->pending[d->npending++] = h;
    h = atomic_load_explicit(&w->ring.newest, memory_order_relaxed);
    if (h) {
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
