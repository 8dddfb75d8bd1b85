/*
 * Definitions shared by every braid source file.  Nothing here is public:
 * the library is built with -fvisibility=hidden, so every non-static symbol
 * not marked BRAID_API stays inside it.  Cross-file internals are named
 * braid__*, file-local ones are static.
 */
#ifndef BRAID_INTERNAL_H
#define BRAID_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/* The library defines the functions the spawn-site macros stand for. */
#define BRAID_NO_SITE_MACROS
#include "braid.h"

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BRAID_LIKELY(x) __builtin_expect(!!(x), 1)
#define BRAID_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BRAID_CACHELINE 64
#define BRAID_ALIGNED_LINE alignas(BRAID_CACHELINE)

/* Thread-locals use the initial-exec model: no __tls_get_addr call, no
 * allocation, safe to read from a signal handler. */
#define BRAID_TLS __thread __attribute__((tls_model("initial-exec")))

#define BRAID_CONTAINER_OF(ptr, type, member)                                \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define BRAID_MIN(a, b) ((a) < (b) ? (a) : (b))
#define BRAID_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Relaxed atomics for single-writer counters read by other threads. */
#define braid__load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define braid__store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/* A full fence for Dekker-style handshakes (publish, fence, look).
 * ThreadSanitizer does not model fences, so under TSan both sides instead
 * do a sequentially consistent RMW on one shared word, through which they
 * synchronize in a way TSan understands. */
#if defined(__SANITIZE_THREAD__)
#define BRAID_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BRAID_TSAN 1
#endif
#endif
#ifdef BRAID_TSAN
extern _Atomic uint64_t braid__fence_word;
#define braid__fence() ((void)atomic_fetch_add_explicit(&braid__fence_word, 0, memory_order_seq_cst))
#else
#define braid__fence() atomic_thread_fence(memory_order_seq_cst)
#endif

typedef struct braid__task braid__task;
typedef struct braid__worker braid__worker;
typedef struct braid__rec braid__rec;
typedef struct braid__det braid__det;

/* A CPU hint for spin loops. */
static inline void braid__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Print "braid: <message>" on stderr without allocating and abort.  Only for
 * broken internal invariants, never for user errors. */
BRAID_NORETURN void braid__die(const char *msg);

/* Write a message to stderr with one write(2), preserving errno; usable in
 * any context (signal handlers included). */
void braid__write_stderr(const char *msg);

#endif /* BRAID_INTERNAL_H */
