/*
 * The seed examples, run as programs: their output lines, their order, and
 * that their sleeps overlapped (wall time near the longest sleep, not the
 * sum).  The example binaries are built next to this test binary, with the
 * same compiler flags (so under ASan they are ASan programs too).
 */
#include "test.h"

#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sys/wait.h>

static char out[8192];

/* What a Valgrind run of an example puts before its path (the runner's
 * memcheck options: leaks are errors). */
static const char memcheck_cmd[] =
    "valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect "
    "--show-leak-kinds=definite,indirect ";

/* Run examples/NAME.c's binary, under memcheck too if memcheck is set and
 * the test runs under Valgrind; returns its wall time in ms and fills out. */
static uint64_t run_example_cmd(const char *name, bool memcheck)
{
    test_need_exec();
    char cmd[PATH_MAX + sizeof memcheck_cmd + 64], bin[32];
    snprintf(bin, sizeof bin, "ex_%s", name);
    size_t pre = 0;
    if (memcheck && test_under_valgrind())
        pre = (size_t)snprintf(cmd, sizeof cmd, "%s", memcheck_cmd);
    test_sibling_cmd(bin, cmd + pre, sizeof cmd - pre);
    uint64_t t0 = test_now_ms();
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = 0;
    int status = pclose(p);
    uint64_t took = test_now_ms() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("%s exited with status %d; output:\n%s", name, status, out);
    return took;
}

/* The examples whose run time is checked run natively: Valgrind's start-up
 * alone would eat their bounds. */
static uint64_t run_example(const char *name)
{
    return run_example_cmd(name, false);
}

/* The others also run under memcheck in the Valgrind configuration (ASan's
 * leak checker covers them in the ASan ones). */
static uint64_t run_example_memcheck(const char *name)
{
    return run_example_cmd(name, true);
}

/* The index of the line equal to want, or -1. */
static int line_index(const char *want)
{
    int idx = 0;
    for (const char *p = out; *p; idx++) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == strlen(want) && strncmp(p, want, len) == 0)
            return idx;
        if (!e)
            break;
        p = e + 1;
    }
    return -1;
}

/* Under Valgrind everything is slower; the overlap bound stays meaningful
 * (the sum would be 3 s). */
static uint64_t slack(void)
{
    return test_under_valgrind() ? 900 : 700;
}

/* The three examples whose tasks sleep 2 s and 1 s: task 2 reports first,
 * then whatever line closes the example (NULL: none), and the whole run
 * takes about 2 s, not 3. */
static void check_overlapping(const char *name, const char *last)
{
    uint64_t ms = run_example(name);
    int t1 = line_index("Task 1 completed"), t2 = line_index("Task 2 completed");
    CHECK(t1 >= 0 && t2 >= 0);
    CHECK(t2 < t1); /* spawned second, finishes first */
    if (last) {
        int l = line_index(last);
        CHECK(l > t1);
    }
    CHECK(ms >= 2000);
    if (ms > 2000 + slack())
        TEST_FAIL("%s: the sleeps did not overlap: %llu ms", name, (unsigned long long)ms);
}

TEST(example_spawn)
{
    check_overlapping("spawn", NULL);
}

TEST(example_join)
{
    check_overlapping("join", "Results: 10 and 20");
}

TEST(example_spawn_join)
{
    check_overlapping("spawn_join", "Both tasks done: 100 and 200");
}

TEST(example_task_failure)
{
    run_example_memcheck("task_failure");
    int ok = line_index("Task 1: Task succeeded");
    int after = line_index("Main continues after the failure");
    CHECK(ok >= 0 && after >= 0);
    const char *p = strstr(out, "Task 2 panicked: Task failed (at examples/task_failure.c:");
    CHECK(p != NULL);
    CHECK(ok < after);
}

TEST(example_hello)
{
    run_example_memcheck("hello");
    int a = line_index("a: 200"), b = line_index("b: panicked: no work given");
    CHECK(a >= 0 && b >= 0 && a < b);
}

