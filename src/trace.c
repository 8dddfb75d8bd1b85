/*
 * The execution trace: recording into per-worker buffers, and writing
 * Chrome Trace Event JSON at the runtime's end (see trace.h).
 */
#include "trace.h"
#include "sched.h"
#include "task.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TR_DEFAULT_MAX_BYTES ((size_t)16 << 20)
#define TR_CHUNK_EVENTS 2047        /* a chunk is 64 KiB less its header */
#define TR_NAMED 0x80               /* START's reason: a name slot follows */
#define TR_EXIT 0x80                /* SUSPEND's reason: the task has ended */

typedef struct tr_ev {
    uint64_t ts, task, arg;
    uint32_t tid;
    uint8_t kind, reason;
    uint16_t unused;
} tr_ev;

typedef struct tr_chunk {
    struct tr_chunk *next;
    uint32_t n;
    tr_ev ev[TR_CHUNK_EVENTS];
} tr_chunk;

/* Aligned to a cache line: each worker's is written by its thread only. */
struct braid__trace_buf {
    BRAID_ALIGNED_LINE tr_chunk *head, *tail;
    _Atomic size_t *budget;         /* chunks any buffer may still take */
    uint64_t dropped;
    bool shared;                    /* the buffer of non-worker threads */
    pthread_mutex_t lock;           /* shared only */
};

struct braid__trace {
    braid__trace_buf shared;
    _Atomic size_t budget;
    braid__trace_buf *bufs;         /* one per worker */
    unsigned nworkers;
    size_t max_bytes;
    uint64_t t0;
    char *path;
};

/* ---- recording ------------------------------------------------------------ */

static BRAID_TLS uint32_t tr_tid;

static uint32_t thread_id(void)
{
    if (!tr_tid)
        tr_tid = (uint32_t)syscall(SYS_gettid);
    return tr_tid;
}

/* Take one chunk of the budget the buffers share: one atomic operation
 * per 2,047 events, so a busy worker may use what idle ones leave. */
