/* Oneshot, broadcast and watch channels. */
#include "test.h"

#include <pthread.h>

/* ---- oneshot ---- */

static braid_oneshot *os;

static void *oneshot_receiver(void *arg)
{
    (void)arg;
    int v = 0;
    int rc = braid_oneshot_recv(os, &v);
    return (void *)(intptr_t)(rc ? rc : v);
}

static void *oneshot_root(void *arg)
{
    (void)arg;
    /* Value across tasks. */
    CHECK_EQ(braid_oneshot_new(&os, sizeof(int)), 0);
    braid_task r;
    CHECK_EQ(braid_spawn(&r, oneshot_receiver, NULL), 0);
    CHECK_EQ(braid_yield(), 0);
    int v = 42;
    CHECK_EQ(braid_oneshot_send(os, &v), 0); /* consumes the sender */
    void *got;
    CHECK_EQ(braid_join(r, &got), BRAID_OK);
    CHECK_EQ((intptr_t)got, 42); /* and the receive consumed the receiver: freed */

    /* The sender goes without sending: the receiver learns. */
    CHECK_EQ(braid_oneshot_new(&os, sizeof(int)), 0);
    CHECK_EQ(braid_spawn(&r, oneshot_receiver, NULL), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(braid_oneshot_sender_drop(os), 0);
    CHECK_EQ(braid_join(r, &got), BRAID_OK);
    CHECK_EQ((intptr_t)got, -EPIPE);

    /* The receiver is gone: the send fails; sending twice fails. */
    CHECK_EQ(braid_oneshot_new(&os, sizeof(int)), 0);
    CHECK_EQ(braid_oneshot_try_recv(os, &v), -EAGAIN);
    CHECK_EQ(braid_oneshot_recv_until(os, &v, braid_deadline_ms(5)), -ETIMEDOUT);
    CHECK_EQ(braid_oneshot_receiver_drop(os), 0);
    CHECK_EQ(braid_oneshot_send(os, &v), -EPIPE); /* and frees it */

    CHECK_EQ(braid_oneshot_new(&os, sizeof(int)), 0);
    CHECK_EQ(braid_oneshot_send(os, &v), 0);
    CHECK_EQ(braid_oneshot_send(os, &v), -EPIPE);
    CHECK_EQ(braid_oneshot_recv(os, &v), 0);
    CHECK_EQ(v, 42);
    return NULL;
}

TEST(oneshot_value_or_epipe)
{
    test_run(1, oneshot_root, NULL);
}

/* ---- broadcast ---- */

static braid_bcast *bc;

static void *bcast_reader(void *arg)
{
    braid_bcast_rx *rx = arg;
    long sum = 0;
    int v, rc;
    while ((rc = braid_bcast_recv(rx, &v, NULL)) == 0)
        sum += v;
    CHECK_EQ(rc, -EPIPE);
    CHECK_EQ(braid_bcast_rx_free(rx), 0);
    return (void *)sum;
}

static void *bcast_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_bcast_new(&bc, sizeof(int), 4), 0);
    int v = 1;
    CHECK_EQ(braid_bcast_send(bc, &v), 0); /* no receivers: reaches 0 */
    braid_bcast_rx *rx[3];
    braid_task h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_bcast_subscribe(bc, &rx[i]), 0);
        CHECK_EQ(braid_spawn(&h[i], bcast_reader, rx[i]), 0);
    }
    CHECK_EQ(braid_yield(), 0);
    /* Every receiver sees every value sent after it subscribed.  Each send
     * is followed by a yield so the readers (on this one worker) keep up. */
    for (int i = 1; i <= 100; i++) {
        CHECK_EQ(braid_bcast_send(bc, &i), 3);
        CHECK_EQ(braid_yield(), 0);
    }
    CHECK_EQ(braid_bcast_close(bc), 0);
    CHECK_EQ(braid_bcast_send(bc, &v), -EPIPE);
    for (int i = 0; i < 3; i++) {
        void *sum;
        CHECK_EQ(braid_join(h[i], &sum), BRAID_OK);
        CHECK_EQ((long)sum, 5050);
    }
    CHECK_EQ(braid_bcast_free(bc), 0);

    /* A slow receiver lags: told how many it missed, then goes on from the
     * oldest value kept. */
    CHECK_EQ(braid_bcast_new(&bc, sizeof(int), 4), 0);
    braid_bcast_rx *slow;
    CHECK_EQ(braid_bcast_subscribe(bc, &slow), 0);
    CHECK_EQ(braid_bcast_free(bc), -EBUSY); /* a receiver is left */
    for (int i = 0; i < 10; i++)
        CHECK_EQ(braid_bcast_send(bc, &i), 1);
    uint64_t missed = 0;
    CHECK_EQ(braid_bcast_recv(slow, &v, &missed), -EOVERFLOW);
    CHECK_EQ(missed, 6);
    for (int i = 6; i < 10; i++) {
        CHECK_EQ(braid_bcast_recv(slow, &v, &missed), 0);
        CHECK_EQ(v, i);
    }
    CHECK_EQ(braid_bcast_try_recv(slow, &v, NULL), -EAGAIN);
    CHECK_EQ(braid_bcast_recv_until(slow, &v, NULL, braid_deadline_ms(5)), -ETIMEDOUT);
    CHECK_EQ(braid_bcast_rx_free(slow), 0);
    CHECK_EQ(braid_bcast_free(bc), 0);
    return NULL;
}

