#include "util.h"
#include "handle.h"
#include "observe.h"

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

uint64_t braid__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Called through a volatile pointer: the compiler can neither reuse a
 * result nor see that it is the const __errno_location. */
static int *(*volatile errno_location)(void) = __errno_location;

void braid__errno_set(int v)
{
    *errno_location() = v;
}

void braid__futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
    int saved = errno;
#ifdef BRAID_TSAN
    /* TSan runs a signal handler on a thread blocked in a system call only
     * if it intercepts that call, and it does not intercept syscall(): a
     * signal caught by braid_signal_catch() that lands on a thread parked
     * here, such as SIGINT on the main thread inside braid_run(), would
     * wait until the thread wakes for another reason.  So under TSan a
     * park lasts at most 10 ms and ends with an intercepted blocking call,
     * usleep(0), which runs pending handlers (callers take the return as
     * spurious). */
    uint64_t slice_end = braid__now_ns() + 10000000u;
    if (!deadline_ns || deadline_ns > slice_end)
        deadline_ns = slice_end;
#endif
    struct timespec ts, *tsp = NULL;
    if (deadline_ns) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
        ts.tv_nsec = (long)(deadline_ns % 1000000000u);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
     * retried wait never stretches the timeout. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
            NULL, FUTEX_BITSET_MATCH_ANY);
#ifdef BRAID_TSAN
    usleep(0);
#endif
    errno = saved;
}

void braid__futex_wake(_Atomic uint32_t *word, int n)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
    errno = saved;
}

size_t braid__page_size(void)
{
    static _Atomic size_t cached;
    size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&cached, p, memory_order_relaxed);
    }
    return p;
}

void braid__mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
}

/* Read the first line of a file into buf; false if it cannot be read. */
static bool read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    return ok;
}

/* The non-negative decimal number at s (strtoll: leading blanks are
 * skipped); -1 if there is none or it overflows.  *end: where it stops. */
static long long leading_number(const char *s, char **end)
{
    long long v = strtoll(s, end, 10);
    return *end == s || v < 0 || v == LLONG_MAX ? -1 : v;
}

/* Whether the comma-separated controller list [p, end) names "cpu". */
static bool lists_cpu(const char *p, const char *end)
{
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        if (stop - p == 3 && memcmp(p, "cpu", 3) == 0)
            return true;
        p = stop + 1;
    }
    return false;
}

/* The CPU limit a cgroup quota imposes, rounded up; 0 if none. */
static unsigned cgroup_cpu_limit(void)
{
    char line[512], path[600], buf[128];
    unsigned limit = 0;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        /* "hierarchy-id:controllers:path"; v2 has an empty controller list. */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        char *cg = c2 + 1;
        cg[strcspn(cg, "\n")] = 0;
        long long quota = -1, period = 0;
        char *end;
        if (c2 == c1 + 1) {
            /* "QUOTA PERIOD", or "max PERIOD" for no limit */
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", cg);
            if (read_line(path, buf, sizeof buf)) {
                quota = leading_number(buf, &end);
                if (quota > 0 && *end == ' ')
                    period = leading_number(end, &end);
            }
        } else if (lists_cpu(c1 + 1, c2)) {
            /* v1: the controllers' field names cpu (the path may hold
             * anything, "cpu," included) */
            snprintf(path, sizeof path, "/sys/fs/cgroup/cpu,cpuacct%s/cpu.cfs_quota_us", cg);
            if (read_line(path, buf, sizeof buf))
                quota = leading_number(buf, &end);
            snprintf(path, sizeof path, "/sys/fs/cgroup/cpu,cpuacct%s/cpu.cfs_period_us", cg);
            if (read_line(path, buf, sizeof buf))
                period = leading_number(buf, &end);
        }
        if (quota > 0 && period > 0) {
            unsigned n = (unsigned)((quota + period - 1) / period);
            if (!limit || n < limit)
                limit = n;
        }
    }
    fclose(f);
    return limit;
}

