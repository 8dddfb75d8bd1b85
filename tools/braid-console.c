/*
 * braid-console: a live view of a running braid program, like top(1).
 *
 * The program must run with its console enabled (BRAID_CONSOLE=/path or
 * braid_config.console_path): the runtime then answers on that Unix socket.
 * The protocol is line-based text, so that it can be read with socat and
 * parsed without a library: the client sends "snapshot\n" and the runtime
 * answers with tab-separated records ending in "end\n" (docs/design.md,
 * "Live console", lists the records).
 *
 *   braid-console [-i MS] [-s busy|wait|id] [-n COUNT] [--once] SOCKET
 *
 * Interactive keys: b, w, i sort by busy time, time in state, id; q quits.
 * Each worker's load is the share of the last interval (between this
 * snapshot and the previous one) it spent not parked; the first screen
 * has no interval yet and shows "-".
 * --once prints one snapshot as a plain table and exits (for scripts).
 * The console never writes to the program: it only reads snapshots, so
 * watching cannot disturb what is watched beyond the cost of a snapshot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIELDS 16

enum sort_key { SORT_BUSY, SORT_WAIT, SORT_ID };

struct task_row {
    uint64_t id;
    char *name, *state, *site;
    int worker;
    uint64_t state_ns, busy_ns, stack_bytes;
};

struct worker_row {
    char *index, *counters;     /* counters: tabs as spaces */
    uint64_t busy_ns;           /* not parked since the worker started */
};

struct snapshot {
    char *buf;                  /* the raw answer; the rows point into it */
    size_t len;
    char *runtime;              /* the "runtime" record, tabs as spaces */
    uint64_t now_ns;            /* the program's clock when it was read */
    struct worker_row *workers;
    size_t nworkers;
    char **warnings;
    size_t nwarnings;
    struct task_row *tasks;
    size_t ntasks;
};

static volatile sig_atomic_t stop;
static struct termios saved_tty;
static bool tty_raw;

static void on_signal(int signo)
{
    (void)signo;
    stop = 1;
}

static int connect_to(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "braid-console: socket path too long: %s\n", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "braid-console: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static bool ends_with_end(const char *buf, size_t len)
{
    return len >= 4 && memcmp(buf + len - 4, "end\n", 4) == 0 &&
           (len == 4 || buf[len - 5] == '\n');
}

/* Ask for one snapshot; returns the raw answer (NUL-terminated) or NULL. */
static char *fetch_snapshot(int fd, size_t *len)
{
    static const char req[] = "snapshot\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    while (!ends_with_end(buf, n)) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                break;
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    if (!ends_with_end(buf, n)) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static size_t split_tabs(char *line, char **f)
{
    size_t n = 0;
    for (char *p = line; n < MAX_FIELDS; ) {
        f[n++] = p;
        p = strchr(p, '\t');
        if (!p)
            break;
        *p++ = '\0';
    }
    return n;
}

static void detab(char *s)
{
    for (; *s; s++)
        if (*s == '\t')
            *s = ' ';
}

/* Take the field "key=value" out of a tab-separated record; its value
 * into *v.  Returns false if there is none. */
static bool take_field(char *line, const char *key, uint64_t *v)
{
    size_t k = strlen(key);
    for (char *p = strchr(line, '\t'); p; p = strchr(p + 1, '\t')) {
        if (strncmp(p + 1, key, k) != 0 || p[1 + k] != '=')
            continue;
        *v = strtoull(p + 2 + k, NULL, 10);
        char *next = strchr(p + 1, '\t');
        if (!next)
            next = p + strlen(p);
        memmove(p, next, strlen(next) + 1);
        return true;
    }
    return false;
}

static bool push(void *arrp, size_t *n, size_t elem)
{
    char **arr = arrp;
    void *na = realloc(*arr, (*n + 1) * elem);
    if (!na)
        return false;
    *arr = na;
    (*n)++;
    return true;
}

/* task <id> <name> <state> <worker> <state_ns> <busy_ns> <stack_bytes> <site> */
static bool parse_task(char *line, struct snapshot *s)
{
    char *f[MAX_FIELDS];
    if (split_tabs(line, f) < 9 || !push(&s->tasks, &s->ntasks, sizeof *s->tasks))
        return false;
    struct task_row *t = &s->tasks[s->ntasks - 1];
    t->id = strtoull(f[1], NULL, 10);
    t->name = f[2];
    t->state = f[3];
    t->worker = (int)strtol(f[4], NULL, 10);
    t->state_ns = strtoull(f[5], NULL, 10);
    t->busy_ns = strtoull(f[6], NULL, 10);
    t->stack_bytes = strtoull(f[7], NULL, 10);
    t->site = f[8];
    return true;
}

/* worker <index> polls=N ... busy_ns=N */
static bool parse_worker(char *line, struct snapshot *s)
{
    uint64_t busy;
    char *counters = strchr(line + 7, '\t');
    if (!counters || !take_field(line, "busy_ns", &busy) ||
        !push(&s->workers, &s->nworkers, sizeof *s->workers))
        return false;
    *counters++ = '\0';
    detab(counters);
    s->workers[s->nworkers - 1] = (struct worker_row){ line + 7, counters, busy };
    return true;
}

static bool parse_snapshot(char *buf, size_t len, struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->buf = buf;
    s->len = len;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "task\t", 5) == 0) {
            if (!parse_task(line, s))
                return false;
        } else if (strncmp(line, "worker\t", 7) == 0) {
            if (!parse_worker(line, s))
                return false;
        } else if (strncmp(line, "warn\t", 5) == 0) {
            if (!push(&s->warnings, &s->nwarnings, sizeof *s->warnings))
                return false;
            s->warnings[s->nwarnings - 1] = line + 5;
        } else if (strncmp(line, "runtime\t", 8) == 0) {
            if (!take_field(line, "now_ns", &s->now_ns))
                return false;
            detab(line);
            s->runtime = line + 8;
        }
    }
    return s->runtime != NULL;
}

