/*
 * examples/mini_redis.c as a real server, driven by real clients: redis-cli
 * and redis-benchmark (Debian's redis-tools; the tests that need them are
 * skipped without them, or fail with BRAID_REQUIRE_TOOLS=1) and small
 * socket clients that misbehave on purpose.  The server binary is built next to this test, with the same
 * flags (ex_mini_redis), so under ASan and TSan it is checked too; under
 * Valgrind it runs under memcheck as well.  Every test ends by sending the
 * server SIGTERM and checking that it exits 0 (no leaks, no races).
 */
#include "test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

/* ---- the server as a child process ------------------------------------------------ */

struct server {
    pid_t pid;
    int port;
};

static uint64_t slow(uint64_t ms)
{
    return test_under_valgrind() ? ms * 10 : ms;
}

/* Read one line from fd into buf (without the newline), waiting up to ms.
 * Returns its length, or -1 on timeout or end of file. */
static int read_line(int fd, char *buf, size_t cap, uint64_t ms)
{
    size_t n = 0;
    uint64_t until = test_now_ms() + ms;
    while (n + 1 < cap) {
        uint64_t now = test_now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (now >= until || poll(&p, 1, (int)(until - now)) <= 0)
            return -1;
        char ch;
        if (read(fd, &ch, 1) != 1)
            return -1;
        if (ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = 0;
    return (int)n;
}

/* extra: more command-line arguments, NULL-terminated. */
static void server_start(struct server *s, ...)
{
    test_need_exec();
    char bin[PATH_MAX + 32];
    test_sibling("ex_mini_redis", bin, sizeof bin);
    if (access(bin, X_OK) != 0)
        TEST_FAIL("%s is not built", bin);
    char *argv[32];
    int argc = 0;
    if (test_under_valgrind()) {
        static char *vg[] = { "valgrind", "-q", "--error-exitcode=9", "--leak-check=full",
                              "--errors-for-leak-kinds=definite,indirect",
                              "--show-leak-kinds=definite,indirect" };
        for (size_t i = 0; i < sizeof vg / sizeof vg[0]; i++)
            argv[argc++] = vg[i];
    }
    argv[argc++] = bin;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--workers";
    argv[argc++] = "2";
    va_list ap;
    va_start(ap, s);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && argc < 30)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    int fd = test_spawn_piped(argv, &s->pid);
    char line[256];
    if (read_line(fd, line, sizeof line, slow(20000)) < 0)
        TEST_FAIL("the server did not say where it listens");
    close(fd);
    const char *colon = strrchr(line, ':');
    if (strncmp(line, "listening on ", 13) != 0 || !colon)
        TEST_FAIL("unexpected first line: %s", line);
    s->port = atoi(colon + 1);
    CHECK(s->port > 0);
}

/* Wait for pid up to ms; returns its status, or -1. */
static int wait_child(pid_t pid, uint64_t ms)
{
    uint64_t until = test_now_ms() + ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        CHECK(r >= 0);
        if (r == pid)
            return status;
        if (test_now_ms() > until)
            return -1;
        usleep(5000);
    }
}

/* SIGTERM; the server must exit 0 within a few seconds (it gives its
 * connections 2 s). */
static void server_stop(struct server *s)
{
    CHECK_EQ(kill(s->pid, SIGTERM), 0);
    int status = wait_child(s->pid, slow(10000));
    if (status == -1) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        TEST_FAIL("the server did not exit after SIGTERM");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("the server ended with status %#x", status);
}

/* ---- running redis-cli and redis-benchmark ---------------------------------------- */

static void need_tool(const char *tool)
{
    if (!test_have_tool(tool)) {
        char why[128];
        snprintf(why, sizeof why, "%s is not installed (Debian: redis-tools)", tool);
        test_skip_tool(why);
    }
}

static char out[1 << 16];

/* Run a shell command (bounded by timeout(1)); its output, trailing
 * newlines removed, lands in out.  Returns the exit status. */
BRAID_PRINTF(1, 2)
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "timeout %d ", test_under_valgrind() ? 300 : 60);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t len = fread(out, 1, sizeof out - 1, p);
    while (len && out[len - 1] == '\n')
        len--;
    out[len] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* redis-cli -p PORT ARGS; returns its output. */
