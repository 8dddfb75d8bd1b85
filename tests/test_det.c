/* Deterministic mode: same seed, same schedule; virtual time; BRAID_SEED. */
#include "test.h"

#include <time.h>

static uint64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *run_det(uint64_t seed, braid_fn fn, void *arg)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    cfg.seed = seed;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    uint64_t got = 0;
    CHECK(braid_runtime_deterministic(rt, &got));
    CHECK_EQ(got, seed);
    void *result = NULL;
    CHECK_EQ(braid_block_on(rt, fn, arg, &result), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    return result;
}

/* ---- the same seed gives the same interleaving ------------------------------ */

struct trace {
    char log[4096];
    size_t len;
    braid_chan *ch;
};

static struct trace *cur;

static void note(char c)
{
    if (cur->len < sizeof cur->log - 1)
        cur->log[cur->len++] = c;
}

/* Each worker does a mix of yields, sleeps (ties included) and channel
 * traffic, noting its letter before every step. */
static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (int i = 0; i < 12; i++) {
        note((char)('a' + me));
        int v = me;
        switch ((me + i) % 4) {
        case 0:
            CHECK_EQ(braid_yield(), 0);
            break;
        case 1:
            CHECK_EQ(braid_sleep_ms((uint64_t)(i % 3)), 0);
            break;
        case 2:
            CHECK_EQ(braid_chan_send(cur->ch, &v), 0);
            break;
        case 3:
            if (braid_chan_recv_until(cur->ch, &v, braid_deadline_ms(2)) == 0)
                note((char)('0' + v));
            break;
        }
    }
    return NULL;
}

static void *mix_root(void *arg)
{
    (void)arg;
    CHECK_EQ(braid_chan_new(&cur->ch, sizeof(int), BRAID_CHAN_UNBOUNDED), 0);
    test_spawn_join_n(8, worker);
    int v;
    while (braid_chan_try_recv(cur->ch, &v) == 0)
        note((char)('0' + v));
    braid_chan_sender_drop(cur->ch);
    braid_chan_receiver_drop(cur->ch);
    return NULL;
}

static void trace_run(struct trace *t, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    cur = t;
    run_det(seed, mix_root, NULL);
    t->log[t->len] = 0;
}

TEST(det_same_seed_same_trace)
{
    static struct trace a, b;
    trace_run(&a, 42);
    trace_run(&b, 42);
    CHECK(a.len > 100);
    CHECK_STR(a.log, b.log);
    int differ = 0;
    for (uint64_t s = 1; s <= 6; s++) {
        trace_run(&b, s);
        differ += strcmp(a.log, b.log) != 0;
    }
    CHECK(differ >= 5);
}

/* ---- virtual time ------------------------------------------------------------ */

static char order[8];
static int norder;
static uint64_t woke_at[8];

static void *sleeper(void *arg)
{
    int ms = (int)(intptr_t)arg;
    CHECK_EQ(braid_sleep_ms((uint64_t)ms * 60000), 0); /* minutes */
    woke_at[norder] = braid_now_ns();
    order[norder++] = (char)('0' + ms);
    return NULL;
}

