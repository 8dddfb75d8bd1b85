/*
 * Seeing inside: braid_dump, braid_metrics_get, and each runtime's
 * observer thread (SIGQUIT dumps, the blocked-worker watchdog, deadlock
 * reports).  docs/design.md, "Seeing inside", explains the design.
 *
 * Dumps.  A worker's live list and task records are only ever read on the
 * worker's own thread: the dumper posts a job in the worker's slot, wakes
 * it, and the worker writes its part at its next scheduling point
 * (braid__obs_pass: maintenance, every 61 decisions, or after parking).
 * The dumper withdraws a job not taken within DUMP_WAIT_NS (a worker stuck
 * in a task) with a CAS on the slot; a job the worker took is waited for.
 * While it waits, the dumper serves jobs posted for its own worker, so two
 * tasks dumping at once cannot wait for each other.  Tasks not started yet
 * are read from their queues without being taken: a worker's own by the
 * worker, the injection queue under its lock, each entry's record under
 * its record lock.
 *
 * The watchdog reads each worker's poll counter; one that has not moved
 * for watchdog_ms while the worker is not parked means a task has run that
 * long without suspending.  A SIGURG sent to that worker's thread takes
 * the task's name, site, registers, frame-pointer chain and a copy of the
 * top of its stack in the handler, on that thread (the only place they
 * can be read safely); the reader of the sample then unwinds the copy by
 * call frame information (unwind.h) before following the chain.  A
 * handler that does not run in time (ThreadSanitizer delays handlers until
 * the thread enters an intercepted call) leaves a report without them.
 */
#include "observe.h"
#include "blocking.h"
#include "console.h"
#include "det.h"
#include "handle.h"
#include "sched.h"
#include "symbolize.h"
#include "task.h"
#include "unwind.h"
#include "util.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define DUMP_WAIT_NS (500 * UINT64_C(1000000))
#define SAMPLE_WAIT_NS (100 * UINT64_C(1000000))
#define DEADLOCK_PERIOD_NS (100 * UINT64_C(1000000))
#define MAX_FRAMES 32
#define SAMPLE_STACK_WORDS 2048 /* 16 KiB of a sampled task's stack */

_Atomic int braid__obs_blocked_threads;

/* Bumped (and futex-woken) by SIGQUIT and by every observer stop, so an
 * observer waiting on it never misses either. */
static _Atomic uint32_t obs_epoch;
static _Atomic uint32_t sigquit_count;
static _Atomic int observer_threads;

struct braid__obs_job {
    FILE *f;
    _Atomic int done;
    uint64_t hwm;
    bool records;                   /* console records (console.c), not text */
};

struct wd_state {
    uint64_t polls, since;
    bool reported;
};

struct braid__robs {
    pthread_t thread;
    _Atomic bool stop;
    bool sigquit;
    uint32_t sigquit_seen;
    uint64_t watchdog_ns;
    struct wd_state *wd;
    uint64_t next_watch, next_deadlock;
    bool deadlock_armed, deadlock_reported;
    /* deadlock_look()'s spawned, finished, polls, parks when armed; once a
     * deadlock is reported, progress() is compared with the first three. */
    uint64_t deadlock_sig[4];
    _Atomic uint64_t ext_panicked, ext_cancelled;
    _Atomic uint64_t stack_hwm;
};

/* ---- small helpers --------------------------------------------------------------- */

static void nap_us(long us)
{
    struct timespec ts = { 0, us * 1000 };
    nanosleep(&ts, NULL);
}

static bool obs_parked(uint32_t park)
{
    return park == BRAID_PARK_PARKED || park == BRAID_PARK_POLLING;
}

