/*
 * The buffered reader: a buffer in front of braid_read() for line- and
 * frame-oriented protocols.  Built on the public I/O calls only (plus the
 * task's cancellation flag, so that calls served from the buffer are
 * cancellation points like every other braid read).
 *
 * The buffer holds the bytes [start, end) not yet handed out.  It is
 * compacted (moved to the front) only when a read needs room at the end,
 * so a line returned by braid_reader_slice() stays where it is until the
 * next call.  scan remembers how far past start the delimiter search has
 * already looked, so that a line arriving byte by byte costs linear time.
 */
#include "internal.h"
#include "util.h"
#include "task.h"

#include <stdlib.h>
#include <string.h>

#define BRAID_READER_DEFAULT 8192

struct braid_reader {
    int fd;
    size_t cap;
    size_t start, end;  /* buffered bytes: buf[start .. end) */
    size_t scan;        /* buf[start .. start + scan) holds no delimiter */
    int scan_delim;     /* the delimiter scan refers to */
    int skip_delim;     /* >= 0: an over-long line is being discarded up to
                           and including this delimiter */
    char *buf;
};

/* The cancellation point of every reader call: true if the calling task
 * has been cancelled (and is not shielded). */
static bool reader_cancelled(void)
{
    braid__task *t = braid__task_current();
    return t && braid__task_should_cancel(t);
}

int braid_reader_new(braid_reader **out, int fd, size_t capacity)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (fd < 0 || capacity > SIZE_MAX / 2)
        return -EINVAL;
    if (capacity == 0)
        capacity = BRAID_READER_DEFAULT;
    braid_reader *r = braid__calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->buf = braid__malloc(capacity);
    if (!r->buf) {
        free(r);
        return -ENOMEM;
    }
    r->fd = fd;
    r->cap = capacity;
    r->scan_delim = -1;
    r->skip_delim = -1;
    *out = r;
    return 0;
}

void braid_reader_free(braid_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r);
}

size_t braid_reader_buffered(const braid_reader *r)
{
    return r ? r->end - r->start : 0;
}

/* Hand out n buffered bytes (n <= buffered). */
static void reader_consume(braid_reader *r, size_t n)
{
    r->start += n;
    r->scan = r->scan > n ? r->scan - n : 0;
    if (r->start == r->end) {
        r->start = r->end = 0;
        r->scan = 0;
    }
}

/* One braid_read() into the free room at the end of the buffer (moving
 * the buffered bytes to the front first if there is none).  Returns the
 * count, 0 at end of stream, or a negative error; the buffered bytes are
 * kept in every case.  The buffer must not be full. */
static ssize_t reader_fill(braid_reader *r, uint64_t deadline_ns)
{
    if (r->start == r->end) {
        r->start = r->end = 0;
    } else if (r->end == r->cap) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    ssize_t got = braid_read_until(r->fd, r->buf + r->end, r->cap - r->end, deadline_ns);
    if (got > 0)
        r->end += (size_t)got;
    return got;
}

/* Finish discarding an over-long line: drop bytes up to and including the
 * remembered delimiter.  Returns 1 when done (or there was nothing to
 * discard), 0 at end of stream (the discard ends there too), or a
 * negative error (the discard goes on at the next call). */
static ssize_t reader_finish_skip(braid_reader *r, uint64_t deadline_ns)
{
    while (r->skip_delim >= 0) {
        size_t have = r->end - r->start;
        const char *p = memchr(r->buf + r->start, r->skip_delim, have);
        if (p) {
            reader_consume(r, (size_t)(p - (r->buf + r->start)) + 1);
            r->skip_delim = -1;
            return 1;
        }
        reader_consume(r, have);
        ssize_t got = reader_fill(r, deadline_ns);
        if (got == 0)
            r->skip_delim = -1;
        if (got <= 0)
            return got;
    }
    return 1;
}

/* What every read into a caller's buffer starts with: the checks, then
 * the end of a too-long line's skipping.  1: go on; else return it. */
static ssize_t reader_enter(braid_reader *r, const void *buf, size_t n, uint64_t deadline_ns)
{
    if (!r || (!buf && n))
        return -EINVAL;
    if (reader_cancelled())
        return -ECANCELED;
    if (n == 0)
        return 0;
    return reader_finish_skip(r, deadline_ns);
}

