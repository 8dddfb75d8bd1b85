/* braid_config.migrate: started tasks continue on the worker that woke
 * them, except while a timer of theirs is armed; errno goes with them; an
 * idle worker serves a held-up one's descriptors and the tasks they woke. */
#include "test.h"
#include "task.h" /* white-box: Q waits until P has parked */

#include <pthread.h>
#include <fcntl.h>
#include <unistd.h>

/* Tests of migration skip where it does not exist (x86-64 only for now:
 * runtime.c says why) or where BRAID_MIGRATE=0 turns it off. */
#if defined(__x86_64__)
#define MIGRATION_ARCH 1
#define NEED_MIGRATION()                                                       \
    do {                                                                       \
        if (test_env_migrate() == 0)                                           \
            SKIP("BRAID_MIGRATE=0 in the environment");                        \
    } while (0)
#else
#define MIGRATION_ARCH 0
#define NEED_MIGRATION() SKIP("migration is x86-64 only for now")
#endif

/* A runtime with the given workers and migrate flag; it must report
 * whether migration took effect (BRAID_MIGRATE overrides the flag). */
static braid_runtime *new_rt(unsigned workers, bool migrate)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.migrate = migrate;
    cfg.observe_off = BRAID_OBSERVE_OFF; /* the spinners below are meant */
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    int env = test_env_migrate();
    bool asked = env < 0 ? migrate : env == 1;
    CHECK_EQ(braid_runtime_migrates(rt), asked && workers > 1 && MIGRATION_ARCH);
    return rt;
}

/* ---- a rendezvous between tasks on different workers ---- */

struct meet {
    braid_chan *ch;
    bool timed;
    braid__task *p;
    _Atomic int q_worker;
    int p_before, p_after, q_before, q_after;
    int err_after;
};

/* errno of the calling thread, computed afresh: written as plain `errno`
 * around braid_chan_recv below, the compiler could use an address taken
 * before a migration (the rule braid.h states for migrating tasks). */
static int *(*volatile errno_at)(void) = __errno_location;

static void chan_free(braid_chan *ch)
{
    CHECK_EQ(braid_chan_sender_drop(ch), 0);
    CHECK_EQ(braid_chan_receiver_drop(ch), 0);
}

static void *nothing(void *arg)
{
    return arg;
}

static void *q_body(void *arg)
{
    struct meet *m = arg;
    atomic_store(&m->q_worker, braid_worker_index());
    /* Send only once P waits: the send then wakes P, from this worker. */
    while (atomic_load_explicit(&m->p->wake, memory_order_acquire) != BRAID_WAKE_PARKED)
        ;
    int v = 1;
    CHECK_EQ(braid_chan_send(m->ch, &v), 0);
    m->q_after = braid_worker_index();
    return NULL;
}

/* P starts Q on the other worker (P spins so that its own worker cannot
 * take Q; a second spawn makes Q stealable and wakes the idle worker), then
 * receives from Q on an unbuffered channel, and Q's send wakes it. */
static void *p_body(void *arg)
{
    struct meet *m = arg;
    m->p = braid__task_current();
    m->p_before = braid_worker_index();
    braid_task q, d;
    CHECK_EQ(braid_spawn(&q, q_body, m), 0);
    CHECK_EQ(braid_spawn(&d, nothing, NULL), 0);
    while (atomic_load(&m->q_worker) < 0)
        ;
    m->q_before = atomic_load(&m->q_worker);
    CHECK(m->q_before != m->p_before);
    *errno_at() = 4321;
    int v = 0;
    int rc = m->timed ? braid_chan_recv_until(m->ch, &v, braid_deadline_ms(60000))
                      : braid_chan_recv(m->ch, &v);
    m->err_after = *errno_at();
    CHECK_EQ(rc, 0);
    CHECK_EQ(v, 1);
    m->p_after = braid_worker_index();
    CHECK_EQ(braid_join(q, NULL), BRAID_OK);
    CHECK_EQ(braid_join(d, NULL), BRAID_OK);
    return NULL;
}

/* Twenty rendezvous: Q, the waker, always carries on where it is; P, woken
 * by Q, continues on Q's worker if p_moves, else at home; its errno goes
 * with it either way. */
static void meet_rounds(bool migrate, bool timed, bool p_moves)
{
    for (int i = 0; i < 20; i++) {
        braid_runtime *rt = new_rt(2, migrate);
        struct meet m = { .timed = timed };
        atomic_init(&m.q_worker, -1);
        CHECK_EQ(braid_chan_new(&m.ch, sizeof(int), 0), 0);
        CHECK_EQ(braid_block_on(rt, p_body, &m, NULL), 0);
        chan_free(m.ch);
        CHECK_EQ(braid_runtime_free(rt), 0);
        CHECK_EQ(m.q_after, m.q_before);
        CHECK_EQ(m.p_after, p_moves ? m.q_before : m.p_before);
        CHECK_EQ(m.err_after, 4321);
    }
}

