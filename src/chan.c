/*
 * Channels and select.
 *
 * Go's design: one lock per channel over a ring buffer and two queues of
 * waiters.  A sender that finds a receiver waiting copies the value straight
 * into the receiver's buffer and wakes it; a receiver that empties a slot of
 * a full channel moves the first waiting sender's value into that slot.  So
 * a waiter's operation is always complete when it wakes (wait.h).
 *
 * The ring grows on demand up to the capacity (an unbounded channel, or a
 * large bound, costs only what it holds).
 */
#include "chan.h"
#include "det.h"
#include "task.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define CHAN_MAGIC 0x6368616eu /* "chan" */
#define CHAN_ITEM_MAX 65536
#define CHAN_MIN_SLOTS 4

static bool chan_ok(const braid_chan *ch)
{
    return ch && ch->magic == CHAN_MAGIC;
}

static bool ring_reserve(braid_chan *ch);

int braid__chan_create(braid_chan **out, size_t item_size, size_t capacity, bool oneshot)
{
    if (!out || item_size == 0 || item_size > CHAN_ITEM_MAX)
        return -EINVAL;
    braid_chan *ch = braid__calloc(1, sizeof *ch);
    if (!ch)
        return -ENOMEM;
    ch->magic = CHAN_MAGIC;
    ch->item_size = item_size;
    ch->cap = capacity;
    ch->oneshot = oneshot;
    ch->senders = 1;
    ch->receivers = 1;
    /* A oneshot's one slot now, so that sending it never fails. */
    if (oneshot && !ring_reserve(ch)) {
        free(ch);
        return -ENOMEM;
    }
    *out = ch;
    return 0;
}

int braid_chan_new(braid_chan **out, size_t item_size, size_t capacity)
{
    return braid__chan_create(out, item_size, capacity, false);
}

static void chan_destroy(braid_chan *ch)
{
    ch->magic = 0;
    free(ch->buf);
    free(ch);
}

/* ---- the ring (under the lock) ----------------------------------------- */

static char *slot_at(braid_chan *ch, size_t i)
{
    return ch->buf + ((ch->head + i) & (ch->slots - 1)) * ch->item_size;
}

/* Make room for one more item; false when out of memory. */
static bool ring_reserve(braid_chan *ch)
{
    if (ch->len < ch->slots)
        return true;
    /* Powers of two (the capacity rounded up), so an index is a mask. */
    size_t want = ch->slots ? ch->slots * 2 : CHAN_MIN_SLOTS;
    if (want == 0 || want > SIZE_MAX / ch->item_size)
        return false;
    char *nb = braid__malloc(want * ch->item_size);
    if (!nb)
        return false;
    for (size_t i = 0; i < ch->len; i++)
        memcpy(nb + i * ch->item_size, slot_at(ch, i), ch->item_size);
    free(ch->buf);
    ch->buf = nb;
    ch->slots = want;
    ch->head = 0;
    return true;
}

/* Items are mostly a word or two: copy those without a call. */
static inline void item_copy(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 8:
        memcpy(dst, src, 8);
        break;
    case 4:
        memcpy(dst, src, 4);
        break;
    case 16:
        memcpy(dst, src, 16);
        break;
    default:
        memcpy(dst, src, n);
    }
}

static void ring_push(braid_chan *ch, const void *item)
{
    item_copy(slot_at(ch, ch->len), item, ch->item_size);
    ch->len++;
}

static void ring_pop(braid_chan *ch, void *item)
{
    item_copy(item, slot_at(ch, 0), ch->item_size);
    ch->head = (ch->head + 1) & (ch->slots - 1);
    ch->len--;
}

/* ---- the operations, with the lock held --------------------------------- */

/* With ch->lock held: try to send without waiting.  Returns 0 (done; *wake
 * is a receiver to finish after unlocking, or NULL), -EPIPE, -ENOMEM, or
 * -EAGAIN (it would have to wait). */
static inline __attribute__((always_inline)) int send_locked(braid_chan *ch, const void *item,
                                                            braid__wnode **wake)
{
    *wake = NULL;
    if (ch->closed || ch->receivers == 0)
        return -EPIPE;
    braid__wnode *n = braid__wq_claim(&ch->recvq);
    if (n) {
        item_copy(n->buf, item, ch->item_size);
        n->result = 0;
        *wake = n;
    } else if (ch->len < ch->cap) {
        if (!ring_reserve(ch))
            return -ENOMEM;
        ring_push(ch, item);
    } else {
        return -EAGAIN;
    }
    if (ch->oneshot)
        ch->closed = true;
    return 0;
}

