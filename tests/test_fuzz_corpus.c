/*
 * The fuzzers' seed corpora (fuzz/corpus/scenario, fuzz/corpus/resp),
 * replayed through the same checks with the ordinary compiler, so that
 * the harnesses and their corpora cannot rot: every input must pass.
 * BRAID_FUZZ_CORPUS names another directory holding scenario/ and resp/.
 */
#include "test.h"
#include "scenario.h"
#include "../fuzz/resp_check.h"

#include <dirent.h>
#include <sys/stat.h>

/* A corpus directory: under $BRAID_FUZZ_CORPUS, next to the sources (tests
 * run from the top of the tree), or two levels above this binary. */
static const char *corpus_dir(const char *name, char *buf, size_t n)
{
    const char *e = getenv("BRAID_FUZZ_CORPUS");
    struct stat st;
    if (e && *e)
        snprintf(buf, n, "%s/%s", e, name);
    else if (snprintf(buf, n, "fuzz/corpus/%s", name),
             stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
        char rel[64];
        snprintf(rel, sizeof rel, "../../fuzz/corpus/%s", name);
        test_sibling(rel, buf, n);
    }
    return buf;
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        TEST_FAIL("cannot open %s", path);
    size_t len = fread(buf, 1, cap, f);
    fclose(f);
    return len;
}

static uint8_t buf[1 << 16];
static char hint[PATH_MAX + 300];

/* Run check on every file of corpus name; returns how many there were. */
static int replay(const char *name, void (*check)(const uint8_t *, size_t))
{
    char dirbuf[PATH_MAX], path[PATH_MAX + 256];
    const char *dir = corpus_dir(name, dirbuf, sizeof dirbuf);
    DIR *d = opendir(dir);
    if (!d)
        TEST_FAIL("no corpus at %s", dir);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(hint, sizeof hint, "corpus file %s", path);
        sc_replay_hint = hint;
        check(buf, read_file(path, buf, sizeof buf));
        files++;
    }
    closedir(d);
    printf("%s: %d corpus files\n", dir, files);
    return files;
}

static void scenario_check(const uint8_t *data, size_t len)
{
    sc_check_bytes(data, len);
}

TEST(fuzz_corpus_scenario)
{
    CHECK(replay("scenario", scenario_check) >= 10);
}

TEST(fuzz_corpus_resp)
{
    CHECK(replay("resp", resp_check) >= 10);
}
