/*
 * Small OS helpers: time, futexes, mutexes, CPU counting.  The futex calls use the
 * raw syscall instruction path through syscall(2) but restore errno, so
 * that no braid function ever changes errno.
 */
#ifndef BRAID_UTIL_H
#define BRAID_UTIL_H

#include "internal.h"

#include <pthread.h>

uint64_t braid__now_ns(void);

/* Wait while *word == expected, until woken or until the absolute
 * CLOCK_MONOTONIC deadline (0: no deadline).  Spurious returns happen. */
void braid__futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns);

/* Wake up to n waiters of word. */
void braid__futex_wake(_Atomic uint32_t *word, int n);

/* The number of CPUs this process may use: the affinity mask, lowered by a
 * cgroup CPU quota (v2 cpu.max or v1 cfs_quota_us), at least 1. */
unsigned braid__usable_cpus(void);

/* The system page size, cached. */
size_t braid__page_size(void);

/* Initialise a mutex for braid's own short critical sections (a few
 * stores): glibc's adaptive type spins briefly before it sleeps in the
 * kernel, since a futex sleep and wake cost far more than the wait.  With
 * the injection queue's lock, this took spawn_many_remote from 103-106 to
 * 79-82 ns per task (BENCHMARKS.md). */
void braid__mutex_init(pthread_mutex_t *m);

#endif
