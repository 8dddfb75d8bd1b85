/*
 * Multi-threaded randomized stress (issue 6, parts 5 and a first,
 * non-deterministic version of part 2).  For 2, 4 and 8 workers, actors
 * (tasks) and plain threads each driven by their own xorshift PRNG run
 * random operations for a bounded time: spawn (joined, joined with a
 * deadline, detached, cancelled racing completion), panics with defers,
 * yields, sleeps, channel send/recv/close/drop on shared bounded,
 * rendezvous and unbounded channels carrying unique values, select with
 * deadlines, mutex and semaphore sections, JoinSets and nested join_all.
 *
 * Invariants checked at the end of each configuration:
 *  - every spawned task ended exactly once: spawned == started + dropped
 *    unstarted, started == ended, and every handle was consumed exactly
 *    once (joined, detached, reaped by a JoinSet);
 *  - every defer that had to run ran exactly once;
 *  - every value sent through a channel was received exactly once, or was
 *    discarded by the drop of its channel's last receiver; failed sends
 *    (-EPIPE, -ETIMEDOUT, -ECANCELED) delivered nothing; once the last
 *    receiver reference is gone every send fails with -EPIPE;
 *  - mutual exclusion of the mutex and the semaphore's permit count held;
 *  - every join saw a fate consistent with what the task did and with
 *    cancellations (the real fate if the task had finished before the
 *    cancel);
 *  - a task parked on a wait nothing else will satisfy (sleep, receive,
 *    select, notify, semaphore, mutex, token, join), then cancelled, ends
 *    CANCELLED with its wait returning -ECANCELED (or never started);
 *  - every cancelled task that is joined ends within a bound (30 s, 120 s
 *    under the tools): a cancellation that is lost is caught there;
 *  - braid_runtime_free() returns 0.
 *
 * Each configuration runs 2 s (ASan 2 s, TSan 3 s, Valgrind 1 s) plus its
 * shutdown; BRAID_STRESS_SECONDS overrides that (make soak: 60 s);
 * BRAID_STRESS_SEED fixes the base seed (the run is still not
 * deterministic: the threads interleave freely).  Failures print the seed.
 */
#include "test.h"

#include <pthread.h>
#include <sys/mman.h>

/* ---- PRNG, seeds, failure reports ---- */

static uint64_t base_seed;
static unsigned cur_workers;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x | 1;
}

#define SFAIL(seed, ...)                                                                \
    do {                                                                                \
        fprintf(stderr, "[workers %u, base seed 0x%" PRIx64 ", seed 0x%" PRIx64 "] ",   \
                cur_workers, base_seed, (uint64_t)(seed));                              \
        TEST_FAIL(__VA_ARGS__);                                                         \
    } while (0)

