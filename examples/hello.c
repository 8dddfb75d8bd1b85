#include <braid.h>
#include <stdio.h>

static void *work(void *arg)
{
    braid_sleep_ms((uintptr_t)arg);            /* suspends this task only */
    if ((uintptr_t)arg == 0)
        braid_panic("no work given");          /* ends this task only */
    return (void *)((uintptr_t)arg * 2);
}

static void *root(void *unused)
{
    braid_task a, b;
    braid_spawn(&a, work, (void *)100);
    braid_spawn(&b, work, (void *)0);
    braid_outcome oa = BRAID_OUTCOME_INIT, ob = BRAID_OUTCOME_INIT;
    braid_join_ex(a, &oa);
    braid_join_ex(b, &ob);
    printf("a: %lu\n", (unsigned long)(uintptr_t)oa.value);      /* a: 200 */
    printf("b: panicked: %s\n", ob.message);                     /* b: panicked: no work given */
    return unused;
}

int main(void) { return braid_run(root, NULL, NULL) == BRAID_OK ? 0 : 1; }
