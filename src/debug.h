/*
 * What debuggers read (gdb/braid.py): the list of live runtimes, from
 * which they find every worker and every started task, in a live process
 * or in a core file.
 */
#ifndef BRAID_DEBUG_H
#define BRAID_DEBUG_H

#include "internal.h"

/* The live runtimes, newest first, linked through reg_next. */
extern braid_runtime *braid__runtimes;

/* Add a fully built runtime to the list / take it off (before freeing). */
void braid__debug_register(braid_runtime *rt);
void braid__debug_unregister(braid_runtime *rt);

#endif