/* Try to receive without waiting.  Returns 0 (*wake: a sender to finish),
 * -EPIPE (closed and drained), or -EAGAIN. */
static inline __attribute__((always_inline)) int recv_locked(braid_chan *ch, void *item,
                                                            braid__wnode **wake)
{
    *wake = NULL;
    if (ch->len > 0) {
        ring_pop(ch, item);
        /* A slot came free: the first waiting sender's value takes it. */
        braid__wnode *n = braid__wq_claim(&ch->sendq);
        if (n) {
            ring_push(ch, n->buf);
            n->result = 0;
            *wake = n;
        }
        return 0;
    }
    braid__wnode *n = braid__wq_claim(&ch->sendq);
    if (n) { /* rendezvous */
        item_copy(item, n->buf, ch->item_size);
        n->result = 0;
        *wake = n;
        return 0;
    }
    if (ch->closed || ch->senders == 0)
        return -EPIPE;
    return -EAGAIN;
}

/* Fail every waiter of q with -EPIPE: claimed and chained on *list, for
 * finishing after the lock is dropped. */
static void fail_all(braid__wq *q, braid__wnode **list)
{
    braid__wq_claim_all(q, -EPIPE, list);
}

/* ---- blocking send and receive ------------------------------------------ */

/* One send or receive: the immediate attempt, then (unless try) a wait in
 * queue q. */
static inline __attribute__((always_inline)) int chan_op(braid_chan *ch, void *item,
                                                        uint64_t deadline_ns, bool try, bool send)
{
    if (!chan_ok(ch) || !item)
        return -EINVAL;
    braid__task *t = braid__task_current();
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    int rc;
    braid__wnode *wake;
    braid__spin_lock(&ch->lock);
    rc = send ? send_locked(ch, item, &wake) : recv_locked(ch, item, &wake);
    if (rc != -EAGAIN || try) {
        braid__spin_unlock(&ch->lock);
        if (wake)
            braid__wnode_finish(wake);
        if (rc == 0)
            braid__budget_spend(t);
        return rc;
    }
    braid__wq *q = send ? &ch->sendq : &ch->recvq;
    braid__wait w;
    braid__wnode node;
    braid__wait_init(&w, t, send ? BRAID_WAIT_CHAN_SEND : BRAID_WAIT_CHAN_RECV);
    braid__wnode_init(&node, &w, 0, item, 0);
    braid__wq_push(q, &node);
    braid__spin_unlock(&ch->lock);
    rc = braid__wait_block(&w, deadline_ns, true);
    if (rc < 0) {
        braid__spin_lock(&ch->lock);
        rc = braid__wnode_withdraw(q, &node, rc);
        braid__spin_unlock(&ch->lock);
        if (rc < 0)
            return rc;
        braid__wait_settle(&w);
    }
    return node.result;
}

int braid_chan_send_until(braid_chan *ch, const void *item, uint64_t deadline_ns)
{
    return chan_op(ch, (void *)item, deadline_ns, false, true);
}

int braid_chan_send(braid_chan *ch, const void *item)
{
    return chan_op(ch, (void *)item, BRAID_FOREVER, false, true);
}

int braid_chan_try_send(braid_chan *ch, const void *item)
{
    return chan_op(ch, (void *)item, BRAID_FOREVER, true, true);
}

int braid_chan_recv_until(braid_chan *ch, void *item, uint64_t deadline_ns)
{
    return chan_op(ch, item, deadline_ns, false, false);
}

int braid_chan_recv(braid_chan *ch, void *item)
{
    return chan_op(ch, item, BRAID_FOREVER, false, false);
}

int braid_chan_try_recv(braid_chan *ch, void *item)
{
    return chan_op(ch, item, BRAID_FOREVER, true, false);
}

/* ---- closing and references --------------------------------------------- */

/* With the lock held: close for sending and fail every waiter that can no
 * longer complete.  Waiting receivers of a closed channel are failed only
 * once the buffer is empty, which it is when receivers wait. */
static braid__wnode *close_locked(braid_chan *ch)
{
    braid__wnode *list = NULL;
    ch->closed = true;
    fail_all(&ch->sendq, &list);
    fail_all(&ch->recvq, &list);
    return list;
}

int braid_chan_close(braid_chan *ch)
{
    if (!chan_ok(ch))
        return -EINVAL;
    braid__spin_lock(&ch->lock);
    braid__wnode *list = close_locked(ch);
    braid__spin_unlock(&ch->lock);
    braid__wnode_finish_chain(list);
    return 0;
}

