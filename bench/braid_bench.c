/*
 * braid's implementation of the workloads of ../shared/bench/WORKLOADS.md.
 *
 *     braid-bench <workload> [N]
 *
 * prints one line "workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [k=v ...]"
 * and exits 0, or non-zero when the workload's own check fails.  Workloads
 * not implemented yet print "workload=<name> unsupported=1" and exit 3.
 *
 * Two workers, as for every runtime compared (BRAID_BENCH_WORKERS
 * overrides).  The driver is the root task of braid_block_on(); t0 is taken
 * just before it starts and the end when its result is back in main.
 */
#include <braid.h>

#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static atomic_uint_fast64_t counter;

static void fail(const char *workload, const char *why)
{
    fprintf(stderr, "%s: verification failed: %s\n", workload, why);
    exit(1);
}

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", what, braid_strerror(rc));
        exit(2);
    }
}

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

static braid_runtime *make_runtime_ex(bool migrate)
{
    braid_config cfg;
    braid_config_init(&cfg);
    const char *w = getenv("BRAID_BENCH_WORKERS");
    cfg.workers = w ? (unsigned)atoi(w) : 2;
    cfg.migrate = migrate;
    braid_runtime *rt;
    check(braid_runtime_new(&cfg, &rt), "braid_runtime_new");
    return rt;
}

static braid_runtime *make_runtime(void)
{
    return make_runtime_ex(false);
}

static void report(const char *name, uint64_t n, uint64_t wall_ns, uint64_t ops, const char *extra)
{
    printf("workload=%s n=%" PRIu64 " wall_ms=%.3f ns_per_op=%.1f%s%s\n", name, n,
           (double)wall_ns / 1e6, (double)wall_ns / (double)ops, extra[0] ? " " : "", extra);
}

/* Time the driver as the root task of a fresh two-worker runtime. */
static uint64_t run_driver(braid_runtime *rt, braid_fn driver, void *arg)
{
    uint64_t t0 = braid_now_ns();
    void *result;
    int fate = braid_block_on(rt, driver, arg, &result);
    uint64_t t1 = braid_now_ns();
    if (fate != BRAID_OK) {
        fprintf(stderr, "driver fate %d (%s)\n", fate, braid_strerror(fate));
        exit(2);
    }
    return t1 - t0;
}

/* ---- spawn_many ---- */

static void *count_and_return(void *arg)
{
    atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    return arg;
}

static void *spawn_many_driver(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    braid_task *h = malloc(n * sizeof *h);
    if (!h)
        return (void *)1;
    for (uint64_t i = 0; i < n; i++)
        check(braid_spawn(&h[i], count_and_return, (void *)(uintptr_t)i), "spawn");
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        void *r;
        if (braid_join(h[i], &r) != BRAID_OK)
            return (void *)1;
        sum += (uintptr_t)r;
    }
    free(h);
    *(uint64_t *)arg = sum;
    return NULL;
}

static int spawn_many(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    uint64_t box = n;
    uint64_t wall = run_driver(rt, spawn_many_driver, &box);
    if (box != n * (n - 1) / 2 || atomic_load(&counter) != n)
        fail("spawn_many", "sum or counter");
    report("spawn_many", n, wall, n, "");
    braid_runtime_free(rt);
    return 0;
}

/* ---- spawn_many_remote ---- */

static void *empty(void *arg)
{
    return arg;
}

static int spawn_many_remote(uint64_t n)
{
    enum { BATCH = 10000 };
    braid_runtime *rt = make_runtime();
    braid_task *h = malloc(BATCH * sizeof *h);
    uint64_t done = 0;
    uint64_t t0 = braid_now_ns();
    while (done < n) {
        uint64_t b = n - done < BATCH ? n - done : BATCH;
        for (uint64_t i = 0; i < b; i++)
            check(braid_spawn_on(rt, &h[i], empty, NULL), "spawn_on");
        for (uint64_t i = 0; i < b; i++)
            if (braid_join(h[i], NULL) != BRAID_OK)
                fail("spawn_many_remote", "join");
        done += b;
    }
    uint64_t wall = braid_now_ns() - t0;
    free(h);
    report("spawn_many_remote", n, wall, n, "");
    braid_runtime_free(rt);
    return 0;
}

/* ---- yield_many ---- */

enum { YIELDS = 1000 };

/* How many tasks each worker started: a task stays on the worker that
 * started it, so this split decides how the yields divide. */
static atomic_uint started_on[64];

