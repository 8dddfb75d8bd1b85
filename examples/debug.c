/*
 * What braid tells you when a task fails.
 *
 *   debug          a joined task's failed assertion, with its message and
 *                  location; a detached task's panic, reported through a
 *                  panic hook (the default hook prints it on stderr)
 *   debug faults   a stack overflow, and, with isolate_faults, a null
 *                  pointer write, each turned into a panic of its task
 *                  (not under ASan, TSan or Valgrind, which own SIGSEGV)
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* guide:begin hook */
static braid_notify *reported;

static void report(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    (void)id;
    (void)user;
    printf("detached task %s panicked at %s:%d: %s\n", name ? name : "(unnamed)", o->file,
           o->line, o->message);
    braid_notify_one(reported);
}

static void *cleaner(void *arg)
{
    (void)arg;
    braid_panic("disk %s is full", "/var");
}
/* guide:end hook */

static void *checker(void *arg)
{
    int *answer = arg;
    BRAID_ASSERT(*answer == 42);
    return NULL;
}

static void *failures(void *arg)
{
    (void)arg;
    /* guide:begin assert */
    int answer = 41;
    braid_task t;
    braid_spawn(&t, checker, &answer);
    braid_outcome out = BRAID_OUTCOME_INIT;
    if (braid_join_ex(t, &out) == BRAID_PANICKED)
        printf("checker panicked at %s:%d: %s\n", out.file, out.line, out.message);
    /* guide:end assert */

    braid_spawn_opts opts = BRAID_SPAWN_OPTS_INIT;
    opts.name = "cleaner";
    braid_spawn_ex(NULL, &opts, cleaner, NULL); /* detached: nobody joins it */
    braid_notify_wait(reported);
    return NULL;
}

/* guide:begin overflow */
static unsigned recurse(unsigned n) /* NOLINT(misc-no-recursion): overflowing is the point */
{
    volatile char frame[1024]; /* a big frame, kept by volatile */
    frame[0] = (char)n;
    return n == 0 ? 0 : recurse(n - 1) + (unsigned)frame[0];
}

static void *deep(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)recurse(1u << 20); /* a gigabyte of frames */
}

static void *null_write(void *arg)
{
    *(volatile int *)arg = 1; /* arg is NULL */
    return NULL;
}

static void *faults(void *arg)
{
    (void)arg;
    braid_fn bodies[] = { deep, null_write };
    for (int i = 0; i < 2; i++) {
        braid_task t;
        braid_spawn(&t, bodies[i], NULL);
        braid_outcome out = BRAID_OUTCOME_INIT;
        if (braid_join_ex(t, &out) == BRAID_PANICKED)
            printf("panicked: %s\n", out.message);
    }
    printf("runtime tainted: %s\n", braid_runtime_tainted(braid_current_runtime()) ? "yes" : "no");
    return NULL;
}
/* guide:end overflow */

int main(int argc, char **argv)
{
    bool fault_mode = argc == 2 && strcmp(argv[1], "faults") == 0;
    if (braid_notify_new(&reported) != 0)
        return 1;
    /* guide:begin config */
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.panic_hook = report;         /* NULL: one line on stderr */
    cfg.isolate_faults = fault_mode; /* stack overflows are caught either way */
    cfg.stack_size = (size_t)64 * 1024;
    braid_runtime *rt;
    int rc = braid_runtime_new(&cfg, &rt);
    /* guide:end config */
    if (rc == 0) {
        rc = braid_block_on(rt, fault_mode ? faults : failures, NULL, NULL);
        braid_runtime_free(rt);
    }
    braid_notify_free(reported);
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid: %s\n", braid_strerror(rc));
        return 1;
    }
    return 0;
}