static int adjust_refs(braid_chan *ch, bool sender, int delta)
{
    if (!chan_ok(ch))
        return -EINVAL;
    braid__spin_lock(&ch->lock);
    size_t *count = sender ? &ch->senders : &ch->receivers;
    if (delta < 0 && *count == 0) {
        braid__spin_unlock(&ch->lock);
        return -EINVAL;
    }
    if (delta > 0 && *count == SIZE_MAX - 1) {
        braid__spin_unlock(&ch->lock);
        return -EINVAL;
    }
    *count += (size_t)delta;
    braid__wnode *list = NULL;
    if (*count == 0) {
        if (sender) {
            list = close_locked(ch);
        } else {
            /* Nobody will receive: senders fail, the buffer is dropped. */
            ch->len = 0;
            fail_all(&ch->sendq, &list);
        }
    }
    bool last = ch->senders == 0 && ch->receivers == 0;
    braid__spin_unlock(&ch->lock);
    braid__wnode_finish_chain(list);
    if (last)
        chan_destroy(ch);
    return 0;
}

int braid_chan_sender_dup(braid_chan *ch)
{
    return adjust_refs(ch, true, 1);
}

int braid_chan_sender_drop(braid_chan *ch)
{
    return adjust_refs(ch, true, -1);
}

int braid_chan_receiver_dup(braid_chan *ch)
{
    return adjust_refs(ch, false, 1);
}

int braid_chan_receiver_drop(braid_chan *ch)
{
    return adjust_refs(ch, false, -1);
}

size_t braid_chan_len(braid_chan *ch)
{
    if (!chan_ok(ch))
        return 0;
    braid__spin_lock(&ch->lock);
    size_t n = ch->len;
    braid__spin_unlock(&ch->lock);
    return n;
}

/* ---- select --------------------------------------------------------------- */

#define SELECT_MAX 64

static int cmp_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (braid_chan *const *)a, y = (uintptr_t) * (braid_chan *const *)b;
    return x < y ? -1 : x > y;
}

/* The distinct channels of the cases, in address order: the order in which
 * every select locks them, so that two selects cannot deadlock. */
static size_t lock_order(const braid_select_case *c, size_t n, braid_chan **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].chan)
            out[k++] = c[i].chan;
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers: sizeof *p is meant */
    qsort(out, k, sizeof *out, cmp_chan); /* cppcheck-suppress uninitvar ; out[0 .. k) is set above */
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || out[u - 1] != out[i])
            out[u++] = out[i];
    return u;
}

static void lock_all(braid_chan **chans, size_t n)
{
    for (size_t i = 0; i < n; i++)
        braid__spin_lock(&chans[i]->lock);
}

static void unlock_all(braid_chan **chans, size_t n)
{
    for (size_t i = n; i-- > 0;)
        braid__spin_unlock(&chans[i]->lock);
}

static BRAID_TLS uint64_t select_rng;

static uint32_t select_random(void)
{
    if (braid__det_thread())
        return (uint32_t)(braid__det_rand(braid__tls_worker->det) >> 32);
    if (!select_rng)
        select_rng = braid__now_ns() | 1;
    select_rng ^= select_rng << 13;
    select_rng ^= select_rng >> 7;
    select_rng ^= select_rng << 17;
    return (uint32_t)(select_rng >> 16);
}

static int select_check(braid_select_case *c, size_t n, unsigned flags)
{
    if (!c || n == 0 || n > SELECT_MAX || (flags & ~(unsigned)(BRAID_SELECT_BIASED | BRAID_SELECT_NOWAIT)))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!c[i].chan)
            continue;
        if (!chan_ok(c[i].chan) || !c[i].item ||
            (c[i].op != BRAID_SELECT_SEND && c[i].op != BRAID_SELECT_RECV))
            return -EINVAL;
    }
    braid__task *t = braid__task_current();
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    return 0;
}

/* With every channel locked: complete the first ready case in poll order.
 * Returns its index (its result set, *wake a waiter to finish), -1 (none
 * is ready), or -ENOMEM: a send found room in its channel but no memory to
 * grow the buffer, and like braid_chan_send() the select fails, having
 * done nothing (a case's result is only ever 0 or -EPIPE). */
static int select_poll(braid_select_case *c, size_t n, const uint8_t *order, braid__wnode **wake)
{
    for (size_t k = 0; k < n; k++) {
        braid_select_case *x = &c[order[k]];
        if (!x->chan)
            continue;
        int rc = x->op == BRAID_SELECT_SEND ? send_locked(x->chan, x->item, wake)
                                            : recv_locked(x->chan, x->item, wake);
        if (rc == -EAGAIN)
            continue;
        if (rc == -ENOMEM)
            return rc;
        x->result = rc;
        return order[k];
    }
    return -1;
}

