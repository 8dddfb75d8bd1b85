/* The buffered reader: lines and delimiters split across reads, over-long
 * lines, end of stream with and without a last piece, read_exact,
 * deadlines that keep partial data, cancellation, plain threads. */
#include "test.h"

#include <pthread.h>
#include <sys/socket.h>

/* A connected pair of non-blocking stream sockets: sv[0] is read through
 * the reader, sv[1] is the peer that writes. */
static void make_pair(int sv[2])
{
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void close_pair(int sv[2])
{
    CHECK_EQ(braid_close(sv[0]), 0);
    CHECK_EQ(braid_close(sv[1]), 0);
}

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    CHECK_EQ(braid_write_all(fd, s, n), (ssize_t)n);
}

/* Next line must be want (NULL: end of stream). */
static void expect_line(braid_reader *r, int delim, const char *want)
{
    const char *data = (const char *)1;
    ssize_t n = braid_reader_slice(r, delim, &data);
    if (!want) {
        CHECK_EQ(n, 0);
        CHECK(data == NULL);
        return;
    }
    if (n != (ssize_t)strlen(want) || memcmp(data, want, (size_t)n) != 0)
        TEST_FAIL("expected \"%s\", got %zd \"%.*s\"", want, n, n > 0 ? (int)n : 0,
                  n > 0 ? data : "");
}

/* ---- basics ---- */

static void *lines_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 0), 0);
    CHECK_EQ(braid_reader_buffered(r), 0);
    put(sv[1], "hello\nworld\n\nlast piece");
    CHECK_EQ(braid_shutdown(sv[1], SHUT_WR), 0);
    const char *data;
    CHECK_EQ(braid_reader_line(r, &data), 6);
    CHECK(memcmp(data, "hello\n", 6) == 0);
    CHECK_EQ(braid_reader_buffered(r), strlen("world\n\nlast piece"));
    expect_line(r, '\n', "world\n");
    expect_line(r, '\n', "\n");
    expect_line(r, '\n', "last piece"); /* no delimiter: the stream ended */
    expect_line(r, '\n', NULL);
    expect_line(r, '\n', NULL); /* and stays ended */
    char buf[8];
    CHECK_EQ(braid_reader_read(r, buf, sizeof buf), 0);
    CHECK_EQ(braid_reader_read_exact(r, buf, sizeof buf), 0);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_lines_and_last_piece)
{
    test_run(1, lines_root, NULL);
}

static void *eof_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 0), 0);
    put(sv[1], "a;bb;ccc;");
    CHECK_EQ(braid_close(sv[1]), 0);
    expect_line(r, ';', "a;");
    expect_line(r, ';', "bb;");
    expect_line(r, ';', "ccc;");
    expect_line(r, ';', NULL); /* no last piece: straight to 0 */
    braid_reader_free(r);
    CHECK_EQ(braid_close(sv[0]), 0);
    return NULL;
}

TEST(reader_eof_without_last_piece)
{
    test_run(1, eof_root, NULL);
}

TEST(reader_arguments)
{
    braid_reader *r = (braid_reader *)1;
    CHECK_EQ(braid_reader_new(&r, -1, 0), -EINVAL);
    CHECK(r == NULL);
    CHECK_EQ(braid_reader_new(NULL, 0, 0), -EINVAL);
    CHECK_EQ(braid_reader_new(&r, 0, SIZE_MAX), -EINVAL);
    braid_reader_free(NULL);
    CHECK_EQ(braid_reader_buffered(NULL), 0);
    CHECK_EQ(braid_reader_new(&r, 0, 16), 0);
    const char *data;
    char c;
    CHECK_EQ(braid_reader_slice(r, 256, &data), -EINVAL);
    CHECK_EQ(braid_reader_slice(r, -129, &data), -EINVAL);
    CHECK_EQ(braid_reader_slice(r, '\n', NULL), -EINVAL);
    CHECK_EQ(braid_reader_read(NULL, &c, 1), -EINVAL);
    CHECK_EQ(braid_reader_read(r, NULL, 1), -EINVAL);
    CHECK_EQ(braid_reader_read_exact(NULL, &c, 1), -EINVAL);
    CHECK_EQ(braid_reader_line(NULL, &data), -EINVAL);
    CHECK_EQ(braid_reader_read(r, &c, 0), 0); /* nothing asked: no read */
    braid_reader_free(r);
}

