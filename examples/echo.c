/*
 * An echo server and its clients in one program.
 *
 *   echo                        listen on 127.0.0.1 (a port the kernel
 *                               picks), run 8 clients that each send 100
 *                               lines and check every echo, then shut the
 *                               server down; exits 0 only if every byte
 *                               came back intact
 *   echo serve ADDR [GRACE_MS]  only the server, on ADDR (e.g.
 *                               127.0.0.1:7000), until SIGINT or SIGTERM:
 *                               then it stops accepting, lets open
 *                               connections finish for GRACE_MS (default
 *                               5000) and cancels those still open
 *
 * Each connection is a task that reads and writes as if blocking.  The
 * accept loop ends when the listener is closed with braid_close(): its
 * braid_accept() wakes up with -EBADF.
 */
#include <braid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CLIENTS = 8, MESSAGES = 100 };

/* ---- the server ---- */

/* guide:begin connection */
static void *connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    /* Ends at end of stream (0), on an error, or when cancelled. */
    while ((n = braid_read(fd, buf, sizeof buf)) > 0)
        if (braid_write_all(fd, buf, (size_t)n) < 0)
            break;
    braid_close(fd);
    return NULL;
}
/* guide:end connection */

/* guide:begin accept_loop */
struct server {
    int listener;
    uint64_t grace_ms;  /* how long open connections may go on at shutdown */
    unsigned accepted;  /* connections served */
};

static void *accept_loop(void *arg)
{
    struct server *s = arg;
    braid_joinset *conns;
    if (braid_joinset_new(&conns) != 0)
        return NULL;
    for (;;) {
        int fd = braid_accept(s->listener, NULL, NULL);
        if (fd == -EMFILE || fd == -ENFILE) {
            braid_sleep_ms(100); /* out of descriptors: back off */
            continue;
        }
        if (fd < 0)
            break; /* -EBADF: the listener was closed; or -ECANCELED */
        if (braid_joinset_spawn(conns, NULL, connection, (void *)(intptr_t)fd, NULL) != 0) {
            braid_close(fd);
            continue;
        }
        s->accepted++;
        /* Reap the connections that have ended (a deadline already past
         * only takes what is there). */
        while (braid_joinset_join_next_until(conns, NULL, NULL, 0) >= 0) {
        }
    }
    /* Stopped accepting: let the open connections finish, then cancel the
     * rest (braid_joinset_free cancels and waits for them). */
    uint64_t deadline = braid_deadline_ms(s->grace_ms);
    while (braid_joinset_join_next_until(conns, NULL, NULL, deadline) >= 0) {
    }
    if (braid_joinset_len(conns) > 0)
        printf("Cancelling %zu connections still open\n", braid_joinset_len(conns));
    braid_joinset_free(conns);
    return NULL;
}
/* guide:end accept_loop */

/* ---- the clients ---- */

/* guide:begin client */
struct client {
    const char *addr;
    int id;
    int ok;        /* messages echoed intact */
    size_t bytes;  /* bytes echoed intact */
};

static void *client(void *arg)
{
    struct client *c = arg;
    int fd = braid_tcp_connect(c->addr);
    if (fd < 0) {
        fprintf(stderr, "client %d: connect: %s\n", c->id, braid_strerror(fd));
        return NULL;
    }
    braid_reader *in;
    if (braid_reader_new(&in, fd, 0) != 0) {
        braid_close(fd);
        return NULL;
    }
    char line[3000];
    for (int i = 0; i < MESSAGES; i++) {
        /* A line of a length that varies from message to message. */
        int len = snprintf(line, sizeof line, "client %d message %d ", c->id, i);
        int pad = (i * 257 + c->id * 31) % 2000;
        for (int k = 0; k < pad; k++)
            line[len++] = (char)('a' + (k + i) % 26);
        line[len++] = '\n';
        if (braid_write_all(fd, line, (size_t)len) != len)
            break;
        const char *echo;
        ssize_t n = braid_reader_line(in, &echo);
        if (n != len || memcmp(echo, line, (size_t)len) != 0) {
            fprintf(stderr, "client %d: message %d came back wrong (%zd bytes)\n", c->id, i, n);
            break;
        }
        c->ok++;
        c->bytes += (size_t)len;
    }
    braid_reader_free(in);
    braid_close(fd);
    return NULL;
}
/* guide:end client */