TEST(example_pipeline)
{
    run_example_memcheck("pipeline");
    /* sum of i^2 for i = 1..10000 = n(n+1)(2n+1)/6 */
    CHECK(line_index("Sum of squares of 1..10000: 333383335000") >= 0);
    CHECK(line_index("Handled by the workers: 10000") >= 0);
}

TEST(example_fanout)
{
    uint64_t ms = run_example("fanout");
    /* Arrival order, then the deadline; the 1 s lookup is cancelled, so
     * the program does not wait for it. */
    int a = line_index("Answer 10"), b = line_index("Answer 40"), c = line_index("Answer 20");
    int d = line_index("Deadline passed, 2 lookups given up");
    CHECK(a >= 0 && b > a && c > b && d > c);
    CHECK(ms < 1000);
}

TEST(example_echo)
{
    run_example("echo");
    CHECK(strncmp(out, "Echo server listening on 127.0.0.1:", 35) == 0);
    CHECK(line_index("8 clients: 800 of 800 messages echoed intact (806720 bytes)") == 1);
    CHECK(line_index("Server stopped after 8 connections") == 2);
}

/* "echo serve ADDR GRACE_MS" as a child process: its pid, and the read end
 * of its stdout once it has printed its address (into addr). */
static pid_t start_echo_server(const char *grace_ms, int *out_fd, char *addr, size_t n)
{
    test_need_exec();
    char path[PATH_MAX + 16];
    test_sibling("ex_echo", path, sizeof path);
    char *argv[] = { path, "serve", "127.0.0.1:0", (char *)grace_ms, NULL };
    pid_t pid;
    int rd = test_spawn_piped(argv, &pid);
    /* The first line, "Listening on ADDR" (read byte by byte: nothing of
     * what follows is consumed). */
    char line[128];
    size_t k = 0;
    while (k < sizeof line - 1 && read(rd, &line[k], 1) == 1 && line[k] != '\n')
        k++;
    line[k] = 0;
    if (strncmp(line, "Listening on ", 13) != 0)
        TEST_FAIL("echo serve printed \"%s\"", line);
    snprintf(addr, n, "%s", line + 13);
    *out_fd = rd;
    return pid;
}

