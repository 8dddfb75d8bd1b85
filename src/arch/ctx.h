/*
 * Context switching: save the callee-saved registers of the running context
 * and resume another.  Hand-written assembly for x86-64 (System V) and
 * aarch64 (AAPCS64); elsewhere, or with -DBRAID_PORTABLE_CTX, a fallback on
 * ucontext (correct but slower: swapcontext makes a sigprocmask syscall).
 *
 * Neither backend saves the floating-point control state (x87 control word,
 * MXCSR, FPCR): tasks share their worker's, as goroutines share their M's.
 * A task that changes the rounding mode must restore it before suspending.
 */
#ifndef BRAID_ARCH_CTX_H
#define BRAID_ARCH_CTX_H

#include <stddef.h>

#if defined(BRAID_PORTABLE_CTX) || !(defined(__x86_64__) || defined(__aarch64__))
#define BRAID_CTX_PORTABLE 1
#include <ucontext.h>
typedef struct braid__ctx {
    ucontext_t uc;
} braid__ctx;
#else
/* The saved stack pointer; everything else lives on the suspended stack. */
typedef struct braid__ctx {
    void *sp;
} braid__ctx;
#endif

/* Save the current context into *from and resume *to.  Returns when some
 * other context switches back to *from. */
void braid__ctx_switch(braid__ctx *from, braid__ctx *to);

/* Prepare *c so that switching to it calls entry(arg) on the stack
 * [lo, lo + size).  entry must never return.  Inline for the assembly
 * backends: it runs for every task start. */
#if defined(BRAID_CTX_PORTABLE)
void braid__ctx_make(braid__ctx *c, void *lo, size_t size, void (*entry)(void *), void *arg);
#else
#include <stdint.h>

/* The first frame of every new context (in the .S file). */
void braid__ctx_start(void);

/* Leave the running context for good and call entry(arg) on the stack
 * below top (16-byte aligned), exactly as a context braid__ctx_make built
 * for that stack would: a task that ends hands its stack to the next task
 * this way, saving the switch and the stack's trip through the cache.
 * Assembly backends only. */
__attribute__((noreturn)) void braid__ctx_jump(void *top, void (*entry)(void *), void *arg);

static inline void braid__ctx_make(braid__ctx *c, void *lo, size_t size, void (*entry)(void *),
                                   void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* The frame of braid__ctx_switch's comment: r15 r14 r13 r12 rbx rbp ret.
     * Once the switch has popped them, rsp == top, 16-byte aligned, as the
     * call in braid__ctx_start needs. */
    uintptr_t *sp = (uintptr_t *)(top - 7 * sizeof(uintptr_t));
    sp[0] = 0;                            /* r15 */
    sp[1] = 0;                            /* r14 */
    sp[2] = (uintptr_t)arg;               /* r13 */
    sp[3] = (uintptr_t)entry;             /* r12 */
    sp[4] = 0;                            /* rbx */
    sp[5] = 0;                            /* rbp: ends frame-pointer walks */
    sp[6] = (uintptr_t)braid__ctx_start;  /* return address */
#elif defined(__aarch64__)
    uintptr_t *sp = (uintptr_t *)(top - 176);
    for (int i = 0; i < 22; i++)
        sp[i] = 0;
    sp[0] = (uintptr_t)entry;             /* x19 */
    sp[1] = (uintptr_t)arg;               /* x20 */
    sp[11] = (uintptr_t)braid__ctx_start; /* x30 */
#endif
    c->sp = sp;
}
#endif

#endif
