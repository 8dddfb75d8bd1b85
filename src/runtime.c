/*
 * Runtimes: configuration, construction, block_on and shutdown.
 *
 * Shutdown.  braid_runtime_free() sets the shutdown flag and wakes every
 * worker; each worker then cancels all its live tasks once, and from then on
 * drops (never starts) any task it pops, running its arg_drop.  Tasks
 * spawned during shutdown are born cancelled.  The runtime is quiescent when
 * every task ever spawned has finished, which is decided from per-worker
 * counters without a shared hot counter:
 *
 *     S1 = sum of spawned, F = sum of finished, S2 = sum of spawned again
 *
 * (counters are stored with release and read with acquire).  If S1 == S2,
 * no spawn happened between the two passes, so every finish counted in F is
 * of a task counted in S1; with F == S1 they have all finished.  Workers
 * bump a futex word each time they go idle during shutdown, so the waiting
 * thread re-checks exactly when something may have changed.
 */
#include "blocking.h"
#include "det.h"
#include "debug.h"
#include "console.h"
#include "io.h"
#include "observe.h"
#include "panic.h"
#include "sched.h"
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void braid_config_init(braid_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->workers = 0;
    cfg->stack_size = BRAID_DEFAULT_STACK_SIZE;
}

/* Copy a caller's configuration, which may come from an older header. */
static int read_config(const braid_config *in, braid_config *out)
{
    braid_config_init(out);
    if (!in)
        return 0;
    size_t size = in->size ? in->size : sizeof *in;
    if (size < offsetof(braid_config, panic_hook))
        return -EINVAL;
    memcpy(out, in, BRAID_MIN(size, sizeof *out));
    out->size = sizeof *out;
    if (out->workers > 4096 || (out->deterministic && out->workers > 1))
        return -EINVAL;
    return 0;
}

/* The configuration of a new runtime: cfg, or the defaults with BRAID_SEED. */
static int configure(const braid_config *cfg, braid_config *out)
{
    int rc = read_config(cfg, out);
    if (rc == 0 && !cfg)
        rc = braid__det_from_env(out);
    const char *m = getenv("BRAID_MIGRATE");
    if (m && *m)
        out->migrate = strcmp(m, "0") != 0;
    if (out->deterministic)
        out->workers = 1;
    return rc;
}

static void *worker_main(void *p)
{
    braid__worker *w = p;
    char name[16];
    snprintf(name, sizeof name, "braid-w%u", w->index);
    pthread_setname_np(pthread_self(), name);
    braid__fiber_init_thread(&w->sched);
    braid__obs_worker_thread(w);
    braid__panic_thread_enter(w);
    braid__sched_run(w, NULL, NULL);
    braid__panic_thread_leave(w);
    return NULL;
}

static void destroy(braid_runtime *rt)
{
    braid__console_stop_serving(rt);
    braid__obs_stop(rt);
    braid__console_free(rt);
    braid__debug_unregister(rt);
    /* First: a pool thread may still be waking a task of some worker. */
    braid__bpool_free(rt->blocking);
    /* Only braid_runtime_free sets shutdown: a runtime that failed to
     * build has no trace to write. */
    braid__trace_finish(rt, atomic_load_explicit(&rt->shutdown, memory_order_relaxed));
    for (unsigned i = 0; rt->workers && i < rt->nworkers; i++) {
        if (rt->workers[i]) {
            braid__worker_destroy(rt->workers[i]);
            free(rt->workers[i]);
        }
    }
    braid__io_rt_destroy(rt); /* after the workers: their registrations used it */
    free(rt->workers);
    free((void *)rt->idle);
    braid__inject_destroy(&rt->inject);
    braid__rec_pool_destroy(&rt->recs);
    braid__stack_pool_destroy(&rt->stacks);
    braid__faults_release();
    braid__det_free(rt->det);
    free(rt);
}

static void stop_threads(braid_runtime *rt)
{
    /* After a failed braid_runtime_new, the workers past the one that
     * failed were never allocated. */
    atomic_store_explicit(&rt->stop, 1, memory_order_release);
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (rt->workers[i])
            braid__sched_unpark(rt->workers[i]);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        if (rt->workers[i] && rt->workers[i]->has_thread) {
            pthread_join(rt->workers[i]->thread, NULL);
            rt->workers[i]->has_thread = false;
        }
    }
}

