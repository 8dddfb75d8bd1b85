/*
 * The I/O calls of braid.h: reads, writes, datagrams, addresses, listening,
 * accepting and connecting.  Each is a system call wrapped in
 * braid__io_do(), which waits (io.c) while the call would block.  None
 * sets errno: every public entry saves and restores it.
 */
#include "io.h"
#include "util.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* r from a system call as a braid result: -EAGAIN for "would block". */
static inline ssize_t sys_result(ssize_t r)
{
    if (r >= 0)
        return r;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* ---- reads and writes ------------------------------------------------------ */

typedef struct rw_args {
    void *buf;
    size_t n;
    const struct iovec *iov;
    int iovcnt;
    struct sockaddr *addr;
    socklen_t *addrlen;
    const struct sockaddr *to;
    socklen_t tolen;
} rw_args;

static ssize_t do_read(int fd, void *ctx)
{
    rw_args *a = ctx;
    ssize_t r;
    while ((r = read(fd, a->buf, a->n)) < 0 && errno == EINTR)
        ;
    return sys_result(r);
}

static ssize_t do_readv(int fd, void *ctx)
{
    rw_args *a = ctx;
    ssize_t r;
    while ((r = readv(fd, a->iov, a->iovcnt)) < 0 && errno == EINTR)
        ;
    return sys_result(r);
}

/* send() with MSG_NOSIGNAL, so that a vanished peer is -EPIPE rather than
 * a SIGPIPE that kills the process; write() for what is not a socket. */
static ssize_t do_write(int fd, void *ctx)
{
    rw_args *a = ctx;
    ssize_t r;
    while ((r = send(fd, a->buf, a->n, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (r < 0 && errno == ENOTSOCK)
        while ((r = write(fd, a->buf, a->n)) < 0 && errno == EINTR)
            ;
    return sys_result(r);
}

static ssize_t do_writev(int fd, void *ctx)
{
    rw_args *a = ctx;
    struct msghdr m = { .msg_iov = (struct iovec *)a->iov, .msg_iovlen = (size_t)a->iovcnt };
    ssize_t r;
    while ((r = sendmsg(fd, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (r < 0 && errno == ENOTSOCK)
        while ((r = writev(fd, a->iov, a->iovcnt)) < 0 && errno == EINTR)
            ;
    return sys_result(r);
}

static ssize_t do_recvfrom(int fd, void *ctx)
{
    rw_args *a = ctx;
    ssize_t r;
    while ((r = recvfrom(fd, a->buf, a->n, 0, a->addr, a->addrlen)) < 0 && errno == EINTR)
        ;
    return sys_result(r);
}

static ssize_t do_sendto(int fd, void *ctx)
{
    rw_args *a = ctx;
    ssize_t r;
    while ((r = sendto(fd, a->buf, a->n, MSG_NOSIGNAL, a->to, a->tolen)) < 0 && errno == EINTR)
        ;
    return sys_result(r);
}

/* One waiting call, errno preserved. */
static ssize_t io_call(int fd, unsigned want, uint64_t deadline_ns, braid__io_fn fn, rw_args *a)
{
    int saved = errno;
    ssize_t r = braid__io_do(fd, want, deadline_ns, fn, a, fn == do_read ? a->n : 0);
    braid__errno_set(saved); /* the task may have moved to another thread */
    return r;
}

ssize_t braid_read_until(int fd, void *buf, size_t n, uint64_t deadline_ns)
{
    rw_args a = { .buf = buf, .n = n };
    return io_call(fd, BRAID_READABLE, deadline_ns, do_read, &a);
}

ssize_t braid_read(int fd, void *buf, size_t n)
{
    return braid_read_until(fd, buf, n, BRAID_FOREVER);
}

ssize_t braid_read_exact_until(int fd, void *buf, size_t n, uint64_t deadline_ns)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = braid_read_until(fd, (char *)buf + got, n - got, deadline_ns);
        if (r < 0)
            return r;
        if (r == 0)
            return got ? -EPIPE : 0;
        got += (size_t)r;
    }
    return (ssize_t)n;
}

ssize_t braid_read_exact(int fd, void *buf, size_t n)
{
    return braid_read_exact_until(fd, buf, n, BRAID_FOREVER);
}

ssize_t braid_readv_until(int fd, const struct iovec *iov, int iovcnt, uint64_t deadline_ns)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt))
        return -EINVAL;
    rw_args a = { .iov = iov, .iovcnt = iovcnt };
    return io_call(fd, BRAID_READABLE, deadline_ns, do_readv, &a);
}

ssize_t braid_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return braid_readv_until(fd, iov, iovcnt, BRAID_FOREVER);
}

ssize_t braid_write_until(int fd, const void *buf, size_t n, uint64_t deadline_ns)
{
    rw_args a = { .buf = (void *)buf, .n = n };
    return io_call(fd, BRAID_WRITABLE, deadline_ns, do_write, &a);
}

ssize_t braid_write(int fd, const void *buf, size_t n)
{
    return braid_write_until(fd, buf, n, BRAID_FOREVER);
}

ssize_t braid_write_all_until(int fd, const void *buf, size_t n, uint64_t deadline_ns)
{
    size_t done = 0;
    do {
        ssize_t r = braid_write_until(fd, (const char *)buf + done, n - done, deadline_ns);
        if (r < 0)
            return r;
        done += (size_t)r;
    } while (done < n);
    return (ssize_t)n;
}

ssize_t braid_write_all(int fd, const void *buf, size_t n)
{
    return braid_write_all_until(fd, buf, n, BRAID_FOREVER);
}

ssize_t braid_writev_all_until(int fd, const struct iovec *iov, int iovcnt, uint64_t deadline_ns)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt))
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    /* After a short write the rest of the current buffer goes alone, then
     * gathering resumes with the next one: iov is never copied or changed. */
    int i = 0;
    size_t skip = 0;
    while (i < iovcnt) {
        ssize_t r;
        if (skip) {
            r = braid_write_until(fd, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip,
                                  deadline_ns);
            r = r < 0 ? r : (ssize_t)(skip + (size_t)r);
        } else {
            rw_args a = { .iov = iov + i, .iovcnt = iovcnt - i };
            r = io_call(fd, BRAID_WRITABLE, deadline_ns, do_writev, &a);
        }
        if (r < 0)
            return r;
        size_t left = (size_t)r;
        while (i < iovcnt && left >= iov[i].iov_len)
            left -= iov[i++].iov_len;
        skip = left;
    }
    return (ssize_t)total;
}

