/* Timers: sleeping, yielding, and the timing wheel itself. */
#include "test.h"
#include "timer.h"

#include <time.h>

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- sleeping never returns early ---- */

static void *sleep_checked(void *arg)
{
    uint64_t ms = (uintptr_t)arg;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_sleep_ms(ms), 0);
    uint64_t took = braid_now_ns() - t0;
    if (took < ms * 1000000u)
        TEST_FAIL("slept %llu ns for %llu ms", (unsigned long long)took, (unsigned long long)ms);
    return NULL;
}

static void *never_early_root(void *arg)
{
    (void)arg;
    enum { N = 200 };
    braid_task h[N];
    uint64_t s = 7;
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], sleep_checked, (void *)(uintptr_t)(xorshift(&s) % 60)), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(sleep_never_returns_early)
{
    test_run(2, never_early_root, NULL);
    test_run(1, never_early_root, NULL);
}

static void *until_root(void *arg)
{
    (void)arg;
    uint64_t deadline = braid_now_ns() + 30 * 1000000u;
    CHECK_EQ(braid_sleep_until(deadline), 0);
    CHECK(braid_now_ns() >= deadline);
    /* A deadline in the past returns at once (after a yield). */
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_sleep_until(t0 - 1000000000u), 0);
    CHECK_EQ(braid_sleep_until(0), 0);
    CHECK_EQ(braid_sleep_ms(0), 0);
    CHECK(braid_now_ns() - t0 < 500 * 1000000u);
    return NULL;
}

TEST(sleep_until_and_past_deadlines)
{
    test_run(2, until_root, NULL);
}

/* ---- sleeps overlap and cost no CPU ---- */

static void *sleep_200(void *arg)
{
    (void)arg;
    braid_sleep_ms(200);
    return NULL;
}

static void *overlap_root(void *arg)
{
    (void)arg;
    enum { N = 1000 };
    static braid_task h[N];
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], sleep_200, NULL), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(sleeps_overlap_and_use_no_cpu)
{
    uint64_t t0 = test_now_ms(), c0 = cpu_ns();
    test_run(2, overlap_root, NULL);
    uint64_t wall = test_now_ms() - t0, cpu = (cpu_ns() - c0) / 1000000u;
    CHECK(wall >= 200);
    if (wall > 200 + (test_instrumented() ? 2000 : 300))
        TEST_FAIL("1000 sleeps of 200 ms took %llu ms", (unsigned long long)wall);
    /* A thousand sleepers for 200 ms: the workers sleep in the kernel. */
    if (!test_instrumented() && cpu > 150)
        TEST_FAIL("sleeping cost %llu ms of CPU", (unsigned long long)cpu);
}

/* ---- a yield loop does not starve timers ---- */

static atomic_int flag;

static void *set_later(void *arg)
{
    (void)arg;
    braid_sleep_ms(20);
    atomic_store(&flag, 1);
    return NULL;
}

static void *spin_yield(void *arg)
{
    (void)arg;
    uint64_t n = 0;
    while (!atomic_load(&flag)) {
        CHECK_EQ(braid_yield(), 0);
        n++;
    }
    return (void *)(uintptr_t)n;
}

static void *starve_root(void *arg)
{
    (void)arg;
    braid_task a, b;
    CHECK_EQ(braid_spawn(&a, set_later, NULL), 0);
    CHECK_EQ(braid_spawn(&b, spin_yield, NULL), 0);
    void *n;
    CHECK_EQ(braid_join(b, &n), BRAID_OK);
    CHECK((uintptr_t)n > 0);
    CHECK_EQ(braid_join(a, NULL), BRAID_OK);
    return NULL;
}

TEST(yield_loop_does_not_starve_timer)
{
    atomic_store(&flag, 0);
    test_run(1, starve_root, NULL);
    atomic_store(&flag, 0);
    test_run(2, starve_root, NULL);
}

/* yield puts the caller behind all runnable work, including tasks that
 * have not started yet. */
static atomic_int started_count;

static void *count_start(void *arg)
{
    (void)arg;
    atomic_fetch_add(&started_count, 1);
    return NULL;
}

