/*
 * Join handles and completion records.
 *
 * A braid_task handle is (id << 28 | index): index names a 32-byte
 * completion record in a process-wide table, id is the task's unique id,
 * which also serves as the record's generation.  The record outlives the
 * task's stack: it holds what a joiner needs (fate, value, waiter) until the
 * handle is joined or detached, then goes back to a free list with
 * generation 0.  A handle whose id no longer matches its record's is stale;
 * since record memory is never unmapped while any runtime exists, checking
 * is always safe, from any thread.
 *
 * Record state word: generation in the high 36 bits, flags below.
 *
 *   phase     FREE -> QUEUED (spawned) -> RUNNING (claimed by a starter) -> DONE
 *   fate      BRAID_OK / BRAID_PANICKED / BRAID_CANCELLED, valid once DONE
 *   CANCEL    braid_cancel() was called
 *   DETACHED  no joiner will come: whoever finishes the task frees the record
 *   WAITING   a joiner is registered in rec->waiter; once DONE, the result
 *             is reserved for it (another joiner gets -EBUSY)
 *   LOCK      a short spin lock; every transition is a CAS that requires it
 *             clear, so holding it freezes the record.  It guards the fields
 *             that change owner: the running task pointer (which cancellers
 *             dereference: the task cannot finish, and so cannot free its
 *             stack, while they hold the lock) and the waiter (so a finisher
 *             wakes it before the waiter can leave).
 *   EXT       rec->b points at a braid__spawn_ext, not at the argument
 *   NOHANDLE  spawned detached: no handle to it ever left the runtime, so
 *             once it runs nobody else can lock the record (see rec_finish)
 *
 * The fields after the state word change meaning with the phase:
 *
 *   QUEUED:  a.fn = entry function, b = argument (or ext)
 *   RUNNING: a.task = the task, written under LOCK (NULL if it never ran)
 *   DONE:    b = the returned value, or the panic info when PANICKED
 *   FREE:    a.next_free = the next free index + 1
 *
 * Records are allocated from a per-worker cache refilled in batches, so a
 * spawn takes no lock.
 */
#ifndef BRAID_HANDLE_H
#define BRAID_HANDLE_H

#include "internal.h"

#include <pthread.h>

#define BRAID_REC_INDEX_BITS 28
#define BRAID_REC_GEN_MASK ((UINT64_C(1) << (64 - BRAID_REC_INDEX_BITS)) - 1)

enum {
    BRAID_REC_FREE = 0,
    BRAID_REC_QUEUED = 1,
    BRAID_REC_RUNNING = 2,
    BRAID_REC_DONE = 3,
    BRAID_REC_PHASE = 3,
    BRAID_REC_FATE_SHIFT = 2,
    BRAID_REC_FATE = 3 << 2,
    BRAID_REC_CANCEL = 1 << 4,
    BRAID_REC_DETACHED = 1 << 5,
    BRAID_REC_WAITING = 1 << 6,
    BRAID_REC_LOCK = 1 << 7,
    BRAID_REC_EXT = 1 << 8,
    BRAID_REC_NOHANDLE = 1 << 9,
};

struct braid__rec {
    _Atomic uint64_t state;
    union {
        braid_fn fn;                /* QUEUED */
        struct braid__task *task;   /* RUNNING (NULL if it never ran) */
        uintptr_t next_free;        /* FREE: next free index + 1 */
    } a;
    void *b;
    struct braid__waiter *waiter;
};

/* Where a task was spawned and by whom (braid_dump).  Kept beside the
 * records, one per record, rather than in them: a never-started task is
 * only its 32-byte record, and these are written once and read rarely. */
typedef struct braid__site {
    const char *file;               /* NULL: unknown (spawned without a site) */
    uint32_t line;
    uint64_t parent;                /* the spawning task's id, 0: a plain thread */
} braid__site;

#define BRAID_REC_CHUNK_SHIFT 16

/* The site slot of record r, whose index is index: the sites of a chunk
 * follow its records in the same mapping (handle.c). */
static inline braid__site *braid__rec_site(braid__rec *r, uint32_t index)
{
    uint32_t i = index & ((1u << BRAID_REC_CHUNK_SHIFT) - 1);
    char *base = (char *)(r - i);
    return (braid__site *)(base + ((size_t)sizeof(braid__rec) << BRAID_REC_CHUNK_SHIFT)) + i;
}

/* Who waits for a record: a task (woken with braid__wake), a plain thread
 * (woken through the futex word: 0 waiting, 1 done, 2 asleep in the
 * kernel), or a JoinSet (told which of its tasks finished).  Lives on the
 * waiter's stack, or in the JoinSet. */
typedef struct braid__waiter {
    struct braid__task *task;
    _Atomic uint32_t done;
    struct braid_joinset *set;
} braid__waiter;

/* A task of set s finished (called by the finisher, with the task's record
 * locked): joinset.c. */
void braid__joinset_finished(struct braid_joinset *s, uint64_t handle);

/* For JoinSets (task.c): register wt as h's joiner (1; 0 if it is already
 * done; or an error), and consume the result of a done h reserved for wt. */
int braid__join_register(braid_task h, braid__waiter *wt);
int braid__join_take(braid_task h, const braid__waiter *wt, braid_outcome *out);

/* Block a plain thread until w->done becomes 1 (true), or until
 * deadline_ns passes (false): spin briefly, then sleep. */
bool braid__waiter_block_until(braid__waiter *w, uint64_t deadline_ns);

/* Wake w (a plain thread's waiter); the syscall only if it sleeps. */
void braid__waiter_signal(braid__waiter *w);