TEST(migrates_says_whether_it_took_effect)
{
    CHECK(!braid_runtime_migrates(NULL));
    /* new_rt checks the answer: one worker never migrates; two do when
     * asked, on x86-64. */
    CHECK_EQ(braid_runtime_free(new_rt(1, true)), 0);
    CHECK_EQ(braid_runtime_free(new_rt(2, false)), 0);
    CHECK_EQ(braid_runtime_free(new_rt(2, true)), 0);
}

TEST(woken_task_continues_on_the_wakers_worker)
{
    NEED_MIGRATION();
    meet_rounds(true, false, true);
}

TEST(without_migrate_tasks_stay)
{
    if (test_env_migrate() == 1)
        SKIP("BRAID_MIGRATE=1 in the environment");
    meet_rounds(false, false, false);
}

/* P's timer lives in its worker's wheel: P is not moved. */
TEST(a_wait_with_a_deadline_stays_home)
{
    NEED_MIGRATION();
    meet_rounds(true, true, false);
}

/* ---- descriptors: the idle worker polls them ---- */

struct io_case {
    int pipe[2];
    _Atomic int s_worker;
    _Atomic bool done;
    int before, after;
    char got;
};

static void *spinner(void *arg)
{
    struct io_case *c = arg;
    atomic_store(&c->s_worker, braid_worker_index());
    while (!atomic_load(&c->done))
        ;
    return NULL;
}

/* R waits on a pipe while S keeps R's worker busy without a scheduling
 * point: the other worker, idle, holds the shared epoll, takes the event
 * and runs R itself. */
static void *reader(void *arg)
{
    struct io_case *c = arg;
    c->before = braid_worker_index();
    braid_task s;
    CHECK_EQ(braid_spawn(&s, spinner, c), 0);
    /* S runs on this worker once we park, unless the other took it: then
     * the test learns nothing this round (the caller retries). */
    char ch;
    ssize_t n = braid_read(c->pipe[0], &ch, 1);
    c->after = braid_worker_index();
    atomic_store(&c->done, true);
    CHECK_EQ(n, 1);
    c->got = ch;
    CHECK_EQ(braid_join(s, NULL), BRAID_OK);
    return NULL;
}

static void *write_when_spinning(void *arg)
{
    struct io_case *c = arg;
    while (atomic_load(&c->s_worker) < 0)
        sched_yield();
    CHECK_EQ(write(c->pipe[1], "x", 1), 1);
    return NULL;
}

TEST(an_idle_worker_takes_a_busy_workers_descriptors)
{
    NEED_MIGRATION();
    int moved = 0, rounds = 0;
    for (; rounds < 50 && moved < 5; rounds++) {
        braid_runtime *rt = new_rt(2, true);
        struct io_case c = { .got = 0 };
        atomic_init(&c.s_worker, -1);
        atomic_init(&c.done, false);
        CHECK_EQ(pipe2(c.pipe, O_NONBLOCK | O_CLOEXEC), 0);
        pthread_t wr;
        CHECK_EQ(pthread_create(&wr, NULL, write_when_spinning, &c), 0);
        CHECK_EQ(braid_block_on(rt, reader, &c, NULL), 0);
        CHECK_EQ(pthread_join(wr, NULL), 0);
        CHECK_EQ(c.got, 'x');
        if (atomic_load(&c.s_worker) == c.before) {
            /* S held R's old worker: only the other could have run R. */
            CHECK(c.after != c.before);
            moved++;
        }
        braid_close(c.pipe[0]);
        close(c.pipe[1]);
        CHECK_EQ(braid_runtime_free(rt), 0);
    }
    if (moved == 0)
        TEST_FAIL("in %d rounds the spinner never ran on the reader's worker", rounds);
}

/* ---- woken tasks queued on a held-up worker ---- */

enum { READERS = 8 };

struct crowd {
    int pipes[READERS][2];
    _Atomic int reading, ran;
    _Atomic bool timed_out;
};

struct reader_arg {
    struct crowd *c;
    int i;
};

/* The first reader to wake holds its worker until every other reader has
 * run: they must run elsewhere, taken from this worker's queue if it
 * polled their events. */
