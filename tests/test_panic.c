/* Panics, defers, stack overflows and fault isolation. */
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

/* ---- panic reaches the joiner ---- */

static void *panics(void *arg)
{
    (void)arg;
    braid_sleep_ms(1);
    braid_panic("boom %d", 42);
}

static int panic_line;

static void *panics_here(void *arg)
{
    (void)arg;
    panic_line = __LINE__ + 1;
    braid_panic("exact location");
}

static void *ok_task(void *arg)
{
    braid_sleep_ms(20);
    return arg;
}

static void *panic_root(void *arg)
{
    (void)arg;
    braid_task p, q, ok;
    CHECK_EQ(braid_spawn(&ok, ok_task, (void *)5), 0);
    CHECK_EQ(braid_spawn(&p, panics, NULL), 0);
    CHECK_EQ(braid_spawn(&q, panics_here, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(p, &o), BRAID_PANICKED);
    CHECK_STR(o.message, "boom 42");
    CHECK(o.value == NULL);
    CHECK(o.file && strstr(o.file, "test_panic.c"));
    braid_outcome o2 = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(q, &o2), BRAID_PANICKED);
    CHECK_EQ(o2.line, panic_line);
    /* The plain join says panicked too, with a NULL result. */
    void *r = (void *)1;
    CHECK_EQ(braid_join(ok, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 5);
    return (void *)77;
}

TEST(panic_reaches_joiner_and_others_continue)
{
    CHECK_EQ((uintptr_t)test_run(2, panic_root, NULL), 77);
}

static void *plain_join_of_panic(void *arg)
{
    (void)arg;
    braid_task p;
    CHECK_EQ(braid_spawn(&p, panics, NULL), 0);
    void *r = (void *)1;
    CHECK_EQ(braid_join(p, &r), BRAID_PANICKED);
    CHECK(r == NULL);
    return NULL;
}

TEST(plain_join_reports_panicked)
{
    test_run(2, plain_join_of_panic, NULL);
}

static void *asserts(void *arg)
{
    int x = (int)(intptr_t)arg;
    BRAID_ASSERT(x == 1);
    return NULL;
}

static void *assert_root(void *arg)
{
    (void)arg;
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, asserts, (void *)1), 0);
    CHECK_EQ(braid_spawn(&b, asserts, (void *)2), 0);
    CHECK_EQ(braid_join(a, NULL), BRAID_OK);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(b, &o), BRAID_PANICKED);
    CHECK_STR(o.message, "assertion failed: x == 1");
    return NULL;
}

TEST(assert_macro_panics)
{
    test_run(2, assert_root, NULL);
}

TEST(root_panic_is_the_run_fate)
{
    CHECK_EQ(braid_run(panics, NULL, NULL), BRAID_PANICKED);
}

/* ---- defers ---- */

static char order[64];
static int order_len;

static void record(void *arg)
{
    order[order_len++] = (char)(uintptr_t)arg;
    order[order_len] = 0;
}

static void record_then_panic(void *arg)
{
    record(arg);
    braid_panic("second panic, ignored");
}

static void *defers_then_panic(void *arg)
{
    (void)arg;
    braid_defer a, b, c, d;
    braid_defer_push(&a, record, (void *)'a');
    braid_defer_push(&b, record, (void *)'b');
    braid_defer_push(&c, record_then_panic, (void *)'c');
    braid_defer_push(&d, record, (void *)'d');
    /* Defers run with cancellation shielded: a sleep inside works. */
    braid_panic("first");
}

static void *defer_root(void *arg)
{
    (void)arg;
    order_len = 0;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, defers_then_panic, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(t, &o), BRAID_PANICKED);
    CHECK_STR(o.message, "first");
    CHECK_STR(order, "dcba"); /* LIFO, and the ones after the second panic still ran */
    return NULL;
}

TEST(defers_run_lifo_on_panic_and_survive_nested_panic)
{
    test_run(2, defer_root, NULL);
}

static void sleepy_defer(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_sleep_ms(5), 0); /* shielded: not -ECANCELED */
    record((void *)'s');
}

static atomic_int entered;

static void *cancelled_then_panics(void *arg)
{
    (void)arg;
    braid_defer d;
    braid_defer_push(&d, sleepy_defer, NULL);
    atomic_fetch_add(&entered, 1);
    while (braid_sleep_ms(1000) != -ECANCELED)
        ;
    braid_panic("after cancel");
}

static void *shielded_defer_root(void *arg)
{
    (void)arg;
    order_len = 0;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, cancelled_then_panics, NULL), 0);
    test_await(&entered, 1);
    braid_cancel(t);
    CHECK_EQ(braid_join(t, NULL), BRAID_PANICKED);
    CHECK_STR(order, "s");
    return NULL;
}

TEST(defers_run_shielded)
{
    test_run(2, shielded_defer_root, NULL);
}

