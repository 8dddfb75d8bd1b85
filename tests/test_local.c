/* Task-local storage. */
#include "test.h"

static braid_local_key key, key2;
static atomic_int dtor_calls;

static void dtor(void *v)
{
    CHECK(v != NULL);
    atomic_fetch_add(&dtor_calls, 1);
    free(v);
}

static void *uses_locals(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    CHECK(braid_local_get(key) == NULL);
    int *v = malloc(sizeof *v);
    *v = (int)n;
    CHECK_EQ(braid_local_set(key, v), 0);
    for (int i = 0; i < 10; i++) {
        braid_yield();
        CHECK_EQ(*(int *)braid_local_get(key), (int)n); /* per task */
    }
    if (n % 2)
        braid_panic("dtors run on panic too");
    return NULL;
}

static void *locals_root(void *arg)
{
    (void)arg;
    enum { N = 100 };
    braid_task h[N];
    for (uintptr_t i = 0; i < N; i++)
        CHECK_EQ(braid_spawn(&h[i], uses_locals, (void *)i), 0);
    for (uintptr_t i = 0; i < N; i++)
        CHECK_EQ(braid_join(h[i], NULL), i % 2 ? BRAID_PANICKED : BRAID_OK);
    CHECK_EQ(atomic_load(&dtor_calls), N);
    return NULL;
}

TEST(locals_are_per_task_and_destroyed)
{
    CHECK_EQ(braid_local_key_create(&key, dtor), 0);
    test_run(2, locals_root, NULL);
    CHECK_EQ(braid_local_key_delete(key), 0);
    CHECK_EQ(braid_local_key_delete(key), -EINVAL);
}

static void *misuse(void *arg)
{
    (void)arg;
    braid_local_key bad = { 0 };
    CHECK_EQ(braid_local_set(bad, (void *)1), -EINVAL);
    CHECK(braid_local_get(bad) == NULL);
    CHECK_EQ(braid_local_set(key2, (void *)5), 0);
    CHECK_EQ((uintptr_t)braid_local_get(key2), 5);
    CHECK_EQ(braid_local_key_delete(key2), 0);
    CHECK(braid_local_get(key2) == NULL); /* deleted key */
    CHECK_EQ(braid_local_set(key2, (void *)5), -EINVAL);
    return NULL;
}

TEST(local_key_misuse)
{
    CHECK_EQ(braid_local_key_create(&key2, NULL), 0);
    test_run(1, misuse, NULL);
    CHECK_EQ(braid_local_key_create(NULL, NULL), -EINVAL);
    CHECK_EQ(braid_local_set(key2, NULL), -EPERM);
    /* Keys run out at 128, and come back when deleted. */
    braid_local_key k[129];
    int made = 0;
    while (made < 129 && braid_local_key_create(&k[made], NULL) == 0)
        made++;
    CHECK_EQ(made, 128);
    CHECK_EQ(braid_local_key_delete(k[5]), 0);
    CHECK_EQ(braid_local_key_create(&k[5], NULL), 0);
    CHECK(k[5].id != 0);
    for (int i = 0; i < made; i++)
        CHECK_EQ(braid_local_key_delete(k[i]), 0);
}