#define SCHECK(seed, cond)                                                              \
    do {                                                                                \
        if (!(cond))                                                                    \
            SFAIL(seed, "CHECK failed: %s", #cond);                                     \
    } while (0)

/* ---- counters ---- */

static atomic_long n_spawned, n_started, n_ended, n_dropped, n_consumed;
static atomic_long n_defers_expected, n_defers_ran;
static atomic_long n_joins, n_cancels, n_cancel_joins, n_panics_joined, n_detached_panics;
static atomic_long n_mutex, n_sem, n_selects, n_joinsets, n_joinalls, n_retires;
static atomic_long n_parked_cancels, n_parked_dropped, slowest_cancel_ns;
static atomic_int in_mutex, in_sem;
static uint64_t deadline_ns;
static atomic_bool shutting_down; /* braid_runtime_free() cancels every task */
static braid_runtime *the_rt;
static braid_mutex mtx;
static braid_sem sem;
#define SEM_PERMITS 3

/* ---- channels carrying unique values ---- */

/* State of value v (1 .. MAXV-1): gen << 2 | st, st: 0 unused, 1 being sent
 * or sent, 2 received, 3 send failed (nothing delivered). */
#define MAXV (1u << 24)
#define MAXGEN (1u << 16)
#define NSLOTS 6
static _Atomic uint32_t *vstate;
static atomic_uint next_value;
/* Per channel generation: 1 once its creator's receiver reference is being
 * dropped (values buffered may be discarded from then on), 2 once that drop
 * returned; and how many receiver references users hold.  Once it is 2 and
 * no user holds one, every send must fail with -EPIPE. */
static atomic_uchar gen_rx_dropped[MAXGEN];
static atomic_int gen_rx_users[MAXGEN];
static atomic_uint next_gen;
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot {
    braid_chan *ch;
    uint32_t gen;
    size_t cap;
} slots[NSLOTS + 1]; /* the last: a channel whose receivers are gone */
static atomic_long n_sent, n_recvd, n_send_failed, n_sends_no_rx;

static const size_t caps[] = { 0, 1, 4, 16, BRAID_CHAN_UNBOUNDED, BRAID_CHAN_UNBOUNDED };

static void slot_fill(int i)
{
    braid_chan *ch;
    CHECK_EQ(braid_chan_new(&ch, sizeof(uint64_t), caps[i]), 0);
    slots[i].ch = ch;
    slots[i].cap = caps[i];
    slots[i].gen = atomic_fetch_add(&next_gen, 1);
}

/* A reference (sender or receiver) to the channel of slot i.  For a
 * sender, i may be NSLOTS: the last channel retired by dropping its
 * receiver, if any. */
static braid_chan *slot_get(int i, bool rx, uint32_t *gen, size_t *cap)
{
    pthread_mutex_lock(&slot_mu);
    if (i == NSLOTS && (rx || !slots[i].ch))
        i = 0;
    braid_chan *ch = slots[i].ch;
    *gen = slots[i].gen;
    *cap = slots[i].cap;
    if (rx)
        atomic_fetch_add(&gen_rx_users[*gen], 1);
    int rc = rx ? braid_chan_receiver_dup(ch) : braid_chan_sender_dup(ch);
    pthread_mutex_unlock(&slot_mu);
    CHECK_EQ(rc, 0);
    return ch;
}

static void rx_put(braid_chan *ch, uint32_t gen)
{
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
    atomic_fetch_sub(&gen_rx_users[gen], 1);
}

/* Whether no receiver reference of generation gen is left. */
static bool no_receiver_left(uint32_t gen)
{
    return atomic_load(&gen_rx_dropped[gen]) == 2 && atomic_load(&gen_rx_users[gen]) == 0;
}

static uint32_t new_value(void)
{
    uint32_t v = atomic_fetch_add(&next_value, 1);
    return v < MAXV ? v : 0;
}

static void mark_sending(uint64_t seed, uint32_t v, uint32_t gen)
{
    uint32_t want = 0;
    if (!atomic_compare_exchange_strong(&vstate[v], &want, gen << 2 | 1))
        SFAIL(seed, "value %u reused (state %#x)", v, want);
}

static void mark_send_result(uint64_t seed, uint32_t v, uint32_t gen, int rc, bool must_fail)
{
    if (must_fail && rc != -EPIPE && rc != -ECANCELED)
        SFAIL(seed, "send to a channel without receivers returned %d, not -EPIPE", rc);
    if (must_fail)
        atomic_fetch_add(&n_sends_no_rx, 1);
    if (rc == 0) {
        atomic_fetch_add(&n_sent, 1);
        return;
    }
    uint32_t want = gen << 2 | 1;
    if (!atomic_compare_exchange_strong(&vstate[v], &want, gen << 2 | 3))
        SFAIL(seed, "send of value %u failed (%d) but it was delivered (state %#x)", v, rc,
              want);
    atomic_fetch_add(&n_send_failed, 1);
}

static void mark_received(uint64_t seed, uint64_t v, uint32_t gen)
{
    if (v == 0 || v >= MAXV)
        SFAIL(seed, "received a value never sent: %" PRIu64, v);
    uint32_t want = gen << 2 | 1;
    if (!atomic_compare_exchange_strong(&vstate[v], &want, gen << 2 | 2))
        SFAIL(seed, "value %" PRIu64 " received on gen %u in state %#x (dup or wrong channel)",
              v, gen, want);
    atomic_fetch_add(&n_recvd, 1);
}

/* A deadline mostly already past or a few hundred microseconds away, at
 * times 2 ms away: waits end quickly, and many end by timing out. */
static uint64_t short_deadline(uint64_t *s)
{
    uint64_t r = rnd(s) % 8;
    uint64_t now = braid_now_ns();
    return r < 3 ? now : r < 7 ? now + (r - 2) * 100000u : now + 2000000u;
}

static bool is_deadline_err(int rc)
{
    return rc == -ETIMEDOUT || rc == -ECANCELED || rc == -EPIPE;
}

static void op_send(uint64_t *s)
{
    uint32_t v = new_value();
    if (!v)
        return;
    uint32_t gen;
    size_t cap;
    int i = (int)(rnd(s) % (NSLOTS + 1));
    braid_chan *ch = slot_get(i, false, &gen, &cap);
    mark_sending(*s, v, gen);
    bool must_fail = no_receiver_left(gen);
    uint64_t item = v;
    int rc;
    if (cap == BRAID_CHAN_UNBOUNDED && rnd(s) % 2)
        rc = braid_chan_send(ch, &item);
    else if (rnd(s) % 4 == 0)
        rc = braid_chan_try_send(ch, &item);
    else
        rc = braid_chan_send_until(ch, &item, short_deadline(s));
    if (rc != 0 && rc != -EAGAIN && !is_deadline_err(rc))
        SFAIL(*s, "send: %d", rc);
    mark_send_result(*s, v, gen, rc, must_fail);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
}

static void op_recv(uint64_t *s)
{
    uint32_t gen;
    size_t cap;
    int i = (int)(rnd(s) % NSLOTS);
    braid_chan *ch = slot_get(i, true, &gen, &cap);
    int n = 1 + (int)(rnd(s) % 4);
    for (int k = 0; k < n; k++) {
        uint64_t item = 0;
        int rc = rnd(s) % 3 ? braid_chan_recv_until(ch, &item, short_deadline(s))
                            : braid_chan_try_recv(ch, &item);
        if (rc == 0)
            mark_received(*s, item, gen);
        else if (rc != -EAGAIN && !is_deadline_err(rc))
            SFAIL(*s, "recv: %d", rc);
        else
            break;
    }
    rx_put(ch, gen);
}

static void op_select(uint64_t *s)
{
    int a = (int)(rnd(s) % NSLOTS), b = (int)((a + 1 + rnd(s) % (NSLOTS - 1)) % NSLOTS);
    if (rnd(s) % 8 == 0)
        b = NSLOTS;
    uint32_t ga, gb;
    size_t ca, cb;
    braid_chan *ra = slot_get(a, true, &ga, &ca);
    braid_chan *sb = slot_get(b, false, &gb, &cb);
    uint32_t v = new_value();
    uint64_t in = 0, out = v;
    braid_select_case cs[2] = {
        { ra, BRAID_SELECT_RECV, &in, 0 },
        { v ? sb : NULL, BRAID_SELECT_SEND, &out, 0 },
    };
    if (v)
        mark_sending(*s, v, gb);
    bool must_fail = no_receiver_left(gb);
    unsigned flags = (unsigned)(rnd(s) % 4); /* BIASED and NOWAIT at random */
    int rc = braid_select(cs, 2, short_deadline(s), flags);
    atomic_fetch_add(&n_selects, 1);
    if (rc == 0) {
        if (cs[0].result == 0)
            mark_received(*s, in, ga);
        else
            SCHECK(*s, cs[0].result == -EPIPE);
    } else if (rc != 1 && rc != -ETIMEDOUT && rc != -ECANCELED && rc != -EAGAIN) {
        SFAIL(*s, "select: %d", rc);
    }
    if (v)
        mark_send_result(*s, v, gb, rc == 1 ? cs[1].result : -ETIMEDOUT, must_fail && rc == 1);
    if (rc == 1)
        SCHECK(*s, cs[1].result == 0 || cs[1].result == -EPIPE);
    rx_put(ra, ga);
    CHECK_EQ(braid_chan_sender_drop(sb), 0);
}

/* Drain a closed channel whose creator references we hold, then drop them. */
static void drain_and_free(uint64_t seed, braid_chan *ch, uint32_t gen, bool task)
{
    CHECK_EQ(braid_chan_close(ch), 0);
    bool was = task && braid_cancel_shield(true); /* a cancelled task drains too */
    for (int spins = 0;;) {
        uint64_t item;
        int rc = braid_chan_try_recv(ch, &item);
        if (rc == 0) {
            mark_received(seed, item, gen);
        } else if (rc == -EPIPE) {
            break;
        } else {
            if (rc != -EAGAIN)
                SFAIL(seed, "draining a closed channel: %d", rc);
            if (++spins > 1000000)
                SFAIL(seed, "closed channel never drained");
            if (task)
                braid_yield();
            else
                sched_yield();
        }
    }
    if (task)
        braid_cancel_shield(was);
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

/* Replace a slot's channel; the old one is closed and drained, or its
 * receiver dropped (discarding what is buffered, once nobody else holds a
 * receiver reference). */
static void op_retire(uint64_t *s)
{
    if (atomic_load(&next_gen) >= MAXGEN - 1)
        return;
    int i = (int)(rnd(s) % NSLOTS);
    pthread_mutex_lock(&slot_mu);
    braid_chan *old = slots[i].ch;
    uint32_t gen = slots[i].gen;
    slot_fill(i);
    pthread_mutex_unlock(&slot_mu);
    atomic_fetch_add(&n_retires, 1);
    if (rnd(s) % 2) {
        drain_and_free(*s, old, gen, true);
    } else {
        atomic_store(&gen_rx_dropped[gen], 1); /* before: a value may be lost from now on */
        CHECK_EQ(braid_chan_receiver_drop(old), 0);
        atomic_store(&gen_rx_dropped[gen], 2);
        if (rnd(s) % 2)
            braid_yield();
        /* Keep its sender reference as the receiverless slot for a while. */
        pthread_mutex_lock(&slot_mu);
        braid_chan *prev = slots[NSLOTS].ch;
        slots[NSLOTS].ch = old;
        slots[NSLOTS].gen = gen;
        slots[NSLOTS].cap = caps[i];
        pthread_mutex_unlock(&slot_mu);
        if (prev)
            CHECK_EQ(braid_chan_sender_drop(prev), 0);
    }
}

/* ---- locks ---- */

static void op_mutex(uint64_t *s, bool task)
{
    int rc = rnd(s) % 2 ? braid_mutex_lock(&mtx)
                        : braid_mutex_lock_until(&mtx, short_deadline(s));
    if (rc != 0) {
        if (rc != -ETIMEDOUT && rc != -ECANCELED)
            SFAIL(*s, "mutex lock: %d", rc);
        return;
    }
    if (atomic_fetch_add(&in_mutex, 1) != 0)
        SFAIL(*s, "mutual exclusion violated");
    if (task && rnd(s) % 3 == 0)
        braid_yield();
    if (atomic_load(&in_mutex) != 1)
        SFAIL(*s, "mutual exclusion violated");
    atomic_fetch_sub(&in_mutex, 1);
    atomic_fetch_add(&n_mutex, 1);
    CHECK_EQ(braid_mutex_unlock(&mtx), 0);
}

static void op_sem(uint64_t *s, bool task)
{
    uint64_t n = 1 + rnd(s) % 2;
    int rc = rnd(s) % 2 ? braid_sem_acquire(&sem, n)
                        : braid_sem_acquire_until(&sem, n, short_deadline(s));
    if (rc != 0) {
        if (rc != -ETIMEDOUT && rc != -ECANCELED)
            SFAIL(*s, "sem acquire: %d", rc);
        return;
    }
    if (atomic_fetch_add(&in_sem, (int)n) + (int)n > SEM_PERMITS)
        SFAIL(*s, "semaphore over-admitted");
    if (task && rnd(s) % 2)
        rnd(s) % 8 ? braid_yield() : braid_sleep_ms(0);
    atomic_fetch_sub(&in_sem, (int)n);
    atomic_fetch_add(&n_sem, 1);
    CHECK_EQ(braid_sem_release(&sem, n), 0);
}

/* ---- jobs ---- */

struct job {
    atomic_int state; /* 0 spawned, 1 running, 2 ended, 3 dropped */
    uint64_t seed;
    int depth;
    bool panic;
    uintptr_t token;
    int defers_expected, defers_ran;
};

/* What the spawner remembers about a job (the job itself is freed by it). */
struct ticket {
    uintptr_t token;
    bool panic;
    uint64_t seed;
    uint64_t id;
};

static atomic_ulong next_token;

static void *job_body(void *arg);

static void job_drop(void *arg)
{
    struct job *j = arg;
    int want = 0;
    if (!atomic_compare_exchange_strong(&j->state, &want, 3))
        SFAIL(j->seed, "arg_drop of a job in state %d", want);
    atomic_fetch_add(&n_dropped, 1);
    free(j);
}

static struct job *job_new(uint64_t *s, int depth, struct ticket *t)
{
    struct job *j = calloc(1, sizeof *j);
    CHECK(j != NULL);
    j->seed = rnd(s) | 1;
    j->depth = depth;
    j->panic = rnd(s) % 6 == 0;
    j->token = (uintptr_t)(atomic_fetch_add(&next_token, 1) * 2 + 1);
    t->token = j->token;
    t->panic = j->panic;
    t->seed = j->seed;
    return j;
}

/* Spawn a job (rt != NULL: from a plain thread); out NULL detaches. */
static int spawn_job(uint64_t *s, int depth, braid_task *out, struct ticket *t, braid_runtime *rt)
{
    struct job *j = job_new(s, depth, t);
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = job_drop;
    o.name = "mt-job";
    atomic_fetch_add(&n_spawned, 1);
    int rc = rt ? braid_spawn_on_ex(rt, out, &o, job_body, j) : braid_spawn_ex(out, &o, job_body, j);
    if (rc != 0) {
        atomic_fetch_sub(&n_spawned, 1);
        free(j);
        return rc;
    }
    if (!out)
        atomic_fetch_add(&n_consumed, 1);
    t->id = out ? braid_task_id(*out) : 0;
    return 0;
}

/* Check a job's fate.  cancelled: we cancelled it; finished_before: it had
 * finished before the cancel (so the cancel must change nothing). */
#define check_outcome(t, fate, o, cancelled, fin) \
    check_outcome_at(__LINE__, t, fate, o, cancelled, fin)
static void check_outcome_at(int line, const struct ticket *t, int fate, const braid_outcome *o,
                             bool cancelled, bool finished_before)
{
    if (fate < 0)
        SFAIL(t->seed, "join: %d", fate);
    atomic_fetch_add(&n_joins, 1);
    if (cancelled)
        atomic_fetch_add(&n_cancel_joins, 1);
    switch (fate) {
    case BRAID_OK:
        if ((uintptr_t)o->value != t->token)
            SFAIL(t->seed, "OK with value %p, want %#lx", o->value, (unsigned long)t->token);
        if (t->panic)
            SFAIL(t->seed, "a panicking job returned OK");
        break;
    case BRAID_PANICKED: {
        if (!t->panic)
            SFAIL(t->seed, "job panicked unexpectedly: %s", o->message);
        char want[64];
        snprintf(want, sizeof want, "mt panic %lu", (unsigned long)t->token);
        if (strcmp(o->message, want) != 0)
            SFAIL(t->seed, "panic message \"%s\", want \"%s\"", o->message, want);
        SCHECK(t->seed, o->value == NULL);
        atomic_fetch_add(&n_panics_joined, 1);
        break;
    }
    case BRAID_CANCELLED:
        if (!cancelled && !atomic_load(&shutting_down))
            SFAIL(t->seed, "CANCELLED though never cancelled (joined at line %d)", line);
        if (finished_before)
            SFAIL(t->seed, "finished before the cancel, yet CANCELLED");
        if (o->value != NULL && (uintptr_t)o->value != t->token)
            SFAIL(t->seed, "CANCELLED with value %p", o->value);
        break;
    default:
        SFAIL(t->seed, "fate %d", fate);
    }
}

/* Join a handle to the end (shielded if the caller gets cancelled). */
static int join_fully(braid_task h, braid_outcome *o, bool task)
{
    int f = braid_join_ex(h, o);
    if (f == -ECANCELED && task) {
        bool was = braid_cancel_shield(true);
        f = braid_join_ex(h, o);
        braid_cancel_shield(was);
    }
    return f;
}

/* How long a cancelled task may take to end: everything a job does is
 * short, so only a lost cancellation comes near this. */
static uint64_t cancel_bound_ns(void)
{
    return (test_instrumented() ? 120 : 30) * UINT64_C(1000000000);
}

static void note_cancel_latency(uint64_t since)
{
    long took = (long)(braid_now_ns() - since), prev = atomic_load(&slowest_cancel_ns);
    while (took > prev && !atomic_compare_exchange_weak(&slowest_cancel_ns, &prev, took))
        ;
}

/* join_fully for a task cancelled at `since`: it must end within the bound. */
static int join_cancelled(uint64_t seed, braid_task h, braid_outcome *o, bool task, uint64_t since,
                          const char *what)
{
    bool was = task && braid_cancel_shield(true);
    int f = braid_join_ex_until(h, o, since + cancel_bound_ns());
    if (task)
        braid_cancel_shield(was);
    if (f == -ETIMEDOUT) {
        fprintf(stderr, "the stuck task: %s, id %" PRIu64 "\n", what, braid_task_id(h));
        braid_dump(the_rt, stderr);
        SFAIL(seed, "a cancelled task still runs %.0f s after the cancel",
              (double)cancel_bound_ns() / 1e9);
    }
    note_cancel_latency(since);
    return f;
}

static void cancel_checked(uint64_t seed, braid_task h, bool *finished_before, uint64_t *at)
{
    *finished_before = braid_is_finished(h);
    *at = braid_now_ns();
    int rc = braid_cancel(h);
    if (rc != 0)
        SFAIL(seed, "cancel: %d", rc);
    atomic_fetch_add(&n_cancels, 1);
}

/* Spawn a job and deal with its handle in one of several ways. */
static void op_spawn(uint64_t *s, int depth, braid_runtime *rt)
{
    bool task = rt == NULL;
    struct ticket t;
    braid_task h;
    if (rnd(s) % 6 == 0) {
        CHECK_EQ(spawn_job(s, depth, NULL, &t, rt), 0); /* detached at spawn */
        return;
    }
    CHECK_EQ(spawn_job(s, depth, &h, &t, rt), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    bool cancelled = false, fin = false;
    uint64_t cancel_at = 0;
    int f;
    switch (rnd(s) % 7) {
    case 0: /* plain join */
        break;
    case 1: /* cancel at once: races the start */
        cancel_checked(t.seed, h, &fin, &cancel_at);
        cancelled = true;
        break;
    case 2: /* cancel after a while: races completion */
        if (task)
            for (int n = (int)(rnd(s) % 4); n > 0; n--)
                braid_yield();
        else if (rnd(s) % 2)
            sched_yield();
        cancel_checked(t.seed, h, &fin, &cancel_at);
        cancelled = true;
        break;
    case 3: /* join with a deadline, then cancel or wait */
        f = braid_join_ex_until(h, &o, short_deadline(s));
        if (f >= 0) {
            atomic_fetch_add(&n_consumed, 1);
            check_outcome(&t, f, &o, false, false);
            return;
        }
        if (f != -ETIMEDOUT && f != -ECANCELED)
            SFAIL(t.seed, "join_until: %d", f);
        if (rnd(s) % 2) {
            cancel_checked(t.seed, h, &fin, &cancel_at);
            cancelled = true;
        }
        break;
    case 4: /* detach later */
        if (task)
            braid_yield();
        CHECK_EQ(braid_detach(h), 0);
        atomic_fetch_add(&n_consumed, 1);
        return;
    case 5: /* cancel, then detach */
        cancel_checked(t.seed, h, &fin, &cancel_at);
        CHECK_EQ(braid_detach(h), 0);
        atomic_fetch_add(&n_consumed, 1);
        return;
    default: /* join without looking at the outcome in detail */
        break;
    }
    f = cancelled ? join_cancelled(t.seed, h, &o, task, cancel_at, "a job") : join_fully(h, &o, task);
    atomic_fetch_add(&n_consumed, 1);
    check_outcome(&t, f, &o, cancelled, fin);
}

/* ---- cancelling a task parked for good ---- */

/* A task waits on something nobody else will ever satisfy; cancelling it
 * is the only way out, and its wait must return -ECANCELED. */
enum { PARK_SLEEP, PARK_RECV, PARK_SELECT, PARK_NOTIFY, PARK_SEM, PARK_MUTEX, PARK_TOKEN,
       PARK_JOIN, PARK_KINDS };

struct parker {
    atomic_int state; /* 0 spawned, 1 about to wait, 2 waited, 3 dropped unstarted */
    int kind, rc;
    braid_chan *ch[2];
    braid_notify *nt;
    braid_sem sem;
    braid_mutex mu;
    braid_token *tok;
    braid_task inner; /* PARK_JOIN: a parker of its own, cancelled after */
};

static void *parker_body(void *arg)
{
    struct parker *p = arg;
    atomic_store(&p->state, 1);
    uint64_t item;
    braid_select_case cs[2] = { { p->ch[0], BRAID_SELECT_RECV, &item, 0 },
                                { p->ch[1], BRAID_SELECT_RECV, &item, 0 } };
    switch (p->kind) {
    case PARK_SLEEP: p->rc = braid_sleep_until(BRAID_FOREVER); break;
    case PARK_RECV: p->rc = braid_chan_recv(p->ch[0], &item); break;
    case PARK_SELECT: p->rc = braid_select(cs, 2, BRAID_FOREVER, 0); break;
    case PARK_NOTIFY: p->rc = braid_notify_wait(p->nt); break;
    case PARK_SEM: p->rc = braid_sem_acquire(&p->sem, 1); break;
    case PARK_MUTEX: p->rc = braid_mutex_lock(&p->mu); break;
    case PARK_TOKEN: p->rc = braid_token_wait(p->tok); break;
    default: p->rc = braid_join(p->inner, NULL); break;
    }
    atomic_store(&p->state, 2);
    return p;
}

static void parker_drop(void *arg)
{
    struct parker *p = arg;
    int want = 0;
    if (!atomic_compare_exchange_strong(&p->state, &want, 3))
        TEST_FAIL("parker dropped in state %d", want);
}

static void parker_init(struct parker *p, int kind)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    for (int i = 0; i < 2; i++)
        CHECK_EQ(braid_chan_new(&p->ch[i], sizeof(uint64_t), 0), 0);
    CHECK_EQ(braid_notify_new(&p->nt), 0);
    CHECK_EQ(braid_sem_init(&p->sem, 0), 0);
    CHECK_EQ(braid_mutex_init(&p->mu), 0);
    CHECK_EQ(braid_token_new(&p->tok, NULL), 0);
}

static void parker_fini(struct parker *p)
{
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(braid_chan_sender_drop(p->ch[i]), 0);
        CHECK_EQ(braid_chan_receiver_drop(p->ch[i]), 0);
    }
    CHECK_EQ(braid_notify_free(p->nt), 0);
    CHECK_EQ(braid_sem_destroy(&p->sem), 0);
    CHECK_EQ(braid_mutex_destroy(&p->mu), 0);
    CHECK_EQ(braid_token_free(p->tok), 0);
}

/* Spawn a parker (rt != NULL: from a plain thread); 0 or the spawn's error. */
static int parker_spawn(struct parker *p, braid_task *h, braid_runtime *rt)
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.arg_drop = parker_drop;
    o.name = "mt-parker";
    return rt ? braid_spawn_on_ex(rt, h, &o, parker_body, p) : braid_spawn_ex(h, &o, parker_body, p);
}