static void *defer_pop_task(void *arg)
{
    (void)arg;
    order_len = 0;
    braid_defer a, b;
    CHECK_EQ(braid_defer_push(&a, record, (void *)'a'), 0);
    CHECK_EQ(braid_defer_push(&b, record, (void *)'b'), 0);
    CHECK_EQ(braid_defer_pop(&a, true), -EINVAL); /* not the innermost */
    CHECK_EQ(braid_defer_pop(&b, true), 0);
    CHECK_EQ(braid_defer_pop(&a, false), 0);
    CHECK_EQ(braid_defer_pop(&a, false), -EINVAL);
    CHECK_STR(order, "b");
    CHECK_EQ(braid_defer_push(NULL, record, NULL), -EINVAL);
    return NULL;
}

TEST(defer_pop_runs_or_discards)
{
    test_run(1, defer_pop_task, NULL);
}

/* ---- detached panics go to the hook ---- */

static atomic_int hook_calls;
static char hook_msg[256];
static char hook_name[64];

static void hook(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    CHECK(id != 0);
    CHECK_EQ((uintptr_t)user, 0x1234);
    CHECK_EQ(o->status, BRAID_PANICKED);
    snprintf(hook_msg, sizeof hook_msg, "%s", o->message);
    snprintf(hook_name, sizeof hook_name, "%s", name ? name : "");
    atomic_fetch_add(&hook_calls, 1);
}

static void *detached_panic_root(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "doomed";
    CHECK_EQ(braid_spawn_ex(NULL, &o, panics, NULL), 0);
    while (atomic_load(&hook_calls) < 1)
        braid_sleep_ms(1);
    /* Detaching a task that has already panicked reports it too. */
    braid_task t;
    CHECK_EQ(braid_spawn(&t, panics, NULL), 0);
    while (!braid_is_finished(t))
        braid_sleep_ms(1);
    CHECK_EQ(braid_detach(t), 0);
    CHECK_EQ(atomic_load(&hook_calls), 2);
    return NULL;
}

TEST(detached_panic_goes_to_hook)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.panic_hook = hook;
    cfg.panic_hook_arg = (void *)0x1234;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, detached_panic_root, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_STR(hook_msg, "boom 42");
    CHECK_EQ(atomic_load(&hook_calls), 2);
}

/* Run fn in a child process with stderr captured; returns the wait status. */
static int in_child(void (*fn)(void), char *err, size_t errlen)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < errlen && (n = read(fds[0], err + len, errlen - 1 - len)) > 0)
        len += (size_t)n;
    err[len] = 0;
    close(fds[0]);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

/* What a child process runs: body as a task, in a runtime with or without
 * isolate_faults. */
static braid_fn child_body;
static bool child_isolates;

static void *join_child_body(void *arg)
{
    (void)arg;
    braid_task t;
    braid_spawn(&t, child_body, NULL);
    braid_join(t, NULL);
    return NULL;
}

static void run_child_body(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.isolate_faults = child_isolates;
    braid_runtime *rt;
    braid_runtime_new(&cfg, &rt);
    braid_block_on(rt, join_child_body, NULL, NULL);
}

/* The wait status of a child process that runs body as a task. */
static int task_in_child(braid_fn body, bool isolate, char *err, size_t errlen)
{
    child_body = body;
    child_isolates = isolate;
    return in_child(run_child_body, err, errlen);
}

static void *detached_default(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "reporter";
    braid_task t;
    CHECK_EQ(braid_spawn_ex(&t, &o, panics, NULL), 0);
    CHECK_EQ(braid_detach(t), 0);
    braid_sleep_ms(50);
    return NULL;
}

static void run_detached_default(void)
{
    braid_run(detached_default, NULL, NULL);
}

TEST(detached_panic_default_report_on_stderr)
{
    char err[4096];
    int st = in_child(run_detached_default, err, sizeof err);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strstr(err, "braid: task ") != NULL);
    CHECK(strstr(err, "(reporter) panicked at ") != NULL);
    CHECK(strstr(err, "boom 42") != NULL);
}

static void panic_outside_task(void)
{
    braid_panic("no task here");
}

