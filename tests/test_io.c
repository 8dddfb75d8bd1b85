/* The reactor and the socket calls: waiting reads and writes, close waking
 * waiters, deadlines, cancellation, TCP, UDP, Unix sockets, plain threads. */
#include "test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void nb_pair(int sv[2])
{
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* ---- a read that has to wait (one worker: the reader runs and blocks
 * before the writer ever starts) ------------------------------------------- */

static int pair[2];

static void *reader_task(void *arg)
{
    char buf[16] = { 0 };
    ssize_t n = braid_read(pair[0], buf, sizeof buf);
    CHECK_EQ(n, 5);
    CHECK(!memcmp(buf, "hello", 5));
    n = braid_read(pair[0], buf, sizeof buf); /* end of stream */
    CHECK_EQ(n, 0);
    return arg;
}

static void *writer_task(void *arg)
{
    CHECK_EQ(braid_write_all(pair[1], "hello", 5), 5);
    CHECK_EQ(braid_close(pair[1]), 0);
    return arg;
}

static void *wait_read_root(void *arg)
{
    (void)arg;
    nb_pair(pair);
    braid_task r, w;
    CHECK_EQ(braid_spawn(&r, reader_task, NULL), 0);
    braid_yield(); /* the reader is now waiting on the socket */
    CHECK_EQ(braid_spawn(&w, writer_task, NULL), 0);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    CHECK_EQ(braid_join(w, NULL), BRAID_OK);
    CHECK_EQ(braid_close(pair[0]), 0);
    return NULL;
}

TEST(read_waits_for_data_and_sees_eof)
{
    test_run(1, wait_read_root, NULL);
}

/* ---- braid_close wakes waiting tasks with -EBADF ------------------------- */

static void *blocked_reader(void *arg)
{
    char c;
    return (void *)(intptr_t)braid_read((int)(intptr_t)arg, &c, 1);
}

static void *blocked_waiter(void *arg)
{
    return (void *)(intptr_t)braid_wait_fd((int)(intptr_t)arg, BRAID_READABLE, BRAID_FOREVER);
}

static void *close_root(void *arg)
{
    (void)arg;
    int sv[2];
    nb_pair(sv);
    braid_task a, b;
    void *ra, *rb;
    CHECK_EQ(braid_spawn(&a, blocked_reader, (void *)(intptr_t)sv[0]), 0);
    CHECK_EQ(braid_spawn(&b, blocked_waiter, (void *)(intptr_t)sv[0]), 0);
    braid_yield();
    CHECK_EQ(braid_close(sv[0]), 0);
    CHECK_EQ(braid_join(a, &ra), BRAID_OK);
    CHECK_EQ(braid_join(b, &rb), BRAID_OK);
    CHECK_EQ((intptr_t)ra, -EBADF);
    CHECK_EQ((intptr_t)rb, -EBADF);
    /* The number is reused at once by the kernel: the new descriptor works. */
    int sv2[2];
    nb_pair(sv2);
    CHECK_EQ(braid_write_all(sv2[1], "x", 1), 1);
    char c;
    CHECK_EQ(braid_read(sv2[0], &c, 1), 1);
    CHECK_EQ(braid_close(sv2[0]), 0);
    CHECK_EQ(braid_close(sv2[1]), 0);
    CHECK_EQ(braid_close(sv[1]), 0);
    CHECK_EQ(braid_close(-1), -EBADF);
    return NULL;
}

TEST(close_wakes_waiters_with_ebadf)
{
    test_run(1, close_root, NULL);
    test_run(2, close_root, NULL);
}

/* ---- deadlines and cancellation ------------------------------------------- */

static void *deadline_root(void *arg)
{
    (void)arg;
    int sv[2];
    nb_pair(sv);
    char c;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_read_until(sv[0], &c, 1, braid_deadline_ms(30)), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 29000000u);
    CHECK_EQ(braid_wait_fd(sv[0], BRAID_READABLE, braid_deadline_ms(1)), -ETIMEDOUT);
    /* A deadline already past still completes what needs no wait. */
    CHECK_EQ(braid_write_all(sv[1], "ab", 2), 2);
    CHECK_EQ(braid_read_until(sv[0], &c, 1, 0), 1);
    CHECK_EQ(braid_wait_fd(sv[0], BRAID_READABLE, 0), BRAID_READABLE);
    CHECK_EQ(braid_wait_fd(sv[1], BRAID_WRITABLE | BRAID_READABLE, 0), BRAID_WRITABLE);
    CHECK_EQ(braid_wait_fd(sv[1], 0, 0), -EINVAL);
    /* Cancellation interrupts a waiting read. */
    braid_task t;
    void *r;
    int sv2[2];
    nb_pair(sv2);
    CHECK_EQ(braid_spawn(&t, blocked_reader, (void *)(intptr_t)sv2[0]), 0);
    braid_yield();
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, &r), BRAID_CANCELLED);
    /* The descriptor is intact: data still arrives. */
    CHECK_EQ(braid_write_all(sv2[1], "z", 1), 1);
    CHECK_EQ(braid_read(sv2[0], &c, 1), 1);
    CHECK_EQ(c, 'z');
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(braid_close(sv[i]), 0);
        CHECK_EQ(braid_close(sv2[i]), 0);
    }
    return NULL;
}