/* Errors of the descriptor pass through. */
TEST(reader_passes_errors_through)
{
    int p[2];
    CHECK_EQ(pipe(p), 0);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, p[1], 0), 0); /* the write end */
    char c;
    const char *data;
    CHECK_EQ(braid_reader_read(r, &c, 1), -EBADF);
    CHECK_EQ(braid_reader_line(r, &data), -EBADF);
    braid_reader_free(r);
    close(p[0]);
    close(p[1]);
}

/* ---- lines arriving in pieces ---- */

struct feed {
    int fd;
    const char *data;
    size_t len;
    size_t chunk; /* bytes per write; 1: byte by byte */
};

static void *writer(void *arg)
{
    struct feed *f = arg;
    for (size_t off = 0; off < f->len; off += f->chunk) {
        size_t k = f->chunk < f->len - off ? f->chunk : f->len - off;
        CHECK_EQ(braid_write_all(f->fd, f->data + off, k), (ssize_t)k);
        CHECK_EQ(braid_yield(), 0); /* the reader gets to see each piece */
    }
    CHECK_EQ(braid_shutdown(f->fd, SHUT_WR), 0);
    return NULL;
}

static void *bytewise_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    static const char text[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody|with|pipes|end";
    struct feed f = { sv[1], text, strlen(text), 1 };
    braid_task w;
    CHECK_EQ(braid_spawn(&w, writer, &f), 0);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 16), 0);
    expect_line(r, '\n', "GET / HTTP/1.1\r\n"); /* exactly the capacity */
    expect_line(r, '\n', "Host: x\r\n");
    expect_line(r, '\n', "\r\n");
    expect_line(r, '|', "body|");
    expect_line(r, '|', "with|");
    char buf[4];
    CHECK_EQ(braid_reader_read_exact(r, buf, 4), 4); /* mixing calls */
    CHECK(memcmp(buf, "pipe", 4) == 0);
    expect_line(r, '|', "s|");
    expect_line(r, '|', "end");
    expect_line(r, '|', NULL);
    CHECK_EQ(braid_join(w, NULL), BRAID_OK);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_delimiter_split_byte_by_byte)
{
    test_run(1, bytewise_root, NULL);
}

TEST(reader_delimiter_split_byte_by_byte_two_workers)
{
    test_run(2, bytewise_root, NULL);
}

/* Many lines of every length up to and past the capacity, written in
 * chunks of a size unrelated to them: each line comes out whole, and each
 * too long one as -EMSGSIZE, with the lines after it intact. */
enum { CAP = 32, NLINES = 2000 };