/* Cancel parker p (handle h) and check how it ended: CANCELLED, its wait
 * (if it got there) -ECANCELED, within the bound. */
static void parker_cancel(uint64_t seed, struct parker *p, braid_task h, bool task)
{
    uint64_t at = braid_now_ns();
    CHECK_EQ(braid_cancel(h), 0);
    braid_outcome o = BRAID_OUTCOME_INIT;
    static const char *const kinds[PARK_KINDS] = { "parked: sleep", "parked: recv", "parked: select",
                                                   "parked: notify", "parked: sem",
                                                   "parked: mutex", "parked: token",
                                                   "parked: join" };
    int f = join_cancelled(seed, h, &o, task, at, kinds[p->kind]);
    int st = atomic_load(&p->state);
    if (f != BRAID_CANCELLED)
        SFAIL(seed, "parked task (kind %d) cancelled: fate %d, not CANCELLED", p->kind, f);
    if (st == 0)
        SFAIL(seed, "parked task (kind %d) cancelled: it neither ran nor was dropped", p->kind);
    if (st == 1)
        SFAIL(seed, "parked task (kind %d) cancelled, yet its wait never returned", p->kind);
    if (st == 2 && p->rc != -ECANCELED)
        SFAIL(seed, "parked task (kind %d) cancelled: its wait returned %d", p->kind, p->rc);
    if (st == 3)
        atomic_fetch_add(&n_parked_dropped, 1);
    atomic_fetch_add(&n_parked_cancels, 1);
}

