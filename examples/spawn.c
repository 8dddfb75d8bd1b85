/*
 * Spawning concurrent tasks: two tasks sleep 2 s and 1 s at the same time.
 * Task 2 was spawned second but finishes first; the whole program takes
 * about 2 s, not 3.
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
    return NULL;
}

static void *root(void *arg)
{
    (void)arg;
    braid_task t1, t2;
    braid_spawn(&t1, task, (void *)1);
    braid_spawn(&t2, task, (void *)2);
    braid_join(t1, NULL);
    braid_join(t2, NULL);
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