static void *yield_order_root(void *arg)
{
    (void)arg;
    braid_task h[50];
    for (int i = 0; i < 50; i++)
        CHECK_EQ(braid_spawn(&h[i], count_start, NULL), 0);
    CHECK_EQ(atomic_load(&started_count), 0);
    CHECK_EQ(braid_yield(), 0);
    CHECK_EQ(atomic_load(&started_count), 50);
    for (int i = 0; i < 50; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);
    return NULL;
}

TEST(yield_goes_behind_runnable_work)
{
    test_run(1, yield_order_root, NULL);
}

/* ---- many sleepers ---- */

static atomic_long woke;

static void *sleep_random(void *arg)
{
    uint64_t ms = (uintptr_t)arg;
    uint64_t t0 = braid_now_ns();
    CHECK_EQ(braid_sleep_ms(ms), 0);
    CHECK(braid_now_ns() - t0 >= ms * 1000000u);
    atomic_fetch_add(&woke, 1);
    return NULL;
}

static void *many_root(void *arg)
{
    long n = (long)(intptr_t)arg;
    uint64_t s = 42;
    for (long i = 0; i < n; i++)
        CHECK_EQ(braid_spawn(NULL, sleep_random, (void *)(uintptr_t)(xorshift(&s) % 200)), 0);
    while (atomic_load(&woke) < n)
        braid_sleep_ms(5);
    return NULL;
}

TEST(hundred_thousand_sleepers)
{
    long n = test_scale(100000);
    atomic_store(&woke, 0);
    test_run(2, many_root, (void *)(intptr_t)n);
    CHECK_EQ(atomic_load(&woke), n);
}

/* ---- the wheel, white-box ---- */

struct wt {
    braid__timer t;
    uint64_t deadline_ns;
    int fired;
};

static uint64_t wheel_now;

static void on_fire(braid__timer *t)
{
    struct wt *w = (struct wt *)t;
    w->fired++;
    if (wheel_now < w->deadline_ns)
        TEST_FAIL("timer fired early: now %llu deadline %llu", (unsigned long long)wheel_now,
                  (unsigned long long)w->deadline_ns);
}

static int by_deadline(const void *a, const void *b)
{
    uint64_t x = (*(struct wt *const *)a)->deadline_ns, y = (*(struct wt *const *)b)->deadline_ns;
    return x < y ? -1 : x > y;
}

TEST(wheel_fires_each_timer_once_on_time)
{
    enum { N = 20000 };
    static struct wt timers[N];
    braid__wheel w;
    uint64_t start = 5000ull * 1000000u; /* 5 s, arbitrary */
    braid__wheel_init(&w, start);
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        uint64_t span;
        switch (i % 4) {
        case 0: span = xorshift(&s) % 64000000u; break;          /* < 64 ms */
        case 1: span = xorshift(&s) % 5000000000ull; break;       /* < 5 s */
        case 2: span = xorshift(&s) % 600000000000ull; break;     /* < 10 min */
        default: span = xorshift(&s) % 200000000000000ull; break; /* < 2.3 days */
        }
        timers[i].deadline_ns = start + span + 1;
        timers[i].fired = 0;
        CHECK(braid__timer_arm(&w, &timers[i].t, timers[i].deadline_ns));
    }
    CHECK_EQ(w.count, N);
    /* Cancel every 7th. */
    size_t cancelled = 0;
    for (int i = 0; i < N; i += 7) {
        braid__timer_disarm(&w, &timers[i].t);
        CHECK(!braid__timer_armed(&timers[i].t));
        cancelled++;
    }
    CHECK_EQ(w.count, N - cancelled);
    /* The live timers by deadline, to check after every step that nothing
     * due was left behind. */
    static struct wt *order[N];
    size_t live = 0;
    for (int i = 0; i < N; i++)
        if (i % 7)
            order[live++] = &timers[i];
    qsort(order, live, sizeof order[0], by_deadline);
    size_t checked = 0;
    /* Advance in irregular steps. */
    wheel_now = start;
    size_t fired = 0;
    while (w.count) {
        uint64_t next = braid__wheel_next_ns(&w);
        CHECK(next != 0);
        uint64_t step = xorshift(&s) % 3 == 0 ? 1 : xorshift(&s) % 5000000u;
        wheel_now = next > wheel_now + step ? next : wheel_now + step;
        fired += braid__wheel_advance(&w, wheel_now, on_fire);
        while (checked < live &&
               braid__tick_ceil(order[checked]->deadline_ns) <= braid__tick_floor(wheel_now)) {
            if (order[checked]->fired != 1)
                TEST_FAIL("a timer due at %llu ns has not fired at %llu ns",
                          (unsigned long long)order[checked]->deadline_ns,
                          (unsigned long long)wheel_now);
            checked++;
        }
    }
    CHECK_EQ(checked, live);
    CHECK_EQ(fired, N - cancelled);
    for (int i = 0; i < N; i++)
        CHECK_EQ(timers[i].fired, i % 7 == 0 ? 0 : 1);
}