static void *yielder(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&started_on[braid_worker_index() & 63], 1, memory_order_relaxed);
    for (int i = 0; i < YIELDS; i++)
        braid_yield();
    return (void *)(uintptr_t)YIELDS;
}

static void *yield_driver(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    braid_task *h = malloc(n * sizeof *h);
    for (uint64_t i = 0; i < n; i++)
        check(braid_spawn(&h[i], yielder, NULL), "spawn");
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        void *r;
        if (braid_join(h[i], &r) != BRAID_OK)
            return (void *)1;
        total += (uintptr_t)r;
    }
    free(h);
    *(uint64_t *)arg = total;
    return NULL;
}

static int yield_many(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    uint64_t box = n;
    uint64_t wall = run_driver(rt, yield_driver, &box);
    if (box != n * YIELDS)
        fail("yield_many", "total");
    unsigned most = 0;
    for (int i = 0; i < 64; i++)
        most = atomic_load(&started_on[i]) > most ? atomic_load(&started_on[i]) : most;
    char extra[64];
    snprintf(extra, sizeof extra, "most_on_one_worker=%u", most);
    report("yield_many", n, wall, n * YIELDS, extra);
    braid_runtime_free(rt);
    return 0;
}

/* ---- ping_pong ---- */

static braid_chan *pp_a, *pp_b;

static void *pp_echo(void *arg)
{
    (void)arg;
    uint64_t v;
    while (braid_chan_recv(pp_a, &v) == 0)
        check(braid_chan_send(pp_b, &v), "send B");
    return NULL;
}

static void *pp_driver(void *arg)
{
    uint64_t n = *(uint64_t *)arg, acc = 0, v;
    braid_task echo;
    check(braid_spawn(&echo, pp_echo, NULL), "spawn");
    for (uint64_t i = 0; i < n; i++) {
        check(braid_chan_send(pp_a, &i), "send A");
        check(braid_chan_recv(pp_b, &v), "recv B");
        acc += v;
    }
    check(braid_chan_close(pp_a), "close");
    check(braid_join(echo, NULL), "join");
    *(uint64_t *)arg = acc;
    return NULL;
}

static int ping_pong(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    check(braid_chan_new(&pp_a, sizeof(uint64_t), 1), "chan");
    check(braid_chan_new(&pp_b, sizeof(uint64_t), 1), "chan");
    uint64_t box = n;
    uint64_t wall = run_driver(rt, pp_driver, &box);
    if (box != n * (n - 1) / 2)
        fail("ping_pong", "sum");
    report("ping_pong", n, wall, n, "");
    braid_runtime_free(rt);
    return 0;
}

/* ---- mpsc (braid's own workload; not in WORKLOADS.md) ----
 * 4 producer tasks each send n/4 u64 values into one channel of capacity
 * 1,024; the driver receives and sums them all.  ops = n (ns per message). */

enum { MPSC_PRODUCERS = 4, MPSC_CAP = 1024 };
static braid_chan *mpsc_ch;

static void *mpsc_producer(void *arg)
{
    uint64_t count = (uintptr_t)arg;
    for (uint64_t i = 0; i < count; i++)
        check(braid_chan_send(mpsc_ch, &i), "send");
    check(braid_chan_sender_drop(mpsc_ch), "drop");
    return NULL;
}

static void *mpsc_driver(void *arg)
{
    uint64_t per = *(uint64_t *)arg / MPSC_PRODUCERS, sum = 0, v;
    for (int i = 0; i < MPSC_PRODUCERS; i++) {
        check(braid_chan_sender_dup(mpsc_ch), "dup");
        check(braid_spawn(NULL, mpsc_producer, (void *)(uintptr_t)per), "spawn");
    }
    check(braid_chan_sender_drop(mpsc_ch), "drop");
    while (braid_chan_recv(mpsc_ch, &v) == 0)
        sum += v;
    *(uint64_t *)arg = sum;
    return NULL;
}

static int mpsc(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    check(braid_chan_new(&mpsc_ch, sizeof(uint64_t), MPSC_CAP), "chan");
    uint64_t per = n / MPSC_PRODUCERS, box = n;
    uint64_t wall = run_driver(rt, mpsc_driver, &box);
    if (box != MPSC_PRODUCERS * (per * (per - 1) / 2))
        fail("mpsc", "sum");
    report("mpsc", per * MPSC_PRODUCERS, wall, per * MPSC_PRODUCERS, "");
    check(braid_chan_receiver_drop(mpsc_ch), "drop");
    braid_runtime_free(rt);
    return 0;
}

/* ---- chained_spawn ---- */

enum { DEPTH = 1000 };