static void *time_root(void *arg)
{
    (void)arg;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(t0, UINT64_C(1000000000)); /* the epoch: 1 s */
    braid_task h[3];
    CHECK_EQ(braid_spawn(&h[0], sleeper, (void *)3), 0);
    CHECK_EQ(braid_spawn(&h[1], sleeper, (void *)1), 0);
    CHECK_EQ(braid_spawn(&h[2], sleeper, (void *)2), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    /* A deadline on a wait is virtual too. */
    braid_chan *ch;
    int v;
    CHECK_EQ(braid_chan_new(&ch, sizeof v, 1), 0);
    uint64_t t1 = braid_now_ns();
    CHECK_EQ(braid_chan_recv_until(ch, &v, braid_deadline_ms(5000)), -ETIMEDOUT);
    CHECK_EQ(braid_now_ns() - t1, UINT64_C(5000000000));
    braid_chan_sender_drop(ch);
    braid_chan_receiver_drop(ch);
    return NULL;
}

TEST(det_virtual_time)
{
    uint64_t start = real_ms();
    norder = 0;
    run_det(7, time_root, NULL);
    CHECK(real_ms() - start < 10000); /* three minutes of sleeps, instantly */
    order[norder] = 0;
    CHECK_STR(order, "123");
    for (int i = 0; i < 3; i++)
        CHECK_EQ(woke_at[i], UINT64_C(1000000000) + (uint64_t)(i + 1) * 60 * UINT64_C(1000000000));
    /* Outside the runtime the clock is the real one. */
    CHECK(braid_now_ns() > 0);
}

/* ---- timer ties and select ----------------------------------------------------- */

/* Eight tasks arm timers for the same instant in a fixed order (task i
 * first sleeps until t0 + i + 1 ms, a time of its own, so the arming order
 * is 0 to 7 whatever order they started in): only the seed may then order
 * their wake-ups, not the order of arming. */
static char tie_log[16];
static int ntie;
static uint64_t tie_t0;

#define TIE_AT (tie_t0 + UINT64_C(100000000))

static void *tie_sleeper(void *arg)
{
    uint64_t i = (uintptr_t)arg - 1;
    CHECK_EQ(braid_sleep_until(tie_t0 + (i + 1) * 1000000u), 0);
    CHECK_EQ(braid_now_ns(), tie_t0 + (i + 1) * 1000000u);
    CHECK_EQ(braid_sleep_until(TIE_AT), 0);
    CHECK_EQ(braid_now_ns(), TIE_AT);
    tie_log[ntie++] = (char)('a' + i);
    return NULL;
}

static void *tie_root(void *arg)
{
    (void)arg;
    tie_t0 = braid_now_ns();
    test_spawn_join_n(8, tie_sleeper);
    return NULL;
}

static void tie_run(uint64_t seed, char *out)
{
    ntie = 0;
    run_det(seed, tie_root, NULL);
    tie_log[ntie] = 0;
    strcpy(out, tie_log);
}

TEST(det_timer_ties_follow_the_seed)
{
    char a[16], b[16];
    tie_run(3, a);
    tie_run(3, b);
    CHECK_EQ(strlen(a), 8);
    CHECK_STR(a, b);
    int differ = 0;
    for (uint64_t s = 10; s < 16; s++) {
        tie_run(s, b);
        differ += strcmp(a, b) != 0;
    }
    CHECK(differ >= 5);
}

static void *select_root(void *arg)
{
    char *out = arg;
    braid_chan *c[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(braid_chan_new(&c[i], sizeof(int), BRAID_CHAN_UNBOUNDED), 0);
    int v = 1;
    for (int k = 0; k < 32; k++) {
        CHECK_EQ(braid_chan_send(c[0], &v), 0);
        CHECK_EQ(braid_chan_send(c[1], &v), 0);
        braid_select_case cases[2] = { { c[0], BRAID_SELECT_RECV, &v, 0 },
                                       { c[1], BRAID_SELECT_RECV, &v, 0 } };
        int rc = braid_select(cases, 2, BRAID_FOREVER, 0);
        CHECK(rc == 0 || rc == 1);
        out[k] = (char)('0' + rc);
        CHECK_EQ(braid_chan_try_recv(c[1 - rc], &v), 0);
    }
    out[32] = 0;
    for (int i = 0; i < 2; i++) {
        braid_chan_sender_drop(c[i]);
        braid_chan_receiver_drop(c[i]);
    }
    return NULL;
}

TEST(det_select_follows_the_seed)
{
    char a[33], b[33];
    run_det(99, select_root, a);
    run_det(99, select_root, b);
    CHECK_STR(a, b);
    CHECK(strchr(a, '0') && strchr(a, '1'));
    run_det(100, select_root, b);
    CHECK(strcmp(a, b) != 0);
}

/* ---- the blocking pool ---------------------------------------------------------- */

static void *slow_job(void *arg)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    return arg;
}

static void *blocking_root(void *arg)
{
    (void)arg;
    uint64_t t0 = braid_now_ns();
    braid_task h;
    CHECK_EQ(braid_spawn_blocking(&h, slow_job, (void *)0x5a), 0);
    void *v = NULL;
    CHECK_EQ(braid_join(h, &v), BRAID_OK);
    CHECK(v == (void *)0x5a);
    CHECK_EQ(braid_now_ns(), t0); /* the job took no virtual time */
    return NULL;
}

TEST(det_blocking_job_takes_no_virtual_time)
{
    run_det(5, blocking_root, NULL);
}

/* ---- configuration ----------------------------------------------------------------- */

static void *report_seed(void *arg)
{
    uint64_t *seed = arg;
    *seed = 0;
    if (!braid_runtime_deterministic(braid_current_runtime(), seed))
        *seed = UINT64_MAX;
    return NULL;
}

TEST(det_seed_from_environment)
{
    uint64_t seed;
    setenv("BRAID_SEED", "0x2a", 1);
    CHECK_EQ(braid_run(report_seed, &seed, NULL), BRAID_OK);
    CHECK_EQ(seed, 42);
    /* An explicit configuration is left alone. */
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK(!braid_runtime_deterministic(rt, NULL));
    CHECK_EQ(braid_runtime_free(rt), 0);
    setenv("BRAID_SEED", "12x", 1);
    CHECK_EQ(braid_run(report_seed, &seed, NULL), -EINVAL);
    setenv("BRAID_SEED", " -1", 1);
    CHECK_EQ(braid_runtime_new(NULL, &rt), -EINVAL);
    unsetenv("BRAID_SEED");
    CHECK_EQ(braid_run(report_seed, &seed, NULL), BRAID_OK);
    CHECK_EQ(seed, UINT64_MAX);
}

TEST(det_config_checks)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.deterministic = true;
    cfg.workers = 2;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), -EINVAL);
    cfg.workers = 0; /* means one, here */
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK(braid_runtime_deterministic(rt, NULL));
    CHECK_EQ(braid_runtime_free(rt), 0);
    CHECK(!braid_runtime_deterministic(NULL, NULL));
}
