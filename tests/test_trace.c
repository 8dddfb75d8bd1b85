/*
 * The execution trace (braid_config.trace_path, BRAID_TRACE): the file is
 * valid JSON and holds the events of a known workload, in order.  A small
 * JSON parser below checks the syntax of the whole file and hands each
 * element of traceEvents to the test (its ph, cat, name, pid, tid, ts,
 * dur and args.task/args.by).
 */
#include "test.h"

#include <ctype.h>
#include <sched.h>

/* ---- a JSON checker ------------------------------------------------------ */

typedef struct jev {
    char ph[4];
    char cat[16];
    char name[96];
    long long pid, tid, task, by;
    long long ts, dur;       /* nanoseconds (the file has microseconds); -1: none */
} jev;

typedef struct jparse {
    const char *p;
    int depth;               /* of the value being parsed */
    bool in_events;          /* inside the traceEvents array */
    jev cur;                 /* the event object being parsed (depth 2) */
    const char *key;         /* the last key read, at depths 2 and 3 */
    char keybuf[32];
    bool in_args;
    void (*on_event)(const jev *e, void *arg);
    void *arg;
    long long dropped;       /* otherData.dropped_events */
} jparse;

static bool jvalue(jparse *j);

static void jws(jparse *j)
{
    while (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')
        j->p++;
}

/* A string; its decoded ASCII (escapes kept as '?') into out if not NULL. */
static bool jstring(jparse *j, char *out, size_t n)
{
    if (*j->p != '"')
        return false;
    j->p++;
    size_t k = 0;
    for (;;) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"')
            break;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            j->p++;
            if (*j->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)j->p[i]))
                        return false;
                j->p += 4;
                c = '?';
            } else if (strchr("\"\\/bfnrt", *j->p) && *j->p) {
                c = (unsigned char)*j->p;
            } else {
                return false;
            }
        } else if (c >= 0x80) {
            /* UTF-8: a lead byte and its continuation bytes. */
            int len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
            if (!len)
                return false;
            for (int i = 1; i < len; i++)
                if (((unsigned char)j->p[i] & 0xc0) != 0x80)
                    return false;
            j->p += len - 1;
            c = '?';
        }
        if (out && k + 1 < n)
            out[k++] = (char)c;
        j->p++;
    }
    if (out)
        out[k] = 0;
    j->p++;
    return true;
}

