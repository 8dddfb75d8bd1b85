/*
 * The live console (console.c): a thread serving snapshots of a runtime on
 * a Unix socket, for tools/braid-console.
 */
#ifndef BRAID_CONSOLE_H
#define BRAID_CONSOLE_H

#include "internal.h"

#include <stdio.h>

typedef struct braid__console braid__console;

/* Open rt's console (listen on its socket) if braid_config.console_path
 * or BRAID_CONSOLE asks for one; call before the workers' threads start.
 * An explicit path's errors are returned; the environment's are reported
 * on stderr only. */
int braid__console_setup(braid_runtime *rt);

/* Start answering, once rt is complete: a snapshot reads the workers, the
 * observer and the blocking pool, so a client that connected at once must
 * not be answered before they exist. */
void braid__console_serve(braid_runtime *rt);

/* Stop serving rt's console, if any (idempotent): the thread ends, the
 * socket is removed.  Before the observer stops, as snapshots read it. */
void braid__console_stop_serving(braid_runtime *rt);

/* Then, once the observer (which keeps its reports here) has stopped,
 * free what is left. */
void braid__console_free(braid_runtime *rt);

/* The console is on (w->timing): charge the time since the last switch to
 * from (the task being left, or NULL from the scheduler), date the state
 * from enters, and start timing the next.  On w's thread. */
void braid__console_account(braid__worker *w, braid__task *from);

/* Keep an observer report for the console's "warn" records. */
void braid__console_warn(braid_runtime *rt, const char *summary);

#endif