/* chain(k): a task that signals done if k == 1, else spawns chain(k - 1).
 * The handles are dropped (detached), as Tokio's bench drops them. */
static braid_notify *chain_done;

static void *chain_link(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    if (k == 1)
        braid_notify_one(chain_done);
    else
        check(braid_spawn(NULL, chain_link, (void *)(k - 1)), "spawn");
    return NULL;
}

static void *chained_driver(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++) {
        check(braid_spawn(NULL, chain_link, (void *)(uintptr_t)DEPTH), "spawn");
        check(braid_notify_wait(chain_done), "wait");
        atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    }
    return NULL;
}

static int chained_spawn(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    check(braid_notify_new(&chain_done), "notify");
    uint64_t box = n;
    uint64_t wall = run_driver(rt, chained_driver, &box);
    if (atomic_load(&counter) != n)
        fail("chained_spawn", "chains completed");
    report("chained_spawn", n, wall, n * DEPTH, "");
    braid_runtime_free(rt);
    braid_notify_free(chain_done);
    return 0;
}

/* ---- fib_spawn ---- */

static void *fib(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    if (n < 2)
        return (void *)n;
    braid_task h;
    check(braid_spawn(&h, fib, (void *)(n - 1)), "spawn");
    uintptr_t b = (uintptr_t)fib((void *)(n - 2));
    void *a;
    if (braid_join(h, &a) != BRAID_OK)
        fail("fib_spawn", "join");
    return (void *)((uintptr_t)a + b);
}

static uint64_t fib_plain(uint64_t n)
{
    return n < 2 ? n : fib_plain(n - 1) + fib_plain(n - 2);
}

static int fib_spawn(uint64_t n)
{
    braid_runtime *rt = make_runtime();
    uint64_t t0 = braid_now_ns();
    void *r;
    if (braid_block_on(rt, fib, (void *)(uintptr_t)n, &r) != BRAID_OK)
        fail("fib_spawn", "fate");
    uint64_t wall = braid_now_ns() - t0;
    if ((uintptr_t)r != fib_plain(n))
        fail("fib_spawn", "value");
    uint64_t spawns = fib_plain(n + 1) - 1;
    report("fib_spawn", n, wall, spawns, "");
    braid_runtime_free(rt);
    return 0;
}

/* ---- sleep_many ---- */

static atomic_uint_fast64_t late_sum, late_max;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *sleeper(void *arg)
{
    uint64_t d = (uintptr_t)arg;
    uint64_t deadline = braid_now_ns() + d * 1000000u;
    braid_sleep_until(deadline);
    uint64_t now = braid_now_ns();
    uint64_t late = now > deadline ? now - deadline : 0;
    atomic_fetch_add_explicit(&late_sum, late, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&late_max, memory_order_relaxed);
    while (late > m && !atomic_compare_exchange_weak_explicit(&late_max, &m, late,
                                                              memory_order_relaxed,
                                                              memory_order_relaxed))
        ;
    return NULL;
}

static void *sleep_driver(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    braid_task *h = malloc(n * sizeof *h);
    uint64_t s = 42, sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t d = xorshift(&s) % 1001;
        sum += d;
        check(braid_spawn(&h[i], sleeper, (void *)(uintptr_t)d), "spawn");
    }
    for (uint64_t i = 0; i < n; i++)
        if (braid_join(h[i], NULL) != BRAID_OK)
            return (void *)1;
    free(h);
    *(uint64_t *)arg = sum;
    return NULL;
}

static int sleep_many(uint64_t n)
{
    uint64_t s = 42;
    static const uint64_t first[8] = { 278, 59, 625, 115, 676, 471, 86, 730 };
    for (int i = 0; i < 8; i++)
        if (xorshift(&s) % 1001 != first[i])
            fail("sleep_many", "duration generator");
    braid_runtime *rt = make_runtime();
    uint64_t box = n;
    uint64_t wall = run_driver(rt, sleep_driver, &box);
    if (n == 1000000 && box != 500416189)
        fail("sleep_many", "sum of durations");
    char extra[256];
    snprintf(extra, sizeof extra, "rss_peak_kb=%ld late_mean_us=%.1f late_max_us=%.1f pte_kb=%ld",
             status_kb("VmHWM"), (double)atomic_load(&late_sum) / (double)n / 1000.0,
             (double)atomic_load(&late_max) / 1000.0, status_kb("VmPTE"));
    report("sleep_many", n, wall, n, extra);
    braid_runtime_free(rt);
    return 0;
}

/* ---- idle_memory ---- */

static atomic_uint_fast64_t started, remaining, resleeps;
static uint64_t idle_n, idle_sleep_ms;
static braid_notify *idle_done;