/* The rest of the server's output, and its exit status once it is gone. */
static int finish_echo_server(pid_t pid, int fd)
{
    size_t len = 0;
    ssize_t got;
    while (len < sizeof out - 1 && (got = read(fd, out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)got;
    out[len] = 0;
    close(fd);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

static int echo_connect(const char *addr)
{
    int fd = braid_connect(addr, SOCK_STREAM); /* a plain thread: blocks in poll */
    if (fd < 0)
        TEST_FAIL("connect to %s: %s", addr, braid_strerror(fd));
    return fd;
}

TEST(example_echo_serve_stops_on_sigterm)
{
    int fd;
    char addr[64];
    pid_t pid = start_echo_server("60000", &fd, addr, sizeof addr);
    int c = echo_connect(addr);
    char buf[16];
    CHECK_EQ(braid_write_all(c, "hello\n", 6), 6);
    CHECK_EQ(braid_read_exact(c, buf, 6), 6);
    CHECK(memcmp(buf, "hello\n", 6) == 0);
    CHECK_EQ(braid_close(c), 0);
    CHECK_EQ(kill(pid, SIGTERM), 0);
    int status = finish_echo_server(pid, fd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("echo serve: status %d; output:\n%s", status, out);
    CHECK(line_index("Shutting down on SIGTERM") == 0);
    CHECK(line_index("Served 1 connections") == 1);
}

/* SIGINT with a connection still open: the server stops accepting, gives
 * the connection its grace period, then cancels it (the client sees the
 * end of the stream). */
TEST(example_echo_serve_cancels_open_connections)
{
    int fd;
    char addr[64];
    pid_t pid = start_echo_server("200", &fd, addr, sizeof addr);
    int c = echo_connect(addr);
    char buf[16];
    CHECK_EQ(braid_write_all(c, "x", 1), 1);
    CHECK_EQ(braid_read_exact(c, buf, 1), 1); /* accepted and served */
    CHECK_EQ(kill(pid, SIGINT), 0);
    CHECK_EQ(braid_read_until(c, buf, sizeof buf, braid_deadline_ms(60000)), 0);
    int status = finish_echo_server(pid, fd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("echo serve: status %d; output:\n%s", status, out);
    CHECK(line_index("Shutting down on SIGINT") == 0);
    CHECK(line_index("Cancelling 1 connections still open") == 1);
    CHECK(line_index("Served 1 connections") == 2);
    CHECK_EQ(braid_close(c), 0);
}

/* ---- the guide's examples (docs/guide/) ---- */

TEST(example_cancel)
{
    run_example_memcheck("cancel");
    CHECK_STR(out, "ticker: log closed\n"
                   "ticker: cancelled after 3 ticks\n"
                   "panicky: table freed\n"
                   "panicky: panicked: assertion failed: table[0] == 1\n"
                   "commit: cancel requested\n"
                   "commit: step 1 written\n"
                   "commit: step 2 written\n"
                   "commit: cancellation seen after the commit\n"
                   "commit: cancelled\n"
                   "job: dropped without running\n"
                   "job: cancelled\n");
}

TEST(example_actor)
{
    run_example_memcheck("actor");
    /* 3 clients x 100 additions spread over 4 counters */
    CHECK_STR(out, "counter 0: 75\ncounter 1: 75\ncounter 2: 75\ncounter 3: 75\n");
}

TEST(example_shared_state)
{
    run_example_memcheck("shared_state");
    CHECK_STR(out, "8 downloads, 36000 bytes\nnever more than 2 at once: yes\n");
}

TEST(example_select)
{
    uint64_t ms = run_example_memcheck("select");
    CHECK_STR(out, "server: job 1\nserver: job 2\nserver: job 3\n"
                   "server: idle for 50 ms\nserver: stopping\n"
                   "receive: timed out\nreceive: 42\n");
    CHECK(ms >= 60); /* the idle deadline, then the receive's */
}

TEST(example_blocking)
{
    run_example_memcheck("blocking");
    CHECK_STR(out, "tick 1 while the read blocks\n"
                   "tick 2 while the read blocks\n"
                   "tick 3 while the read blocks\n"
                   "the blocking read returned 6 bytes\n"
                   "read back 29 bytes: written on the blocking pool\n");
}

TEST(example_debug)
{
    run_example_memcheck("debug");
    CHECK(strstr(out, "checker panicked at examples/debug.c:") == out);
    CHECK(strstr(out, ": assertion failed: *answer == 42\n"
                      "detached task cleaner panicked at examples/debug.c:") != NULL);
    CHECK(strstr(out, ": disk /var is full\n") != NULL);
}

TEST(example_inspect)
{
    run_example_memcheck("inspect");
    CHECK(strncmp(out, "braid dump: runtime ", 20) == 0);
    CHECK(strstr(out, "1 workers, 3 tasks alive") != NULL);
    CHECK(strstr(out, "\"consumer\": waiting on channel receive") != NULL);
    CHECK(strstr(out, "\"napper\": waiting on sleep until") != NULL);
    CHECK(strstr(out, "task 1: running on worker 0, for ") != NULL);
    CHECK(strstr(out, "spawned at examples/inspect.c:") != NULL);
    CHECK(strstr(out, "\nend of braid dump\n3 tasks alive, 3 spawned, 0 completed\n") != NULL);
}

/* "debug faults": the overflow and the null write become panics. */
TEST(example_debug_faults)
{
    if (test_instrumented())
        SKIP("ASan, TSan and Valgrind own SIGSEGV: no fault isolation");
    test_need_isolation();
    test_need_exec();
    char cmd[PATH_MAX + 128];
    test_sibling_cmd("ex_debug", cmd, sizeof cmd - 32);
    strcat(cmd, " faults 2>/dev/null");
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = 0;
    int status = pclose(p);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strncmp(out, "panicked: stack overflow in task ", 33) == 0);
    CHECK(strstr(out, "\npanicked: SIGSEGV at address (nil) ") != NULL);
    CHECK(strstr(out, "\nruntime tainted: yes\n") != NULL);
}