TEST(deadlines_and_cancellation)
{
    test_run(1, deadline_root, NULL);
    test_run(2, deadline_root, NULL);
}

/* ---- connecting is a cancellation point, also when it needs no wait ------ */

static char unix_addr[64];
static atomic_int connector_started;

/* Shielded until its cancellation has been requested, then connects to a
 * Unix socket, which would succeed at once. */
static void *cancelled_connector(void *arg)
{
    (void)arg;
    braid_cancel_shield(true);
    atomic_store(&connector_started, 1);
    while (!braid_cancelled())
        braid_yield();
    braid_cancel_shield(false);
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_EQ(braid_addr_parse(unix_addr, &ss, &len), 0);
    CHECK_EQ(braid_connect(unix_addr, SOCK_STREAM), -ECANCELED);
    CHECK_EQ(braid_connect_sockaddr((struct sockaddr *)&ss, len, SOCK_STREAM, BRAID_FOREVER),
             -ECANCELED);
    return NULL;
}

static void *connect_cancel_root(void *arg)
{
    (void)arg;
    snprintf(unix_addr, sizeof unix_addr, "unix:@braid-test-io-%d", (int)getpid());
    int l = braid_listen(unix_addr, SOCK_STREAM, 0, 0);
    CHECK(l >= 0);
    braid_task t;
    atomic_store(&connector_started, 0);
    CHECK_EQ(braid_spawn(&t, cancelled_connector, NULL), 0);
    while (!atomic_load(&connector_started)) /* a task cancelled unstarted never runs */
        braid_yield();
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);
    /* Nothing reached the listener. */
    CHECK_EQ(braid_accept_until(l, NULL, NULL, 0), -ETIMEDOUT);
    CHECK_EQ(braid_close(l), 0);
    return NULL;
}

TEST(cancelled_connect_connects_nothing)
{
    test_run(1, connect_cancel_root, NULL);
    test_run(2, connect_cancel_root, NULL);
}

/* ---- TCP: many echo connections over several workers ---------------------- */

#define CONNS 200
#define ROUNDS 20

static int listener;
static char listen_addr[64];

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[512];
    ssize_t n;
    while ((n = braid_read(fd, buf, sizeof buf)) > 0)
        if (braid_write_all(fd, buf, (size_t)n) != n)
            break;
    braid_close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = braid_accept(listener, NULL, NULL);
        if (fd < 0)
            return (void *)(intptr_t)fd;
        braid_task t;
        CHECK_EQ(braid_spawn(&t, echo_conn, (void *)(intptr_t)fd), 0);
        braid_detach(t);
    }
}

static void *client(void *arg)
{
    int fd = braid_tcp_connect(listen_addr);
    CHECK(fd >= 0);
    char out[64], in[64];
    for (int i = 0; i < ROUNDS; i++) {
        int len = snprintf(out, sizeof out, "client %d round %d", (int)(intptr_t)arg, i);
        CHECK_EQ(braid_write_all(fd, out, (size_t)len), len);
        CHECK_EQ(braid_read_exact(fd, in, (size_t)len), len);
        CHECK(!memcmp(in, out, (size_t)len));
    }
    CHECK_EQ(braid_shutdown(fd, SHUT_WR), 0);
    CHECK_EQ(braid_read(fd, in, 1), 0);
    CHECK_EQ(braid_close(fd), 0);
    return NULL;
}