TEST(panic_outside_a_task_aborts)
{
    char err[4096];
    int st = in_child(panic_outside_task, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    CHECK(strstr(err, "no task here") != NULL);
}

/* ---- stack overflow ---- */

static volatile int depth_limit = 1 << 30;

static int recurse(volatile char *prev, int depth)
{
    volatile char buf[1024];
    buf[0] = (char)depth;
    buf[1023] = prev ? prev[0] : 0;
    if (depth > depth_limit)
        return 0;
    return recurse(buf, depth + 1) + buf[1023];
}

static void *overflows(void *arg)
{
    (void)arg;
    braid_defer d;
    braid_defer_push(&d, record, (void *)'o');
    return (void *)(intptr_t)recurse(NULL, 0);
}

static void *big_frame(void *arg)
{
    (void)arg;
    /* A frame larger than a page but smaller than the guard: it lands in
     * the guard, not in the neighbouring stack. */
    volatile char huge[48 * 1024];
    huge[0] = 1;
    return (void *)(uintptr_t)(recurse(huge, 0) + huge[0]);
}

static void *overflow_root(void *arg)
{
    (void)arg;
    order_len = 0;
    braid_task t, u, ok;
    CHECK_EQ(braid_spawn(&ok, ok_task, (void *)3), 0);
    CHECK_EQ(braid_spawn(&t, overflows, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(t, &o), BRAID_PANICKED);
    char want[64];
    snprintf(want, sizeof want, "stack overflow in task %llu", (unsigned long long)braid_task_id(t));
    CHECK_STR(o.message, want);
    CHECK(o.file == NULL);
    CHECK_STR(order, "o"); /* its defer ran, on a fresh stack */
    CHECK_EQ(braid_spawn(&u, big_frame, NULL), 0);
    CHECK_EQ(braid_join(u, NULL), BRAID_PANICKED);
    void *r;
    CHECK_EQ(braid_join(ok, &r), BRAID_OK);
    CHECK_EQ((uintptr_t)r, 3);
    /* Again and again: the rescue path is reusable. */
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(braid_spawn(&t, overflows, NULL), 0);
        CHECK_EQ(braid_join(t, NULL), BRAID_PANICKED);
    }
    return NULL;
}

#if defined(TEST_ASAN) || defined(TEST_TSAN)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

TEST(stack_overflow_is_a_panic)
{
    if (SANITIZED)
        SKIP("fault isolation is off under the sanitizers");
    test_need_isolation();
    test_run(2, overflow_root, NULL);
    test_run(1, overflow_root, NULL);
}

TEST(stack_overflow_with_mprotect_guards)
{
    if (SANITIZED)
        SKIP("fault isolation is off under the sanitizers");
    test_need_isolation();
    setenv("BRAID_NO_GUARD_INSTALL", "1", 1);
    test_run(2, overflow_root, NULL);
}

/* ---- other faults ---- */

static void *null_deref(void *arg)
{
    volatile int *p = arg;
    return (void *)(intptr_t)*p;
}

static void *faulty_root(void *arg)
{
    (void)arg;
    braid_task t;
    CHECK_EQ(braid_spawn(&t, null_deref, NULL), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    CHECK_EQ(braid_join_ex(t, &o), BRAID_PANICKED);
    CHECK(strstr(o.message, "SIGSEGV at address (nil)") != NULL);
    CHECK(braid_runtime_tainted(braid_current_runtime()));
    return NULL;
}

TEST(isolate_faults_turns_segv_into_panic)
{
    if (test_instrumented()) /* Valgrind rightly reports the bad read */
        SKIP("fault isolation is off under the sanitizers");
    test_need_isolation();
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    cfg.isolate_faults = true;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK(!braid_runtime_tainted(rt));
    CHECK_EQ(braid_block_on(rt, faulty_root, NULL, NULL), BRAID_OK);
    CHECK(braid_runtime_tainted(rt));
    CHECK_EQ(braid_runtime_free(rt), 0);
}

TEST(without_isolation_a_segv_kills_the_process)
{
    char err[4096];
    int st = task_in_child(null_deref, false, err, sizeof err);
#if defined(TEST_ASAN) || defined(TEST_TSAN)
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0); /* the sanitizer reports and exits */
    if (!strstr(err, "SEGV") && !strstr(err, "null pointer")) /* ASan or UBSan */
        TEST_FAIL("no report of the fault in: %s", err);
#else
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
#endif
}

static void *aborts(void *arg)
{
    (void)arg;
    abort();
}

TEST(abort_is_never_converted)
{
    char err[4096];
    int st = task_in_child(aborts, true, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

static void *kills_itself(void *arg)
{
    (void)arg;
    raise(SIGSEGV); /* sent, not raised by a fault: si_code <= 0 */
    return NULL;
}

TEST(sent_signals_are_not_converted)
{
    if (test_instrumented())
        SKIP("sanitizers own SIGSEGV");
    char err[4096];
    int st = task_in_child(kills_itself, true, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

static void *fault_in_libc(void *arg)
{
    (void)arg;
    /* strlen(NULL) faults inside libc: not converted. */
    const char *volatile p = arg;
    return (void *)strlen(p);
}

TEST(faults_inside_libc_are_not_converted)
{
    if (test_instrumented())
        SKIP("sanitizers own SIGSEGV");
    char err[4096];
    int st = task_in_child(fault_in_libc, true, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

/* A handler the program installed before the runtime still gets the faults
 * braid does not convert. */
static void user_handler(int sig)
{
    (void)sig;
    const char msg[] = "user handler ran\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(4);
    _exit(3);
}

static void run_with_user_handler(void)
{
    signal(SIGSEGV, user_handler);
    child_body = null_deref;
    child_isolates = false;
    run_child_body();
}

TEST(user_handlers_still_see_unconverted_faults)
{
    if (test_instrumented())
        SKIP("sanitizers own SIGSEGV");
    char err[4096];
    int st = in_child(run_with_user_handler, err, sizeof err);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    CHECK(strstr(err, "user handler ran") != NULL);
}
