/*
 * vmhwm.so: LD_PRELOAD it into a benchmark binary that does not report its
 * own peak memory (build/braid-bench), and it prints "rss_kb=<VmHWM>" on
 * stderr when the process exits normally.  It removes itself from the
 * environment at start, so children (wrk) do not load it.
 *
 *     cc -O2 -shared -fPIC vmhwm.c -o vmhwm.so
 *     LD_PRELOAD=./vmhwm.so build/braid-bench http_hello 18080
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void vmhwm_init(void)
{
    unsetenv("LD_PRELOAD");
}

__attribute__((destructor)) static void vmhwm_report(void)
{
    char buf[4096], out[64];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    char *p = strstr(buf, "VmHWM:");
    if (!p)
        return;
    int len = snprintf(out, sizeof out, "rss_kb=%ld\n", strtol(p + 6, NULL, 10));
    if (write(2, out, (size_t)len) < 0)
        return;
}
