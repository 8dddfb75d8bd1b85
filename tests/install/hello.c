/* An out-of-tree program built against an installed braid by
 * tests/install_check.sh, once through pkg-config and once through CMake. */
#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void *square(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    return (void *)(n * n);
}

static void *root(void *arg)
{
    (void)arg;
    braid_task t;
    void *v = NULL;
    if (braid_spawn(&t, square, (void *)7) != 0 || braid_join(t, &v) != BRAID_OK)
        return NULL;
    return v;
}

int main(void)
{
    if (strcmp(braid_version(), BRAID_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", BRAID_VERSION_STRING, braid_version());
        return 1;
    }
    void *v = NULL;
    if (braid_run(root, NULL, &v) != BRAID_OK || (uintptr_t)v != 49) {
        fprintf(stderr, "spawn and join failed\n");
        return 1;
    }
    printf("braid %s: 7 squared is %u\n", braid_version(), (unsigned)(uintptr_t)v);
    return 0;
}
