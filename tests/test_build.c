/*
 * Building against braid as the documentation says works, warning-free:
 * the command of docs/guide/README.md ("cc -O2 -g -Iinclude
 * examples/cancel.c build/libbraid.a -lpthread -o cancel"), taken from the
 * page, not copied here, compiles every program of examples/ with gcc and
 * with clang, with -Wall -Wextra -Wpedantic -Werror added.  README.md shows
 * the same command for hello.c.
 *
 * Runs in the normal configuration only (under Valgrind it skips), from
 * the source tree (the runner's working directory); the library is the one
 * next to this test's directory.  Without clang only gcc is checked, and the test reports a
 * skip.
 */
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define WERROR " -Wall -Wextra -Wpedantic -Werror"


/* The guide's build command, split around the example's name: "cc -O2 -g
 * -Iinclude examples/" NAME ".c build/libbraid.a -lpthread -o " NAME.  The
 * parts are what precedes the compiler's options, the options up to the
 * source's directory, and what follows the ".c" up to "-o". */
struct command {
    char opts[256];  /* "-O2 -g -Iinclude " */
    char libs[256];  /* " build/libbraid.a -lpthread" */
};

static void documented_command(struct command *c)
{
    char *page = test_read_file("docs/guide/README.md");
    if (!page)
        TEST_FAIL("cannot read docs/guide/README.md");
    const char *line = strstr(page, "\ncc ");
    while (line && !strstr(line, "examples/cancel.c build/libbraid.a"))
        line = strstr(line + 1, "\ncc ");
    if (!line)
        TEST_FAIL("docs/guide/README.md has no line \"cc ... examples/cancel.c "
                  "build/libbraid.a ...\"");
    line += 4;
    const char *src = strstr(line, "examples/cancel.c"), *out = strstr(line, " -o cancel\n");
    if (!src || !out || out < src)
        TEST_FAIL("the guide's command does not end with -o cancel");
    snprintf(c->opts, sizeof c->opts, "%.*s", (int)(src - line), line);
    const char *after = src + strlen("examples/cancel.c");
    snprintf(c->libs, sizeof c->libs, "%.*s", (int)(out - after), after);
    free(page);
    CHECK(strstr(c->opts, "-Iinclude") != NULL);
    CHECK(strstr(c->libs, "build/libbraid.a") != NULL);
}

/* Whether prog is found in PATH. */
/* Compile examples/name.c with cc as documented (the library path made
 * that of this build); false, with the compiler's output on stderr, if it
 * fails or warns. */
static bool compiles(const char *cc, const struct command *c, const char *lib, const char *name,
                     const char *outdir)
{
    const char *at = strstr(c->libs, "build/libbraid.a");
    char cmd[PATH_MAX * 3];
    int k = snprintf(cmd, sizeof cmd, "%s %sexamples/%s.c%.*s%s%s -o %s/%s" WERROR " >%s/%s.log 2>&1",
                     cc, c->opts, name, (int)(at - c->libs), c->libs, lib,
                     at + strlen("build/libbraid.a"), outdir, name, outdir, name);
    CHECK(k > 0 && (size_t)k < sizeof cmd);
    int rc = system(cmd);
    char log[PATH_MAX + 64];
    k = snprintf(log, sizeof log, "%s/%s.log", outdir, name);
    CHECK(k > 0 && (size_t)k < sizeof log);
    char *text = test_read_file(log);
    bool ok = rc == 0 && text && !text[0];
    if (!ok)
        fprintf(stderr, "FAILED: %s\n%s", cmd, text ? text : "");
    free(text);
    return ok;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

TEST(documented_build_compiles_every_example)
{
    if (test_under_valgrind())
        SKIP("runs compilers only: nothing of braid to check under Valgrind");
    if (access("docs/guide/README.md", R_OK) != 0 || access("examples", R_OK) != 0)
        SKIP("not run from the source tree");
    struct command c;
    documented_command(&c);

    /* README.md gives the same command for hello.c. */
    char *readme = test_read_file("README.md");
    CHECK(readme != NULL);
    char hello[640];
    snprintf(hello, sizeof hello, "cc %sexamples/hello.c%s -o hello", c.opts, c.libs);
    if (!strstr(readme, hello))
        TEST_FAIL("README.md does not show the guide's command for hello.c: %s", hello);
    free(readme);

    char lib[PATH_MAX];
    test_sibling("../libbraid.a", lib, sizeof lib);
    CHECK(access(lib, R_OK) == 0);
    char outdir[] = "/tmp/braid-test-build-XXXXXX";
    CHECK(mkdtemp(outdir) != NULL);

    static char names[64][128];
    int n = 0;
    DIR *d = opendir("examples");
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 2 && strcmp(e->d_name + len - 2, ".c") == 0) {
            CHECK(n < 64);
            snprintf(names[n++], sizeof names[0], "%.*s", (int)(len - 2), e->d_name);
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], compare_names);
    CHECK(n >= 10);

    bool have_clang = test_have_tool("clang");
    const char *ccs[] = { "gcc", "clang" };
    int bad = 0;
    for (int k = 0; k < (have_clang ? 2 : 1); k++)
        for (int i = 0; i < n; i++)
            bad += !compiles(ccs[k], &c, lib, names[i], outdir);
    char rm[PATH_MAX];
    snprintf(rm, sizeof rm, "rm -rf %s", outdir);
    CHECK_EQ(system(rm), 0);
    CHECK_EQ(bad, 0);
    if (!have_clang)
        test_skip_tool("clang is not installed: only gcc was checked");
}
