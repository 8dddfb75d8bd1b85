/*
 * runone: run one benchmark process for bench/compare/run.sh and report what
 * the harness needs to know about it from the outside, the same way for
 * every runtime:
 *
 *     runone REPORT TIMEOUT_S CMD [ARG ...]
 *
 * runs CMD in its own process group (stdout and stderr are inherited),
 * kills the whole group with SIGKILL if it is still running after
 * TIMEOUT_S seconds (0: no limit), and then writes one line to the file
 * REPORT:
 *
 *     status=<exit code, or 128+signal> timeout=<0|1> maxrss_kb=<k> cpu_ms=<c> real_ms=<r>
 *
 * maxrss_kb is the peak resident set of the process (ru_maxrss of wait4;
 * the same figure as VmHWM, but taken by the parent, so that it also works
 * for binaries that do not print it, such as statically linked Go ones);
 * cpu_ms is its user + system time including the children it waited for.
 * Exits with CMD's status.
 *
 *     cc -O2 -Wall -Wextra bench/compare/runone.c -o build/compare/runone
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t expired, interrupted;

static void on_alarm(int sig)
{
    (void)sig;
    expired = 1;
}

/* The child runs in its own process group, so a ^C reaches only us: pass
 * it on by killing the group, then report as usual. */
static void on_interrupt(int sig)
{
    interrupted = sig;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s REPORT TIMEOUT_S CMD [ARG ...]\n", argv[0]);
        return 2;
    }
    const char *report = argv[1];
    unsigned timeout_s = (unsigned)strtoul(argv[2], NULL, 10);

    double t0 = now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        perror("runone: fork");
        return 2;
    }
    if (pid == 0) {
        setpgid(0, 0);
        execvp(argv[3], argv + 3);
        perror("runone: exec");
        _exit(127);
    }
    setpgid(pid, pid);

    struct sigaction sa = { .sa_handler = on_alarm };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: wait4 returns EINTR */
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (timeout_s)
        alarm(timeout_s);

    int st = 0, killed = 0;
    struct rusage ru = { 0 };
    for (;;) {
        pid_t r = wait4(pid, &st, 0, &ru);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            perror("runone: wait4");
            return 2;
        }
        if (expired && !killed) {
            fprintf(stderr, "runone: %s still running after %u s, killed\n", argv[3], timeout_s);
            kill(-pid, SIGKILL);
            killed = 1;
        }
        if (interrupted)
            kill(-pid, SIGKILL);
    }
    double t1 = now_ms();
    /* anything left in the group (wrk, if the server died) */
    kill(-pid, SIGKILL);

    int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    double cpu = ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 +
                 ru.ru_stime.tv_usec / 1e3;
    FILE *f = fopen(report, "w");
    if (!f) {
        perror(report);
        return 2;
    }
    fprintf(f, "status=%d timeout=%d maxrss_kb=%ld cpu_ms=%.0f real_ms=%.0f\n", status, killed,
            ru.ru_maxrss, cpu, t1 - t0);
    fclose(f);
    if (interrupted) {
        signal(interrupted, SIG_DFL);
        raise(interrupted);
    }
    return status;
}