static void op_park_cancel(uint64_t *s, braid_runtime *rt)
{
    bool task = rt == NULL;
    struct parker p, inner;
    parker_init(&p, (int)(rnd(s) % PARK_KINDS));
    if (p.kind == PARK_MUTEX)
        CHECK_EQ(braid_mutex_trylock(&p.mu), 0); /* private: free */
    if (p.kind == PARK_JOIN) {
        parker_init(&inner, PARK_NOTIFY);
        CHECK_EQ(parker_spawn(&inner, &p.inner, rt), 0);
    }
    braid_task h;
    CHECK_EQ(parker_spawn(&p, &h, rt), 0);
    /* Mostly once it is about to wait (or waits), else at once, racing its start. */
    if (rnd(s) % 4) {
        uint64_t give_up = braid_now_ns() + cancel_bound_ns();
        bool was = task && braid_cancel_shield(true);
        while (atomic_load(&p.state) == 0 && braid_now_ns() < give_up)
            task ? braid_yield() : sched_yield();
        if (task)
            braid_cancel_shield(was);
        /* It may have been dropped (shutdown) but not be stuck unstarted. */
        if (atomic_load(&p.state) == 0 && !atomic_load(&shutting_down))
            SFAIL(*s, "a parker did not start within %.0f s", (double)cancel_bound_ns() / 1e9);
    }
    parker_cancel(*s, &p, h, task);
    if (p.kind == PARK_JOIN) {
        parker_cancel(*s, &inner, p.inner, task);
        parker_fini(&inner);
    }
    if (p.kind == PARK_MUTEX)
        CHECK_EQ(braid_mutex_unlock(&p.mu), 0);
    parker_fini(&p);
}