static void max_store(_Atomic uint64_t *m, uint64_t v)
{
    uint64_t old = atomic_load_explicit(m, memory_order_relaxed);
    while (v > old && !atomic_compare_exchange_weak_explicit(m, &old, v, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}

/* ---- per-worker hooks -------------------------------------------------------------- */

void braid__obs_worker_init(braid__worker *w)
{
    w->obs.start_ns = braid__now_ns();
    atomic_init(&w->obs.now_ns, w->obs.start_ns);
}

static void thread_lock(braid__worker *w)
{
    while (atomic_exchange_explicit(&w->obs.thread_lock, 1, memory_order_acquire))
        braid__cpu_relax();
}

static void thread_unlock(braid__worker *w)
{
    atomic_store_explicit(&w->obs.thread_lock, 0, memory_order_release);
}

void braid__obs_worker_thread(braid__worker *w)
{
    pthread_attr_t a;
    void *lo;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    if (pthread_attr_getstack(&a, &lo, &size) == 0) {
        w->obs.thread_stack_lo = (uintptr_t)lo;
        w->obs.thread_stack_hi = (uintptr_t)lo + size;
    }
    pthread_attr_destroy(&a);
}

void braid__obs_thread_enter(braid__worker *w)
{
    thread_lock(w);
    w->obs.thread = pthread_self();
    w->obs.thread_known = true;
    thread_unlock(w);
}

void braid__obs_thread_leave(braid__worker *w)
{
    thread_lock(w);
    w->obs.thread_known = false;
    thread_unlock(w);
}

void braid__obs_pass(braid__worker *w)
{
    atomic_store_explicit(&w->obs.now_ns, braid__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&w->obs.timers, w->wheel.count, memory_order_relaxed);
    braid__obs_serve(&w->obs.job, w);
}

void braid__obs_ext_finished(braid_runtime *rt, int fate)
{
    if (fate == BRAID_OK || !rt->obs)
        return;
    atomic_fetch_add_explicit(fate == BRAID_PANICKED ? &rt->obs->ext_panicked
                                                     : &rt->obs->ext_cancelled,
                              1, memory_order_relaxed);
}

/* ---- stacks: depth and backtraces ---------------------------------------------------- */

/* How deep t's stack has been touched, in bytes from its top; 0 if unknown. */
static uint64_t stack_depth(const braid__task *t)
{
    size_t page = braid__page_size();
    uintptr_t lo = (uintptr_t)t->fiber.stack_lo & ~(uintptr_t)(page - 1);
    uintptr_t top = ((uintptr_t)t + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t low = braid__stack_lowest_resident(lo, top);
    return low ? top - low : 0;
}

ssize_t braid_stack_high_water(void)
{
    braid__task *t = braid__tls_task;
    if (!t)
        return -EPERM;
    uint64_t d = stack_depth(t);
    if (!d)
        return -ENOSYS;
    if (t->home->rt->obs)
        max_store(&t->home->rt->obs->stack_hwm, d);
    return (ssize_t)d;
}

/* Follow the frame-pointer chain from fp while it stays inside [lo, hi)
 * and goes up: each frame's return address in rets, and its address in
 * frames (if not NULL).  Code built without frame pointers ends it early
 * or yields a wrong frame, never a fault. */
__attribute__((no_sanitize("address"))) static int walk_chain(uintptr_t fp, uintptr_t lo,
                                                              uintptr_t hi, uintptr_t *frames,
                                                              uintptr_t *rets, int max)
{
    int n = 0;
    while (n < max && fp >= lo && fp + 2 * sizeof(uintptr_t) <= hi && !(fp & 7)) {
        const uintptr_t *f = (const uintptr_t *)fp;
        uintptr_t next = f[0], ret = f[1];
        if (!ret)
            break;
        if (frames)
            frames[n] = fp;
        rets[n++] = ret;
        if (next <= fp)
            break;
        fp = next;
    }
    return n;
}

/* pc (unless 0), then the chain from fp (walk_chain). */
static int walk_frames(uintptr_t fp, uintptr_t pc, uintptr_t lo, uintptr_t hi, uintptr_t *out,
                       int max)
{
    int n = 0;
    if (pc)
        out[n++] = pc;
    return n + walk_chain(fp, lo, hi, NULL, out + n, max - n);
}

/* The frames of suspended task t, from its saved context (arch/ctx.h). */
__attribute__((no_sanitize("address"))) static int suspended_frames(const braid__task *t, uintptr_t *out, int max)
{
#if defined(BRAID_CTX_PORTABLE)
    (void)t;
    (void)out;
    (void)max;
    return 0;
#else
    const uintptr_t *sp = t->fiber.ctx.sp;
#if defined(__x86_64__)
    uintptr_t fp = sp[5], pc = sp[6];
#else
    uintptr_t fp = sp[10], pc = sp[11];
#endif
    return walk_frames(fp, pc, (uintptr_t)sp, (uintptr_t)t, out, max);
#endif
}

/* Each frame as "#N 0xPC name+0xOFF (module+0xOFF)", the name from dladdr()
 * (exported symbols) or else the module's own symbol table. */
static void print_frames(FILE *f, const uintptr_t *pcs, int n)
{
    for (int i = 0; i < n; i++) {
        /* A return address points after its call: look up the call. */
        uintptr_t at = i ? pcs[i] - 1 : pcs[i];
        Dl_info di;
        memset(&di, 0, sizeof di);
        bool known = dladdr((void *)at, &di) && di.dli_fname;
        const char *name = known ? di.dli_sname : NULL;
        uintptr_t off = name ? pcs[i] - (uintptr_t)di.dli_saddr : 0;
        if (!name && (name = braid__symbolize(at, &off)) != NULL)
            off += pcs[i] - at;
        fprintf(f, "      #%d 0x%" PRIxPTR, i, pcs[i]);
        if (name)
            fprintf(f, " %s+0x%" PRIxPTR, name, off);
        if (known) {
            const char *mod = strrchr(di.dli_fname, '/');
            fprintf(f, " (%s+0x%" PRIxPTR ")", mod ? mod + 1 : di.dli_fname,
                    pcs[i] - (uintptr_t)di.dli_fbase);
        }
        fputc('\n', f);
    }
}

/* ---- describing tasks ------------------------------------------------------------------ */

/* Where t was spawned: beside its completion record, which lives as long
 * as t (join_all's calls have none). */
static const braid__site *task_site(const braid__task *t)
{
    return t->rec ? braid__rec_site(t->rec, t->rec_index) : NULL;
}

/* What t waits for, with its detail: "sleep until +12 ms", "join of task 5". */
static void describe_wait(const braid__task *t, uint64_t now, char *buf, size_t n)
{
    switch (t->wait_reason) {
    case BRAID_WAIT_SLEEP: {
        int64_t left = (int64_t)(t->timer.tick * 1000000u) - (int64_t)now;
        snprintf(buf, n, "sleep until %+" PRId64 " ms", left / 1000000);
        break;
    }
    case BRAID_WAIT_JOIN:
        snprintf(buf, n, "join of task %" PRIu64, t->wait_obj);
        break;
    case BRAID_WAIT_IO:
        snprintf(buf, n, "fd %" PRIu64, t->wait_obj);
        break;
    default:
        snprintf(buf, n, "%s", braid__wait_reason_name(t->wait_reason));
    }
}

/* t's state in words: "running on worker 0", "waiting on join of task 5". */
static void task_state(const braid__worker *w, const braid__task *t, const braid__task *self,
                       int wake, uint64_t now, char *state, size_t n)
{
    char what[64];
    if (t == self) {
        snprintf(state, n, "running on worker %u", w->index);
    } else if (wake == BRAID_WAKE_PARKED) {
        describe_wait(t, now, what, sizeof what);
        snprintf(state, n, "waiting on %s", what);
    } else if (t->wait_reason == BRAID_WAIT_YIELD) {
        snprintf(state, n, "runnable (yielded)");
    } else if (t->wait_reason != BRAID_WAIT_NONE) {
        snprintf(state, n, "runnable (woken from %s)", braid__wait_reason_name(t->wait_reason));
    } else {
        snprintf(state, n, "runnable");
    }
}

/* How long t has been in its state: since its stamp (task.h), which for
 * the running task is when it was made runnable, unless the console times
 * tasks: then exactly since it was resumed. */
static uint64_t time_in_state(const braid__worker *w, const braid__task *t,
                              const braid__task *self, uint64_t now)
{
    uint64_t since = t == self && w->timing
                         ? w->run_start
                         : atomic_load_explicit(&t->since_ns, memory_order_relaxed);
    return now > since ? now - since : 0;
}

/* t as one console record (console.c has the format); tabs and line ends
 * in its name become spaces so that they cannot break the record. */
static void record_task(FILE *f, braid__worker *w, braid__task *t, braid__task *self,
                        uint64_t now, uint64_t depth)
{
    char state[96], name[BRAID_NAME_MAX];
    int wake = atomic_load_explicit(&t->wake, memory_order_acquire);
    task_state(w, t, self, wake, now, state, sizeof state);
    snprintf(name, sizeof name, "%s", t->ext ? t->ext->name : "");
    for (char *c = name; *c; c++)
        if (*c == '\t' || *c == '\n' || *c == '\r')
            *c = ' ';
    uint64_t in_state = time_in_state(w, t, self, now), busy = t->busy_ns;
    if (t == self && w->timing)
        busy += in_state;
    const braid__site *site = task_site(t);
    fprintf(f, "task\t%" PRIu64 "\t%s\t%s\t%u\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t", t->id,
            name, state, w->index, in_state, busy, depth);
    if (site && site->file)
        fprintf(f, "%s:%u\n", site->file, site->line);
    else
        fputs("?\n", f);
}

/* "  task 5 "name": " (the name only if it has one). */
static void task_head(FILE *f, uint64_t id, const char *name)
{
    bool named = name && name[0];
    fprintf(f, "  task %" PRIu64 "%s%s%s: ", id, named ? " \"" : "", named ? name : "",
            named ? "\"" : "");
}

/* "    spawned at file:line by task N" (or "from a thread"), no line end. */
static void print_site(FILE *f, const braid__site *site)
{
    if (site && site->file)
        fprintf(f, "    spawned at %s:%u", site->file, site->line);
    else
        fprintf(f, "    spawned at ?");
    if (site && site->parent)
        fprintf(f, " by task %" PRIu64, site->parent);
    else if (site)
        fprintf(f, " from a thread");
}

static void describe_task(FILE *f, braid__worker *w, braid__task *t, braid__task *self,
                          uint64_t now, struct braid__obs_job *job)
{
    char state[96];
    int wake = atomic_load_explicit(&t->wake, memory_order_acquire);
    task_state(w, t, self, wake, now, state, sizeof state);
    uint64_t in_state = time_in_state(w, t, self, now);
    task_head(f, t->id, t->ext ? t->ext->name : NULL);
    fprintf(f, "%s, for %" PRIu64 ".%03" PRIu64 " s\n", state, in_state / 1000000000u,
            in_state / 1000000u % 1000u);
    uint64_t depth = stack_depth(t);
    if (depth > job->hwm)
        job->hwm = depth;
    print_site(f, task_site(t));
    fprintf(f, "; stack touched %" PRIu64 " KiB deep\n", depth / 1024);
    uintptr_t pcs[MAX_FRAMES];
    int n;
    if (t == self) {
        n = walk_frames((uintptr_t)__builtin_frame_address(0), 0, (uintptr_t)t->fiber.stack_lo,
                        (uintptr_t)t, pcs, MAX_FRAMES);
    } else {
        n = suspended_frames(t, pcs, MAX_FRAMES);
    }
    print_frames(f, pcs, n);
}

/* ---- tasks not started yet ------------------------------------------------------------- */

/* Most not-started tasks a dump lists per queue; the rest are counted. */
#define QUEUED_SHOWN 32

struct queued {
    uint64_t id;
    char name[BRAID_NAME_MAX];
    braid__site site;
};

/* The task queue entry h stands for, if it still waits to start: false
 * for a stale entry (started, or gone, since it was queued).  The record
 * lock freezes it while its name and site are copied: nobody can start
 * the task and take its options meanwhile. */
static bool queued_task(uint64_t h, struct queued *q)
{
    braid_task ht = { h };
    braid__rec *r = braid__rec_lookup(ht);
    uint64_t gen = braid__handle_gen(ht);
    uint64_t s = r ? braid__rec_lock(r, gen) : 0;
    if (!s)
        return false;
    bool waiting = braid__rec_phase(s) == BRAID_REC_QUEUED;
    if (waiting) {
        const braid__spawn_ext *ext = (s & BRAID_REC_EXT) ? r->b : NULL;
        q->id = gen;
        snprintf(q->name, sizeof q->name, "%s", ext ? ext->name : "");
        q->site = *braid__rec_site(r, braid__handle_index(ht));
    }
    braid__rec_unlock(r, s);
    return waiting;
}

/* List the not-started tasks among the n queue entries hs (of total in
 * that queue), each said to be `where`. */
static void list_queued(FILE *f, const uint64_t *hs, size_t n, size_t total, const char *where)
{
    struct queued q;
    for (size_t i = 0; i < n; i++) {
        if (!queued_task(hs[i], &q))
            continue;
        task_head(f, q.id, q.name);
        fprintf(f, "not started, %s\n", where);
        print_site(f, &q.site);
        fputc('\n', f);
    }
    if (total > n)
        fprintf(f, "  ... and %zu more\n", total - n);
}

/* The entries of w's queues of never-started tasks (on w's thread): the
 * newest spawn, the ring, and in deterministic mode the pending set.
 * Returns how many there are; the first max land in hs. */
static size_t worker_queued(braid__worker *w, uint64_t *hs, size_t max, size_t *copied)
{
    size_t n = 0, total = braid__ring_len(&w->ring);
    uint64_t newest = atomic_load_explicit(&w->ring.newest, memory_order_relaxed);
    if (newest) {
        total++;
        hs[n++] = newest;
    }
    n += braid__ring_peek(&w->ring, hs + n, (uint32_t)(max - n));
    if (w->det) {
        total += w->det->npending;
        for (size_t i = 0; i < w->det->npending && n < max; i++)
            hs[n++] = w->det->pending[i];
    }
    *copied = n;
    return total;
}

/* Write w's part of a dump, queued tasks aside; on w's thread (self: the
 * task running on it, the caller, or NULL), under w's live lock. */
static void dump_worker_locked(braid__worker *w, braid__task *self, struct braid__obs_job *job,
                               size_t queued)
{
    FILE *f = job->f;
    uint64_t now = braid__now_ns();
    if (job->records) {
        for (braid__task *t = w->live; t; t = t->live_next) {
            uint64_t depth = stack_depth(t);
            job->hwm = BRAID_MAX(job->hwm, depth);
            record_task(f, w, t, self, now, depth);
        }
        return;
    }
    size_t live = 0;
    for (braid__task *t = w->live; t; t = t->live_next)
        live++;
    fprintf(f, "worker %u: %zu started tasks, %zu not started in its queue\n", w->index, live,
            queued);
    for (braid__task *t = w->live; t; t = t->live_next)
        describe_task(f, w, t, self, now, job);
}

static void dump_worker(braid__worker *w, braid__task *self, struct braid__obs_job *job)
{
    uint64_t hs[QUEUED_SHOWN];
    size_t shown = 0, queued = job->records ? 0 : worker_queued(w, hs, QUEUED_SHOWN, &shown);
    braid__live_lock(w);
    dump_worker_locked(w, self, job, queued);
    braid__live_unlock(w);
    if (job->records)
        return;
    /* Outside the live lock, which whoever starts a task takes while it
     * holds the task's record lock. */
    char where[48];
    snprintf(where, sizeof where, "queued on worker %u", w->index);
    list_queued(job->f, hs, shown, queued, where);
}

void braid__obs_serve_slow(braid__worker *w)
{
    struct braid__obs_job *job = atomic_exchange_explicit(&w->obs.job, NULL, memory_order_acquire);
    if (!job)
        return;
    dump_worker(w, braid__tls_task, job);
    fflush(job->f);
    atomic_store_explicit(&job->done, 1, memory_order_release);
}

/* ---- the watchdog's sample ------------------------------------------------------------------ */

enum { SMP_IDLE, SMP_POSTED, SMP_TAKEN, SMP_DONE };

/* One sample at a time in the process (sample_lock).  The handler fills it
 * only if it runs on the targeted worker while the request is posted. */
static pthread_mutex_t sample_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    _Atomic int state;
    braid__worker *w;
    bool has_task;
    uint64_t id;
    char name[BRAID_NAME_MAX];
    braid__site site;               /* a copy: the record may be reused */
    uint64_t since;                 /* the task's state stamp (task.h) */
    /* Its frames, resolved later (sample_frames): the interrupted
     * registers, the frame-pointer chain (each frame's address and return
     * address), and a copy of the top of its stack. */
    braid__unwind_regs regs;
    int nchain;
    uintptr_t chain_fp[MAX_FRAMES], chain_ret[MAX_FRAMES];
    uintptr_t stack_base;
    size_t nstack;
    uintptr_t stack[SAMPLE_STACK_WORDS];
} smp;
static bool sample_handler_installed;

/* Copy [lo, lo + n words) of the interrupted stack, word by word: the
 * volatile reads keep the compiler from calling memcpy, which ASan
 * checks, and the stack holds ASan's poisoned redzones. */
__attribute__((no_sanitize("address"))) static void copy_stack(uintptr_t lo, size_t n)
{
    const volatile uintptr_t *src = (const volatile uintptr_t *)lo;
    for (size_t i = 0; i < n; i++)
        smp.stack[i] = src[i];
    smp.stack_base = lo;
    smp.nstack = n;
}

/* Record the interrupted context (its registers, from uc, and the stack
 * [lo, hi) it runs on) for sample_frames. */
static void sample_context(uintptr_t lo, uintptr_t hi, const void *ucv)
{
    const ucontext_t *uc = ucv;
#if defined(__x86_64__)
    smp.regs = (braid__unwind_regs){ .pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP],
                                     .sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP],
                                     .fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP] };
