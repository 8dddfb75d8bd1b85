#include "queue.h"
#include "util.h"

#include <stdlib.h>

#define BLOCK_ENTRIES 1022

struct braid__inject_block {
    braid__inject_block *next;
    uint64_t h[BLOCK_ENTRIES];
};

static inline uint64_t pack(uint32_t steal, uint32_t real)
{
    return (uint64_t)steal << 32 | real;
}

static inline uint32_t steal_of(uint64_t head)
{
    return (uint32_t)(head >> 32);
}

static inline uint32_t real_of(uint64_t head)
{
    return (uint32_t)head;
}

void braid__ring_init(braid__ring *r)
{
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->newest, 0);
    for (unsigned i = 0; i < BRAID_RING_CAP; i++)
        atomic_init(&r->buf[i], 0);
}

uint32_t braid__ring_len(braid__ring *r)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    int32_t n = (int32_t)(tail - real_of(head)); /* < 0 inside an unpush */
    return n > 0 ? (uint32_t)n : 0;
}

uint32_t braid__ring_free(braid__ring *r)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    return BRAID_RING_CAP - (tail - steal_of(head));
}

void braid__ring_push_batch(braid__ring *r, const uint64_t *h, uint32_t n)
{
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        atomic_store_explicit(&r->buf[(tail + i) & BRAID_RING_MASK], h[i], memory_order_relaxed);
    /* Release: a thief that reads the new tail sees the entries. */
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
}

/* Move the oldest half of a full ring plus h to the injection queue.  Fails
 * (returning false without side effects) if the CAS loses to a thief; the
 * caller retries the push. */