int braid_runtime_new(const braid_config *cfg, braid_runtime **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (braid__task_current())
        return -EPERM;
    int saved = errno;
    braid__fiber_detect();
    braid_runtime *rt = braid__aligned_alloc(
        BRAID_CACHELINE, (sizeof *rt + BRAID_CACHELINE - 1) & ~(size_t)(BRAID_CACHELINE - 1));
    if (!rt) {
        errno = saved;
        return -ENOMEM;
    }
    memset(rt, 0, sizeof *rt);
    rt->epfd = rt->evfd = -1;
    int rc = configure(cfg, &rt->cfg);
    if (rc == 0 && rt->cfg.deterministic)
        rc = braid__det_new(&rt->det, rt->cfg.seed);
    if (rc < 0) {
        free(rt);
        errno = saved;
        return rc;
    }
    braid__faults_acquire();
    braid__inject_init(&rt->inject);
    braid__rec_pool_init(&rt->recs, rt);
    rc = braid__stack_pool_init(&rt->stacks, rt->cfg.stack_size);
    if (rc < 0) {
        braid__inject_destroy(&rt->inject);
        braid__rec_pool_destroy(&rt->recs);
        braid__faults_release();
        braid__det_free(rt->det);
        free(rt);
        errno = saved;
        return rc;
    }
    rt->nworkers = rt->cfg.workers ? rt->cfg.workers : braid__usable_cpus();
#if defined(__x86_64__)
    rt->migrate = rt->cfg.migrate && rt->nworkers > 1;
#else
    /* Only x86-64 reads thread-locals through %fs at every use; compilers
     * for aarch64 keep the thread pointer in a register across calls, so
     * braid's own thread-locals would be read from the old thread after a
     * move.  Until those reads are made safe, tasks stay home there. */
    rt->migrate = false;
#endif
    rt->idle_words = (rt->nworkers + 63) / 64;
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers: sizeof *p is meant */
    rt->workers = braid__calloc(rt->nworkers, sizeof *rt->workers);
    rt->idle = braid__calloc(rt->idle_words, sizeof *rt->idle);
    rc = rt->workers && rt->idle ? 0 : -ENOMEM;
    for (unsigned i = 0; i < rt->nworkers && rc == 0; i++) {
        size_t wsize = (sizeof(braid__worker) + BRAID_CACHELINE - 1) & ~(size_t)(BRAID_CACHELINE - 1);
        braid__worker *w = braid__aligned_alloc(BRAID_CACHELINE, wsize);
        if (!w) {
            rc = -ENOMEM;
            break;
        }
        rt->workers[i] = w;
        rc = braid__worker_init(w, rt, i);
    }
    if (rc == 0)
        rc = braid__io_rt_init(rt);
    if (rc == 0)
        rc = braid__trace_init(rt);
    if (rc == 0)
        rc = braid__console_setup(rt);
    /* Before the workers' threads start: the flag is theirs after. */
    for (unsigned i = 0; i < rt->nworkers && rc == 0; i++)
        rt->workers[i]->switch_hooks = rt->workers[i]->trace || rt->workers[i]->timing;
    if (rc == 0)
        rc = braid__bpool_new(&rt->blocking, rt->cfg.blocking_threads,
                              rt->cfg.blocking_keepalive_ms);
    /* With one worker the runtime is driven by block_on's thread. */
    for (unsigned i = 0; i < rt->nworkers && rc == 0 && rt->nworkers > 1; i++) {
        braid__worker *w = rt->workers[i];
        int e = braid__pthread_create(&w->thread, NULL, worker_main, w);
        if (e) {
            rc = e == ENOMEM ? -ENOMEM : -EAGAIN;
            break;
        }
        w->has_thread = true;
    }
    if (rc == 0)
        rc = braid__obs_start(rt);
    if (rc < 0) {
        if (rt->workers)
            stop_threads(rt);
        destroy(rt);
        errno = saved;
        return rc;
    }
    braid__console_serve(rt);
    braid__debug_register(rt);
    *out = rt;
    errno = saved;
    return 0;
}

/* ---- block_on ---------------------------------------------------------------- */

static bool task_done(void *arg)
{
    return braid_is_finished(*(braid_task *)arg);
}

/* A current-thread runtime is driven by one thread only: its tasks are
 * pinned to its worker, so a second thread would resume them with the first
 * thread's cached thread-locals (errno among them).  Called with driving
 * set. */
static bool claim_driver(braid_runtime *rt)
{
    if (!rt->has_driver) {
        rt->driver = pthread_self();
        rt->has_driver = true;
    }
    return pthread_equal(rt->driver, pthread_self());
}

/* Run the single worker of a current-thread runtime on this thread until
 * until(arg); watch is a record whose task ends the run (or NULL). */
static void drive(braid_runtime *rt, bool (*until)(void *), void *arg, braid__rec *watch)
{
    braid__worker *w = rt->workers[0];
    braid__fiber_init_thread(&w->sched);
    braid__panic_thread_enter(w);
    w->watch = watch;
    braid__sched_run(w, until, arg);
    w->watch = NULL;
    braid__panic_thread_leave(w);
}

