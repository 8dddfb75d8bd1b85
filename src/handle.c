#include "handle.h"
#include "util.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* 65536 records of 32 bytes: one 2 MiB chunk, aligned so that it can be a
 * transparent huge page.  A million handles then cost 16 page faults instead
 * of 8,000. */
#define CHUNK_SHIFT BRAID_REC_CHUNK_SHIFT
#define CHUNK_RECS (1u << CHUNK_SHIFT)
#define CHUNK_BYTES ((size_t)CHUNK_RECS * sizeof(braid__rec))
/* The records' spawn sites follow them (braid__rec_site). */
#define CHUNK_MAP (CHUNK_BYTES + (size_t)CHUNK_RECS * sizeof(braid__site))
#define MAX_CHUNKS (1u << (BRAID_REC_INDEX_BITS - CHUNK_SHIFT))
/* Records moved from the pool into a cache at once. */
#define REFILL (BRAID_REC_CACHE / 2)
/* Ids handed to a cache at once. */
#define ID_BATCH 1024

_Static_assert(sizeof(braid__rec) == 32, "completion records must stay 32 bytes");

/* The chunk directory, shared by all runtimes.  Entries are published with
 * release stores, so a lookup that sees a chunk sees it initialised. */
static struct {
    pthread_mutex_t lock;           /* guards allocation of directory slots */
    _Atomic(braid__rec *) chunk[MAX_CHUNKS];
    _Atomic(braid__rec_pool *) owner[MAX_CHUNKS];
    _Atomic uint64_t next_id;
} dir = { .lock = PTHREAD_MUTEX_INITIALIZER, .next_id = 1 };

/* Live pools, so that a thread cache bound to a pool can tell whether that
 * pool still exists before giving records back to it. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static braid__rec_pool *live_pools;
static _Atomic uint64_t next_pool_id = 1;

static inline braid__rec *rec_at(uint32_t index)
{
    braid__rec *c = atomic_load_explicit(&dir.chunk[index >> CHUNK_SHIFT], memory_order_acquire);
    return c + (index & (CHUNK_RECS - 1));
}

static braid__rec *map_chunk(void)
{
    /* Over-map by 2 MiB and trim, to get a 2 MiB-aligned chunk. */
    size_t len = CHUNK_MAP + CHUNK_BYTES;
    char *p = braid__mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t start = ((uintptr_t)p + CHUNK_BYTES - 1) & ~(uintptr_t)(CHUNK_BYTES - 1);
    size_t head = start - (uintptr_t)p;
    if (head)
        munmap(p, head);
    if (len - head - CHUNK_MAP)
        munmap((char *)start + CHUNK_MAP, len - head - CHUNK_MAP);
    madvise((void *)start, CHUNK_BYTES, MADV_HUGEPAGE);
    return (braid__rec *)start;
}

int braid__rec_pool_init(braid__rec_pool *p, braid_runtime *rt)
{
    memset(p, 0, sizeof *p);
    braid__mutex_init(&p->lock);
    p->rt = rt;
    p->id = atomic_fetch_add_explicit(&next_pool_id, 1, memory_order_relaxed);
    pthread_mutex_lock(&live_lock);
    p->live_next = live_pools;
    live_pools = p;
    pthread_mutex_unlock(&live_lock);
    return 0;
}

static void unregister_pool(braid__rec_pool *p)
{
    pthread_mutex_lock(&live_lock);
    for (braid__rec_pool **pp = &live_pools; *pp; pp = &(*pp)->live_next) {
        if (*pp == p) {
            *pp = p->live_next;
            break;
        }
    }
    pthread_mutex_unlock(&live_lock);
}