static bool push_overflow(braid__ring *r, braid__inject *inj, uint32_t real, uint64_t h,
                          bool *nomem)
{
    enum { HALF = BRAID_RING_CAP / 2 };
    uint64_t batch[HALF + 1];
    uint64_t expect = pack(real, real);
    /* Claim the oldest half as a thief would, in one step since we are the
     * only writer of the entries. */
    if (!atomic_compare_exchange_strong_explicit(&r->head, &expect, pack(real + HALF, real + HALF),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    for (uint32_t i = 0; i < HALF; i++)
        batch[i] = atomic_load_explicit(&r->buf[(real + i) & BRAID_RING_MASK], memory_order_relaxed);
    batch[HALF] = h;
    if (!braid__inject_push(inj, batch, HALF + 1, false)) {
        /* Out of memory: the claim freed HALF slots, so the batch goes back
         * in (behind the rest); only h is refused. */
        braid__ring_push_batch(r, batch, HALF);
        *nomem = true;
    }
    return true;
}

uint32_t braid__ring_push_full(braid__ring *r, braid__inject *inj, uint64_t h)
{
    for (;;) {
        uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        uint32_t steal = steal_of(head), real = real_of(head);
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (tail - steal < BRAID_RING_CAP) {
            atomic_store_explicit(&r->buf[tail & BRAID_RING_MASK], h, memory_order_relaxed);
            atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
            return tail + 1 - real;
        }
        if (steal != real) {
            /* A thief is emptying the ring right now; send just h over. */
            return braid__inject_push(inj, &h, 1, false) ? BRAID_RING_CAP : 0;
        }
        bool nomem = false;
        if (push_overflow(r, inj, real, h, &nomem))
            return nomem ? 0 : BRAID_RING_CAP;
    }
}

/*
 * Taking back the newest entry races only with thieves, who claim half of
 * what they see, rounded up, from the head: with two or more entries in the
 * ring that never includes the newest one, whatever tail a thief read.  So
 * the owner lowers the tail first (sequentially consistent, like
 * Chase-Lev's pop) and then looks at the head: if the head is still below
 * the entry, the entry is ours.  If it is the only entry left, the owner
 * takes it from the head with a CAS, as a pop would, and a thief may win.
 * If thieves emptied the ring between the owner's first look and the
 * lowering, the lowered tail is one behind the head until it is put back:
 * thieves and braid__ring_len() read the difference as signed.
 */
bool braid__ring_unpush(braid__ring *r, uint64_t h)
{
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail == real_of(head) ||
        atomic_load_explicit(&r->buf[(tail - 1) & BRAID_RING_MASK], memory_order_relaxed) != h)
        return false;
    uint32_t t = tail - 1;
    atomic_store_explicit(&r->tail, t, memory_order_seq_cst);
    head = atomic_load_explicit(&r->head, memory_order_seq_cst);
    uint32_t real = real_of(head);
    if ((int32_t)(t - real) > 0)
        return true;
    /* The entry is the last one, or gone: put the tail back. */
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    if (real != t)
        return false;
    uint32_t steal = steal_of(head);
    uint64_t next = steal == real ? pack(real + 1, real + 1) : pack(steal, real + 1);
    return atomic_compare_exchange_strong_explicit(&r->head, &head, next, memory_order_acq_rel,
                                                   memory_order_relaxed);
}

bool braid__ring_pop(braid__ring *r, uint64_t *h)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    for (;;) {
        uint32_t steal = steal_of(head), real = real_of(head);
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (real == tail)
            return false;
        /* With no thief active, steal follows real. */
        uint64_t next = steal == real ? pack(real + 1, real + 1) : pack(steal, real + 1);
        if (atomic_compare_exchange_weak_explicit(&r->head, &head, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *h = atomic_load_explicit(&r->buf[real & BRAID_RING_MASK], memory_order_relaxed);
            return true;
        }
    }
}

uint32_t braid__ring_peek(braid__ring *r, uint64_t *out, uint32_t max)
{
    /* Only the owner writes entries, so those from real to the tail stay
     * as they are while it reads them. */
    uint32_t real = real_of(atomic_load_explicit(&r->head, memory_order_acquire));
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint32_t n = 0;
    for (uint32_t i = real; i != tail && n < max; i++)
        out[n++] = atomic_load_explicit(&r->buf[i & BRAID_RING_MASK], memory_order_relaxed);
    return n;
}

uint32_t braid__ring_steal(braid__ring *src, braid__ring *dst, uint64_t *h)
{
    uint32_t dst_tail = atomic_load_explicit(&dst->tail, memory_order_relaxed);
    uint64_t dst_head = atomic_load_explicit(&dst->head, memory_order_acquire);
    /* Do not steal into a ring more than half full: the thief has work. */
    if (dst_tail - steal_of(dst_head) > BRAID_RING_CAP / 2)
        return 0;

    uint64_t prev = atomic_load_explicit(&src->head, memory_order_acquire);
    uint32_t first, n;
    for (;;) {
        uint32_t steal = steal_of(prev), real = real_of(prev);
        if (steal != real)
            return 0; /* another thief is at work */
        uint32_t tail = atomic_load_explicit(&src->tail, memory_order_acquire);
        /* Signed: the owner's unpush lowers the tail for a moment, and if
         * thieves emptied the ring just before, that tail is behind the
         * head; read as unsigned it would claim 2^31 entries. */
        int32_t avail = (int32_t)(tail - real);
        if (avail <= 0)
            return 0;
        n = (uint32_t)avail - (uint32_t)avail / 2;
        /* Claim [real, real + n): real moves on, steal stays as a marker. */
        if (atomic_compare_exchange_weak_explicit(&src->head, &prev, pack(steal, real + n),
                                                  memory_order_acq_rel, memory_order_acquire)) {
            first = real;
            break;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v = atomic_load_explicit(&src->buf[(first + i) & BRAID_RING_MASK], memory_order_relaxed);
        atomic_store_explicit(&dst->buf[(dst_tail + i) & BRAID_RING_MASK], v, memory_order_relaxed);
    }
    /* Done copying: let the owner reuse the range (steal = real). */
    prev = atomic_load_explicit(&src->head, memory_order_acquire);
    for (;;) {
        uint64_t next = pack(real_of(prev), real_of(prev));
        if (atomic_compare_exchange_weak_explicit(&src->head, &prev, next, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    /* Keep the newest stolen entry to run now; publish the rest. */
    n--;
    *h = atomic_load_explicit(&dst->buf[(dst_tail + n) & BRAID_RING_MASK], memory_order_relaxed);
    if (n)
        atomic_store_explicit(&dst->tail, dst_tail + n, memory_order_release);
    return n + 1;
}

int braid__inject_init(braid__inject *q)
{
    braid__mutex_init(&q->lock);
    q->head = q->tail = q->spare = NULL;
    q->head_pos = q->tail_pos = 0;
    atomic_init(&q->len, 0);
    atomic_init(&q->spawned, 0);
    return 0;
}

void braid__inject_destroy(braid__inject *q)
{
    braid__inject_block *b = q->head;
    while (b) {
        braid__inject_block *n = b->next;
        free(b);
        b = n;
    }
    free(q->spare);
    pthread_mutex_destroy(&q->lock);
}

bool braid__inject_push(braid__inject *q, const uint64_t *h, size_t n, bool spawned)
{
    pthread_mutex_lock(&q->lock);
    /* Allocate every block this push needs first, so that failure leaves the
     * queue untouched. */
    size_t room = q->tail ? BLOCK_ENTRIES - q->tail_pos : 0;
    braid__inject_block *fresh = NULL, **link = &fresh;
    for (size_t need = n > room ? n - room : 0; need; need -= BRAID_MIN(need, (size_t)BLOCK_ENTRIES)) {
        braid__inject_block *b = q->spare;
        if (b)
            q->spare = NULL;
        else if (!(b = braid__malloc(sizeof *b))) {
            while (fresh) {
                braid__inject_block *x = fresh->next;
                free(fresh);
                fresh = x;
            }
            pthread_mutex_unlock(&q->lock);
            return false;
        }
        b->next = NULL;
        *link = b;
        link = &b->next;
    }
    /* NOLINTBEGIN(clang-analyzer-unix.Malloc): the analyzer follows only a
     * few turns of this loop and misses that it takes exactly the blocks
     * allocated above (room is what the tail block still holds). */
    for (size_t i = 0; i < n; i++) {
        if (!q->tail || q->tail_pos == BLOCK_ENTRIES) {
            braid__inject_block *b = fresh;
            fresh = b->next;
            b->next = NULL;
            if (q->tail)
                q->tail->next = b;
            else
                q->head = b, q->head_pos = 0;
            q->tail = b;
            q->tail_pos = 0;
        }
        q->tail->h[q->tail_pos++] = h[i];
    }
    if (spawned)
        atomic_store_explicit(&q->spawned, atomic_load_explicit(&q->spawned, memory_order_relaxed) + n,
                              memory_order_release);
    atomic_fetch_add_explicit(&q->len, n, memory_order_seq_cst);
    pthread_mutex_unlock(&q->lock);
    /* NOLINTEND(clang-analyzer-unix.Malloc) */
    return true;
}

size_t braid__inject_peek(braid__inject *q, uint64_t *out, size_t max)
{
    size_t got = 0;
    pthread_mutex_lock(&q->lock);
    uint32_t pos = q->head_pos;
    for (const braid__inject_block *b = q->head; b && got < max; b = b->next, pos = 0) {
        uint32_t end = b == q->tail ? q->tail_pos : BLOCK_ENTRIES;
        while (got < max && pos < end)
            out[got++] = b->h[pos++];
    }
    pthread_mutex_unlock(&q->lock);
    return got;
}

size_t braid__inject_pop(braid__inject *q, uint64_t *out, size_t max)
{
    if (!braid__inject_len(q))
        return 0;
    size_t got = 0;
    pthread_mutex_lock(&q->lock);
    while (got < max && q->head) {
        braid__inject_block *b = q->head;
        uint32_t end = b == q->tail ? q->tail_pos : BLOCK_ENTRIES;
        while (got < max && q->head_pos < end)
            out[got++] = b->h[q->head_pos++];
        if (q->head_pos < end)
            break;
        if (b == q->tail) {
            /* Empty: keep the block for the next push. */
            q->head = q->tail = NULL;
            q->head_pos = q->tail_pos = 0;
        } else {
            q->head = b->next;
            q->head_pos = 0;
        }
        if (!q->spare) {
            q->spare = b;
        } else {
            free(b);
        }
    }
    atomic_store_explicit(&q->len, atomic_load_explicit(&q->len, memory_order_relaxed) - got,
                          memory_order_release);
    pthread_mutex_unlock(&q->lock);
    return got;
}
