/*
 * Randomized scenarios in deterministic mode (tests/scenario.h): for each
 * seed, a random workload is generated, run twice and checked (every task
 * ends once, every defer runs once, no channel value lost or duplicated,
 * mutual exclusion, cancellation completes; the two runs log the same
 * events).  BRAID_SCENARIO_SEEDS sets how many seeds (the default is scaled
 * to the tool), BRAID_SCENARIO_FIRST the first one (default: one derived
 * from the time, printed); BRAID_SEED=n replays seed n alone, printing its
 * event log.
 */
#include "test.h"
#include "scenario.h"

#include <signal.h>
#include <time.h>

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

/* About 5 s each on an idle machine: a test process must stay under ~20 s
 * on a loaded one (make soak runs many more). */
static uint64_t default_seeds(void)
{
    if (test_under_valgrind())
        return 250;
    if (test_emulated())
        return 300;
#if defined(TEST_TSAN)
    return 100;
#elif defined(TEST_ASAN)
    return 1000;
#else
    return 3000;
#endif
}

static char hint[256];
static volatile sig_atomic_t current_seed_lo, current_seed_hi;

/* A scenario that never ends is a failure too: say which seed it was. */
static void on_alarm(int sig)
{
    (void)sig;
    char msg[160];
    uint64_t seed = (uint64_t)(uint32_t)current_seed_hi << 32 | (uint32_t)current_seed_lo;
    int n = snprintf(msg, sizeof msg,
                     "scenario seed %" PRIu64 " did not finish; replay: BRAID_SEED=%" PRIu64
                     " <test_scenario> scenario_seeds\n", seed, seed);
    if (write(2, msg, (size_t)n) < 0)
        _exit(3);
    _exit(2);
}

static uint64_t run_one(uint64_t seed, bool verbose)
{
    current_seed_lo = (sig_atomic_t)(uint32_t)seed;
    current_seed_hi = (sig_atomic_t)(uint32_t)(seed >> 32);
    snprintf(hint, sizeof hint, "replay: BRAID_SEED=%" PRIu64 " %s scenario_seeds", seed,
             program_invocation_name);
    sc_replay_hint = hint;
    alarm(test_under_valgrind() ? 120 : 30);
    uint64_t events = sc_check_seed(seed, verbose);
    alarm(0);
    return events;
}

TEST(scenario_seeds)
{
    signal(SIGALRM, on_alarm);
    const char *replay = getenv("BRAID_SEED");
    if (replay && *replay) {
        uint64_t seed = strtoull(replay, NULL, 0);
        printf("replaying seed %" PRIu64 "\n", seed);
        run_one(seed, true);
        return;
    }
    uint64_t n = env_u64("BRAID_SCENARIO_SEEDS", default_seeds());
    uint64_t first = env_u64("BRAID_SCENARIO_FIRST", (uint64_t)time(NULL) * 1000003u);
    printf("seeds %" PRIu64 " .. %" PRIu64 "\n", first, first + n - 1);
    fflush(stdout);
    uint64_t t0 = braid_now_ns(), events = 0;
    for (uint64_t s = first; s < first + n; s++)
        events += run_one(s, false);
    printf("%" PRIu64 " seeds (%" PRIu64 " events each run) in %.1f s\n", n, events,
           (double)(braid_now_ns() - t0) / 1e9);
}

/* The same seed gives the same log; another seed (almost always) another. */
TEST(scenario_hash_depends_on_seed)
{
    struct sc_program pg;
    struct sc_src src = { NULL, 0, 0, 7 };
    sc_generate(&pg, &src, 7);
    pg.nscripts = 2;
    uint64_t h = sc_run(&pg, false, NULL);
    CHECK_EQ(sc_run(&pg, false, NULL), h);
    int differ = 0;
    for (uint64_t s = 1; s <= 8; s++) {
        pg.seed = s * 0x1234567;
        differ += sc_run(&pg, false, NULL) != h;
    }
    CHECK(differ > 0);
}
