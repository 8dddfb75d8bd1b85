/*
 * Randomized scenarios for deterministic mode (tests/test_scenario.c, the
 * corpus replay in tests/test_fuzz_corpus.c, the fuzzer fuzz/fuzz_scenario.c).
 *
 * A scenario is a small program generated from a byte source (a seeded
 * PRNG, or the fuzzer's input bytes): up to SC_MAX_SCRIPTS scripts of up to
 * SC_MAX_OPS operations each (spawn, join, detach, cancel, panic, yield,
 * sleep, channel send/recv/try/close, mutex, semaphore, select with a
 * deadline, JoinSet, join_all, defer).  Script 0 is the root task; a script
 * only spawns scripts with a higher index, and SC_MAX_TASKS bounds the
 * tasks, so every scenario ends.  Every wait has a deadline (free in
 * virtual time) but joins, half of which (and those at a script's end)
 * wait forever: a task only ever joins its own children, which run
 * higher-numbered scripts, so a scenario cannot deadlock unless braid is
 * wrong.
 *
 * sc_run() runs it in a deterministic runtime and checks, as it goes and
 * at the end: every task ends exactly once (or, cancelled before it
 * started, has its arg_drop run instead), joins report the fate the task
 * really had, every defer runs exactly once (none that was popped without
 * running), no channel value is lost or delivered twice, the mutex and the
 * semaphore exclude as they should, cancelled tasks and the runtime's
 * shutdown complete.  Cancellation is followed exactly (one thread, so the
 * scenario knows where each task stands when it is cancelled): see
 * sc_cancelling().  It returns a hash of the event log (who did what,
 * with which result, at which virtual time): running a scenario twice must
 * give the same hash.  Leaks are left to ASan/LSan and Valgrind.
 *
 * A failed check prints the seed, the failure and sc_replay_hint, then
 * aborts (the fuzzer keeps the input that did it).
 */
#ifndef BRAID_TEST_SCENARIO_H
#define BRAID_TEST_SCENARIO_H

#include <braid.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_MAX_SCRIPTS 12
#define SC_MAX_OPS 12
#define SC_MAX_KIDS 24
#define SC_MAX_TASKS 96
#define SC_NCHAN 3
#define SC_MAX_VALUES 4096
#define SC_MAX_DEFERS (SC_MAX_TASKS * SC_MAX_OPS)

enum sc_opcode {
    OP_SPAWN, OP_JOIN, OP_DETACH, OP_CANCEL, OP_PANIC, OP_YIELD, OP_SLEEP, OP_SEND,
    OP_RECV, OP_CLOSE, OP_MUTEX, OP_SEM, OP_SELECT, OP_JOINSET, OP_JOIN_ALL, OP_DEFER,
    OP_COUNT
};

static const char *const sc_op_names[OP_COUNT] = {
    "spawn", "join", "detach", "cancel", "panic", "yield", "sleep", "send",
    "recv", "close", "mutex", "sem", "select", "joinset", "join_all", "defer",
};

struct sc_op {
    uint8_t code, a, b, c;
};

struct sc_script {
    int nops;
    struct sc_op ops[SC_MAX_OPS];
};

struct sc_program {
    uint64_t seed;                  /* of the runtime's PRNG */
    int nscripts;
    uint8_t chan_cap[SC_NCHAN];
    uint8_t sem_permits;
    struct sc_script scripts[SC_MAX_SCRIPTS];
};

/* Where a program comes from: bytes (0 once they run out), or a PRNG. */
struct sc_src {
    const uint8_t *data;
    size_t len, pos;
    uint64_t rng;
};

