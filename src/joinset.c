/*
 * JoinSet: tasks joined in the order they finish.
 *
 * The set registers itself as the joiner of each task it spawns (one
 * braid__waiter, with set pointing back here), so the finishing task's
 * record reserves its result for the set and tells the set it is done
 * (braid__joinset_finished, under the record's lock).  join_next then
 * takes the oldest finished handle and consumes it like a join.
 *
 * Members are kept in an open-addressing hash set of handles (for
 * cancel_all); the finished ones in a ring sized, at spawn time, for every
 * member, so the finisher never allocates.  Lock order: a record's lock,
 * then the set's; the set's lock is never held while touching a record.
 */
#include "handle.h"
#include "util.h"
#include "task.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

#define JOINSET_MAGIC 0x6a736574u /* "jset" */

struct braid_joinset {
    uint32_t magic;
    braid__spin lock;
    braid__waiter wt;       /* the joiner registered in every member */
    uint64_t *members;      /* hash set of handles; 0 empty, 1 deleted */
    size_t mcap, mcount, mused;
    size_t reserved;        /* spawns under way, counted in the room */
    uint64_t *done;         /* ring of finished handles */
    size_t dcap, dhead, dlen;
    braid__wq waiters;      /* join_next callers */
};

static bool set_ok(const braid_joinset *s)
{
    return s && s->magic == JOINSET_MAGIC;
}

int braid_joinset_new(braid_joinset **out)
{
    if (!out)
        return -EINVAL;
    braid_joinset *s = braid__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->magic = JOINSET_MAGIC;
    s->wt.set = s;
    *out = s;
    return 0;
}

/* ---- the member hash set (under the lock) -------------------------------- */