#elif defined(__aarch64__)
    smp.regs = (braid__unwind_regs){ .pc = (uintptr_t)uc->uc_mcontext.pc,
                                     .sp = (uintptr_t)uc->uc_mcontext.sp,
                                     .fp = (uintptr_t)uc->uc_mcontext.regs[29],
                                     .lr = (uintptr_t)uc->uc_mcontext.regs[30] };
#else
    (void)uc;
    memset(&smp.regs, 0, sizeof smp.regs);
#endif
    smp.nchain = walk_chain(smp.regs.fp, lo, hi, smp.chain_fp, smp.chain_ret, MAX_FRAMES);
    uintptr_t sp = smp.regs.sp & ~(uintptr_t)(sizeof(uintptr_t) - 1);
    smp.nstack = 0;
    if (sp >= lo && sp < hi)
        copy_stack(sp, BRAID_MIN((hi - sp) / sizeof(uintptr_t), (size_t)SAMPLE_STACK_WORDS));
}

static void sample_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    int saved = errno;
    if (si->si_code == SI_TKILL && atomic_load_explicit(&smp.state, memory_order_acquire) ==
                                       SMP_POSTED && smp.w == braid__tls_worker) {
        int expect = SMP_POSTED;
        if (atomic_compare_exchange_strong(&smp.state, &expect, SMP_TAKEN)) {
            braid__task *t = braid__tls_task;
            smp.has_task = t != NULL;
            if (t) {
                smp.id = t->id;
                smp.name[0] = 0;
                if (t->ext)
                    memcpy(smp.name, t->ext->name, sizeof smp.name);
                const braid__site *site = task_site(t);
                smp.site = site ? *site : (braid__site){ 0 };
                smp.since = atomic_load_explicit(&t->since_ns, memory_order_relaxed);
                sample_context((uintptr_t)t->fiber.stack_lo, (uintptr_t)t, ucv);
            } else {
                /* In the scheduler: where it is stuck is worth as much. */
                sample_context(smp.w->obs.thread_stack_lo, smp.w->obs.thread_stack_hi, ucv);
            }
            atomic_store_explicit(&smp.state, SMP_DONE, memory_order_release);
        }
    }
    errno = saved;
}