static inline uint64_t sc_mix(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static inline unsigned sc_draw(struct sc_src *s, unsigned bound)
{
    unsigned v;
    if (s->data)
        v = s->pos < s->len ? s->data[s->pos++] : 0;
    else
        v = (unsigned)(sc_mix(&s->rng) >> 40);
    return v % bound;
}

/* Opcodes weighted so that the cheap, interleaving ones dominate. */
static const uint8_t sc_weights[OP_COUNT] = {
    [OP_SPAWN] = 5, [OP_JOIN] = 3, [OP_DETACH] = 1, [OP_CANCEL] = 2, [OP_PANIC] = 1,
    [OP_YIELD] = 3, [OP_SLEEP] = 3, [OP_SEND] = 4, [OP_RECV] = 4, [OP_CLOSE] = 1,
    [OP_MUTEX] = 3, [OP_SEM] = 2, [OP_SELECT] = 3, [OP_JOINSET] = 1, [OP_JOIN_ALL] = 1,
    [OP_DEFER] = 2,
};

static inline uint8_t sc_pick_op(struct sc_src *s)
{
    unsigned total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += sc_weights[i];
    unsigned k = sc_draw(s, 256) * total / 256;
    for (int i = 0; i < OP_COUNT; i++) {
        if (k < sc_weights[i])
            return (uint8_t)i;
        k -= sc_weights[i];
    }
    return OP_YIELD;
}

/* Make a program from src.  From bytes, the first 8 are the runtime's seed. */
static inline void sc_generate(struct sc_program *pg, struct sc_src *src, uint64_t seed)
{
    memset(pg, 0, sizeof *pg);
    pg->seed = seed;
    if (src->data) {
        pg->seed = 0;
        for (int i = 0; i < 8; i++)
            pg->seed = pg->seed << 8 | sc_draw(src, 256);
    }
    pg->nscripts = 2 + (int)sc_draw(src, SC_MAX_SCRIPTS - 1);
    static const uint8_t caps[] = { 0, 1, 4 };
    for (int i = 0; i < SC_NCHAN; i++)
        pg->chan_cap[i] = caps[sc_draw(src, 3)];
    pg->sem_permits = (uint8_t)(1 + sc_draw(src, 3));
    for (int i = 0; i < pg->nscripts; i++) {
        struct sc_script *sc = &pg->scripts[i];
        /* The root does more, so that most scenarios have many tasks. */
        sc->nops = i == 0 ? SC_MAX_OPS / 2 + (int)sc_draw(src, SC_MAX_OPS / 2 + 1)
                          : 1 + (int)sc_draw(src, SC_MAX_OPS);
        for (int k = 0; k < sc->nops; k++) {
            struct sc_op *op = &sc->ops[k];
            op->code = i == 0 && k == 0 ? OP_SPAWN : sc_pick_op(src);
            op->a = (uint8_t)sc_draw(src, 256);
            op->b = (uint8_t)sc_draw(src, 256);
            op->c = (uint8_t)sc_draw(src, 256);
        }
    }
}

/* ---- the run --------------------------------------------------------------- */

struct sc_task_rec {
    uint8_t spawned, started, ended, dropped, panicked, cancel_req, is_call;
    uint8_t shielded;       /* in its shielded tail (sc_exec) */
    uint8_t in_cp;          /* inside an unshielded cancellation point */
    uint8_t cancel_live;    /* cancelled before it ended (not by the shutdown) */
    uint8_t cancel_in_cp;   /* ... while inside a cancellation point */
    uint8_t claimed;        /* a join began before it started (it may have
                               been claimed to run, yet not have run) */
    uint8_t must_drop;      /* cancelled before it started: it never may */
    uint64_t cancel_at;     /* the virtual time of that cancellation */
};

struct sc_run {
    const struct sc_program *pg;
    bool verbose;
    braid_chan *ch[SC_NCHAN];
    braid_mutex mtx;
    braid_sem sem;
    int in_cs, sem_used;
    int ntasks;
    struct sc_task_rec t[SC_MAX_TASKS];
    uint32_t nvalues;
    uint8_t value[SC_MAX_VALUES];   /* 0 not sent, 1 in a channel, 2 received */
    int ndefers;
    uint8_t defer[SC_MAX_DEFERS];   /* 1 pushed, 2 ran, 3 popped without running */
    int detached_panics;
    bool shutdown;                  /* the runtime cancels what is left */
    uint64_t hash;
    uint64_t events;
};

struct sc_ctx {
    struct sc_run *r;
    int script, id;
    bool heap;                      /* a spawned task's: freed when it ends */
};

/* What a consumer prints after a failure, to tell how to replay it. */
static const char *sc_replay_hint = "";

static inline void sc_fail(const struct sc_run *r, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "scenario failed (seed %" PRIu64 "): ", r->pg->seed);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s\n", sc_replay_hint);
    fflush(stderr);
    abort();
}

#define SC_CHECK(r, cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            sc_fail((r), "%s:%d: %s", __FILE__, __LINE__, #cond);              \
    } while (0)

static inline void sc_hash(struct sc_run *r, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        r->hash ^= (v >> (8 * i)) & 0xff;
        r->hash *= UINT64_C(0x100000001b3);
    }
}

/* One event of the log: task id did op, with result rc, at virtual time. */
static inline void sc_log(struct sc_run *r, int id, int op, long rc)
{
    uint64_t now = braid_now_ns();
    sc_hash(r, (uint64_t)id << 40 | (uint64_t)op << 32 | (uint32_t)rc);
    sc_hash(r, now);
    r->events++;
    if (r->verbose)
        printf("%10.3f ms  t%-3d %-8s %ld\n", (double)now / 1e6, id,
               op < OP_COUNT ? sc_op_names[op] : op == OP_COUNT ? "start" : "end", rc);
}

static inline uint64_t sc_deadline(uint8_t v)
{
    return braid_deadline_ms(v % 24);
}

static void *sc_task(void *arg);

