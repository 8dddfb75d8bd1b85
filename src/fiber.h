/*
 * Fibers: a context plus what the sanitizers and Valgrind must be told about
 * it.  Every switch between task stacks goes through here, so that:
 *
 *  - AddressSanitizer knows which stack is current (start/finish_switch_fiber
 *    around each switch; a dying fiber passes NULL so its fake stack, used by
 *    detect_stack_use_after_return, is released);
 *  - ThreadSanitizer keeps one shadow call stack per task (create_fiber,
 *    switch_to_fiber right before the switch);
 *  - Valgrind sees each task stack as a registered stack, not as a wild jump
 *    of the stack pointer.
 *
 * The sanitizers are detected at run time through weak symbols, so the
 * ordinary library is correct inside a sanitized program.  fiber.c itself is
 * compiled without instrumentation: TSan requires the switch to be announced
 * from code whose own entry/exit it does not track.
 */
#ifndef BRAID_FIBER_H
#define BRAID_FIBER_H

#include "internal.h"
#include "arch/ctx.h"

typedef struct braid__fiber {
    braid__ctx ctx;
    const void *stack_lo;   /* lowest usable address of the stack */
    size_t stack_size;
    void *asan_fake;        /* ASan's fake stack, saved while suspended */
    void *tsan;             /* TSan's fiber object */
    unsigned vg_id;         /* Valgrind's stack id */
} braid__fiber;

/* Which tools are present in this process (set by braid__fiber_detect);
 * braid__under_tools is their union, the one flag the fast paths test. */
extern bool braid__under_asan, braid__under_tsan, braid__under_valgrind, braid__under_tools;

void braid__fiber_detect(void);

/* Describe the calling thread's own stack as a fiber (the worker's
 * scheduler context). */
void braid__fiber_init_thread(braid__fiber *f);

/* Tell the tools about a new fiber / forget one (fiber.c). */
void braid__fiber_make_tools(braid__fiber *f);
void braid__fiber_release_tools(braid__fiber *f);

/* The top page of a recycled stack is about to hold a task record and a
 * first frame, at a cache colour that an earlier task's frames may have
 * used: the tools must forget what they recorded about it (redzones, memory
 * below a stack pointer). */
void braid__fiber_reuse_tools(char *top);

static inline void braid__fiber_reuse(char *top)
{
    if (BRAID_UNLIKELY(braid__under_tools))
        braid__fiber_reuse_tools(top);
}

/* A new fiber on [lo, lo + size) whose first switch-in calls entry(arg);
 * entry must call braid__fiber_entered() first. */
static inline void braid__fiber_make(braid__fiber *f, void *lo, size_t size,
                                     void (*entry)(void *), void *arg)
{
    braid__ctx_make(&f->ctx, lo, size, entry, arg);
    f->stack_lo = lo;
    f->stack_size = size;
    if (BRAID_UNLIKELY(braid__under_tools))
        braid__fiber_make_tools(f);
}

/* Forget a fiber that will never run again; call from another fiber. */
static inline void braid__fiber_release(braid__fiber *f)
{
    if (BRAID_UNLIKELY(braid__under_tools))
        braid__fiber_release_tools(f);
}

/* Switch from the running fiber to another; returns when switched back.
 * With a tool present the switch goes through fiber.c, which the sanitizers
 * do not instrument. */
void braid__fiber_switch_tools(braid__fiber *from, braid__fiber *to);

static inline void braid__fiber_switch(braid__fiber *from, braid__fiber *to)
{
    if (BRAID_LIKELY(!braid__under_tools))
        braid__ctx_switch(&from->ctx, &to->ctx);
    else
        braid__fiber_switch_tools(from, to);
}

/* Switch away from a fiber that will never run again. */
BRAID_NORETURN void braid__fiber_exit_tools(braid__fiber *from, braid__fiber *to);

static inline BRAID_NORETURN void braid__fiber_exit(braid__fiber *from, braid__fiber *to)
{
    if (BRAID_UNLIKELY(braid__under_tools))
        braid__fiber_exit_tools(from, to);
    braid__ctx_switch(&from->ctx, &to->ctx);
    __builtin_unreachable(); /* nothing switches back to a dead fiber */
}

/* The first call of every new fiber's entry function. */
void braid__fiber_entered_tools(void);

static inline void braid__fiber_entered(void)
{
    if (BRAID_UNLIKELY(braid__under_tools))
        braid__fiber_entered_tools();
}

#endif