#define CLI(s, ...) (sh("redis-cli -p %d " __VA_ARGS__, (s)->port), out)

/* ---- a raw socket client ---------------------------------------------------------- */

static int raw_connect(const struct server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        CHECK(w > 0);
        b += w;
        n -= (size_t)w;
    }
}

static void raw_sends(int fd, const char *s)
{
    raw_send(fd, s, strlen(s));
}

/* Read until want bytes came, the peer closed, or ms passed.  Returns the
 * count; *eof tells whether the peer closed. */
static size_t raw_recv(int fd, char *buf, size_t want, uint64_t ms, bool *eof)
{
    size_t n = 0;
    uint64_t until = test_now_ms() + ms;
    *eof = false;
    while (n < want) {
        uint64_t now = test_now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (now >= until || poll(&p, 1, (int)(until - now)) <= 0)
            break;
        ssize_t r = recv(fd, buf + n, want - n, 0);
        if (r <= 0) {
            *eof = true;
            break;
        }
        n += (size_t)r;
    }
    return n;
}

/* Expect exactly the bytes of want within a few seconds. */
static void raw_expect(int fd, const char *want)
{
    static char got[1 << 16];
    size_t len = strlen(want);
    CHECK(len < sizeof got);
    bool eof;
    size_t n = raw_recv(fd, got, len, slow(10000), &eof);
    got[n] = 0;
    if (n != len || memcmp(got, want, len) != 0)
        TEST_FAIL("expected \"%s\", got \"%s\"%s", want, got, eof ? " and end of stream" : "");
}

/* Read everything until the server closes (within a few seconds). */
static size_t raw_until_close(int fd, char *buf, size_t cap)
{
    bool eof;
    size_t n = raw_recv(fd, buf, cap - 1, slow(10000), &eof);
    buf[n] = 0;
    if (!eof)
        TEST_FAIL("the server did not close the connection; got \"%s\"", buf);
    return n;
}

/* ---- (a) redis-cli ---------------------------------------------------------------- */