static inline void sc_on_end(void *arg)
{
    struct sc_ctx *c = arg;
    struct sc_run *r = c->r;
    SC_CHECK(r, r->t[c->id].started == 1 && r->t[c->id].ended == 0);
    r->t[c->id].ended = 1;
    if (c->heap)
        free(c);
}

static inline void sc_drop(void *arg)
{
    struct sc_ctx *c = arg;
    struct sc_run *r = c->r;
    SC_CHECK(r, r->t[c->id].started == 0 && r->t[c->id].dropped == 0);
    r->t[c->id].dropped = 1;
    free(c);
}

/* A new scenario id for a child of script `script` running op a, or -1
 * (the script is the last one, or the task budget is spent). */
static inline int sc_new_child(struct sc_run *r, int script, uint8_t a, int *child_script,
                               bool is_call)
{
    int n = r->pg->nscripts;
    if (script >= n - 1 || r->ntasks >= SC_MAX_TASKS)
        return -1;
    *child_script = script + 1 + a % (n - script - 1);
    int id = r->ntasks++;
    r->t[id].spawned = 1;
    r->t[id].is_call = is_call;
    /* A task spawned once the shutdown began is dropped, never run. */
    r->t[id].must_drop = r->shutdown && !is_call;
    return id;
}

static inline struct sc_ctx *sc_ctx_new(struct sc_run *r, int script, int id)
{
    struct sc_ctx *c = malloc(sizeof *c);
    if (!c)
        abort();
    *c = (struct sc_ctx){ r, script, id, true };
    return c;
}

/* A join's fate and value agree with what the task did. */
static inline void sc_check_fate(struct sc_run *r, int id, int fate, void *value)
{
    struct sc_task_rec *t = &r->t[id];
    switch (fate) {
    case BRAID_OK:
        /* A cancel before the task ended makes its fate CANCELLED. */
        SC_CHECK(r, t->ended && !t->panicked && !t->cancel_live &&
                        value == (void *)(uintptr_t)(id + 1));
        break;
    case BRAID_PANICKED:
        SC_CHECK(r, t->panicked && t->ended && value == NULL);
        break;
    case BRAID_CANCELLED:
        /* Not when the task had ended before the cancel. */
        SC_CHECK(r, (t->cancel_live || r->shutdown) && !t->panicked && (t->ended || t->dropped));
        SC_CHECK(r, value == (t->dropped ? NULL : (void *)(uintptr_t)(id + 1)));
        break;
    default:
        sc_fail(r, "join of t%d: fate %d", id, fate);
    }
}

/*
 * Cancellation, followed exactly.  On one thread, when task A cancels task
 * K, K is suspended somewhere (or has not started, or has ended), and
 * braid_cancel() acts before it returns:
 *  - K ended: nothing changes (its fate stays what it did);
 *  - K never started: it never will, its arg_drop runs (at once, unless a
 *    join claimed it to run it inline), and a join sees CANCELLED;
 *  - K started: every cancellation point K enters from now on, unless
 *    shielded, returns -ECANCELED, and its fate is CANCELLED (or PANICKED).
 *    The cancellation point K is suspended in may still report what it
 *    completed, but it returns before virtual time moves on (K was woken
 *    and is runnable), join_all excepted (it waits for its calls).
 * The shutdown's cancellation happens at a moment the scenario cannot see
 * (the worker's periodic work), so there only braid_cancelled() tells, and
 * a task still queued never starts.
 */
static inline void sc_cancelling(struct sc_run *r, int id)
{
    struct sc_task_rec *t = &r->t[id];
    t->cancel_req = 1;
    if (t->ended || t->dropped || t->cancel_live)
        return;
    t->cancel_live = 1;
    if (!t->started) {
        t->must_drop = 1;
        return;
    }
    t->cancel_at = braid_now_ns();
    t->cancel_in_cp = t->in_cp;
}

/* Task id enters a cancellation point: returns whether it must fail with
 * -ECANCELED. */
static inline bool sc_cp_begin(struct sc_run *r, int id)
{
    struct sc_task_rec *t = &r->t[id];
    if (t->shielded)
        return false;
    if (t->cancel_live && !braid_cancelled())
        sc_fail(r, "t%d was cancelled, yet braid_cancelled() is false", id);
    t->in_cp = 1;
    return t->cancel_live || braid_cancelled();
}

/* Task id leaves it with rc; prompt: it must return as soon as it is
 * cancelled (every wait but join_all's). */
static inline void sc_cp_end(struct sc_run *r, int id, bool must_cancel, long rc, bool prompt)
{
    struct sc_task_rec *t = &r->t[id];
    if (t->shielded)
        return;
    t->in_cp = 0;
    if (must_cancel && rc != -ECANCELED)
        sc_fail(r, "t%d was cancelled, yet a cancellation point returned %ld", id, rc);
    if (t->cancel_in_cp) {
        t->cancel_in_cp = 0;
        if (prompt && braid_now_ns() != t->cancel_at)
            sc_fail(r, "t%d, cancelled while waiting at %" PRIu64 " ns, woke at %" PRIu64 " ns",
                    id, t->cancel_at, braid_now_ns());
    }
}