/* The previous snapshot's clock and busy times: each worker's load is
 * measured between it and the current one. */
static struct {
    uint64_t now_ns;
    uint64_t *busy_ns;
    size_t n;
} prev;

static void remember(const struct snapshot *s)
{
    uint64_t *b = realloc(prev.busy_ns, (s->nworkers ? s->nworkers : 1) * sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < s->nworkers; i++)
        b[i] = s->workers[i].busy_ns;
    prev.busy_ns = b;
    prev.n = s->nworkers;
    prev.now_ns = s->now_ns;
}

/* Worker i's share of the interval since the previous snapshot spent not
 * parked, as "37%", or "-" without a previous snapshot. */
static void load_text(char *out, size_t cap, const struct snapshot *s, size_t i)
{
    if (i >= prev.n || s->now_ns <= prev.now_ns) {
        snprintf(out, cap, "-");
        return;
    }
    uint64_t busy = s->workers[i].busy_ns, was = prev.busy_ns[i];
    uint64_t pct = (busy > was ? busy - was : 0) * 100 / (s->now_ns - prev.now_ns);
    snprintf(out, cap, "%" PRIu64 "%%", pct > 100 ? 100 : pct); /* the clocks are read apart */
}

static void free_snapshot(struct snapshot *s)
{
    free(s->tasks);
    free(s->workers);
    free(s->warnings);
    free(s->buf);
}

static enum sort_key sort_by;

static int cmp_u64_desc(uint64_t a, uint64_t b)
{
    return a < b ? 1 : a > b ? -1 : 0;
}

static int cmp_rows(const void *pa, const void *pb)
{
    const struct task_row *a = pa, *b = pb;
    int c = 0;
    if (sort_by == SORT_BUSY)
        c = cmp_u64_desc(a->busy_ns, b->busy_ns);
    else if (sort_by == SORT_WAIT)
        c = cmp_u64_desc(a->state_ns, b->state_ns);
    return c ? c : a->id < b->id ? -1 : a->id > b->id;
}

static void fmt_duration(char *out, size_t cap, uint64_t ns)
{
    if (ns < 1000000)
        snprintf(out, cap, "%" PRIu64 "us", ns / 1000);
    else if (ns < 10000000000ull)
        snprintf(out, cap, "%" PRIu64 "ms", ns / 1000000);
    else
        snprintf(out, cap, "%" PRIu64 "s", ns / 1000000000);
}

static const char *sort_name(void)
{
    return sort_by == SORT_BUSY ? "busy" : sort_by == SORT_WAIT ? "in state" : "id";
}

/* The screen: the runtime line, one line per worker, warnings, then as
 * many tasks as fit in rows (0: all). */
