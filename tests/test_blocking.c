/* The blocking pool: braid_spawn_blocking (join, cancel, detach, panic,
 * JoinSet), the pool's growth, limit and keep-alive, name resolution and
 * its cap, file helpers, and shutdown with work queued and running. */
#include "test.h"
#include "blocking.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/stat.h>

/* ---- helpers ---- */

/* A gate that plain pool threads block on until a task opens it. */
struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    int open;
};

#define GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static void gate_wait(struct gate *g)
{
    pthread_mutex_lock(&g->m);
    while (!g->open)
        pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->m);
    g->open = 1;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}

static braid_runtime *new_rt(unsigned workers, unsigned threads, uint64_t keepalive_ms)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.blocking_threads = threads;
    cfg.blocking_keepalive_ms = keepalive_ms;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    return rt;
}

static void run_on(braid_runtime *rt, braid_fn fn, void *arg)
{
    void *result;
    CHECK_EQ(braid_block_on(rt, fn, arg, &result), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static braid__bpool_stats stats(void)
{
    braid__bpool_stats st;
    braid__bpool_get_stats(braid_current_runtime(), &st);
    return st;
}

/* From a task: poll the pool until pred holds (60 s at most). */
static void await_pool(bool (*pred)(const braid__bpool_stats *, unsigned), unsigned want)
{
    uint64_t give_up = test_now_ms() + 60000;
    for (;;) {
        braid__bpool_stats st = stats();
        if (pred(&st, want))
            return;
        if (test_now_ms() > give_up)
            TEST_FAIL("pool: threads %u idle %u running %u queued %u", st.threads, st.idle,
                      st.running, st.queued);
        braid_sleep_ms(1);
    }
}

static bool queued_is(const braid__bpool_stats *st, unsigned n)
{
    return st->queued == n;
}

static bool threads_is(const braid__bpool_stats *st, unsigned n)
{
    return st->threads == n;
}

/* Threads named braid-blocking in this process, from /proc. */
static int pool_threads_in_proc(void)
{
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f) && strncmp(comm, "braid-blocking", 14) == 0)
                n++;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}

/* ---- spawn_blocking: values, where fn runs ---- */

static void *on_pool(void *arg)
{
    /* A plain thread: no worker, no task. */
    CHECK_EQ(braid_worker_index(), -EPERM);
    CHECK_EQ(braid_current_id(), 0);
    return (void *)((uintptr_t)arg * 3);
}

static void *value_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn_blocking(&h, on_pool, (void *)14), 0);
    void *r = NULL;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 42);
    braid_outcome out = BRAID_OUTCOME_INIT;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "blocker";
    CHECK_EQ(braid_spawn_blocking_ex(&h, &o, on_pool, (void *)5), 0);
    CHECK_EQ(braid_join_ex_until(h, &out, braid_deadline_ms(30000)), BRAID_OK);
    CHECK_EQ((uintptr_t)out.value, 15);
    CHECK_EQ(braid_spawn_blocking(&h, NULL, NULL), -EINVAL);
    return NULL;
}

TEST(spawn_blocking_join_returns_the_value)
{
    run_on(new_rt(2, 0, 0), value_root, NULL);
    run_on(new_rt(1, 0, 0), value_root, NULL); /* current-thread runtime */
    /* Like braid_spawn: a plain thread has no runtime to spawn on. */
    braid_task h;
    CHECK_EQ(braid_spawn_blocking(&h, on_pool, NULL), -EPERM);
}

/* A plain thread joins a blocking task spawned by a task. */
static void *spawn_for_main(void *arg)
{
    CHECK_EQ(braid_spawn_blocking((braid_task *)arg, on_pool, (void *)7), 0);
    return NULL;
}

TEST(spawn_blocking_joined_from_a_plain_thread)
{
    braid_runtime *rt = new_rt(2, 0, 0);
    braid_task h;
    CHECK_EQ(braid_block_on(rt, spawn_for_main, &h, NULL), BRAID_OK);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 21);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

/* ---- growth, limit, keep-alive ---- */

#define GROWTH_JOBS 64
static pthread_barrier_t growth_barrier;

static void *meet(void *arg)
{
    /* Returns only once all 64 are here: they must run at once. */
    pthread_barrier_wait(&growth_barrier);
    return arg;
}