/* The shutdown begins: what is still queued will never start. */
static inline void sc_shutting_down(struct sc_run *r)
{
    r->shutdown = true;
    for (int id = 0; id < r->ntasks; id++) {
        struct sc_task_rec *t = &r->t[id];
        if (!t->started && !t->dropped && !t->claimed && !t->is_call)
            t->must_drop = 1;
    }
}

struct sc_defer_slot {
    braid_defer d;
    struct sc_run *r;
    int index;
    bool run_on_pop;
};

static inline void sc_defer_fn(void *arg)
{
    struct sc_defer_slot *s = arg;
    SC_CHECK(s->r, s->r->defer[s->index] == 1);
    s->r->defer[s->index] = 2;
}

/* The state of one running script. */
struct sc_frame {
    struct sc_ctx *c;
    braid_task kids[SC_MAX_KIDS];
    int kid_id[SC_MAX_KIDS];
    int nkids;
    struct sc_defer_slot defers[SC_MAX_OPS];
    int ndefers;
    bool cancelled;
};

static inline void sc_kid_remove(struct sc_frame *f, int k)
{
    for (int i = k + 1; i < f->nkids; i++) {
        f->kids[i - 1] = f->kids[i];
        f->kid_id[i - 1] = f->kid_id[i];
    }
    f->nkids--;
}

static inline void sc_join_kid(struct sc_frame *f, int k, uint64_t deadline)
{
    struct sc_run *r = f->c->r;
    void *value = NULL;
    if (!r->t[f->kid_id[k]].started)
        r->t[f->kid_id[k]].claimed = 1;
    bool must = sc_cp_begin(r, f->c->id);
    int rc = braid_join_until(f->kids[k], &value, deadline);
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_JOIN, rc);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        f->cancelled |= rc == -ECANCELED;
        return;
    }
    SC_CHECK(r, rc >= 0);
    sc_check_fate(r, f->kid_id[k], rc, value);
    sc_kid_remove(f, k);
}

static inline int sc_value_new(struct sc_run *r)
{
    return r->nvalues < SC_MAX_VALUES ? (int)r->nvalues++ : -1;
}

/* A value is offered (1) before the send: a receiver may take it (2)
 * before the sender is back.  A send that fails must find it still there,
 * and takes it back (0). */
static inline void sc_value_offer(struct sc_run *r, uint32_t v)
{
    SC_CHECK(r, v < r->nvalues && r->value[v] == 0);
    r->value[v] = 1;
}

static inline void sc_value_sent(struct sc_run *r, uint32_t v, bool ok)
{
    if (ok) {
        SC_CHECK(r, r->value[v] == 1 || r->value[v] == 2);
    } else {
        SC_CHECK(r, r->value[v] == 1);
        r->value[v] = 0;
    }
}

static inline void sc_value_received(struct sc_run *r, uint32_t v)
{
    SC_CHECK(r, v < r->nvalues && r->value[v] == 1);
    r->value[v] = 2;
}

static inline void sc_note_rc(struct sc_frame *f, long rc)
{
    if (rc == -ECANCELED)
        f->cancelled = true;
}

static void sc_op_send(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    int v = sc_value_new(r);
    if (v < 0)
        return;
    uint32_t item = (uint32_t)v;
    sc_value_offer(r, item);
    braid_chan *ch = r->ch[op->a % SC_NCHAN];
    bool must = sc_cp_begin(r, f->c->id);
    int rc = op->b % 3 == 0 ? braid_chan_try_send(ch, &item)
                            : braid_chan_send_until(ch, &item, sc_deadline(op->c));
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_SEND, rc);
    SC_CHECK(r, rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EPIPE ||
                    rc == -ECANCELED);
    sc_value_sent(r, item, rc == 0);
    sc_note_rc(f, rc);
}

static void sc_op_recv(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    uint32_t item = UINT32_MAX;
    braid_chan *ch = r->ch[op->a % SC_NCHAN];
    bool must = sc_cp_begin(r, f->c->id);
    int rc = op->b % 3 == 0 ? braid_chan_try_recv(ch, &item)
                            : braid_chan_recv_until(ch, &item, sc_deadline(op->c));
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_RECV, rc == 0 ? (long)item : rc);
    SC_CHECK(r, rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EPIPE ||
                    rc == -ECANCELED);
    if (rc == 0)
        sc_value_received(r, item);
    sc_note_rc(f, rc);
}