static uint32_t rng(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

struct mixed {
    size_t chunk;
    char *text;
    size_t len;
    int lens[NLINES]; /* each line's length with its delimiter */
};

static void make_mixed(struct mixed *m, uint32_t seed)
{
    m->text = malloc((size_t)NLINES * (2 * CAP + 2));
    CHECK(m->text != NULL);
    m->len = 0;
    for (int i = 0; i < NLINES; i++) {
        int len = 1 + (int)(rng(&seed) % (CAP + CAP / 2)); /* some too long */
        if (i % 97 == 0)
            len = CAP;
        if (i % 89 == 0)
            len = CAP + 1;
        for (int k = 0; k < len - 1; k++)
            m->text[m->len++] = (char)('a' + (i + k) % 26);
        m->text[m->len++] = '\n';
        m->lens[i] = len;
    }
}

static void *mixed_root(void *arg)
{
    struct mixed *m = arg;
    int sv[2];
    make_pair(sv);
    struct feed f = { sv[1], m->text, m->len, m->chunk };
    braid_task w;
    CHECK_EQ(braid_spawn(&w, writer, &f), 0);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], CAP), 0);
    size_t off = 0;
    int too_long = 0;
    for (int i = 0; i < NLINES; i++) {
        const char *data;
        ssize_t n = braid_reader_line(r, &data);
        if (m->lens[i] > CAP) {
            CHECK_EQ(n, -EMSGSIZE);
            CHECK(data == NULL);
            too_long++;
        } else {
            CHECK_EQ(n, m->lens[i]);
            CHECK(memcmp(data, m->text + off, (size_t)n) == 0);
        }
        off += (size_t)m->lens[i];
    }
    CHECK(too_long > 0);
    const char *data;
    CHECK_EQ(braid_reader_line(r, &data), 0);
    CHECK_EQ(braid_join(w, NULL), BRAID_OK);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

static void run_mixed(unsigned workers, size_t chunk, uint32_t seed)
{
    static struct mixed m;
    make_mixed(&m, seed);
    m.chunk = chunk;
    test_run(workers, mixed_root, &m);
    free(m.text);
}

TEST(reader_lines_of_every_length)
{
    run_mixed(1, 1, 1);
    run_mixed(1, 7, 2);
    run_mixed(1, 100, 3);
    run_mixed(2, 13, 4);
    run_mixed(2, 4096, 5);
}

/* ---- over-long lines ---- */

static void *long_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 8), 0);
    put(sv[1], "0123456789abcdefghij\nok\n12345678");
    const char *data = (const char *)1;
    /* The long line goes whole, its tail included; then the reader goes on. */
    CHECK_EQ(braid_reader_line(r, &data), -EMSGSIZE);
    CHECK(data == NULL);
    expect_line(r, '\n', "ok\n");
    /* Also at the end of the stream: 8 bytes without a delimiter do not fit
     * either (the delimiter is part of the line). */
    CHECK_EQ(braid_shutdown(sv[1], SHUT_WR), 0);
    CHECK_EQ(braid_reader_line(r, &data), -EMSGSIZE);
    expect_line(r, '\n', NULL);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_long_line_is_discarded)
{
    test_run(1, long_root, NULL);
}

/* The rest of a discarded line is skipped by whatever call comes next. */
static void *long_then_read_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 8), 0);
    put(sv[1], "0123456789");
    const char *data;
    CHECK_EQ(braid_reader_slice(r, '.', &data), -EMSGSIZE);
    CHECK_EQ(braid_reader_buffered(r), 0);
    /* Nothing after it yet: a read waits (here: past its deadline). */
    char buf[16];
    CHECK_EQ(braid_reader_read_until(r, buf, sizeof buf, braid_deadline_ms(10)), -ETIMEDOUT);
    put(sv[1], "abc.rest");
    CHECK_EQ(braid_reader_read(r, buf, sizeof buf), 4);
    CHECK(memcmp(buf, "rest", 4) == 0);
    /* A discard that meets the end of the stream ends there. */
    put(sv[1], "xxxxxxxxxxxxxxxx");
    CHECK_EQ(braid_reader_slice(r, '.', &data), -EMSGSIZE);
    CHECK_EQ(braid_shutdown(sv[1], SHUT_WR), 0);
    CHECK_EQ(braid_reader_read_exact(r, buf, 2), 0);
    CHECK_EQ(braid_reader_read(r, buf, 2), 0);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_long_line_rest_skipped_by_next_call)
{
    test_run(1, long_then_read_root, NULL);
}

/* ---- read and read_exact ---- */

