/*
 * braid: Tokio-style tasks for C.
 *
 * A task is a plain C function, void *fn(void *arg), running on its own
 * stack.  It suspends whenever it calls a blocking braid function (join,
 * sleep, yield, ...) and a multi-threaded work-stealing scheduler runs
 * other tasks meanwhile.  Every task returns a join handle; joining it
 * gives the task's value, or tells that it panicked or was cancelled.  A
 * failing task never takes the program down.
 *
 * Conventions used throughout this header:
 *
 *  - A call that can fail returns 0 (or a non-negative result) on success
 *    and a negative errno value on failure.  No braid function ever sets
 *    errno, and errno is preserved for each task across its suspensions.
 *    braid_strerror() names every code.
 *  - A join returns the task's fate (BRAID_OK, BRAID_PANICKED,
 *    BRAID_CANCELLED), which is >= 0, or a negative error of the join itself.
 *  - Handles (braid_task) are values, like pthread_t.  A stale, consumed or
 *    made-up handle is detected and gets -ESRCH or -EINVAL, never a crash.
 *
 * Each function's comment says when it waits, whether it is a cancellation
 * point, which threads may call it, and which errors it returns, in these
 * words (tests/test_docs.c checks that every function has all four):
 *
 *  - "Suspends a task; blocks a plain thread": the call waits for an event
 *    (a value, a lock, a descriptor, a timer, the blocking pool); a task
 *    suspends and its worker runs other tasks meanwhile, a plain thread
 *    blocks.  "Blocks": the calling thread blocks, and so does the worker
 *    of a task that calls it.  "Never waits": it returns without waiting
 *    for another task, thread, descriptor or timer.  It may still take a
 *    short internal lock, and a task whose cooperative budget is spent
 *    lets the other runnable tasks run once before it returns.
 *  - "Cancellation point": once the calling task has been cancelled (and is
 *    not shielded, see braid_cancel_shield()), the call returns -ECANCELED
 *    at once, every time, without doing anything.  "Not a cancellation
 *    point": a cancelled task's call goes ahead as any other.
 *  - "Any thread": a task or a plain thread (one of the program's own, or
 *    a braid_spawn_blocking() function on the blocking pool) may call it,
 *    also at the same time as other threads call functions on the same
 *    object, unless the comment says otherwise (and except for the calls
 *    that initialize or free an object: nothing else may use it then).
 *    "Task only": the function must be called from inside a task; from a
 *    plain thread it returns -EPERM.  "Plain threads only": from a task it
 *    returns -EPERM.
 *
 * Handles may be joined, cancelled and inspected from any task on any
 * worker, and from plain threads.
 *
 * fork(): a child forked from a process with a running runtime may only
 * call async-signal-safe functions and exec; the runtime's worker threads
 * do not exist in the child.
 */
#ifndef BRAID_H
#define BRAID_H

#include <errno.h> /* the codes braid returns, negated */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h> /* struct sockaddr, socklen_t */
#include <sys/types.h>  /* ssize_t, mode_t */
#include <sys/uio.h>    /* struct iovec */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BRAID_API __attribute__((visibility("default")))
#define BRAID_NORETURN __attribute__((noreturn))
#define BRAID_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BRAID_API
#define BRAID_NORETURN
#define BRAID_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------
 * Version
 * --------------------------------------------------------------------- */

#define BRAID_VERSION_MAJOR 0
#define BRAID_VERSION_MINOR 1
#define BRAID_VERSION_PATCH 0
#define BRAID_VERSION_STRING "0.1.0"

/* The library's version as "MAJOR.MINOR.PATCH"; may differ from the header's
 * BRAID_VERSION_STRING when a program runs against a newer shared library.
 * Never waits; not a cancellation point; any thread. */
BRAID_API const char *braid_version(void);

/* ------------------------------------------------------------------------
 * Types
 * --------------------------------------------------------------------- */

/* A task's body: the shape of pthread_create's start routine. */
typedef void *(*braid_fn)(void *arg);

/* A join handle.  A value like pthread_t; copy it freely.  It is consumed by
 * braid_join() or braid_detach(); afterwards every use gets -ESRCH.  The
 * all-zero handle is never valid (-EINVAL). */
typedef struct braid_task {
    uint64_t bits;
} braid_task;

/* One operation of braid_join_all(): fn(arg) runs, and its return value
 * lands in result. */
typedef struct braid_call {
    braid_fn fn;
    void *arg;
    void *result;
} braid_call;

/* A task's fate, as returned by a join (always >= 0). */
enum {
    BRAID_OK = 0,        /* the task returned normally */
    BRAID_PANICKED = 1,  /* braid_panic(), a failed BRAID_ASSERT, a stack
                            overflow, or (with isolate_faults) a fault */
    BRAID_CANCELLED = 2  /* braid_cancel() was called before it finished */
};

/* The runtime: workers, run queues, timers, stacks.  Opaque. */
typedef struct braid_runtime braid_runtime;

/* What a join reports in full.  Initialise with BRAID_OUTCOME_INIT (or set
 * size to sizeof(braid_outcome)); a size of 0 is read as this version's
 * layout.  Later versions only append fields. */
typedef struct braid_outcome {
    size_t size;
    int status;          /* the fate: BRAID_OK, BRAID_PANICKED, BRAID_CANCELLED */
    void *value;         /* what the task returned (also when cancelled, so
                            the joiner can free it); NULL if it panicked or
                            never ran */
    const char *file;    /* where it panicked (NULL for faults and overflows) */
    int line;
    char message[256];   /* the panic message, "" unless panicked */
} braid_outcome;

#define BRAID_OUTCOME_INIT { sizeof(braid_outcome), 0, NULL, NULL, 0, { 0 } }

/* Called for the panic of a detached task (nobody will join it).  The
 * default prints one line on stderr with the task's id and name. */
typedef void (*braid_panic_hook)(uint64_t task_id, const char *name,
                                 const braid_outcome *outcome, void *user);

/* What the observer reports (braid_observe_hook). */
enum {
    BRAID_EVENT_DEADLOCK = 1, /* every task waits and nothing can wake one */
    BRAID_EVENT_BLOCKED = 2   /* a task ran longer than watchdog_ms without
                                 suspending */
};

/* Called on the runtime's observer thread (a plain thread) after the report
 * was written to stderr: event is a BRAID_EVENT_*, task_id the task
 * concerned (0 for a deadlock).  It may call braid_dump() and
 * braid_metrics_get(), or end the program; it must not free rt. */
typedef void (*braid_observe_hook)(braid_runtime *rt, int event, uint64_t task_id, void *user);

/* Runtime configuration.  Always start from braid_config_init(). */
typedef struct braid_config {
    size_t size;                 /* sizeof(braid_config), set by braid_config_init */
    unsigned workers;            /* worker threads.  0: as many as the CPUs this
                                    process may use (affinity mask and cgroup CPU
                                    limit).  1: the current-thread flavour, where
                                    tasks run only inside braid_block_on(), on
                                    the calling thread */
    size_t stack_size;           /* usable stack of each task in bytes (rounded up
                                    to a power of two, at least 16 KiB); 0 means
                                    256 KiB.  A 64 KiB guard region sits below
                                    every stack.  Only touched pages cost memory */
    bool isolate_faults;         /* convert SIGSEGV, SIGBUS, SIGFPE and SIGILL
                                    raised by a task's own code into a panic of
                                    that task, and mark the runtime tainted.
                                    Stack overflows are always isolated, except
                                    in a program that links libbraid.a built
                                    with -flto: there braid's code cannot be
                                    told from the program's, and no fault is
                                    converted */
    uint64_t shutdown_timeout_ms;/* how long braid_runtime_free() (and the end of
                                    braid_run()) waits for cancelled tasks to
                                    return; 0 waits forever */
    braid_panic_hook panic_hook; /* NULL: the default reporter */
    void *panic_hook_arg;
    unsigned blocking_threads;   /* most threads of the blocking pool
                                    (braid_spawn_blocking, files, name
                                    resolution); 0 means 512.  They are
                                    created on demand */
    uint64_t blocking_keepalive_ms; /* an idle pool thread exits after this
                                    long; 0 means 10000 (10 s) */
    bool deterministic;          /* deterministic mode: replay a schedule
                                    exactly from seed (see "Deterministic
                                    mode" below); workers must be 0 or 1 */
    uint64_t seed;               /* the deterministic mode's seed */
    const char *trace_path;      /* record an execution trace and write it to
                                    this file (Chrome Trace Event JSON, for
                                    ui.perfetto.dev) when the runtime is freed.
                                    NULL: the BRAID_TRACE environment variable
                                    names the file, if set (a second runtime
                                    of the process writes NAME.1.json, ...).
                                    Copied */
    size_t trace_max_bytes;      /* most memory the trace's events may take;
                                    0 means 16 MiB (about 500,000 events).
                                    Events past it are dropped, and counted in
                                    the file (otherData.dropped_events) */
    /* Seeing inside (see "Seeing inside" below); all on by default. */
    unsigned observe_off;        /* BRAID_OBSERVE_NO_* bits: what to turn off */
    unsigned watchdog_ms;        /* report a task that runs this long without
                                    suspending; 0 means 100 ms */
    braid_observe_hook observe_hook; /* NULL: report on stderr only */
    void *observe_hook_arg;
    const char *console_path;    /* serve the live console (tools/braid-console)
                                    on a Unix socket at this path, mode 0600;
                                    a stale socket file is replaced.  NULL: the
                                    BRAID_CONSOLE environment variable names
                                    it, if set (then only the first runtime of
                                    the process that can take the path serves
                                    it).  Copied when the runtime is created */
    bool migrate;                /* let started tasks move between workers:
                                    a task woken by another worker of the
                                    runtime (a descriptor it polled, a
                                    channel, a mutex, a join) continues
                                    there, unless it waits with a deadline
                                    or inside braid_join_all().  Every
                                    descriptor then shares one epoll, which
                                    whichever worker is idle polls, and an
                                    idle worker takes over tasks that events
                                    woke on a worker that the kernel
                                    preempts or a long task holds.
                                    The price: a task must not keep the
                                    address of a thread-local variable
                                    across a braid call that can suspend.
                                    That includes errno: glibc lets the
                                    compiler reuse errno's address, so
                                    `errno = 0; braid_read(..); if (errno)`
                                    may touch another thread's.  Read errno
                                    right after the libc call that set it.
                                    braid carries the value of errno across
                                    its own suspensions.  Off by
                                    default; BRAID_MIGRATE=1 (or 0) in the
                                    environment overrides it for every
                                    runtime.  No effect with one worker,
                                    and for now only on x86-64 (elsewhere
                                    tasks stay home) */
} braid_config;

/* braid_config.observe_off bits. */
#define BRAID_OBSERVE_NO_SIGQUIT  1u /* leave SIGQUIT alone (no dump on it) */
#define BRAID_OBSERVE_NO_WATCHDOG 2u /* no blocked-worker reports */
#define BRAID_OBSERVE_NO_DEADLOCK 4u /* no deadlock reports */
#define BRAID_OBSERVE_OFF         7u /* none of them: no observer thread */

/* Options for braid_spawn_ex().  Initialise with BRAID_SPAWN_OPTS_INIT. */
typedef struct braid_spawn_opts {
    size_t size;                 /* sizeof(braid_spawn_opts) */
    const char *name;            /* copied (31 bytes kept); NULL: unnamed */
    size_t stack_size;           /* 0: the runtime's default */
    void (*arg_drop)(void *arg); /* called with arg if the task is cancelled
                                    before it ever ran (or its stack could not
                                    be allocated), so arg is never leaked */
} braid_spawn_opts;

#define BRAID_SPAWN_OPTS_INIT { sizeof(braid_spawn_opts), NULL, 0, NULL }

/* A deferred cleanup, pushed and popped like pthread_cleanup_push/pop.  The
 * storage belongs to the caller (usually a local variable); it must stay
 * valid until popped. */
typedef struct braid_defer {
    void (*fn)(void *arg);
    void *arg;
    struct braid_defer *next;
} braid_defer;

/* A key for task-local storage. */
typedef struct braid_local_key {
    uint32_t id;
} braid_local_key;

/* ------------------------------------------------------------------------
 * Runtime
 * --------------------------------------------------------------------- */

