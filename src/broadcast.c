/*
 * Broadcast and watch: values that many receivers read without taking them
 * from each other.  Both keep their waiters in one queue and wake them all
 * on a change; a woken receiver reads under the lock itself, so a receiver
 * that gives up (deadline, cancellation) has simply not read yet.
 */
#include "task.h"
#include "util.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

#define BCAST_MAGIC 0x62636173u /* "bcas" */
#define WATCH_MAGIC 0x77617463u /* "watc" */
#define FANOUT_ITEM_MAX 65536
#define BCAST_CAP_MAX ((size_t)1 << 20)

/* Wake every waiter of q (under the lock); they re-check for themselves. */
static braid__wnode *claim_all(braid__wq *q)
{
    braid__wnode *list = NULL;
    braid__wq_claim_all(q, 0, &list);
    return list;
}

/* Wait in q (lock l held on entry, dropped on return) for a change.
 * Returns 0 when woken (or if a waker claimed us while we gave up),
 * -ETIMEDOUT or -ECANCELED. */
static int wait_change(braid__spin *l, braid__wq *q, braid__task *t, uint8_t reason,
                       uint64_t deadline_ns)
{
    braid__wait w;
    braid__wnode node;
    braid__wait_init(&w, t, reason);
    braid__wnode_init(&node, &w, 0, NULL, 0);
    braid__wq_push(q, &node);
    braid__spin_unlock(l);
    int rc = braid__wait_block(&w, deadline_ns, true);
    if (rc < 0) {
        braid__spin_lock(l);
        rc = braid__wnode_withdraw(q, &node, rc);
        braid__spin_unlock(l);
        if (rc < 0)
            return rc;
        braid__wait_settle(&w);
    }
    return 0;
}

/* ---- broadcast ------------------------------------------------------------ */

struct braid_bcast {
    uint32_t magic;
    braid__spin lock;
    bool closed;
    size_t item_size, cap;
    uint64_t tail;          /* sequence number of the next value */
    size_t receivers;
    braid__wq waiters;
    char *slots;            /* value seq lives in slot seq % cap */
};

struct braid_bcast_rx {
    braid_bcast *b;
    uint64_t next;          /* sequence number of the next value to read */
};

static bool bcast_ok(const braid_bcast *b)
{
    return b && b->magic == BCAST_MAGIC;
}

int braid_bcast_new(braid_bcast **out, size_t item_size, size_t capacity)
{
    if (!out || item_size == 0 || item_size > FANOUT_ITEM_MAX || capacity == 0 ||
        capacity > BCAST_CAP_MAX)
        return -EINVAL;
    braid_bcast *b = braid__calloc(1, sizeof *b);
    char *slots = braid__malloc(item_size * capacity);
    if (!b || !slots) {
        free(b);
        free(slots);
        return -ENOMEM;
    }
    b->magic = BCAST_MAGIC;
    b->item_size = item_size;
    b->cap = capacity;
    b->slots = slots;
    *out = b;
    return 0;
}

int braid_bcast_send(braid_bcast *b, const void *item)
{
    if (!bcast_ok(b) || !item)
        return -EINVAL;
    braid__spin_lock(&b->lock);
    if (b->closed) {
        braid__spin_unlock(&b->lock);
        return -EPIPE;
    }
    memcpy(b->slots + (b->tail % b->cap) * b->item_size, item, b->item_size);
    b->tail++;
    size_t reached = b->receivers;
    braid__wnode *list = claim_all(&b->waiters);
    braid__spin_unlock(&b->lock);
    braid__wnode_finish_chain(list);
    return reached > INT32_MAX ? INT32_MAX : (int)reached;
}

int braid_bcast_subscribe(braid_bcast *b, braid_bcast_rx **out)
{
    if (!bcast_ok(b) || !out)
        return -EINVAL;
    braid_bcast_rx *rx = braid__malloc(sizeof *rx);
    if (!rx)
        return -ENOMEM;
    braid__spin_lock(&b->lock);
    rx->b = b;
    rx->next = b->tail;
    b->receivers++;
    braid__spin_unlock(&b->lock);
    *out = rx;
    return 0;
}

int braid_bcast_rx_free(braid_bcast_rx *rx)
{
    if (!rx || !bcast_ok(rx->b))
        return -EINVAL;
    braid_bcast *b = rx->b;
    braid__spin_lock(&b->lock);
    b->receivers--;
    braid__spin_unlock(&b->lock);
    free(rx);
    return 0;
}

static int bcast_recv(braid_bcast_rx *rx, void *item, uint64_t *missed, uint64_t deadline_ns,
                      bool try)
{
    if (!rx || !bcast_ok(rx->b) || !item)
        return -EINVAL;
    braid_bcast *b = rx->b;
    braid__task *t = braid__task_current();
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    for (;;) {
        braid__spin_lock(&b->lock);
        uint64_t oldest = b->tail > b->cap ? b->tail - b->cap : 0;
        if (rx->next < oldest) {
            if (missed)
                *missed = oldest - rx->next;
            rx->next = oldest;
            braid__spin_unlock(&b->lock);
            return -EOVERFLOW;
        }
        if (rx->next < b->tail) {
            memcpy(item, b->slots + (rx->next % b->cap) * b->item_size, b->item_size);
            rx->next++;
            braid__spin_unlock(&b->lock);
            braid__budget_spend(t);
            return 0;
        }
        if (b->closed || try) {
            braid__spin_unlock(&b->lock);
            return b->closed ? -EPIPE : -EAGAIN;
        }
        int rc = wait_change(&b->lock, &b->waiters, t, BRAID_WAIT_CHAN_RECV, deadline_ns);
        if (rc < 0)
            return rc;
    }
}

