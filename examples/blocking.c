/*
 * The blocking pool: code that blocks its thread runs on the pool, not on
 * a worker.  The runtime has a single worker, and the blocking call can
 * only return after a task on that worker has run: had it blocked the
 * worker, the program would hang.  Then the file helpers write a file and
 * read it back, their system calls also made on the pool.
 */
#define _GNU_SOURCE /* pipe2() */
#include <braid.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* guide:begin blocking */
/* A plain blocking read(2), as a C library that knows nothing of braid
 * would do it: it holds its thread until the other end writes. */
static void *read_blocking(void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    return (void *)(intptr_t)n;
}

static int blocking_call(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    fcntl(p[1], F_SETFL, O_NONBLOCK); /* braid writes this end */
    braid_task reader;
    braid_spawn_blocking(&reader, read_blocking, &p[0]);
    for (int i = 1; i <= 3; i++) {
        braid_sleep_ms(1); /* the worker is free: this task goes on */
        printf("tick %d while the read blocks\n", i);
    }
    braid_write_all(p[1], "hello\n", 6);
    void *n;
    braid_join(reader, &n);
    printf("the blocking read returned %ld bytes\n", (long)(intptr_t)n);
    braid_close(p[1]);
    close(p[0]);
    return 0;
}
/* guide:end blocking */

/* guide:begin files */
static int files(void)
{
    char path[4096];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/braid-guide-%ld.txt", dir ? dir : "/tmp", (long)getpid());
    const char text[] = "written on the blocking pool\n";
    int rc = braid_file_write_all(path, text, strlen(text));
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", path, braid_strerror(rc));
        return rc;
    }
    void *data;
    size_t len;
    rc = braid_file_read_all(path, &data, &len);
    unlink(path);
    if (rc != 0)
        return rc;
    printf("read back %zu bytes: %s", len, (char *)data);
    free(data);
    return 0;
}
/* guide:end files */

static void *root(void *arg)
{
    int *exit_code = arg;
    if (blocking_call() == 0 && files() == 0)
        *exit_code = 0;
    return NULL;
}

int main(void)
{
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = 1;
    braid_runtime *rt;
    int exit_code = 1, rc = braid_runtime_new(&cfg, &rt);
    if (rc == 0) {
        rc = braid_block_on(rt, root, &exit_code, NULL);
        braid_runtime_free(rt);
    }
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid: %s\n", braid_strerror(rc));
        return 1;
    }
    return exit_code;
}