ssize_t braid_writev_all(int fd, const struct iovec *iov, int iovcnt)
{
    return braid_writev_all_until(fd, iov, iovcnt, BRAID_FOREVER);
}

ssize_t braid_recv_from_until(int fd, void *buf, size_t n, struct sockaddr *from,
                              socklen_t *fromlen, uint64_t deadline_ns)
{
    if (from && !fromlen)
        return -EINVAL;
    rw_args a = { .buf = buf, .n = n, .addr = from, .addrlen = from ? fromlen : NULL };
    return io_call(fd, BRAID_READABLE, deadline_ns, do_recvfrom, &a);
}

ssize_t braid_recv_from(int fd, void *buf, size_t n, struct sockaddr *from, socklen_t *fromlen)
{
    return braid_recv_from_until(fd, buf, n, from, fromlen, BRAID_FOREVER);
}

ssize_t braid_send_to_until(int fd, const void *buf, size_t n, const struct sockaddr *to,
                            socklen_t tolen, uint64_t deadline_ns)
{
    rw_args a = { .buf = (void *)buf, .n = n, .to = to, .tolen = to ? tolen : 0 };
    return io_call(fd, BRAID_WRITABLE, deadline_ns, do_sendto, &a);
}

ssize_t braid_send_to(int fd, const void *buf, size_t n, const struct sockaddr *to,
                      socklen_t tolen)
{
    return braid_send_to_until(fd, buf, n, to, tolen, BRAID_FOREVER);
}

/* ---- addresses ------------------------------------------------------------- */

static int parse_port(const char *s, in_port_t *port)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > 65535)
        return -EINVAL;
    *port = htons((uint16_t)v);
    return 0;
}

static int parse_unix(const char *path, struct sockaddr_storage *out, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path)
        return -EINVAL;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    if (path[0] == '@') { /* abstract: a leading NUL, no terminator */
        un->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* Split "host:port" / "[v6]:port" into host (copied into buf) and port. */
static int split_host_port(const char *addr, char *host, size_t hostsz, const char **port)
{
    const char *colon;
    const char *h = addr;
    size_t hn;
    if (*addr == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = addr + 1;
        hn = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -EINVAL;
        hn = (size_t)(colon - addr);
        if (memchr(addr, ':', hn)) /* a bare IPv6 address needs brackets */
            return -EINVAL;
    }
    if (hn >= hostsz)
        return -EINVAL;
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = colon + 1;
    return 0;
}

int braid_addr_parse(const char *addr, struct sockaddr_storage *out, socklen_t *len)
{
    if (!addr || !out || !len)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (!strncmp(addr, "unix:", 5))
        return parse_unix(addr + 5, out, len);
    char host[INET6_ADDRSTRLEN];
    const char *port;
    in_port_t p = 0;
    int saved = errno;
    int rc = split_host_port(addr, host, sizeof host, &port);
    if (rc == 0)
        rc = parse_port(port, &p);
    errno = saved;
    if (rc < 0)
        return rc;
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (!host[0]) { /* every interface, both families */
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any;
        in6->sin6_port = p;
        *len = sizeof *in6;
    } else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = p;
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = p;
        *len = sizeof *in6;
    } else {
        return -EINVAL;
    }
    return 0;
}