static void *tcp_root(void *arg)
{
    (void)arg;
    listener = braid_tcp_listen("127.0.0.1:0", 0);
    CHECK(listener >= 0);
    CHECK(braid_local_addr(listener, listen_addr, sizeof listen_addr) > 0);
    CHECK(!strncmp(listen_addr, "127.0.0.1:", 10));
    braid_task acc, cl[CONNS];
    CHECK_EQ(braid_spawn(&acc, acceptor, NULL), 0);
    int n = (int)test_scale(CONNS);
    for (int i = 0; i < n; i++)
        CHECK_EQ(braid_spawn(&cl[i], client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < n; i++)
        CHECK_EQ(braid_join(cl[i], NULL), BRAID_OK);
    CHECK_EQ(braid_close(listener), 0);
    void *r;
    CHECK_EQ(braid_join(acc, &r), BRAID_OK);
    CHECK_EQ((intptr_t)r, -EBADF);
    return NULL;
}

TEST(tcp_echo_many_connections)
{
    test_run(2, tcp_root, NULL);
    test_run(4, tcp_root, NULL);
}

/* ---- errors ---------------------------------------------------------------- */

static void *errors_root(void *arg)
{
    (void)arg;
    /* Nobody listens on a port we just closed. */
    int l = braid_tcp_listen("127.0.0.1:0", 1);
    char addr[64];
    CHECK(braid_local_addr(l, addr, sizeof addr) > 0);
    CHECK_EQ(braid_close(l), 0);
    CHECK_EQ(braid_tcp_connect(addr), -ECONNREFUSED);
    CHECK_EQ(braid_tcp_connect("not an address"), -EINVAL);
    /* Host names are resolved (on the blocking pool). */
    char named[80];
    snprintf(named, sizeof named, "localhost:%s", strrchr(addr, ':') + 1);
    CHECK_EQ(braid_tcp_connect(named), -ECONNREFUSED);
    CHECK_EQ(braid_tcp_connect("no-such-host.invalid:80"), -ENOENT);
    l = braid_tcp_listen("127.0.0.1:0", 1);
    CHECK(braid_local_addr(l, addr, sizeof addr) > 0);
    snprintf(named, sizeof named, "localhost:%s", strrchr(addr, ':') + 1);
    int c = braid_tcp_connect(named); /* ::1 may be refused first, then 127.0.0.1 */
    CHECK(c >= 0);
    braid_close(c);
    braid_close(l);
    CHECK_EQ(braid_tcp_listen("127.0.0.1:99999", 0), -EINVAL);
    CHECK_EQ(braid_listen("127.0.0.1:0", SOCK_RAW, 0, 0), -EINVAL);
    /* Writing to a peer that is gone: -EPIPE, no SIGPIPE. */
    int sv[2];
    nb_pair(sv);
    CHECK_EQ(braid_close(sv[1]), 0);
    CHECK_EQ(braid_write(sv[0], "x", 1), -EPIPE);
    CHECK_EQ(braid_close(sv[0]), 0);
    /* A pipe: no socket, the same calls. */
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    CHECK_EQ(braid_write_all(p[1], "pipe", 4), 4);
    char buf[8];
    CHECK_EQ(braid_read_exact(p[0], buf, 4), 4);
    CHECK_EQ(braid_close(p[0]), 0);
    signal(SIGPIPE, SIG_IGN); /* write(2) on a pipe would raise it */
    CHECK_EQ(braid_write(p[1], "x", 1), -EPIPE);
    CHECK_EQ(braid_close(p[1]), 0);
    /* read_exact: EOF part-way. */
    nb_pair(sv);
    CHECK_EQ(braid_write_all(sv[1], "abc", 3), 3);
    CHECK_EQ(braid_close(sv[1]), 0);
    CHECK_EQ(braid_read_exact(sv[0], buf, 4), -EPIPE);
    CHECK_EQ(braid_read_exact(sv[0], buf, 4), 0);
    CHECK_EQ(braid_close(sv[0]), 0);
    /* A stale descriptor. */
    CHECK_EQ(braid_read(sv[0], buf, 1), -EBADF);
    CHECK_EQ(braid_wait_fd(sv[0], BRAID_READABLE, BRAID_FOREVER), -EBADF);
    return NULL;
}

TEST(errors_are_clean)
{
    test_run(2, errors_root, NULL);
}

/* ---- UDP and Unix sockets ---------------------------------------------------- */

static void *dgram_root(void *arg)
{
    (void)arg;
    int a = braid_udp_bind("127.0.0.1:0"), b = braid_udp_bind("[::1]:0");
    CHECK(a >= 0);
    if (b == -EADDRNOTAVAIL || b == -EAFNOSUPPORT)
        b = braid_udp_bind("127.0.0.1:0"); /* no IPv6 loopback here */
    CHECK(b >= 0);
    char addr[64];
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK(braid_local_addr(a, addr, sizeof addr) > 0);
    CHECK_EQ(braid_addr_parse(addr, &ss, &len), 0);
    if (b >= 0 && ss.ss_family == AF_INET) {
        char baddr[64];
        CHECK(braid_local_addr(b, baddr, sizeof baddr) > 0);
        if (baddr[0] == '[') { /* the families differ: use IPv4 on both */
            braid_close(b);
            b = braid_udp_bind("127.0.0.1:0");
        }
    }
    CHECK_EQ(braid_send_to(b, "ping", 4, (struct sockaddr *)&ss, len), 4);
    char buf[16];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    CHECK_EQ(braid_recv_from(a, buf, sizeof buf, (struct sockaddr *)&from, &fromlen), 4);
    CHECK(!memcmp(buf, "ping", 4));
    CHECK_EQ(braid_send_to(a, "pong", 4, (struct sockaddr *)&from, fromlen), 4);
    CHECK_EQ(braid_recv_from(b, buf, sizeof buf, NULL, NULL), 4);
    CHECK_EQ(braid_recv_from_until(b, buf, sizeof buf, NULL, NULL, braid_deadline_ms(5)),
             -ETIMEDOUT);
    braid_close(a);
    braid_close(b);

    /* Unix stream, path and abstract. */
    char path[64];
    snprintf(path, sizeof path, "unix:/tmp/braid-test-%d.sock", (int)getpid());
    const char *names[] = { path, "unix:@braid-test-abstract" };
    for (int i = 0; i < 2; i++) {
        int l = braid_listen(names[i], SOCK_STREAM, 0, 0);
        CHECK(l >= 0);
        CHECK(braid_local_addr(l, addr, sizeof addr) > 0);
        CHECK_STR(addr, names[i]);
        int c = braid_connect(names[i], SOCK_STREAM);
        CHECK(c >= 0);
        int s = braid_accept(l, NULL, NULL);
        CHECK(s >= 0);
        CHECK_EQ(braid_write_all(c, "unix", 4), 4);
        CHECK_EQ(braid_read_exact(s, buf, 4), 4);
        braid_close(s);
        braid_close(c);
        braid_close(l);
    }
    /* The file left behind is stale and taken over; a live server's is not,
     * nor is a file that is not a socket. */
    int l = braid_listen(path, SOCK_STREAM, 0, 0);
    CHECK(l >= 0);
    CHECK_EQ(braid_listen(path, SOCK_STREAM, 0, 0), -EADDRINUSE);
    braid_close(l);
    unlink(path + 5);
    int plain = open(path + 5, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(plain >= 0);
    close(plain);
    CHECK_EQ(braid_listen(path, SOCK_STREAM, 0, 0), -EEXIST);
    unlink(path + 5);
    /* Unix datagrams. */
    int d = braid_listen(path, SOCK_DGRAM, 0, 0);
    CHECK(d >= 0);
    int c = braid_connect(path, SOCK_DGRAM);
    CHECK(c >= 0);
    CHECK_EQ(braid_write(c, "dgram", 5), 5);
    CHECK_EQ(braid_recv_from(d, buf, sizeof buf, NULL, NULL), 5);
    braid_close(c);
    braid_close(d);
    unlink(path + 5);
    return NULL;
}

TEST(udp_and_unix_sockets)
{
    test_run(2, dgram_root, NULL);
}

/* ---- addresses ------------------------------------------------------------------ */

TEST(address_strings)
{
    const char *good[] = { "127.0.0.1:80", "[::1]:8080", "unix:/tmp/x.sock", "unix:@abs",
                           "0.0.0.0:0" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        char back[128];
        CHECK_EQ(braid_addr_parse(good[i], &ss, &len), 0);
        CHECK(braid_addr_format((struct sockaddr *)&ss, len, back, sizeof back) > 0);
        CHECK_STR(back, good[i]);
    }
    const char *bad[] = { "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:4",
                          "::1:80", "[::1]80", "host:-1", "unix:", "localhost:80" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        CHECK_EQ(braid_addr_parse(bad[i], &ss, &len), -EINVAL);
    }
    struct sockaddr_storage ss;
    socklen_t len;
    char small[4];
    CHECK_EQ(braid_addr_parse(":9", &ss, &len), 0);
    CHECK_EQ(ss.ss_family, AF_INET6);
    CHECK_EQ(braid_addr_format((struct sockaddr *)&ss, len, small, sizeof small), -ENOSPC);
}

/* ---- plain threads block in poll ------------------------------------------------ */

static void *thread_writer(void *arg)
{
    int fd = *(int *)arg;
    usleep(20000); /* not a synchronization: the reader is correct either way */
    CHECK_EQ(braid_write_all(fd, "thread", 6), 6);
    return NULL;
}

TEST(plain_threads_use_poll)
{
    int sv[2];
    nb_pair(sv);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, thread_writer, &sv[1]), 0);
    char buf[8];
    CHECK_EQ(braid_read_exact(sv[0], buf, 6), 6);
    CHECK(!memcmp(buf, "thread", 6));
    pthread_join(th, NULL);
    CHECK_EQ(braid_read_until(sv[0], buf, 1, braid_deadline_ms(10)), -ETIMEDOUT);
    braid_close(sv[0]);
    braid_close(sv[1]);
}