static void *growth_root(void *arg)
{
    (void)arg;
    pthread_barrier_init(&growth_barrier, NULL, GROWTH_JOBS);
    braid_task h[GROWTH_JOBS];
    for (uintptr_t i = 0; i < GROWTH_JOBS; i++)
        CHECK_EQ(braid_spawn_blocking(&h[i], meet, (void *)i), 0);
    for (uintptr_t i = 0; i < GROWTH_JOBS; i++) {
        void *r;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK_EQ((uintptr_t)r, i);
    }
    braid__bpool_stats st = stats();
    CHECK_EQ(st.threads, GROWTH_JOBS); /* no more than needed */
    pthread_barrier_destroy(&growth_barrier);
    return NULL;
}

TEST(pool_grows_to_run_many_jobs_at_once)
{
    run_on(new_rt(2, 0, 0), growth_root, NULL);
}

static atomic_int running_now, running_max, ran_count;
static struct gate max_gate = GATE_INIT;

static void *count_and_wait(void *arg)
{
    int n = atomic_fetch_add(&running_now, 1) + 1;
    int m = atomic_load(&running_max);
    while (n > m && !atomic_compare_exchange_weak(&running_max, &m, n))
        ;
    gate_wait(&max_gate);
    atomic_fetch_sub(&running_now, 1);
    atomic_fetch_add(&ran_count, 1);
    return arg;
}

static void *max_root(void *arg)
{
    (void)arg;
    braid_task h[8];
    for (uintptr_t i = 0; i < 8; i++)
        CHECK_EQ(braid_spawn_blocking(&h[i], count_and_wait, (void *)i), 0);
    test_await(&running_now, 2);
    await_pool(queued_is, 6); /* every proxy has handed its job over */
    braid__bpool_stats st = stats();
    CHECK_EQ(st.threads, 2);
    CHECK_EQ(st.running, 2);
    CHECK_EQ(atomic_load(&running_now), 2);
    gate_open(&max_gate);
    for (uintptr_t i = 0; i < 8; i++) {
        void *r;
        CHECK_EQ(braid_join(h[i], &r), BRAID_OK);
        CHECK_EQ((uintptr_t)r, i);
    }
    CHECK_EQ(atomic_load(&ran_count), 8);
    CHECK_EQ(atomic_load(&running_max), 2);
    return NULL;
}

TEST(pool_respects_its_maximum)
{
    run_on(new_rt(2, 2, 0), max_root, NULL);
}

static pthread_barrier_t idle_barrier;

static void *meet4(void *arg)
{
    pthread_barrier_wait(&idle_barrier);
    return arg;
}

static void *keepalive_root(void *arg)
{
    (void)arg;
    pthread_barrier_init(&idle_barrier, NULL, 4);
    braid_task h[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_spawn_blocking(&h[i], meet4, NULL), 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    pthread_barrier_destroy(&idle_barrier);
    /* Idle threads exit once the keep-alive (20 ms) is over: by the pool's
     * count, and for real (gone from /proc). */
    await_pool(threads_is, 0);
    uint64_t give_up = test_now_ms() + 60000;
    while (pool_threads_in_proc() != 0) {
        if (test_now_ms() > give_up)
            TEST_FAIL("pool threads still in /proc: %d", pool_threads_in_proc());
        braid_sleep_ms(5);
    }
    /* The pool starts again from nothing. */
    braid_task again;
    CHECK_EQ(braid_spawn_blocking(&again, on_pool, (void *)1), 0);
    void *r;
    CHECK_EQ(braid_join(again, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 3);
    return NULL;
}

TEST(idle_threads_exit_after_the_keepalive)
{
    run_on(new_rt(2, 0, 20), keepalive_root, NULL);
}

/* ---- cancel, detach, panic, JoinSet ---- */

static atomic_int started, dropped, never_ran;
static struct gate hold_gate = GATE_INIT;

static void *hold(void *arg)
{
    atomic_fetch_add(&started, 1);
    gate_wait(&hold_gate);
    return arg;
}

static void *must_not_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&never_ran, 1);
    return NULL;
}

static void count_drop(void *arg)
{
    (void)arg;
    atomic_fetch_add(&dropped, 1);
}

