/*
 * Panics and fault isolation.
 *
 * A panic ends one task: its defers run (innermost first, shielded from
 * cancellation) on its own stack, then the task exits with fate
 * BRAID_PANICKED.  No frames are unwound: the stack is simply abandoned and
 * recycled, which is why defers are the only cleanup that runs.
 *
 * Faults.  A SIGSEGV whose address lies in the running task's guard region
 * is a stack overflow, and becomes a panic of that task ("stack overflow in
 * task N").  With isolate_faults, SIGSEGV, SIGBUS, SIGFPE and SIGILL raised
 * by the task's own code become panics too, and the runtime is marked
 * tainted.  A fault is converted only when all of these hold; anything else
 * goes to the previous handler (or the default action, so core dumps work):
 *
 *   - it was raised by the kernel (si_code > 0), not sent by kill/raise;
 *   - the thread is a worker running a task, and the interrupted stack
 *     pointer lies within that task's stack or guard;
 *   - the faulting instruction is outside libbraid, libc, the dynamic
 *     loader and libgcc_s: a fault there may have left a lock held (malloc's
 *     arena, a stdio stream) or the runtime's own structures half-updated,
 *     and resuming would hang or corrupt the process.
 *
 * Never SIGABRT: abort() is how glibc reports heap corruption and stack
 * smashing, and a server that survives it offers an attacker endless
 * retries.
 *
 * The handler never switches stacks itself (SIGSEGV would stay blocked, and
 * the next fault would kill the process).  It rewrites the interrupted
 * context so that returning from the handler resumes in a trampoline on the
 * worker's rescue stack, with the signal mask restored by sigreturn.  The
 * trampoline moves to a fresh task stack, runs the task's defers there and
 * ends the task.  The handler runs on a per-thread sigaltstack (the task's
 * own stack may be exhausted), allocates nothing and reads only
 * initial-exec thread-locals.
 *
 * Fault isolation is off under AddressSanitizer and ThreadSanitizer, which
 * own those signals.
 */
#ifndef BRAID_PANIC_H
#define BRAID_PANIC_H

#include "internal.h"

#include <stdarg.h>

typedef struct braid__panic_info {
    bool is_static;
    const char *file;
    int line;
    char message[256];
} braid__panic_info;

/* A panic report, or a static "out of memory" one when malloc fails. */
braid__panic_info *braid__panic_info_new(const char *file, int line, const char *fmt, va_list ap);
braid__panic_info *braid__panic_info_fmt(const char *file, int line, const char *fmt, ...)
    BRAID_PRINTF(3, 4);
void braid__panic_info_free(braid__panic_info *info);

/* Copy a report into an outcome of the given size. */
void braid__panic_info_fill(const braid__panic_info *info, braid_outcome *out, size_t size);

/* Report the panic of a detached task through the runtime's hook. */
void braid__panic_report(braid_runtime *rt, uint64_t id, const char *name,
                         const braid__panic_info *info);

/* Run t's defers and end it as panicked (t->panic is set). */
BRAID_NORETURN void braid__panic_unwind(braid__task *t);

/* Give back the stacks a task took after faults. */
void braid__panic_release_extra(braid__worker *w, braid__task *t);

/* Per-worker rescue and signal stacks. */
int braid__panic_worker_init(braid__worker *w);
void braid__panic_worker_destroy(braid__worker *w);

/* Install / restore the worker's sigaltstack on the calling thread. */
void braid__panic_thread_enter(braid__worker *w);
void braid__panic_thread_leave(braid__worker *w);

/* Install the process-wide fault handlers (counted per runtime). */
void braid__faults_acquire(void);
void braid__faults_release(void);

#endif
