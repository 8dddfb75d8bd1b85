#include "local.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* A key id is (generation << 7 | index); generation starts at 1, so the zero
 * key is invalid and a deleted key's id never comes back. */
#define KEY_INDEX_BITS 7
#define KEY_INDEX_MASK ((1u << KEY_INDEX_BITS) - 1)
/* Destructors may set values again; give up after this many rounds. */
#define DTOR_ROUNDS 4

_Static_assert(BRAID_LOCAL_KEYS == 1u << KEY_INDEX_BITS, "key index bits");

typedef void (*dtor_fn)(void *);

static struct {
    _Atomic uint32_t id;        /* current id of the key in this slot, 0 if free */
    _Atomic(dtor_fn) dtor;
} keys[BRAID_LOCAL_KEYS];

static _Atomic uint32_t key_generation = 1;

int braid_local_key_create(braid_local_key *key, void (*dtor)(void *))
{
    if (!key)
        return -EINVAL;
    uint32_t gen = atomic_fetch_add_explicit(&key_generation, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < BRAID_LOCAL_KEYS; i++) {
        uint32_t expect = 0;
        uint32_t id = (gen << KEY_INDEX_BITS) | i;
        if (atomic_compare_exchange_strong_explicit(&keys[i].id, &expect, id, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&keys[i].dtor, dtor, memory_order_release);
            key->id = id;
            return 0;
        }
    }
    return -EAGAIN;
}

int braid_local_key_delete(braid_local_key key)
{
    uint32_t i = key.id & KEY_INDEX_MASK;
    uint32_t expect = key.id;
    if (!key.id || !atomic_compare_exchange_strong_explicit(&keys[i].id, &expect, 0,
                                                            memory_order_acq_rel,
                                                            memory_order_relaxed))
        return -EINVAL;
    return 0;
}

static bool key_live(braid_local_key key)
{
    return key.id && atomic_load_explicit(&keys[key.id & KEY_INDEX_MASK].id,
                                          memory_order_acquire) == key.id;
}

void *braid_local_get(braid_local_key key)
{
    braid__task *t = braid__task_current();
    uint32_t i = key.id & KEY_INDEX_MASK;
    if (!t || !key_live(key) || i >= t->nlocals || t->locals[i].key != key.id)
        return NULL;
    return t->locals[i].value;
}

int braid_local_set(braid_local_key key, void *value)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (!key_live(key))
        return -EINVAL;
    uint32_t i = key.id & KEY_INDEX_MASK;
    if (i >= t->nlocals) {
        uint32_t n = (i + 8) & ~7u;
        braid__local_slot *s = braid__realloc(t->locals, n * sizeof *s);
        if (!s)
            return -ENOMEM;
        memset(s + t->nlocals, 0, (n - t->nlocals) * sizeof *s);
        t->locals = s;
        t->nlocals = n;
    }
    t->locals[i].key = key.id;
    t->locals[i].value = value;
    return 0;
}

void braid__local_destroy(braid__task *t)
{
    for (int round = 0; round < DTOR_ROUNDS && t->locals; round++) {
        bool any = false;
        for (uint32_t i = 0; i < t->nlocals; i++) {
            braid__local_slot *s = &t->locals[i];
            void *v = s->value;
            if (!v)
                continue;
            s->value = NULL;
            if (atomic_load_explicit(&keys[i].id, memory_order_acquire) != s->key)
                continue; /* the key was deleted: nothing to call */
            dtor_fn d = atomic_load_explicit(&keys[i].dtor, memory_order_acquire);
            if (d) {
                d(v);
                any = true;
            }
        }
        if (!any)
            break;
    }
    free(t->locals);
    t->locals = NULL;
    t->nlocals = 0;
}

int braid_defer_push(braid_defer *d, void (*fn)(void *), void *arg)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (!d || !fn)
        return -EINVAL;
    d->fn = fn;
    d->arg = arg;
    d->next = t->defers;
    t->defers = d;
    return 0;
}

int braid_defer_pop(braid_defer *d, bool run)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (!d || t->defers != d)
        return -EINVAL;
    t->defers = d->next;
    if (run)
        d->fn(d->arg);
    return 0;
}