/* The sampled task's frames (call with sample_lock held, after an
 * answered sample).  The call frame information is followed first, as far
 * as it and the stack copy go: it also finds the callers of functions that
 * keep no frame pointer, such as libc's system call wrappers.  Then the
 * frame-pointer chain the handler walked, from the frame reached. */
static int sample_frames(uintptr_t *out, int max)
{
    braid__unwind_regs r = smp.regs;
    braid__stack_copy copy = { smp.stack_base, smp.stack, smp.nstack };
    int n = 0;
    if (r.pc)
        out[n++] = r.pc;
    while (n < max && braid__unwind_step(&r, n == 1, &copy))
        out[n++] = r.pc;
    for (int i = 0; i < smp.nchain; i++) {
        if (smp.chain_fp[i] == r.fp) {
            while (n < max && i < smp.nchain)
                out[n++] = smp.chain_ret[i++];
            break;
        }
    }
    return n;
}

/* Take SIGURG for the watchdog unless someone else handles it. */
static void install_sample_handler(void)
{
    pthread_mutex_lock(&sample_lock);
    struct sigaction old;
    if (!sample_handler_installed && sigaction(SIGURG, NULL, &old) == 0 &&
        !(old.sa_flags & SA_SIGINFO) && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = sample_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
        sample_handler_installed = sigaction(SIGURG, &sa, NULL) == 0;
    }
    pthread_mutex_unlock(&sample_lock);
}