static void sc_op_select(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    braid_select_case cases[2];
    uint32_t items[2];
    if (r->nvalues + 2 > SC_MAX_VALUES)
        return;
    for (int i = 0; i < 2; i++) {
        bool send = (op->b >> i) & 1;
        items[i] = UINT32_MAX;
        if (send) {
            items[i] = (uint32_t)sc_value_new(r);
            sc_value_offer(r, items[i]);
        }
        cases[i] = (braid_select_case){ r->ch[(op->a >> (2 * i)) % SC_NCHAN],
                                        send ? BRAID_SELECT_SEND : BRAID_SELECT_RECV,
                                        &items[i], 0 };
    }
    unsigned flags = (op->b & 4) ? BRAID_SELECT_BIASED : 0;
    flags |= (op->b & 8) ? BRAID_SELECT_NOWAIT : 0;
    bool must = sc_cp_begin(r, f->c->id);
    int rc = braid_select(cases, 2, sc_deadline(op->c), flags);
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_SELECT, rc >= 0 ? rc * 1000 + cases[rc].result : rc);
    SC_CHECK(r, rc == 0 || rc == 1 || rc == -ETIMEDOUT || rc == -EAGAIN || rc == -ECANCELED);
    for (int i = 0; i < 2; i++) {
        bool done = rc == i && cases[i].result == 0;
        if (cases[i].op == BRAID_SELECT_SEND)
            sc_value_sent(r, items[i], done);
        else if (done)
            sc_value_received(r, items[i]);
    }
    if (rc >= 0)
        SC_CHECK(r, cases[rc].result == 0 || cases[rc].result == -EPIPE);
    sc_note_rc(f, rc);
}

/* Hold a lock for a moment, maybe suspending inside: nobody else may be in. */
static void sc_critical(struct sc_frame *f, const struct sc_op *op, int *inside, int amount,
                        int limit)
{
    struct sc_run *r = f->c->r;
    *inside += amount;
    SC_CHECK(r, *inside <= limit);
    long rc = 0;
    if (op->b % 3) {
        bool must = sc_cp_begin(r, f->c->id);
        rc = op->b % 3 == 1 ? braid_yield() : braid_sleep_ms(1);
        sc_cp_end(r, f->c->id, must, rc, true);
    }
    SC_CHECK(r, *inside <= limit);
    *inside -= amount;
    sc_note_rc(f, rc);
}

static void sc_op_mutex(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    bool must = sc_cp_begin(r, f->c->id);
    int rc = braid_mutex_lock_until(&r->mtx, sc_deadline(op->c));
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_MUTEX, rc);
    SC_CHECK(r, rc == 0 || rc == -ETIMEDOUT || rc == -ECANCELED);
    if (rc == 0) {
        sc_critical(f, op, &r->in_cs, 1, 1);
        SC_CHECK(r, braid_mutex_unlock(&r->mtx) == 0);
    }
    sc_note_rc(f, rc);
}

static void sc_op_sem(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    int n = 1 + op->a % 2;
    bool must = sc_cp_begin(r, f->c->id);
    int rc = braid_sem_acquire_until(&r->sem, (uint64_t)n, sc_deadline(op->c));
    sc_cp_end(r, f->c->id, must, rc, true);
    sc_log(r, f->c->id, OP_SEM, rc);
    SC_CHECK(r, rc == 0 || rc == -ETIMEDOUT || rc == -ECANCELED || (rc == -EINVAL && n > r->pg->sem_permits));
    if (rc == 0) {
        sc_critical(f, op, &r->sem_used, n, r->pg->sem_permits);
        SC_CHECK(r, braid_sem_release(&r->sem, (uint64_t)n) == 0);
    }
    sc_note_rc(f, rc);
}

/* Spawn 1 to 3 children. */
static void sc_op_spawn(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    for (int i = 0; i <= op->b % 3 && f->nkids < SC_MAX_KIDS; i++) {
        int script, id = sc_new_child(r, f->c->script, (uint8_t)(op->a + i), &script, false);
        if (id < 0)
            return;
        braid_spawn_opts opts = BRAID_SPAWN_OPTS_INIT;
        opts.arg_drop = sc_drop;
        int rc = braid_spawn_ex(&f->kids[f->nkids], &opts, sc_task, sc_ctx_new(r, script, id));
        sc_log(r, f->c->id, OP_SPAWN, id);
        SC_CHECK(r, rc == 0);
        f->kid_id[f->nkids++] = id;
    }
}

