#include "stack.h"
#include "util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

enum { GUARD_MADVISE, GUARD_MPROTECT };

/* Free stacks a class keeps committed beyond the worker caches before idle
 * workers start trimming. */
#define RETAIN_DIRTY 256
/* Stacks moved between a worker cache and the global lists at once. */
#define CACHE_BATCH (BRAID_STACK_CACHE / 2)
/* Largest arena, and slots in the first one. */
#define ARENA_MAX_BYTES ((size_t)4 << 30)
#define ARENA_MIN_SLOTS 16

struct braid__arena {
    char *base;
    size_t nslots;
    size_t next;            /* first slot never handed out */
    braid__arena *older;
};

static size_t read_max_map_count(void)
{
    size_t v = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    char buf[32];
    if (f) {
        if (fgets(buf, sizeof buf, f)) {
            char *end;
            long long x = strtoll(buf, &end, 10);
            if (end != buf && x > 0 && x < LLONG_MAX)
                v = (size_t)x;
        }
        fclose(f);
    }
    return v;
}

/* Whether madvise(MADV_GUARD_INSTALL) really guards a page: some
 * environments accept the call and do nothing (qemu-user ignores madvise
 * hints).  Writing the page to a pipe makes the kernel read it: on a guard
 * page that fails with EFAULT, without any signal. */
static bool guard_markers_work(void)
{
    size_t page = braid__page_size();
    void *probe =
        braid__mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED)
        return false; /* mprotect guards work everywhere */
    bool works = false;
    int fds[2];
    if (madvise(probe, page, MADV_GUARD_INSTALL) == 0 && braid__pipe2(fds, O_CLOEXEC) == 0) {
        works = write(fds[1], probe, 1) < 0 && errno == EFAULT;
        close(fds[0]);
        close(fds[1]);
    }
    munmap(probe, page);
    return works;
}

int braid__stack_pool_init(braid__stack_pool *p, size_t default_size)
{
    int saved = errno;
    memset(p, 0, sizeof *p);
    for (int i = 0; i < BRAID_STACK_CLASSES; i++) {
        braid__stack_class *c = &p->cls[i];
        braid__mutex_init(&c->lock);
        c->usable = (size_t)1 << (BRAID_STACK_MIN_SHIFT + i);
        /* One page more than the usable size: the task record and the
         * cache colour (task.c) come out of it, not out of the stack the
         * caller asked for. */
        c->stride = c->usable + BRAID_GUARD_SIZE + braid__page_size();
    }
    p->default_cls = 0;
    int cls = braid__stack_class_of(p, default_size ? default_size : BRAID_DEFAULT_STACK_SIZE);
    if (cls < 0) {
        braid__stack_pool_destroy(p);
        return cls;
    }
    p->default_cls = cls;
    /* Probe once whether the kernel has guard markers.  BRAID_NO_GUARD_INSTALL
     * forces the mprotect fallback, to test it on new kernels. */
    const char *force = getenv("BRAID_NO_GUARD_INSTALL");
    p->guard_mode = force && *force && *force != '0' ? GUARD_MPROTECT
                    : guard_markers_work()          ? GUARD_MADVISE
                                                    : GUARD_MPROTECT;
    p->mprotect_budget = read_max_map_count() * 3 / 8;
    errno = saved;
    return 0;
}

void braid__stack_pool_destroy(braid__stack_pool *p)
{
    for (int i = 0; i < BRAID_STACK_CLASSES; i++) {
        braid__stack_class *c = &p->cls[i];
        braid__arena *a = c->arenas;
        while (a) {
            braid__arena *older = a->older;
            munmap(a->base, a->nslots * c->stride);
            free(a);
            a = older;
        }
        free(c->dirty);
        free(c->clean);
        pthread_mutex_destroy(&c->lock);
    }
    memset(p, 0, sizeof *p);
}

int braid__stack_class_of(const braid__stack_pool *p, size_t size)
{
    if (!size)
        return p->default_cls;
    if (size > ((size_t)1 << BRAID_STACK_MAX_SHIFT))
        return -EINVAL;
    int cls = 0;
    while (((size_t)1 << (BRAID_STACK_MIN_SHIFT + cls)) < size)
        cls++;
    return cls;
}

bool braid__stack_exhausted(braid__stack_pool *p)
{
    return atomic_load_explicit(&p->exhausted, memory_order_relaxed);
}

