/*
 * A task that owns some state, and others that talk to it through a
 * channel.  The "store" task alone touches the table of counters, so the
 * table needs no lock; clients send it commands, each with a oneshot
 * channel on which the store sends the reply.  The store ends when the
 * last client has dropped its sending reference: its receive then
 * returns -EPIPE.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { KEYS = 4, CLIENTS = 3, ROUNDS = 100 };

/* guide:begin command */
struct command {
    enum { ADD, GET } op;
    int key;
    long amount;
    braid_oneshot *reply; /* receives the counter's value after the command */
};

static void *store(void *arg)
{
    braid_chan *commands = arg;
    long counters[KEYS] = { 0 };
    struct command c;
    while (braid_chan_recv(commands, &c) == 0) {
        if (c.op == ADD)
            counters[c.key] += c.amount;
        braid_oneshot_send(c.reply, &counters[c.key]);
    }
    return NULL; /* -EPIPE: every client is gone */
}

/* Send one command and wait for its reply; -1 if that failed. */
static long call(braid_chan *commands, int op, int key, long amount)
{
    braid_oneshot *reply;
    if (braid_oneshot_new(&reply, sizeof(long)) != 0)
        return -1;
    struct command c = { op, key, amount, reply };
    if (braid_chan_send(commands, &c) != 0) { /* the store never saw it */
        braid_oneshot_sender_drop(reply);
        braid_oneshot_receiver_drop(reply);
        return -1;
    }
    long value = -1;
    int rc = braid_oneshot_recv(reply, &value); /* 0 or -EPIPE consume our end */
    if (rc != 0 && rc != -EPIPE)
        braid_oneshot_receiver_drop(reply); /* cancelled while waiting */
    return value;
}
/* guide:end command */

static void *client(void *arg)
{
    braid_chan *commands = arg;
    for (int i = 0; i < ROUNDS; i++)
        call(commands, ADD, i % KEYS, 1);
    braid_chan_sender_drop(commands);
    return NULL;
}

static void *root(void *arg)
{
    (void)arg;
    /* guide:begin root */
    braid_chan *commands;
    braid_chan_new(&commands, sizeof(struct command), 16);
    braid_task st, clients[CLIENTS];
    braid_spawn(&st, store, commands);
    for (int i = 0; i < CLIENTS; i++) {
        braid_chan_sender_dup(commands); /* one sending reference per client */
        braid_spawn(&clients[i], client, commands);
    }
    for (int i = 0; i < CLIENTS; i++)
        braid_join(clients[i], NULL);
    for (int key = 0; key < KEYS; key++)
        printf("counter %d: %ld\n", key, call(commands, GET, key, 0));
    braid_chan_sender_drop(commands); /* the last one: the store's receive ends */
    braid_join(st, NULL);
    braid_chan_receiver_drop(commands);
    /* guide:end root */
    return NULL;
}

int main(void)
{
    int rc = braid_run(root, NULL, NULL);
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid_run: %s\n", braid_strerror(rc));
        return 1;
    }
    return 0;
}
