/*
 * Building a new context for each backend.  The assembly backends share
 * their frame layout with the comment at the top of their .S file.
 */
#include "ctx.h"

#include <stdint.h>
#include <string.h>

#if defined(BRAID_CTX_PORTABLE)

#include <stdlib.h>

/* makecontext passes only int arguments, so the pointers travel in halves. */
static void portable_start(unsigned e_hi, unsigned e_lo, unsigned a_hi, unsigned a_lo)
{
    void (*entry)(void *) =
        (void (*)(void *))(((uintptr_t)e_hi << 16 << 16) | (uintptr_t)e_lo);
    void *arg = (void *)(((uintptr_t)a_hi << 16 << 16) | (uintptr_t)a_lo);
    entry(arg);
    abort();
}

void braid__ctx_make(braid__ctx *c, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    uintptr_t e = (uintptr_t)entry, a = (uintptr_t)arg;
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))portable_start, 4, (unsigned)(e >> 16 >> 16),
                (unsigned)e, (unsigned)(a >> 16 >> 16), (unsigned)a);
}

void braid__ctx_switch(braid__ctx *from, braid__ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

#else

/* The assembly backends need nothing here: see ctx.h and the .S files. */
typedef int braid__ctx_c_is_not_empty;

#endif