static void *cancel_before_root(void *arg)
{
    (void)arg;
    braid_task a, b, c;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = count_drop;
    CHECK_EQ(braid_spawn_blocking(&a, hold, (void *)9), 0);
    test_await(&started, 1); /* the only thread is taken */
    /* b's job waits in the queue when it is cancelled: withdrawn. */
    CHECK_EQ(braid_spawn_blocking_ex(&b, &o, must_not_run, NULL), 0);
    await_pool(queued_is, 1);
    CHECK_EQ(braid_cancel(b), 0);
    CHECK_EQ(braid_join(b, NULL), BRAID_CANCELLED);
    CHECK_EQ(atomic_load(&dropped), 1);
    CHECK_EQ(stats().queued, 0);
    /* c is cancelled at once (its task may not even have started). */
    CHECK_EQ(braid_spawn_blocking_ex(&c, &o, must_not_run, NULL), 0);
    CHECK_EQ(braid_cancel(c), 0);
    braid_outcome out = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(c, &out), BRAID_CANCELLED);
    CHECK(out.value == NULL);
    CHECK_EQ(atomic_load(&dropped), 2);
    gate_open(&hold_gate);
    void *r;
    CHECK_EQ(braid_join(a, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 9);
    CHECK_EQ(atomic_load(&never_ran), 0);
    return NULL;
}

TEST(cancel_before_start_never_runs)
{
    run_on(new_rt(2, 1, 0), cancel_before_root, NULL);
}

static void *cancel_after_root(void *arg)
{
    (void)arg;
    braid_task a;
    CHECK_EQ(braid_spawn_blocking(&a, hold, (void *)77), 0);
    test_await(&started, 1);
    CHECK_EQ(braid_cancel(a), 0); /* too late: it runs to the end */
    CHECK_EQ(braid_cancel(a), 0);
    CHECK(!braid_is_finished(a));
    CHECK_EQ(braid_join_until(a, NULL, braid_deadline_ms(5)), -ETIMEDOUT);
    gate_open(&hold_gate);
    braid_outcome out = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(a, &out), BRAID_OK);
    CHECK_EQ((uintptr_t)out.value, 77);
    return NULL;
}

TEST(cancel_after_start_returns_the_value)
{
    run_on(new_rt(2, 0, 0), cancel_after_root, NULL);
}

static atomic_int detached_done;

static void *detached_job(void *arg)
{
    (void)arg;
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

static void *panicking_job(void *arg)
{
    if (arg)
        braid_panic("blocking job failed: %d", 42);
    return NULL;
}

static atomic_int hook_calls;

static void panic_hook(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    (void)id;
    (void)user;
    CHECK_STR(name, "doomed");
    CHECK(strstr(o->message, "blocking job failed: 42") != NULL);
    atomic_fetch_add(&hook_calls, 1);
}

static void *detach_panic_root(void *arg)
{
    (void)arg;
    braid_task h;
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(braid_spawn_blocking(&h, detached_job, NULL), 0);
        CHECK_EQ(braid_detach(h), 0);
    }
    CHECK_EQ(braid_spawn_blocking(NULL, detached_job, NULL), 0); /* detached at once */
    test_await(&detached_done, 9);
    /* A panic inside fn is the task's panic. */
    CHECK_EQ(braid_spawn_blocking(&h, panicking_job, (void *)1), 0);
    braid_outcome out = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(h, &out), BRAID_PANICKED);
    CHECK(strstr(out.message, "blocking job failed: 42") != NULL);
    CHECK_STR(out.file, __FILE__);
    CHECK(out.value == NULL);
    /* The pool thread survived it. */
    CHECK_EQ(braid_spawn_blocking(&h, panicking_job, NULL), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    /* A detached one goes to the panic hook, with its name. */
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "doomed";
    CHECK_EQ(braid_spawn_blocking_ex(&h, &o, panicking_job, (void *)1), 0);
    CHECK_EQ(braid_detach(h), 0);
    test_await(&hook_calls, 1);
    return NULL;
}

TEST(detach_and_panic)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.panic_hook = panic_hook;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    run_on(rt, detach_panic_root, NULL);
}

/* Opens the gate once the JoinSet's free has withdrawn every queued job. */
static void *open_hold_gate(void *arg)
{
    await_pool(queued_is, 0);
    gate_open(&hold_gate);
    return arg;
}

