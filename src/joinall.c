/*
 * braid_join_all: Tokio's join! for stackful tasks.
 *
 * Each call runs as a "call" task: its own stack and defers, homed on the
 * caller's worker (so calls interleave with the caller, never run in
 * parallel), with no completion record and the caller's id.  Because every
 * participant lives on one worker, the group's bookkeeping needs no atomics.
 */
#include "panic.h"
#include "util.h"
#include "sched.h"

#include <stdlib.h>
#include <string.h>

struct braid__group {
    braid__task *caller;
    braid_call *calls;
    braid__task **tasks;        /* NULL once a call has ended */
    size_t n, pending;
    braid__panic_info *panic;   /* the first panic of a call */
    bool cancelling;
    bool skipped;               /* a call was cancelled before it ran */
};

static void cancel_calls(braid__group *g, size_t except)
{
    g->cancelling = true;
    for (size_t i = 0; i < g->n; i++)
        if (i != except && g->tasks[i])
            braid__task_cancel_running(g->tasks[i]);
}

void braid__call_finish(braid__task *t, int fate, void *value)
{
    braid__group *g = t->group;
    size_t i = t->call_index;
    g->calls[i].result = value;
    /* Shutdown cancels every live task, calls included, possibly before
     * the caller notices its own cancellation: a call that never ran must
     * not let join_all report success. */
    if (fate == BRAID_CANCELLED)
        g->skipped = true;
    if (fate == BRAID_PANICKED) {
        if (!g->panic) {
            g->panic = t->panic;
            cancel_calls(g, i);
        } else {
            braid__panic_info_free(t->panic);
        }
        t->panic = NULL;
    }
    g->tasks[i] = NULL;
    if (--g->pending == 0)
        braid__wake(g->caller);
}

/* Undo the creation of calls that never ran. */
static void discard(braid__worker *w, braid__group *g, size_t made)
{
    for (size_t i = 0; i < made; i++)
        braid__task_release(w, g->tasks[i]);
}

int braid_join_all(braid_call *calls, size_t n)
{
    braid__task *self = braid__task_current();
    if (!self)
        return -EPERM;
    if ((!calls && n) || n > SIZE_MAX / sizeof(braid__task *))
        return -EINVAL;
    if (braid__task_should_cancel(self))
        return -ECANCELED;
    if (!n)
        return 0;
    braid__worker *w = self->home;
    braid__stack_pool *pool = &w->rt->stacks;
    braid__group g = { .caller = self, .calls = calls, .n = n, .pending = n };
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers: sizeof *p is meant */
    g.tasks = braid__malloc(n * sizeof *g.tasks);
    if (!g.tasks)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        void *slot = braid__stack_get(pool, &w->stacks, pool->default_cls);
        if (!slot) {
            discard(w, &g, i);
            free(g.tasks);
            return -ENOMEM;
        }
        braid__task *c =
            braid__task_init(w, slot, pool->default_cls, self->id, calls[i].fn, calls[i].arg);
        c->kind = BRAID_KIND_CALL;
        c->group = &g;
        c->call_index = i;
        g.tasks[i] = c;
        calls[i].result = NULL;
    }
    for (size_t i = 0; i < n; i++)
        braid__sched_enqueue_ready(w, g.tasks[i]);

    bool cancelled = false;
    self->wait_reason = BRAID_WAIT_JOIN_ALL;
    while (g.pending) {
        /* Once the calls are being cancelled, wait for them unconditionally:
         * they live on this stack's group. */
        if (braid__task_park(self, !g.cancelling) < 0) {
            cancelled = true;
            cancel_calls(&g, SIZE_MAX);
        }
    }
    self->wait_reason = BRAID_WAIT_NONE;
    free(g.tasks);
    if (g.panic) {
        braid__panic_info info = *g.panic;
        braid__panic_info_free(g.panic);
        braid_panic_at(info.file, info.line, "%s", info.message);
    }
    return cancelled || g.skipped ? -ECANCELED : 0;
}