static void op_joinset(uint64_t *s, int depth)
{
    braid_joinset *js;
    CHECK_EQ(braid_joinset_new(&js), 0);
    atomic_fetch_add(&n_joinsets, 1);
    struct ticket t[4];
    int n = 1 + (int)(rnd(s) % 4);
    for (int i = 0; i < n; i++) {
        struct job *j = job_new(s, depth, &t[i]);
        braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
        o.arg_drop = job_drop;
        atomic_fetch_add(&n_spawned, 1);
        int rc = braid_joinset_spawn(js, &o, job_body, j, &t[i].id);
        if (rc != 0) {
            atomic_fetch_sub(&n_spawned, 1);
            free(j);
            SFAIL(*s, "joinset_spawn: %d", rc);
        }
    }
    bool cancelled = false;
    if (rnd(s) % 4 == 0) {
        CHECK_EQ(braid_joinset_cancel_all(js), 0);
        cancelled = true;
    }
    int reap = (int)(rnd(s) % (unsigned)(n + 1));
    for (int k = 0; k < reap; k++) {
        braid_outcome o = BRAID_OUTCOME_INIT;
        uint64_t id = 0;
        int f = rnd(s) % 2 ? braid_joinset_join_next(js, &o, &id)
                           : braid_joinset_join_next_until(js, &o, &id, short_deadline(s));
        if (f == -ETIMEDOUT || f == -ECANCELED)
            break;
        if (f < 0)
            SFAIL(*s, "join_next: %d", f);
        atomic_fetch_add(&n_consumed, 1);
        int i = 0;
        while (i < n && t[i].id != id)
            i++;
        if (i == n)
            SFAIL(*s, "join_next gave unknown id %" PRIu64, id);
        t[i].id = 0;
        check_outcome(&t[i], f, &o, cancelled, false);
    }
    size_t left = braid_joinset_len(js);
    CHECK_EQ(braid_joinset_shutdown(js), 0);
    CHECK_EQ(braid_joinset_len(js), 0);
    atomic_fetch_add(&n_consumed, (long)left);
    CHECK_EQ(braid_joinset_free(js), 0);
}