static void *joinset_root(void *arg)
{
    (void)arg;
    braid_joinset *s;
    CHECK_EQ(braid_joinset_new(&s), 0);
    long want = 0;
    for (uintptr_t i = 1; i <= 20; i++) {
        CHECK_EQ(braid_joinset_spawn_blocking(s, NULL, on_pool, (void *)i, NULL), 0);
        want += 3 * (long)i;
    }
    long sum = 0;
    braid_outcome out = BRAID_OUTCOME_INIT;
    int fate;
    while ((fate = braid_joinset_join_next(s, &out, NULL)) >= 0) {
        CHECK_EQ(fate, BRAID_OK);
        sum += (long)(uintptr_t)out.value;
    }
    CHECK_EQ(fate, -ENOENT);
    CHECK_EQ(sum, want);
    /* Freeing the set cancels what is left: queued jobs never run, the
     * running one finishes. */
    CHECK_EQ(braid_joinset_spawn_blocking(s, NULL, hold, NULL, NULL), 0);
    test_await(&started, 1);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(braid_joinset_spawn_blocking(s, NULL, must_not_run, NULL, NULL), 0);
    await_pool(queued_is, 5);
    braid_task opener;
    CHECK_EQ(braid_spawn(&opener, open_hold_gate, NULL), 0);
    CHECK_EQ(braid_joinset_free(s), 0);
    CHECK_EQ(braid_join(opener, NULL), BRAID_OK);
    return NULL;
}

TEST(joinset_with_blocking_tasks)
{
    run_on(new_rt(2, 1, 0), joinset_root, NULL);
    /* must_not_run may have run only if its job was taken before the
     * free: with one thread held by hold, it could not. */
    CHECK_EQ(atomic_load(&never_ran), 0);
}

/* ---- name resolution ---- */