static void *held_reader(void *arg)
{
    struct reader_arg *a = arg;
    struct crowd *c = a->c;
    char ch;
    atomic_fetch_add(&c->reading, 1);
    CHECK_EQ(braid_read(c->pipes[a->i][0], &ch, 1), 1);
    if (atomic_fetch_add(&c->ran, 1) == 0) {
        uint64_t until = test_now_ms() + 10000;
        while (atomic_load(&c->ran) < READERS)
            if (test_now_ms() > until) {
                atomic_store(&c->timed_out, true);
                braid_dump(braid_current_runtime(), stderr);
                break;
            }
    }
    return NULL;
}

static void *crowd_root(void *arg)
{
    struct crowd *c = arg;
    struct reader_arg a[READERS];
    braid_task t[READERS];
    for (int i = 0; i < READERS; i++) {
        a[i] = (struct reader_arg){ c, i };
        CHECK_EQ(braid_spawn(&t[i], held_reader, &a[i]), 0);
    }
    for (int i = 0; i < READERS; i++)
        CHECK_EQ(braid_join(t[i], NULL), BRAID_OK);
    return NULL;
}

static void *write_all(void *arg)
{
    struct crowd *c = arg;
    /* Each reader counts itself just before its read, so by now each one
     * is parked in it or about to find the data without parking. */
    while (atomic_load(&c->reading) < READERS)
        sched_yield();
    for (int i = 0; i < READERS; i++)
        CHECK_EQ(write(c->pipes[i][1], "x", 1), 1);
    return NULL;
}

TEST(a_held_up_workers_woken_tasks_run_elsewhere)
{
    NEED_MIGRATION();
    for (int round = 0; round < 10; round++) {
        struct crowd c;
        memset(&c, 0, sizeof c);
        for (int i = 0; i < READERS; i++)
            CHECK_EQ(pipe2(c.pipes[i], O_NONBLOCK | O_CLOEXEC), 0);
        braid_runtime *rt = new_rt(2, true);
        pthread_t wr;
        CHECK_EQ(pthread_create(&wr, NULL, write_all, &c), 0);
        CHECK_EQ(braid_block_on(rt, crowd_root, &c, NULL), 0);
        CHECK_EQ(pthread_join(wr, NULL), 0);
        CHECK_EQ(braid_runtime_free(rt), 0);
        for (int i = 0; i < READERS; i++) {
            braid_close(c.pipes[i][0]);
            close(c.pipes[i][1]);
        }
        if (atomic_load(&c.timed_out))
            TEST_FAIL("round %d: the other readers did not run within 10 s", round);
        CHECK_EQ(atomic_load(&c.ran), READERS);
    }
}

/* ---- many tasks moving while they talk ---- */

enum { PAIRS = 64, ROUNDS = 2000 };

static void *echo_peer(void *arg)
{
    braid_chan **ch = arg;
    long v;
    while (braid_chan_recv(ch[0], &v) == 0)
        if (braid_chan_send(ch[1], &v) < 0)
            break;
    return NULL;
}

static void *talker(void *arg)
{
    braid_chan *ch[2];
    CHECK_EQ(braid_chan_new(&ch[0], sizeof(long), 1), 0);
    CHECK_EQ(braid_chan_new(&ch[1], sizeof(long), 1), 0);
    braid_task peer;
    CHECK_EQ(braid_spawn(&peer, echo_peer, ch), 0);
    long sum = 0, n = test_scale(ROUNDS);
    for (long i = 0; i < n; i++) {
        long v = i;
        CHECK_EQ(braid_chan_send(ch[0], &v), 0);
        CHECK_EQ(braid_chan_recv(ch[1], &v), 0);
        sum += v;
        if (i % 64 == 0)
            braid_sleep_ms(0);
    }
    braid_chan_close(ch[0]);
    CHECK_EQ(braid_join(peer, NULL), BRAID_OK);
    chan_free(ch[0]);
    chan_free(ch[1]);
    CHECK_EQ(sum, n * (n - 1) / 2);
    return (void *)(uintptr_t)arg;
}

static void *talkers(void *arg)
{
    (void)arg;
    braid_task t[PAIRS];
    for (uintptr_t i = 0; i < PAIRS; i++)
        CHECK_EQ(braid_spawn(&t[i], talker, (void *)i), 0);
    for (uintptr_t i = 0; i < PAIRS; i++) {
        void *r;
        CHECK_EQ(braid_join(t[i], &r), BRAID_OK);
        CHECK_EQ((uintptr_t)r, i);
    }
    return NULL;
}

TEST(pairs_talking_across_workers)
{
    NEED_MIGRATION();
    for (unsigned workers = 2; workers <= 4; workers += 2) {
        braid_runtime *rt = new_rt(workers, true);
        CHECK_EQ(braid_block_on(rt, talkers, NULL, NULL), 0);
        CHECK_EQ(braid_runtime_free(rt), 0);
    }
}