static size_t slot_of(uint64_t h, size_t cap)
{
    return (size_t)((h * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (cap - 1);
}

static void members_put(braid_joinset *s, uint64_t h)
{
    size_t i = slot_of(h, s->mcap);
    while (s->members[i] > 1)
        i = (i + 1) & (s->mcap - 1);
    if (s->members[i] == 0)
        s->mused++;
    s->members[i] = h;
    s->mcount++;
}

/* Drop member h.  The set left empty, every join_next still waiting is
 * claimed into *list (to be woken after the lock): it returns -ENOENT
 * rather than wait for a member that will never come. */
static void members_del(braid_joinset *s, uint64_t h, braid__wnode **list)
{
    size_t i = slot_of(h, s->mcap);
    while (s->members[i] != 0) {
        if (s->members[i] == h) {
            s->members[i] = 1;
            s->mcount--;
            break;
        }
        i = (i + 1) & (s->mcap - 1);
    }
    if (s->mcount == 0)
        braid__wq_claim_all(&s->waiters, 0, list);
}

static bool grow(braid_joinset *s, size_t need_m, size_t need_d);

/* Reserve room for one more member (hash set at most half full, ring for
 * all of them), growing the tables outside the lock; false when out of
 * memory.  The reservation is taken back by members_put or unreserve. */
static bool reserve(braid_joinset *s)
{
    for (;;) {
        braid__spin_lock(&s->lock);
        size_t want = s->mcount + s->reserved + 1;
        size_t need_m = (s->mused + s->reserved + 1) * 2 > s->mcap ? want * 4 : 0;
        size_t need_d = want > s->dcap ? want * 2 : 0;
        if (!need_m && !need_d) {
            s->reserved++;
            braid__spin_unlock(&s->lock);
            return true;
        }
        braid__spin_unlock(&s->lock);
        if (!grow(s, need_m, need_d))
            return false;
    }
}

static void unreserve(braid_joinset *s)
{
    braid__spin_lock(&s->lock);
    s->reserved--;
    braid__spin_unlock(&s->lock);
}

static bool grow(braid_joinset *s, size_t need_m, size_t need_d)
{
    size_t mcap = 16;
    while (mcap < need_m)
        mcap *= 2;
    uint64_t *nm = need_m ? braid__calloc(mcap, sizeof *nm) : NULL;
    uint64_t *nd = need_d ? braid__malloc(need_d * sizeof *nd) : NULL;
    if ((need_m && !nm) || (need_d && !nd)) {
        free(nm);
        free(nd);
        return false;
    }
    braid__spin_lock(&s->lock);
    if (nm && (s->mused + s->reserved + 1) * 2 <= s->mcap) { /* someone grew it meanwhile */
        free(nm);
        nm = NULL;
    }
    if (nd && need_d <= s->dcap) {
        free(nd);
        nd = NULL;
    }
    if (nm) {
        uint64_t *old = s->members;
        size_t ocap = s->mcap;
        s->members = nm;
        s->mcap = mcap;
        s->mcount = s->mused = 0;
        for (size_t i = 0; i < ocap; i++)
            if (old[i] > 1)
                members_put(s, old[i]);
        nm = old;
    }
    if (nd) {
        for (size_t i = 0; i < s->dlen; i++)
            nd[i] = s->done[(s->dhead + i) % s->dcap];
        uint64_t *old = s->done;
        s->done = nd;
        s->dcap = need_d;
        s->dhead = 0;
        nd = old;
    }
    braid__spin_unlock(&s->lock);
    free(nm);
    free(nd);
    return true;
}

/* With the lock held: queue a finished handle, wake one join_next. */
static braid__wnode *push_done(braid_joinset *s, uint64_t h)
{
    s->done[(s->dhead + s->dlen++) % s->dcap] = h;
    braid__wnode *n = braid__wq_claim(&s->waiters);
    if (n)
        n->result = 0;
    return n;
}

void braid__joinset_finished(braid_joinset *s, uint64_t handle)
{
    braid__spin_lock(&s->lock);
    braid__wnode *n = push_done(s, handle);
    braid__spin_unlock(&s->lock);
    if (n)
        braid__wnode_finish(n);
}

/* ---- spawning and joining ------------------------------------------------- */

typedef int (*spawn_fn)(const char *file, int line, braid_task *out,
                        const braid_spawn_opts *opts, braid_fn fn, void *arg);

static int joinset_spawn_with(braid_joinset *s, spawn_fn spawn, const char *file, int line,
                              const braid_spawn_opts *opts, braid_fn fn, void *arg, uint64_t *id)
{
    if (!set_ok(s) || !fn)
        return -EINVAL;
    if (!braid__task_current())
        return -EPERM;
    if (!reserve(s))
        return -ENOMEM;
    braid_task h;
    int rc = spawn(file, line, &h, opts, fn, arg);
    if (rc) {
        unreserve(s);
        return rc;
    }
    braid__spin_lock(&s->lock);
    s->reserved--;
    members_put(s, h.bits);
    braid__spin_unlock(&s->lock);
    rc = braid__join_register(h, &s->wt);
    if (rc == 0) { /* finished already: it could not tell us */
        braid__spin_lock(&s->lock);
        braid__wnode *n = push_done(s, h.bits);
        braid__spin_unlock(&s->lock);
        if (n)
            braid__wnode_finish(n);
    }
    if (id)
        *id = braid_task_id(h);
    return 0;
}

int braid_joinset_spawn_at(const char *file, int line, braid_joinset *s,
                           const braid_spawn_opts *opts, braid_fn fn, void *arg, uint64_t *id)
{
    return joinset_spawn_with(s, braid_spawn_ex_at, file, line, opts, fn, arg, id);
}

int braid_joinset_spawn(braid_joinset *s, const braid_spawn_opts *opts, braid_fn fn, void *arg,
                        uint64_t *id)
{
    return joinset_spawn_with(s, braid_spawn_ex_at, NULL, 0, opts, fn, arg, id);
}

int braid_joinset_spawn_blocking_at(const char *file, int line, braid_joinset *s,
                                    const braid_spawn_opts *opts, braid_fn fn, void *arg,
                                    uint64_t *id)
{
    return joinset_spawn_with(s, braid_spawn_blocking_ex_at, file, line, opts, fn, arg, id);
}

int braid_joinset_spawn_blocking(braid_joinset *s, const braid_spawn_opts *opts, braid_fn fn,
                                 void *arg, uint64_t *id)
{
    return joinset_spawn_with(s, braid_spawn_blocking_ex_at, NULL, 0, opts, fn, arg, id);
}

static int join_next(braid_joinset *s, braid_outcome *out, uint64_t *id, uint64_t deadline_ns,
                     bool cancellable)
{
    braid__task *t = braid__task_current();
    /* Checked once: a waiter woken for a finished member takes it even if
     * cancelled meanwhile, since that wake-up was meant for one waiter
     * only, and leaving the member would strand the next one. */
    if (cancellable && t && braid__task_should_cancel(t))
        return -ECANCELED;
    for (;;) {
        braid__spin_lock(&s->lock);
        if (s->dlen) {
            uint64_t h = s->done[s->dhead];
            s->dhead = (s->dhead + 1) % s->dcap;
            s->dlen--;
            braid__wnode *list = NULL;
            members_del(s, h, &list);
            braid__spin_unlock(&s->lock);
            braid__wnode_finish_chain(list);
            braid_task th = { h };
            if (id)
                *id = braid_task_id(th);
            return braid__join_take(th, &s->wt, out);
        }
        if (s->mcount == 0) {
            braid__spin_unlock(&s->lock);
            return -ENOENT;
        }
        braid__wait w;
        braid__wnode node;
        braid__wait_init(&w, t, BRAID_WAIT_JOINSET);
        braid__wnode_init(&node, &w, 0, NULL, 0);
        braid__wq_push(&s->waiters, &node);
        braid__spin_unlock(&s->lock);
        int rc = braid__wait_block(&w, deadline_ns, cancellable);
        if (rc < 0) {
            braid__spin_lock(&s->lock);
            rc = braid__wnode_withdraw(&s->waiters, &node, rc);
            braid__spin_unlock(&s->lock);
            if (rc < 0)
                return rc;
            braid__wait_settle(&w);
        }
    }
}

int braid_joinset_join_next_until(braid_joinset *s, braid_outcome *out, uint64_t *id,
                                  uint64_t deadline_ns)
{
    if (!set_ok(s))
        return -EINVAL;
    return join_next(s, out, id, deadline_ns, true);
}

int braid_joinset_join_next(braid_joinset *s, braid_outcome *out, uint64_t *id)
{
    return braid_joinset_join_next_until(s, out, id, BRAID_FOREVER);
}

/* Cancel h, a member; if its handle went stale (its runtime was freed),
 * drop it from the set. */
static void cancel_member(braid_joinset *s, uint64_t h)
{
    braid_task t = { h };
    if (braid_cancel(t) < 0) {
        braid__wnode *list = NULL;
        braid__spin_lock(&s->lock);
        members_del(s, h, &list);
        braid__spin_unlock(&s->lock);
        braid__wnode_finish_chain(list);
    }
}

/* Cancel every member; members whose handle went stale are dropped from
 * the set.  Returns 0: without memory for a snapshot of the members, they
 * are cancelled one at a time, walking the table (deletion leaves a
 * tombstone, so nothing moves; only a member added meanwhile, which may
 * rehash the table, might be missed, as it would be by the snapshot). */
static int cancel_members(braid_joinset *s)
{
    braid__spin_lock(&s->lock);
    size_t n = 0, cap = s->mcount;
    uint64_t *hs = cap ? braid__malloc(cap * sizeof *hs) : NULL;
    if (cap && !hs) {
        braid__spin_unlock(&s->lock);
        for (size_t i = 0;; i++) {
            braid__spin_lock(&s->lock);
            while (i < s->mcap && s->members[i] <= 1)
                i++;
            uint64_t h = i < s->mcap ? s->members[i] : 0;
            braid__spin_unlock(&s->lock);
            if (!h)
                return 0;
            cancel_member(s, h);
        }
    }
    for (size_t i = 0; i < s->mcap && n < cap; i++)
        if (s->members[i] > 1)
            hs[n++] = s->members[i];
    braid__spin_unlock(&s->lock);
    for (size_t i = 0; i < n; i++)
        cancel_member(s, hs[i]);
    free(hs);
    return 0;
}

int braid_joinset_cancel_all(braid_joinset *s)
{
    if (!set_ok(s))
        return -EINVAL;
    return cancel_members(s);
}

int braid_joinset_shutdown(braid_joinset *s)
{
    if (!set_ok(s))
        return -EINVAL;
    int rc = cancel_members(s);
    if (rc)
        return rc;
    braid_outcome out = BRAID_OUTCOME_INIT;
    while (join_next(s, &out, NULL, BRAID_FOREVER, false) != -ENOENT)
        ;
    return 0;
}

size_t braid_joinset_len(braid_joinset *s)
{
    if (!set_ok(s))
        return 0;
    braid__spin_lock(&s->lock);
    size_t n = s->mcount;
    braid__spin_unlock(&s->lock);
    return n;
}

int braid_joinset_free(braid_joinset *s)
{
    int rc = braid_joinset_shutdown(s);
    if (rc)
        return rc;
    s->magic = 0;
    free(s->members);
    free(s->done);
    free(s);
    return 0;
}