static void check_loopback(struct addrinfo *res)
{
    CHECK(res != NULL);
    CHECK_EQ(res->ai_family, AF_INET);
    struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
    CHECK_EQ(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    CHECK_EQ(ntohs(sin->sin_port), 8080);
}

static void *resolve_root(void *arg)
{
    (void)arg;
    struct addrinfo hints = { 0 }, *res = (void *)1;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    errno = 4321;
    CHECK_EQ(braid_resolve("localhost", "8080", &hints, &res), 0);
    CHECK_EQ(errno, 4321);
    check_loopback(res);
    freeaddrinfo(res);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    CHECK_EQ(braid_resolve_until("127.0.0.1", "8080", &hints, &res, braid_deadline_ms(30000)), 0);
    check_loopback(res);
    freeaddrinfo(res);
    /* Not numeric, with AI_NUMERICHOST: a clean error, res NULL. */
    res = (void *)1;
    CHECK_EQ(braid_resolve("localhost", "8080", &hints, &res), -ENOENT);
    CHECK(res == NULL);
    CHECK_EQ(braid_resolve("localhost", "8080", &hints, NULL), -EINVAL);
    hints.ai_flags = 0;
    hints.ai_family = 12345;
    CHECK_EQ(braid_resolve("localhost", "8080", &hints, &res), -EAFNOSUPPORT);
    return NULL;
}

TEST(resolve_localhost_and_numeric)
{
    run_on(new_rt(2, 0, 0), resolve_root, NULL);
    /* From a plain thread it resolves inline. */
    struct addrinfo hints = { 0 }, *res;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    CHECK_EQ(braid_resolve("localhost", "8080", &hints, &res), 0);
    check_loopback(res);
    freeaddrinfo(res);
}

static void *bad_name_root(void *arg)
{
    (void)arg;
    struct addrinfo *res = (void *)1;
    int rc = braid_resolve_until("no-such-host.invalid", "80", NULL, &res, braid_deadline_ms(5000));
    if (rc == -ETIMEDOUT)
        SKIP("the resolver took more than 5 s to fail");
    /* No DNS here: not found, or a temporary failure; never a success. */
    CHECK(rc == -ENOENT || rc == -ENODATA || rc == -EAGAIN);
    CHECK(res == NULL);
    CHECK(strlen(braid_strerror(rc)) > 0);
    return NULL;
}

TEST(resolve_a_bad_name_fails)
{
    run_on(new_rt(2, 0, 0), bad_name_root, NULL);
}

/* A resolver that blocks until released, then answers with the real
 * 127.0.0.1 (so an abandoned result must be freed by the pool). */
static atomic_int resolver_entered;
static struct gate resolver_gate = GATE_INIT;

static int slow_resolver(const char *host, const char *port, const struct addrinfo *hints,
                         struct addrinfo **res)
{
    (void)host;
    atomic_fetch_add(&resolver_entered, 1);
    gate_wait(&resolver_gate);
    struct addrinfo h = { 0 };
    h.ai_family = AF_INET;
    h.ai_flags = AI_NUMERICHOST;
    (void)hints;
    return getaddrinfo("127.0.0.1", port, &h, res);
}

static void *resolve_task(void *arg)
{
    struct addrinfo *res;
    int rc = braid_resolve("anything", "8080", NULL, &res);
    if (rc == 0) {
        check_loopback(res);
        freeaddrinfo(res);
    }
    (void)arg;
    return (void *)(intptr_t)rc;
}

static void *write_read_task(void *arg)
{
    const char *path = arg;
    CHECK_EQ(braid_file_write_all(path, "not starved", 11), 0);
    void *data;
    size_t len;
    CHECK_EQ(braid_file_read_all(path, &data, &len), 0);
    CHECK_EQ(len, 11);
    CHECK_STR(data, "not starved");
    free(data);
    CHECK_EQ(unlink(path), 0);
    return NULL;
}

static void *starve_root(void *arg)
{
    braid_task r1, r2, f;
    CHECK_EQ(braid_spawn(&r1, resolve_task, NULL), 0);
    test_await(&resolver_entered, 1);
    CHECK_EQ(braid_spawn(&r2, resolve_task, NULL), 0);
    await_pool(queued_is, 1); /* held back: resolution may use 1 of 2 threads */
    CHECK_EQ(stats().resolving, 1);
    /* A queued resolution whose deadline passes is withdrawn. */
    struct addrinfo *res = (void *)1;
    CHECK_EQ(braid_resolve_until("y", "80", NULL, &res, braid_deadline_ms(20)), -ETIMEDOUT);
    CHECK(res == NULL);
    CHECK_EQ(stats().queued, 1);
    /* File work goes past the queued resolution, to the second thread. */
    CHECK_EQ(braid_spawn(&f, write_read_task, arg), 0);
    CHECK_EQ(braid_join_until(f, NULL, braid_deadline_ms(30000)), BRAID_OK);
    CHECK_EQ(atomic_load(&resolver_entered), 1);
    gate_open(&resolver_gate);
    void *rc;
    CHECK_EQ(braid_join(r1, &rc), BRAID_OK);
    CHECK_EQ((intptr_t)rc, 0);
    CHECK_EQ(braid_join(r2, &rc), BRAID_OK);
    CHECK_EQ((intptr_t)rc, 0);
    CHECK_EQ(atomic_load(&resolver_entered), 2);
    return NULL;
}

static char *temp_dir(void)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/braid-blocking-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    return dir;
}

TEST(resolution_does_not_starve_file_work)
{
    braid__resolve_hook = slow_resolver;
    char path[128];
    char *dir = temp_dir();
    snprintf(path, sizeof path, "%s/f", dir);
    run_on(new_rt(2, 2, 0), starve_root, path);
    CHECK_EQ(rmdir(dir), 0);
}

static void *abandon_root(void *arg)
{
    (void)arg;
    braid_task r;
    CHECK_EQ(braid_spawn(&r, resolve_task, NULL), 0);
    test_await(&resolver_entered, 1);
    /* Cancelled while getaddrinfo runs: it returns at once. */
    CHECK_EQ(braid_cancel(r), 0);
    void *rc;
    CHECK_EQ(braid_join_until(r, &rc, braid_deadline_ms(30000)), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)rc, -ECANCELED);
    /* So does a deadline. */
    struct addrinfo *res = (void *)1;
    CHECK_EQ(braid_resolve_until("x", "8080", NULL, &res, braid_deadline_ms(1)), -ETIMEDOUT);
    CHECK(res == NULL);
    /* The pool threads still hold both calls; their results are freed
     * when the gate opens (valgrind checks). */
    CHECK_EQ(stats().resolving, 2);
    gate_open(&resolver_gate);
    return NULL;
}

