/*
 * Joining several operations concurrently inside one task (Tokio's join!):
 * both calls sleep at the same time, on the caller's worker, without
 * spawning background tasks.  Takes about 2 s.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

static void *work(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    braid_sleep_ms(n == 1 ? 2000 : 1000);
    printf("Task %lu completed\n", (unsigned long)n);
    fflush(stdout);
    return (void *)(n * 10);
}

static void *root(void *arg)
{
    (void)arg;
    braid_call calls[] = {
        { work, (void *)1, NULL },
        { work, (void *)2, NULL },
    };
    int rc = braid_join_all(calls, 2);
    if (rc < 0)
        return NULL;
    printf("Results: %lu and %lu\n", (unsigned long)(uintptr_t)calls[0].result,
           (unsigned long)(uintptr_t)calls[1].result);
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