/* Sample the task running on w (call with sample_lock held): true if the
 * handler answered. */
static bool sample_worker(braid__worker *w)
{
    if (!sample_handler_installed)
        return false;
    smp.w = w;
    atomic_store_explicit(&smp.state, SMP_POSTED, memory_order_release);
    thread_lock(w);
    bool sent = w->obs.thread_known && pthread_kill(w->obs.thread, SIGURG) == 0;
    thread_unlock(w);
    uint64_t until = braid__now_ns() + SAMPLE_WAIT_NS;
    while (sent && atomic_load_explicit(&smp.state, memory_order_acquire) != SMP_DONE &&
           braid__now_ns() < until)
        nap_us(500);
    int expect = SMP_POSTED;
    if (atomic_compare_exchange_strong(&smp.state, &expect, SMP_IDLE))
        return false; /* withdrawn: a late handler finds nothing posted */
    while (atomic_load_explicit(&smp.state, memory_order_acquire) != SMP_DONE)
        nap_us(100);
    atomic_store_explicit(&smp.state, SMP_IDLE, memory_order_relaxed);
    return true;
}

/* ---- braid_dump ---------------------------------------------------------------------------- */

static pthread_mutex_t dump_lock = PTHREAD_MUTEX_INITIALIZER;

/* Serve jobs for the caller's own worker while waiting (see the top).  A
 * dump holds its worker on purpose: counted as progress, so that the
 * watchdog does not report the dumping task. */
static void serve_own(void)
{
    braid__worker *me = braid__tls_worker;
    if (me) {
        braid__obs_serve(&me->obs.job, me);
        braid__obs_bump(&me->obs.polls);
    }
}

/* Have worker w (not the caller's) write its part; false if it did not
 * take the job in time. */
static bool dump_remote(braid__worker *w, struct braid__obs_job *job)
{
    braid_runtime *rt = w->rt;
    /* A current-thread runtime that nobody drives: its tasks cannot run,
     * so read them here, holding the driving flag. */
    bool expect = false;
    if (rt->nworkers == 1 && !atomic_load_explicit(&rt->shutdown, memory_order_acquire) &&
        atomic_compare_exchange_strong(&rt->driving, &expect, true)) {
        dump_worker(w, NULL, job);
        atomic_store(&rt->driving, false);
        return true;
    }
    atomic_store_explicit(&job->done, 0, memory_order_relaxed);
    atomic_store_explicit(&w->obs.job, job, memory_order_release);
    braid__sched_unpark(w);
    uint64_t until = braid__now_ns() + DUMP_WAIT_NS;
    while (!atomic_load_explicit(&job->done, memory_order_acquire)) {
        serve_own();
        if (braid__now_ns() >= until) {
            struct braid__obs_job *mine = job;
            if (atomic_compare_exchange_strong(&w->obs.job, &mine, NULL))
                return false; /* withdrawn: w never saw it */
        }
        nap_us(100);
    }
    return true;
}

/* w did not take its dump job: say what it runs, if its thread answers
 * the watchdog's signal. */
static void dump_busy(braid__worker *w, FILE *f)
{
    fprintf(f, "worker %u: busy: did not reach a scheduling point in %" PRIu64 " ms\n", w->index,
            DUMP_WAIT_NS / 1000000);
    pthread_mutex_lock(&sample_lock);
    if (sample_worker(w)) {
        if (smp.has_task) {
            uint64_t now = braid__now_ns(), ran = now > smp.since ? now - smp.since : 0;
            task_head(f, smp.id, smp.name);
            fprintf(f, "running on worker %u, not suspending, for %" PRIu64 ".%03" PRIu64 " s\n",
                    w->index, ran / 1000000000u, ran / 1000000u % 1000u);
            print_site(f, &smp.site);
            fputc('\n', f);
        } else {
            fprintf(f, "  in the scheduler, no task running, at:\n");
        }
        uintptr_t pcs[MAX_FRAMES];
        int n = sample_frames(pcs, MAX_FRAMES);
        print_frames(f, pcs, n);
    }
    pthread_mutex_unlock(&sample_lock);
}

/* Every worker's part of a dump, or of a console snapshot (records).  The
 * caller holds dump_lock. */
static void dump_workers(braid_runtime *rt, struct braid__obs_job *job)
{
    braid__worker *me = braid__tls_worker;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        braid__worker *w = rt->workers[i];
        if (me && w == me) {
            dump_worker(w, braid__tls_task, job);
        } else if (!dump_remote(w, job)) {
            /* The console asks every second: no sampling signal for it. */
            if (job->records)
                fprintf(job->f, "warn\tworker %u did not reach a scheduling point in %" PRIu64
                                " ms: a task runs without suspending\n",
                        w->index, DUMP_WAIT_NS / 1000000);
            else
                dump_busy(w, job->f);
        }
        fflush(job->f);
    }
    if (rt->obs)
        max_store(&rt->obs->stack_hwm, job->hwm);
}