void braid__rec_pool_destroy(braid__rec_pool *p)
{
    /* First, so that no thread cache flushes into it any more. */
    unregister_pool(p);
    for (uint32_t k = 0; k < p->nchunks; k++) {
        uint32_t c = p->chunks[k];
        braid__rec *base = atomic_load_explicit(&dir.chunk[c], memory_order_relaxed);
        for (uint32_t i = 0; i < CHUNK_RECS; i++) {
            uint64_t s = atomic_load_explicit(&base[i].state, memory_order_relaxed);
            if (braid__rec_phase(s) != BRAID_REC_FREE)
                braid__rec_teardown(&base[i], s);
        }
        pthread_mutex_lock(&dir.lock);
        atomic_store_explicit(&dir.chunk[c], NULL, memory_order_release);
        atomic_store_explicit(&dir.owner[c], NULL, memory_order_release);
        pthread_mutex_unlock(&dir.lock);
        munmap(base, CHUNK_MAP);
    }
    free(p->chunks);
    pthread_mutex_destroy(&p->lock);
    memset(p, 0, sizeof *p);
}

braid__rec *braid__rec_lookup(braid_task t)
{
    if (!braid__handle_gen(t))
        return NULL;
    uint32_t index = braid__handle_index(t);
    braid__rec *c = atomic_load_explicit(&dir.chunk[index >> CHUNK_SHIFT], memory_order_acquire);
    return c ? c + (index & (CHUNK_RECS - 1)) : NULL;
}

braid__rec_pool *braid__rec_owner(uint32_t index)
{
    return atomic_load_explicit(&dir.owner[index >> CHUNK_SHIFT], memory_order_acquire);
}

/* Give p a new chunk to carve from; call with p->lock held. */
static bool grow_locked(braid__rec_pool *p)
{
    if (p->nchunks == p->chunks_cap) {
        uint32_t ncap = p->chunks_cap ? p->chunks_cap * 2 : 8;
        uint32_t *n = braid__realloc(p->chunks, ncap * sizeof *n);
        if (!n)
            return false;
        p->chunks = n;
        p->chunks_cap = ncap;
    }
    braid__rec *base = map_chunk();
    if (!base)
        return false;
    pthread_mutex_lock(&dir.lock);
    uint32_t c = 0;
    while (c < MAX_CHUNKS && atomic_load_explicit(&dir.chunk[c], memory_order_relaxed))
        c++;
    if (c < MAX_CHUNKS) {
        atomic_store_explicit(&dir.owner[c], p, memory_order_release);
        atomic_store_explicit(&dir.chunk[c], base, memory_order_release);
    }
    pthread_mutex_unlock(&dir.lock);
    if (c == MAX_CHUNKS) {
        munmap(base, CHUNK_MAP);
        return false;
    }
    p->chunks[p->nchunks++] = c;
    p->carve_next = c << CHUNK_SHIFT;
    p->carve_end = p->carve_next + CHUNK_RECS;
    return true;
}

/* Pop one free index + 1 from p (carving fresh records when needed); 0 when
 * out of memory.  Call with p->lock held. */
static uint32_t pop_locked(braid__rec_pool *p)
{
    if (p->free_head) {
        uint32_t head = p->free_head;
        p->free_head = (uint32_t)rec_at(head - 1)->a.next_free;
        return head;
    }
    if (p->carve_next == p->carve_end && !grow_locked(p))
        return 0;
    /* Fresh records are zero: phase FREE, generation 0. */
    return ++p->carve_next;
}

braid__rec *braid__rec_alloc_slow(braid__rec_pool *p, braid__rec_cache *cache, uint32_t *index)
{
    int saved = errno;
    pthread_mutex_lock(&p->lock);
    uint32_t head = pop_locked(p);
    /* A worker takes a batch into its cache along with this one. */
    uint32_t more;
    while (head && cache && cache->n < REFILL && (more = pop_locked(p)) != 0) {
        cache->slot[cache->n].r = rec_at(more - 1);
        cache->slot[cache->n].index = more - 1;
        cache->n++;
    }
    pthread_mutex_unlock(&p->lock);
    errno = saved;
    if (!head)
        return NULL;
    *index = head - 1;
    return rec_at(head - 1);
}

/* Put n cached records back on their pool's free list. */
static void spill(braid__rec_pool *p, struct braid__rec_slot *slots, uint32_t n)
{
    pthread_mutex_lock(&p->lock);
    for (uint32_t i = 0; i < n; i++) {
        slots[i].r->a.next_free = p->free_head;
        p->free_head = slots[i].index + 1;
    }
    pthread_mutex_unlock(&p->lock);
}

