/*
 * The plain-pthreads baseline of ../shared/bench/WORKLOADS.md (from the
 * repository root), section "pthread baseline": what a C user would do
 * without a runtime.
 *
 *     pthread-bench <workload> [N]
 *
 * prints one line "workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [k=v ...]"
 * on stdout, ending in rss_kb=<VmHWM>, and exits 0; a failed check exits 1.
 * Only spawn_many and ping_pong have a pthread version; every other workload
 * prints "workload=<name> unsupported=1" and exits 3.
 *
 * The main thread is the driver: t0 is taken just before it starts the
 * workload (the echo thread of ping_pong is created inside the timed region)
 * and the end when it has the result.
 *
 *     cc -O2 -pthread bench/compare/pthread/pthread_bench.c -o build/compare/pthread-bench
 *
 * (-DSIGNAL_UNDER_LOCK: see ping_pong.)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A field of /proc/self/status such as VmHWM, in kB. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':')
            v = atol(line + k + 1);
    if (f)
        fclose(f);
    return v;
}

static void fail(const char *workload, const char *why)
{
    fprintf(stderr, "%s: FAILED: %s\n", workload, why);
    exit(1);
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", what, strerror(rc));
        exit(2);
    }
}

static void report(const char *name, uint64_t n, uint64_t wall_ns, uint64_t ops)
{
    printf("workload=%s n=%" PRIu64 " wall_ms=%.3f ns_per_op=%.1f rss_kb=%ld\n", name, n,
           (double)wall_ns / 1e6, (double)wall_ns / (double)ops, status_kb("VmHWM"));
}

/* ---- spawn_many ----
 * Threads with default attributes.  At most 1,000 exist at once: create
 * 1,000, join those in order, repeat (pid_max and max_map_count forbid
 * 100,000 live threads). */

enum { MAX_LIVE = 1000 };

static atomic_uint_fast64_t counter;

static void *count_and_return(void *arg)
{
    atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    return arg;
}

static int spawn_many(uint64_t n)
{
    pthread_t th[MAX_LIVE];
    uint64_t sum = 0;
    uint64_t t0 = now_ns();
    for (uint64_t base = 0; base < n; base += MAX_LIVE) {
        uint64_t b = n - base < MAX_LIVE ? n - base : MAX_LIVE;
        for (uint64_t i = 0; i < b; i++)
            check(pthread_create(&th[i], NULL, count_and_return, (void *)(uintptr_t)(base + i)),
                  "pthread_create");
        for (uint64_t i = 0; i < b; i++) {
            void *r;
            check(pthread_join(th[i], &r), "pthread_join");
            sum += (uintptr_t)r;
        }
    }
    uint64_t wall = now_ns() - t0;
    if (sum != n * (n - 1) / 2 || atomic_load(&counter) != n)
        fail("spawn_many", "sum or counter");
    report("spawn_many", n, wall, n);
    return 0;
}

/* ---- ping_pong ----
 * A capacity-1 channel: a mutex, two condition variables and a full flag.
 * UINT64_MAX on A stops the echo thread.
 *
 * The condition variable is signalled after the mutex is released, so the
 * woken thread does not wake only to block on the mutex the signaller still
 * holds.  -DSIGNAL_UNDER_LOCK signals before the unlock (the textbook order,
 * equally correct).  Either way the cost per round trip depends mostly on
 * where the kernel puts the two threads: on one CPU ~2 us (two context
 * switches), spread over both vCPUs tens of us (cross-vCPU wake-ups, the
 * ~50 us of WORKLOADS.md).  Measured here (100,000 round trips, noisy):
 * signal after unlock mostly 1.8-3 us, sometimes ~10 us; signal under the
 * lock 3-50 us. */

#ifdef SIGNAL_UNDER_LOCK
#define SIGNAL_AND_UNLOCK(cv, mu) (pthread_cond_signal(cv), pthread_mutex_unlock(mu))
#else
#define SIGNAL_AND_UNLOCK(cv, mu) (pthread_mutex_unlock(mu), pthread_cond_signal(cv))
#endif

struct chan {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    bool full;
    uint64_t v;
};

#define CHAN_INIT                                                                   \
    {                                                                               \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, \
            false, 0                                                                \
    }

static void chan_send(struct chan *c, uint64_t v)
{
    pthread_mutex_lock(&c->mu);
    while (c->full)
        pthread_cond_wait(&c->not_full, &c->mu);
    c->v = v;
    c->full = true;
    SIGNAL_AND_UNLOCK(&c->not_empty, &c->mu);
}

static uint64_t chan_recv(struct chan *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->full)
        pthread_cond_wait(&c->not_empty, &c->mu);
    uint64_t v = c->v;
    c->full = false;
    SIGNAL_AND_UNLOCK(&c->not_full, &c->mu);
    return v;
}

static struct chan chan_a = CHAN_INIT, chan_b = CHAN_INIT;

static void *echo(void *arg)
{
    (void)arg;
    for (;;) {
        uint64_t v = chan_recv(&chan_a);
        if (v == UINT64_MAX)
            return NULL;
        chan_send(&chan_b, v);
    }
}

static int ping_pong(uint64_t n)
{
    if (n >= UINT64_MAX)
        fail("ping_pong", "N too large");
    uint64_t acc = 0;
    uint64_t t0 = now_ns();
    pthread_t th;
    check(pthread_create(&th, NULL, echo, NULL), "pthread_create");
    for (uint64_t i = 0; i < n; i++) {
        chan_send(&chan_a, i);
        acc += chan_recv(&chan_b);
    }
    chan_send(&chan_a, UINT64_MAX);
    check(pthread_join(th, NULL), "pthread_join");
    uint64_t wall = now_ns() - t0;
    if (acc != n * (n - 1) / 2)
        fail("ping_pong", "sum");
    report("ping_pong", n, wall, n);
    return 0;
}

struct workload {
    const char *name;
    uint64_t default_n;
    int (*run)(uint64_t n);
};

static const struct workload workloads[] = {
    { "spawn_many", 100000, spawn_many },
    { "ping_pong", 100000, ping_pong },
};

int main(int argc, char **argv)
{
    size_t nw = sizeof workloads / sizeof workloads[0];
    if (argc < 2) {
        fprintf(stderr, "usage: %s <workload> [N]\nworkloads:", argv[0]);
        for (size_t i = 0; i < nw; i++)
            fprintf(stderr, " %s", workloads[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    for (size_t i = 0; i < nw; i++) {
        if (strcmp(argv[1], workloads[i].name) == 0) {
            uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : workloads[i].default_n;
            if (n == 0) {
                fprintf(stderr, "N must be positive\n");
                return 2;
            }
            return workloads[i].run(n);
        }
    }
    printf("workload=%s unsupported=1\n", argv[1]);
    return 3;
}