static void dump_lock_take(void)
{
    while (pthread_mutex_trylock(&dump_lock) != 0) {
        serve_own();
        nap_us(200);
    }
}

/* The tasks waiting in rt's injection queue (read under its lock). */
static void dump_injected(braid_runtime *rt, FILE *f)
{
    uint64_t hs[QUEUED_SHOWN];
    size_t n = braid__inject_peek(&rt->inject, hs, QUEUED_SHOWN);
    if (!n)
        return;
    /* Read apart from the peek: it may have moved since. */
    size_t total = BRAID_MAX(braid__inject_len(&rt->inject), n);
    fprintf(f, "injection queue: %zu not started\n", total);
    list_queued(f, hs, n, total, "in the injection queue");
}

int braid_dump(braid_runtime *rt, FILE *f)
{
    if (!rt)
        rt = braid_current_runtime();
    if (!rt || !f)
        return -EINVAL;
    int saved = errno;
    dump_lock_take();
    struct braid__obs_job job = { f, 0, 0, false };
    uint64_t s = braid__rt_spawned(rt), fin = braid__rt_finished(rt);
    fprintf(f, "braid dump: runtime %p, %u workers, %" PRIu64 " tasks alive, %zu in the injection "
               "queue\n",
            (void *)rt, rt->nworkers, s > fin ? s - fin : 0, braid__inject_len(&rt->inject));
    fflush(f);
    dump_workers(rt, &job);
    dump_injected(rt, f);
    fprintf(f, "end of braid dump\n");
    fflush(f);
    pthread_mutex_unlock(&dump_lock);
    int rc = ferror(f) ? -EIO : 0;
    errno = saved;
    return rc;
}

void braid__obs_records(braid_runtime *rt, FILE *f)
{
    dump_lock_take();
    struct braid__obs_job job = { f, 0, 0, true };
    dump_workers(rt, &job);
    pthread_mutex_unlock(&dump_lock);
}

/* ---- metrics ------------------------------------------------------------------------------ */

int braid_metrics_get(braid_runtime *rt, braid_metrics *m)
{
    if (!rt)
        rt = braid_current_runtime();
    if (!rt || !m || (m->size && m->size < offsetof(braid_metrics, max_workers)))
        return -EINVAL;
    size_t size = m->size ? m->size : sizeof *m;
    braid_metrics out;
    memset(&out, 0, sizeof out);
    out.size = size;
    out.nworkers = rt->nworkers;
    uint64_t spawned = braid__rt_spawned(rt), finished = braid__rt_finished(rt);
    out.stack_high_water = braid__stack_deepest(&rt->stacks);
    if (rt->obs) {
        out.tasks_panicked = atomic_load_explicit(&rt->obs->ext_panicked, memory_order_relaxed);
        out.tasks_cancelled = atomic_load_explicit(&rt->obs->ext_cancelled, memory_order_relaxed);
        max_store(&rt->obs->stack_hwm, out.stack_high_water);
        out.stack_high_water = atomic_load_explicit(&rt->obs->stack_hwm, memory_order_relaxed);
    }
    uint64_t now = braid__now_ns();
    bool has_array = size >= sizeof *m && m->workers;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        braid__worker *w = rt->workers[i];
        braid__wobs *o = &w->obs;
        out.tasks_panicked += braid__load_relaxed(&o->panicked);
        out.tasks_cancelled += braid__load_relaxed(&o->cancelled);
        braid_worker_metrics wm = {
            .polls = braid__load_relaxed(&o->polls),
            .steals = braid__load_relaxed(&o->steals),
            .parks = braid__load_relaxed(&o->parks),
            .local_queue = braid__ring_len(&w->ring) +
                           (atomic_load_explicit(&w->ring.newest, memory_order_relaxed) != 0),
            .timers = braid__load_relaxed(&o->timers),
            .io_registered = braid__load_relaxed(&o->io_registered),
        };
        /* The sleep in progress counts as idle too (the sum is approximate
         * while the worker wakes: clamped below). */
        uint64_t asleep = braid__load_relaxed(&o->parked_at);
        uint64_t idle = braid__load_relaxed(&o->idle_ns) + (asleep && now > asleep ? now - asleep : 0);
        uint64_t up = now - o->start_ns;
        wm.busy_ns = up > idle ? up - idle : 0;
        out.timers += wm.timers;
        out.io_registered += wm.io_registered;
        if (has_array && i < m->max_workers)
            m->workers[i] = wm;
    }
    out.tasks_spawned = spawned;
    out.tasks_completed = finished;
    out.tasks_alive = spawned > finished ? spawned - finished : 0;
    out.global_queue = braid__inject_len(&rt->inject);
    braid__bpool_stats st;
    braid__bpool_get_stats(rt, &st);
    out.blocking_busy = st.running;
    out.blocking_idle = st.idle;
    out.blocking_queued = st.queued;
    if (size >= sizeof *m) {
        out.max_workers = m->max_workers;
        out.workers = m->workers;
    }
    memcpy(m, &out, BRAID_MIN(size, sizeof out));
    return 0;
}

/* ---- the watchdog ------------------------------------------------------------------------ */

static void report(braid_runtime *rt, int event, uint64_t id, const char *summary)
{
    braid__console_warn(rt, summary);
    if (rt->cfg.observe_hook)
        rt->cfg.observe_hook(rt, event, id, rt->cfg.observe_hook_arg);
}