unsigned braid__usable_cpus(void)
{
    int saved = errno;
    unsigned n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    if (!n) {
        long v = sysconf(_SC_NPROCESSORS_ONLN);
        n = v > 0 ? (unsigned)v : 1;
    }
    unsigned q = cgroup_cpu_limit();
    if (q && q < n)
        n = q;
    errno = saved;
    return n ? n : 1;
}

void braid__write_stderr(const char *msg)
{
    int saved = errno;
    size_t len = strlen(msg);
    while (len) {
        ssize_t n = write(STDERR_FILENO, msg, len);
        if (n <= 0)
            break;
        msg += n;
        len -= (size_t)n;
    }
    errno = saved;
}

void braid__die(const char *msg)
{
    braid__write_stderr("braid: internal error: ");
    braid__write_stderr(msg);
    braid__write_stderr("\n");
    abort();
}

/* A plain thread polls a little before sleeping in the kernel.  (Longer
 * spins were measured to hurt on two CPUs: the spinner takes a CPU from
 * the workers that would finish the task it waits for.) */
#define WAITER_POLLS 64

bool braid__waiter_block_until(braid__waiter *w, uint64_t deadline_ns)
{
    for (int i = 0; i < WAITER_POLLS; i++) {
        if (atomic_load_explicit(&w->done, memory_order_acquire) == 1)
            return true;
        braid__cpu_relax();
    }
    uint32_t expect = 0;
    if (atomic_compare_exchange_strong_explicit(&w->done, &expect, 2, memory_order_acq_rel,
                                                memory_order_acquire) ||
        expect == 2) {
        bool forever = deadline_ns == BRAID_FOREVER;
        if (forever)
            atomic_fetch_add_explicit(&braid__obs_blocked_threads, 1, memory_order_seq_cst);
        while (atomic_load_explicit(&w->done, memory_order_acquire) != 1) {
            if (!forever && braid__now_ns() >= deadline_ns)
                return false;
            braid__futex_wait(&w->done, 2, forever ? 0 : deadline_ns);
        }
        if (forever)
            atomic_fetch_sub_explicit(&braid__obs_blocked_threads, 1, memory_order_seq_cst);
    }
    return true;
}

void braid__waiter_signal(braid__waiter *w)
{
    if (atomic_exchange_explicit(&w->done, 1, memory_order_acq_rel) == 2)
        braid__futex_wake(&w->done, 1);
}

#ifdef BRAID_FAULT_INJECTION
/* Counts since the last arm, per site; the armed site and call number. */
static _Atomic unsigned long fault_calls[BRAID__FAULT_NSITES];
static _Atomic int fault_site = -1;
static _Atomic unsigned long fault_nth;
static atomic_bool fault_has_fired;

bool braid__fault(enum braid__fault_site site)
{
    unsigned long n = atomic_fetch_add(&fault_calls[site], 1) + 1;
    if ((int)site == atomic_load(&fault_site) && n == atomic_load(&fault_nth)) {
        atomic_store(&fault_has_fired, true);
        return true;
    }
    return false;
}

void braid__fault_arm(enum braid__fault_site site, unsigned long n)
{
    atomic_store(&fault_site, -1);
    for (int i = 0; i < BRAID__FAULT_NSITES; i++)
        atomic_store(&fault_calls[i], 0);
    atomic_store(&fault_has_fired, false);
    atomic_store(&fault_nth, n);
    atomic_store(&fault_site, n ? (int)site : -1);
}

unsigned long braid__fault_calls(enum braid__fault_site site)
{
    return atomic_load(&fault_calls[site]);
}

bool braid__fault_fired(void)
{
    return atomic_load(&fault_has_fired);
}
#endif

/* Connecting tells a dead server's file (ECONNREFUSED) from a live one.
 * Every other outcome counts as live: EAGAIN (a full backlog: the socket
 * is non-blocking so that it cannot stall the caller), EPROTOTYPE (a live
 * datagram socket), EACCES (we cannot tell). */
int braid__unlink_stale_socket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len + 1);
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = braid__socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int rc = -EADDRINUSE;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == ECONNREFUSED)
        rc = 0;
    close(fd);
    if (rc == 0 && unlink(path) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}