int braid_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n)
{
    char host[INET6_ADDRSTRLEN];
    int k;
    if (!sa || !buf || len < (socklen_t)sizeof(sa_family_t))
        return -EINVAL;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
        k = snprintf(buf, n, "%s:%u", host, ntohs(in4->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        k = snprintf(buf, n, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t plen = len - offsetof(struct sockaddr_un, sun_path);
        if (plen == 0) /* unnamed (a connected client's own end) */
            k = snprintf(buf, n, "unix:");
        else if (un->sun_path[0] == '\0')
            k = snprintf(buf, n, "unix:@%.*s", (int)plen - 1, un->sun_path + 1);
        else
            k = snprintf(buf, n, "unix:%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    } else {
        return -EINVAL;
    }
    return k < 0 ? -EINVAL : (size_t)k >= n ? -ENOSPC : k;
}

static int sock_addr(int fd, char *buf, size_t n, int (*get)(int, struct sockaddr *, socklen_t *))
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int saved = errno;
    int rc = get(fd, (struct sockaddr *)&ss, &len) < 0 ? -errno : 0;
    errno = saved;
    return rc < 0 ? rc : braid_addr_format((struct sockaddr *)&ss, len, buf, n);
}

int braid_local_addr(int fd, char *buf, size_t n)
{
    return sock_addr(fd, buf, n, getsockname);
}

int braid_peer_addr(int fd, char *buf, size_t n)
{
    return sock_addr(fd, buf, n, getpeername);
}

/* ---- sockets ---------------------------------------------------------------- */

/* A new non-blocking, close-on-exec socket; -errno on failure. */
static int new_socket(int family, int type)
{
    if (type != SOCK_STREAM && type != SOCK_DGRAM)
        return -EINVAL;
    int fd = braid__socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    braid__io_fresh(fd);
    return fd;
}

static int set_opt(int fd, int level, int name, int on)
{
    return setsockopt(fd, level, name, &on, sizeof on) < 0 ? -errno : 0;
}

static int listen_on(int fd, const struct sockaddr *sa, socklen_t len, int type, int backlog,
                     unsigned flags)
{
    int rc = 0;
    if (sa->sa_family == AF_UNIX) {
        const char *path = ((const struct sockaddr_un *)sa)->sun_path;
        if (path[0])
            rc = braid__unlink_stale_socket(path);
    } else {
        if (flags & BRAID_REUSEADDR)
            rc = set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (!rc && (flags & BRAID_REUSEPORT))
            rc = set_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
        if (!rc && sa->sa_family == AF_INET6)
            rc = set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, !!(flags & BRAID_V6ONLY));
    }
    if (!rc && bind(fd, sa, len) < 0)
        rc = -errno;
    if (!rc && type == SOCK_STREAM && listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        rc = -errno;
    return rc;
}

int braid_listen_sockaddr(const struct sockaddr *sa, socklen_t len, int type, int backlog,
                          unsigned flags)
{
    if (!sa || flags & ~(unsigned)(BRAID_REUSEADDR | BRAID_REUSEPORT | BRAID_V6ONLY))
        return -EINVAL;
    int saved = errno;
    int fd = new_socket(sa->sa_family, type);
    if (fd >= 0) {
        int rc = listen_on(fd, sa, len, type, backlog, flags);
        if (rc < 0) {
            braid_close(fd);
            fd = rc;
        }
    }
    errno = saved;
    return fd;
}

int braid_listen(const char *addr, int type, int backlog, unsigned flags)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = braid_addr_parse(addr, &ss, &len);
    return rc < 0 ? rc : braid_listen_sockaddr((struct sockaddr *)&ss, len, type, backlog, flags);
}

int braid_tcp_listen(const char *addr, int backlog)
{
    return braid_listen(addr, SOCK_STREAM, backlog, BRAID_REUSEADDR);
}

int braid_udp_bind(const char *addr)
{
    return braid_listen(addr, SOCK_DGRAM, 0, 0);
}

static ssize_t do_accept(int fd, void *ctx)
{
    rw_args *a = ctx;
    for (;;) {
        int c = braid__accept4(fd, a->addr, a->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            braid__io_fresh(c);
            return c;
        }
        switch (errno) {
        case EINTR: /* connections that died in the backlog: take the next */
        case ECONNABORTED:
        case EPROTO:
        case EPERM:
            continue;
        default:
            return sys_result(-1);
        }
    }
}

int braid_accept_until(int fd, struct sockaddr *peer, socklen_t *len, uint64_t deadline_ns)
{
    if (peer && !len)
        return -EINVAL;
    rw_args a = { .addr = peer, .addrlen = peer ? len : NULL };
    return (int)io_call(fd, BRAID_READABLE, deadline_ns, do_accept, &a);
}

int braid_accept(int fd, struct sockaddr *peer, socklen_t *len)
{
    return braid_accept_until(fd, peer, len, BRAID_FOREVER);
}

/* A connect in progress has finished when the socket turns writable. */
static ssize_t connect_done(int fd, void *ctx)
{
    (void)ctx;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    if (poll(&p, 1, 0) <= 0)
        return -EAGAIN;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return err ? -err : 0;
}

int braid_connect_sockaddr(const struct sockaddr *sa, socklen_t len, int type,
                           uint64_t deadline_ns)
{
    if (!sa)
        return -EINVAL;
    /* A cancellation point also when connect() needs no wait (a Unix
     * socket): braid__io_do() below sees only the connects that wait. */
    braid__task *t = braid__tls_task;
    if (t && braid__task_should_cancel(t))
        return -ECANCELED;
    int saved = errno;
    int fd = new_socket(sa->sa_family, type);
    if (fd >= 0) {
        int rc = connect(fd, sa, len) == 0 ? 0 : -errno;
        if (rc == -EINPROGRESS || rc == -EINTR)
            rc = (int)braid__io_do(fd, BRAID_WRITABLE, deadline_ns, connect_done, NULL, 0);
        if (rc < 0) {
            braid_close(fd);
            fd = rc;
        }
    }
    braid__errno_set(saved); /* the task may have moved to another thread */
    return fd;
}

/* "name:port": resolve on the blocking pool, try each address in turn. */
static int connect_by_name(const char *addr, int type, uint64_t deadline_ns)
{
    char host[256];
    const char *port;
    int rc = split_host_port(addr, host, sizeof host, &port);
    if (rc < 0 || !host[0] || !port[0])
        return -EINVAL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = type }, *res;
    rc = braid_resolve_until(host, port, &hints, &res, deadline_ns);
    if (rc < 0)
        return rc;
    rc = -ENOENT;
    for (struct addrinfo *ai = res; ai && rc < 0 && rc != -ECANCELED && rc != -ETIMEDOUT;
         ai = ai->ai_next)
        rc = braid_connect_sockaddr(ai->ai_addr, ai->ai_addrlen, type, deadline_ns);
    freeaddrinfo(res);
    return rc;
}

