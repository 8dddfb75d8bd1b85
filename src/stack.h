/*
 * Task stacks.
 *
 * Every stack is a slot in an arena: one big anonymous mapping reserved with
 * MAP_NORESERVE and MADV_NOHUGEPAGE, so a stack costs only the pages its task
 * touches and one arena is one VMA however many stacks it holds.  A slot is
 *
 *     [ guard (64 KiB) | usable stack ... | task record at the top ]
 *
 * The guard is installed once per slot, when the slot is first handed out,
 * with madvise(MADV_GUARD_INSTALL) (Linux 6.13+), which marks page-table
 * entries without splitting the VMA; so a million guarded stacks fit under
 * the default vm.max_map_count of 65530.  On older kernels the guard is an
 * mprotect(PROT_NONE) region, which splits the VMA: those are limited to a
 * budget of about 3/8 of vm.max_map_count, and slots beyond it have no
 * guard (a deep overflow there corrupts the neighbouring stack instead of
 * being caught).  64 KiB rather than one page, because Debian's gcc does not
 * enable -fstack-clash-protection and a large frame can jump a small guard.
 *
 * Recycling: a worker keeps a cache of free stacks of the default size
 * (no lock, no syscall); beyond it, free stacks go to a per-size global
 * list.  Free stacks keep their pages ("dirty") up to a retention limit;
 * workers trim the excess with MADV_DONTNEED only when they are idle, so
 * spawning never makes a syscall in the steady state.
 */
#ifndef BRAID_STACK_H
#define BRAID_STACK_H

#include "internal.h"

#include <pthread.h>

#define BRAID_GUARD_SIZE ((size_t)64 * 1024)
#define BRAID_STACK_MIN_SHIFT 14    /* 16 KiB */
#define BRAID_STACK_MAX_SHIFT 30    /* 1 GiB */
#define BRAID_STACK_CLASSES (BRAID_STACK_MAX_SHIFT - BRAID_STACK_MIN_SHIFT + 1)
#define BRAID_STACK_CACHE 64
#define BRAID_DEFAULT_STACK_SIZE ((size_t)256 * 1024)

typedef struct braid__arena braid__arena;

typedef struct braid__stack_class {
    pthread_mutex_t lock;
    size_t usable;          /* bytes of stack above the guard */
    size_t stride;          /* guard + usable + a page for the task record */
    void **dirty;           /* free slots whose pages may still be committed */
    size_t ndirty, dirty_cap;
    void **clean;           /* free slots trimmed with MADV_DONTNEED */
    size_t nclean, clean_cap;
    braid__arena *arenas;   /* newest first; only the newest has uncarved slots */
    size_t carved;          /* slots handed out ever, sizes the next arena */
} braid__stack_class;

typedef struct braid__stack_pool {
    braid__stack_class cls[BRAID_STACK_CLASSES];
    int default_cls;
    int guard_mode;                 /* see stack.c */
    size_t mprotect_budget;
    _Atomic size_t mprotect_used;
    /* Read on every spawn and every park: their own cache line, written
     * only when they change. */
    BRAID_ALIGNED_LINE _Atomic bool exhausted; /* the last arena mapping failed */
    _Atomic bool excess;            /* some class keeps more dirty stacks than it should */
} braid__stack_pool;

/* A worker's private cache of default-size stacks. */
typedef struct braid__stack_cache {
    unsigned n;
    void *slot[BRAID_STACK_CACHE];
} braid__stack_cache;

int braid__stack_pool_init(braid__stack_pool *p, size_t default_size);
void braid__stack_pool_destroy(braid__stack_pool *p);

/* The class for a requested usable size (0: the default); -EINVAL if too big. */
int braid__stack_class_of(const braid__stack_pool *p, size_t size);

void *braid__stack_get_slow(braid__stack_pool *p, braid__stack_cache *cache, int cls);
void braid__stack_put_slow(braid__stack_pool *p, braid__stack_cache *cache, int cls, void *slot);

/* A free slot of class cls (its guard in place), or NULL when no memory or
 * address space is left.  cache may be NULL (plain threads). */
static inline void *braid__stack_get(braid__stack_pool *p, braid__stack_cache *cache, int cls)
{
    if (BRAID_LIKELY(cache && cls == p->default_cls && cache->n))
        return cache->slot[--cache->n];
    return braid__stack_get_slow(p, cache, cls);
}

static inline void braid__stack_put(braid__stack_pool *p, braid__stack_cache *cache, int cls,
                                    void *slot)
{
    if (BRAID_LIKELY(cache && cls == p->default_cls && cache->n < BRAID_STACK_CACHE)) {
        cache->slot[cache->n++] = slot;
        return;
    }
    braid__stack_put_slow(p, cache, cls, slot);
}

/* Give a cache's stacks back to the global lists. */
void braid__stack_cache_flush(braid__stack_pool *p, braid__stack_cache *cache);

/* Trim up to max free stacks beyond the retention limit; returns how many
 * were trimmed.  Meant for idle workers. */
size_t braid__stack_trim(braid__stack_pool *p, size_t max);

/* Whether a later braid__stack_get is likely to fail (cheap hint for spawn). */
bool braid__stack_exhausted(braid__stack_pool *p);

/* The lowest resident page of [lo, hi) (both page-aligned), by mincore(),
 * which neither faults pages in nor reads them: safe on any stack from any
 * thread.  hi if none, 0 if mincore failed. */
uintptr_t braid__stack_lowest_resident(uintptr_t lo, uintptr_t hi);

/* The deepest that any stack of p has been touched, in bytes from the top
 * of its slot (task record page included): by the live tasks, and by
 * finished tasks whose pages are still committed (free stacks keep them
 * until trimmed).  One mincore() call per slot ever handed out, at most;
 * any thread. */
size_t braid__stack_deepest(braid__stack_pool *p);

static inline char *braid__stack_lo(const braid__stack_pool *p, int cls, void *slot)
{
    (void)p;
    (void)cls;
    return (char *)slot + BRAID_GUARD_SIZE;
}

static inline char *braid__stack_top(const braid__stack_pool *p, int cls, void *slot)
{
    return (char *)slot + p->cls[cls].stride;
}

#endif