ssize_t braid_reader_read_until(braid_reader *r, void *buf, size_t n, uint64_t deadline_ns)
{
    ssize_t rc = reader_enter(r, buf, n, deadline_ns);
    if (rc <= 0)
        return rc;
    size_t have = r->end - r->start;
    if (have == 0) {
        /* A large read bypasses the buffer: no copy. */
        if (n >= r->cap)
            return braid_read_until(r->fd, buf, n, deadline_ns);
        rc = reader_fill(r, deadline_ns);
        if (rc <= 0)
            return rc;
        have = r->end - r->start;
    }
    size_t k = BRAID_MIN(n, have);
    memcpy(buf, r->buf + r->start, k);
    reader_consume(r, k);
    return (ssize_t)k;
}

ssize_t braid_reader_read(braid_reader *r, void *buf, size_t n)
{
    return braid_reader_read_until(r, buf, n, BRAID_FOREVER);
}

ssize_t braid_reader_read_exact_until(braid_reader *r, void *buf, size_t n, uint64_t deadline_ns)
{
    ssize_t rc = reader_enter(r, buf, n, deadline_ns);
    if (rc <= 0)
        return rc; /* 0: the stream ended before the first byte */
    if (n <= r->cap) {
        /* Gather all n bytes in the buffer first, so that a deadline or a
         * cancellation loses nothing. */
        while (r->end - r->start < n) {
            if (r->cap - r->start < n) { /* make room for n at start */
                memmove(r->buf, r->buf + r->start, r->end - r->start);
                r->end -= r->start;
                r->start = 0;
            }
            rc = braid_read_until(r->fd, r->buf + r->end, r->cap - r->end, deadline_ns);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                if (r->end == r->start)
                    return 0;
                /* Part-way: hand out what there is, as braid_read_exact. */
                size_t have = r->end - r->start;
                memcpy(buf, r->buf + r->start, have);
                reader_consume(r, have);
                return -EPIPE;
            }
            r->end += (size_t)rc;
        }
        memcpy(buf, r->buf + r->start, n);
        reader_consume(r, n);
        return (ssize_t)n;
    }
    /* Larger than the buffer: what is buffered, then straight into buf. */
    size_t have = r->end - r->start;
    memcpy(buf, r->buf + r->start, have);
    reader_consume(r, have);
    rc = braid_read_exact_until(r->fd, (char *)buf + have, n - have, deadline_ns);
    if (rc == 0 && n - have > 0)
        return have ? -EPIPE : 0;
    if (rc < 0)
        return rc;
    return (ssize_t)n;
}

ssize_t braid_reader_read_exact(braid_reader *r, void *buf, size_t n)
{
    return braid_reader_read_exact_until(r, buf, n, BRAID_FOREVER);
}

ssize_t braid_reader_slice_until(braid_reader *r, int delim, const char **data,
                                 uint64_t deadline_ns)
{
    if (data)
        *data = NULL;
    if (!r || !data || delim < -128 || delim > 255)
        return -EINVAL;
    delim = (unsigned char)delim; /* a plain char with the high bit set */
    if (reader_cancelled())
        return -ECANCELED;
    ssize_t rc = reader_finish_skip(r, deadline_ns);
    if (rc <= 0)
        return rc;
    if (r->scan_delim != delim) {
        r->scan_delim = delim;
        r->scan = 0;
    }
    for (;;) {
        size_t have = r->end - r->start;
        const char *base = r->buf + r->start;
        const char *p = memchr(base + r->scan, delim, have - r->scan);
        if (p) {
            size_t len = (size_t)(p - base) + 1;
            *data = base;
            reader_consume(r, len);
            return (ssize_t)len;
        }
        r->scan = have;
        if (have == r->cap) {
            /* No delimiter in a full buffer: drop the line, up to and
             * including its delimiter (the rest goes at the next call). */
            reader_consume(r, have);
            r->skip_delim = delim;
            return -EMSGSIZE;
        }
        rc = reader_fill(r, deadline_ns);
        if (rc < 0)
            return rc; /* the partial line stays buffered */
        if (rc == 0) {
            /* End of stream: the last, unterminated piece, then 0. */
            if (have == 0)
                return 0;
            *data = r->buf + r->start; /* reader_fill() may have moved it */
            reader_consume(r, have);
            return (ssize_t)have;
        }
    }
}

ssize_t braid_reader_slice(braid_reader *r, int delim, const char **data)
{
    return braid_reader_slice_until(r, delim, data, BRAID_FOREVER);
}

ssize_t braid_reader_line(braid_reader *r, const char **data)
{
    return braid_reader_slice_until(r, '\n', data, BRAID_FOREVER);
}

ssize_t braid_reader_line_until(braid_reader *r, const char **data, uint64_t deadline_ns)
{
    return braid_reader_slice_until(r, '\n', data, deadline_ns);
}
