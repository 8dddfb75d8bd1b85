/*
 * Channels (chan.c): the structure, and the locked operations that select
 * and oneshot share.
 */
#ifndef BRAID_CHAN_H
#define BRAID_CHAN_H

#include "wait.h"

struct braid_chan {
    uint32_t magic;
    braid__spin lock;
    bool closed;
    bool oneshot;               /* the first send closes it */
    size_t item_size;
    size_t cap;                 /* 0: rendezvous; BRAID_CHAN_UNBOUNDED */
    char *buf;                  /* ring of slots (a power of two) items */
    size_t slots, head, len;
    braid__wq sendq, recvq;     /* waiting senders hold their item in buf */
    size_t senders, receivers;  /* references; the channel goes at 0 and 0 */
};

int braid__chan_create(braid_chan **out, size_t item_size, size_t capacity, bool oneshot);

#endif