static void count_defer(void *arg)
{
    struct job *j = arg;
    j->defers_ran++;
    atomic_fetch_add(&n_defers_ran, 1);
}

static void do_ops(uint64_t *s, int depth, struct job *j, int nops);

struct call_arg {
    uint64_t seed;
    int depth;
    int ran;
};

static void call_defer(void *arg)
{
    struct call_arg *c = arg;
    c->ran++;
    atomic_fetch_add(&n_defers_ran, 1);
}

static void *call_body(void *arg)
{
    struct call_arg *c = arg;
    braid_defer d;
    CHECK_EQ(braid_defer_push(&d, call_defer, c), 0);
    atomic_fetch_add(&n_defers_expected, 1);
    do_ops(&c->seed, c->depth, NULL, 1 + (int)(c->seed % 3));
    CHECK_EQ(braid_defer_pop(&d, true), 0);
    return (void *)(uintptr_t)c->seed;
}

static void op_join_all(uint64_t *s, int depth)
{
    struct call_arg a[3];
    braid_call calls[3];
    size_t n = 2 + rnd(s) % 2;
    for (size_t i = 0; i < n; i++) {
        a[i] = (struct call_arg){ rnd(s) | 1, depth + 1, 0 };
        calls[i] = (braid_call){ call_body, &a[i], NULL };
    }
    int rc = braid_join_all(calls, n);
    atomic_fetch_add(&n_joinalls, 1);
    if (rc != 0 && rc != -ECANCELED)
        SFAIL(*s, "join_all: %d", rc);
    for (size_t i = 0; i < n; i++) {
        if (a[i].ran > 1)
            SFAIL(*s, "join_all call's defer ran %d times", a[i].ran);
        if (rc == 0 && (a[i].ran != 1 || calls[i].result != (void *)(uintptr_t)a[i].seed))
            SFAIL(*s, "join_all call %zu did not complete", i);
        /* -ECANCELED: a call that never ran has ran == 0 and pushed nothing. */
    }
}

enum { OP_YIELD, OP_SLEEP, OP_SPAWN, OP_SEND, OP_RECV, OP_SELECT, OP_MUTEX, OP_SEM,
       OP_JOINSET, OP_JOINALL, OP_RETIRE, OP_DEFER, OP_PARK, OP_N };