static void sc_op_joinset(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    braid_joinset *js;
    SC_CHECK(r, braid_joinset_new(&js) == 0);
    uint64_t braid_ids[3];
    int ids[3], n = 0;
    for (int i = 0; i < 1 + op->a % 3; i++) {
        int script, id = sc_new_child(r, f->c->script, (uint8_t)(op->a + i), &script, false);
        if (id < 0)
            break;
        braid_spawn_opts opts = BRAID_SPAWN_OPTS_INIT;
        opts.arg_drop = sc_drop;
        SC_CHECK(r, braid_joinset_spawn(js, &opts, sc_task, sc_ctx_new(r, script, id),
                                        &braid_ids[n]) == 0);
        ids[n++] = id;
    }
    for (int k = 0; k < op->b % 4 && !f->cancelled; k++) {
        braid_outcome out = BRAID_OUTCOME_INIT;
        uint64_t bid = 0;
        bool must = sc_cp_begin(r, f->c->id);
        int rc = braid_joinset_join_next_until(js, &out, &bid, sc_deadline(op->c));
        sc_cp_end(r, f->c->id, must, rc, true);
        sc_log(r, f->c->id, OP_JOINSET, rc);
        sc_note_rc(f, rc);
        if (rc == -ENOENT || rc == -ETIMEDOUT || rc == -ECANCELED)
            break;
        SC_CHECK(r, rc >= 0 && rc == out.status);
        int which = -1;
        for (int i = 0; i < n; i++)
            if (braid_ids[i] == bid)
                which = i;
        SC_CHECK(r, which >= 0);
        sc_check_fate(r, ids[which], rc, out.value);
        braid_ids[which] = 0;
    }
    /* The free cancels what is left before it waits. */
    for (int i = 0; i < n; i++)
        if (braid_ids[i])
            sc_cancelling(r, ids[i]);
    SC_CHECK(r, braid_joinset_free(js) == 0);
}

static void *sc_call(void *arg);

static void sc_op_join_all(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    struct sc_ctx ctx[2];
    braid_call calls[2];
    int n = 0;
    for (int i = 0; i < 2; i++) {
        int script, id = sc_new_child(r, f->c->script, (uint8_t)(op->a + i), &script, true);
        if (id < 0)
            break;
        ctx[n] = (struct sc_ctx){ r, script, id, false };
        calls[n] = (braid_call){ sc_call, &ctx[n], NULL };
        n++;
    }
    if (!n)
        return;
    bool must = sc_cp_begin(r, f->c->id);
    int rc = braid_join_all(calls, (size_t)n);
    sc_cp_end(r, f->c->id, must, rc, false);
    sc_log(r, f->c->id, OP_JOIN_ALL, rc);
    SC_CHECK(r, rc == 0 || rc == -ECANCELED);
    for (int i = 0; i < n; i++) {
        struct sc_task_rec *t = &r->t[ctx[i].id];
        SC_CHECK(r, t->started == t->ended);
        if (!t->started) {
            /* Cancelled before it ran: by its caller's cancellation, or by
             * the shutdown, which cancels every task, calls included, even
             * while their caller still waits unaware: join_all reports
             * -ECANCELED either way. */
            SC_CHECK(r, rc == -ECANCELED && calls[i].result == NULL);
            t->dropped = 1;
        } else if (rc == 0) {
            SC_CHECK(r, calls[i].result == (void *)(uintptr_t)(ctx[i].id + 1));
        }
    }
    sc_note_rc(f, rc);
}

static void sc_op_defer(struct sc_frame *f, const struct sc_op *op)
{
    struct sc_run *r = f->c->r;
    if (r->ndefers >= SC_MAX_DEFERS)
        return;
    struct sc_defer_slot *s = &f->defers[f->ndefers++];
    s->r = r;
    s->index = r->ndefers++;
    s->run_on_pop = op->a & 1;
    r->defer[s->index] = 1;
    SC_CHECK(r, braid_defer_push(&s->d, sc_defer_fn, s) == 0);
    sc_log(r, f->c->id, OP_DEFER, s->index);
}

