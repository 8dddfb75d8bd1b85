/*
 * http_hello: an HTTP/1.1 keep-alive server that answers every request with
 * "Hello, World!", one task per connection.
 *
 *     http_hello [ADDR]        (default 127.0.0.1:8080; port 0 picks one)
 *
 * It prints "listening on ADDR" once it accepts connections.  On SIGINT or
 * SIGTERM it shuts down gracefully: it stops accepting, gives the open
 * connections 2 seconds to end, cancels the rest and exits 0.
 *
 * Requests are not parsed beyond finding their end (an empty line), which
 * is what the http_hello benchmark workload defines; bench/braid_bench.c
 * reuses http_hello_conn() from here (with HTTP_HELLO_NO_MAIN defined).
 */
#ifndef _GNU_SOURCE /* bench/braid_bench.c, which includes this file, has it */
#define _GNU_SOURCE /* memmem() */
#endif
#include <braid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char http_hello_response[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";

/* Grow *buf (of *cap bytes) to twice its size; false if out of memory. */
static int grow(char **buf, size_t *cap)
{
    char *bigger = realloc(*buf, *cap * 2);
    if (!bigger)
        return 0;
    *buf = bigger;
    *cap *= 2;
    return 1;
}

/* One connection: after each read, answer every complete request in the
 * buffer with a single write, and keep what follows the last one. */
static void *http_hello_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 4096, len = 0, outcap = 4096;
    char *buf = malloc(cap), *out = malloc(outcap);
    const size_t rlen = sizeof http_hello_response - 1;
    braid_tcp_nodelay(fd, true);
    while (buf && out) {
        ssize_t n = braid_read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        size_t start = 0, outlen = 0;
        char *end;
        while ((end = memmem(buf + start, len - start, "\r\n\r\n", 4))) {
            if (outlen + rlen > outcap && !grow(&out, &outcap))
                goto done;
            memcpy(out + outlen, http_hello_response, rlen);
            outlen += rlen;
            start = (size_t)(end - buf) + 4;
        }
        if (outlen && braid_write_all(fd, out, outlen) < 0)
            break;
        memmove(buf, buf + start, len - start);
        len -= start;
        if (len == cap && !grow(&buf, &cap))
            break;
    }
done:
    free(buf);
    free(out);
    braid_close(fd);
    return NULL;
}

#ifndef HTTP_HELLO_NO_MAIN

static int listener;
static braid_token *stop;

/* Accept until the listener is closed, then drain the connections. */
static void *acceptor(void *arg)
{
    (void)arg;
    braid_joinset *conns;
    if (braid_joinset_new(&conns) < 0)
        return NULL;
    for (;;) {
        int fd = braid_accept(listener, NULL, NULL);
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM) {
            braid_sleep_ms(10); /* let some connections end first */
            continue;
        }
        if (fd < 0)
            break;
        if (braid_joinset_spawn(conns, NULL, http_hello_conn, (void *)(intptr_t)fd, NULL) < 0)
            braid_close(fd);
        /* Forget connections that have ended (deadline 0: no waiting). */
        while (braid_joinset_join_next_until(conns, NULL, NULL, 0) >= 0)
            ;
    }
    uint64_t deadline = braid_deadline_ms(2000);
    while (braid_joinset_join_next_until(conns, NULL, NULL, deadline) >= 0)
        ;
    size_t cut = braid_joinset_len(conns);
    braid_joinset_free(conns); /* cancels and waits for the stragglers */
    fprintf(stderr, "http_hello: stopped; %zu connection(s) cut off\n", cut);
    return NULL;
}

static void *on_signal(void *arg)
{
    if (braid_signal_wait((int)(intptr_t)arg) > 0)
        braid_token_cancel(stop);
    return NULL;
}

static void *serve(void *arg)
{
    const char *addr = arg;
    braid_task acc, sig[2];
    char bound[64];
    /* Catch the signals first, so that an early Ctrl-C is not fatal. */
    if (braid_signal_catch(SIGINT) < 0 || braid_signal_catch(SIGTERM) < 0 ||
        braid_token_new(&stop, NULL) < 0)
        return (void *)1;
    listener = braid_tcp_listen(addr, 1024);
    if (listener < 0) {
        fprintf(stderr, "http_hello: %s: %s\n", addr, braid_strerror(listener));
        return (void *)1;
    }
    braid_local_addr(listener, bound, sizeof bound);
    printf("listening on %s\n", bound);
    fflush(stdout);
    braid_spawn(&sig[0], on_signal, (void *)(intptr_t)SIGINT);
    braid_spawn(&sig[1], on_signal, (void *)(intptr_t)SIGTERM);
    braid_spawn(&acc, acceptor, NULL);

    braid_token_wait(stop);
    braid_close(listener); /* the acceptor stops and drains */
    braid_join(acc, NULL);
    for (int i = 0; i < 2; i++) {
        braid_cancel(sig[i]);
        braid_join(sig[i], NULL);
    }
    braid_token_free(stop);
    return NULL;
}

int main(int argc, char **argv)
{
    braid_runtime *rt;
    void *failed = NULL;
    if (braid_runtime_new(NULL, &rt) < 0)
        return 1;
    int fate = braid_block_on(rt, serve, argc > 1 ? argv[1] : "127.0.0.1:8080", &failed);
    braid_runtime_free(rt);
    return fate == BRAID_OK && !failed ? 0 : 1;
}

#endif