TEST(redis_cli_commands)
{
    need_tool("redis-cli");
    struct server s;
    server_start(&s, NULL);
    CHECK_STR(CLI(&s, "PING"), "PONG");
    CHECK_STR(CLI(&s, "PING hello"), "hello");
    CHECK_STR(CLI(&s, "ECHO 'two words'"), "two words");
    CHECK_STR(CLI(&s, "SET greeting 'hello world'"), "OK");
    CHECK_STR(CLI(&s, "GET greeting"), "hello world");
    CHECK_STR(CLI(&s, "GET missing"), "");
    CHECK_STR(CLI(&s, "SET greeting again NX"), "");
    CHECK_STR(CLI(&s, "SET other x XX"), "");
    CHECK_STR(CLI(&s, "SET greeting bye XX GET"), "hello world");

    /* DEL and EXISTS count keys (EXISTS counts a repeated key twice). */
    CHECK_STR(CLI(&s, "SET a 1"), "OK");
    CHECK_STR(CLI(&s, "SET b 2"), "OK");
    CHECK_STR(CLI(&s, "EXISTS a b c a"), "3");
    CHECK_STR(CLI(&s, "DEL a b c"), "2");
    CHECK_STR(CLI(&s, "EXISTS a b"), "0");

    /* INCR */
    CHECK_STR(CLI(&s, "SET counter 41"), "OK");
    CHECK_STR(CLI(&s, "INCR counter"), "42");
    CHECK_STR(CLI(&s, "INCR fresh"), "1");
    CHECK_STR(CLI(&s, "DECRBY fresh 5"), "-4");
    CHECK(strstr(CLI(&s, "INCR greeting"), "ERR value is not an integer") != NULL);
    CHECK_STR(CLI(&s, "SET big 9223372036854775807"), "OK");
    CHECK(strstr(CLI(&s, "INCR big"), "overflow") != NULL);

    /* Expiry: EX and TTL, EXPIRE, PERSIST. */
    CHECK_STR(CLI(&s, "SET session x EX 100"), "OK");
    long ttl = atol(CLI(&s, "TTL session"));
    CHECK(ttl >= 98 && ttl <= 100);
    CHECK_STR(CLI(&s, "TTL greeting"), "-1");
    CHECK_STR(CLI(&s, "TTL missing"), "-2");
    CHECK_STR(CLI(&s, "PTTL missing"), "-2");
    CHECK_STR(CLI(&s, "EXPIRE greeting 50"), "1");
    CHECK_STR(CLI(&s, "EXPIRE missing 50"), "0");
    CHECK_STR(CLI(&s, "PERSIST greeting"), "1");
    CHECK_STR(CLI(&s, "TTL greeting"), "-1");
    CHECK(strstr(CLI(&s, "SET k v EX 0"), "invalid expire time") != NULL);
    CHECK(strstr(CLI(&s, "SET k v EX 10 PX 10"), "syntax error") != NULL);

    /* SET with PX: PTTL counts down, and the key goes away (polled, never
     * before its time). */
    uint64_t t0 = test_now_ms();
    CHECK_STR(CLI(&s, "SET brief v PX 1500"), "OK");
    long pttl = atol(CLI(&s, "PTTL brief"));
    CHECK(pttl > 0 && pttl <= 1500);
    uint64_t gone = 0;
    while (!gone) {
        if (strcmp(CLI(&s, "EXISTS brief"), "0") == 0)
            gone = test_now_ms();
        else if (test_now_ms() - t0 > slow(15000))
            TEST_FAIL("the key did not expire");
        else
            usleep(20000);
    }
    CHECK(gone - t0 >= 1500);
    CHECK_STR(CLI(&s, "PTTL brief"), "-2");
    CHECK_STR(CLI(&s, "GET brief"), "");

    /* Keys expiring untouched are swept in the background. */
    CHECK_STR(CLI(&s, "FLUSHALL"), "OK");
    CHECK_STR(CLI(&s, "SET s1 v PX 50"), "OK");
    CHECK_STR(CLI(&s, "SET s2 v PX 50"), "OK");
    CHECK_STR(CLI(&s, "SET s3 v"), "OK");
    uint64_t t1 = test_now_ms();
    while (strcmp(CLI(&s, "DBSIZE"), "1") != 0) {
        if (test_now_ms() - t1 > slow(15000))
            TEST_FAIL("expired keys were not swept: DBSIZE %s", out);
        usleep(20000);
    }

    /* What clients ask when they connect. */
    CHECK_STR(CLI(&s, "CONFIG GET save"), "save");
    CHECK_STR(CLI(&s, "CONFIG GET appendonly"), "appendonly\nno");
    CHECK_STR(CLI(&s, "CONFIG GET nothing"), "");
    CHECK(strstr(CLI(&s, "HELLO 3"), "ERR unknown command") != NULL);
    CHECK(strstr(CLI(&s, "NOSUCHCOMMAND x"), "ERR unknown command 'NOSUCHCOMMAND'") != NULL);
    CHECK(strstr(CLI(&s, "GET"), "wrong number of arguments") != NULL);

    /* Inline commands, and redis-cli --pipe: 20000 commands written at
     * once, all answered. */
    CHECK_EQ(sh("printf 'PING\\r\\nSET inline \"a b\"\\r\\n' | redis-cli -p %d --pipe", s.port), 0);
    CHECK(strstr(out, "errors: 0, replies: 2") != NULL);
    CHECK_STR(CLI(&s, "GET inline"), "a b");
    char path[] = "/tmp/mini_redis_pipe_XXXXXX";
    int tmp = mkstemp(path);
    CHECK(tmp >= 0);
    FILE *f = fdopen(tmp, "w");
    for (int i = 1; i <= 10000; i++)
        fprintf(f, "SET key%d %d\r\n*2\r\n$4\r\nINCR\r\n$%d\r\nkey%d\r\n", i, i,
                snprintf(NULL, 0, "key%d", i), i);
    fclose(f);
    int rc = sh("redis-cli -p %d --pipe < %s", s.port, path);
    unlink(path);
    CHECK_EQ(rc, 0);
    CHECK(strstr(out, "errors: 0, replies: 20000") != NULL);
    CHECK_STR(CLI(&s, "GET key777"), "778");
    CHECK_STR(CLI(&s, "DBSIZE"), "10002");
    server_stop(&s);
}