static void sc_exec_op(struct sc_frame *f, const struct sc_op *op, bool in_call)
{
    struct sc_run *r = f->c->r;
    long rc;
    bool must;
    switch (op->code) {
    case OP_SPAWN:
        sc_op_spawn(f, op);
        break;
    case OP_JOIN:
        if (f->nkids)
            sc_join_kid(f, op->a % f->nkids, op->b & 1 ? BRAID_FOREVER : sc_deadline(op->c));
        break;
    case OP_DETACH:
        if (f->nkids) {
            int k = op->a % f->nkids;
            SC_CHECK(r, braid_detach(f->kids[k]) == 0);
            sc_log(r, f->c->id, OP_DETACH, f->kid_id[k]);
            sc_kid_remove(f, k);
        }
        break;
    case OP_CANCEL:
        if (f->nkids) {
            int k = op->a % f->nkids, id = f->kid_id[k];
            struct sc_task_rec *t = &r->t[id];
            bool queued = !t->started && !t->dropped && !t->claimed;
            sc_cancelling(r, id);
            SC_CHECK(r, braid_cancel(f->kids[k]) == 0);
            if (queued) /* never started nor claimed: dropped on the spot */
                SC_CHECK(r, t->dropped);
            sc_log(r, f->c->id, OP_CANCEL, id);
        }
        break;
    case OP_PANIC:
        /* Only without children to join (a panic abandons the frame) and
         * not in a join_all call (its panic would become its caller's). */
        if (op->a % 3 == 0 && !f->nkids && !in_call) {
            sc_log(r, f->c->id, OP_PANIC, 0);
            r->t[f->c->id].panicked = 1;
            braid_panic("scenario task %d", f->c->id);
        }
        break;
    case OP_YIELD:
        must = sc_cp_begin(r, f->c->id);
        rc = braid_yield();
        sc_cp_end(r, f->c->id, must, rc, true);
        sc_log(r, f->c->id, OP_YIELD, rc);
        sc_note_rc(f, rc);
        break;
    case OP_SLEEP:
        must = sc_cp_begin(r, f->c->id);
        rc = braid_sleep_ms(op->a % 16);
        sc_cp_end(r, f->c->id, must, rc, true);
        sc_log(r, f->c->id, OP_SLEEP, rc);
        sc_note_rc(f, rc);
        break;
    case OP_SEND:
        sc_op_send(f, op);
        break;
    case OP_RECV:
        sc_op_recv(f, op);
        break;
    case OP_CLOSE:
        if (op->b % 4 == 0) {
            rc = braid_chan_close(r->ch[op->a % SC_NCHAN]);
            sc_log(r, f->c->id, OP_CLOSE, rc);
            SC_CHECK(r, rc == 0);
        }
        break;
    case OP_MUTEX:
        sc_op_mutex(f, op);
        break;
    case OP_SEM:
        sc_op_sem(f, op);
        break;
    case OP_SELECT:
        sc_op_select(f, op);
        break;
    case OP_JOINSET:
        sc_op_joinset(f, op);
        break;
    case OP_JOIN_ALL:
        sc_op_join_all(f, op);
        break;
    case OP_DEFER:
        sc_op_defer(f, op);
        break;
    }
}

/* Run a script, then (shielded, if cancelled) join or detach the children
 * left and pop the defers. */
static void sc_exec(struct sc_ctx *c, bool in_call)
{
    struct sc_run *r = c->r;
    const struct sc_script *sc = &r->pg->scripts[c->script];
    struct sc_frame f = { .c = c };
    for (int i = 0; i < sc->nops && !f.cancelled; i++)
        sc_exec_op(&f, &sc->ops[i], in_call);
    bool shield = braid_cancel_shield(true);
    r->t[c->id].shielded = 1;
    while (f.nkids) {
        if ((sc->nops & 1) || c->script == 0) { /* the root waits for its children */
            sc_join_kid(&f, 0, BRAID_FOREVER);
        } else {
            SC_CHECK(r, braid_detach(f.kids[0]) == 0);
            sc_kid_remove(&f, 0);
        }
    }
    while (f.ndefers) {
        struct sc_defer_slot *s = &f.defers[--f.ndefers];
        if (!s->run_on_pop)
            r->defer[s->index] = 3;
        SC_CHECK(r, braid_defer_pop(&s->d, s->run_on_pop) == 0);
    }
    r->t[c->id].shielded = shield;
    braid_cancel_shield(shield);
}

/* The body of every task and call: the end marker is the outermost defer,
 * so it runs exactly once however the task ends. */
static void *sc_body(struct sc_ctx *c, bool in_call)
{
    struct sc_run *r = c->r;
    int id = c->id;
    SC_CHECK(r, r->t[id].spawned && !r->t[id].started && !r->t[id].dropped);
    if (r->t[id].must_drop)
        sc_fail(r, "t%d started, though cancelled before it started", id);
    r->t[id].started = 1;
    sc_log(r, id, OP_COUNT, c->script);
    braid_defer end;
    SC_CHECK(r, braid_defer_push(&end, sc_on_end, c) == 0);
    sc_exec(c, in_call);
    if (r->t[id].cancel_live && !braid_cancelled())
        sc_fail(r, "t%d was cancelled, yet braid_cancelled() is false at its end", id);
    sc_log(r, id, OP_COUNT + 1, 0);
    SC_CHECK(r, braid_defer_pop(&end, true) == 0);
    return (void *)(uintptr_t)(id + 1);
}

static void *sc_task(void *arg)
{
    return sc_body(arg, false);
}

static void *sc_call(void *arg)
{
    return sc_body(arg, true);
}

static void sc_panic_hook(uint64_t task_id, const char *name, const braid_outcome *o, void *user)
{
    (void)task_id, (void)name, (void)o;
    struct sc_run *r = user;
    r->detached_panics++;
}