int braid_select(braid_select_case *cases, size_t n, uint64_t deadline_ns, unsigned flags)
{
    int rc = select_check(cases, n, flags);
    if (rc)
        return rc;
    uint8_t order[SELECT_MAX];
    for (size_t i = 0; i < n; i++)
        order[i] = (uint8_t)i;
    if (!(flags & BRAID_SELECT_BIASED)) {
        for (size_t k = n; k > 1; k--) { /* Fisher-Yates over order[0 .. k) */
            size_t j = select_random() % k;
            uint8_t tmp = order[k - 1];
            order[k - 1] = order[j];
            order[j] = tmp;
        }
    }
    braid_chan *chans[SELECT_MAX];
    size_t nch = lock_order(cases, n, chans);
    if (nch == 0 && (flags & BRAID_SELECT_NOWAIT))
        return -EAGAIN;
    braid__wnode *wake = NULL;
    lock_all(chans, nch);
    int won = select_poll(cases, n, order, &wake);
    if (won == -ENOMEM) {
        unlock_all(chans, nch);
        return won;
    }
    if (won >= 0 || (flags & BRAID_SELECT_NOWAIT)) {
        unlock_all(chans, nch);
        if (wake)
            braid__wnode_finish(wake);
        if (won >= 0)
            braid__budget_spend(braid__task_current());
        return won >= 0 ? won : -EAGAIN;
    }
    /* Nothing ready: queue a node on every case's channel and wait. */
    braid__wait w;
    braid__wnode nodes[SELECT_MAX];
    braid__wait_init(&w, braid__task_current(), BRAID_WAIT_SELECT);
    w.multi = true;
    for (size_t i = 0; i < n; i++) {
        braid__wnode_init(&nodes[i], &w, (uint32_t)i, cases[i].item, 0);
        if (cases[i].chan)
            braid__wq_push(cases[i].op == BRAID_SELECT_SEND ? &cases[i].chan->sendq
                                                            : &cases[i].chan->recvq,
                           &nodes[i]);
    }
    unlock_all(chans, nch);
    won = braid__wait_block(&w, deadline_ns, true);
    lock_all(chans, nch);
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan)
            braid__wq_remove(cases[i].op == BRAID_SELECT_SEND ? &cases[i].chan->sendq
                                                              : &cases[i].chan->recvq,
                             &nodes[i]);
    unlock_all(chans, nch);
    if (won >= 0)
        cases[won].result = nodes[won].result;
    return won;
}

/* ---- oneshot: a channel of capacity 1 whose first send closes it -------- */

static braid_chan *as_chan(braid_oneshot *o)
{
    return (braid_chan *)o;
}

int braid_oneshot_new(braid_oneshot **out, size_t item_size)
{
    return braid__chan_create((braid_chan **)out, item_size, 1, true);
}

int braid_oneshot_send(braid_oneshot *o, const void *item)
{
    braid_chan *ch = as_chan(o);
    if (!chan_ok(ch) || !item)
        return -EINVAL;
    braid__wnode *wake = NULL;
    braid__spin_lock(&ch->lock);
    if (ch->senders == 0) {
        braid__spin_unlock(&ch->lock);
        return -EPIPE; /* already sent or dropped */
    }
    int rc = send_locked(ch, item, &wake);
    braid__spin_unlock(&ch->lock);
    if (wake)
        braid__wnode_finish(wake);
    adjust_refs(ch, true, -1); /* sending consumes the sending end */
    return rc;
}

static int oneshot_recv(braid_oneshot *o, void *item, uint64_t deadline_ns, bool try)
{
    braid_chan *ch = as_chan(o);
    int rc = chan_op(ch, item, deadline_ns, try, false);
    if (rc == 0 || rc == -EPIPE)
        adjust_refs(ch, false, -1);
    return rc;
}

int braid_oneshot_recv_until(braid_oneshot *o, void *item, uint64_t deadline_ns)
{
    return oneshot_recv(o, item, deadline_ns, false);
}

int braid_oneshot_recv(braid_oneshot *o, void *item)
{
    return oneshot_recv(o, item, BRAID_FOREVER, false);
}

int braid_oneshot_try_recv(braid_oneshot *o, void *item)
{
    return oneshot_recv(o, item, BRAID_FOREVER, true);
}

int braid_oneshot_sender_drop(braid_oneshot *o)
{
    return adjust_refs(as_chan(o), true, -1);
}

int braid_oneshot_receiver_drop(braid_oneshot *o)
{
    return adjust_refs(as_chan(o), false, -1);
}