/* A per-worker cache of free records (pointer and index, so that neither
 * allocation nor freeing looks at the table) and of task ids. */
#define BRAID_REC_CACHE 512

typedef struct braid__rec_cache {
    uint32_t n;
    uint64_t id_next, id_end;
    struct braid__rec_slot {
        braid__rec *r;
        uint32_t index;
    } slot[BRAID_REC_CACHE];
} braid__rec_cache;

/* The records of one runtime.  A runtime owns whole chunks of the table, so
 * every record knows its runtime (finishing a task is counted there, and
 * only that runtime's workers may start it), and freeing the runtime frees
 * its records: its leftover handles then read as stale. */
typedef struct braid__rec_pool {
    pthread_mutex_t lock;
    braid_runtime *rt;
    uint64_t id;            /* unique in the process, never reused */
    struct braid__rec_pool *live_next;
    uint32_t free_head;     /* index + 1 */
    uint32_t carve_next, carve_end;
    uint32_t *chunks;
    uint32_t nchunks, chunks_cap;
} braid__rec_pool;

static inline uint64_t braid__rec_gen(uint64_t state)
{
    return state >> BRAID_REC_INDEX_BITS;
}

static inline unsigned braid__rec_phase(uint64_t state)
{
    return (unsigned)(state & BRAID_REC_PHASE);
}

static inline int braid__rec_fate(uint64_t state)
{
    return (int)((state & BRAID_REC_FATE) >> BRAID_REC_FATE_SHIFT);
}

static inline braid_task braid__handle_make(uint64_t gen, uint32_t index)
{
    braid_task t = { (gen << BRAID_REC_INDEX_BITS) | index };
    return t;
}

static inline uint64_t braid__handle_gen(braid_task t)
{
    return t.bits >> BRAID_REC_INDEX_BITS;
}

int braid__rec_pool_init(braid__rec_pool *p, braid_runtime *rt);

/* Free every chunk of p; records still holding a panic report release it. */
void braid__rec_pool_destroy(braid__rec_pool *p);

/* The record a handle names, or NULL if the handle cannot be valid
 * (generation 0, or a table chunk that does not exist).  The generation is
 * not checked. */
braid__rec *braid__rec_lookup(braid_task t);

/* The pool (and so the runtime) a record index belongs to. */
braid__rec_pool *braid__rec_owner(uint32_t index);

static inline uint32_t braid__handle_index(braid_task t)
{
    return (uint32_t)(t.bits & ((UINT64_C(1) << BRAID_REC_INDEX_BITS) - 1));
}

/* The record cache of the calling plain thread for pool p (threads that are
 * not p's workers: a program's main thread spawning and joining from
 * outside, say).  It saves those threads the pool lock on every spawn and
 * join.  NULL when out of memory. */
braid__rec_cache *braid__rec_thread_cache(braid__rec_pool *p);

/* The slow paths of the inline functions below. */
braid__rec *braid__rec_alloc_slow(braid__rec_pool *p, braid__rec_cache *cache, uint32_t *index);
void braid__rec_free_slow(braid__rec_cache *cache, braid__rec *r, uint32_t index);
uint64_t braid__next_id_slow(braid__rec_cache *cache);
void braid__rec_cache_flush(braid__rec_pool *p, braid__rec_cache *cache);

/* A free record (phase FREE) of pool p and its index, or NULL when out of
 * memory.  cache (a worker's, belonging to p's runtime) may be NULL. */
static inline braid__rec *braid__rec_alloc(braid__rec_pool *p, braid__rec_cache *cache,
                                           uint32_t *index)
{
    if (BRAID_LIKELY(cache && cache->n)) {
        struct braid__rec_slot *s = &cache->slot[--cache->n];
        *index = s->index;
        return s->r;
    }
    return braid__rec_alloc_slow(p, cache, index);
}

/* Give back a record that its last user has marked FREE; cache must belong
 * to a worker of the record's runtime, or be NULL. */
static inline void braid__rec_free(braid__rec_cache *cache, braid__rec *r, uint32_t index)
{
    if (BRAID_LIKELY(cache && cache->n < BRAID_REC_CACHE)) {
        cache->slot[cache->n].r = r;
        cache->slot[cache->n].index = index;
        cache->n++;
        return;
    }
    braid__rec_free_slow(cache, r, index);
}

/* A fresh task id (never 0, fits the generation field). */
static inline uint64_t braid__next_id(braid__rec_cache *cache)
{
    if (BRAID_LIKELY(cache && cache->id_next != cache->id_end)) {
        uint64_t id = cache->id_next++ & BRAID_REC_GEN_MASK;
        if (BRAID_LIKELY(id))
            return id;
    }
    return braid__next_id_slow(cache);
}

/* Lock r if it still has generation gen and is not FREE: returns the state
 * with LOCK set, or 0 if the handle is stale. */
uint64_t braid__rec_lock(braid__rec *r, uint64_t gen);

/* Publish new_state (LOCK cleared) with release ordering. */
static inline void braid__rec_unlock(braid__rec *r, uint64_t new_state)
{
    atomic_store_explicit(&r->state, new_state & ~(uint64_t)BRAID_REC_LOCK, memory_order_release);
}

/* Back off in a spin loop: pause first, then give the CPU away. */
void braid__spin_backoff(unsigned *spins);

/* Release whatever the table still owns for a record at teardown (a panic
 * report nobody joined); set by panic.c. */
void braid__rec_teardown(braid__rec *r, uint64_t state);

#endif
