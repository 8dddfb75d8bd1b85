/*
 * Shared state: eight "downloads" run at once on every worker, a semaphore
 * lets only two of them proceed at a time, and a braid_mutex guards the
 * statistics they all update.  A task that waits for the semaphore or the
 * mutex suspends; its worker runs other tasks meanwhile.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

enum { DOWNLOADS = 8, AT_ONCE = 2 };

/* guide:begin state */
struct stats {
    braid_mutex lock;
    unsigned in_flight, most_in_flight, done;
    uint64_t bytes;
};

static struct stats stats = { .lock = BRAID_MUTEX_INIT };
static braid_sem slots = BRAID_SEM_INIT(AT_ONCE);

static void *download(void *arg)
{
    uintptr_t size = (uintptr_t)arg;
    if (braid_sem_acquire(&slots, 1) != 0)
        return NULL; /* cancelled while waiting for a slot */
    braid_mutex_lock(&stats.lock);
    if (++stats.in_flight > stats.most_in_flight)
        stats.most_in_flight = stats.in_flight;
    braid_mutex_unlock(&stats.lock);

    braid_sleep_ms(5); /* stands for the transfer; the lock is not held */

    braid_mutex_lock(&stats.lock);
    stats.in_flight--;
    stats.done++;
    stats.bytes += size;
    braid_mutex_unlock(&stats.lock);
    braid_sem_release(&slots, 1);
    return NULL;
}
/* guide:end state */

static void *root(void *arg)
{
    (void)arg;
    braid_task t[DOWNLOADS];
    for (uintptr_t i = 0; i < DOWNLOADS; i++)
        braid_spawn(&t[i], download, (void *)(1000 * (i + 1)));
    for (int i = 0; i < DOWNLOADS; i++)
        braid_join(t[i], NULL);
    printf("%u downloads, %llu bytes\n", stats.done, (unsigned long long)stats.bytes);
    printf("never more than %d at once: %s\n", AT_ONCE,
           stats.most_in_flight <= AT_ONCE ? "yes" : "no");
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