static void sc_final_checks(struct sc_run *r)
{
    /* What the channels still hold was sent and not received. */
    for (int i = 0; i < SC_NCHAN; i++) {
        uint32_t item;
        while (braid_chan_try_recv(r->ch[i], &item) == 0)
            sc_value_received(r, item);
    }
    for (uint32_t v = 0; v < r->nvalues; v++)
        if (r->value[v] == 1)
            sc_fail(r, "value %u was sent and never received", v);
    int panicked = 0;
    for (int id = 0; id < r->ntasks; id++) {
        struct sc_task_rec *t = &r->t[id];
        if (t->started + t->dropped != 1 || t->started != t->ended)
            sc_fail(r, "t%d: started %d, ended %d, dropped %d", id, t->started, t->ended,
                    t->dropped);
        panicked += t->panicked;
    }
    SC_CHECK(r, r->detached_panics <= panicked);
    for (int k = 0; k < r->ndefers; k++)
        if (r->defer[k] != 2 && r->defer[k] != 3)
            sc_fail(r, "defer %d: state %d", k, r->defer[k]);
    SC_CHECK(r, r->in_cs == 0 && r->sem_used == 0);
    SC_CHECK(r, braid_mutex_trylock(&r->mtx) == 0 && braid_mutex_unlock(&r->mtx) == 0);
    SC_CHECK(r, braid_sem_available(&r->sem) == r->pg->sem_permits);
}

/* Run pg in a deterministic runtime and check it; returns the log's hash. */
static inline uint64_t sc_run(const struct sc_program *pg, bool verbose, uint64_t *events)
{
    struct sc_run *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->pg = pg;
    r->verbose = verbose;
    r->hash = UINT64_C(0xcbf29ce484222325);
    for (int i = 0; i < SC_NCHAN; i++)
        SC_CHECK(r, braid_chan_new(&r->ch[i], sizeof(uint32_t), pg->chan_cap[i]) == 0);
    SC_CHECK(r, braid_mutex_init(&r->mtx) == 0);
    SC_CHECK(r, braid_sem_init(&r->sem, pg->sem_permits) == 0);

    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    cfg.seed = pg->seed;
    cfg.stack_size = 64 * 1024;
    cfg.panic_hook = sc_panic_hook;
    cfg.panic_hook_arg = r;
    cfg.shutdown_timeout_ms = 60000;
    braid_runtime *rt;
    SC_CHECK(r, braid_runtime_new(&cfg, &rt) == 0);
    r->ntasks = 1;
    r->t[0].spawned = 1;
    struct sc_ctx root = { r, 0, 0, false };
    void *value = NULL;
    int fate = braid_block_on(rt, sc_task, &root, &value);
    SC_CHECK(r, fate == BRAID_OK || (fate == BRAID_PANICKED && r->t[0].panicked));
    if (fate == BRAID_OK)
        SC_CHECK(r, value == (void *)(uintptr_t)1);
    sc_shutting_down(r);
    int rc = braid_runtime_free(rt);
    if (rc != 0)
        sc_fail(r, "braid_runtime_free: %d", rc);
    sc_final_checks(r);

    for (int i = 0; i < SC_NCHAN; i++) {
        braid_chan_sender_drop(r->ch[i]);
        braid_chan_receiver_drop(r->ch[i]);
    }
    braid_mutex_destroy(&r->mtx);
    braid_sem_destroy(&r->sem);
    uint64_t hash = r->hash;
    if (events)
        *events = r->events;
    free(r);
    return hash;
}

/* Generate the scenario of a seed, run it twice, and check that both runs
 * logged the same events.  Returns the number of events. */
static inline uint64_t sc_check_seed(uint64_t seed, bool verbose)
{
    struct sc_program pg;
    struct sc_src src = { NULL, 0, 0, seed };
    sc_generate(&pg, &src, seed);
    uint64_t events, events2;
    uint64_t h1 = sc_run(&pg, verbose, &events);
    uint64_t h2 = sc_run(&pg, false, &events2);
    if (h1 != h2 || events != events2) {
        fprintf(stderr, "scenario seed %" PRIu64 ": two runs differ (%" PRIu64 " vs %" PRIu64
                        " events, hash %016" PRIx64 " vs %016" PRIx64 ")\n%s\n",
                seed, events, events2, h1, h2, sc_replay_hint);
        abort();
    }
    return events;
}

/* The same from bytes (the fuzzer, the corpus). */
static inline uint64_t sc_check_bytes(const uint8_t *data, size_t len)
{
    struct sc_program pg;
    struct sc_src src = { data, len, 0, 0 };
    sc_generate(&pg, &src, 0);
    uint64_t events, events2;
    uint64_t h1 = sc_run(&pg, false, &events);
    uint64_t h2 = sc_run(&pg, false, &events2);
    if (h1 != h2 || events != events2) {
        fprintf(stderr, "scenario from %zu bytes: two runs differ\n%s\n", len, sc_replay_hint);
        abort();
    }
    return events;
}

#endif