TEST(broadcast_every_receiver_sees_everything_or_lags)
{
    test_run(1, bcast_root, NULL);
}

/* ---- watch ---- */

static braid_watch *wa;

static void *watcher(void *arg)
{
    (void)arg;
    uint64_t version;
    int v, last, changes = 0, rc;
    CHECK_EQ(braid_watch_get(wa, &last, &version), 0);
    CHECK_EQ((uint64_t)last, version); /* value i is version i here */
    while ((rc = braid_watch_changed(wa, &version, &v)) == 0) {
        CHECK(v > last); /* values only go forward; some may be skipped */
        CHECK_EQ((uint64_t)v, version);
        last = v;
        changes++;
    }
    CHECK_EQ(rc, -EPIPE);
    CHECK_EQ(last, 1000); /* but the last one is always seen */
    return (void *)(intptr_t)changes;
}

TEST(watch_latest_value_and_close)
{
    int zero = 0;
    CHECK_EQ(braid_watch_new(&wa, sizeof(int), &zero), 0);
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    braid_task h[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_spawn_on(rt, &h[i], watcher, NULL), 0);
    /* A plain thread sends while the watchers run on the workers. */
    uint64_t ver;
    int v;
    CHECK_EQ(braid_watch_get(wa, &v, &ver), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(ver, 0);
    for (int i = 1; i <= 1000; i++)
        CHECK_EQ(braid_watch_send(wa, &i), 0);
    CHECK_EQ(braid_watch_get(wa, &v, &ver), 0);
    CHECK_EQ(v, 1000);
    CHECK_EQ(ver, 1000);
    CHECK_EQ(braid_watch_close(wa), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    }
    CHECK_EQ(braid_watch_send(wa, &v), -EPIPE);
    uint64_t old = 0;
    CHECK_EQ(braid_watch_changed_until(wa, &old, &v, braid_deadline_ms(5)), 0); /* newer exists */
    CHECK_EQ(braid_watch_changed_until(wa, &old, &v, braid_deadline_ms(5)), -EPIPE);
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK_EQ(braid_watch_free(wa), 0);
}

static void *watch_timeout_root(void *arg)
{
    (void)arg;
    int zero = 0, v;
    CHECK_EQ(braid_watch_new(&wa, sizeof(int), &zero), 0);
    uint64_t ver = 0;
    CHECK_EQ(braid_watch_changed_until(wa, &ver, &v, braid_deadline_ms(10)), -ETIMEDOUT);
    CHECK_EQ(ver, 0);
    CHECK_EQ(braid_watch_free(wa), 0);
    return NULL;
}

TEST(watch_deadline)
{
    test_run(1, watch_timeout_root, NULL);
}
