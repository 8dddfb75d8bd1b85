/*
 * The blocking pool: plain threads that run blocking C code (user
 * functions, file system calls, getaddrinfo) so that it never holds a
 * worker.  One pool per runtime, created with it and torn down last.
 */
#ifndef BRAID_BLOCKING_H
#define BRAID_BLOCKING_H

#include "internal.h"

struct addrinfo;
struct braid__panic_info;

typedef struct braid__bpool braid__bpool;

/* max_threads and keepalive_ms as in braid_config (0: the defaults).
 * Starts no thread.  Returns 0 or -ENOMEM. */
int braid__bpool_new(braid__bpool **out, unsigned max_threads, uint64_t keepalive_ms);

/* Stop and join every pool thread and free the pool.  Called once no task
 * of the runtime is left, so no job is queued; a thread may still be
 * finishing a resolution whose caller gave up, and is waited for. */
void braid__bpool_free(braid__bpool *p);

/* Whether the calling thread is a pool thread running a job. */
bool braid__blocking_in_job(void);

/* braid_panic() on a pool thread running a job: end the job as panicked
 * with info (the first report of the job wins; a later one is freed). */
BRAID_NORETURN void braid__blocking_panic(struct braid__panic_info *info);

/* ---- for tests ---- */

typedef struct braid__bpool_stats {
    unsigned threads, idle, running, resolving, queued;
} braid__bpool_stats;

void braid__bpool_get_stats(braid_runtime *rt, braid__bpool_stats *st);

/* Make every pool thread creation fail (tests of that path). */
extern _Atomic bool braid__bpool_fail_create;

/* What resolution calls instead of getaddrinfo when not NULL (set before
 * the runtime is created). */
extern int (*braid__resolve_hook)(const char *host, const char *port,
                                  const struct addrinfo *hints, struct addrinfo **res);

#endif