static void *idle_task(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
    for (;;) {
        braid_sleep_ms(idle_sleep_ms);
        if (atomic_load_explicit(&started, memory_order_relaxed) == idle_n)
            break;
        atomic_fetch_add_explicit(&resleeps, 1, memory_order_relaxed);
    }
    if (atomic_fetch_sub_explicit(&remaining, 1, memory_order_acq_rel) == 1)
        braid_notify_one(idle_done);
    return NULL;
}

static void *idle_driver(void *arg)
{
    uint64_t *spawn_ns = arg;
    uint64_t t0 = braid_now_ns();
    for (uint64_t i = 0; i < idle_n; i++)
        check(braid_spawn(NULL, idle_task, NULL), "spawn");
    *spawn_ns = braid_now_ns() - t0;
    check(braid_notify_wait(idle_done), "wait");
    return NULL;
}

static int idle_memory(uint64_t n)
{
    const char *s = getenv("ANCHOR_IDLE_SLEEP_MS");
    idle_sleep_ms = s ? strtoull(s, NULL, 10) : 3000;
    idle_n = n;
    atomic_store(&remaining, n);
    check(braid_notify_new(&idle_done), "notify");
    braid_runtime *rt = make_runtime();
    long base = status_kb("VmRSS");
    uint64_t spawn_ns = 0;
    uint64_t wall = run_driver(rt, idle_driver, &spawn_ns);
    long peak = status_kb("VmHWM");
    char extra[320];
    snprintf(extra, sizeof extra,
             "rss_base_kb=%ld rss_peak_kb=%ld bytes_per_task=%.0f spawn_ms=%.3f resleeps=%" PRIu64
             " sleep_ms=%" PRIu64 " pte_kb=%ld",
             base, peak, (double)(peak - base) * 1024.0 / (double)n, (double)spawn_ns / 1e6,
             (uint64_t)atomic_load(&resleeps), idle_sleep_ms, status_kb("VmPTE"));
    report("idle_memory", n, wall, n, extra);
    braid_runtime_free(rt);
    braid_notify_free(idle_done);
    return 0;
}

/* ---- prewarm: touch fresh memory once so later runs fault less ---- */

static int prewarm(uint64_t mib)
{
    size_t len = (size_t)mib << 20;
    char *p = malloc(len);
    if (!p)
        return 1;
    for (size_t i = 0; i < len; i += 4096)
        p[i] = 1;
    free(p);
    fprintf(stderr, "prewarmed %" PRIu64 " MiB\n", mib);
    return 0;
}

/* ---- http_hello ---- */

/* The connection handler of examples/http_hello.c. */
#define HTTP_HELLO_NO_MAIN
#include "../examples/http_hello.c"


static int http_listener;

/* CPU time in microseconds, user + system, of who (RUSAGE_SELF: this
 * process, every thread; RUSAGE_CHILDREN: wrk, once waited for). */
static double cpu_us(int who)
{
    struct rusage u;
    getrusage(who, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* The server's CPU time while wrk ran, and wrk's own. */
static double http_server_us, http_wrk_us;

/* Connections per worker where each started (with migrate=0 they stay
 * there): printed as conns=a/b, since the p99 then depends on the split
 * (BENCHMARKS.md). */
static _Atomic unsigned http_conns[2];

static void *http_conn_counted(void *arg)
{
    int w = braid_worker_index();
    if (w >= 0 && w < 2)
        atomic_fetch_add_explicit(&http_conns[w], 1, memory_order_relaxed);
    return http_hello_conn(arg);
}

static void *http_accept_loop(void *arg)
{
    (void)arg;
    int fd;
    while ((fd = braid_accept(http_listener, NULL, NULL)) >= 0 || fd == -EMFILE ||
           fd == -ENFILE) {
        braid_task t;
        if (fd < 0) {
            braid_sleep_ms(10); /* out of descriptors: let connections end */
            continue;
        }
        if (braid_spawn(&t, http_conn_counted, (void *)(intptr_t)fd) < 0)
            braid_close(fd);
        else
            braid_detach(t);
    }
    return NULL;
}

/* The value of a wrk latency figure such as "1.20ms", in microseconds. */
static double wrk_us(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (!strncmp(end, "us", 2))
        return v;
    if (!strncmp(end, "ms", 2))
        return v * 1e3;
    if (*end == 's')
        return v * 1e6;
    return -1;
}

struct wrk_result {
    uint64_t requests, errors;
    double seconds, rps, p50_us, p99_us;
};

static void parse_wrk(char *text, struct wrk_result *r)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long long a, b, c, d;
        char *p = line + strspn(line, " ");
        if (!strncmp(p, "50%", 3))
            r->p50_us = wrk_us(p + 3 + strspn(p + 3, " "));
        else if (!strncmp(p, "99%", 3))
            r->p99_us = wrk_us(p + 3 + strspn(p + 3, " "));
        else if (strstr(p, "requests in"))
            sscanf(p, "%" SCNu64 " requests in %lfs", &r->requests, &r->seconds);
        else if (sscanf(p, "Socket errors: connect %llu, read %llu, write %llu, timeout %llu", &a,
                        &b, &c, &d) == 4)
            r->errors += a + b + c + d;
        else if (sscanf(p, "Non-2xx or 3xx responses: %llu", &a) == 1)
            r->errors += a;
        else if (!strncmp(p, "Requests/sec:", 13))
            r->rps = strtod(p + 13, NULL);
    }
}