/* Set a shared flag only if it changes: every worker reads these lines. */
static inline void set_flag(_Atomic bool *f, bool v)
{
    if (atomic_load_explicit(f, memory_order_relaxed) != v)
        atomic_store_explicit(f, v, memory_order_relaxed);
}

static bool push_slot(void ***arr, size_t *n, size_t *cap, void *slot)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        void **na = braid__realloc(*arr, ncap * sizeof *na);
        if (!na)
            return false;
        *arr = na;
        *cap = ncap;
    }
    (*arr)[(*n)++] = slot;
    return true;
}

/* Map a new arena for c; call with c->lock held. */
static braid__arena *new_arena(braid__stack_pool *p, braid__stack_class *c)
{
    size_t nslots = BRAID_MAX(c->carved, (size_t)ARENA_MIN_SLOTS);
    size_t max_slots = BRAID_MAX(ARENA_MAX_BYTES / c->stride, (size_t)1);
    if (nslots > max_slots)
        nslots = max_slots;
    braid__arena *a = braid__malloc(sizeof *a);
    if (!a)
        return NULL;
    for (;;) {
        a->base = braid__mmap(NULL, nslots * c->stride, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a->base != MAP_FAILED)
            break;
        if (nslots == 1) {
            free(a);
            set_flag(&p->exhausted, true);
            return NULL;
        }
        nslots /= 2; /* address space is short: try smaller */
    }
    /* Huge pages would turn one touched stack page into 2 MiB. */
    madvise(a->base, nslots * c->stride, MADV_NOHUGEPAGE);
    a->nslots = nslots;
    a->next = 0;
    a->older = c->arenas;
    c->arenas = a;
    set_flag(&p->exhausted, false);
    return a;
}

static void install_guard(braid__stack_pool *p, void *slot)
{
    if (p->guard_mode == GUARD_MADVISE) {
        if (madvise(slot, BRAID_GUARD_SIZE, MADV_GUARD_INSTALL) == 0)
            return;
    }
    size_t used = atomic_fetch_add_explicit(&p->mprotect_used, 1, memory_order_relaxed);
    if (used < p->mprotect_budget)
        mprotect(slot, BRAID_GUARD_SIZE, PROT_NONE);
}

/* Take up to want free or new slots of class c into out[]; returns how many.
 * The guards of new slots are installed outside the lock. */
static size_t take_slots(braid__stack_pool *p, braid__stack_class *c, void **out, size_t want)
{
    size_t got = 0, fresh_from;
    pthread_mutex_lock(&c->lock);
    while (got < want && c->ndirty)
        out[got++] = c->dirty[--c->ndirty];
    while (got < want && c->nclean)
        out[got++] = c->clean[--c->nclean];
    fresh_from = got;
    while (got < want) {
        braid__arena *a = c->arenas;
        if (!a || a->next == a->nslots) {
            a = new_arena(p, c);
            if (!a)
                break;
        }
        while (got < want && a->next < a->nslots)
            out[got++] = a->base + (a->next++) * c->stride;
    }
    c->carved += got - fresh_from;
    pthread_mutex_unlock(&c->lock);
    for (size_t i = fresh_from; i < got; i++)
        install_guard(p, out[i]);
    return got;
}

void *braid__stack_get_slow(braid__stack_pool *p, braid__stack_cache *cache, int cls)
{
    if (cache && cls == p->default_cls) {
        int saved = errno;
        cache->n = (unsigned)take_slots(p, &p->cls[cls], cache->slot, CACHE_BATCH);
        errno = saved;
        return cache->n ? cache->slot[--cache->n] : NULL;
    }
    void *slot = NULL;
    int saved = errno;
    take_slots(p, &p->cls[cls], &slot, 1);
    errno = saved;
    return slot;
}

/* Return n slots to the global dirty list of c. */
static void give_back(braid__stack_pool *p, braid__stack_class *c, void **slots, size_t n)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        if (!push_slot(&c->dirty, &c->ndirty, &c->dirty_cap, slots[i])) {
            /* No memory to remember it: trim it so it costs nothing, and
             * leave it carved but unused until the arena is unmapped. */
            madvise((char *)slots[i] + BRAID_GUARD_SIZE, c->usable, MADV_DONTNEED);
        }
    }
    bool over = c->ndirty > RETAIN_DIRTY;
    pthread_mutex_unlock(&c->lock);
    set_flag(&p->exhausted, false);
    if (over)
        set_flag(&p->excess, true);
}