/* ---- big transfers: partial writes, writev ---------------------------------------- */

#define BIG (4 << 20)

static void *big_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char *buf = malloc(BIG);
    CHECK(buf);
    CHECK_EQ(braid_read_exact(fd, buf, BIG), BIG);
    for (size_t i = 0; i < BIG; i++)
        if (buf[i] != (unsigned char)(i * 7))
            TEST_FAIL("byte %zu differs", i);
    free(buf);
    return NULL;
}

static void *big_root(void *arg)
{
    (void)arg;
    int sv[2];
    nb_pair(sv);
    unsigned char *data = malloc(BIG);
    CHECK(data);
    for (size_t i = 0; i < BIG; i++)
        data[i] = (unsigned char)(i * 7);
    braid_task r;
    CHECK_EQ(braid_spawn(&r, big_reader, (void *)(intptr_t)sv[0]), 0);
    /* Uneven pieces, so short writes split them anywhere. */
    struct iovec iov[5];
    size_t cut[6] = { 0, 1, 4097, 1 << 20, 3 << 20, BIG };
    for (int i = 0; i < 5; i++) {
        iov[i].iov_base = data + cut[i];
        iov[i].iov_len = cut[i + 1] - cut[i];
    }
    CHECK_EQ(braid_writev_all(sv[1], iov, 5), BIG);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    free(data);
    braid_close(sv[0]);
    braid_close(sv[1]);
    return NULL;
}