TEST(redis_cli_pubsub)
{
    need_tool("redis-cli");
    struct server s;
    server_start(&s, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    char *argv[] = { "redis-cli", "-p", port, "SUBSCRIBE", "news", "weather", NULL };
    pid_t sub;
    int fd = test_spawn_piped(argv, &sub);
    /* The subscription is in place once PUBLISH reaches one subscriber. */
    uint64_t t0 = test_now_ms();
    while (strcmp(CLI(&s, "PUBLISH news 'first edition'"), "1") != 0) {
        CHECK_STR(out, "0");
        if (test_now_ms() - t0 > slow(20000))
            TEST_FAIL("the subscriber never showed up");
        usleep(10000);
    }
    CHECK_STR(CLI(&s, "PUBLISH weather sunny"), "1");
    CHECK_STR(CLI(&s, "PUBLISH sports none"), "0");
    /* redis-cli prints each reply's elements on lines of their own. */
    const char *want[] = { "subscribe", "news",  "1",       "subscribe", "weather",
                           "2",         "message", "news",  "first edition", "message",
                           "weather",   "sunny" };
    char line[256];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (read_line(fd, line, sizeof line, slow(10000)) < 0)
            TEST_FAIL("the subscriber got nothing after line %zu", i);
        CHECK_STR(line, want[i]);
    }
    kill(sub, SIGTERM);
    CHECK(wait_child(sub, 10000) != -1);
    close(fd);
    /* Its subscriptions went with it. */
    t0 = test_now_ms();
    while (strcmp(CLI(&s, "PUBLISH news again"), "0") != 0) {
        if (test_now_ms() - t0 > slow(20000))
            TEST_FAIL("the subscription outlived its connection");
        usleep(10000);
    }
    server_stop(&s);
}

/* The same with a raw client: pushes arrive in order with the replies,
 * only the pub/sub commands are allowed while subscribed, and once
 * unsubscribed the connection is an ordinary one again. */