TEST(wheel_next_deadline_is_never_after_the_earliest_timer)
{
    braid__wheel w;
    uint64_t start = 123456789ull;
    braid__wheel_init(&w, start);
    uint64_t s = 3;
    enum { N = 2000 };
    static struct wt timers[N];
    uint64_t earliest = UINT64_MAX;
    for (int i = 0; i < N; i++) {
        timers[i].deadline_ns = start + 1 + xorshift(&s) % 100000000000ull;
        if (timers[i].deadline_ns < earliest)
            earliest = timers[i].deadline_ns;
        CHECK(braid__timer_arm(&w, &timers[i].t, timers[i].deadline_ns));
    }
    /* Parking until the reported time, then advancing, must never skip
     * past a due timer, and each jump must make progress. */
    wheel_now = start;
    size_t fired = 0;
    while (w.count) {
        uint64_t next = braid__wheel_next_ns(&w);
        CHECK(next > 0);
        CHECK(next <= earliest + 1000000u);
        CHECK(next >= wheel_now || next + 1000000u >= wheel_now);
        wheel_now = next > wheel_now ? next : wheel_now + 1000000u;
        size_t f = braid__wheel_advance(&w, wheel_now, on_fire);
        fired += f;
        earliest = UINT64_MAX;
        for (int i = 0; i < N; i++)
            if (!timers[i].fired && timers[i].deadline_ns < earliest)
                earliest = timers[i].deadline_ns;
    }
    CHECK_EQ(fired, N);
}

TEST(wheel_far_future_and_past)
{
    braid__wheel w;
    braid__wheel_init(&w, 1000000000ull);
    struct wt past = { .deadline_ns = 1 }, far = { .deadline_ns = UINT64_MAX - 5 };
    CHECK(!braid__timer_arm(&w, &past.t, past.deadline_ns)); /* already due */
    CHECK(braid__timer_arm(&w, &far.t, far.deadline_ns));
    wheel_now = 1000000000ull + 10ull * 365 * 86400 * 1000000000ull; /* 10 years on */
    CHECK_EQ(braid__wheel_advance(&w, wheel_now, on_fire), 0);
    CHECK(braid__timer_armed(&far.t));
    CHECK(braid__wheel_next_ns(&w) > 0);
    braid__timer_disarm(&w, &far.t);
    CHECK_EQ(w.count, 0);
    CHECK_EQ(braid__wheel_next_ns(&w), 0);
}

/* ---- a sleep far in the future can be cancelled ---- */

static atomic_int sleeping;

static void *sleep_forever(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sleeping, 1);
    return (void *)(intptr_t)braid_sleep_ms(UINT64_MAX);
}

static void *far_root(void *arg)
{
    (void)arg;
    braid_task h;
    CHECK_EQ(braid_spawn(&h, sleep_forever, NULL), 0);
    test_await(&sleeping, 1);
    CHECK_EQ(braid_cancel(h), 0);
    void *r;
    CHECK_EQ(braid_join(h, &r), BRAID_CANCELLED);
    CHECK_EQ((intptr_t)r, -ECANCELED);
    return NULL;
}

TEST(far_sleep_is_cancellable)
{
    test_run(2, far_root, NULL);
}