int braid_connect_until(const char *addr, int type, uint64_t deadline_ns)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!addr)
        return -EINVAL;
    if (braid_addr_parse(addr, &ss, &len) < 0)
        return strncmp(addr, "unix:", 5) ? connect_by_name(addr, type, deadline_ns) : -EINVAL;
    return braid_connect_sockaddr((struct sockaddr *)&ss, len, type, deadline_ns);
}

int braid_connect(const char *addr, int type)
{
    return braid_connect_until(addr, type, BRAID_FOREVER);
}

int braid_tcp_connect_until(const char *addr, uint64_t deadline_ns)
{
    int fd = braid_connect_until(addr, SOCK_STREAM, deadline_ns);
    if (fd >= 0)
        braid_tcp_nodelay(fd, true);
    return fd;
}

int braid_tcp_connect(const char *addr)
{
    return braid_tcp_connect_until(addr, BRAID_FOREVER);
}

int braid_tcp_nodelay(int fd, bool on)
{
    int saved = errno;
    int rc = set_opt(fd, IPPROTO_TCP, TCP_NODELAY, on);
    errno = saved;
    return rc;
}

int braid_shutdown(int fd, int how)
{
    int saved = errno;
    int rc = shutdown(fd, how) < 0 ? -errno : 0;
    errno = saved;
    return rc;
}
