/*
 * Small OS helpers: time, futexes, mutexes, CPU counting.  The futex calls use the
 * raw syscall instruction path through syscall(2) but restore errno, so
 * that no braid function ever changes errno.
 */
#ifndef BRAID_UTIL_H
#define BRAID_UTIL_H

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

uint64_t braid__now_ns(void);

/* errno = v, on the calling thread for sure.  glibc declares errno's
 * address function const, so the compiler may reuse an address it computed
 * before a call; after a call that suspended a task that migrates
 * (braid_config.migrate), that is another thread's errno. */
void braid__errno_set(int v);

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

/* ---- fault injection ------------------------------------------------------
 * Built with -DBRAID_FAULT_INJECTION (the build/faultinj flavour, for
 * tests/test_faultinj.c), every call braid makes that can fail for want of
 * resources goes through BRAID_FAULT(site) first; a test arms "fail the Nth
 * call of site S" and checks that every public function returns a clean
 * error.  In every other build BRAID_FAULT(site) is the constant false. */
enum braid__fault_site {
    BRAID__FAULT_ALLOC,  /* malloc, calloc, realloc, aligned_alloc, strdup */
    BRAID__FAULT_MMAP,   /* mmap (stacks, task records, symbol files) */
    BRAID__FAULT_THREAD, /* pthread_create (workers, the blocking pool, ...) */
    BRAID__FAULT_POLL,   /* epoll_create1, eventfd */
    BRAID__FAULT_ACCEPT, /* accept4 */
    BRAID__FAULT_FD,     /* socket, pipe2 */
    BRAID__FAULT_NSITES
};

#ifdef BRAID_FAULT_INJECTION
/* Whether this call at site should fail (counts the call). */
bool braid__fault(enum braid__fault_site site);
/* Test-only: reset every count, and arm the nth call (from 1) of site to
 * fail (n == 0: none).  Not thread-safe against calls in progress. */
void braid__fault_arm(enum braid__fault_site site, unsigned long n);
/* Test-only: the calls site has seen since the last arm, and whether the
 * armed failure happened. */
unsigned long braid__fault_calls(enum braid__fault_site site);
bool braid__fault_fired(void);
#define BRAID_FAULT(site) braid__fault(BRAID__FAULT_##site)
#else
#define BRAID_FAULT(site) false
#endif

/* malloc and friends, through the ALLOC fault site. */
static inline void *braid__malloc(size_t n)
{
    if (BRAID_FAULT(ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(n);
}

static inline void *braid__calloc(size_t n, size_t size)
{
    if (BRAID_FAULT(ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return calloc(n, size);
}

static inline void *braid__realloc(void *p, size_t n)
{
    if (BRAID_FAULT(ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}

static inline void *braid__aligned_alloc(size_t align, size_t n)
{
    if (BRAID_FAULT(ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return aligned_alloc(align, n);
}

static inline char *braid__strdup(const char *s)
{
    if (BRAID_FAULT(ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return strdup(s);
}

/* mmap through the MMAP fault site. */
static inline void *braid__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (BRAID_FAULT(MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return mmap(addr, len, prot, flags, fd, off);
}

/* New descriptors, through the POLL, ACCEPT and FD fault sites: each
 * returns what the call it wraps returns, -1 with errno set on failure
 * (an injected one is EMFILE, out of descriptors). */
static inline int braid__epoll_create1(int flags)
{
    if (BRAID_FAULT(POLL)) {
        errno = EMFILE;
        return -1;
    }
    return epoll_create1(flags);
}

static inline int braid__eventfd(unsigned initval, int flags)
{
    if (BRAID_FAULT(POLL)) {
        errno = EMFILE;
        return -1;
    }
    return eventfd(initval, flags);
}

static inline int braid__accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    if (BRAID_FAULT(ACCEPT)) {
        errno = EMFILE;
        return -1;
    }
    return accept4(fd, addr, len, flags);
}

static inline int braid__socket(int domain, int type, int protocol)
{
    if (BRAID_FAULT(FD)) {
        errno = EMFILE;
        return -1;
    }
    return socket(domain, type, protocol);
}

static inline int braid__pipe2(int fds[2], int flags)
{
    if (BRAID_FAULT(FD)) {
        errno = EMFILE;
        return -1;
    }
    return pipe2(fds, flags);
}

/* pthread_create through the THREAD fault site (returns an error number). */
static inline int braid__pthread_create(pthread_t *t, const pthread_attr_t *attr,
                                        void *(*fn)(void *), void *arg)
{
    if (BRAID_FAULT(THREAD))
        return EAGAIN;
    return pthread_create(t, attr, fn, arg);
}

/* Remove the Unix socket file at path if no server listens on it any
 * more.  0 (removed, or no such file), -EADDRINUSE (a live server), -EEXIST
 * (not a socket), or another negative errno value.  Preserves nothing: the
 * caller saves errno. */
int braid__unlink_stale_socket(const char *path);

#endif
