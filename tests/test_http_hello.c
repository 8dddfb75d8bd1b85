/* examples/http_hello.c as a program: keep-alive, pipelined and split
 * requests, and graceful shutdown on SIGTERM and SIGINT.  The example binary
 * is built next to this test binary with the same flags. */
#include "test.h"

#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
#define RLEN (sizeof response - 1)

static pid_t server;
static char addr[64];

/* Start ex_http_hello on a free port and read its "listening on" line. */
static void start_server(void)
{
    test_need_exec();
    char bin[PATH_MAX + 32];
    test_sibling("ex_http_hello", bin, sizeof bin);
    char *argv[] = { bin, "127.0.0.1:0", NULL };
    FILE *f = fdopen(test_spawn_piped(argv, &server), "r");
    char line[128] = "";
    CHECK(fgets(line, sizeof line, f) != NULL);
    fclose(f);
    CHECK_EQ(sscanf(line, "listening on %63s", addr), 1);
}

/* Send the signal and wait for a clean exit, within a generous bound. */
static void stop_server(int sig)
{
    CHECK_EQ(kill(server, sig), 0);
    int status = 0;
    uint64_t give_up = test_now_ms() + 60000;
    while (waitpid(server, &status, WNOHANG) == 0) {
        if (test_now_ms() > give_up) {
            kill(server, SIGKILL);
            TEST_FAIL("the server did not stop after signal %d", sig);
        }
        usleep(1000);
    }
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

static void expect_responses(int fd, int count)
{
    char buf[RLEN * 8];
    CHECK((size_t)count <= sizeof buf / RLEN);
    CHECK_EQ(braid_read_exact_until(fd, buf, RLEN * (size_t)count, braid_deadline_ms(30000)),
             (ssize_t)(RLEN * (size_t)count));
    for (int i = 0; i < count; i++)
        CHECK(!memcmp(buf + RLEN * (size_t)i, response, RLEN));
}

static void *client_root(void *arg)
{
    (void)arg;
    const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = braid_tcp_connect(addr);
    CHECK(fd >= 0);
    /* Keep-alive: one request after another on one connection. */
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(braid_write_all(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
        expect_responses(fd, 1);
    }
    /* Pipelined: three requests in one write, three answers. */
    char three[3 * sizeof req];
    for (int i = 0; i < 3; i++)
        memcpy(three + i * (sizeof req - 1), req, sizeof req - 1);
    CHECK_EQ(braid_write_all(fd, three, 3 * (sizeof req - 1)), (ssize_t)(3 * (sizeof req - 1)));
    expect_responses(fd, 3);
    /* A request split across writes, byte by byte: one answer, at the end. */
    for (size_t i = 0; i < sizeof req - 1; i++) {
        CHECK_EQ(braid_write_all(fd, req + i, 1), 1);
        if (i + 1 < sizeof req - 1)
            CHECK_EQ(braid_wait_fd(fd, BRAID_READABLE, 0), -ETIMEDOUT);
    }
    expect_responses(fd, 1);
    /* A request larger than the server's first buffer. */
    size_t big = 10000;
    char *large = malloc(big);
    CHECK(large);
    memset(large, 'a', big);
    memcpy(large, "GET / HTTP/1.1\r\nX: ", 19);
    memcpy(large + big - 4, "\r\n\r\n", 4);
    CHECK_EQ(braid_write_all(fd, large, big), (ssize_t)big);
    expect_responses(fd, 1);
    free(large);
    CHECK_EQ(braid_close(fd), 0);
    return NULL;
}

TEST(serves_keepalive_pipelined_and_split_requests)
{
    start_server();
    test_run(2, client_root, NULL);
    stop_server(SIGTERM);
}

/* An idle keep-alive connection does not hold the shutdown beyond its
 * 2-second grace period; a busy one is answered until then. */
static void *idle_root(void *arg)
{
    (void)arg;
    int fd = braid_tcp_connect(addr);
    CHECK(fd >= 0);
    CHECK_EQ(braid_write_all(fd, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    expect_responses(fd, 1); /* the connection is now accepted and served */
    uint64_t t0 = test_now_ms();
    CHECK_EQ(kill(server, SIGINT), 0);
    char c;
    /* The server cuts it off after the grace period: end of stream. */
    CHECK_EQ(braid_read_until(fd, &c, 1, braid_deadline_ms(30000)), 0);
    CHECK(test_now_ms() - t0 >= 1500);
    braid_close(fd);
    return NULL;
}

TEST(graceful_shutdown_cuts_idle_connections_after_grace)
{
    start_server();
    test_run(1, idle_root, NULL);
    int status = 0;
    CHECK_EQ(waitpid(server, &status, 0), server);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

TEST(stops_on_sigint_with_no_connections)
{
    start_server();
    stop_server(SIGINT);
}
