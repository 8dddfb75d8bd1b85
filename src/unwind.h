/*
 * Unwinding a copied stack by its DWARF call frame information, for the
 * watchdog's backtraces of a task caught running (observe.c).
 *
 * Frame pointers alone lose a frame whenever the innermost function keeps
 * none: libc's system call wrappers (read, nanosleep) are built without
 * them, so a walk from the interrupted frame pointer goes straight from
 * read to the caller's caller, and the function that blocked is the one
 * missing.  The call frame information (.eh_frame, which every module
 * carries for exceptions and which the linker indexes in .eh_frame_hdr)
 * says, for any instruction, where the caller's stack pointer, frame
 * pointer and return address are.
 *
 * The signal handler only copies registers and the top of the stack;
 * this code runs later, on another thread, under dl_iterate_phdr's lock
 * (so no module is unloaded while its tables are read).  It reads nothing
 * of the task's stack but the copy, and nothing of a module outside its
 * loaded segments.  Whatever it does not understand (a module without the
 * index, DWARF expressions, a rule for a register it does not track, a
 * read past the copy) ends the walk with false: the caller then goes on
 * along the frame pointers.
 */
#ifndef BRAID_UNWIND_H
#define BRAID_UNWIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The registers a walk needs.  lr: aarch64's link register (x30), which
 * holds the return address of a function that has not saved it; unused
 * on x86-64. */
typedef struct braid__unwind_regs {
    uintptr_t pc, sp, fp, lr;
} braid__unwind_regs;

/* Words copied from the stack: stack[i] was at base + i * sizeof(uintptr_t). */
typedef struct braid__stack_copy {
    uintptr_t base;
    const uintptr_t *words;
    size_t n;
} braid__stack_copy;

/* Replace *r, a frame of the copied stack, by its caller's frame.  first:
 * r is the interrupted frame, whose pc is the instruction it was stopped
 * at rather than a return address.  False (and *r unchanged) where the
 * call frame information does not tell, or at the outermost frame.  Not
 * for signal handlers (dl_iterate_phdr takes a lock). */
bool braid__unwind_step(braid__unwind_regs *r, bool first, const braid__stack_copy *stack);

#endif