/* Fill cfg with the defaults: workers = 0 (all usable CPUs), stack_size =
 * 256 KiB, isolate_faults = false, shutdown_timeout_ms = 0 (forever),
 * blocking_threads = 0 (512), blocking_keepalive_ms = 0 (10 s),
 * deterministic = false, seed = 0, trace_path = NULL (BRAID_TRACE decides),
 * trace_max_bytes = 0 (16 MiB), observe_off = 0 (all on), watchdog_ms = 0
 * (100 ms), observe_hook = NULL, console_path = NULL (BRAID_CONSOLE
 * decides).  (BRAID_SEED is not read here: it only
 * applies to runtimes created with a NULL configuration.)  Never waits; not a
 * cancellation point; any thread. */
BRAID_API void braid_config_init(braid_config *cfg);

/* The whole program in one call, like #[tokio::main]: build a runtime with
 * the default configuration, run fn(arg) as the root task on a worker, and
 * when it returns cancel every task still alive, wait for them, and free
 * everything.  Returns the root's fate (and *result, if result is not NULL,
 * receives its value), or a negative error: -EPERM when called from inside a
 * task, -EINVAL (fn NULL, or BRAID_SEED is not a number), -ENOMEM, -EAGAIN
 * (threads could not be created), -ETIMEDOUT (the shutdown timeout
 * expired; see braid_runtime_free()).  Blocks the calling thread until
 * every task has ended.  Not a cancellation point.  Plain threads only. */
BRAID_API int braid_run(braid_fn fn, void *arg, void **result);

/* Create a runtime.  cfg may be NULL for the defaults.  The worker threads
 * start at once (except with workers = 1).  Errors: -EINVAL (bad cfg),
 * -ENOMEM, -EAGAIN (thread creation failed), -EMFILE/-ENFILE (its epoll or
 * eventfd descriptors could not be created), and for cfg->console_path the
 * socket's errors: -EADDRINUSE (a live program serves that path), -EEXIST
 * (a file that is not a socket), -ENAMETOOLONG, -EACCES, ...; -EPERM from
 * a task.  Never waits (the workers start on their own).  Not a
 * cancellation point.  Plain threads only. */
BRAID_API int braid_runtime_new(const braid_config *cfg, braid_runtime **out);

/* Run fn(arg) as a root task and block the calling plain thread until it
 * finishes; returns its fate, and *result (if not NULL) its value.  With
 * workers = 1 the calling thread is the runtime's only worker and every task
 * runs on it, only while a block_on is in progress; such a runtime is bound
 * to the first thread that drives it (block_on or free), because its tasks
 * keep their thread.  Errors: -EPERM from inside a task or, for a
 * current-thread runtime, from another thread than its own; -EINVAL,
 * -ENOMEM, -EBUSY (a current-thread runtime already being driven).  Blocks
 * the calling thread until fn returns.  Not a cancellation point.  Plain
 * threads only (and, for a current-thread runtime, its own thread). */
BRAID_API int braid_block_on(braid_runtime *rt, braid_fn fn, void *arg, void **result);

/* The root task's spawn site (see "Spawn sites" below): braid_run and
 * braid_block_on are also macros that pass __FILE__ and __LINE__ to these
 * _at entry points, so that dumps show where the root was started.
 * Otherwise braid_run_at and braid_block_on_at are exactly braid_run() and
 * braid_block_on(), with the same errors (-EPERM, -EINVAL, -ENOMEM, ...).
 * Blocks the calling thread until the root task ends.  Not a
 * cancellation point.  Plain threads only. */
BRAID_API int braid_run_at(const char *file, int line, braid_fn fn, void *arg, void **result);
BRAID_API int braid_block_on_at(const char *file, int line, braid_runtime *rt, braid_fn fn,
                                void *arg, void **result);

#ifndef BRAID_NO_SITE_MACROS
#define braid_run(fn, arg, result) braid_run_at(__FILE__, __LINE__, fn, arg, result)
#define braid_block_on(rt, fn, arg, result)                                                    \
    braid_block_on_at(__FILE__, __LINE__, rt, fn, arg, result)
#endif

/* Spawn a task on rt from any thread (a plain thread's spawns go through the
 * runtime's injection queue).  out == NULL detaches the task at once.
 * Errors: -EINVAL (rt or fn NULL), -ENOMEM.  Never waits: the task is
 * queued, not run.  Not a cancellation point.  Any thread. */
BRAID_API int braid_spawn_on(braid_runtime *rt, braid_task *out, braid_fn fn, void *arg);

/* braid_spawn_on() with options (see braid_spawn_ex()); opts may be NULL.
 * Never waits; not a cancellation point; any thread. */
BRAID_API int braid_spawn_on_ex(braid_runtime *rt, braid_task *out, const braid_spawn_opts *opts,
                                braid_fn fn, void *arg);

/* Shut rt down: cancel every task still alive, wait for them to return
 * (running the arg_drop of tasks that never started), stop the workers and
 * free all memory.  Returns 0, -EINVAL (rt NULL), -EPERM from inside a task
 * (or from another thread than a current-thread runtime's own), -EBUSY
 * while a block_on on a current-thread rt is in progress, or -ETIMEDOUT if
 * shutdown_timeout_ms expired first: then rt is left as it is, its workers still running the tasks that
 * did not end (freeing memory under them would crash), and
 * braid_runtime_free(rt) may be called again later.  Handles of rt's tasks
 * that were neither joined nor detached are invalid once rt is freed.
 * Blocks the calling thread until then.  Not a cancellation point.  Plain
 * threads only. */
BRAID_API int braid_runtime_free(braid_runtime *rt);

/* Whether a fault was converted into a panic in rt (isolate_faults): the
 * program survived it, but memory the faulting task shared may be corrupt.
 * Never waits; not a cancellation point; any thread. */
BRAID_API bool braid_runtime_tainted(const braid_runtime *rt);

/* Deterministic mode.
 *
 * A runtime created with braid_config.deterministic set (or with a NULL
 * configuration, braid_run() included, while the environment variable
 * BRAID_SEED holds a number, decimal or 0x-hex) runs its tasks on one
 * thread, as workers = 1 does, and draws every scheduling choice from a
 * PRNG seeded with braid_config.seed: which runnable task runs next (tasks
 * woken together, by the same timer tick included, run in a random order;
 * tasks that called braid_yield() still wait until nothing else is
 * runnable), and which ready case an unbiased braid_select() takes.  Time
 * is virtual: inside the runtime, braid_now_ns(), braid_deadline_ms(),
 * sleeps and every deadline read a clock that starts at 1 s, stands still
 * while tasks run, and jumps to the next timer as soon as no task is
 * runnable (a 10-minute sleep takes no real time; as Tokio's paused
 * clock).  So the same seed gives the same interleaving and the same
 * output, bit for bit, as long as the tasks only interact with each other.
 * What stays outside the seed's control: I/O readiness, wakes, spawns and
 * cancellations coming from plain threads, and what blocking-pool jobs do.
 * A blocking job (braid_spawn_blocking, the file helpers, braid_resolve)
 * runs on a pool thread while the runtime's thread waits for it: no task
 * runs and no virtual time passes meanwhile, and its deadline and
 * cancellation are only checked before it starts.  Choosing among n
 * runnable tasks costs O(n): the mode is for tests, not for speed.
 * braid_runtime_new() returns -EINVAL if deterministic is set with workers
 * greater than 1, or if BRAID_SEED is not a number. */

/* Whether rt runs in deterministic mode; if so and seed is not NULL, *seed
 * is its seed (print it when a test fails, to replay with BRAID_SEED).  Never
 * waits; not a cancellation point; any thread. */
BRAID_API bool braid_runtime_deterministic(const braid_runtime *rt, uint64_t *seed);

/* Whether rt's started tasks migrate: braid_config.migrate (or
 * BRAID_MIGRATE) took effect, which needs two workers or more and, for
 * now, x86-64.  False for NULL.  Any thread.  Never waits; not a cancellation
 * point. */
BRAID_API bool braid_runtime_migrates(const braid_runtime *rt);

/* The runtime of the calling task, or NULL on a plain thread.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API braid_runtime *braid_current_runtime(void);

/* ------------------------------------------------------------------------
 * Tasks
 * --------------------------------------------------------------------- */

/* Spawn fn(arg) as a new task on the caller's runtime.  The new task does not
 * run inline: the caller keeps running until it suspends.  *out receives the
 * join handle; out == NULL detaches the task at once.  A task that has not
 * started holds no stack.  Task only.  Errors: -EPERM, -EINVAL (fn NULL),
 * -ENOMEM (no memory or address space for the task record).  Never waits.
 * Not a cancellation point. */
BRAID_API int braid_spawn(braid_task *out, braid_fn fn, void *arg);

/* braid_spawn() with options: a name, a stack size, an arg_drop.  opts may be
 * NULL.  Errors as braid_spawn(), plus -EINVAL for a stack size over 1 GiB.
 * Never waits; not a cancellation point; task only. */
BRAID_API int braid_spawn_ex(braid_task *out, const braid_spawn_opts *opts, braid_fn fn, void *arg);

/* Spawn sites.  Every task remembers the file and line it was spawned from
 * and its parent (the id of the spawning task, 0 for a plain thread), for
 * braid_dump() and the observer's reports.  braid_spawn, braid_spawn_ex,
 * braid_spawn_on and braid_spawn_on_ex are also macros that pass __FILE__
 * and __LINE__ to the _at entry points below; the functions themselves
 * remain (their addresses, a parenthesised call such as
 * (braid_spawn)(&t, fn, arg), and the shared library work as before, with
 * no site recorded).  Define BRAID_NO_SITE_MACROS before including braid.h
 * to do without the macros.  file must be a string that outlives the task
 * (a literal); line is kept as given.  The root task of braid_run and
 * braid_block_on, blocking-pool jobs and JoinSet members get their sites
 * the same way (their _at entry points are declared beside them).
 * Otherwise braid_spawn_at, braid_spawn_ex_at, braid_spawn_on_at and
 * braid_spawn_on_ex_at are exactly the functions they stand for, with the
 * same errors (-EPERM, -EINVAL, -ENOMEM: see braid_spawn and
 * braid_spawn_on).  Each never waits and is not a cancellation point;
 * braid_spawn_at and braid_spawn_ex_at are task only, braid_spawn_on_at
 * and braid_spawn_on_ex_at may be called from any thread. */
BRAID_API int braid_spawn_at(const char *file, int line, braid_task *out, braid_fn fn, void *arg);
BRAID_API int braid_spawn_ex_at(const char *file, int line, braid_task *out,
                                const braid_spawn_opts *opts, braid_fn fn, void *arg);
BRAID_API int braid_spawn_on_at(const char *file, int line, braid_runtime *rt, braid_task *out,
                                braid_fn fn, void *arg);
BRAID_API int braid_spawn_on_ex_at(const char *file, int line, braid_runtime *rt,
                                   braid_task *out, const braid_spawn_opts *opts, braid_fn fn,
                                   void *arg);

#ifndef BRAID_NO_SITE_MACROS
#define braid_spawn(out, fn, arg) braid_spawn_at(__FILE__, __LINE__, out, fn, arg)
#define braid_spawn_ex(out, opts, fn, arg) braid_spawn_ex_at(__FILE__, __LINE__, out, opts, fn, arg)
#define braid_spawn_on(rt, out, fn, arg) braid_spawn_on_at(__FILE__, __LINE__, rt, out, fn, arg)
#define braid_spawn_on_ex(rt, out, opts, fn, arg)                                              \
    braid_spawn_on_ex_at(__FILE__, __LINE__, rt, out, opts, fn, arg)
#endif

/* Wait for t to finish and consume its handle.  Returns the task's fate
 * (>= 0); *result (if not NULL) receives what the task returned (also when it
 * was cancelled, so the value can be freed; NULL when it panicked or never
 * ran).  Joining a task that has not started yet runs it right away on the
 * caller's worker.  Suspends the calling task; blocks a plain thread.
 * Cancellation point.  Any thread.  Errors (the handle stays valid for the
 * first three): -ECANCELED (the caller was cancelled), -EDEADLK (t is the caller itself),
 * -EBUSY (another join of t is in progress), -ESRCH (t is stale, already
 * joined or detached), -EINVAL (t was never a handle). */