static bool take_chunk(braid__trace_buf *b)
{
    size_t n = atomic_load_explicit(b->budget, memory_order_relaxed);
    do {
        if (!n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(b->budget, &n, n - 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* The next free event of b, or NULL (counted) once the budget is spent. */
static tr_ev *tr_slot(braid__trace_buf *b)
{
    tr_chunk *c = b->tail;
    if (BRAID_LIKELY(c && c->n < TR_CHUNK_EVENTS))
        return &c->ev[c->n++];
    if (!take_chunk(b)) {
        b->dropped++;
        return NULL;
    }
    if (!(c = braid__malloc(sizeof *c))) {
        atomic_fetch_add_explicit(b->budget, 1, memory_order_relaxed);
        b->dropped++;
        return NULL;
    }
    c->next = NULL;
    c->n = 1;
    if (b->tail)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    return &c->ev[0];
}

static void tr_fill(tr_ev *e, uint64_t ts, int kind, unsigned reason, uint64_t task,
                    uint64_t arg)
{
    e->ts = ts;
    e->task = task;
    e->arg = arg;
    e->tid = thread_id();
    e->kind = (uint8_t)kind;
    e->reason = (uint8_t)reason;
}

static inline void tr_lock(braid__trace_buf *b)
{
    if (b->shared)
        pthread_mutex_lock(&b->lock);
}

static inline void tr_unlock(braid__trace_buf *b)
{
    if (b->shared)
        pthread_mutex_unlock(&b->lock);
}

__attribute__((noinline, cold)) void braid__trace_rec(braid__trace_buf *b, int kind,
                                                      unsigned reason, uint64_t task, uint64_t arg)
{
    tr_lock(b);
    /* The clock is read under the lock, so each buffer is in time order;
     * and only for an event that is kept. */
    tr_ev *e = tr_slot(b);
    if (e)
        tr_fill(e, braid__now_ns(), kind, reason, task, arg);
    tr_unlock(b);
}

static braid__trace_buf *buf_of(braid_runtime *rt)
{
    braid__worker *w = braid__tls_worker;
    return w && w->rt == rt ? w->trace : &rt->trace->shared;
}

__attribute__((noinline, cold)) void braid__trace_rec_rt(braid_runtime *rt, int kind,
                                                         unsigned reason, uint64_t task,
                                                         uint64_t arg)
{
    braid__trace_rec(buf_of(rt), kind, reason, task, arg);
}

__attribute__((noinline, cold)) void braid__trace_switch(braid__trace_buf *b,
                                                         const braid__task *from, bool from_ends,
                                                         const braid__task *to)
{
    tr_ev *out = from ? tr_slot(b) : NULL;
    tr_ev *in = to ? tr_slot(b) : NULL;
    if (!out && !in)
        return;
    uint64_t now = braid__now_ns();
    if (out)
        tr_fill(out, now, BRAID_TR_SUSPEND, from_ends ? TR_EXIT : from->wait_reason, from->id, 0);
    if (in)
        tr_fill(in, now, BRAID_TR_RUN, to->kind, to->id, 0);
}

__attribute__((noinline, cold)) void braid__trace_start(braid__trace_buf *b, const braid__task *t)
{
    const char *name = t->ext && t->ext->name[0] ? t->ext->name : NULL;
    tr_ev *e = tr_slot(b);
    if (!e)
        return;
    tr_fill(e, braid__now_ns(), BRAID_TR_START, t->kind, t->id, 0);
    if (!name)
        return;
    /* The name takes the next slot whole (BRAID_NAME_MAX == sizeof *e). */
    tr_ev *n = tr_slot(b);
    if (!n)
        return;
    _Static_assert(BRAID_NAME_MAX <= sizeof(tr_ev), "a name fits in one event slot");
    memcpy(n, name, BRAID_NAME_MAX);
    e->reason |= TR_NAMED;
}

__attribute__((noinline, cold)) void braid__trace_end(braid__trace_buf *b, const braid__task *t,
                                                      int fate)
{
    /* As rec_finish will record it: a normal return after a cancel request
     * is a cancellation, except a blocking-pool proxy whose job ran. */
    if (fate == BRAID__FATE_OK_FINAL)
        fate = BRAID_OK;
    else if (fate == BRAID_OK && atomic_load_explicit(&t->cancelled, memory_order_relaxed))
        fate = BRAID_CANCELLED;
    braid__trace_rec(b, BRAID_TR_END, t->kind, t->id, (uint64_t)fate);
}

__attribute__((noinline, cold)) void braid__trace_wake(const braid__task *t)
{
    const braid__task *by = braid__tls_task;
    braid__trace_rec_rt(t->home->rt, BRAID_TR_WAKE, t->kind, t->id, by ? by->id : 0);
}

/* ---- setting up ------------------------------------------------------------- */

/* BRAID_TRACE names the file of the first runtime traced in the process;
 * the n-th one after it writes NAME.n.json (or NAME.n without ".json"). */
static char *env_path(const char *env)
{
    static _Atomic unsigned seq;
    unsigned n = atomic_fetch_add(&seq, 1);
    size_t len = strlen(env);
    char *p = braid__malloc(len + 24);
    if (!p)
        return NULL;
    if (n == 0)
        memcpy(p, env, len + 1);
    else if (len > 5 && strcmp(env + len - 5, ".json") == 0)
        snprintf(p, len + 24, "%.*s.%u.json", (int)(len - 5), env, n);
    else
        snprintf(p, len + 24, "%s.%u", env, n);
    return p;
}

static void buf_init(braid__trace_buf *b, _Atomic size_t *budget)
{
    memset(b, 0, sizeof *b);
    b->budget = budget;
}

static void buf_free(braid__trace_buf *b)
{
    tr_chunk *c = b->head;
    while (c) {
        tr_chunk *n = c->next;
        free(c);
        c = n;
    }
}

int braid__trace_init(braid_runtime *rt)
{
    const char *want = rt->cfg.trace_path;
    char *path;
    if (want) {
        size_t len = strlen(want) + 1;
        path = braid__malloc(len);
        if (path)
            memcpy(path, want, len);
    } else {
        /* Not for set-user-ID programs: the variable names a file to write. */
        const char *env = secure_getenv("BRAID_TRACE");
        if (!env || !*env)
            return 0;
        path = env_path(env);
    }
    braid__trace *tr = path ? braid__aligned_alloc(BRAID_CACHELINE, sizeof *tr) : NULL;
    braid__trace_buf *bufs = tr ? braid__aligned_alloc(BRAID_CACHELINE,
                                                       rt->nworkers * sizeof *bufs) : NULL;
    if (!bufs) {
        free(tr);
        free(path);
        return -ENOMEM;
    }
    memset(tr, 0, sizeof *tr);
    tr->max_bytes = rt->cfg.trace_max_bytes ? rt->cfg.trace_max_bytes : TR_DEFAULT_MAX_BYTES;
    /* At least a chunk for each buffer. */
    atomic_init(&tr->budget, BRAID_MAX(tr->max_bytes / sizeof(tr_chunk), (size_t)rt->nworkers + 1));
    buf_init(&tr->shared, &tr->budget);
    tr->shared.shared = true;
    braid__mutex_init(&tr->shared.lock);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        buf_init(&bufs[i], &tr->budget);
        rt->workers[i]->trace = &bufs[i];
    }
    tr->bufs = bufs;
    tr->nworkers = rt->nworkers;
    tr->path = path;
    tr->t0 = braid__now_ns();
    rt->trace = tr;
    return 0;
}

/* ---- writing: the tasks seen ------------------------------------------------ */

enum { T_QUEUED, T_RUNNING, T_WAITING, T_RUNNABLE, T_YIELDED, T_ENDED };

typedef struct tr_task {
    uint64_t id;                    /* 0: free entry */
    uint64_t since;                 /* when it entered its state */
    uint64_t flow;                  /* flow id to end at its next run, or 0 */
    uint8_t state, reason;
    bool flow_spawn;                /* the flow starts at its spawn, not a wake */
    uint16_t worker;
    char name[BRAID_NAME_MAX];
} tr_task;

typedef struct tr_map {
    tr_task *t;
    size_t cap, n;
} tr_map;

static size_t map_hash(uint64_t id, size_t cap)
{
    return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> 20) & (cap - 1);
}

static bool map_grow(tr_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    tr_task *t = braid__calloc(cap, sizeof *t);
    if (!t)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->t[i].id)
            continue;
        size_t k = map_hash(m->t[i].id, cap);
        while (t[k].id)
            k = (k + 1) & (cap - 1);
        t[k] = m->t[i];
    }
    free(m->t);
    m->t = t;
    m->cap = cap;
    return true;
}