static void watchdog_report(braid_runtime *rt, braid__worker *w, uint64_t ran_ns)
{
    pthread_mutex_lock(&sample_lock);
    bool answered = sample_worker(w);
    if (answered && !smp.has_task) {
        pthread_mutex_unlock(&sample_lock);
        return; /* the scheduler itself (trimming stacks, say): not a task */
    }
    uint64_t id = answered ? smp.id : 0;
    char summary[160];
    snprintf(summary, sizeof summary,
             "task %" PRIu64 "%s%s%s ran on worker %u for %" PRIu64 " ms without suspending", id,
             answered && smp.name[0] ? " \"" : "", answered ? smp.name : "",
             answered && smp.name[0] ? "\"" : "", w->index, ran_ns / 1000000);
    flockfile(stderr);
    if (answered) {
        fprintf(stderr,
                "braid: task %" PRIu64 "%s%s%s (spawned at %s:%u) has run on worker %u for %" PRIu64
                " ms without suspending: a blocking call inside a task?\n",
                smp.id, smp.name[0] ? " \"" : "", smp.name, smp.name[0] ? "\"" : "",
                smp.site.file ? smp.site.file : "?", smp.site.line, w->index, ran_ns / 1000000);
        uintptr_t pcs[MAX_FRAMES];
        int n = sample_frames(pcs, MAX_FRAMES);
        print_frames(stderr, pcs, n);
    } else {
        fprintf(stderr,
                "braid: a task has run on worker %u for %" PRIu64
                " ms without suspending: a blocking call inside a task? (its thread did not "
                "answer for a backtrace)\n",
                w->index, ran_ns / 1000000);
    }
    fflush(stderr);
    funlockfile(stderr);
    pthread_mutex_unlock(&sample_lock);
    report(rt, BRAID_EVENT_BLOCKED, id, summary);
}

/* A current-thread runtime's worker has no thread between braid_block_on
 * calls: its polls stand still because nobody drives it, not because a task
 * is stuck. */
static bool worker_driven(braid__worker *w)
{
    thread_lock(w);
    bool known = w->obs.thread_known;
    thread_unlock(w);
    return known;
}

static void watchdog_check(braid_runtime *rt, struct braid__robs *o, uint64_t now)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        braid__worker *w = rt->workers[i];
        struct wd_state *s = &o->wd[i];
        uint64_t polls = braid__load_relaxed(&w->obs.polls);
        if (polls != s->polls || obs_parked(atomic_load_explicit(&w->park, memory_order_relaxed)) ||
            !worker_driven(w)) {
            s->polls = polls;
            s->since = now;
            s->reported = false;
            continue;
        }
        if (!s->reported && now - s->since >= o->watchdog_ns) {
            s->reported = true;
            watchdog_report(rt, w, now - s->since);
        }
    }
}

/* ---- deadlocks -------------------------------------------------------------------------------- */

static int process_threads(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0)
            n = (int)strtol(line + 8, NULL, 10);
    fclose(f);
    return n;
}

/* Whether rt looks deadlocked now (see braid.h); sig receives what must
 * not change before the second look. */
static bool deadlock_look(braid_runtime *rt, uint64_t sig[4])
{
    if (atomic_load_explicit(&rt->shutdown, memory_order_acquire))
        return false;
    if (rt->nworkers == 1 && !atomic_load_explicit(&rt->driving, memory_order_acquire))
        return false; /* nobody runs its tasks: not waiting on them either */
    uint64_t polls = 0, parks = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        braid__worker *w = rt->workers[i];
        if (!atomic_load_explicit(&w->obs.asleep_for_good, memory_order_acquire) ||
            atomic_load_explicit(&w->obs.io_waiting, memory_order_relaxed) ||
            braid__ring_len(&w->ring) ||
            atomic_load_explicit(&w->ring.newest, memory_order_relaxed) ||
            atomic_load_explicit(&w->inbox, memory_order_acquire))
            return false;
        polls += braid__load_relaxed(&w->obs.polls);
        parks += braid__load_relaxed(&w->obs.parks);
    }
    uint64_t spawned = braid__rt_spawned(rt), finished = braid__rt_finished(rt);
    if (spawned <= finished || braid__inject_len(&rt->inject))
        return false;
    braid__bpool_stats st;
    braid__bpool_get_stats(rt, &st);
    if (st.running || st.queued || st.resolving)
        return false;
    /* Every thread must be accounted for: the workers (or the one driving
     * a current-thread runtime), the pool's idle threads, the observers,
     * plain threads blocked in braid without a deadline, and
     * ThreadSanitizer's background thread. */
    int known = (int)rt->nworkers + (int)st.threads +
                atomic_load_explicit(&observer_threads, memory_order_acquire) +
                atomic_load_explicit(&braid__obs_blocked_threads, memory_order_acquire) +
                (braid__under_tsan ? 1 : 0);
    if (process_threads() != known)
        return false;
    sig[0] = spawned;
    sig[1] = finished;
    sig[2] = polls;
    sig[3] = parks;
    return true;
}

/* What only the tasks moving on changes: spawns, ends, and resumptions.
 * Parks are left out, because the report's own dump wakes every worker. */
static void progress(braid_runtime *rt, uint64_t p[3])
{
    p[0] = braid__rt_spawned(rt);
    p[1] = braid__rt_finished(rt);
    p[2] = 0;
    for (unsigned i = 0; i < rt->nworkers; i++)
        p[2] += braid__load_relaxed(&rt->workers[i]->obs.polls);
}

static void deadlock_check(braid_runtime *rt, struct braid__robs *o)
{
    if (o->deadlock_reported) {
        /* Once per deadlock: the next is reported once the tasks have
         * moved on from this one (someone outside released them). */
        uint64_t p[3];
        progress(rt, p);
        if (memcmp(p, o->deadlock_sig, sizeof p) == 0) /* as reported: sig[0..2] */
            return;
        o->deadlock_reported = false;
        o->deadlock_armed = false;
    }
    uint64_t sig[4];
    if (!deadlock_look(rt, sig)) {
        o->deadlock_armed = false;
        return;
    }
    if (!o->deadlock_armed || memcmp(sig, o->deadlock_sig, sizeof sig) != 0) {
        o->deadlock_armed = true;
        memcpy(o->deadlock_sig, sig, sizeof sig);
        return; /* look again next period */
    }
    o->deadlock_reported = true;
    flockfile(stderr);
    fprintf(stderr, "braid: deadlock: all %" PRIu64 " tasks of runtime %p wait and nothing can "
                    "wake them (no timer, descriptor, blocking job or other thread)\n",
            sig[0] - sig[1], (void *)rt);
    funlockfile(stderr);
    braid_dump(rt, stderr);
    report(rt, BRAID_EVENT_DEADLOCK, 0, "deadlock: every task waits and nothing can wake one");
}