static void *demo(void *arg)
{
    int *exit_code = arg;
    struct server s = { .grace_ms = 5000 };
    s.listener = braid_tcp_listen("127.0.0.1:0", 0);
    if (s.listener < 0) {
        fprintf(stderr, "listen: %s\n", braid_strerror(s.listener));
        return NULL;
    }
    char addr[64];
    braid_local_addr(s.listener, addr, sizeof addr);
    printf("Echo server listening on %s\n", addr);

    braid_task acceptor, clients[CLIENTS];
    struct client cs[CLIENTS];
    braid_spawn(&acceptor, accept_loop, &s);
    for (int i = 0; i < CLIENTS; i++) {
        cs[i] = (struct client){ .addr = addr, .id = i };
        braid_spawn(&clients[i], client, &cs[i]);
    }
    int ok = 0;
    size_t bytes = 0;
    for (int i = 0; i < CLIENTS; i++) {
        braid_join(clients[i], NULL);
        ok += cs[i].ok;
        bytes += cs[i].bytes;
    }
    printf("%d clients: %d of %d messages echoed intact (%zu bytes)\n", CLIENTS, ok,
           CLIENTS * MESSAGES, bytes);

    braid_close(s.listener); /* wakes the accept loop with -EBADF */
    braid_join(acceptor, NULL);
    printf("Server stopped after %u connections\n", s.accepted);
    *exit_code = ok == CLIENTS * MESSAGES && s.accepted == CLIENTS ? 0 : 1;
    return NULL;
}

/* ---- serve mode ---- */

/* guide:begin serve */
static braid_notify *stop;
static _Atomic int stop_signal;

static void *signal_watch(void *arg)
{
    int signo = braid_signal_wait((int)(intptr_t)arg);
    if (signo > 0) {
        stop_signal = signo;
        braid_notify_one(stop);
    }
    return NULL;
}

struct serve_args {
    const char *addr;
    uint64_t grace_ms;
    int exit_code;
};

static void *serve(void *arg)
{
    struct serve_args *a = arg;
    /* Catch the signals before anyone can learn our address. */
    if (braid_signal_catch(SIGINT) != 0 || braid_signal_catch(SIGTERM) != 0 ||
        braid_notify_new(&stop) != 0)
        return NULL;
    struct server s = { .grace_ms = a->grace_ms };
    s.listener = braid_tcp_listen(a->addr, 0);
    if (s.listener < 0) {
        fprintf(stderr, "listen on %s: %s\n", a->addr, braid_strerror(s.listener));
        braid_notify_free(stop);
        return NULL;
    }
    char addr[64];
    braid_local_addr(s.listener, addr, sizeof addr);
    printf("Listening on %s\n", addr);
    fflush(stdout);

    braid_task acceptor, on_int, on_term;
    braid_spawn(&acceptor, accept_loop, &s);
    braid_spawn(&on_int, signal_watch, (void *)(intptr_t)SIGINT);
    braid_spawn(&on_term, signal_watch, (void *)(intptr_t)SIGTERM);
    braid_notify_wait(stop);
    printf("Shutting down on %s\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    braid_cancel(on_int);
    braid_cancel(on_term);
    braid_join(on_int, NULL);
    braid_join(on_term, NULL);

    braid_close(s.listener); /* stop accepting */
    braid_join(acceptor, NULL);
    printf("Served %u connections\n", s.accepted);
    braid_notify_free(stop);
    a->exit_code = 0;
    return NULL;
}
/* guide:end serve */

int main(int argc, char **argv)
{
    int exit_code = 1, rc;
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        struct serve_args a = { argv[2], argc >= 4 ? strtoull(argv[3], NULL, 10) : 5000, 1 };
        rc = braid_run(serve, &a, NULL);
        exit_code = a.exit_code;
    } else if (argc == 1) {
        rc = braid_run(demo, &exit_code, NULL);
    } else {
        fprintf(stderr, "usage: %s [serve ADDR [GRACE_MS]]\n", argv[0]);
        return 2;
    }
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid_run: %s\n", braid_strerror(rc));
        return 1;
    }
    return exit_code;
}