BRAID_API int braid_join(braid_task t, void **result);

/* braid_join() that also reports the panic message and location.  out must
 * not be NULL (-EINVAL); see braid_outcome.  Otherwise the same return
 * values as braid_join().  Waits as braid_join() does.  Cancellation
 * point.  Any thread. */
BRAID_API int braid_join_ex(braid_task t, braid_outcome *out);

/* braid_join() and braid_join_ex() with a deadline (see "Deadlines"):
 * -ETIMEDOUT if t has not finished by then; the handle stays valid.  Waits
 * as braid_join() does, until the deadline at most.  Cancellation point.
 * Any thread. */
BRAID_API int braid_join_until(braid_task t, void **result, uint64_t deadline_ns);
BRAID_API int braid_join_ex_until(braid_task t, braid_outcome *out, uint64_t deadline_ns);

/* Give up the handle: the task runs on, and its record is freed when it
 * ends.  A detached task's panic goes to the panic hook.  Errors: -ESRCH,
 * -EINVAL, -EBUSY (a join is in progress).  Never waits; not a cancellation
 * point; any thread. */
BRAID_API int braid_detach(braid_task t);

/* Request cancellation of t.  A task that has not started never runs (its
 * arg_drop runs instead, on the calling thread); a running task sees
 * -ECANCELED from every cancellation point from now on, so it cleans up and
 * returns.  Its fate becomes BRAID_CANCELLED (unless it panics).  Cancelling
 * a finished task changes nothing.  Does not wait.  Tasks spawned by a
 * cancelled task keep running.  Errors: -ESRCH, -EINVAL.  Not a
 * cancellation point.  Any thread. */
BRAID_API int braid_cancel(braid_task t);

/* Whether t has finished (false for invalid or consumed handles).  Never
 * waits; not a cancellation point; any thread. */
BRAID_API bool braid_is_finished(braid_task t);

/* The id of the task t refers to (also after it was consumed); 0 for the
 * null handle.  Ids are unique within the process and never 0.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API uint64_t braid_task_id(braid_task t);

/* The calling task's id, 0 on a plain thread.  Inside braid_join_all()
 * calls it is the id of the task that called braid_join_all().  Never waits;
 * not a cancellation point; any thread. */
BRAID_API uint64_t braid_current_id(void);

/* The index (0..workers-1) of the worker running the caller; -EPERM on a
 * plain thread.  A task that has started stays on its worker, unless the
 * runtime lets tasks migrate (braid_config.migrate).  Never waits; not a
 * cancellation point; task only. */
BRAID_API int braid_worker_index(void);

/* Tokio's join!: run the n calls concurrently inside the calling task and
 * return when all have returned.  They interleave on the caller's worker,
 * never in parallel; each has its own stack and its own defers.  Results land
 * in calls[i].result.  If one call panics, the others are cancelled, and once
 * they have returned the panic is raised again in the caller with the
 * original message and location.  Cancelling the caller cancels the calls.
 * Suspends the calling task until every call has returned.  Task only.
 * Cancellation point.  Returns 0 (every call ran and returned),
 * -ECANCELED (the caller was cancelled, or shutdown cancelled a call before
 * it ran; calls that returned still have their result), -EPERM, -EINVAL,
 * -ENOMEM (stacks for the calls could not be allocated; nothing ran). */
BRAID_API int braid_join_all(braid_call *calls, size_t n);

/* Let other tasks run: the caller goes behind all runnable work.  Workers
 * also check timers while tasks yield, so a yield loop cannot starve a
 * sleeping task.  Suspends the calling task until the worker has run the
 * tasks that were runnable.  Task only.  Cancellation point.  Returns 0,
 * -ECANCELED, -EPERM. */
BRAID_API int braid_yield(void);

/* Sleep for ms milliseconds (at least).  Suspends the calling task: the
 * worker runs other tasks meanwhile; a sleeping task uses no CPU.  Task only.
 * Cancellation point.  Returns 0, -ECANCELED, -EPERM. */
BRAID_API int braid_sleep_ms(uint64_t ms);

/* Suspend until braid_now_ns() >= deadline_ns (a deadline already past
 * still yields).  Suspends the calling task, as braid_sleep_ms().  Task
 * only.  Cancellation point.  Returns 0, -ECANCELED, -EPERM. */
BRAID_API int braid_sleep_until(uint64_t deadline_ns);

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC).  Any thread.  Inside a
 * deterministic runtime (see "Deterministic mode") its virtual time.  Never
 * waits; not a cancellation point. */
BRAID_API uint64_t braid_now_ns(void);

/* Panic: end the calling task with fate BRAID_PANICKED.  Its pushed defers
 * run first (innermost first, with cancellation shielded); a panic inside a
 * defer keeps the first message and the remaining defers still run.  The
 * message (printf format, up to 255 bytes kept) and location reach the
 * joiner through braid_join_ex().  Every other task goes on.  In the
 * function of braid_spawn_blocking() it ends that function instead (see
 * there); on any other plain thread it prints the message and aborts the
 * process.  Use the braid_panic() macro, which adds __FILE__ and __LINE__.
 * Does not wait (the defers it runs may).  Not a cancellation point.  Any
 * thread. */
BRAID_API BRAID_NORETURN BRAID_PRINTF(3, 4)
void braid_panic_at(const char *file, int line, const char *fmt, ...);

#define braid_panic(...) braid_panic_at(__FILE__, __LINE__, __VA_ARGS__)