/* ---- SIGQUIT ---------------------------------------------------------------------------------- */

static pthread_mutex_t quit_lock = PTHREAD_MUTEX_INITIALIZER;
static int quit_users;

static void quit_handler(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_fetch_add_explicit(&sigquit_count, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&obs_epoch, 1, memory_order_seq_cst);
    braid__futex_wake(&obs_epoch, INT_MAX);
    errno = saved;
}

static bool quit_acquire(void)
{
    pthread_mutex_lock(&quit_lock);
    struct sigaction old;
    bool ok = quit_users > 0;
    if (!ok && sigaction(SIGQUIT, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        old.sa_handler == SIG_DFL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = quit_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART | SA_ONSTACK;
        ok = sigaction(SIGQUIT, &sa, NULL) == 0;
    }
    if (ok)
        quit_users++;
    pthread_mutex_unlock(&quit_lock);
    return ok;
}

static void quit_release(void)
{
    pthread_mutex_lock(&quit_lock);
    struct sigaction cur;
    if (--quit_users == 0 && sigaction(SIGQUIT, NULL, &cur) == 0 &&
        !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == quit_handler) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGQUIT, &sa, NULL);
    }
    pthread_mutex_unlock(&quit_lock);
}

/* ---- the observer thread ----------------------------------------------------------------------- */

static void *observer_main(void *arg)
{
    braid_runtime *rt = arg;
    struct braid__robs *o = rt->obs;
    pthread_setname_np(pthread_self(), "braid-observe");
    unsigned off = rt->cfg.observe_off;
    uint64_t period = o->watchdog_ns / 4;
    for (;;) {
        uint32_t epoch = atomic_load_explicit(&obs_epoch, memory_order_seq_cst);
        if (atomic_load_explicit(&o->stop, memory_order_acquire))
            break;
        uint32_t q = atomic_load_explicit(&sigquit_count, memory_order_seq_cst);
        if (o->sigquit && q != o->sigquit_seen) {
            o->sigquit_seen = q;
            braid_dump(rt, stderr);
        }
        uint64_t now = braid__now_ns();
        if (!(off & BRAID_OBSERVE_NO_WATCHDOG) && now >= o->next_watch) {
            watchdog_check(rt, o, now);
            o->next_watch = now + period;
        }
        if (!(off & BRAID_OBSERVE_NO_DEADLOCK) && now >= o->next_deadlock) {
            deadlock_check(rt, o);
            o->next_deadlock = now + DEADLOCK_PERIOD_NS;
        }
        uint64_t next = UINT64_MAX;
        if (!(off & BRAID_OBSERVE_NO_WATCHDOG))
            next = o->next_watch;
        if (!(off & BRAID_OBSERVE_NO_DEADLOCK))
            next = BRAID_MIN(next, o->next_deadlock);
        /* Never sleep long: under ThreadSanitizer a signal handler runs
         * only when its thread leaves an intercepted call. */
        next = BRAID_MIN(next, braid__now_ns() + DEADLOCK_PERIOD_NS);
        braid__futex_wait(&obs_epoch, epoch, next);
    }
    return NULL;
}

int braid__obs_start(braid_runtime *rt)
{
    struct braid__robs *o = braid__calloc(1, sizeof *o);
    struct wd_state *wd = braid__calloc(rt->nworkers, sizeof *wd);
    if (!o || !wd) {
        free(o);
        free(wd);
        return -ENOMEM;
    }
    o->wd = wd;
    for (unsigned i = 0; i < rt->nworkers; i++)
        wd[i].since = braid__now_ns();
    unsigned off = rt->cfg.observe_off;
    /* Under Valgrind everything runs tens of times slower: the default
     * threshold would report tasks that merely waited for the CPU. */
    unsigned dflt = braid__under_valgrind ? 1000 : 100;
    o->watchdog_ns = (rt->cfg.watchdog_ms ? rt->cfg.watchdog_ms : dflt) * UINT64_C(1000000);
    rt->obs = o;
    if ((off & BRAID_OBSERVE_OFF) == BRAID_OBSERVE_OFF)
        return 0;
    o->sigquit_seen = atomic_load_explicit(&sigquit_count, memory_order_seq_cst);
    o->sigquit = !(off & BRAID_OBSERVE_NO_SIGQUIT) && quit_acquire();
    if (!(off & BRAID_OBSERVE_NO_WATCHDOG))
        install_sample_handler();
    atomic_fetch_add_explicit(&observer_threads, 1, memory_order_seq_cst);
    int e = braid__pthread_create(&o->thread, NULL, observer_main, rt);
    if (e) {
        atomic_fetch_sub_explicit(&observer_threads, 1, memory_order_seq_cst);
        if (o->sigquit)
            quit_release();
        rt->obs = NULL;
        free(wd);
        free(o);
        return e == ENOMEM ? -ENOMEM : -EAGAIN;
    }
    return 0;
}

void braid__obs_stop(braid_runtime *rt)
{
    struct braid__robs *o = rt->obs;
    if (!o)
        return;
    unsigned off = rt->cfg.observe_off;
    if ((off & BRAID_OBSERVE_OFF) != BRAID_OBSERVE_OFF) {
        atomic_store_explicit(&o->stop, true, memory_order_release);
        atomic_fetch_add_explicit(&obs_epoch, 1, memory_order_seq_cst);
        braid__futex_wake(&obs_epoch, INT_MAX);
        pthread_join(o->thread, NULL);
        atomic_fetch_sub_explicit(&observer_threads, 1, memory_order_seq_cst);
        if (o->sigquit)
            quit_release();
    }
    rt->obs = NULL;
    free(o->wd);
    free(o);
}