/* The entry of task id; *fresh tells whether it was just made.  NULL on
 * out of memory. */
static tr_task *map_get(tr_map *m, uint64_t id, bool *fresh)
{
    *fresh = false;
    if (2 * (m->n + 1) > m->cap && !map_grow(m))
        return NULL;
    size_t k = map_hash(id, m->cap);
    while (m->t[k].id && m->t[k].id != id)
        k = (k + 1) & (m->cap - 1);
    if (!m->t[k].id) {
        memset(&m->t[k], 0, sizeof m->t[k]);
        m->t[k].id = id;
        m->t[k].state = T_QUEUED;
        m->n++;
        *fresh = true;
    }
    return &m->t[k];
}

/* ---- writing: JSON ---------------------------------------------------------- */

typedef struct tr_item {
    uint64_t ts;
    uint32_t src, seq;              /* buffer (nworkers: the shared one), order in it */
    const tr_ev *e;
    const char *name;               /* START: the name slot, if any */
} tr_item;

typedef struct tr_out {
    FILE *f;
    const braid__trace *tr;
    int pid, task_pid;
    uint32_t *worker_tid;
    uint64_t flows, last_ts;
    tr_map tasks;
    struct tr_open {
        uint64_t task, since, park_since;
        uint8_t kind, open, parked;
        int fate;
    } *open;                        /* per worker: the slice in progress */
} tr_out;