static void do_ops(uint64_t *s, int depth, struct job *j, int nops)
{
    for (int k = 0; k < nops; k++) {
        int op = (int)(rnd(s) % OP_N);
        switch (op) {
        case OP_YIELD:
            braid_yield();
            break;
        case OP_SLEEP:
            if (rnd(s) % 4)
                braid_sleep_ms(0);
            else
                braid_sleep_until(braid_now_ns() + rnd(s) % 1000000u);
            break;
        case OP_SPAWN:
            if (depth < 3)
                op_spawn(s, depth + 1, NULL);
            break;
        case OP_SEND:
            op_send(s);
            break;
        case OP_RECV:
            op_recv(s);
            break;
        case OP_SELECT:
            op_select(s);
            break;
        case OP_MUTEX:
            op_mutex(s, true);
            break;
        case OP_SEM:
            op_sem(s, true);
            break;
        case OP_JOINSET:
            if (depth < 2)
                op_joinset(s, depth + 1);
            break;
        case OP_JOINALL:
            if (depth < 3)
                op_join_all(s, depth);
            break;
        case OP_RETIRE:
            if (depth == 0 && rnd(s) % 16 == 0)
                op_retire(s);
            break;
        case OP_PARK:
            if (depth < 2 && rnd(s) % 4 == 0)
                op_park_cancel(s, NULL);
            break;
        case OP_DEFER:
            if (j) { /* a defer popped with or without running it */
                braid_defer d;
                CHECK_EQ(braid_defer_push(&d, count_defer, j), 0);
                braid_yield();
                bool run = rnd(s) % 2;
                if (run) {
                    j->defers_expected++;
                    atomic_fetch_add(&n_defers_expected, 1);
                }
                CHECK_EQ(braid_defer_pop(&d, run), 0);
            }
            break;
        }
    }
}

/* Runs last in every job, on return and on panic. */
static void job_end(void *arg)
{
    struct job *j = arg;
    int want = 1;
    if (!atomic_compare_exchange_strong(&j->state, &want, 2))
        SFAIL(j->seed, "job ended in state %d", want);
    if (j->defers_ran != j->defers_expected)
        SFAIL(j->seed, "job's defers ran %d times, want %d", j->defers_ran, j->defers_expected);
    atomic_fetch_add(&n_ended, 1);
    free(j);
}

static void *job_body(void *arg)
{
    struct job *j = arg;
    int want = 0;
    if (!atomic_compare_exchange_strong(&j->state, &want, 1))
        SFAIL(j->seed, "job started in state %d", want);
    atomic_fetch_add(&n_started, 1);
    braid_defer end;
    CHECK_EQ(braid_defer_push(&end, job_end, j), 0);
    uint64_t s = j->seed;
    uintptr_t token = j->token;
    do_ops(&s, j->depth, j, 1 + (int)(rnd(&s) % 6));
    if (j->panic) {
        braid_defer d[2];
        int nd = 1 + (int)(rnd(&s) % 2);
        for (int i = 0; i < nd; i++) {
            CHECK_EQ(braid_defer_push(&d[i], count_defer, j), 0);
            j->defers_expected++;
            atomic_fetch_add(&n_defers_expected, 1);
        }
        if (rnd(&s) % 2)
            braid_yield();
        braid_panic("mt panic %lu", (unsigned long)token);
    }
    CHECK_EQ(braid_defer_pop(&end, true), 0); /* frees j */
    return (void *)token;
}

/* ---- actors and outsiders ---- */

static void *actor(void *arg)
{
    uint64_t s = mix(base_seed ^ (uintptr_t)arg);
    while (braid_now_ns() < deadline_ns) {
        int op = (int)(rnd(&s) % 4);
        if (op == 0)
            op_spawn(&s, 1, NULL);
        else
            do_ops(&s, 0, NULL, 1);
    }
    return NULL;
}

static void *outsider(void *arg)
{
    uint64_t s = mix(base_seed ^ (0x1000 + (uintptr_t)arg));
    while (braid_now_ns() < deadline_ns) {
        switch (rnd(&s) % 6) {
        case 0:
        case 1:
            op_send(&s);
            break;
        case 5:
            if (rnd(&s) % 4 == 0)
                op_park_cancel(&s, the_rt);
            break;
        case 2:
            op_spawn(&s, 2, the_rt);
            break;
        case 3:
            op_mutex(&s, false);
            break;
        default:
            op_sem(&s, false);
            break;
        }
    }
    return NULL;
}

static void quiet_hook(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    (void)id, (void)name, (void)user;
    if (strncmp(o->message, "mt panic ", 9) != 0)
        TEST_FAIL("detached task panicked: %s", o->message);
    atomic_fetch_add(&n_detached_panics, 1);
}

static void *root(void *arg)
{
    test_spawn_join_n((long)(intptr_t)arg, actor);
    return NULL;
}

static uint64_t stress_ms(void)
{
    const char *e = getenv("BRAID_STRESS_SECONDS");
    if (e && *e)
        return (uint64_t)(atof(e) * 1000);
    /* The time is bounded, so slow tools scale the work down by
     * themselves; the shutdown and the checks take longer under them. */
    if (test_under_valgrind())
        return 1000;
#if defined(TEST_TSAN)
    return 3000;
#elif defined(TEST_ASAN)
    return 2000;
#else
    return 2000;
#endif
}

#define ZERO(x) atomic_store(&(x), 0)

