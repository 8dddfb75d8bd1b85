/*
 * Run queues of tasks that have not started yet.  Entries are join handles
 * (uint64_t), not pointers: a task can be started by whoever claims its
 * record first (a worker popping the queue, a thief, or a joiner that runs
 * it inline), so an entry may be stale by the time it is popped; the handle's
 * generation makes that detectable, and the popper skips it.
 *
 * The local ring (one per worker) follows Tokio's design.  256 entries;
 * only the owner pushes, at the tail; the owner and thieves take from the
 * head.  The head is two 32-bit indices packed in one word:
 *
 *   real   the next entry to take;
 *   steal  the start of a range a thief has claimed but not finished copying.
 *
 * While steal != real a thief is copying [steal, real), and no other thief
 * may start (they return empty-handed); the owner may still pop from real
 * onwards, and does not overwrite [steal, ...) because its free space is
 * computed from steal.  A thief claims half of what it sees with one CAS of
 * real, copies, then sets steal = real with a second CAS.
 *
 * When the ring is full the owner moves half of it, plus the new entry, to
 * the runtime's injection queue in one batch, so the lock there is taken once
 * per 128 overflowing spawns.
 *
 * The newest spawn waits in a slot of its own beside the ring (Go's
 * runnext): the owner runs it next when the spawner suspends, or takes it
 * back when the spawner joins it, without touching the ring; when another
 * spawn comes, it moves into the ring.  The slot is written by the owner
 * only.  Thieves that find the ring empty may read it and try to start the
 * task; as for every entry, claiming the task's record decides who runs it,
 * so a stale slot is harmless.
 *
 * The injection queue is a mutex-protected FIFO of handle blocks for tasks
 * spawned from outside any worker and for overflow; its length is readable
 * without the lock so idle checks cost one load.
 */
#ifndef BRAID_QUEUE_H
#define BRAID_QUEUE_H

#include "internal.h"

#include <pthread.h>

#define BRAID_RING_CAP 256
#define BRAID_RING_MASK (BRAID_RING_CAP - 1)

typedef struct braid__ring {
    _Atomic uint64_t head;                  /* steal << 32 | real */
    _Atomic uint32_t tail;                  /* written by the owner only */
    _Atomic uint64_t newest;                /* the last spawn, outside the ring */
    _Atomic uint64_t buf[BRAID_RING_CAP];
} braid__ring;

typedef struct braid__inject_block braid__inject_block;

typedef struct braid__inject {
    pthread_mutex_t lock;
    braid__inject_block *head, *tail, *spare;
    uint32_t head_pos, tail_pos;
    _Atomic size_t len;
    _Atomic uint64_t spawned;       /* tasks spawned into it from outside */
} braid__inject;

void braid__ring_init(braid__ring *r);

/* Entries in the ring (may be stale by the time it returns). */
uint32_t braid__ring_len(braid__ring *r);

uint32_t braid__ring_push_full(braid__ring *r, braid__inject *inj, uint64_t h);

/* Owner: push h; on overflow moves half the ring and h to inj.  Returns how
 * many entries wait (at least 1; BRAID_RING_CAP after an overflow), or 0 if
 * the overflow could not be allocated (h was not queued). */
static inline uint32_t braid__ring_push(braid__ring *r, braid__inject *inj, uint64_t h)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (BRAID_LIKELY(tail - (uint32_t)(head >> 32) < BRAID_RING_CAP)) {
        atomic_store_explicit(&r->buf[tail & BRAID_RING_MASK], h, memory_order_relaxed);
        /* Release: a thief that reads the new tail sees the entry. */
        atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
        return tail + 1 - (uint32_t)head;
    }
    return braid__ring_push_full(r, inj, h);
}

/* Owner: push a batch that is known to fit (len <= free space). */
void braid__ring_push_batch(braid__ring *r, const uint64_t *h, uint32_t n);

/* Free space, as the owner sees it. */
uint32_t braid__ring_free(braid__ring *r);

/* Owner: take back h if it is the newest entry (a task joining the child it
 * just spawned runs it itself, and leaves no stale entry behind).  False
 * if h is not the newest entry or a thief got it first. */
bool braid__ring_unpush(braid__ring *r, uint64_t h);

/* Owner: take the oldest entry; false if empty. */
bool braid__ring_pop(braid__ring *r, uint64_t *h);

/* Owner: copy up to max entries, oldest first, leaving them in place;
 * returns how many.  Thieves may take any of them meanwhile. */
uint32_t braid__ring_peek(braid__ring *r, uint64_t *out, uint32_t max);

/* Thief: move about half of src into dst (owned by the caller) and return
 * one of the stolen entries in *h.  Returns how many were stolen (0: none). */
uint32_t braid__ring_steal(braid__ring *src, braid__ring *dst, uint64_t *h);

int braid__inject_init(braid__inject *q);
void braid__inject_destroy(braid__inject *q);

static inline size_t braid__inject_len(braid__inject *q)
{
    return atomic_load_explicit(&q->len, memory_order_acquire);
}

/* Append n handles; false when out of memory (nothing appended).  With
 * spawned set they are new tasks from outside the workers, counted in
 * q->spawned under the same lock that publishes them.  The length is
 * updated with a sequentially consistent read-modify-write, which orders
 * the push before the caller's look at the idle workers (see notify in
 * sched.c), so no separate fence is needed. */
bool braid__inject_push(braid__inject *q, const uint64_t *h, size_t n, bool spawned);

/* Take up to max handles from the front; returns how many. */
size_t braid__inject_pop(braid__inject *q, uint64_t *out, size_t max);

/* Copy up to max handles from the front, leaving them queued; returns how
 * many.  Any thread. */
size_t braid__inject_peek(braid__inject *q, uint64_t *out, size_t max);

#endif