TEST(resolution_left_by_its_caller_is_freed)
{
    braid__resolve_hook = slow_resolver;
    run_on(new_rt(2, 0, 0), abandon_root, NULL);
}

/* ---- files ---- */

static void *files_root(void *arg)
{
    const char *dir = arg;
    char path[128], missing[128];
    snprintf(path, sizeof path, "%s/a", dir);
    snprintf(missing, sizeof missing, "%s/missing", dir);
    errno = 1234;
    int fd = braid_file_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ(braid_file_write(fd, "hello", 5, 0), 0);
    CHECK_EQ(braid_file_write(fd, " world", 6, 5), 0);
    CHECK_EQ(braid_file_fsync(fd), 0);
    char buf[32] = "";
    CHECK_EQ(braid_file_read(fd, buf, sizeof buf, 0), 11);
    CHECK(memcmp(buf, "hello world", 11) == 0);
    CHECK_EQ(braid_file_read(fd, buf, 5, 6), 5);
    CHECK(memcmp(buf, "world", 5) == 0);
    CHECK_EQ(braid_file_read(fd, buf, sizeof buf, 100), 0); /* past the end */
    /* off < 0: the current position (still 0: pread/pwrite leave it). */
    CHECK_EQ(braid_file_read(fd, buf, 5, -1), 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(braid_file_close(fd), 0);
    CHECK_EQ(errno, 1234);
    void *data;
    size_t len;
    CHECK_EQ(braid_file_read_all(path, &data, &len), 0);
    CHECK_EQ(len, 11);
    CHECK_STR(data, "hello world");
    free(data);
    /* write_all truncates; empty files read as "". */
    CHECK_EQ(braid_file_write_all(path, "", 0), 0);
    CHECK_EQ(braid_file_read_all(path, &data, NULL), 0);
    CHECK_STR(data, "");
    free(data);
    /* A bigger file than one read's worth, and /proc's size-0 files. */
    size_t big = 300000;
    char *blob = malloc(big);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)('a' + i % 26);
    CHECK_EQ(braid_file_write_all(path, blob, big), 0);
    CHECK_EQ(braid_file_read_all(path, &data, &len), 0);
    CHECK_EQ(len, big);
    CHECK(memcmp(data, blob, big) == 0);
    free(data);
    free(blob);
    CHECK_EQ(braid_file_read_all("/proc/self/status", &data, &len), 0);
    CHECK(len > 0 && strstr(data, "Name:") != NULL);
    free(data);
    /* Errors. */
    CHECK_EQ(braid_file_open(missing, O_RDONLY, 0), -ENOENT);
    data = (void *)1;
    CHECK_EQ(braid_file_read_all(missing, &data, &len), -ENOENT);
    CHECK(data == NULL);
    CHECK_EQ(braid_file_read_all(dir, &data, &len), -EISDIR);
    CHECK_EQ(braid_file_write_all(dir, "x", 1), -EISDIR);
    CHECK_EQ(braid_file_read(-1, buf, 1, 0), -EBADF);
    CHECK_EQ(braid_file_write(-1, "x", 1, 0), -EBADF);
    CHECK_EQ(braid_file_fsync(-1), -EBADF);
    CHECK_EQ(braid_file_close(-1), -EBADF);
    CHECK_EQ(braid_file_read_all(NULL, &data, &len), -EINVAL);
    CHECK_EQ(errno, 1234);
    CHECK_EQ(unlink(path), 0);
    return NULL;
}

TEST(file_helpers_round_trip_and_errors)
{
    char *dir = temp_dir();
    run_on(new_rt(2, 0, 0), files_root, dir);
    run_on(new_rt(1, 0, 0), files_root, dir);
    files_root(dir); /* a plain thread: inline */
    CHECK_EQ(rmdir(dir), 0);
}

static atomic_int body_ready;