static void *exact_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 16), 0);
    put(sv[1], "abcdefgh");
    char buf[128];
    CHECK_EQ(braid_reader_read_exact(r, buf, 3), 3);
    CHECK(memcmp(buf, "abc", 3) == 0);
    CHECK_EQ(braid_reader_buffered(r), 5);
    CHECK_EQ(braid_reader_read(r, buf, 2), 2); /* from the buffer */
    CHECK(memcmp(buf, "de", 2) == 0);
    CHECK_EQ(braid_reader_read(r, buf, 100), 3); /* what is buffered, no more */
    CHECK(memcmp(buf, "fgh", 3) == 0);
    /* Larger than the buffer: straight through, with the buffered head. */
    char big[100];
    for (int i = 0; i < 100; i++)
        big[i] = (char)i;
    CHECK_EQ(braid_write_all(sv[1], big, 100), 100);
    CHECK_EQ(braid_reader_read_exact(r, buf, 4), 4);
    CHECK_EQ(braid_reader_read_exact(r, buf + 4, 96), 96);
    CHECK(memcmp(buf, big, 100) == 0);
    CHECK_EQ(braid_write_all(sv[1], big, 100), 100);
    CHECK_EQ(braid_reader_read(r, buf, 100), 100); /* a large read bypasses */
    CHECK(memcmp(buf, big, 100) == 0);
    /* Ends part-way: -EPIPE with the bytes there were. */
    put(sv[1], "xyz");
    CHECK_EQ(braid_shutdown(sv[1], SHUT_WR), 0);
    memset(buf, 0, sizeof buf);
    CHECK_EQ(braid_reader_read_exact(r, buf, 5), -EPIPE);
    CHECK(memcmp(buf, "xyz", 3) == 0);
    CHECK_EQ(braid_reader_read_exact(r, buf, 5), 0);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_read_and_read_exact)
{
    test_run(1, exact_root, NULL);
}

static void *exact_big_eof_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 16), 0);
    put(sv[1], "0123456789");
    CHECK_EQ(braid_shutdown(sv[1], SHUT_WR), 0);
    char buf[64];
    CHECK_EQ(braid_reader_read_exact(r, buf, 2), 2);
    CHECK_EQ(braid_reader_read_exact(r, buf, 40), -EPIPE); /* past the capacity */
    CHECK(memcmp(buf, "23456789", 8) == 0);
    CHECK_EQ(braid_reader_read_exact(r, buf, 40), 0);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_read_exact_larger_than_buffer_at_eof)
{
    test_run(1, exact_big_eof_root, NULL);
}

/* ---- deadlines ---- */

static void *deadline_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 0), 0);
    const char *data = (const char *)1;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_reader_line_until(r, &data, braid_deadline_ms(30)), -ETIMEDOUT);
    CHECK(braid_now_ns() - t0 >= 30000000u);
    CHECK(data == NULL);
    /* A partial line stays buffered across the deadline. */
    put(sv[1], "partial");
    CHECK_EQ(braid_reader_line_until(r, &data, braid_deadline_ms(20)), -ETIMEDOUT);
    CHECK_EQ(braid_reader_buffered(r), 7);
    put(sv[1], " line\nnext\n");
    expect_line(r, '\n', "partial line\n");
    /* A deadline already past still returns what is there. */
    CHECK_EQ(braid_reader_line_until(r, &data, 0), 5);
    CHECK(memcmp(data, "next\n", 5) == 0);
    put(sv[1], "ready\n");
    CHECK_EQ(braid_reader_line_until(r, &data, 0), 6);
    CHECK_EQ(braid_reader_line_until(r, &data, 0), -ETIMEDOUT);
    /* read_exact up to the capacity loses nothing either. */
    put(sv[1], "abc");
    char buf[8];
    CHECK_EQ(braid_reader_read_exact_until(r, buf, 5, braid_deadline_ms(20)), -ETIMEDOUT);
    CHECK_EQ(braid_reader_buffered(r), 3);
    put(sv[1], "de");
    CHECK_EQ(braid_reader_read_exact_until(r, buf, 5, braid_deadline_ms(60000)), 5);
    CHECK(memcmp(buf, "abcde", 5) == 0);
    CHECK_EQ(braid_reader_read_until(r, buf, 5, braid_deadline_ms(10)), -ETIMEDOUT);
    braid_reader_free(r);
    close_pair(sv);
    return NULL;
}

