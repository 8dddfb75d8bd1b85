/* The run queue ring (src/queue.c) on its own: an owner that pushes,
 * takes back and pops, against thieves that steal, every entry taken
 * exactly once.  The internal functions are linked from the static
 * library. */
#include "test.h"
#include "queue.h"

#include <pthread.h>

enum { THIEVES = 2 };

static braid__ring owner_ring, thief_ring[THIEVES];
static braid__inject inject;
static _Atomic uint8_t *taken;   /* per value: how many times taken */
static uint64_t nvalues;
static atomic_bool owner_done;
static atomic_int bad_steals;

static void take(uint64_t v)
{
    if (v == 0 || v > nvalues) {
        atomic_fetch_add(&bad_steals, 1);
        return;
    }
    atomic_fetch_add(&taken[v - 1], 1);
}

static void *thief(void *arg)
{
    braid__ring *mine = arg;
    while (!atomic_load(&owner_done)) {
        uint64_t h;
        uint32_t n = braid__ring_steal(&owner_ring, mine, &h);
        if (n > BRAID_RING_CAP) {
            /* A steal of more than the ring holds: its copy would run on
             * for billions of entries. */
            atomic_fetch_add(&bad_steals, 1);
            return NULL;
        }
        if (n) {
            take(h);
            while (braid__ring_pop(mine, &h))
                take(h);
        }
    }
    return NULL;
}

/* The owner pushes one or two values and takes the newest back at once,
 * as a task that joins the child it just spawned does (the narrow window:
 * thieves empty the ring between its look at the head and its lowering
 * of the tail); whatever is left it pops. */
TEST(owner_and_thieves_take_each_entry_once)
{
    nvalues = (uint64_t)test_scale(2000000);
    taken = calloc(nvalues, 1);
    CHECK(taken != NULL);
    braid__ring_init(&owner_ring);
    CHECK_EQ(braid__inject_init(&inject), 0);
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++) {
        braid__ring_init(&thief_ring[i]);
        CHECK_EQ(pthread_create(&th[i], NULL, thief, &thief_ring[i]), 0);
    }
    uint64_t v = 1;
    while (v <= nvalues && !atomic_load(&bad_steals)) {
        bool two = v % 3 == 0 && v < nvalues;
        if (two)
            CHECK(braid__ring_push(&owner_ring, &inject, v++) > 0);
        uint64_t newest = v++;
        CHECK(braid__ring_push(&owner_ring, &inject, newest) > 0);
        if (braid__ring_unpush(&owner_ring, newest))
            take(newest);
        uint64_t h;
        while (braid__ring_pop(&owner_ring, &h))
            take(h);
    }
    atomic_store(&owner_done, true);
    for (int i = 0; i < THIEVES; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_EQ(atomic_load(&bad_steals), 0);
    uint64_t h;
    for (int i = 0; i < THIEVES; i++)
        while (braid__ring_pop(&thief_ring[i], &h))
            take(h);
    /* A thief held up while copying keeps the owner from reusing the
     * slots it copies from: pushes meanwhile go to the injection queue. */
    while (braid__inject_pop(&inject, &h, 1))
        take(h);
    for (uint64_t i = 0; i < nvalues; i++)
        if (atomic_load(&taken[i]) != 1)
            TEST_FAIL("value %llu taken %u times", (unsigned long long)i + 1,
                      (unsigned)atomic_load(&taken[i]));
    braid__inject_destroy(&inject);
    free(taken);
}
