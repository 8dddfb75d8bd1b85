/*
 * Cancellation tokens.  A token is a channel that nobody sends on, closed
 * when the token is cancelled: waiting for the token is receiving from it,
 * and a select can wait for cancellation beside other channels (Go's
 * ctx.Done()).  Parent and child links change under one process-wide lock:
 * tokens are created and cancelled rarely, and a cancellation walks the
 * whole subtree.
 */
#include "chan.h"
#include "util.h"
#include "task.h"

#include <pthread.h>
#include <stdlib.h>

#define TOKEN_MAGIC 0x746f6b6eu /* "tokn" */

struct braid_token {
    uint32_t magic;
    _Atomic bool cancelled;
    braid_chan *done;
    braid_token *parent, *first_child, *next_sibling, *prev_sibling;
};

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;

static bool token_ok(const braid_token *t)
{
    return t && t->magic == TOKEN_MAGIC;
}

/* With tree_lock held: cancel root and its subtree.  A walk along the
 * tree's links, not a recursion: a chain of tokens as deep as a program
 * likes must not overflow the canceller's stack (a task's is small). */
static void cancel_tree(braid_token *root)
{
    braid_token *t = root;
    for (;;) {
        if (!atomic_exchange_explicit(&t->cancelled, true, memory_order_acq_rel))
            braid_chan_close(t->done);
        if (t->first_child) {
            t = t->first_child;
            continue;
        }
        while (t != root && !t->next_sibling)
            t = t->parent;
        if (t == root)
            return;
        t = t->next_sibling;
    }
}

int braid_token_new(braid_token **out, braid_token *parent)
{
    if (!out || (parent && !token_ok(parent)))
        return -EINVAL;
    braid_token *t = braid__calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    int rc = braid_chan_new(&t->done, 1, 0);
    if (rc) {
        free(t);
        return rc;
    }
    t->magic = TOKEN_MAGIC;
    if (parent) {
        pthread_mutex_lock(&tree_lock);
        t->parent = parent;
        t->next_sibling = parent->first_child;
        if (parent->first_child)
            parent->first_child->prev_sibling = t;
        parent->first_child = t;
        if (atomic_load_explicit(&parent->cancelled, memory_order_acquire))
            cancel_tree(t);
        pthread_mutex_unlock(&tree_lock);
    }
    *out = t;
    return 0;
}

int braid_token_cancel(braid_token *t)
{
    if (!token_ok(t))
        return -EINVAL;
    pthread_mutex_lock(&tree_lock);
    cancel_tree(t);
    pthread_mutex_unlock(&tree_lock);
    return 0;
}

bool braid_token_is_cancelled(braid_token *t)
{
    return token_ok(t) && atomic_load_explicit(&t->cancelled, memory_order_acquire);
}

braid_chan *braid_token_chan(braid_token *t)
{
    return token_ok(t) ? t->done : NULL;
}

int braid_token_wait_until(braid_token *t, uint64_t deadline_ns)
{
    if (!token_ok(t))
        return -EINVAL;
    /* The channel's items are 1 byte (and none is ever sent); the buffer is
     * larger because -O3 -flto inlines chan.c's copy here and gcc then
     * warns about its 4-, 8- and 16-byte cases, which cannot run. */
    unsigned char item[16];
    int rc = braid_chan_recv_until(t->done, item, deadline_ns);
    return rc == -EPIPE ? 0 : rc; /* nobody sends: only the close ends it */
}

int braid_token_wait(braid_token *t)
{
    return braid_token_wait_until(t, BRAID_FOREVER);
}

int braid_token_free(braid_token *t)
{
    if (!token_ok(t))
        return -EINVAL;
    braid__spin_lock(&t->done->lock);
    bool busy = !braid__wq_empty(&t->done->recvq);
    braid__spin_unlock(&t->done->lock);
    if (busy)
        return -EBUSY;
    pthread_mutex_lock(&tree_lock);
    if (t->prev_sibling)
        t->prev_sibling->next_sibling = t->next_sibling;
    else if (t->parent)
        t->parent->first_child = t->next_sibling;
    if (t->next_sibling)
        t->next_sibling->prev_sibling = t->prev_sibling;
    for (braid_token *c = t->first_child; c; c = c->next_sibling)
        c->parent = NULL;
    for (braid_token *c = t->first_child, *next; c; c = next) {
        next = c->next_sibling;
        c->prev_sibling = c->next_sibling = NULL;
    }
    pthread_mutex_unlock(&tree_lock);
    t->magic = 0;
    braid_chan_sender_drop(t->done);
    braid_chan_receiver_drop(t->done);
    free(t);
    return 0;
}