static const char *fate_name(int fate)
{
    return fate == BRAID_PANICKED    ? "panicked"
           : fate == BRAID_CANCELLED ? "cancelled"
                                     : "completed";
}

/* Microseconds, to the nanosecond. */
static void put_ts(FILE *f, uint64_t ns)
{
    fprintf(f, "%" PRIu64 ".%03u", ns / 1000, (unsigned)(ns % 1000));
}

/* A JSON string: escapes, and '?' for bytes that are not UTF-8 (a name cut
 * at 31 bytes may end inside a character). */
static void put_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    putc('"', f);
    while (*p) {
        unsigned c = *p;
        int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                : (c & 0xf8) == 0xf0 ? 4 : 0;
        int k = 1;
        while (k < len && (p[k] & 0xc0) == 0x80)
            k++;
        if (len == 0 || k < len || (len == 2 && c < 0xc2)) {
            putc('?', f);
            p += k;
        } else if (len > 1) {
            fwrite(p, 1, (size_t)len, f);
            p += len;
        } else {
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                putc((int)c, f);
            p++;
        }
    }
    putc('"', f);
}

/* The start of an event object, up to and including "ts". */
static void ev_head(tr_out *o, const char *ph, const char *cat, const char *name, int pid,
                    uint32_t tid, uint64_t ts)
{
    fprintf(o->f, ",\n{\"ph\":\"%s\",\"cat\":\"%s\",\"name\":", ph, cat);
    put_str(o->f, name);
    fprintf(o->f, ",\"pid\":%d,\"tid\":%" PRIu32 ",\"ts\":", pid, tid);
    put_ts(o->f, ts - o->tr->t0);
}

static void ev_slice(tr_out *o, const char *cat, const char *name, int pid, uint32_t tid,
                     uint64_t from, uint64_t to, const char *args)
{
    ev_head(o, "X", cat, name, pid, tid, from);
    fputs(",\"dur\":", o->f);
    put_ts(o->f, to - from);
    fprintf(o->f, ",\"args\":{%s}}", args);
}

static void ev_instant(tr_out *o, const char *name, int pid, uint32_t tid, uint64_t ts,
                       const char *args)
{
    ev_head(o, "i", "braid", name, pid, tid, ts);
    fprintf(o->f, ",\"s\":\"t\",\"args\":{%s}}", args);
}

/* One end of a flow arrow: "s" binds to the slice around ts on that
 * thread, "f" to the slice that begins at ts. */
static void ev_flow(tr_out *o, const char *ph, const char *name, uint32_t tid, uint64_t ts,
                    uint64_t id)
{
    ev_head(o, ph, "flow", name, o->pid, tid, ts);
    fprintf(o->f, ",\"id\":%" PRIu64 "%s}", id, ph[0] == 'f' ? ",\"bp\":\"e\"" : "");
}

static void ev_thread_name(tr_out *o, int pid, uint32_t tid, const char *name, uint64_t sort)
{
    fprintf(o->f, ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%" PRIu32
                  ",\"args\":{\"name\":", pid, tid);
    put_str(o->f, name);
    fprintf(o->f, "}},\n{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":%d,\"tid\":%" PRIu32
                  ",\"args\":{\"sort_index\":%" PRIu64 "}}", pid, tid, sort);
}

/* ---- writing: from events to slices ------------------------------------------ */

