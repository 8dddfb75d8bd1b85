/*
 * Handling task failures: one task succeeds, one panics.  The panic ends
 * only that task; its joiner learns the message and where it happened, and
 * the program carries on.
 */
#include <braid.h>
#include <stdio.h>

static void *succeeds(void *arg)
{
    (void)arg;
    braid_sleep_ms(100);
    return "Task succeeded";
}

static void *fails(void *arg)
{
    (void)arg;
    braid_sleep_ms(50);
    braid_panic("Task failed");
}

static void *root(void *arg)
{
    (void)arg;
    braid_task ok, bad;
    braid_spawn(&ok, succeeds, NULL);
    braid_spawn(&bad, fails, NULL);

    braid_outcome o1 = BRAID_OUTCOME_INIT, o2 = BRAID_OUTCOME_INIT;
    braid_join_ex(ok, &o1);
    braid_join_ex(bad, &o2);

    if (o1.status == BRAID_OK)
        printf("Task 1: %s\n", (const char *)o1.value);
    if (o2.status == BRAID_PANICKED)
        printf("Task 2 panicked: %s (at %s:%d)\n", o2.message, o2.file, o2.line);
    printf("Main continues after the failure\n");
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
