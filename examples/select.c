/*
 * Select and deadlines: a server task waits on two things at once, a
 * channel of jobs and a cancellation token, with an idle deadline.
 *
 *  - Three jobs are waiting; each resets the idle deadline.
 *  - No job for 50 ms: the select times out with nothing received, the
 *    server reports that it is idle, and from then on waits without a
 *    deadline.
 *  - The token is cancelled: its channel closes, the select returns that
 *    case with -EPIPE, and the server stops.
 *
 * Then a receive with a deadline that cannot be met, to show that a
 * timed-out call did nothing: the value sent afterwards is still there.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

struct server {
    braid_chan *jobs;
    braid_token *stop;
    braid_notify *idle;
};

/* guide:begin server */
static void *server(void *arg)
{
    struct server *s = arg;
    int job = 0;
    char nothing; /* never written: nothing is sent on a token's channel */
    braid_select_case cases[] = {
        { .chan = s->jobs, .op = BRAID_SELECT_RECV, .item = &job },
        { .chan = braid_token_chan(s->stop), .op = BRAID_SELECT_RECV, .item = &nothing },
    };
    uint64_t deadline = braid_deadline_ms(50);
    for (;;) {
        int which = braid_select(cases, 2, deadline, 0);
        if (which == 0 && cases[0].result == 0) {
            printf("server: job %d\n", job);
            deadline = braid_deadline_ms(50);
        } else if (which == -ETIMEDOUT) {
            printf("server: idle for 50 ms\n");
            braid_notify_one(s->idle);
            deadline = BRAID_FOREVER;
        } else {
            break; /* the token (or a closed job channel), or we were cancelled */
        }
    }
    printf("server: stopping\n");
    return NULL;
}
/* guide:end server */

static void *root(void *arg)
{
    (void)arg;
    struct server s;
    braid_chan_new(&s.jobs, sizeof(int), 3);
    braid_token_new(&s.stop, NULL);
    braid_notify_new(&s.idle);
    /* guide:begin root */
    for (int job = 1; job <= 3; job++)
        braid_chan_send(s.jobs, &job); /* buffered: does not wait */
    braid_task t;
    braid_spawn(&t, server, &s);
    braid_notify_wait(s.idle);
    braid_token_cancel(s.stop);
    braid_join(t, NULL);
    /* guide:end root */

    /* guide:begin timeout */
    braid_chan *box;
    braid_chan_new(&box, sizeof(int), 1);
    int got = 0, rc = braid_chan_recv_until(box, &got, braid_deadline_ms(10));
    printf("receive: %s\n", rc == -ETIMEDOUT ? "timed out" : "got something");
    braid_chan_send(box, &(int){ 42 });
    rc = braid_chan_recv_until(box, &got, 0); /* a deadline in the past: no waiting */
    printf("receive: %d\n", rc == 0 ? got : rc);
    /* guide:end timeout */

    braid_chan_sender_drop(box);
    braid_chan_receiver_drop(box);
    braid_chan_sender_drop(s.jobs);
    braid_chan_receiver_drop(s.jobs);
    braid_token_free(s.stop);
    braid_notify_free(s.idle);
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
