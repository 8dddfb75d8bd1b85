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
 * [lo, lo + size).  entry must never return. */
void braid__ctx_make(braid__ctx *c, void *lo, size_t size, void (*entry)(void *), void *arg);

#endif