TEST(pubsub_protocol)
{
    struct server s;
    server_start(&s, NULL);
    int sub = raw_connect(&s), pub = raw_connect(&s);
    raw_sends(sub, "SUBSCRIBE a b\r\n");
    raw_expect(sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
                    "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
    raw_sends(pub, "PUBLISH a hello\r\nPUBLISH b world\r\nPUBLISH c nobody\r\n");
    raw_expect(pub, ":1\r\n:1\r\n:0\r\n");
    raw_expect(sub, "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"
                    "*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$5\r\nworld\r\n");
    raw_sends(sub, "GET k\r\nPING\r\nUNSUBSCRIBE a\r\n");
    raw_expect(sub, "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / "
                    "QUIT / RESET are allowed in this context\r\n"
                    "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
                    "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n");
    raw_sends(pub, "PUBLISH a x\r\nPUBLISH b y\r\n");
    raw_expect(pub, ":0\r\n:1\r\n");
    raw_expect(sub, "*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\ny\r\n");
    raw_sends(sub, "UNSUBSCRIBE\r\nUNSUBSCRIBE\r\nSET k v\r\nGET k\r\n");
    raw_expect(sub, "*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
                    "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+OK\r\n$1\r\nv\r\n");
    /* Many messages at once. */
    raw_sends(sub, "SUBSCRIBE many\r\n");
    raw_expect(sub, "*3\r\n$9\r\nsubscribe\r\n$4\r\nmany\r\n:1\r\n");
    static char cmds[200 * 32], pushes[200 * 64], replies[200 * 8];
    size_t nc = 0, np = 0, nr = 0;
    for (int i = 0; i < 200; i++) {
        nc += (size_t)sprintf(cmds + nc, "PUBLISH many m%03d\r\n", i);
        np += (size_t)sprintf(pushes + np, "*3\r\n$7\r\nmessage\r\n$4\r\nmany\r\n$4\r\nm%03d\r\n", i);
        nr += (size_t)sprintf(replies + nr, ":1\r\n");
    }
    raw_sends(pub, cmds);
    raw_expect(pub, replies);
    raw_expect(sub, pushes);
    close(sub);
    close(pub);
    server_stop(&s);
}

/* ---- (b) redis-benchmark ---------------------------------------------------------- */

/* The rate on the line "NAME: <rate> requests per second". */
static double rate_of(const char *text, const char *name)
{
    char key[32];
    snprintf(key, sizeof key, "%s: ", name);
    double best = 0;
    for (const char *p = text; (p = strstr(p, key)) != NULL; p++) {
        char *end;
        double r = strtod(p + strlen(key), &end);
        if (end != p + strlen(key) && strncmp(end, " requests per second", 20) == 0)
            best = r;
    }
    return best;
}

TEST(redis_benchmark)
{
    need_tool("redis-benchmark");
    struct server s;
    server_start(&s, NULL);
    long n = test_scale(20000);
    int rc = sh("redis-benchmark -p %d -t set,get -n %ld -c 50 -q 2>&1 | tr '\\r' '\\n'", s.port,
                n);
    CHECK_EQ(rc, 0);
    double set = rate_of(out, "SET"), get = rate_of(out, "GET");
    printf("SET %.0f/s, GET %.0f/s (%ld requests each)\n", set, get, n);
    if (!(set > 0 && get > 0))
        TEST_FAIL("no rates in:\n%s", out);
    /* Pipelined: 16 commands per write. */
    rc = sh("redis-benchmark -p %d -t set,get -n %ld -c 8 -P 16 -q 2>&1 | tr '\\r' '\\n'", s.port,
            n);
    CHECK_EQ(rc, 0);
    CHECK(rate_of(out, "SET") > 0 && rate_of(out, "GET") > 0);
    CHECK_EQ(strlen(CLI(&s, "GET key:__rand_int__")), 3); /* -d 3 */
    server_stop(&s);
}

/* ---- (c) bad input ---------------------------------------------------------------- */

static const struct {
    const char *input;
    size_t len;       /* 0: strlen */
    const char *reply; /* the whole answer, then the connection closes */
} bad_inputs[] = {
    { "*abc\r\n", 0, "-ERR Protocol error: invalid multibulk length\r\n" },
    { "*-3\r\n", 0, "-ERR Protocol error: invalid multibulk length\r\n" },
    { "*99999999\r\n", 0, "-ERR Protocol error: invalid multibulk length\r\n" },
    { "*1\r\n$-5\r\n", 0, "-ERR Protocol error: invalid bulk length\r\n" },
    { "*1\r\n$600000000\r\n", 0, "-ERR Protocol error: invalid bulk length\r\n" },
    { "*1\r\n$99999999999999999999999\r\nx", 0, "-ERR Protocol error: invalid bulk length\r\n" },
    { "*3\r\n$3\r\nSET\r\n:1\r\n", 0, "-ERR Protocol error: expected '$', got ':'\r\n" },
    { "*1\r\n$4\r\nPINGxx\r\n", 0, "-ERR Protocol error: expected CRLF after a bulk string\r\n" },
    { "*1\n$4\nPING\n", 0, "-ERR Protocol error: invalid multibulk length\r\n" },
    { "PING \"unbalanced\r\n", 0, "-ERR Protocol error: unbalanced quotes in request\r\n" },
    /* binary junk, here the start of a TLS handshake */
    { "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11,
      "-ERR Protocol error: invalid byte 0x16 in an inline request\r\n" },
    { "GET a\0b\r\n", 9, "-ERR Protocol error: invalid byte 0x00 in an inline request\r\n" },
    /* good commands first: they are answered, then the error */
    { "PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n", 0,
      "+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n" },
};

TEST(protocol_errors)
{
    struct server s;
    server_start(&s, NULL);
    static char got[1 << 16];
    for (size_t i = 0; i < sizeof bad_inputs / sizeof bad_inputs[0]; i++) {
        int fd = raw_connect(&s);
        size_t len = bad_inputs[i].len ? bad_inputs[i].len : strlen(bad_inputs[i].input);
        raw_send(fd, bad_inputs[i].input, len);
        raw_until_close(fd, got, sizeof got);
        if (strcmp(got, bad_inputs[i].reply) != 0)
            TEST_FAIL("input %zu: expected \"%s\", got \"%s\"", i, bad_inputs[i].reply, got);
        close(fd);
    }
    /* A command cut off by the end of the stream. */
    int fd = raw_connect(&s);
    raw_sends(fd, "*2\r\n$3\r\nGET\r\n");
    shutdown(fd, SHUT_WR);
    raw_until_close(fd, got, sizeof got);
    CHECK_STR(got, "-ERR Protocol error: unexpected end of stream\r\n");
    close(fd);
    /* An endless line, and an endless length line. */
    static char junk[70000];
    memset(junk, 'a', sizeof junk);
    fd = raw_connect(&s);
    raw_send(fd, junk, sizeof junk);
    raw_until_close(fd, got, sizeof got);
    CHECK_STR(got, "-ERR Protocol error: too big inline request\r\n");
    close(fd);
    memset(junk, '1', sizeof junk);
    junk[0] = '*';
    fd = raw_connect(&s);
    raw_send(fd, junk, sizeof junk);
    raw_until_close(fd, got, sizeof got);
    CHECK_STR(got, "-ERR Protocol error: too big multibulk length\r\n");
    close(fd);
    /* Random bytes, many times: an error and a close, or (if they happen
     * to parse) replies; never a crash or a hang. */
    srand(7);
    for (int round = 0; round < 50; round++) {
        char r[512];
        for (size_t k = 0; k < sizeof r; k++)
            r[k] = (char)(rand() & 0xff);
        if (round % 2)
            r[0] = '*';
        fd = raw_connect(&s);
        raw_send(fd, r, sizeof r);
        shutdown(fd, SHUT_WR);
        raw_until_close(fd, got, sizeof got);
        close(fd);
    }
    /* The server still serves; pipelined commands are answered in order. */
    fd = raw_connect(&s);
    raw_sends(fd, "PING\r\n");
    raw_expect(fd, "+PONG\r\n");
    static char many[1000 * 64], replies[1000 * 24];
    size_t nm = 0, nr = 0;
    for (int i = 0; i < 1000; i++) {
        nm += (size_t)sprintf(many + nm, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n%04d\r\n", i);
        nm += (size_t)sprintf(many + nm, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        nr += (size_t)sprintf(replies + nr, "+OK\r\n$4\r\n%04d\r\n", i);
    }
    raw_send(fd, many, nm);
    raw_expect(fd, replies);
    /* A 1 MB value, sent in pieces, stored and read back. */
    static char value[1 << 20];
    for (size_t k = 0; k < sizeof value; k++)
        value[k] = (char)('a' + k % 26);
    char head[64];
    snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%zu\r\n", sizeof value);
    raw_sends(fd, head);
    for (size_t k = 0; k < sizeof value; k += 100000)
        raw_send(fd, value + k, sizeof value - k < 100000 ? sizeof value - k : 100000);
    raw_sends(fd, "\r\nSTRLEN big\r\nGET big\r\n");
    raw_expect(fd, "+OK\r\n-ERR unknown command 'STRLEN'\r\n");
    snprintf(head, sizeof head, "$%zu\r\n", sizeof value);
    raw_expect(fd, head);
    static char back[sizeof value + 2];
    bool eof;
    CHECK_EQ(raw_recv(fd, back, sizeof back, slow(10000), &eof), sizeof back);
    CHECK(memcmp(back, value, sizeof value) == 0);
    raw_sends(fd, "QUIT\r\n");
    raw_until_close(fd, got, sizeof got);
    CHECK_STR(got, "+OK\r\n");
    close(fd);
    server_stop(&s);
}

TEST(bulk_length_limit)
{
    struct server s;
    server_start(&s, "--max-bulk-len", "1000", NULL);
    int fd = raw_connect(&s);
    static char cmd[2100];
    int n = sprintf(cmd, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n");
    memset(cmd + n, 'v', 1000);
    memcpy(cmd + n + 1000, "\r\n", 2);
    raw_send(fd, cmd, (size_t)n + 1002);
    raw_expect(fd, "+OK\r\n");
    raw_sends(fd, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n");
    static char got[256];
    raw_until_close(fd, got, sizeof got);
    CHECK_STR(got, "-ERR Protocol error: invalid bulk length\r\n");
    close(fd);
    server_stop(&s);
}

/* ---- (d) idle connections --------------------------------------------------------- */

TEST(idle_timeout)
{
    struct server s;
    server_start(&s, "--idle-timeout-ms", "300", NULL);
    /* Half a command, then nothing: cut off after the timeout. */
    uint64_t t0 = test_now_ms();
    int fd = raw_connect(&s);
    raw_sends(fd, "*2\r\n$3\r\nGET");
    char got[256];
    raw_until_close(fd, got, sizeof got);
    uint64_t took = test_now_ms() - t0;
    CHECK_STR(got, "");
    CHECK(took >= 250);
    close(fd);

    /* A slowloris: a byte every 50 ms never completes a command; trickling
     * does not keep the connection. */
    t0 = test_now_ms();
    fd = raw_connect(&s);
    const char *cmd = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n";
    bool closed = false;
    for (size_t i = 0; !closed; i++) {
        if (send(fd, cmd + i % strlen(cmd), 1, MSG_NOSIGNAL) != 1)
            closed = true;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 50) > 0 && recv(fd, got, sizeof got, 0) <= 0)
            closed = true;
        if (test_now_ms() - t0 > slow(10000))
            TEST_FAIL("a trickling client kept its connection");
    }
    CHECK(test_now_ms() - t0 >= 250);
    close(fd);

    /* A client that keeps sending commands stays, however long. */
    fd = raw_connect(&s);
    for (int i = 0; i < 10; i++) {
        raw_sends(fd, "PING\r\n");
        raw_expect(fd, "+PONG\r\n");
        usleep(100000);
    }
    /* An idle subscriber stays too: it waits for messages. */
    int sub = raw_connect(&s);
    raw_sends(sub, "SUBSCRIBE ch\r\n");
    raw_expect(sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    usleep(700000);
    close(fd);
    fd = raw_connect(&s);
    raw_sends(fd, "PUBLISH ch still-here\r\n");
    raw_expect(fd, ":1\r\n");
    raw_expect(sub, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$10\r\nstill-here\r\n");
    close(sub);
    close(fd);
    server_stop(&s);
}

/* ---- graceful shutdown ------------------------------------------------------------ */

TEST(graceful_shutdown)
{
    struct server s;
    server_start(&s, NULL);
    int idle = raw_connect(&s), half = raw_connect(&s), sub = raw_connect(&s);
    raw_sends(idle, "PING\r\n");
    raw_expect(idle, "+PONG\r\n");
    raw_sends(sub, "SUBSCRIBE ch\r\n");
    raw_expect(sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    raw_sends(half, "*2\r\n$3\r\nGET\r\n");
    usleep(100000);
    uint64_t t0 = test_now_ms();
    server_stop(&s); /* exit status 0 */
    CHECK(test_now_ms() - t0 < slow(2000));
    char got[256];
    raw_until_close(idle, got, sizeof got);
    raw_until_close(half, got, sizeof got);
    raw_until_close(sub, got, sizeof got);
    close(idle);
    close(half);
    close(sub);
    /* Nobody listens any more. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s.port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) != 0);
    close(fd);
}

/* A client that does not read its replies cannot hold the server at
 * shutdown: it is cancelled after the grace period. */
TEST(shutdown_cancels_stuck_connections)
{
    struct server s;
    server_start(&s, NULL);
    int fd = raw_connect(&s);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    /* Ask for a 1 MB value many times without reading. */
    static char value[1 << 20];
    memset(value, 'v', sizeof value);
    char head[64];
    snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$%zu\r\n", sizeof value);
    raw_sends(fd, head);
    raw_send(fd, value, sizeof value);
    raw_sends(fd, "\r\n");
    for (int i = 0; i < 8; i++)
        raw_sends(fd, "GET v\r\n");
    usleep((useconds_t)slow(200) * 1000); /* it answers the first GETs and blocks */
    uint64_t t0 = test_now_ms();
    server_stop(&s);
    uint64_t took = test_now_ms() - t0;
    CHECK(took >= 1900); /* it had its 2 s */
    close(fd);
}