int braid_bcast_recv_until(braid_bcast_rx *rx, void *item, uint64_t *missed, uint64_t deadline_ns)
{
    return bcast_recv(rx, item, missed, deadline_ns, false);
}

int braid_bcast_recv(braid_bcast_rx *rx, void *item, uint64_t *missed)
{
    return bcast_recv(rx, item, missed, BRAID_FOREVER, false);
}

int braid_bcast_try_recv(braid_bcast_rx *rx, void *item, uint64_t *missed)
{
    return bcast_recv(rx, item, missed, BRAID_FOREVER, true);
}

int braid_bcast_close(braid_bcast *b)
{
    if (!bcast_ok(b))
        return -EINVAL;
    braid__spin_lock(&b->lock);
    b->closed = true;
    braid__wnode *list = claim_all(&b->waiters);
    braid__spin_unlock(&b->lock);
    braid__wnode_finish_chain(list);
    return 0;
}

int braid_bcast_free(braid_bcast *b)
{
    if (!bcast_ok(b))
        return -EINVAL;
    braid__spin_lock(&b->lock);
    bool busy = b->receivers || !braid__wq_empty(&b->waiters);
    braid__spin_unlock(&b->lock);
    if (busy)
        return -EBUSY;
    b->magic = 0;
    free(b->slots);
    free(b);
    return 0;
}

/* ---- watch ---------------------------------------------------------------- */

struct braid_watch {
    uint32_t magic;
    braid__spin lock;
    bool closed;
    size_t item_size;
    uint64_t version;
    braid__wq waiters;
    char value[];
};

static bool watch_ok(const braid_watch *w)
{
    return w && w->magic == WATCH_MAGIC;
}

int braid_watch_new(braid_watch **out, size_t item_size, const void *initial)
{
    if (!out || !initial || item_size == 0 || item_size > FANOUT_ITEM_MAX)
        return -EINVAL;
    braid_watch *w = braid__calloc(1, sizeof *w + item_size);
    if (!w)
        return -ENOMEM;
    w->magic = WATCH_MAGIC;
    w->item_size = item_size;
    memcpy(w->value, initial, item_size);
    *out = w;
    return 0;
}

int braid_watch_send(braid_watch *w, const void *item)
{
    if (!watch_ok(w) || !item)
        return -EINVAL;
    braid__spin_lock(&w->lock);
    if (w->closed) {
        braid__spin_unlock(&w->lock);
        return -EPIPE;
    }
    memcpy(w->value, item, w->item_size);
    w->version++;
    braid__wnode *list = claim_all(&w->waiters);
    braid__spin_unlock(&w->lock);
    braid__wnode_finish_chain(list);
    return 0;
}

int braid_watch_get(braid_watch *w, void *item, uint64_t *version)
{
    if (!watch_ok(w))
        return -EINVAL;
    braid__spin_lock(&w->lock);
    if (item)
        memcpy(item, w->value, w->item_size);
    if (version)
        *version = w->version;
    braid__spin_unlock(&w->lock);
    return 0;
}

int braid_watch_changed_until(braid_watch *w, uint64_t *version, void *item, uint64_t deadline_ns)
{
    if (!watch_ok(w) || !version)
        return -EINVAL;
    braid__task *t = braid__task_current();
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    for (;;) {
        braid__spin_lock(&w->lock);
        if (w->version != *version) {
            *version = w->version;
            if (item)
                memcpy(item, w->value, w->item_size);
            braid__spin_unlock(&w->lock);
            return 0;
        }
        if (w->closed) {
            braid__spin_unlock(&w->lock);
            return -EPIPE;
        }
        int rc = wait_change(&w->lock, &w->waiters, t, BRAID_WAIT_WATCH, deadline_ns);
        if (rc < 0)
            return rc;
    }
}

int braid_watch_changed(braid_watch *w, uint64_t *version, void *item)
{
    return braid_watch_changed_until(w, version, item, BRAID_FOREVER);
}

int braid_watch_close(braid_watch *w)
{
    if (!watch_ok(w))
        return -EINVAL;
    braid__spin_lock(&w->lock);
    w->closed = true;
    braid__wnode *list = claim_all(&w->waiters);
    braid__spin_unlock(&w->lock);
    braid__wnode_finish_chain(list);
    return 0;
}

int braid_watch_free(braid_watch *w)
{
    if (!watch_ok(w))
        return -EINVAL;
    braid__spin_lock(&w->lock);
    bool busy = !braid__wq_empty(&w->waiters);
    braid__spin_unlock(&w->lock);
    if (busy)
        return -EBUSY;
    w->magic = 0;
    free(w);
    return 0;
}
