/*
 * braid_notify: a FIFO of waiters and one stored permit, under a mutex.
 * Waiter nodes live on the waiters' stacks.  A notifier picks a waiter and
 * wakes it while holding the lock; a waiter that leaves (cancelled) takes
 * the lock to unlink itself, so it never leaves with a wake-up in flight
 * towards it (the rule of task.h).
 */
#include "handle.h"
#include "task.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>

struct node {
    braid__waiter w;
    struct node *next, *prev;
    bool picked;    /* chosen by a notifier: it has been (or is being) woken */
};

struct braid_notify {
    pthread_mutex_t lock;
    struct node *head, *tail;
    bool permit;
};

int braid_notify_new(braid_notify **out)
{
    if (!out)
        return -EINVAL;
    braid_notify *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    braid__mutex_init(&n->lock);
    *out = n;
    return 0;
}

int braid_notify_free(braid_notify *n)
{
    if (!n)
        return -EINVAL;
    pthread_mutex_lock(&n->lock);
    bool busy = n->head != NULL;
    pthread_mutex_unlock(&n->lock);
    if (busy)
        return -EBUSY;
    pthread_mutex_destroy(&n->lock);
    free(n);
    return 0;
}

static void unlink_node(braid_notify *n, struct node *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        n->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        n->tail = x->prev;
    x->next = x->prev = NULL;
}

static void wake_node(struct node *x)
{
    x->picked = true;
    if (x->w.task)
        braid__wake(x->w.task);
    else
        braid__waiter_signal(&x->w);
}

/* Wake the first waiter or store the permit; call with the lock held. */
static void notify_one_locked(braid_notify *n)
{
    struct node *x = n->head;
    if (!x) {
        n->permit = true;
        return;
    }
    unlink_node(n, x);
    wake_node(x);
}

int braid_notify_one(braid_notify *n)
{
    if (!n)
        return -EINVAL;
    int saved = errno;
    pthread_mutex_lock(&n->lock);
    notify_one_locked(n);
    pthread_mutex_unlock(&n->lock);
    errno = saved;
    return 0;
}

int braid_notify_waiters(braid_notify *n)
{
    if (!n)
        return -EINVAL;
    int saved = errno;
    pthread_mutex_lock(&n->lock);
    while (n->head) {
        struct node *x = n->head;
        unlink_node(n, x);
        wake_node(x);
    }
    pthread_mutex_unlock(&n->lock);
    errno = saved;
    return 0;
}

int braid_notify_wait(braid_notify *n)
{
    if (!n)
        return -EINVAL;
    braid__task *self = braid__task_current();
    if (self && braid__task_should_cancel(self))
        return -ECANCELED;
    int saved = errno;
    struct node x = { .w = { self, 0 } };
    pthread_mutex_lock(&n->lock);
    if (n->permit) {
        n->permit = false;
        pthread_mutex_unlock(&n->lock);
        errno = saved;
        return 0;
    }
    x.prev = n->tail;
    if (n->tail)
        n->tail->next = &x;
    else
        n->head = &x;
    n->tail = &x;
    pthread_mutex_unlock(&n->lock);

    int rc = 0;
    if (self) {
        self->wait_reason = BRAID_WAIT_NOTIFY;
        for (;;) {
            pthread_mutex_lock(&n->lock);
            bool picked = x.picked;
            if (picked && braid__task_should_cancel(self)) {
                notify_one_locked(n); /* cancelled meanwhile: pass it on */
                rc = -ECANCELED;
            }
            pthread_mutex_unlock(&n->lock);
            if (picked)
                break;
            if (braid__task_park(self, true) < 0) {
                pthread_mutex_lock(&n->lock);
                if (!x.picked)
                    unlink_node(n, &x);
                else
                    notify_one_locked(n); /* pass the wake-up on */
                pthread_mutex_unlock(&n->lock);
                rc = -ECANCELED;
                break;
            }
        }
        self->wait_reason = BRAID_WAIT_NONE;
    } else {
        braid__waiter_block(&x.w);
        /* The notifier may still be inside futex_wake on our node: wait
         * for it to drop the lock before the node goes away. */
        pthread_mutex_lock(&n->lock);
        pthread_mutex_unlock(&n->lock);
    }
    errno = saved;
    return rc;
}