/* Thread ids that no real thread has (real ones are below PID_MAX_LIMIT,
 * 2^22): a trace processor may take one tid seen under two pids for a
 * thread that moved, so a task's track (a pseudo-thread of the tasks'
 * pseudo-process) must not reuse a worker's id.  From 2^22 + 2^30: workers
 * that never ran. */
#define TR_FAKE_TID_BASE (UINT32_C(1) << 22)

static uint32_t task_tid(uint64_t id)
{
    return TR_FAKE_TID_BASE + (uint32_t)(id & ((UINT32_C(1) << 30) - 1));
}

static void task_label(const tr_task *t, char *buf, size_t n)
{
    if (t && t->name[0])
        snprintf(buf, n, "task %" PRIu64 " %s", t->id, t->name);
    else
        snprintf(buf, n, "task %" PRIu64, t ? t->id : 0);
}

static tr_task *task_of(tr_out *o, uint64_t id, uint64_t ts)
{
    bool fresh;
    tr_task *t = map_get(&o->tasks, id, &fresh);
    if (t && fresh) {
        t->since = ts;
        char label[64];
        task_label(t, label, sizeof label);
        ev_thread_name(o, o->task_pid, task_tid(id), label, id);
    }
    return t;
}

/* Close the task's current state on its own track at ts. */
static void task_state_end(tr_out *o, tr_task *t, uint64_t ts)
{
    char name[64];
    switch (t->state) {
    case T_QUEUED: snprintf(name, sizeof name, "queued"); break;
    case T_RUNNING: snprintf(name, sizeof name, "running on w%u", t->worker); break;
    case T_WAITING: snprintf(name, sizeof name, "waiting: %s", braid__wait_reason_name(t->reason)); break;
    case T_RUNNABLE: snprintf(name, sizeof name, "runnable"); break;
    case T_YIELDED: snprintf(name, sizeof name, "yielded"); break;
    default: return;
    }
    ev_slice(o, "task", name, o->task_pid, task_tid(t->id), t->since, ts, "");
}

static void task_enter(tr_out *o, tr_task *t, int state, uint64_t ts)
{
    task_state_end(o, t, ts);
    t->state = (uint8_t)state;
    t->since = ts;
}

/* End the slice worker src is running, if any. */
static void worker_close(tr_out *o, unsigned src, uint64_t ts, const char *then)
{
    struct tr_open *op = &o->open[src];
    if (!op->open)
        return;
    op->open = 0;
    bool fresh;
    tr_task *t = map_get(&o->tasks, op->task, &fresh);
    char label[96], args[160];
    task_label(t, label, sizeof label);
    if (op->kind == BRAID_KIND_CALL) {
        size_t used = strlen(label);
        snprintf(label + used, sizeof label - used, " (join_all call)");
    }
    snprintf(args, sizeof args, "\"task\":%" PRIu64 ",\"then\":\"%s\"", op->task, then);
    ev_slice(o, "run", label, o->pid, o->worker_tid[src], op->since, ts, args);
}

static void on_run(tr_out *o, unsigned src, const tr_ev *e)
{
    worker_close(o, src, e->ts, "switched");
    struct tr_open *op = &o->open[src];
    *op = (struct tr_open){ .task = e->task, .since = e->ts, .kind = e->reason, .open = 1,
                            .park_since = op->park_since, .parked = op->parked };
    if (e->reason == BRAID_KIND_CALL)
        return; /* a join_all call shares its caller's id, not its life */
    tr_task *t = task_of(o, e->task, e->ts);
    if (!t)
        return;
    t->worker = (uint16_t)src;
    task_enter(o, t, T_RUNNING, e->ts);
    if (t->flow)
        ev_flow(o, "f", t->flow_spawn ? "spawn" : "wake", o->worker_tid[src], e->ts, t->flow);
    t->flow = 0;
}