TEST(writev_all_survives_short_writes)
{
    test_run(1, big_root, NULL);
    test_run(2, big_root, NULL);
}

/* ---- one descriptor, two runtimes in turn ------------------------------------------ */

static int shared_pair[2];

static void *writer_later(void *arg)
{
    braid_yield(); /* the reader is waiting (one worker) */
    CHECK_EQ(braid_write_all(shared_pair[1], "x", 1), 1);
    return arg;
}

static void *wait_for_a_byte(void *arg)
{
    (void)arg;
    braid_task w;
    char c;
    CHECK_EQ(braid_spawn(&w, writer_later, NULL), 0);
    CHECK_EQ(braid_read_until(shared_pair[0], &c, 1, braid_deadline_ms(30000)), 1);
    CHECK_EQ(braid_join(w, NULL), BRAID_OK);
    return NULL;
}

TEST(descriptor_outlives_its_runtime)
{
    nb_pair(shared_pair);
    /* The first runtime registers shared_pair[0] with its worker's epoll;
     * the next ones must register it again with theirs. */
    for (int i = 0; i < 3; i++)
        test_run(1, wait_for_a_byte, NULL);
    braid_close(shared_pair[0]);
    braid_close(shared_pair[1]);
}

/* ---- socket options, connect deadlines, connected UDP -------------------------------- */