static void render(FILE *out, struct snapshot *s, int rows, bool clear)
{
    if (clear)
        fputs("\033[H\033[2J", out);
    fprintf(out, "braid-console  runtime: %s\n", s->runtime);
    for (size_t i = 0; i < s->nworkers; i++) {
        char load[16], busy[16];
        load_text(load, sizeof load, s, i);
        fmt_duration(busy, sizeof busy, s->workers[i].busy_ns);
        fprintf(out, "  worker %s  load %4s  busy %6s  %s\n", s->workers[i].index, load, busy,
                s->workers[i].counters);
    }
    for (size_t i = 0; i < s->nwarnings; i++)
        fprintf(out, "  WARNING %s\n", s->warnings[i]);
    fprintf(out, "%zu tasks, sorted by %s (keys: b busy, w in state, i id, q quit)\n", s->ntasks,
            sort_name());
    fprintf(out, "%10s  %-20s %-28s %3s %9s %9s %8s  %s\n", "ID", "NAME", "STATE", "WRK",
            "IN STATE", "BUSY", "STACK", "SPAWNED AT");
    if (s->ntasks)
        qsort(s->tasks, s->ntasks, sizeof *s->tasks, cmp_rows);
    int used = (int)(s->nworkers + s->nwarnings) + 3;
    for (size_t i = 0; i < s->ntasks && (rows <= 0 || used < rows); i++, used++) {
        struct task_row *t = &s->tasks[i];
        char in_state[16], busy[16];
        fmt_duration(in_state, sizeof in_state, t->state_ns);
        fmt_duration(busy, sizeof busy, t->busy_ns);
        fprintf(out, "%10" PRIu64 "  %-20.20s %-28.28s %3d %9s %9s %7" PRIu64 "K  %s\n", t->id,
                t->name, t->state, t->worker, in_state, busy, t->stack_bytes / 1024, t->site);
    }
    fflush(out);
}

static void restore_tty(void)
{
    if (tty_raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
}

static void raw_tty(void)
{
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
        return;
    struct termios t = saved_tty;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
        tty_raw = true;
        atexit(restore_tty);
    }
}

static int screen_rows(void)
{
    struct winsize ws;
    return ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_row : 0;
}

/* Wait up to ms for a key; returns false on q. */
static bool handle_keys(int ms)
{
    if (!tty_raw) {
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
        return true;
    }
    struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
    if (poll(&p, 1, ms) <= 0 || !(p.revents & POLLIN))
        return true;
    char c;
    if (read(STDIN_FILENO, &c, 1) != 1)
        return true;
    switch (c) {
    case 'q': return false;
    case 'b': sort_by = SORT_BUSY; break;
    case 'w': sort_by = SORT_WAIT; break;
    case 'i': sort_by = SORT_ID; break;
    default: break;
    }
    return true;
}

static void usage(void)
{
    fputs("usage: braid-console [-i MS] [-s busy|wait|id] [-n COUNT] [--once] SOCKET\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    int interval = 1000, count = -1;
    bool once = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0)
            once = true;
        else if (strcmp(argv[i], "-i") == 0 && i + 1 < argc)
            interval = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            const char *k = argv[++i];
            sort_by = k[0] == 'w' ? SORT_WAIT : k[0] == 'i' ? SORT_ID : SORT_BUSY;
        } else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            usage();
    }
    if (!path)
        usage();
    if (interval < 50)
        interval = 50;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    /* A whole screen per write: a terminal (or tmux) never shows half of
     * one. */
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);

    int fd = connect_to(path);
    if (fd < 0)
        return 1;
    if (!once)
        raw_tty();
    for (int n = 0; !stop && (count < 0 || n < count); n++) {
        size_t len;
        char *buf = fetch_snapshot(fd, &len);
        struct snapshot s;
        if (!buf) {
            fprintf(stderr, "braid-console: the program closed the console\n");
            close(fd);
            return 1;
        }
        if (strncmp(buf, "braid-console 2\n", 16) != 0) {
            fprintf(stderr, "braid-console: the program speaks another version of the "
                            "protocol: %.*s\n", (int)strcspn(buf, "\n"), buf);
            free(buf);
            close(fd);
            return 1;
        }
        if (!parse_snapshot(buf, len, &s)) {
            fprintf(stderr, "braid-console: malformed snapshot\n");
            free_snapshot(&s);
            close(fd);
            return 1;
        }
        render(stdout, &s, once ? 0 : screen_rows(), !once);
        remember(&s);
        free_snapshot(&s);
        if (once || !handle_keys(interval))
            break;
    }
    close(fd);
    return 0;
}