static void on_suspend(tr_out *o, unsigned src, const tr_ev *e)
{
    struct tr_open *op = &o->open[src];
    bool exits = e->reason & TR_EXIT;
    char then[48];
    if (exits)
        snprintf(then, sizeof then, "%s", op->open ? fate_name(op->fate) : "ended");
    else
        snprintf(then, sizeof then, "waiting: %s", braid__wait_reason_name(e->reason));
    worker_close(o, src, e->ts, then);
    if (exits || op->kind == BRAID_KIND_CALL)
        return;
    tr_task *t = task_of(o, e->task, e->ts);
    if (t)
        task_enter(o, t, e->reason == BRAID_WAIT_YIELD ? T_YIELDED : T_WAITING, e->ts);
    if (t)
        t->reason = e->reason;
}

static void on_end(tr_out *o, unsigned src, uint32_t tid, const tr_ev *e, bool dropped)
{
    int fate = (int)e->arg;
    char args[96];
    snprintf(args, sizeof args, "\"task\":%" PRIu64 ",\"fate\":\"%s\"", e->task, fate_name(fate));
    if (src < o->tr->nworkers && o->open[src].open)
        o->open[src].fate = fate;
    if (e->reason == BRAID_KIND_CALL)
        return;
    tr_task *t = task_of(o, e->task, e->ts);
    if (!t)
        return;
    char label[160];
    if (dropped)
        snprintf(label, sizeof label, "%s (never ran)", fate_name(fate));
    else
        snprintf(label, sizeof label, "%s", fate_name(fate));
    task_enter(o, t, T_ENDED, e->ts);
    ev_instant(o, label, o->task_pid, task_tid(t->id), e->ts, args);
    if (fate != BRAID_OK || dropped) {
        char what[64];
        task_label(t, what, sizeof what);
        snprintf(label, sizeof label, "%s %s", what, fate_name(fate));
        ev_instant(o, label, o->pid, tid, e->ts, args);
    }
}

static void on_spawn_or_wake(tr_out *o, uint32_t tid, const tr_ev *e)
{
    bool spawn = e->kind == BRAID_TR_SPAWN;
    char label[96], args[96];
    snprintf(label, sizeof label, "%s task %" PRIu64, spawn ? "spawn" : "wake", e->task);
    snprintf(args, sizeof args, "\"task\":%" PRIu64 ",\"by\":%" PRIu64, e->task, e->arg);
    ev_instant(o, label, o->pid, tid, e->ts, args);
    if (!spawn && e->reason == BRAID_KIND_CALL)
        return;
    tr_task *t = task_of(o, e->task, e->ts);
    if (!t)
        return;
    if (!spawn) {
        if (t->state != T_WAITING && t->state != T_YIELDED)
            return; /* a wake before it parked: it will not suspend */
        task_enter(o, t, T_RUNNABLE, e->ts);
    }
    t->flow = ++o->flows;
    t->flow_spawn = spawn;
    ev_flow(o, "s", spawn ? "spawn" : "wake", tid, e->ts, t->flow);
}