/* Run wrk as a child and read its report through the reactor. */
static void *http_driver(void *arg)
{
    char url[64], *text = calloc(1, 65536);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)(uintptr_t)arg);
    int p[2];
    if (!text || pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *argv[] = { "wrk", "-t1", "-c64", "-d5s", "--latency", url, NULL };
    pid_t pid;
    double cpu0 = cpu_us(RUSAGE_SELF);
    int rc = posix_spawnp(&pid, "wrk", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    braid_task acc;
    check(braid_spawn(&acc, http_accept_loop, NULL), "spawn");
    size_t len = 0;
    ssize_t n;
    while (rc == 0 && len < 65535 && (n = braid_read(p[0], text + len, 65535 - len)) > 0)
        len += (size_t)n;
    braid_close(p[0]);
    int status = 1;
    if (rc == 0)
        waitpid(pid, &status, 0);
    http_server_us = cpu_us(RUSAGE_SELF) - cpu0;
    http_wrk_us = cpu_us(RUSAGE_CHILDREN);
    braid_close(http_listener); /* the accept loop ends */
    braid_join(acc, NULL);
    if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "http_hello: wrk failed (is it installed?)\n%s", text);
        free(text);
        return NULL;
    }
    return text;
}

static int http_hello(uint64_t port)
{
    /* A server sharing its cores with wrk: tasks migrate (BENCHMARKS.md). */
    braid_runtime *rt = make_runtime_ex(true);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%" PRIu64, port);
    http_listener = braid_tcp_listen(addr, 1024);
    check(http_listener, "listen");
    void *text;
    check(braid_block_on(rt, http_driver, (void *)(uintptr_t)port, &text), "block_on");
    if (!text)
        return 2;
    struct wrk_result r = { 0 };
    parse_wrk(text, &r);
    free(text);
    if (r.requests == 0 || r.rps <= 0)
        fail("http_hello", "wrk completed no requests");
    char extra[256];
    snprintf(extra, sizeof extra,
             "rps=%.0f p50_us=%.0f p99_us=%.0f cpu_ns_per_req=%.0f wrk_cpu_pct=%.0f conns=%u/%u "
             "migrate=%d errors=%" PRIu64 " port=%" PRIu64,
             r.rps, r.p50_us, r.p99_us, http_server_us * 1e3 / (double)r.requests,
             http_wrk_us / (r.seconds * 1e4), atomic_load(&http_conns[0]), atomic_load(&http_conns[1]),
             braid_runtime_migrates(rt), r.errors, port);
    printf("workload=http_hello n=%" PRIu64 " wall_ms=%.0f ns_per_op=%.1f %s\n", r.requests,
           r.seconds * 1e3, 1e9 / r.rps, extra);
    braid_runtime_free(rt);
    return 0;
}

struct workload {
    const char *name;
    uint64_t default_n;
    int (*run)(uint64_t n);
};

static const struct workload workloads[] = {
    { "spawn_many", 1000000, spawn_many },
    { "spawn_many_remote", 1000000, spawn_many_remote },
    { "yield_many", 1000, yield_many },
    { "ping_pong", 1000000, ping_pong },
    { "mpsc", 1000000, mpsc },
    { "chained_spawn", 1000, chained_spawn },
    { "fib_spawn", 25, fib_spawn },
    { "sleep_many", 1000000, sleep_many },
    { "idle_memory", 1000000, idle_memory },
    { "http_hello", 18080, http_hello },
    { "prewarm", 4096, prewarm },
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <workload> [N]\nworkloads:", argv[0]);
        for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
            fprintf(stderr, " %s", workloads[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++) {
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