void braid__stack_put_slow(braid__stack_pool *p, braid__stack_cache *cache, int cls, void *slot)
{
    if (cache && cls == p->default_cls) {
        /* Full: the older half goes back to the global list. */
        int saved = errno;
        cache->n -= CACHE_BATCH;
        give_back(p, &p->cls[cls], &cache->slot[cache->n], CACHE_BATCH);
        errno = saved;
        cache->slot[cache->n++] = slot;
        return;
    }
    int saved = errno;
    give_back(p, &p->cls[cls], &slot, 1);
    errno = saved;
}

void braid__stack_cache_flush(braid__stack_pool *p, braid__stack_cache *cache)
{
    if (cache->n)
        give_back(p, &p->cls[p->default_cls], cache->slot, cache->n);
    cache->n = 0;
}

uintptr_t braid__stack_lowest_resident(uintptr_t lo, uintptr_t hi)
{
    size_t page = braid__page_size();
    unsigned char vec[512];
    for (uintptr_t a = lo; a < hi;) {
        size_t n = BRAID_MIN((hi - a) / page, sizeof vec);
        if (mincore((void *)a, n * page, vec) != 0)
            return 0;
        for (size_t i = 0; i < n; i++)
            if (vec[i] & 1)
                return a + i * page;
        a += n * page;
    }
    return hi;
}

/* The deepest of n slots of arena a (class c), if deeper than deepest:
 * only the part of each slot below that depth is looked at. */
static size_t arena_deepest(const braid__stack_class *c, const braid__arena *a, size_t n,
                            size_t deepest)
{
    if (c->stride - BRAID_GUARD_SIZE <= deepest)
        return deepest; /* no slot of this size can be deeper */
    for (size_t s = 0; s < n; s++) {
        uintptr_t top = (uintptr_t)a->base + (s + 1) * c->stride;
        uintptr_t lo = (uintptr_t)a->base + s * c->stride + BRAID_GUARD_SIZE;
        uintptr_t low = braid__stack_lowest_resident(lo, top - deepest);
        if (low && low < top - deepest)
            deepest = top - low;
    }
    return deepest;
}

size_t braid__stack_deepest(braid__stack_pool *p)
{
    size_t deepest = 0;
    for (int i = 0; i < BRAID_STACK_CLASSES; i++) {
        braid__stack_class *c = &p->cls[i];
        pthread_mutex_lock(&c->lock);
        const braid__arena *a = c->arenas;
        size_t n = a ? a->next : 0;
        pthread_mutex_unlock(&c->lock);
        /* Arenas stay mapped as long as the pool, and only the newest one
         * (read under the lock) gains slots: the older ones are full, and
         * their fields have not changed since it was published. */
        for (; a; a = a->older, n = a ? a->nslots : 0)
            deepest = arena_deepest(c, a, n, deepest);
    }
    return deepest;
}

size_t braid__stack_trim(braid__stack_pool *p, size_t max)
{
    /* Workers call this every time they are about to park: one load when
     * there is nothing to do. */
    if (!atomic_load_explicit(&p->excess, memory_order_relaxed))
        return 0;
    atomic_store_explicit(&p->excess, false, memory_order_relaxed);
    size_t done = 0;
    int saved = errno;
    for (int i = 0; i < BRAID_STACK_CLASSES && done < max; i++) {
        braid__stack_class *c = &p->cls[i];
        void *batch[64];
        size_t n = 0;
        pthread_mutex_lock(&c->lock);
        /* The hottest stacks live in the worker caches; which of the global
         * ones is trimmed hardly matters, so take them from the end. */
        if (c->ndirty > RETAIN_DIRTY) {
            n = BRAID_MIN(c->ndirty - RETAIN_DIRTY, BRAID_MIN(max - done, (size_t)64));
            c->ndirty -= n;
            memcpy(batch, c->dirty + c->ndirty, n * sizeof *batch);
        }
        pthread_mutex_unlock(&c->lock);
        for (size_t k = 0; k < n; k++)
            madvise((char *)batch[k] + BRAID_GUARD_SIZE, c->usable, MADV_DONTNEED);
        pthread_mutex_lock(&c->lock);
        for (size_t k = 0; k < n; k++)
            if (!push_slot(&c->clean, &c->nclean, &c->clean_cap, batch[k]))
                break; /* forgotten but trimmed: harmless */
        if (c->ndirty > RETAIN_DIRTY)
            set_flag(&p->excess, true); /* more next time */
        pthread_mutex_unlock(&c->lock);
        done += n;
    }
    if (done >= max)
        set_flag(&p->excess, true); /* stopped early */
    errno = saved;
    return done;
}