static void on_event(tr_out *o, const tr_item *it)
{
    const tr_ev *e = it->e;
    unsigned src = it->src;
    bool on_worker = src < o->tr->nworkers;
    uint32_t tid = on_worker ? o->worker_tid[src] : e->tid;
    char label[64], args[96];
    o->last_ts = e->ts;
    switch (e->kind) {
    case BRAID_TR_SPAWN:
    case BRAID_TR_WAKE:
        on_spawn_or_wake(o, tid, e);
        break;
    case BRAID_TR_START: {
        tr_task *t = task_of(o, e->task, e->ts);
        if (t && it->name) {
            memcpy(t->name, it->name, BRAID_NAME_MAX);
            t->name[BRAID_NAME_MAX - 1] = 0;
            task_label(t, label, sizeof label);
            ev_thread_name(o, o->task_pid, task_tid(t->id), label, t->id);
        }
        break;
    }
    case BRAID_TR_RUN:
        if (on_worker)
            on_run(o, src, e);
        break;
    case BRAID_TR_SUSPEND:
        if (on_worker)
            on_suspend(o, src, e);
        break;
    case BRAID_TR_END:
    case BRAID_TR_DROP:
        on_end(o, src, tid, e, e->kind == BRAID_TR_DROP);
        break;
    case BRAID_TR_CANCEL:
        snprintf(label, sizeof label, "cancel task %" PRIu64, e->task);
        snprintf(args, sizeof args, "\"task\":%" PRIu64 ",\"by\":%" PRIu64, e->task, e->arg);
        ev_instant(o, label, o->pid, tid, e->ts, args);
        break;
    case BRAID_TR_STEAL:
        snprintf(label, sizeof label, "steal from w%" PRIu64, e->arg);
        snprintf(args, sizeof args, "\"task\":%" PRIu64 ",\"victim\":%" PRIu64, e->task, e->arg);
        ev_instant(o, label, o->pid, tid, e->ts, args);
        break;
    case BRAID_TR_PARK:
        if (on_worker) {
            o->open[src].park_since = e->ts;
            o->open[src].parked = 1;
        }
        break;
    case BRAID_TR_UNPARK:
        if (on_worker && o->open[src].parked) {
            o->open[src].parked = 0;
            ev_slice(o, "park", "parked", o->pid, tid, o->open[src].park_since, e->ts, "");
        }
        break;
    default:
        break;
    }
}

static int item_cmp(const void *a, const void *b)
{
    const tr_item *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    if (x->src != y->src)
        return x->src < y->src ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every recorded event, in time order (ties: by buffer, then as recorded). */
static tr_item *collect(const braid__trace *tr, size_t *count)
{
    size_t n = 0;
    for (unsigned s = 0; s <= tr->nworkers; s++) {
        const braid__trace_buf *b = s < tr->nworkers ? &tr->bufs[s] : &tr->shared;
        for (const tr_chunk *c = b->head; c; c = c->next)
            n += c->n;
    }
    tr_item *items = braid__malloc((n ? n : 1) * sizeof *items);
    if (!items)
        return NULL;
    size_t k = 0;
    for (unsigned s = 0; s <= tr->nworkers; s++) {
        const braid__trace_buf *b = s < tr->nworkers ? &tr->bufs[s] : &tr->shared;
        uint32_t seq = 0;
        tr_item *named = NULL;      /* a START whose name slot comes next */
        for (const tr_chunk *c = b->head; c; c = c->next) {
            for (uint32_t i = 0; i < c->n; i++) {
                const tr_ev *e = &c->ev[i];
                if (named) {
                    named->name = (const char *)e;
                    named = NULL;
                    continue;
                }
                items[k] = (tr_item){ e->ts, s, seq++, e, NULL };
                if (e->kind == BRAID_TR_START && (e->reason & TR_NAMED))
                    named = &items[k];
                k++;
            }
        }
    }
    qsort(items, k, sizeof *items, item_cmp);
    *count = k;
    return items;
}

static uint64_t dropped_total(const braid__trace *tr)
{
    uint64_t d = tr->shared.dropped;
    for (unsigned i = 0; i < tr->nworkers; i++)
        d += tr->bufs[i].dropped;
    return d;
}

static void write_header(tr_out *o, size_t nevents)
{
    const braid__trace *tr = o->tr;
    fprintf(o->f, "{\"displayTimeUnit\":\"ns\",\n\"otherData\":{\"producer\":\"braid\","
                  "\"workers\":%u,\"events\":%zu,\"dropped_events\":%" PRIu64
                  ",\"max_bytes\":%zu},\n\"traceEvents\":[\n"
                  "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,"
                  "\"args\":{\"name\":\"braid workers\"}},\n"
                  "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,"
                  "\"args\":{\"name\":\"braid tasks\"}}",
            tr->nworkers, nevents, dropped_total(tr), tr->max_bytes, o->pid, o->task_pid);
    for (unsigned i = 0; i < tr->nworkers; i++) {
        char name[32];
        snprintf(name, sizeof name, "braid-w%u", i);
        ev_thread_name(o, o->pid, o->worker_tid[i], name, i);
    }
}

/* Name the tracks of the threads that are not workers. */
static void write_thread_names(tr_out *o, const tr_item *items, size_t n)
{
    uint32_t named[64];
    unsigned k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t tid = items[i].e->tid;
        if (items[i].src < o->tr->nworkers)
            continue;
        bool seen = false;
        for (unsigned j = 0; j < k && !seen; j++)
            seen = named[j] == tid;
        for (unsigned j = 0; j < o->tr->nworkers && !seen; j++)
            seen = o->worker_tid[j] == tid;
        if (seen)
            continue;
        if (k < 64)
            named[k++] = tid;
        char name[32];
        snprintf(name, sizeof name, "thread %" PRIu32, tid);
        ev_thread_name(o, o->pid, tid, name, 1000 + (uint64_t)tid);
    }
}