static void *options_root(void *arg)
{
    (void)arg;
    char addr[64], peer[64], local[64];
    /* SO_REUSEPORT: two listeners on one port. */
    int a = braid_listen("127.0.0.1:0", SOCK_STREAM, 0, BRAID_REUSEPORT);
    CHECK(a >= 0);
    CHECK(braid_local_addr(a, addr, sizeof addr) > 0);
    int b = braid_listen(addr, SOCK_STREAM, 0, BRAID_REUSEPORT);
    CHECK(b >= 0);
    CHECK_EQ(braid_listen(addr, SOCK_STREAM, 0, 0), -EADDRINUSE);
    CHECK_EQ(braid_listen(addr, SOCK_STREAM, 0, 0x100), -EINVAL);
    /* Both ends' addresses. */
    int c = braid_tcp_connect(addr);
    CHECK(c >= 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int s1 = braid_accept_until(a, (struct sockaddr *)&ss, &len, braid_deadline_ms(100));
    int s2 = s1 >= 0 ? -1 : braid_accept(b, NULL, NULL); /* the kernel picked b */
    int srv = s1 >= 0 ? s1 : s2;
    CHECK(srv >= 0);
    CHECK(braid_peer_addr(c, peer, sizeof peer) > 0);
    CHECK_STR(peer, addr);
    CHECK(braid_local_addr(c, local, sizeof local) > 0);
    CHECK(braid_peer_addr(srv, peer, sizeof peer) > 0);
    CHECK_STR(peer, local);
    CHECK_EQ(braid_tcp_nodelay(srv, true), 0);
    braid_close(srv);
    braid_close(c);
    braid_close(a);
    braid_close(b);

    /* A connect that cannot complete (the listener's backlog is full and
     * it never accepts: the kernel drops further handshakes) ends at its
     * deadline. */
    int l = braid_listen("127.0.0.1:0", SOCK_STREAM, 1, 0);
    CHECK(braid_local_addr(l, addr, sizeof addr) > 0);
    int held[8], nheld = 0, rc = 0;
    while (nheld < 8 && (rc = braid_connect_until(addr, SOCK_STREAM, braid_deadline_ms(200))) >= 0)
        held[nheld++] = rc;
    CHECK_EQ(rc, -ETIMEDOUT);
    while (nheld)
        braid_close(held[--nheld]);
    braid_close(l);

    /* Connected UDP: braid_read and braid_write. */
    int u1 = braid_udp_bind("127.0.0.1:0");
    CHECK(braid_local_addr(u1, addr, sizeof addr) > 0);
    int u2 = braid_connect(addr, SOCK_DGRAM);
    CHECK(u2 >= 0);
    CHECK_EQ(braid_write(u2, "udp", 3), 3);
    char buf[8];
    CHECK_EQ(braid_read(u1, buf, sizeof buf), 3);
    braid_close(u1);
    braid_close(u2);
    return NULL;
}

TEST(reuseport_addresses_connect_deadline_connected_udp)
{
    test_run(2, options_root, NULL);
}

/* ---- end of stream right after a short read ------------------------------------------
 * A read that comes up short lets the next one wait for an event without
 * trying; but when the writer's hang-up was already handled before that
 * short read took the last bytes, no event will come: the next read must
 * still see the end of the stream.  A writer thread that pauses between
 * messages and then closes makes that order likely. */

static int eof_pipe[2];

static void *paced_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        usleep(20000); /* pacing, not synchronization */
        CHECK_EQ(write(eof_pipe[1], "hello\n", 6), 6);
    }
    close(eof_pipe[1]);
    return NULL;
}

static void *eof_root(void *arg)
{
    (void)arg;
    pthread_t th;
    char buf[100];
    ssize_t n, total = 0;
    CHECK_EQ(pthread_create(&th, NULL, paced_writer, NULL), 0);
    while ((n = braid_read_until(eof_pipe[0], buf, sizeof buf, braid_deadline_ms(20000))) > 0)
        total += n;
    CHECK_EQ(n, 0);
    CHECK_EQ(total, 30);
    pthread_join(th, NULL);
    braid_close(eof_pipe[0]);
    return NULL;
}

TEST(end_of_stream_after_short_reads)
{
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(pipe2(eof_pipe, O_NONBLOCK | O_CLOEXEC), 0);
        test_run(2, eof_root, NULL);
    }
}