static void run_mt(unsigned workers)
{
    cur_workers = workers;
    const char *e = getenv("BRAID_STRESS_SEED");
    base_seed = e && *e ? strtoull(e, NULL, 0) : mix(braid_now_ns() ^ (uint64_t)getpid() << 32);
    printf("%u workers, base seed 0x%" PRIx64 "\n", workers, base_seed);
    fflush(stdout);

    atomic_store(&shutting_down, false);
    ZERO(n_spawned), ZERO(n_started), ZERO(n_ended), ZERO(n_dropped), ZERO(n_consumed);
    ZERO(n_defers_expected), ZERO(n_defers_ran), ZERO(n_joins), ZERO(n_cancels);
    ZERO(n_cancel_joins), ZERO(n_panics_joined), ZERO(n_detached_panics);
    ZERO(n_sent), ZERO(n_recvd), ZERO(n_send_failed), ZERO(n_sends_no_rx);
    ZERO(n_parked_cancels), ZERO(n_parked_dropped), ZERO(slowest_cancel_ns);
    atomic_store(&next_value, 1);
    atomic_store(&next_gen, 1);
    atomic_store(&next_token, 1);
    vstate = mmap(NULL, MAXV * sizeof *vstate, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(vstate != MAP_FAILED);
    CHECK_EQ(braid_mutex_init(&mtx), 0);
    CHECK_EQ(braid_sem_init(&sem, SEM_PERMITS), 0);
    for (int i = 0; i < NSLOTS; i++)
        slot_fill(i);

    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.stack_size = 64 * 1024;
    cfg.panic_hook = quiet_hook;
    cfg.shutdown_timeout_ms = 60000;
    CHECK_EQ(braid_runtime_new(&cfg, &the_rt), 0);
    uint64_t t0 = braid_now_ns();
    deadline_ns = t0 + stress_ms() * 1000000u;
    pthread_t th[2];
    for (uintptr_t i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, outsider, (void *)i), 0);
    long actors = 8 * (long)workers;
    CHECK_EQ(braid_block_on(the_rt, root, (void *)(intptr_t)actors, NULL), BRAID_OK);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    /* Detached jobs may still run: the shutdown cancels and finishes them
     * (and the jobs they join are then cancelled by it, not by them). */
    atomic_store(&shutting_down, true);
    int rc = braid_runtime_free(the_rt);
    if (rc != 0)
        SFAIL(0, "braid_runtime_free: %d", rc);
    uint64_t t1 = braid_now_ns();

    /* Every task ended exactly once, every handle was consumed once. */
    long sp = atomic_load(&n_spawned), st = atomic_load(&n_started), en = atomic_load(&n_ended);
    long dr = atomic_load(&n_dropped), co = atomic_load(&n_consumed);
    if (sp != st + dr || st != en || co != sp)
        SFAIL(0, "spawned %ld, started %ld, ended %ld, dropped %ld, handles consumed %ld", sp, st,
              en, dr, co);
    if (atomic_load(&n_defers_expected) != atomic_load(&n_defers_ran))
        SFAIL(0, "defers: %ld expected, %ld ran", atomic_load(&n_defers_expected),
              atomic_load(&n_defers_ran));
    CHECK_EQ(atomic_load(&in_mutex), 0);
    CHECK_EQ(atomic_load(&in_sem), 0);
    CHECK_EQ(braid_sem_available(&sem), SEM_PERMITS);
    CHECK_EQ(braid_mutex_destroy(&mtx), 0);
    CHECK_EQ(braid_sem_destroy(&sem), 0);

    /* Channels: drain what is left, then every value is accounted for. */
    for (int i = 0; i < NSLOTS; i++)
        drain_and_free(0, slots[i].ch, slots[i].gen, false);
    if (slots[NSLOTS].ch)
        CHECK_EQ(braid_chan_sender_drop(slots[NSLOTS].ch), 0);
    slots[NSLOTS].ch = NULL;
    uint32_t nv = atomic_load(&next_value);
    if (nv > MAXV)
        nv = MAXV;
    long lost_to_drop = 0, recvd = 0, failed = 0;
    for (uint32_t v = 1; v < nv; v++) {
        uint32_t x = atomic_load(&vstate[v]);
        switch (x & 3) {
        case 0:
            /* Allocated but not sent: select with no slot, or the cap. */
            break;
        case 1:
            if (!atomic_load(&gen_rx_dropped[x >> 2]))
                SFAIL(0, "value %u (channel gen %u) was sent but never received", v, x >> 2);
            lost_to_drop++;
            break;
        case 2:
            recvd++;
            break;
        default:
            failed++;
            break;
        }
    }
    CHECK_EQ(recvd, atomic_load(&n_recvd));
    CHECK_EQ(failed, atomic_load(&n_send_failed));
    CHECK_EQ(recvd + lost_to_drop, atomic_load(&n_sent));
    munmap(vstate, MAXV * sizeof *vstate);
    for (uint32_t g = 0; g < MAXGEN; g++) {
        CHECK_EQ(atomic_load(&gen_rx_users[g]), 0);
        atomic_store(&gen_rx_dropped[g], 0);
    }

    CHECK(sp > 50);
    CHECK(atomic_load(&n_sent) > 50);
    /* Some were cancelled in their wait, not only before they started. */
    CHECK(atomic_load(&n_parked_cancels) > atomic_load(&n_parked_dropped));
    printf("%u workers, %.2f s: %ld tasks (%ld never started), %ld joins (%ld after cancel, %ld "
           "panics), %ld detached panics, %ld cancels; %ld values sent (%ld received, %ld "
           "discarded with a dropped receiver), %ld failed sends (%ld with no receiver left), %ld selects; %ld mutex, %ld "
           "sem sections; %ld joinsets, %ld join_alls, %ld channel retirements\n",
           workers, (double)(t1 - t0) / 1e9, sp, dr, atomic_load(&n_joins),
           atomic_load(&n_cancel_joins), atomic_load(&n_panics_joined),
           atomic_load(&n_detached_panics), atomic_load(&n_cancels), atomic_load(&n_sent), recvd,
           lost_to_drop, failed, atomic_load(&n_sends_no_rx), atomic_load(&n_selects), atomic_load(&n_mutex),
           atomic_load(&n_sem), atomic_load(&n_joinsets), atomic_load(&n_joinalls),
           atomic_load(&n_retires));
    printf("%u workers: %ld parked tasks cancelled (%ld before they started); the slowest "
           "cancellation took %.1f ms\n", workers, atomic_load(&n_parked_cancels),
           atomic_load(&n_parked_dropped), (double)atomic_load(&slowest_cancel_ns) / 1e6);
}

TEST(stress_mt_2_workers)
{
    run_mt(2);
}

TEST(stress_mt_4_workers)
{
    run_mt(4);
}

TEST(stress_mt_8_workers)
{
    run_mt(8);
}