static bool jnumber(jparse *j, long long *out)
{
    const char *s = j->p;
    if (*j->p == '-')
        j->p++;
    if (!isdigit((unsigned char)*j->p))
        return false;
    if (*j->p == '0' && isdigit((unsigned char)j->p[1]))
        return false;
    while (isdigit((unsigned char)*j->p))
        j->p++;
    if (*j->p == '.') {
        j->p++;
        if (!isdigit((unsigned char)*j->p))
            return false;
        while (isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (*j->p == 'e' || *j->p == 'E') {
        j->p++;
        if (*j->p == '+' || *j->p == '-')
            j->p++;
        if (!isdigit((unsigned char)*j->p))
            return false;
        while (isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (out)
        *out = strtoll(s, NULL, 10);
    return true;
}

/* A time in microseconds with up to three decimals, as nanoseconds. */
static bool jtime(jparse *j, long long *ns)
{
    const char *s = j->p;
    if (!jnumber(j, NULL) || *s == '-')
        return false;
    char *end;
    long long us = strtoll(s, &end, 10), frac = 0;
    int digits = 0;
    if (*end == '.')
        for (end++; isdigit((unsigned char)*end) && digits < 3; end++, digits++)
            frac = frac * 10 + (*end - '0');
    for (; digits < 3; digits++)
        frac *= 10;
    *ns = us * 1000 + frac;
    return true;
}

static bool jobject(jparse *j)
{
    j->p++;
    jws(j);
    if (*j->p == '}') {
        j->p++;
        return true;
    }
    for (;;) {
        char key[32];
        jws(j);
        if (!jstring(j, key, sizeof key))
            return false;
        jws(j);
        if (*j->p++ != ':')
            return false;
        jws(j);
        bool event = j->in_events && j->depth == 2;
        bool args = j->in_events && j->depth == 3 && j->in_args;
        bool top = j->depth == 0;
        bool other = j->depth == 1 && !j->in_events && strcmp(j->keybuf, "otherData") == 0;
        if (event && strcmp(key, "ph") == 0) {
            if (!jstring(j, j->cur.ph, sizeof j->cur.ph))
                return false;
        } else if (event && strcmp(key, "name") == 0) {
            if (!jstring(j, j->cur.name, sizeof j->cur.name))
                return false;
        } else if (event && strcmp(key, "cat") == 0) {
            if (!jstring(j, j->cur.cat, sizeof j->cur.cat))
                return false;
        } else if (event && strcmp(key, "pid") == 0) {
            if (!jnumber(j, &j->cur.pid))
                return false;
        } else if (event && strcmp(key, "tid") == 0) {
            if (!jnumber(j, &j->cur.tid))
                return false;
        } else if (event && strcmp(key, "ts") == 0) {
            if (!jtime(j, &j->cur.ts))
                return false;
        } else if (event && strcmp(key, "dur") == 0) {
            if (!jtime(j, &j->cur.dur))
                return false;
        } else if (args && strcmp(key, "task") == 0) {
            if (!jnumber(j, &j->cur.task))
                return false;
        } else if (args && strcmp(key, "by") == 0) {
            if (!jnumber(j, &j->cur.by))
                return false;
        } else if (other && strcmp(key, "dropped_events") == 0) {
            if (!jnumber(j, &j->dropped))
                return false;
        } else {
            if (top || event)
                snprintf(j->keybuf, sizeof j->keybuf, "%s", key);
            bool was_events = j->in_events;
            if (top && strcmp(key, "traceEvents") == 0)
                j->in_events = true;
            if (event && strcmp(key, "args") == 0)
                j->in_args = true;
            j->depth++;
            bool ok = jvalue(j);
            j->depth--;
            j->in_events = was_events;
            j->in_args = false;
            if (!ok)
                return false;
        }
        jws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p++ != '}')
            return false;
        return true;
    }
}

static bool jarray(jparse *j)
{
    j->p++;
    jws(j);
    if (*j->p == ']') {
        j->p++;
        return true;
    }
    for (;;) {
        jws(j);
        bool event = j->in_events && j->depth == 1;
        if (event) {
            memset(&j->cur, 0, sizeof j->cur);
            j->cur.ts = j->cur.dur = -1;
        }
        j->depth++;
        bool ok = jvalue(j);
        j->depth--;
        if (!ok)
            return false;
        if (event && j->on_event)
            j->on_event(&j->cur, j->arg);
        jws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        return *j->p++ == ']';
    }
}

static bool jvalue(jparse *j)
{
    jws(j);
    switch (*j->p) {
    case '{': return jobject(j);
    case '[': return jarray(j);
    case '"': return jstring(j, NULL, 0);
    case 't': return strncmp(j->p, "true", 4) == 0 && (j->p += 4);
    case 'f': return strncmp(j->p, "false", 5) == 0 && (j->p += 5);
    case 'n': return strncmp(j->p, "null", 4) == 0 && (j->p += 4);
    default: return jnumber(j, NULL);
    }
}

static char *slurp(const char *path)
{
    char *s = test_read_file(path);
    if (!s)
        TEST_FAIL("cannot open %s: %s", path, strerror(errno));
    return s;
}

/* Parse path as JSON (failing the test if it is not), calling on_event for
 * each trace event; returns otherData.dropped_events. */
static long long check_json(const char *path, void (*on_event)(const jev *, void *), void *arg)
{
    char *s = slurp(path);
    jparse j = { .p = s, .on_event = on_event, .arg = arg, .dropped = -1 };
    if (*j.p != '{' || !jvalue(&j))
        TEST_FAIL("%s: not valid JSON near byte %ld: %.40s", path, (long)(j.p - s), j.p);
    jws(&j);
    if (*j.p)
        TEST_FAIL("%s: text after the JSON value", path);
    free(s);
    return j.dropped;
}

TEST(json_checker_rejects)
{
    /* The checker itself: what it must refuse and accept. */
    const char *bad[] = { "{", "{\"a\":}", "{\"a\":[1,]}", "{\"a\":01}", "{\"a\":\"\x01\"}",
                          "{\"a\":\"\\x\"}", "{\"a\":1 \"b\":2}", "{\"a\":\"\xff\"}" };
    const char *good[] = { "{}", "{\"a\":[1,-2.5e3,{\"b\":null}],\"c\":\"\\u00e9\xc3\xa9\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        jparse j = { .p = bad[i] };
        bool ok = jvalue(&j);
        jws(&j);
        CHECK(!ok || *j.p);
    }
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        jparse j = { .p = good[i] };
        CHECK(jvalue(&j));
        jws(&j);
        CHECK(!*j.p);
    }
}

/* ---- the workload ------------------------------------------------------------ */

#define NCHILD 40

static atomic_int stolen_ran, sleeper_started;
static atomic_int stolen_worker = -1, spinner_worker = -1;

static void *child(void *arg)
{
    braid_yield();
    return arg;
}

static void *panicker(void *arg)
{
    (void)arg;
    braid_panic("traced panic");
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    atomic_store(&sleeper_started, 1);
    braid_sleep_ms(600000);
    return NULL;
}

/* Holds worker 0 (without suspending) until the other task has run: that
 * one can only have been stolen. */
static void *spinner(void *arg)
{
    (void)arg;
    atomic_store(&spinner_worker, braid_worker_index());
    uint64_t give_up = test_now_ms() + 60000;
    while (!atomic_load(&stolen_ran)) {
        if (test_now_ms() > give_up)
            TEST_FAIL("the second worker never stole the waiting task");
        sched_yield();
    }
    return NULL;
}

static void *stolen(void *arg)
{
    (void)arg;
    atomic_store(&stolen_worker, braid_worker_index());
    atomic_store(&stolen_ran, 1);
    return NULL;
}

static void *workload(void *arg)
{
    unsigned workers = (unsigned)(uintptr_t)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "child";
    braid_task h[NCHILD];
    for (int i = 0; i < NCHILD; i++)
        CHECK_EQ(braid_spawn_ex(&h[i], &o, child, NULL), 0);
    for (int i = 0; i < NCHILD; i++)
        CHECK_EQ(braid_join(h[i], NULL), BRAID_OK);

    braid_task p, s;
    o.name = "panicker";
    CHECK_EQ(braid_spawn_ex(&p, &o, panicker, NULL), 0);
    CHECK_EQ(braid_join(p, NULL), BRAID_PANICKED);
    o.name = "sleeper";
    CHECK_EQ(braid_spawn_ex(&s, &o, sleeper, NULL), 0);
    while (!atomic_load(&sleeper_started))
        braid_yield();
    CHECK_EQ(braid_cancel(s), 0);
    CHECK_EQ(braid_join(s, NULL), BRAID_CANCELLED);

    if (workers == 2) {
        braid_task a, b;
        o.name = "spinner";
        CHECK_EQ(braid_spawn_ex(&a, &o, spinner, NULL), 0);
        o.name = "stolen";
        CHECK_EQ(braid_spawn_ex(&b, &o, stolen, NULL), 0);
        /* The spinner holds its worker until the other task has run, so
         * the two ran on different workers: one of them was stolen (both
         * were queued on this worker, and started tasks never move). */
        CHECK_EQ(braid_join(a, NULL), BRAID_OK);
        CHECK_EQ(braid_join(b, NULL), BRAID_OK);
        CHECK(atomic_load(&stolen_worker) != atomic_load(&spinner_worker));
    }
    return NULL;
}

struct counts {
    int spawn, completed, panicked, cancelled, cancel_req, steal, wake_by_task, child_slices;
    int flow_starts, flow_ends;
    int parked, wait_sleep, wait_join, wait_recv; /* slices */
};

static void count_event(const jev *e, void *arg)
{
    struct counts *c = arg;
    if (strcmp(e->ph, "i") == 0) {
        if (strncmp(e->name, "spawn task ", 11) == 0)
            c->spawn++;
        else if (strcmp(e->name, "completed") == 0)
            c->completed++;
        else if (strcmp(e->name, "panicked") == 0)
            c->panicked++;
        else if (strcmp(e->name, "cancelled") == 0)
            c->cancelled++;
        else if (strncmp(e->name, "cancel task ", 12) == 0)
            c->cancel_req++;
        else if (strncmp(e->name, "steal from w", 12) == 0)
            c->steal++;
        else if (strncmp(e->name, "wake task ", 10) == 0 && e->by > 0)
            c->wake_by_task++;
    } else if (strcmp(e->ph, "s") == 0) {
        c->flow_starts++;
    } else if (strcmp(e->ph, "f") == 0) {
        c->flow_ends++;
    } else if (strcmp(e->ph, "X") == 0) {
        if (strncmp(e->name, "task ", 5) == 0 && strstr(e->name, " child"))
            c->child_slices++;
        else if (strcmp(e->cat, "park") == 0 && strcmp(e->name, "parked") == 0)
            c->parked++;
        else if (strcmp(e->cat, "task") == 0 && strcmp(e->name, "waiting: sleep") == 0)
            c->wait_sleep++;
        else if (strcmp(e->cat, "task") == 0 && strcmp(e->name, "waiting: join") == 0)
            c->wait_join++;
        else if (strcmp(e->cat, "task") == 0 && strcmp(e->name, "waiting: channel receive") == 0)
            c->wait_recv++;
    }
}

/* ---- order ------------------------------------------------------------------- */

/* Every event of a file, for the checks that relate events to each other. */
struct evlist {
    jev *e;
    size_t n, cap;
};

static void collect_event(const jev *e, void *arg)
{
    struct evlist *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->e = realloc(l->e, l->cap * sizeof *l->e);
        CHECK(l->e != NULL);
    }
    l->e[l->n++] = *e;
}

/* On each track (a worker's thread, a task's states) the slices follow
 * one another without overlapping, and the instants come in time order.
 * (A slice is written when it ends, so slices and instants interleave in
 * the file.) */
static void check_tracks(const struct evlist *l)
{
    struct track {
        long long pid, tid, slice_end, instant;
    } *tr = calloc(l->n + 1, sizeof *tr);
    CHECK(tr != NULL);
    size_t ntr = 0;
    for (size_t i = 0; i < l->n; i++) {
        const jev *e = &l->e[i];
        bool slice = strcmp(e->ph, "X") == 0;
        if (!slice && strcmp(e->ph, "i") != 0)
            continue;
        CHECK(e->ts >= 0);
        struct track *t = NULL;
        for (size_t k = 0; k < ntr && !t; k++)
            if (tr[k].pid == e->pid && tr[k].tid == e->tid)
                t = &tr[k];
        if (!t) {
            t = &tr[ntr++];
            *t = (struct track){ e->pid, e->tid, 0, 0 };
        }
        if (slice) {
            CHECK(e->dur >= 0);
            if (e->ts < t->slice_end)
                TEST_FAIL("track %lld/%lld: \"%s\" begins at %lld ns, before the slice "
                          "before it ends (%lld ns)", e->pid, e->tid, e->name, e->ts, t->slice_end);
            t->slice_end = e->ts + e->dur;
        } else {
            if (e->ts < t->instant)
                TEST_FAIL("track %lld/%lld: \"%s\" at %lld ns comes after an instant at %lld ns",
                          e->pid, e->tid, e->name, e->ts, t->instant);
            t->instant = e->ts;
        }
    }
    free(tr);
}

static bool is_fate(const char *name)
{
    return strcmp(name, "completed") == 0 || strcmp(name, "panicked") == 0 ||
           strcmp(name, "cancelled") == 0 || strstr(name, " (never ran)") != NULL;
}

/* Each task's life in order: spawned, then first run, then its end (the
 * fate on its own track); a task that never ran, spawned then ended.
 * Returns how many tasks the trace shows. */
static int check_lives(const struct evlist *l)
{
    struct life {
        long long id, spawn, start, end;
    } *lives = calloc(l->n + 1, sizeof *lives);
    CHECK(lives != NULL);
    int n = 0;
    for (size_t i = 0; i < l->n; i++) {
        const jev *e = &l->e[i];
        long long *at = NULL;
        struct life *f = NULL;
        bool spawn = strcmp(e->ph, "i") == 0 && strncmp(e->name, "spawn task ", 11) == 0;
        bool run = strcmp(e->ph, "X") == 0 && strcmp(e->cat, "run") == 0;
        bool end = strcmp(e->ph, "i") == 0 && is_fate(e->name);
        if (!spawn && !run && !end)
            continue;
        CHECK(e->task > 0);
        for (int k = 0; k < n && !f; k++)
            if (lives[k].id == e->task)
                f = &lives[k];
        if (!f) {
            f = &lives[n++];
            *f = (struct life){ e->task, -1, -1, -1 };
        }
        at = spawn ? &f->spawn : run ? &f->start : &f->end;
        if (run && *at >= 0)
            continue; /* a later run */
        if (*at >= 0)
            TEST_FAIL("task %lld: two \"%s\" events", f->id, e->name);
        *at = e->ts;
    }
    for (int k = 0; k < n; k++) {
        struct life *f = &lives[k];
        if (f->spawn < 0 || f->end < 0 ||
            (f->start >= 0 ? !(f->spawn < f->start && f->start < f->end) : !(f->spawn < f->end)))
            TEST_FAIL("task %lld: spawned at %lld ns, first ran at %lld, ended at %lld (-1: "
                      "no such event)", f->id, f->spawn, f->start, f->end);
    }
    free(lives);
    return n;
}

/* Parse path, counting its events into *c and checking their order;
 * returns how many tasks it shows. */
static int check_trace(const char *path, struct counts *c)
{
    struct evlist l = { 0 };
    CHECK_EQ(check_json(path, collect_event, &l), 0);
    for (size_t i = 0; i < l.n; i++)
        count_event(&l.e[i], c);
    check_tracks(&l);
    int tasks = check_lives(&l);
    free(l.e);
    return tasks;
}

static void trace_path(char *buf, size_t n, const char *what)
{
    snprintf(buf, n, "/tmp/braid-test-trace-%d-%s.json", (int)getpid(), what);
}

/* Run fn(arg) rounds times under block_on on a runtime that traces to
 * path, then free it (which writes the file). */
static void run_traced(unsigned workers, const char *path, size_t max_bytes, braid_fn fn,
                       void *arg, int rounds)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.trace_path = path;
    cfg.trace_max_bytes = max_bytes;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    for (int round = 0; round < rounds; round++)
        CHECK_EQ(braid_block_on(rt, fn, arg, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static void check_workload(unsigned workers)
{
    char path[128];
    trace_path(path, sizeof path, workers == 1 ? "one" : "two");
    run_traced(workers, path, 0, workload, (void *)(uintptr_t)workers, 1);
    struct counts c = { 0 };
    int traced = check_trace(path, &c);
    unlink(path);
    /* root, the children, the panicker and the sleeper (+ 2 with 2 workers) */
    int tasks = 1 + NCHILD + 2 + (workers == 2 ? 2 : 0);
    CHECK_EQ(traced, tasks);
    CHECK_EQ(c.spawn, tasks);
    CHECK_EQ(c.completed, tasks - 2);
    CHECK_EQ(c.panicked, 1);
    CHECK_EQ(c.cancelled, 1);
    CHECK_EQ(c.cancel_req, 1);
    /* Each child runs at least once (twice when its yield found another
     * task to run). */
    CHECK(c.child_slices >= NCHILD);
    /* The root is woken by the children it joins. */
    CHECK(c.wake_by_task >= 1);
    /* An arrow from each spawn to the task's first run, and from wakes to
     * the runs they caused: every run that follows a spawn or a wake. */
    CHECK(c.flow_ends >= tasks);
    CHECK(c.flow_ends <= c.flow_starts);
    if (workers == 2)
        CHECK(c.steal >= 1);
    else
        CHECK_EQ(c.steal, 0);
}

TEST(trace_one_worker)
{
    check_workload(1);
}

TEST(trace_two_workers)
{
    check_workload(2);
}

/* Waits of known kinds, and a worker with nothing to run. */
static braid_chan *chan;
static atomic_int receiver_waiting;

static void *receiver(void *arg)
{
    (void)arg;
    int v;
    atomic_store(&receiver_waiting, 1);
    CHECK_EQ(braid_chan_recv(chan, &v), 0);
    return NULL;
}

static void *nap(void *arg)
{
    (void)arg;
    braid_sleep_ms(50);
    return NULL;
}

static void *waits_workload(void *arg)
{
    (void)arg;
    braid_task r, s;
    CHECK_EQ(braid_chan_new(&chan, sizeof(int), 0), 0);
    CHECK_EQ(braid_spawn(&r, receiver, NULL), 0);
    while (!atomic_load(&receiver_waiting))
        braid_yield(); /* one worker: the receiver ran until it waited */
    int v = 1;
    CHECK_EQ(braid_chan_send(chan, &v), 0);
    CHECK_EQ(braid_join(r, NULL), BRAID_OK);
    /* The root waits on a join, the napper on a timer, and the worker,
     * with nothing to run meanwhile, parks. */
    CHECK_EQ(braid_spawn(&s, nap, NULL), 0);
    CHECK_EQ(braid_join(s, NULL), BRAID_OK);
    CHECK_EQ(braid_chan_sender_drop(chan), 0);
    CHECK_EQ(braid_chan_receiver_drop(chan), 0);
    return NULL;
}

TEST(trace_waits_and_order)
{
    char path[128];
    trace_path(path, sizeof path, "waits");
    run_traced(1, path, 0, waits_workload, NULL, 1);
    struct counts c = { 0 };
    CHECK_EQ(check_trace(path, &c), 3);
    unlink(path);
    CHECK(c.parked >= 1);
    CHECK_EQ(c.wait_recv, 1);
    CHECK(c.wait_sleep >= 1);
    CHECK(c.wait_join >= 1);
    CHECK_EQ(c.completed, 3);
}

TEST(trace_cap_drops_and_counts)
{
    /* A cap of one byte: one 64 KiB chunk per buffer, about 2,000 events
     * per worker, far fewer than this workload records. */
    char path[128];
    trace_path(path, sizeof path, "cap");
    run_traced(1, path, 1, workload, (void *)(uintptr_t)1, 21);
    struct counts c = { 0 };
    long long dropped = check_json(path, count_event, &c);
    unlink(path);
    CHECK(dropped > 0);
    CHECK(c.spawn > 0 && c.spawn < 21 * (NCHILD + 3));
}

TEST(trace_from_environment)
{
    /* BRAID_TRACE: the first runtime writes the file named, the second
     * NAME.1.json. */
    char path[128], second[160];
    trace_path(path, sizeof path, "env");
    snprintf(second, sizeof second, "%.*s.1.json", (int)(strlen(path) - 5), path);
    CHECK_EQ(setenv("BRAID_TRACE", path, 1), 0);
    for (int i = 0; i < 2; i++)
        test_run(1, child, NULL);
    unsetenv("BRAID_TRACE");
    test_run(1, child, NULL); /* no file */
    struct counts c = { 0 };
    CHECK_EQ(check_json(path, count_event, &c), 0);
    CHECK_EQ(c.spawn, 1);
    CHECK_EQ(c.completed, 1);
    memset(&c, 0, sizeof c);
    CHECK_EQ(check_json(second, count_event, &c), 0);
    CHECK_EQ(c.spawn, 1);
    unlink(path);
    unlink(second);
    char third[160];
    snprintf(third, sizeof third, "%.*s.2.json", (int)(strlen(path) - 5), path);
    CHECK(access(third, F_OK) != 0);
}

static void *odd_name(void *arg)
{
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "a\"b\\c\td\x01" "eeeeeeeeeeeeeeeeeeeeee\xc3\xa9\xc3\xa9";
    braid_task h;
    CHECK_EQ(braid_spawn_ex(&h, &o, child, arg), 0);
    CHECK_EQ(braid_join(h, NULL), BRAID_OK);
    return NULL;
}

TEST(trace_names_escaped)
{
    /* A name with quotes, a backslash, a control character and a UTF-8
     * character cut in the middle at the 31-byte limit. */
    char path[128];
    trace_path(path, sizeof path, "names");
    run_traced(1, path, 0, odd_name, NULL, 1);
    struct counts c = { 0 };
    CHECK_EQ(check_json(path, count_event, &c), 0);
    unlink(path);
    CHECK_EQ(c.completed, 2);
}
