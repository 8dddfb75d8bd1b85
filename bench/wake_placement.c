/*
 * How long a thread woken by a busy thread waits for a CPU, with plain
 * pthreads and a futex: no braid.  A worker that finds work wakes an idle
 * one exactly this way, so when the kernel queues the woken thread behind
 * its (busy) waker instead of on an idle CPU, the woken worker runs only
 * when the waker's time slice ends, and until then the waker alone starts
 * every new task (BENCHMARKS.md, "Variance").
 *
 *   build/wake-placement [rounds]
 *
 * prints one line per round and a summary line.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int go;
static atomic_long woke_at;
static atomic_int woken_cpu;

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *sleeper(void *arg)
{
    (void)arg;
    while (!atomic_load(&go))
        syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    atomic_store(&woke_at, now_ns());
    atomic_store(&woken_cpu, sched_getcpu());
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    int slow = 0;
    for (int r = 0; r < rounds; r++) {
        atomic_store(&go, 0);
        atomic_store(&woke_at, 0);
        pthread_t th;
        if (pthread_create(&th, NULL, sleeper, NULL) != 0)
            return 1;
        usleep(2000); /* let it block in the futex */
        long t0 = now_ns();
        atomic_store(&go, 1);
        syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        int waker_cpu = sched_getcpu();
        /* Stay busy (at most 20 ms), as a worker starting tasks would. */
        while (!atomic_load(&woke_at) && now_ns() - t0 < 20000000L)
            ;
        pthread_join(th, NULL);
        long us = (atomic_load(&woke_at) - t0) / 1000;
        slow += us > 1000;
        printf("woken after %6ld us (waker on CPU %d, woken on CPU %d)\n", us, waker_cpu,
               atomic_load(&woken_cpu));
    }
    printf("%d of %d wakes waited more than 1 ms\n", slow, rounds);
    return 0;
}