int braid_block_on_at(const char *file, int line, braid_runtime *rt, braid_fn fn, void *arg,
                      void **result)
{
    if (braid__task_current() || braid__tls_worker)
        return -EPERM;
    if (!rt || !fn)
        return -EINVAL;
    bool current_thread = rt->nworkers == 1;
    if (current_thread) {
        bool expect = false;
        if (!atomic_compare_exchange_strong(&rt->driving, &expect, true))
            return -EBUSY;
        if (!claim_driver(rt)) {
            atomic_store(&rt->driving, false);
            return -EPERM;
        }
    }
    braid_task root;
    int rc = braid__spawn(rt, NULL, &root, NULL, fn, arg, file, line);
    if (rc == 0) {
        if (current_thread)
            drive(rt, task_done, &root, braid__rec_lookup(root));
        rc = braid_join(root, result);
    }
    if (current_thread)
        atomic_store(&rt->driving, false);
    return rc;
}

int braid_block_on(braid_runtime *rt, braid_fn fn, void *arg, void **result)
{
    return braid_block_on_at(NULL, 0, rt, fn, arg, result);
}


/* ---- shutdown ------------------------------------------------------------------ */

uint64_t braid__rt_spawned(braid_runtime *rt)
{
    uint64_t s = atomic_load_explicit(&rt->inject.spawned, memory_order_acquire);
    for (unsigned i = 0; i < rt->nworkers; i++)
        s += atomic_load_explicit(&rt->workers[i]->spawned, memory_order_acquire);
    return s;
}

uint64_t braid__rt_finished(braid_runtime *rt)
{
    /* seq_cst: see count_finished (task.c) for shutdown's drain. */
    uint64_t f = atomic_load_explicit(&rt->ext_finished, memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nworkers; i++)
        f += atomic_load_explicit(&rt->workers[i]->finished, memory_order_acquire);
    return f;
}

static bool quiescent(braid_runtime *rt)
{
    uint64_t s1 = braid__rt_spawned(rt);
    uint64_t f = braid__rt_finished(rt);
    uint64_t s2 = braid__rt_spawned(rt);
    return s1 == s2 && f == s1;
}

struct drain {
    braid_runtime *rt;
    uint64_t deadline;
};

static bool drained(void *arg)
{
    struct drain *d = arg;
    return quiescent(d->rt) || (d->deadline && braid__now_ns() >= d->deadline);
}

int braid_runtime_free(braid_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    if (braid__task_current() || braid__tls_worker)
        return -EPERM;
    if (rt->nworkers == 1) {
        bool expect = false;
        if (!atomic_compare_exchange_strong(&rt->driving, &expect, true))
            return -EBUSY;
        bool mine = claim_driver(rt);
        atomic_store(&rt->driving, false);
        if (!mine)
            return -EPERM;
    }
    uint64_t timeout = rt->cfg.shutdown_timeout_ms;
    struct drain d = { rt, timeout ? braid__now_ns() + timeout * 1000000u : 0 };
    atomic_store_explicit(&rt->shutdown, 1, memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nworkers; i++)
        braid__sched_unpark(rt->workers[i]);
    if (rt->nworkers == 1) {
        rt->park_deadline = d.deadline;
        drive(rt, drained, &d, NULL);
        rt->park_deadline = 0;
    } else {
        for (;;) {
            uint32_t seen = atomic_load_explicit(&rt->quiesce, memory_order_acquire);
            if (drained(&d))
                break;
            braid__futex_wait(&rt->quiesce, seen, d.deadline);
        }
    }
    if (!quiescent(rt))
        return -ETIMEDOUT; /* stuck tasks: leave everything as it is */
    /* Snapshots read the observer, the observer reports to the console. */
    braid__console_stop_serving(rt);
    braid__obs_stop(rt);
    braid__console_free(rt);
    stop_threads(rt);
    destroy(rt);
    return 0;
}

int braid_run_at(const char *file, int line, braid_fn fn, void *arg, void **result)
{
    if (braid__task_current() || braid__tls_worker)
        return -EPERM;
    if (!fn)
        return -EINVAL;
    braid_runtime *rt;
    int rc = braid_runtime_new(NULL, &rt);
    if (rc < 0)
        return rc;
    int fate = braid_block_on_at(file, line, rt, fn, arg, result);
    rc = braid_runtime_free(rt);
    return rc < 0 ? rc : fate;
}

int braid_run(braid_fn fn, void *arg, void **result)
{
    return braid_run_at(NULL, 0, fn, arg, result);
}

bool braid_runtime_tainted(const braid_runtime *rt)
{
    return rt && atomic_load_explicit(&((braid_runtime *)rt)->tainted, memory_order_relaxed);
}

bool braid_runtime_deterministic(const braid_runtime *rt, uint64_t *seed)
{
    if (!rt || !rt->det)
        return false;
    if (seed)
        *seed = rt->det->seed;
    return true;
}

bool braid_runtime_migrates(const braid_runtime *rt)
{
    return rt && rt->migrate;
}

braid_runtime *braid_current_runtime(void)
{
    braid__worker *w = braid__tls_worker;
    return w ? w->rt : NULL;
}