TEST(reader_deadline_keeps_partial_data)
{
    test_run(1, deadline_root, NULL);
}

/* ---- cancellation ---- */

static braid_reader *shared_r;
static atomic_int stage;

static void *blocked_reader(void *arg)
{
    (void)arg;
    const char *data;
    atomic_store(&stage, 1);
    return (void *)(intptr_t)braid_reader_line(shared_r, &data);
}

static void *cancelled_then_reads(void *arg)
{
    (void)arg;
    atomic_store(&stage, 1);
    while (braid_sleep_ms(1) == 0) {
    }
    /* Cancelled: every call is a cancellation point, even one the buffer
     * could serve. */
    char c;
    const char *data;
    CHECK_EQ(braid_reader_read(shared_r, &c, 1), -ECANCELED);
    CHECK_EQ(braid_reader_read_exact(shared_r, &c, 1), -ECANCELED);
    CHECK_EQ(braid_reader_line(shared_r, &data), -ECANCELED);
    /* ... unless shielded. */
    bool prev = braid_cancel_shield(true);
    CHECK_EQ(braid_reader_read(shared_r, &c, 1), 1);
    CHECK_EQ(c, 'a');
    braid_cancel_shield(prev);
    return NULL;
}

static void *cancel_root(void *arg)
{
    (void)arg;
    int sv[2];
    make_pair(sv);
    CHECK_EQ(braid_reader_new(&shared_r, sv[0], 0), 0);
    put(sv[1], "abc");
    const char *data;
    CHECK_EQ(braid_reader_line_until(shared_r, &data, 0), -ETIMEDOUT);
    CHECK_EQ(braid_reader_buffered(shared_r), 3);

    /* A task waiting for the rest of the line is cancelled: it returns
     * -ECANCELED and the partial line stays. */
    atomic_store(&stage, 0);
    braid_task t;
    CHECK_EQ(braid_spawn(&t, blocked_reader, NULL), 0);
    test_await(&stage, 1);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_cancel(t), 0);
    void *res;
    CHECK_EQ(braid_join(t, &res), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)res, -ECANCELED);
    CHECK_EQ(braid_reader_buffered(shared_r), 3);

    atomic_store(&stage, 0);
    CHECK_EQ(braid_spawn(&t, cancelled_then_reads, NULL), 0);
    test_await(&stage, 1);
    CHECK_EQ(braid_cancel(t), 0);
    CHECK_EQ(braid_join(t, NULL), BRAID_CANCELLED);

    put(sv[1], "d\n");
    expect_line(shared_r, '\n', "bcd\n");
    braid_reader_free(shared_r);
    close_pair(sv);
    return NULL;
}

TEST(reader_cancellation)
{
    test_run(1, cancel_root, NULL);
}

TEST(reader_cancellation_two_workers)
{
    test_run(2, cancel_root, NULL);
}

/* ---- plain threads ---- */

static void *thread_writer(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < 100; i++) {
        char line[32];
        int n = snprintf(line, sizeof line, "line %d\n", i);
        CHECK_EQ(braid_write_all(fd, line, (size_t)n), n);
    }
    CHECK_EQ(braid_shutdown(fd, SHUT_WR), 0);
    return NULL;
}

TEST(reader_on_plain_threads)
{
    int sv[2];
    make_pair(sv);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, thread_writer, &sv[1]), 0);
    braid_reader *r;
    CHECK_EQ(braid_reader_new(&r, sv[0], 12), 0);
    for (int i = 0; i < 100; i++) {
        char want[32];
        snprintf(want, sizeof want, "line %d\n", i);
        expect_line(r, '\n', want);
    }
    expect_line(r, '\n', NULL);
    CHECK_EQ(pthread_join(th, NULL), 0);
    braid_reader_free(r);
    close_pair(sv);
}