static void *cancelled_body(void *arg)
{
    const char *path = arg;
    int fd = braid_file_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    atomic_fetch_add(&body_ready, 1);
    while (!braid_cancelled())
        braid_sleep_ms(1);
    CHECK_EQ(braid_file_write(fd, "x", 1, 0), -ECANCELED);
    CHECK_EQ(braid_file_write_all(path, "y", 1), -ECANCELED);
    void *data;
    CHECK_EQ(braid_file_read_all(path, &data, NULL), -ECANCELED);
    CHECK_EQ(braid_file_open(path, O_RDONLY, 0), -ECANCELED);
    CHECK_EQ(braid_file_fsync(fd), -ECANCELED);
    struct addrinfo *res;
    CHECK_EQ(braid_resolve("localhost", NULL, NULL, &res), -ECANCELED);
    /* close is not a cancellation point: the descriptor goes. */
    CHECK_EQ(braid_file_close(fd), 0);
    CHECK_EQ(fcntl(fd, F_GETFD), -1);
    /* Shielded, the helpers work again. */
    braid_cancel_shield(true);
    CHECK_EQ(braid_file_read_all(path, &data, NULL), 0);
    CHECK_STR(data, "");
    free(data);
    braid_cancel_shield(false);
    return NULL;
}

static void *cancel_files_root(void *arg)
{
    braid_task h;
    CHECK_EQ(braid_spawn(&h, cancelled_body, arg), 0);
    test_await(&body_ready, 1);
    CHECK_EQ(braid_cancel(h), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_CANCELLED);
    CHECK_EQ(unlink(arg), 0);
    return NULL;
}

TEST(cancelled_caller_does_nothing_but_close)
{
    char *dir = temp_dir();
    char path[128];
    snprintf(path, sizeof path, "%s/b", dir);
    run_on(new_rt(2, 0, 0), cancel_files_root, path);
    CHECK_EQ(rmdir(dir), 0);
}

/* ---- failures and shutdown ---- */

static void *no_thread_root(void *arg)
{
    (void)arg;
    atomic_store(&braid__bpool_fail_create, true);
    braid_task h;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = count_drop;
    CHECK_EQ(braid_spawn_blocking_ex(&h, &o, must_not_run, NULL), 0);
    braid_outcome out = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(h, &out), BRAID_PANICKED);
    CHECK(strstr(out.message, "no thread") != NULL);
    CHECK_EQ(atomic_load(&dropped), 1);
    CHECK_EQ(braid_file_fsync(0), -EAGAIN);
    struct addrinfo *res;
    CHECK_EQ(braid_resolve("localhost", NULL, NULL, &res), -EAGAIN);
    atomic_store(&braid__bpool_fail_create, false);
    CHECK_EQ(braid_spawn_blocking(&h, on_pool, (void *)2), 0);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 6);
    CHECK_EQ(atomic_load(&never_ran), 0);
    return NULL;
}

TEST(thread_creation_failure_fails_cleanly)
{
    run_on(new_rt(2, 0, 0), no_thread_root, NULL);
}

static braid_task queued_h[2];
static atomic_int release_seen;

/* Holds the only thread until the shutdown has cancelled both queued
 * tasks: then the runtime must wait for this one, and only this one. */
static void *hold_until_cancelled(void *arg)
{
    atomic_fetch_add(&started, 1);
    while (!braid_is_finished(queued_h[0]) || !braid_is_finished(queued_h[1]))
        usleep(1000);
    atomic_fetch_add(&release_seen, 1);
    return arg;
}

static void free_drop(void *p)
{
    free(p);
    atomic_fetch_add(&dropped, 1);
}

static void *shutdown_root(void *arg)
{
    (void)arg;
    braid_task a;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = free_drop;
    CHECK_EQ(braid_spawn_blocking(&a, hold_until_cancelled, NULL), 0);
    CHECK_EQ(braid_detach(a), 0);
    test_await(&started, 1);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(braid_spawn_blocking_ex(&queued_h[i], &o, must_not_run, malloc(16)), 0);
    await_pool(queued_is, 2);
    return NULL; /* leaves them all to braid_runtime_free */
}

TEST(runtime_freed_with_jobs_queued_and_running)
{
    braid_runtime *rt = new_rt(2, 1, 0);
    void *r;
    CHECK_EQ(braid_block_on(rt, shutdown_root, NULL, &r), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(atomic_load(&release_seen), 1);
    CHECK_EQ(atomic_load(&never_ran), 0);
    CHECK_EQ(atomic_load(&dropped), 2); /* the queued ones' arguments */
}
