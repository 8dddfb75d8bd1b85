/*
 * Packaging: make install into a fresh prefix, then what a user does with
 * it: pkg-config and CMake builds of tests/install/hello.c, linked
 * statically and dynamically; the shared library's SONAME and exported
 * symbols; the man pages through MANPATH.  The work is in
 * tests/install_check.sh (one check per test); this file fits it to the
 * runner.  A missing pkg-config, cmake or man skips its test (fails it
 * with BRAID_REQUIRE_TOOLS=1: the script decides).
 *
 * Normal configuration only, and it skips under Valgrind: it checks files
 * and other programs, not braid's code.
 */
#include "test.h"

#include <sys/wait.h>

static void check(const char *what)
{
    if (test_under_valgrind())
        SKIP("runs make and compilers: nothing of braid to check under Valgrind");
    test_need_exec();
    if (access("tests/install_check.sh", X_OK) != 0)
        SKIP("not run from the source tree (tests/install_check.sh not found)");
    char dir[PATH_MAX], build[PATH_MAX];
    test_sibling("..", dir, sizeof dir);
    if (!realpath(dir, build))
        TEST_FAIL("realpath %s failed", dir);
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "tests/install_check.sh '%s' %s", build, what);
    fflush(stdout);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        TEST_FAIL("%s did not run to its end", cmd);
    if (WEXITSTATUS(st) == 77)
        _exit(77);
    CHECK_EQ(WEXITSTATUS(st), 0);
}

TEST(pkgconfig_shared)
{
    check("pkgconfig-shared");
}

TEST(pkgconfig_static)
{
    check("pkgconfig-static");
}

TEST(cmake_shared)
{
    check("cmake-shared");
}

TEST(cmake_static)
{
    check("cmake-static");
}

TEST(exports_only_public_api)
{
    check("exports");
}

TEST(man_pages)
{
    check("man");
}