/* Panic with "assertion failed: <expr>" unless expr holds. */
#define BRAID_ASSERT(expr)                                                   \
    ((expr) ? (void)0 : braid_panic_at(__FILE__, __LINE__, "assertion failed: %s", #expr))

/* Push a cleanup onto the calling task's defer stack: fn(arg) runs if the
 * task panics (innermost first), or when popped with run = true.  d is
 * caller-owned storage.  Task only.  Returns 0, -EPERM, -EINVAL (d NULL).
 * Never waits; not a cancellation point. */
BRAID_API int braid_defer_push(braid_defer *d, void (*fn)(void *), void *arg);

/* Pop d, which must be the innermost pushed defer, and run it if run is true.
 * Task only.  Returns 0, -EPERM, -EINVAL (d is not the innermost defer).
 * Never waits (fn, when run, may); not a cancellation point. */
BRAID_API int braid_defer_pop(braid_defer *d, bool run);

/* Shield the calling task from cancellation (on = true) or end the shield
 * (on = false); returns the previous state.  While shielded, cancellation
 * points behave as if no cancellation had been requested; a request made
 * meanwhile takes effect at the first cancellation point after the shield
 * ends.  Returns false on a plain thread.  Never waits; not a cancellation
 * point; any thread. */
BRAID_API bool braid_cancel_shield(bool on);

/* Whether cancellation of the calling task has been requested (regardless
 * of the shield).  False on a plain thread.  Never waits; not a cancellation
 * point; any thread. */
BRAID_API bool braid_cancelled(void);

/* ------------------------------------------------------------------------
 * Deadlines
 *
 * Every call that can wait has a variant ending in _until that takes an
 * absolute deadline on braid_now_ns()'s clock.  If the deadline passes
 * before the call could complete, it returns -ETIMEDOUT having done
 * nothing: no value sent or received, no lock or permit taken.  A deadline
 * already past still lets the call complete if it can do so without
 * waiting.  The plain variants wait forever.  Waiting calls are
 * cancellation points; they too leave nothing half-done: a call that
 * completed just as its task was cancelled returns success, and the next
 * cancellation point reports the cancellation.
 * --------------------------------------------------------------------- */

#define BRAID_FOREVER UINT64_MAX

/* braid_now_ns() + ms milliseconds, saturating at BRAID_FOREVER.  Never
 * waits; not a cancellation point; any thread. */
BRAID_API uint64_t braid_deadline_ms(uint64_t ms);

/* ------------------------------------------------------------------------
 * Channels: typed by size, values copied in and out (libdill's chmake)
 *
 * Multi-producer, multi-consumer, FIFO.  capacity 0 makes a rendezvous
 * channel (a send waits for a receiver to take the value, as in Go);
 * BRAID_CHAN_UNBOUNDED never makes a sender wait.
 *
 * Lifetime follows Tokio: the creator holds one sender and one receiver
 * reference; braid_chan_sender_dup() and braid_chan_receiver_dup() add
 * more.  Dropping the last sender closes the channel; dropping the last
 * receiver makes every send fail and discards what is buffered; the
 * channel's memory goes when the last reference of both kinds is dropped.
 * All calls work from tasks (which suspend) and plain threads (which
 * block), on any worker or runtime.
 * --------------------------------------------------------------------- */

typedef struct braid_chan braid_chan;

#define BRAID_CHAN_UNBOUNDED SIZE_MAX

/* Create a channel of items of item_size bytes (1 .. 65536).  Returns 0,
 * -EINVAL, -ENOMEM.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_chan_new(braid_chan **out, size_t item_size, size_t capacity);

/* Send a copy of *item.  Waits while the channel is full (or, at capacity
 * 0, until a receiver takes it).  A waiting receiver gets the value
 * directly, and if it is a task of the same worker it runs next.
 * Cancellation point.  Returns 0, -EPIPE (closed, or no receiver left),
 * -ECANCELED, -ETIMEDOUT (the _until form), -ENOMEM (the buffer, which
 * grows as items arrive, up to the capacity, could not grow), -EINVAL.  Any
 * thread. */
BRAID_API int braid_chan_send(braid_chan *ch, const void *item);
BRAID_API int braid_chan_send_until(braid_chan *ch, const void *item, uint64_t deadline_ns);

/* Send without waiting: -EAGAIN where braid_chan_send() would wait; its
 * other results are braid_chan_send()'s.  Never waits.  Cancellation point.
 * Any thread. */
BRAID_API int braid_chan_try_send(braid_chan *ch, const void *item);

/* Receive the oldest item into *item.  Waits while the channel is empty.
 * After the channel is closed, what is buffered is still delivered, then
 * -EPIPE.  Cancellation point.  Returns 0, -EPIPE, -ECANCELED, -ETIMEDOUT
 * (the _until form), -EINVAL.  Any thread. */
BRAID_API int braid_chan_recv(braid_chan *ch, void *item);
BRAID_API int braid_chan_recv_until(braid_chan *ch, void *item, uint64_t deadline_ns);

/* Receive without waiting: -EAGAIN where braid_chan_recv() would wait; its
 * other results are braid_chan_recv()'s.  Never waits.  Cancellation point.
 * Any thread. */
BRAID_API int braid_chan_try_recv(braid_chan *ch, void *item);

/* Close for sending: waiting and later senders get -EPIPE; receivers get
 * what is buffered, then -EPIPE.  Closing twice is harmless.  Returns 0 or
 * -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_chan_close(braid_chan *ch);

/* Reference counting, as described above: braid_chan_sender_dup() and
 * braid_chan_receiver_dup() add a reference of their kind,
 * braid_chan_sender_drop() and braid_chan_receiver_drop() give one up (the
 * last one of both kinds frees the channel: do not use ch after it).  Each
 * never waits, is not a cancellation point, and may be called from any
 * thread.  Each returns 0 or -EINVAL (also when dropping a kind of
 * reference that has none left). */
BRAID_API int braid_chan_sender_dup(braid_chan *ch);
BRAID_API int braid_chan_sender_drop(braid_chan *ch);
BRAID_API int braid_chan_receiver_dup(braid_chan *ch);
BRAID_API int braid_chan_receiver_drop(braid_chan *ch);

/* Items buffered now (a snapshot).  Never waits; not a cancellation point;
 * any thread. */
BRAID_API size_t braid_chan_len(braid_chan *ch);

/* ------------------------------------------------------------------------
 * Oneshot: one value, once (Tokio's sync::oneshot)
 *
 * The creator holds the sending and the receiving end.  Sending consumes
 * the sending end; so does braid_oneshot_sender_drop(), after which the
 * receiver gets -EPIPE.  The memory goes when both ends are done.
 * --------------------------------------------------------------------- */

typedef struct braid_oneshot braid_oneshot;

/* Create a oneshot for one value of item_size bytes (1 .. 65536); the
 * caller holds both ends.  Any thread.  Returns 0, -EINVAL, -ENOMEM.  Never
 * waits; not a cancellation point. */
BRAID_API int braid_oneshot_new(braid_oneshot **out, size_t item_size);

/* Send a copy of *item and consume the sending end.  Never waits; not a
 * cancellation point; any thread, one at a time (the sending end is one).
 * Returns 0, -EPIPE (the receiver is gone, or it was already sent),
 * -EINVAL. */
BRAID_API int braid_oneshot_send(braid_oneshot *o, const void *item);

/* Wait for the value (braid_oneshot_try_recv(): without waiting).
 * Suspends a task, blocks a plain thread (the try form never waits).
 * Cancellation point, the try form too.  Any thread, one at a time (the
 * receiving end is one).  Returns 0, -EPIPE (the sender went without
 * sending), -ECANCELED, -ETIMEDOUT, -EAGAIN (try form: nothing yet),
 * -EINVAL.  A return of 0 or -EPIPE consumes the receiving end. */
BRAID_API int braid_oneshot_recv(braid_oneshot *o, void *item);
BRAID_API int braid_oneshot_recv_until(braid_oneshot *o, void *item, uint64_t deadline_ns);
BRAID_API int braid_oneshot_try_recv(braid_oneshot *o, void *item);

/* Give up an end without using it: braid_oneshot_sender_drop() makes the
 * receiver get -EPIPE; braid_oneshot_receiver_drop() makes a send fail
 * with -EPIPE.  Never waits; not a cancellation point; any thread.
 * Returns 0, or -EINVAL (a bad oneshot, or an end already given up). */
BRAID_API int braid_oneshot_sender_drop(braid_oneshot *o);
BRAID_API int braid_oneshot_receiver_drop(braid_oneshot *o);

/* ------------------------------------------------------------------------
 * Broadcast: every receiver sees every value (Tokio's sync::broadcast)
 *
 * A ring of capacity values; sending never waits: it overwrites the oldest
 * value, and a receiver that had not read it yet learns how many it missed
 * (-EOVERFLOW, *missed set) and goes on from the oldest value kept.
 * --------------------------------------------------------------------- */

typedef struct braid_bcast braid_bcast;
typedef struct braid_bcast_rx braid_bcast_rx;

/* Create a broadcast channel of capacity values (1 .. 2^20) of item_size
 * bytes (1 .. 65536).  Any thread.  Returns 0, -EINVAL, -ENOMEM.  Never
 * waits; not a cancellation point. */
BRAID_API int braid_bcast_new(braid_bcast **out, size_t item_size, size_t capacity);

/* Send a copy of *item to every receiver.  Never waits; any thread; not a
 * cancellation point.  Returns the number of receivers it reached (>= 0; 0
 * is not an error), or -EPIPE (closed), -EINVAL. */
BRAID_API int braid_bcast_send(braid_bcast *b, const void *item);

/* A receiver that sees the values sent from now on; free it with
 * braid_bcast_rx_free().  Any thread.  Returns 0, -EINVAL, -ENOMEM.  Never
 * waits; not a cancellation point. */
BRAID_API int braid_bcast_subscribe(braid_bcast *b, braid_bcast_rx **out);

/* Receive the next value (braid_bcast_try_recv(): without waiting).
 * Suspends a task, blocks a plain thread (the try form never waits).
 * Cancellation point, the try form too.  Any thread.  Returns 0,
 * -EOVERFLOW (lagged: *missed, if not NULL, says how many values were
 * lost; the next call continues), -EPIPE (closed and all seen),
 * -ECANCELED, -ETIMEDOUT, -EAGAIN (try form), -EINVAL. */
BRAID_API int braid_bcast_recv(braid_bcast_rx *rx, void *item, uint64_t *missed);
BRAID_API int braid_bcast_recv_until(braid_bcast_rx *rx, void *item, uint64_t *missed,
                                     uint64_t deadline_ns);
BRAID_API int braid_bcast_try_recv(braid_bcast_rx *rx, void *item, uint64_t *missed);

/* Free a receiver (no call may be using it); sends no longer count it.
 * Returns 0 or -EINVAL.  Never waits; not a cancellation point; any
 * thread. */
BRAID_API int braid_bcast_rx_free(braid_bcast_rx *rx);

/* No more sends; receivers get what they have not seen, then -EPIPE.
 * Never waits; not a cancellation point; any thread.  Returns 0 or
 * -EINVAL. */
BRAID_API int braid_bcast_close(braid_bcast *b);

/* Free the channel; every receiver must have been freed (else -EBUSY).
 * Returns 0, -EBUSY, -EINVAL.  Never waits; not a cancellation point; any
 * thread, once no other call uses b. */
BRAID_API int braid_bcast_free(braid_bcast *b);

/* ------------------------------------------------------------------------
 * Watch: the latest value, with a version (Tokio's sync::watch)
 * --------------------------------------------------------------------- */

typedef struct braid_watch braid_watch;

/* Create a watch holding a copy of *initial (item_size 1 .. 65536 bytes)
 * as version 0.  Any thread.  Returns 0, -EINVAL, -ENOMEM.  Never waits; not
 * a cancellation point. */
BRAID_API int braid_watch_new(braid_watch **out, size_t item_size, const void *initial);
/* Store a new value (version + 1) and wake whoever waits for a change.
 * Never waits; not a cancellation point; any thread.  Returns 0, -EPIPE
 * (closed), -EINVAL. */
BRAID_API int braid_watch_send(braid_watch *w, const void *item);
/* Copy the latest value and its version (either may be NULL).  Returns 0
 * or -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_watch_get(braid_watch *w, void *item, uint64_t *version);
/* Wait until the version differs from *version, then update *version and
 * copy the value (item may be NULL).  Suspends a task, blocks a plain
 * thread.  Cancellation point.  Returns 0, -EPIPE (closed, and nothing
 * newer), -ECANCELED, -ETIMEDOUT, -EINVAL.  Any thread. */
BRAID_API int braid_watch_changed(braid_watch *w, uint64_t *version, void *item);
BRAID_API int braid_watch_changed_until(braid_watch *w, uint64_t *version, void *item,
                                        uint64_t deadline_ns);

/* No more sends: waiters, and later waits that find nothing newer, get
 * -EPIPE.  Any thread.  Returns 0 or -EINVAL.  Never waits; not a
 * cancellation point. */
BRAID_API int braid_watch_close(braid_watch *w);

/* Free it; nobody may wait on it (-EBUSY).  Returns 0, -EBUSY, -EINVAL.
 * Never waits; not a cancellation point; any thread, once no other call
 * uses w. */
BRAID_API int braid_watch_free(braid_watch *w);

/* ------------------------------------------------------------------------
 * Select: wait on several channel operations (Go's select)
 * --------------------------------------------------------------------- */

enum { BRAID_SELECT_SEND = 1, BRAID_SELECT_RECV = 2 };

typedef struct braid_select_case {
    braid_chan *chan;
    int op;         /* BRAID_SELECT_SEND or BRAID_SELECT_RECV */
    void *item;     /* the value to send, or where to receive (never NULL:
                       the channel's item size; 1 byte for braid_token_chan()) */
    int result;     /* set for the case that completed: 0 or -EPIPE (closed) */
} braid_select_case;

/* Flags for braid_select(). */
enum {
    BRAID_SELECT_BIASED = 1, /* among ready cases take the first, not a random one */
    BRAID_SELECT_NOWAIT = 2, /* do not wait: -EAGAIN if no case is ready */
};

/* Complete exactly one of the n cases (1 .. 64) and return its index.  If
 * several are ready the choice is random and fair (or the first, with
 * BRAID_SELECT_BIASED); otherwise wait until one can complete, or until
 * deadline_ns (BRAID_FOREVER: none).  A case on a closed channel completes
 * at once with result -EPIPE (a receive only once the buffer is empty).
 * Cases with a NULL chan are ignored.  Suspends a task, blocks a plain
 * thread (never with BRAID_SELECT_NOWAIT).  Cancellation point, with
 * BRAID_SELECT_NOWAIT too.  Any thread.  Returns the index, -ETIMEDOUT,
 * -EAGAIN (BRAID_SELECT_NOWAIT), -ECANCELED, -EINVAL, -ENOMEM (a send
 * case's channel could not grow its buffer, as for braid_chan_send(): no
 * case completed). */
BRAID_API int braid_select(braid_select_case *cases, size_t n, uint64_t deadline_ns, unsigned flags);

/* ------------------------------------------------------------------------
 * Notify: a wake-up signal with a stored permit (Tokio's sync::Notify)
 * --------------------------------------------------------------------- */

typedef struct braid_notify braid_notify;

/* Create a notify.  Returns 0 or -ENOMEM (-EINVAL if out is NULL).  Never
 * waits; not a cancellation point; any thread. */
BRAID_API int braid_notify_new(braid_notify **out);

/* Free a notify nobody waits on.  Returns 0, -EINVAL, or -EBUSY (waiters).
 * Never waits; not a cancellation point; any thread, once no other call
 * uses n. */
BRAID_API int braid_notify_free(braid_notify *n);

/* Wake the longest-waiting waiter; if nobody waits, store one permit (at
 * most one is stored) that the next braid_notify_wait() consumes at once.
 * Never waits; not a cancellation point; any thread.  Returns 0 or
 * -EINVAL. */
BRAID_API int braid_notify_one(braid_notify *n);

/* Wake every current waiter; stores no permit.  Never waits; not a
 * cancellation point; any thread.  Returns 0 or -EINVAL. */
BRAID_API int braid_notify_waiters(braid_notify *n);

/* Consume the stored permit, or wait for braid_notify_one() or
 * braid_notify_waiters().  Suspends a task; blocks a plain thread.
 * Cancellation point; a waiter that gives up (cancelled, or past its
 * deadline) loses no wake-up: one that was already picked returns 0.
 * Returns 0, -ECANCELED, -ETIMEDOUT (the _until form), -EINVAL.  Any
 * thread. */
BRAID_API int braid_notify_wait(braid_notify *n);
BRAID_API int braid_notify_wait_until(braid_notify *n, uint64_t deadline_ns);

/* ------------------------------------------------------------------------
 * Locks and other synchronization (Tokio's sync)
 *
 * Each is a plain struct the caller owns (embed it, or make it static),
 * initialized with its _INIT macro or _init function; they need no
 * runtime and work across workers, runtimes and plain threads (a task
 * waits by suspending, a thread by blocking).  Uncontended operations make
 * no system call.  Waits are FIFO, cancellation points, and have _until
 * forms (see "Deadlines").  A structure must not be copied or moved while
 * in use.
 * --------------------------------------------------------------------- */

typedef struct braid_mutex {
    uint64_t opaque_[4];
} braid_mutex;
#define BRAID_MUTEX_INIT { { 0 } }

/* Mutex with FIFO handoff: unlocking gives the lock to the longest waiter,
 * so nobody starves.  Owned by the task (or thread) that locked it.
 * braid_mutex_init() is BRAID_MUTEX_INIT at run time.  Returns 0 or -EINVAL
 * (m NULL).  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_mutex_init(braid_mutex *m);
/* Lock m, waiting while another holds it.  Suspends a task; blocks a
 * plain thread.  Cancellation point.  Any thread.  Returns 0, -EDEADLK
 * (the caller holds it), -ECANCELED, -ETIMEDOUT (the _until form),
 * -EINVAL. */
BRAID_API int braid_mutex_lock(braid_mutex *m);
BRAID_API int braid_mutex_lock_until(braid_mutex *m, uint64_t deadline_ns);
/* Lock m without waiting.  Returns 0, -EBUSY (held, or others wait for it),
 * -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_mutex_trylock(braid_mutex *m);
/* Unlock m, handing it to the longest waiter if there is one.  Never waits.
 * Not a cancellation point.  Any thread (the one that holds m).  Returns 0,
 * -EPERM (the caller does not hold it), -EINVAL. */
BRAID_API int braid_mutex_unlock(braid_mutex *m);
/* Check that m is unused (it holds no resources to free).  Returns 0, or
 * -EBUSY if it is locked or waited on, -EINVAL.  Never waits; not a
 * cancellation point; any thread. */
BRAID_API int braid_mutex_destroy(braid_mutex *m);

typedef struct braid_rwlock {
    uint64_t opaque_[5];
} braid_rwlock;
#define BRAID_RWLOCK_INIT { { 0 } }

/* Reader-writer lock, fair: requests are served in arrival order (a run of
 * readers together), so a waiting writer holds back later readers and no
 * writer starves.  braid_rwlock_init() is BRAID_RWLOCK_INIT at run time.
 * Returns 0 or -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_rwlock_init(braid_rwlock *l);

/* Take a read hold (braid_rwlock_rdlock(), shared) or the write hold
 * (braid_rwlock_wrlock(), exclusive), waiting until it can be had.
 * Suspends a task; blocks a plain thread.  Cancellation point.  Any
 * thread.  Returns 0, -EDEADLK (write: the caller holds the write hold),
 * -ECANCELED, -ETIMEDOUT (the _until forms), -EINVAL. */
BRAID_API int braid_rwlock_rdlock(braid_rwlock *l);
BRAID_API int braid_rwlock_rdlock_until(braid_rwlock *l, uint64_t deadline_ns);
BRAID_API int braid_rwlock_wrlock(braid_rwlock *l);
BRAID_API int braid_rwlock_wrlock_until(braid_rwlock *l, uint64_t deadline_ns);

/* braid_rwlock_tryrdlock() and braid_rwlock_trywrlock(): the same without
 * waiting.  Returns 0, -EBUSY, -EINVAL.  Never waits; not a cancellation
 * point; any thread. */
BRAID_API int braid_rwlock_tryrdlock(braid_rwlock *l);
BRAID_API int braid_rwlock_trywrlock(braid_rwlock *l);

/* Release a read or write hold.  Never waits.  Not a cancellation point.
 * Any thread (for the write hold, the one that holds it).  Returns 0,
 * -EPERM (not held), -EINVAL. */
BRAID_API int braid_rwlock_unlock(braid_rwlock *l);

/* Check that l is unused (it holds no resources to free).  Returns 0, -EBUSY
 * (held or waited on), -EINVAL.  Never waits; not a cancellation point; any
 * thread. */
BRAID_API int braid_rwlock_destroy(braid_rwlock *l);

typedef struct braid_sem {
    uint64_t opaque_[5];
} braid_sem;
#define BRAID_SEM_INIT(permits) { { (uint64_t)(permits) } }

/* Counting semaphore (Tokio's Semaphore) with permits permits (below 2^62);
 * braid_sem_init() is BRAID_SEM_INIT(permits) at run time.  Returns 0 or
 * -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_sem_init(braid_sem *s, uint64_t permits);

/* Take n permits, waiting for them, FIFO (a large request at the head holds
 * back smaller ones behind it).  Suspends a task, blocks a plain thread.
 * Cancellation point.  Returns 0, -EPIPE (closed), -ECANCELED, -ETIMEDOUT
 * (the _until form), -EINVAL.  Any thread. */
BRAID_API int braid_sem_acquire(braid_sem *s, uint64_t n);
BRAID_API int braid_sem_acquire_until(braid_sem *s, uint64_t n, uint64_t deadline_ns);

/* braid_sem_acquire() without waiting: -EAGAIN if the permits are not
 * there (or others wait first).  Returns 0, -EAGAIN, -EPIPE (closed),
 * -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_sem_try_acquire(braid_sem *s, uint64_t n);

/* Give back n permits, waking the waiters they satisfy.  Never waits; not
 * a cancellation point; any thread.  Returns 0, -EOVERFLOW (more than 2^62
 * permits), -EINVAL. */
BRAID_API int braid_sem_release(braid_sem *s, uint64_t n);

/* Close s: every waiter and every later acquire fails with -EPIPE.  Returns
 * 0 or -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_sem_close(braid_sem *s);

/* The permits available now (a snapshot; 0 for NULL).  Never waits; not a
 * cancellation point; any thread. */
BRAID_API uint64_t braid_sem_available(braid_sem *s);

/* Check that nobody waits on s (it holds no resources to free).  Returns 0,
 * -EBUSY, -EINVAL.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_sem_destroy(braid_sem *s);

typedef struct braid_cond {
    uint64_t opaque_[3];
} braid_cond;
#define BRAID_COND_INIT { { 0 } }

/* Condition variable for a braid_mutex; braid_cond_init() is
 * BRAID_COND_INIT at run time.  Returns 0 or -EINVAL.  Never waits; not a
 * cancellation point; any thread. */
BRAID_API int braid_cond_init(braid_cond *c);

/* Release m (which the caller holds), wait for a signal, and take m again
 * before returning, whatever it returns (also -ECANCELED and -ETIMEDOUT).
 * Wake-ups may be spurious: wait in a loop.  Suspends a task, blocks a
 * plain thread.  Cancellation point (taking m back is not).  Any thread.
 * Returns 0, -EPERM (m not held by the caller), -ECANCELED, -ETIMEDOUT
 * (the _until form), -EINVAL. */
BRAID_API int braid_cond_wait(braid_cond *c, braid_mutex *m);
BRAID_API int braid_cond_wait_until(braid_cond *c, braid_mutex *m, uint64_t deadline_ns);

/* Wake the longest waiter (braid_cond_signal()) or every waiter
 * (braid_cond_broadcast()).  Never waits; not a cancellation point; any
 * thread, with or without the mutex.  Returns 0 or -EINVAL. */
BRAID_API int braid_cond_signal(braid_cond *c);
BRAID_API int braid_cond_broadcast(braid_cond *c);

/* Check that nobody waits on c.  Returns 0, -EBUSY, -EINVAL.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API int braid_cond_destroy(braid_cond *c);

typedef struct braid_barrier {
    uint64_t opaque_[4];
} braid_barrier;

#define BRAID_BARRIER_LEADER 1

/* Barrier for n parties (Tokio's Barrier), n >= 1.  Returns 0 or -EINVAL.
 * Never waits; not a cancellation point; any thread. */
BRAID_API int braid_barrier_init(braid_barrier *b, unsigned n);

/* Arrive and wait until n have arrived; the barrier can then be used again.
 * Exactly one of each group gets BRAID_BARRIER_LEADER (1); the others get
 * 0.  A waiter that gives up (cancelled, deadline) no longer counts as
 * arrived.  Suspends a task, blocks a plain thread (the last to arrive
 * does not wait).  Cancellation point.  Any thread.  Returns 1, 0,
 * -ECANCELED, -ETIMEDOUT (the _until form), -EINVAL. */
BRAID_API int braid_barrier_wait(braid_barrier *b);
BRAID_API int braid_barrier_wait_until(braid_barrier *b, uint64_t deadline_ns);

/* Check that nobody waits at b.  Returns 0, -EBUSY, -EINVAL.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API int braid_barrier_destroy(braid_barrier *b);

typedef struct braid_once {
    uint64_t opaque_[3];
} braid_once;
#define BRAID_ONCE_INIT { { 0 } }

/* Run fn(arg) once (pthread_once for tasks): the first caller runs it,
 * concurrent callers wait until it is done.  If fn panics, the next caller
 * runs it again.  Waits (suspends a task, blocks a plain thread) while
 * another caller runs fn.  Cancellation point, until fn has run once:
 * from then on it returns 0 at once.  Any thread.  Returns 0 (it has run),
 * -ECANCELED, -EINVAL (o or fn NULL). */
BRAID_API int braid_once_call(braid_once *o, void (*fn)(void *), void *arg);

/* ------------------------------------------------------------------------
 * Cancellation tokens (tokio-util's CancellationToken)
 *
 * A token is cancelled once, by anyone; tasks check it or wait for it.
 * Cancelling a token cancels its children (and theirs), never its parent.
 * Unlike braid_cancel(), it interrupts nothing by itself: code that should
 * stop checks it, waits for it, or selects on braid_token_chan().
 * --------------------------------------------------------------------- */

typedef struct braid_token braid_token;

/* A new token; a child of parent if parent is not NULL (cancelled at once
 * if the parent already is).  Any thread.  Returns 0, -EINVAL, -ENOMEM.
 * Never waits; not a cancellation point. */
BRAID_API int braid_token_new(braid_token **out, braid_token *parent);

/* Cancel t and its descendants, waking whoever waits on them.  Idempotent;
 * never waits; not a cancellation point; any thread.  Returns 0 or
 * -EINVAL. */
BRAID_API int braid_token_cancel(braid_token *t);

/* Whether t is cancelled (false for a bad token).  Any thread.  Never waits;
 * not a cancellation point. */
BRAID_API bool braid_token_is_cancelled(braid_token *t);

/* Wait until t is cancelled.  Suspends a task, blocks a plain thread.
 * Cancellation point (of the calling task: a different thing from t).  Any
 * thread.  Returns 0, -ECANCELED (the caller was), -ETIMEDOUT, -EINVAL. */
BRAID_API int braid_token_wait(braid_token *t);
BRAID_API int braid_token_wait_until(braid_token *t, uint64_t deadline_ns);
/* A channel that is closed when t is cancelled (nothing is ever sent on
 * it): a BRAID_SELECT_RECV case on it completes with -EPIPE once t is
 * cancelled, so a select can wait for cancellation beside other channels.
 * Owned by t: do not drop or close it.  NULL for a bad token.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API braid_chan *braid_token_chan(braid_token *t);
/* Free a token nobody waits on (-EBUSY otherwise).  Its children live on,
 * without a parent.  Returns 0, -EBUSY, -EINVAL.  Never waits; not a
 * cancellation point; any thread, once no other call uses t. */
BRAID_API int braid_token_free(braid_token *t);

/* ------------------------------------------------------------------------
 * JoinSet: a set of tasks joined in completion order (Tokio's JoinSet)
 * --------------------------------------------------------------------- */

typedef struct braid_joinset braid_joinset;

/* Create an empty set; free it with braid_joinset_free().  Any thread.
 * Returns 0, -EINVAL, -ENOMEM.  Never waits; not a cancellation point. */
BRAID_API int braid_joinset_new(braid_joinset **out);
/* Spawn fn(arg) into the set (on the caller's runtime: task only); opts as
 * braid_spawn_ex(), may be NULL.  *id (if not NULL) receives its task id.
 * Returns 0, -EPERM, -ENOMEM, -EINVAL.  Never waits; not a cancellation
 * point. */
BRAID_API int braid_joinset_spawn(braid_joinset *s, const braid_spawn_opts *opts, braid_fn fn,
                                  void *arg, uint64_t *id);
/* Wait for the next task of the set to finish, remove it, and return its
 * fate (>= 0) with its outcome in *out and its id in *id (each may be
 * NULL).  Suspends a task; blocks a plain thread.  Cancellation point.
 * Any thread.  Returns -ENOENT when the set is empty (or becomes empty
 * while the caller waits: another caller took the last member),
 * -ECANCELED, -ETIMEDOUT, -EINVAL.  A caller woken for a finished member
 * takes it even if cancelled meanwhile. */
BRAID_API int braid_joinset_join_next(braid_joinset *s, braid_outcome *out, uint64_t *id);
BRAID_API int braid_joinset_join_next_until(braid_joinset *s, braid_outcome *out, uint64_t *id,
                                            uint64_t deadline_ns);
/* Request cancellation of every task in the set (they stay in it), as
 * braid_cancel().  Never waits; not a cancellation point; any thread.
 * Returns 0 or -EINVAL. */
BRAID_API int braid_joinset_cancel_all(braid_joinset *s);
/* Cancel every task and wait for all of them; the set is empty after.
 * Their results are discarded.  Suspends a task, blocks a plain thread.
 * Not a cancellation point.  Any thread.  Returns 0 or -EINVAL. */
BRAID_API int braid_joinset_shutdown(braid_joinset *s);
/* Tasks in the set (finished ones not yet joined included).  Never waits; not
 * a cancellation point; any thread. */
BRAID_API size_t braid_joinset_len(braid_joinset *s);
/* braid_joinset_shutdown(), then free the set.  Free a set before the
 * runtime its tasks run on.  Waits as braid_joinset_shutdown() does.  Not
 * a cancellation point.  Any thread, once no other call uses s.  Returns
 * 0 or -EINVAL. */
BRAID_API int braid_joinset_free(braid_joinset *s);

/* ------------------------------------------------------------------------
 * Blocking pool and files (Tokio's spawn_blocking and tokio::fs)
 *
 * Each runtime has a pool of plain threads for code that blocks: a C
 * library call that cannot be made non-blocking, a file system call,
 * getaddrinfo.  A task that hands work to the pool suspends until it is
 * done; its worker runs other tasks meanwhile.  Threads are created on
 * demand, up to braid_config.blocking_threads (default 512); work that
 * finds them all busy waits in a FIFO queue; a thread idle for
 * blocking_keepalive_ms (default 10 s) exits.  Name resolution may occupy
 * at most half of the threads (at least one), so that slow DNS cannot
 * starve file work (with blocking_threads = 1 it can).
 *
 * Pool work is never abandoned half-way: once it has started it runs to
 * the end, and a caller that is cancelled meanwhile waits for that end
 * (resolution excepted, see braid_resolve()).  Work that has not started
 * when its caller is cancelled (or, for braid_resolve_until(), when the
 * deadline passes) is withdrawn and never runs.
 *
 * braid_runtime_free() cancels the tasks waiting for queued work (that
 * work never runs) and waits for running work to finish, as for any task,
 * then joins the pool's threads.
 *
 * When every thread creation fails while the pool has no thread at all,
 * work fails at once instead of waiting forever: the helpers return
 * -EAGAIN, and a braid_spawn_blocking() task panics with a message saying
 * so.
 * --------------------------------------------------------------------- */

/* Run fn(arg) on a thread of the caller's runtime's blocking pool, and get
 * a handle for it that braid_join(), braid_join_ex(), braid_join_until(),
 * braid_detach(), braid_cancel() and braid_is_finished() accept like any
 * task's.  The handle is that of a small task that waits for the pool, so
 * fn may block as long as it likes without holding a worker.  fn runs on a
 * plain thread: braid calls made there behave as on any plain thread
 * (braid_spawn() is -EPERM; channels and locks block the thread).
 *
 * Cancellation follows Tokio: braid_cancel() before fn has started means
 * it never runs (fate BRAID_CANCELLED, and the arg_drop of _ex runs);
 * once fn has started it runs to the end, and the join returns its value
 * with BRAID_OK even if braid_cancel() was called meanwhile.
 *
 * braid_panic() (or a failed BRAID_ASSERT) inside fn ends fn like a task's
 * panic, abandoning its frames (nothing is unwound; braid_defer_push() is
 * -EPERM there), and the handle's fate is BRAID_PANICKED with the message
 * and location.  Any other way of leaving fn (pthread_exit, a fault)
 * takes the process down as it would on any thread.
 *
 * Never waits: fn is queued for the pool (join the handle to wait for it).
 * Task only.  Not a cancellation point.  Returns 0, -EPERM, -EINVAL (fn
 * NULL), -ENOMEM. */
BRAID_API int braid_spawn_blocking(braid_task *out, braid_fn fn, void *arg);

/* braid_spawn_blocking() with options: name and arg_drop as for
 * braid_spawn_ex() (stack_size is ignored: pool threads have ordinary
 * thread stacks).  opts may be NULL.  Errors as braid_spawn_blocking().
 * Never waits; not a cancellation point; task only. */
BRAID_API int braid_spawn_blocking_ex(braid_task *out, const braid_spawn_opts *opts,
                                      braid_fn fn, void *arg);

/* braid_spawn_blocking_ex() into a JoinSet; as braid_joinset_spawn().  Never
 * waits; not a cancellation point; task only. */
BRAID_API int braid_joinset_spawn_blocking(braid_joinset *s, const braid_spawn_opts *opts,
                                           braid_fn fn, void *arg, uint64_t *id);

/* Spawn sites for the blocking pool and JoinSets (see "Spawn sites"
 * above): braid_spawn_blocking, braid_spawn_blocking_ex,
 * braid_joinset_spawn and braid_joinset_spawn_blocking are also macros that
 * pass __FILE__ and __LINE__ to these _at entry points (for a blocking job,
 * the site is that of the task whose handle the caller gets).  Otherwise
 * braid_spawn_blocking_at, braid_spawn_blocking_ex_at,
 * braid_joinset_spawn_at and braid_joinset_spawn_blocking_at are exactly
 * the functions they stand for, with the same errors (-EPERM, -EINVAL,
 * -ENOMEM: see braid_spawn_blocking and braid_joinset_spawn).  Each never
 * waits.  Not a cancellation point.  Task only. */
BRAID_API int braid_spawn_blocking_at(const char *file, int line, braid_task *out, braid_fn fn,
                                      void *arg);
BRAID_API int braid_spawn_blocking_ex_at(const char *file, int line, braid_task *out,
                                         const braid_spawn_opts *opts, braid_fn fn, void *arg);
BRAID_API int braid_joinset_spawn_at(const char *file, int line, braid_joinset *s,
                                     const braid_spawn_opts *opts, braid_fn fn, void *arg,
                                     uint64_t *id);
BRAID_API int braid_joinset_spawn_blocking_at(const char *file, int line, braid_joinset *s,
                                              const braid_spawn_opts *opts, braid_fn fn,
                                              void *arg, uint64_t *id);

#ifndef BRAID_NO_SITE_MACROS
#define braid_spawn_blocking(out, fn, arg) braid_spawn_blocking_at(__FILE__, __LINE__, out, fn, arg)
#define braid_spawn_blocking_ex(out, opts, fn, arg)                                            \
    braid_spawn_blocking_ex_at(__FILE__, __LINE__, out, opts, fn, arg)
#define braid_joinset_spawn(s, opts, fn, arg, id)                                              \
    braid_joinset_spawn_at(__FILE__, __LINE__, s, opts, fn, arg, id)
#define braid_joinset_spawn_blocking(s, opts, fn, arg, id)                                     \
    braid_joinset_spawn_blocking_at(__FILE__, __LINE__, s, opts, fn, arg, id)
#endif

struct addrinfo; /* <netdb.h> */

/* getaddrinfo(host, port, hints, res), run on the blocking pool; free *res
 * with freeaddrinfo().  Suspends the calling task like a join; from a plain
 * thread it calls getaddrinfo directly.  Cancellation point.  A call that
 * is cancelled or reaches its deadline while getaddrinfo runs returns at
 * once (-ECANCELED, -ETIMEDOUT): getaddrinfo finishes on its pool thread,
 * which frees its result.  (braid_runtime_free() waits for such leftovers
 * when it joins the pool's threads.)  *res is NULL on every error.
 *
 * Returns 0 or a negative error; getaddrinfo's EAI_* codes become:
 *   EAI_NONAME, EAI_SERVICE      -ENOENT  (no such host or service)
 *   EAI_NODATA, EAI_ADDRFAMILY   -ENODATA (the name has no address of the
 *                                          requested kind)
 *   EAI_AGAIN                    -EAGAIN  (temporary failure: try later)
 *   EAI_FAIL                     -EIO     (non-recoverable name server
 *                                          failure; also any unknown code)
 *   EAI_BADFLAGS                 -EINVAL
 *   EAI_FAMILY                   -EAFNOSUPPORT
 *   EAI_SOCKTYPE                 -ESOCKTNOSUPPORT
 *   EAI_MEMORY                   -ENOMEM
 *   EAI_SYSTEM                   the negated errno
 * and the call's own: -ECANCELED, -ETIMEDOUT (_until), -EINVAL (res NULL),
 * -ENOMEM, -EAGAIN (no pool thread could be created).  Any thread. */
BRAID_API int braid_resolve(const char *host, const char *port, const struct addrinfo *hints,
                            struct addrinfo **res);
BRAID_API int braid_resolve_until(const char *host, const char *port,
                                  const struct addrinfo *hints, struct addrinfo **res,
                                  uint64_t deadline_ns);

/* File helpers.  Each runs its system calls on the blocking pool and
 * suspends the calling task until they are done, like a join; from a plain
 * thread it makes them directly.  Errors are negative errno values (errno
 * itself is left alone), plus -ECANCELED (the call never started: nothing
 * happened) and -EAGAIN (no pool thread could be created).  Each is a
 * cancellation point except braid_file_close(); once started, the
 * operation completes and its result is returned even if the task was
 * cancelled meanwhile (the next cancellation point reports it).  Any
 * thread; concurrent calls on one descriptor are as safe as the system
 * calls are.  For sockets and pipes use the I/O section instead. */

/* open(path, flags, mode).  Returns the descriptor or a negative error.
 * Add O_CLOEXEC yourself if wanted.  Suspends a task until the pool has run
 * it; blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API int braid_file_open(const char *path, int flags, mode_t mode);

/* pread(fd, buf, n, off): up to n bytes at offset off (off < 0: at the
 * current position, with read(2)).  Returns the count (0 at end of file)
 * or a negative error.  Suspends a task until the pool has run it; blocks a
 * plain thread.  Cancellation point.  Any thread. */
BRAID_API ssize_t braid_file_read(int fd, void *buf, size_t n, int64_t off);

/* Write all n bytes at offset off (off < 0: at the current position),
 * retrying short writes.  Returns 0 or a negative error (then some bytes
 * may have been written).  Suspends a task until the pool has run it; blocks
 * a plain thread.  Cancellation point.  Any thread. */
BRAID_API int braid_file_write(int fd, const void *buf, size_t n, int64_t off);

/* fsync(fd).  Returns 0 or a negative error.  Suspends a task until the pool
 * has run it; blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API int braid_file_fsync(int fd);

/* close(fd).  Not a cancellation point, so that a cancelled task's cleanup
 * still closes: it always closes fd (also when it reports -EIO; EINTR is
 * not an error on Linux, where the descriptor is gone anyway).  Returns 0
 * or a negative error.  Suspends a task until the pool has run it; blocks
 * a plain thread.  Any thread. */
BRAID_API int braid_file_close(int fd);

/* Read the whole file at path into a malloc'd buffer, NUL-terminated (the
 * NUL is not counted); free it with free().  *len (may be NULL) receives
 * the length.  On error *data is NULL.  Returns 0 or a negative error
 * (-ENOENT, -EACCES, -EISDIR, -ENOMEM, -EFBIG, ...).  Suspends a task until
 * the pool has run it; blocks a plain thread.  Cancellation point.  Any
 * thread. */
BRAID_API int braid_file_read_all(const char *path, void **data, size_t *len);

/* Create or truncate path (mode 0644, before the umask) and write the len
 * bytes of data.  Returns 0 or a negative error (then the file may hold
 * part of data).  Suspends a task until the pool has run it; blocks a plain
 * thread.  Cancellation point.  Any thread. */
BRAID_API int braid_file_write_all(const char *path, const void *data, size_t len);

/* ------------------------------------------------------------------------
 * Task-local storage (Tokio's task_local!)
 * --------------------------------------------------------------------- */

/* Create a key.  dtor (may be NULL) runs with the value when a task that set
 * a non-NULL value ends, however it ends.  At most 128 keys exist at once.
 * Returns 0, -EINVAL, -EAGAIN (no free key).  Never waits; not a cancellation
 * point; any thread. */
BRAID_API int braid_local_key_create(braid_local_key *key, void (*dtor)(void *));

/* Delete a key.  Values still set in live tasks are not destroyed (as
 * pthread_key_delete).  Returns 0 or -EINVAL.  Never waits; not a
 * cancellation point; any thread. */
BRAID_API int braid_local_key_delete(braid_local_key key);

/* The calling task's value for key; NULL if unset, for a bad key, or on a
 * plain thread.  Never waits; not a cancellation point; any thread. */
BRAID_API void *braid_local_get(braid_local_key key);

/* Set the calling task's value for key.  Task only.  Returns 0, -EPERM,
 * -EINVAL (bad key), -ENOMEM.  Never waits; not a cancellation point. */
BRAID_API int braid_local_set(braid_local_key key, void *value);

/* ------------------------------------------------------------------------
 * I/O: descriptors and sockets
 *
 * braid works on plain file descriptors.  A task whose read finds no data
 * suspends; its worker runs other tasks and, once nothing is runnable,
 * sleeps in epoll until a descriptor, a timer or new work wakes it.  Each
 * worker has its own epoll instance: a descriptor is registered once
 * (edge-triggered) with the worker of the first task that has to wait on
 * it, so its events are handled by the thread that runs that task.
 *
 * Rules:
 *  - Descriptors braid creates are non-blocking and close-on-exec.  Others
 *    must be non-blocking (O_NONBLOCK) before braid reads or writes them,
 *    or the call blocks the whole worker.  Regular files are always
 *    "ready": use the blocking pool's file helpers for them.
 *  - Close a descriptor braid has waited on with braid_close(): it wakes
 *    the tasks waiting on it (they get -EBADF) and forgets its
 *    registration.  One closed with close(2) while a task waits on it
 *    leaves that task waiting until its deadline or cancellation.
 *  - Every call that waits is a cancellation point and has an _until form
 *    (see "Deadlines").  Called from a plain thread, the calls block that
 *    thread in poll(2) instead of suspending a task.
 *  - Reading 0 bytes means end of stream; errors are negative errno values
 *    (-ECONNRESET, -EPIPE, ...).  Writes never raise SIGPIPE on sockets.
 *  - A call that completes without waiting spends the task's cooperative
 *    budget, so a task reading a fast stream still lets others run.
 * --------------------------------------------------------------------- */

/* Readiness bits for braid_wait_fd() (the values of POLLIN, POLLOUT,
 * POLLERR and POLLHUP). */
#define BRAID_READABLE 0x001
#define BRAID_WRITABLE 0x004
#define BRAID_ERROR    0x008
#define BRAID_HANGUP   0x010

/* Wait until fd is ready for any of events (BRAID_READABLE, BRAID_WRITABLE)
 * or has an error or hang-up.  For adapting C libraries that do their own
 * non-blocking I/O.  Returns the ready bits (> 0, including BRAID_ERROR and
 * BRAID_HANGUP when they hold), -EBADF (fd invalid, or closed by
 * braid_close() meanwhile), -EINVAL (no events), -ETIMEDOUT, -ECANCELED,
 * -ENOMEM.  Suspends a task; blocks a plain thread.  Cancellation point.  Any
 * thread. */
BRAID_API int braid_wait_fd(int fd, unsigned events, uint64_t deadline_ns);

/* Close fd: tasks waiting on it wake up with -EBADF, calls on it in other
 * tasks finish first, then close(2).  Returns 0 or -EBADF; the descriptor
 * is released even when close(2) reports an error such as -EIO (returned).
 * Waits only for those calls to leave their system call (a task lets other
 * tasks run meanwhile).  Not a cancellation point, so that a cancelled
 * task's cleanup still closes.  Any thread. */
BRAID_API int braid_close(int fd);

/* Read up to n bytes, waiting until at least one is there.  Returns the
 * count, 0 at end of stream (or n == 0), or a negative error.  Suspends a
 * task; blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API ssize_t braid_read(int fd, void *buf, size_t n);
BRAID_API ssize_t braid_read_until(int fd, void *buf, size_t n, uint64_t deadline_ns);

/* Read exactly n bytes.  Returns n; 0 if the stream ended before the first
 * byte; -EPIPE if it ended part-way (the bytes read are in buf); or another
 * negative error.  On -ETIMEDOUT or -ECANCELED part of buf may be filled.
 * Suspends a task; blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API ssize_t braid_read_exact(int fd, void *buf, size_t n);
BRAID_API ssize_t braid_read_exact_until(int fd, void *buf, size_t n, uint64_t deadline_ns);

/* Scatter read: as braid_read() into iovcnt buffers (-EINVAL: iovcnt out
 * of range).  Suspends a task; blocks a plain thread.  Cancellation point.
 * Any thread. */
BRAID_API ssize_t braid_readv(int fd, const struct iovec *iov, int iovcnt);
BRAID_API ssize_t braid_readv_until(int fd, const struct iovec *iov, int iovcnt,
                                    uint64_t deadline_ns);

/* Write up to n bytes, waiting until at least one can be written.
 * Returns the count or a negative error (-EPIPE: the reader is gone).
 * Suspends a task; blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API ssize_t braid_write(int fd, const void *buf, size_t n);
BRAID_API ssize_t braid_write_until(int fd, const void *buf, size_t n, uint64_t deadline_ns);

/* Write all n bytes.  Returns n or a negative error (then an unknown part
 * was written).  Suspends a task; blocks a plain thread.  Cancellation point.
 * Any thread. */
BRAID_API ssize_t braid_write_all(int fd, const void *buf, size_t n);
BRAID_API ssize_t braid_write_all_until(int fd, const void *buf, size_t n, uint64_t deadline_ns);

/* Gather write of everything in iov[0 .. iovcnt) (iov is not modified).
 * Returns the total or a negative error.  Suspends a task; blocks a plain
 * thread.  Cancellation point.  Any thread. */
BRAID_API ssize_t braid_writev_all(int fd, const struct iovec *iov, int iovcnt);
BRAID_API ssize_t braid_writev_all_until(int fd, const struct iovec *iov, int iovcnt,
                                         uint64_t deadline_ns);

/* Datagrams: braid_recv_from() and braid_send_to() are recvfrom(2) and
 * sendto(2) that wait, as braid_read() and braid_write() do.  from/fromlen
 * and to may be NULL (a connected socket).  Return the bytes received
 * (at most n: the rest of a longer datagram is lost) or sent, or
 * a negative error (-ETIMEDOUT, -ECANCELED, -EBADF, or the system call's:
 * -EMSGSIZE, -ECONNREFUSED, ...).  Suspends a task; blocks a plain thread.
 * Cancellation point.  Any thread. */
BRAID_API ssize_t braid_recv_from(int fd, void *buf, size_t n, struct sockaddr *from,
                                  socklen_t *fromlen);
BRAID_API ssize_t braid_recv_from_until(int fd, void *buf, size_t n, struct sockaddr *from,
                                        socklen_t *fromlen, uint64_t deadline_ns);
BRAID_API ssize_t braid_send_to(int fd, const void *buf, size_t n, const struct sockaddr *to,
                                socklen_t tolen);
BRAID_API ssize_t braid_send_to_until(int fd, const void *buf, size_t n,
                                      const struct sockaddr *to, socklen_t tolen,
                                      uint64_t deadline_ns);

/* ---- addresses ------------------------------------------------------------
 * An address string is "host:port" with a numeric host ("127.0.0.1:8080",
 * "[::1]:8080"; an empty host, ":8080", means every IPv4 and IPv6
 * interface), or "unix:PATH" for a Unix socket ("unix:@name" for Linux's
 * abstract namespace).  Only braid_connect() and braid_tcp_connect() also
 * accept host names, resolved on the blocking pool. */

/* Parse a numeric address string.  Returns 0, -EINVAL.  Never waits; not a
 * cancellation point; any thread. */
BRAID_API int braid_addr_parse(const char *addr, struct sockaddr_storage *out, socklen_t *len);

/* Format sa as an address string into buf (at most n bytes, NUL included;
 * 64 bytes hold any IP address).  Returns the length, -EINVAL, -ENOSPC.
 * Never waits; not a cancellation point; any thread. */
BRAID_API int braid_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n);

/* fd's own (braid_local_addr()) and its peer's (braid_peer_addr()) address,
 * formatted as braid_addr_format(): returns the length, or -EINVAL,
 * -ENOSPC, -ENOTCONN (no peer), -EBADF, -ENOTSOCK.  Never waits; not a
 * cancellation point; any thread. */
BRAID_API int braid_local_addr(int fd, char *buf, size_t n);
BRAID_API int braid_peer_addr(int fd, char *buf, size_t n);

/* ---- listening and connecting ------------------------------------------ */

#define BRAID_REUSEADDR 0x1 /* SO_REUSEADDR (what TCP servers want) */
#define BRAID_REUSEPORT 0x2 /* SO_REUSEPORT: several listeners share a port */
#define BRAID_V6ONLY    0x4 /* an IPv6 socket that takes no IPv4 connections */

/* braid_listen() and braid_listen_sockaddr() (addr already parsed): a
 * socket of type (SOCK_STREAM or SOCK_DGRAM) bound to addr, listening if
 * it is a stream (backlog <= 0: SOMAXCONN).  A Unix socket file left at
 * the path by a server that no longer listens is removed first; a path a
 * live server listens on gives -EADDRINUSE, one that is not a socket
 * -EEXIST.  Returns the descriptor or a negative error (-EADDRINUSE,
 * -EEXIST, -EACCES, -EINVAL, -EMFILE, ...).  Never waits; not a cancellation
 * point; any thread. */
BRAID_API int braid_listen(const char *addr, int type, int backlog, unsigned flags);
BRAID_API int braid_listen_sockaddr(const struct sockaddr *sa, socklen_t len, int type,
                                    int backlog, unsigned flags);

/* braid_listen(addr, SOCK_STREAM, backlog, BRAID_REUSEADDR): the same
 * results.  Never waits; not a cancellation point; any thread. */
BRAID_API int braid_tcp_listen(const char *addr, int backlog);

/* braid_listen(addr, SOCK_DGRAM, 0, 0): the same results.  Never waits;
 * not a cancellation point; any thread. */
BRAID_API int braid_udp_bind(const char *addr);

/* Accept a connection, waiting for one.  peer/len may be NULL.  Returns
 * the new descriptor, or -EMFILE/-ENFILE (out of descriptors: back off,
 * the listener stays usable), -ECANCELED, -ETIMEDOUT, -EBADF, ...
 * Connections that fail before being accepted are skipped.  Suspends a task;
 * blocks a plain thread.  Cancellation point.  Any thread. */
BRAID_API int braid_accept(int fd, struct sockaddr *peer, socklen_t *len);
BRAID_API int braid_accept_until(int fd, struct sockaddr *peer, socklen_t *len,
                                 uint64_t deadline_ns);

/* Connect a new socket of type to addr (a host name is resolved on the
 * blocking pool and each of its addresses tried in turn), or to sa with
 * braid_connect_sockaddr().  Waits for the connection (and the name):
 * suspends a task; blocks a plain thread.  Cancellation point.  Any
 * thread.  Returns the descriptor or a negative error (-ECONNREFUSED,
 * -ETIMEDOUT, -ECANCELED, -ENOENT: no such host, ...). */
BRAID_API int braid_connect(const char *addr, int type);
BRAID_API int braid_connect_until(const char *addr, int type, uint64_t deadline_ns);
BRAID_API int braid_connect_sockaddr(const struct sockaddr *sa, socklen_t len, int type,
                                     uint64_t deadline_ns);

/* braid_connect(addr, SOCK_STREAM) with TCP_NODELAY set.  Waits as
 * braid_connect() does and returns what it returns.  Cancellation point.
 * Any thread. */
BRAID_API int braid_tcp_connect(const char *addr);
BRAID_API int braid_tcp_connect_until(const char *addr, uint64_t deadline_ns);

/* Set TCP_NODELAY (on: send small writes at once).  Returns 0 or the
 * negated errno of setsockopt(2) (-EBADF, -ENOTSOCK, -EOPNOTSUPP, ...).
 * Never waits; not a cancellation point; any thread. */
BRAID_API int braid_tcp_nodelay(int fd, bool on);

/* shutdown(2) returning a negative errno value (-EBADF, -ENOTCONN, ...)
 * instead of setting errno.  Never waits; not a cancellation point; any
 * thread. */
BRAID_API int braid_shutdown(int fd, int how);

/* ---- buffered reading ------------------------------------------------------
 * A braid_reader puts a buffer in front of braid_read() on one descriptor,
 * for line- and frame-oriented protocols (Tokio's BufReader).  Reads are
 * served from the buffer first; only an empty buffer costs a braid_read(),
 * and one at a time.  Every reading call is a cancellation point (also
 * when the buffer could serve it), has an _until form whose deadline, when
 * it passes, leaves everything read so far in the buffer (but see
 * braid_reader_read_exact()), and passes errors of braid_read() through.
 * Like braid_read(), it suspends a task and blocks a plain thread.  A
 * reader is not thread-safe: one task (or thread) at a time uses it, like
 * the descriptor it reads. */

typedef struct braid_reader braid_reader;

/* A reader of fd with a buffer of capacity bytes (0: 8192), which is also
 * the longest line braid_reader_slice() can return.  Returns 0, -EINVAL,
 * -ENOMEM.  Any thread.  Never waits; not a cancellation point. */
BRAID_API int braid_reader_new(braid_reader **out, int fd, size_t capacity);

/* Free r and the bytes still buffered.  Does not close the descriptor.
 * NULL is ignored.  Never waits; not a cancellation point; any thread,
 * once no other call uses r. */
BRAID_API void braid_reader_free(braid_reader *r);

/* Read up to n bytes: buffered ones if there are any (without waiting),
 * else as one braid_read() (straight into buf when n is at least the
 * capacity).  Returns the count, 0 at end of stream (or n == 0), or a
 * negative error (-ETIMEDOUT, -ECANCELED, -EINVAL, or braid_read's).
 * Suspends a task; blocks a plain thread (only when the buffer cannot serve
 * the call).  Cancellation point.  Not thread-safe, as every reader call. */
BRAID_API ssize_t braid_reader_read(braid_reader *r, void *buf, size_t n);
BRAID_API ssize_t braid_reader_read_until(braid_reader *r, void *buf, size_t n,
                                          uint64_t deadline_ns);

/* Read exactly n bytes, as braid_read_exact(): returns n; 0 if the stream
 * ended before the first byte; -EPIPE if it ended part-way (the bytes
 * there were are in buf); or another negative error.  When n is at most
 * the capacity, a deadline or cancellation consumes nothing: the bytes
 * read so far stay buffered.  A larger n may have filled part of buf.
 * Suspends a task; blocks a plain thread (only when the buffer cannot serve
 * the call).  Cancellation point.  Not thread-safe, as every reader call. */
BRAID_API ssize_t braid_reader_read_exact(braid_reader *r, void *buf, size_t n);
BRAID_API ssize_t braid_reader_read_exact_until(braid_reader *r, void *buf, size_t n,
                                                uint64_t deadline_ns);

/* Read up to and including the next byte delim (0..255; a negative char
 * is taken as unsigned char), without copying: *data points at the line
 * inside r's buffer, valid until the next call on r (the line is not NUL-
 * terminated).  Returns the line's length, delim included.  At the end of
 * the stream, a last piece without delim is returned as a line (length >
 * 0, no delim), then 0.  Errors: -EMSGSIZE when a line does not fit in
 * the capacity: that whole line is discarded (the part buffered at once,
 * the rest up to and including its delim by the next call on r, whichever
 * it is) and the reader goes on after it; -ETIMEDOUT (a partial line stays
 * buffered, nothing is lost), -ECANCELED, -EINVAL, and braid_read's.  On
 * any error or 0, *data is NULL.  Suspends a task; blocks a plain thread
 * (only when the buffer cannot serve the call).  Cancellation point.  Not
 * thread-safe, as every reader call. */
BRAID_API ssize_t braid_reader_slice(braid_reader *r, int delim, const char **data);
BRAID_API ssize_t braid_reader_slice_until(braid_reader *r, int delim, const char **data,
                                           uint64_t deadline_ns);

/* braid_reader_slice(r, '\n', data): the same results.  Waits as
 * braid_reader_slice() does.  Cancellation point.  Not thread-safe, as
 * every reader call. */
BRAID_API ssize_t braid_reader_line(braid_reader *r, const char **data);
BRAID_API ssize_t braid_reader_line_until(braid_reader *r, const char **data,
                                          uint64_t deadline_ns);

/* How many bytes r holds that no call has returned yet (0 for NULL).
 * Never waits; not a cancellation point; not thread-safe, as every reader
 * call. */
BRAID_API size_t braid_reader_buffered(const braid_reader *r);

/* ---- signals ----------------------------------------------------------------
 * A task waits for a signal the way it waits for a socket, e.g. to shut a
 * server down gracefully on SIGINT or SIGTERM.  braid's handler (installed
 * with SA_RESTART) only counts the delivery and writes a byte to a
 * process-wide self-pipe (non-blocking, close-on-exec, created once and
 * kept for the life of the process) on which waiters wait with
 * braid_wait_fd().  Dispositions are process-wide: catching a signal
 * affects every thread and runtime, and stays in effect for good (a later
 * sigaction() by the program replaces it).  Deliveries of one signal
 * coalesce: several arriving before a waiter looks count as one. */

/* Catch signo from now on: its default action (or the program's handler)
 * no longer happens; deliveries are kept for braid_signal_wait().
 * Idempotent.  Returns 0, -EINVAL (out of range, glibc's internal
 * signals, or SIGKILL, SIGSTOP, and SIGSEGV, SIGBUS, SIGILL, SIGFPE, which
 * braid's fault handling uses), -EMFILE/-ENFILE (the pipe could not be
 * created).  Never waits.  Not a cancellation point.  Any thread. */
BRAID_API int braid_signal_catch(int signo);

/* Catch signo if not yet (as braid_signal_catch()), then wait for a
 * delivery.  A delivery wakes every task and thread waiting for signo at
 * the time; one arriving while nobody waits is remembered (at most one per
 * signal) and makes the next wait return at once.  Suspends a task;
 * blocks a plain thread.  Cancellation point (once signo is caught).
 * Returns signo, -ETIMEDOUT (the _until form), -ECANCELED, -EINVAL (as
 * braid_signal_catch()), -EMFILE/-ENFILE, -ENOMEM.  Any thread, any
 * runtime. */
BRAID_API int braid_signal_wait(int signo);
BRAID_API int braid_signal_wait_until(int signo, uint64_t deadline_ns);

/* ------------------------------------------------------------------------
 * Seeing inside: dumps, metrics, the observer
 *
 * Each runtime has an observer thread (unless braid_config.observe_off is
 * BRAID_OBSERVE_OFF) that
 *  - writes braid_dump() of every runtime to stderr when the process gets
 *    SIGQUIT, and the program continues.  The handler is installed only if
 *    SIGQUIT has its default disposition when the runtime is created, and
 *    the default is restored when the last such runtime is freed; a later
 *    braid_signal_catch(SIGQUIT) or sigaction() takes it over;
 *  - reports, once per incident, a task that has run longer than
 *    watchdog_ms without suspending (a blocking call inside a task), with
 *    its name, spawn site and, where the worker thread can be interrupted,
 *    a backtrace (taken in a SIGURG handler on that thread; SIGURG is
 *    used only if nobody else handles it, and like any signal it may cut
 *    short, with EINTR, the system call that task is blocked in).  The
 *    backtrace follows the call frame information (.eh_frame) of the
 *    code it crosses as far as 16 KiB of stack, then frame pointers, so
 *    the function that called a blocking libc function shows although
 *    libc keeps no frame pointers.  The default threshold is 1 s under
 *    Valgrind;
 *  - reports each deadlock once: every worker asleep with no timer, no
 *    task waiting on a descriptor, no blocking-pool job queued or running, tasks
 *    alive, and no thread in the process that could still wake one (every
 *    thread is the runtime's own or a plain thread blocked without deadline
 *    in a braid call), all of it unchanged over two looks 100 ms apart.
 *    The report (and the dump) goes to stderr, then to observe_hook; the
 *    program continues (the hook may end it, or release a task).  Once
 *    tasks have run, spawned or finished again, a new deadlock is
 *    reported again.  A program with threads of its own or several
 *    runtimes is never reported: a false report would be worse than a
 *    missed one.
 * Reports go to stderr and then to braid_config.observe_hook.
 * --------------------------------------------------------------------- */

/* Write every live task of rt to f: id, name, state (running on worker N,
 * runnable, or what it waits for: sleep until T, join of task M, channel,
 * mutex, descriptor N, the blocking pool, ...), for how long (by its
 * worker's clock as of its last scheduling pass, so possibly longer by
 * the time since, a running task counting from when it became runnable;
 * with the console on, a task leaving its worker dates its new state by
 * the real clock), its spawn site and
 * parent, the deepest stack page it has touched, and a backtrace
 * of its suspended stack (frame pointers; each frame named from dladdr(),
 * or else from its module's ELF symbol table, so static functions of a
 * program linked with libbraid.a are named unless the file is stripped;
 * every frame also shows module+offset for addr2line).  Tasks not
 * started yet are listed per worker queue and for the injection queue
 * (id, name, spawn site; the first 32 of each queue, the rest counted),
 * and stay queued.  Each
 * worker writes its own tasks, at its next scheduling point (a parked one
 * is woken for it); a worker that does not get there within 500 ms is
 * reported as busy instead, with its running task's id, name, site and
 * backtrace, or the scheduler's own frames when it runs no task, if its
 * thread answers the watchdog's signal (not when the watchdog is off;
 * that backtrace is unwound from the modules' call frame information, so
 * frames without a frame pointer, such as libc's system-call wrappers,
 * keep their callers).  Blocks the calling thread (and, from a task, its
 * worker) meanwhile; one dump at a time per process.  rt NULL: the
 * caller's runtime.  Any thread, any task, but not a signal handler
 * (SIGQUIT does it on the observer thread).  Not a cancellation point.
 * Returns 0, -EINVAL (no runtime, or f NULL), -EIO (writing f failed). */
BRAID_API int braid_dump(braid_runtime *rt, FILE *f);

/* One worker's counters in braid_metrics. */
typedef struct braid_worker_metrics {
    uint64_t polls;          /* times a task was resumed or started */
    uint64_t steals;         /* tasks taken from other workers' queues */
    uint64_t parks;          /* times the worker went to sleep */
    uint64_t busy_ns;        /* time not asleep since the worker started */
    uint64_t local_queue;    /* never-started tasks in its queue now */
    uint64_t timers;         /* timers pending (as of its last scheduling pass) */
    uint64_t io_registered;  /* descriptors registered with its epoll */
} braid_worker_metrics;

/* A runtime's counters.  Set size to sizeof(braid_metrics) (the library
 * fills only what it knows, later versions only append), and point workers
 * at an array of max_workers entries (or NULL / 0 for none): worker i's
 * counters land in workers[i] for i < min(nworkers, max_workers). */
typedef struct braid_metrics {
    size_t size;
    unsigned nworkers;
    uint64_t tasks_alive;     /* spawned and not yet finished (queued too) */
    uint64_t tasks_spawned;
    uint64_t tasks_completed; /* finished: returned, panicked or cancelled */
    uint64_t tasks_panicked;
    uint64_t tasks_cancelled;
    uint64_t global_queue;    /* never-started tasks in the injection queue */
    uint64_t timers;          /* sum over the workers */
    uint64_t io_registered;   /* sum over the workers */
    unsigned blocking_busy;   /* blocking-pool threads running a job */
    unsigned blocking_idle;
    unsigned blocking_queued; /* jobs waiting for a thread */
    uint64_t stack_high_water; /* the deepest any task of this runtime has
                                  touched its stack, in bytes from the top
                                  of its stack slot (0: none yet), measured
                                  on each read from the pages resident in
                                  every stack slot: those of live tasks, and
                                  of finished ones whose stacks still hold
                                  their pages (free stacks keep them until
                                  an idle worker trims the excess); kept as
                                  the maximum of every such reading and of
                                  braid_dump() and braid_stack_high_water().
                                  Pages swapped out do not count */
    unsigned max_workers;
    braid_worker_metrics *workers;
} braid_metrics;

#define BRAID_METRICS_INIT { sizeof(braid_metrics), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL }

/* Fill *m with rt's counters (rt NULL: the caller's runtime).  The counts
 * are kept per worker, written by their worker alone and summed here, so
 * they are exact once the runtime is quiet and approximate while it runs.
 * tasks_completed counts every finish, tasks_panicked and tasks_cancelled
 * those fates among them.  stack_high_water costs a mincore() system call
 * per stack the runtime has handed out (about half a microsecond each).
 * Never blocks (takes the blocking pool's and the stack pool's locks
 * briefly).  Not a cancellation point.  Any thread.  Returns 0 or
 * -EINVAL. */
BRAID_API int braid_metrics_get(braid_runtime *rt, braid_metrics *m);

/* The deepest point of the calling task's stack touched so far, in bytes
 * from its top (pages resident in its stack slot: an upper bound when the
 * slot was used by earlier tasks, as recycled stacks keep their pages).
 * Never waits; not a cancellation point.  Task only; -EPERM on a plain
 * thread, -ENOSYS if mincore() fails. */
BRAID_API ssize_t braid_stack_high_water(void);

/* ------------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------- */

/* A static description of code: a negative errno value returned by a braid
 * call (explained in braid's terms where braid gives it a meaning), a fate
 * (BRAID_OK, BRAID_PANICKED, BRAID_CANCELLED), or a positive errno value.
 * Never NULL.  Never waits; not a cancellation point; any thread. */
BRAID_API const char *braid_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* BRAID_H */
