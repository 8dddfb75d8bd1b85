/*
 * Combining spawn with join: spawn two background tasks, then wait for both
 * handles together.  Each task returns its result through its handle.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

static void *task(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    braid_sleep_ms(n == 1 ? 2000 : 1000);
    printf("Task %lu completed\n", (unsigned long)n);
    fflush(stdout);
    return (void *)(n * 100);
}

/* Wait for one spawned task inside a join_all call. */
static void *wait_for(void *arg)
{
    void *result = NULL;
    braid_join(*(braid_task *)arg, &result);
    return result;
}

static void *root(void *arg)
{
    (void)arg;
    braid_task t1, t2;
    braid_spawn(&t1, task, (void *)1);
    braid_spawn(&t2, task, (void *)2);
    braid_call waits[] = {
        { wait_for, &t1, NULL },
        { wait_for, &t2, NULL },
    };
    braid_join_all(waits, 2);
    printf("Both tasks done: %lu and %lu\n", (unsigned long)(uintptr_t)waits[0].result,
           (unsigned long)(uintptr_t)waits[1].result);
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
