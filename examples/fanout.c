/*
 * Fan-out with a deadline: start five lookups that take different times,
 * take the answers in the order they arrive, and give up on the ones that
 * are not back within 250 ms (they are cancelled and waited for when the
 * JoinSet is freed).
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

static const unsigned delays_ms[] = { 300, 50, 150, 1000, 100 };

static void *lookup(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    int rc = braid_sleep_ms(delays_ms[i]); /* stands for the real work */
    if (rc == -ECANCELED)
        return NULL;
    return (void *)(i * 10);
}

static void *root(void *arg)
{
    (void)arg;
    braid_joinset *set;
    braid_joinset_new(&set);
    for (uintptr_t i = 0; i < 5; i++)
        braid_joinset_spawn(set, NULL, lookup, (void *)i, NULL);

    uint64_t deadline = braid_deadline_ms(250);
    braid_outcome out = BRAID_OUTCOME_INIT;
    int fate;
    while ((fate = braid_joinset_join_next_until(set, &out, NULL, deadline)) >= 0)
        printf("Answer %lu\n", (unsigned long)(uintptr_t)out.value);
    if (fate == -ETIMEDOUT)
        printf("Deadline passed, %zu lookups given up\n", braid_joinset_len(set));
    braid_joinset_free(set); /* cancels and waits for the rest */
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