void braid__rec_free_slow(braid__rec_cache *cache, braid__rec *r, uint32_t index)
{
    int saved = errno;
    struct braid__rec_slot one = { r, index };
    if (!cache) {
        spill(braid__rec_owner(index), &one, 1);
    } else {
        /* Full: move the older half back to the pool, keep the hot half. */
        uint32_t half = BRAID_REC_CACHE / 2;
        spill(braid__rec_owner(index), cache->slot, half);
        memmove(cache->slot, cache->slot + half, (cache->n - half) * sizeof cache->slot[0]);
        cache->n -= half;
        cache->slot[cache->n++] = one;
    }
    errno = saved;
}

void braid__rec_cache_flush(braid__rec_pool *p, braid__rec_cache *cache)
{
    if (cache->n)
        spill(p, cache->slot, cache->n);
    cache->n = 0;
    cache->id_next = cache->id_end = 0;
}

uint64_t braid__next_id_slow(braid__rec_cache *cache)
{
    for (;;) {
        uint64_t id;
        if (cache) {
            if (cache->id_next == cache->id_end) {
                cache->id_next =
                    atomic_fetch_add_explicit(&dir.next_id, ID_BATCH, memory_order_relaxed);
                cache->id_end = cache->id_next + ID_BATCH;
            }
            id = cache->id_next++;
        } else {
            id = atomic_fetch_add_explicit(&dir.next_id, 1, memory_order_relaxed);
        }
        id &= BRAID_REC_GEN_MASK;
        if (BRAID_LIKELY(id))
            return id;
    }
}

void braid__spin_backoff(unsigned *spins)
{
    if (++*spins < 64) {
        braid__cpu_relax();
    } else {
        int saved = errno;
        sched_yield();
        errno = saved;
    }
}

uint64_t braid__rec_lock(braid__rec *r, uint64_t gen)
{
    uint64_t s = atomic_load_explicit(&r->state, memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (braid__rec_gen(s) != gen || braid__rec_phase(s) == BRAID_REC_FREE)
            return 0;
        if (s & BRAID_REC_LOCK) {
            braid__spin_backoff(&spins);
            s = atomic_load_explicit(&r->state, memory_order_acquire);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&r->state, &s, s | BRAID_REC_LOCK,
                                                  memory_order_acquire, memory_order_acquire))
            return s | BRAID_REC_LOCK;
    }
}

/* ---- plain-thread caches --------------------------------------------------- */

struct thread_cache {
    braid__rec_pool *pool;
    uint64_t pool_id;
    braid__rec_cache cache;
};

static BRAID_TLS struct thread_cache *tls_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

/* Give a thread cache's records back to its pool if that pool still
 * exists (the live lock keeps it from being destroyed meanwhile); records
 * of a destroyed pool went away with it. */
static void unbind(struct thread_cache *c)
{
    pthread_mutex_lock(&live_lock);
    for (braid__rec_pool *p = live_pools; p; p = p->live_next)
        if (p == c->pool && p->id == c->pool_id && c->cache.n)
            spill(p, c->cache.slot, c->cache.n);
    pthread_mutex_unlock(&live_lock);
    c->cache.n = 0;
    c->cache.id_next = c->cache.id_end = 0;
    c->pool = NULL;
}

static void cache_destructor(void *v)
{
    struct thread_cache *c = v;
    unbind(c);
    free(c);
    tls_cache = NULL;
}

static void make_cache_key(void)
{
    pthread_key_create(&cache_key, cache_destructor);
}

braid__rec_cache *braid__rec_thread_cache(braid__rec_pool *p)
{
    struct thread_cache *c = tls_cache;
    if (BRAID_LIKELY(c && c->pool == p && c->pool_id == p->id))
        return &c->cache;
    int saved = errno;
    if (!c) {
        pthread_once(&cache_key_once, make_cache_key);
        c = braid__calloc(1, sizeof *c);
        if (!c || pthread_setspecific(cache_key, c) != 0) {
            free(c);
            errno = saved;
            return NULL;
        }
        tls_cache = c;
    } else {
        unbind(c);
    }
    c->pool = p;
    c->pool_id = p->id;
    errno = saved;
    return &c->cache;
}