static void write_events(tr_out *o, const tr_item *items, size_t n)
{
    /* A worker's track is named after its thread: the tid its events carry. */
    for (size_t i = 0; i < n; i++)
        if (items[i].src < o->tr->nworkers && !o->worker_tid[items[i].src])
            o->worker_tid[items[i].src] = items[i].e->tid;
    for (unsigned i = 0; i < o->tr->nworkers; i++)
        if (!o->worker_tid[i])
            o->worker_tid[i] = TR_FAKE_TID_BASE + (UINT32_C(1) << 30) + i;
    write_header(o, n);
    write_thread_names(o, items, n);
    for (size_t i = 0; i < n; i++)
        on_event(o, &items[i]);
    /* What was still going on at the end (events dropped, or a timeout). */
    for (unsigned i = 0; i < o->tr->nworkers; i++)
        worker_close(o, i, o->last_ts, "trace ended");
    for (size_t i = 0; i < o->tasks.cap; i++)
        if (o->tasks.t[i].id)
            task_state_end(o, &o->tasks.t[i], o->last_ts);
    fputs("\n]}\n", o->f);
}

static void trace_write(const braid__trace *tr)
{
    char msg[256];
    size_t n = 0;
    tr_item *items = collect(tr, &n);
    tr_out o = { .tr = tr, .pid = (int)getpid(), .last_ts = tr->t0 };
    /* Above PID_MAX_LIMIT (2^22): no real process has the tasks' pid. */
    o.task_pid = (int)TR_FAKE_TID_BASE + o.pid;
    o.worker_tid = braid__calloc(tr->nworkers, sizeof *o.worker_tid);
    o.open = braid__calloc(tr->nworkers, sizeof *o.open);
    FILE *f = items && o.worker_tid && o.open ? fopen(tr->path, "w") : NULL;
    if (f) {
        o.f = f;
        write_events(&o, items, n);
        if (fclose(f) != 0)
            f = NULL;
    }
    if (!f) {
        snprintf(msg, sizeof msg, "braid: could not write the trace %s: %s\n", tr->path,
                 items && o.worker_tid && o.open ? strerror(errno) : "out of memory");
        braid__write_stderr(msg);
    }
    free(o.tasks.t);
    free(o.open);
    free(o.worker_tid);
    free(items);
}

void braid__trace_finish(braid_runtime *rt, bool write)
{
    braid__trace *tr = rt->trace;
    if (!tr)
        return;
    int saved = errno;
    if (write)
        trace_write(tr);
    errno = saved;
    for (unsigned i = 0; i < tr->nworkers; i++) {
        buf_free(&tr->bufs[i]);
        rt->workers[i]->trace = NULL;
    }
    buf_free(&tr->shared);
    pthread_mutex_destroy(&tr->shared.lock);
    free(tr->bufs);
    free(tr->path);
    free(tr);
    rt->trace = NULL;
}
