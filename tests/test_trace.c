/*
 * The execution trace (braid_config.trace_path, BRAID_TRACE): the file is
 * valid JSON and holds the events of a known workload.  A small JSON
 * parser below checks the syntax of the whole file and hands each element
 * of traceEvents to the test (its ph, name, pid and args.task/args.by).
 */
#include "test.h"

#include <ctype.h>
#include <sched.h>

/* ---- a JSON checker ------------------------------------------------------ */

typedef struct jev {
    char ph[4];
    char name[96];
    long long pid, task, by;
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
        } else if (event && strcmp(key, "pid") == 0) {
            if (!jnumber(j, &j->cur.pid))
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
        if (event)
            memset(&j->cur, 0, sizeof j->cur);
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
    FILE *f = fopen(path, "r");
    if (!f)
        TEST_FAIL("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    CHECK(s);
    CHECK_EQ(fread(s, 1, (size_t)n, f), n);
    s[n] = 0;
    fclose(f);
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
    }
}

static void trace_path(char *buf, size_t n, const char *what)
{
    snprintf(buf, n, "/tmp/braid-test-trace-%d-%s.json", (int)getpid(), what);
}

static void run_traced(unsigned workers, const char *path, size_t max_bytes)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = workers;
    cfg.trace_path = path;
    cfg.trace_max_bytes = max_bytes;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, workload, (void *)(uintptr_t)workers, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
}

static void check_workload(unsigned workers)
{
    char path[128];
    trace_path(path, sizeof path, workers == 1 ? "one" : "two");
    run_traced(workers, path, 0);
    struct counts c = { 0 };
    CHECK_EQ(check_json(path, count_event, &c), 0);
    unlink(path);
    /* root, the children, the panicker and the sleeper (+ 2 with 2 workers) */
    int tasks = 1 + NCHILD + 2 + (workers == 2 ? 2 : 0);
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

TEST(trace_cap_drops_and_counts)
{
    /* A cap of one byte: one 64 KiB chunk per buffer, about 2,000 events
     * per worker, far fewer than this workload records. */
    char path[128];
    trace_path(path, sizeof path, "cap");
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    cfg.trace_path = path;
    cfg.trace_max_bytes = 1;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, workload, (void *)(uintptr_t)1, NULL), BRAID_OK);
    for (int round = 0; round < 20; round++)
        CHECK_EQ(braid_block_on(rt, workload, (void *)(uintptr_t)1, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
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
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    cfg.trace_path = path;
    braid_runtime *rt;
    CHECK_EQ(braid_runtime_new(&cfg, &rt), 0);
    CHECK_EQ(braid_block_on(rt, odd_name, NULL, NULL), BRAID_OK);
    CHECK_EQ(braid_runtime_free(rt), 0);
    struct counts c = { 0 };
    CHECK_EQ(check_json(path, count_event, &c), 0);
    unlink(path);
    CHECK_EQ(c.completed, 2);
}
