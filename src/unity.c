/*
 * All of libbraid except fiber.c, as one translation unit, so that the
 * compiler inlines across files: a spawn, a join and a context switch each
 * cross task.c, sched.c, handle.c and queue.c many times.  (The library is
 * still written and read as separate files; this is only how it is built.)
 * fiber.c is compiled on its own because it must never be instrumented by
 * the sanitizers (see fiber.h).
 */
#include "blocking.c"
#include "broadcast.c"
#include "chan.c"
#include "console.c"
#include "det.c"
#include "debug.c"
#include "error.c"
#include "handle.c"
#include "io.c"
#include "joinall.c"
#include "joinset.c"
#include "local.c"
#include "net.c"
#include "observe.c"
#include "panic.c"
#include "queue.c"
#include "reader.c"
#include "runtime.c"
#include "sched.c"
#include "signal.c"
#include "sleep.c"
#include "stack.c"
#include "symbolize.c"
#include "sync.c"
#include "task.c"
#include "timer.c"
#include "token.c"
#include "trace.c"
#include "unwind.c"
#include "util.c"
#include "wait.c"
