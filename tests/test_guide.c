/*
 * The guide (the .md files of docs/guide/) cannot drift from the code: every C code
 * block in it must be preceded by a marker naming the example it shows,
 *
 *     <!-- example: examples/NAME.c -->        the whole file, byte for byte
 *     <!-- example: examples/NAME.c#PART -->   the lines between the lines
 *                                              holding "guide:begin PART" and
 *                                              "guide:end PART" in that file
 *
 * and every named example must be one the tests build (ex_NAME next to this
 * binary) and run (TEST(example_NAME) in tests/test_examples.c, or another
 * test that starts ex_NAME).  A text
 * block preceded by "<!-- output: examples/NAME.c -->" must be exactly what
 * that example prints on stdout.  Any other block must be shell commands
 * (```sh), so that no code escapes the check; for the same reason a page
 * may hold no block the check would not see: a fence must be ``` at the
 * start of its line (not ~~~, not indented as inside a list item), and
 * there are no indented code blocks.  Relative links must lead to files
 * that exist.  The source tree's location comes from the Makefile
 * (BRAID_SOURCE_DIR), so the test reads the sources it was built from.
 *
 * README.md's C blocks are checked the same way (its hello.c and the heart
 * of echo.c); its other blocks are left alone (commands in indented
 * blocks, the layout of the tree), but its fences follow the same rule.
 */
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef BRAID_SOURCE_DIR
#error "build with -DBRAID_SOURCE_DIR=\"...\" (the Makefile does)"
#endif

/* A file of the source tree, malloc'd and NUL-terminated; NULL if absent. */
static char *slurp(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", BRAID_SOURCE_DIR, rel);
    return test_read_file(path);
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The guide's pages, "docs/guide/NAME.md", sorted; returns how many. */
static int guide_pages(char pages[][PATH_MAX], int max)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/docs/guide", BRAID_SOURCE_DIR);
    DIR *d = opendir(dir);
    if (!d)
        TEST_FAIL("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 3 && strcmp(e->d_name + len - 3, ".md") == 0) {
            CHECK(n < max);
            snprintf(pages[n++], PATH_MAX, "docs/guide/%s", e->d_name);
        }
    }
    closedir(d);
    qsort(pages, (size_t)n, PATH_MAX, compare_paths);
    return n;
}

/* The excerpt of src between its "guide:begin part" and "guide:end part"
 * lines (malloc'd), or NULL with *why set. */
static char *excerpt(const char *src, const char *part, const char **why)
{
    char begin[192], end[192];
    snprintf(begin, sizeof begin, "guide:begin %s ", part);
    snprintf(end, sizeof end, "guide:end %s ", part);
    const char *b = strstr(src, begin);
    if (!b || strstr(b + 1, begin)) {
        *why = b ? "guide:begin appears twice" : "no guide:begin line";
        return NULL;
    }
    const char *e = strstr(b, end);
    if (!e || strstr(src, end) != e) {
        *why = "no guide:end line after guide:begin";
        return NULL;
    }
    const char *start = strchr(b, '\n');
    while (e > src && e[-1] != '\n')
        e--; /* the excerpt ends before the guide:end line */
    if (!start || start + 1 > e) {
        *why = "empty excerpt";
        return NULL;
    }
    start++;
    return strndup(start, (size_t)(e - start));
}

/* Whether ex_name was built next to this binary. */
static bool example_built(const char *name)
{
    char bin[160], path[PATH_MAX + 160];
    snprintf(bin, sizeof bin, "ex_%s", name);
    test_sibling(bin, path, sizeof path);
    return access(path, X_OK) == 0;
}

/* Whether a test runs example name: tests/test_examples.c has a
 * TEST(example_name), other tests start "ex_name". */
static bool example_run_by_a_test(const char *name)
{
    char call[192], bin[192];
    snprintf(call, sizeof call, "TEST(example_%s)", name);
    snprintf(bin, sizeof bin, "\"ex_%s\"", name);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests", BRAID_SOURCE_DIR);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "test_", 5) != 0 || len < 3 || strcmp(e->d_name + len - 2, ".c"))
            continue;
        char rel[PATH_MAX];
        snprintf(rel, sizeof rel, "tests/%s", e->d_name);
        char *src = slurp(rel);
        CHECK(src != NULL);
        found = strstr(src, call) || strstr(src, bin);
        free(src);
    }
    closedir(d);
    return found;
}

/* What ex_name prints on stdout (malloc'd); fails the test unless it
 * exits 0. */
static char *example_output(const char *name)
{
    test_need_exec();
    char bin[160], path[PATH_MAX + 160];
    snprintf(bin, sizeof bin, "ex_%s", name);
    test_sibling(bin, path, sizeof path);
    char *argv[] = { path, NULL };
    pid_t pid;
    int fd = test_spawn_piped(argv, &pid);
    size_t cap = 65536, len = 0;
    char *out = malloc(cap);
    CHECK(out != NULL);
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = 0;
    close(fd);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("%s exited with status %d", bin, status);
    return out;
}

/* A marker line "<!-- KIND: examples/NAME.c[#PART] -->": fills name and
 * part ("" if none); false if line is not a marker of that kind. */
static bool parse_marker(const char *line, size_t len, const char *kind, char *name,
                         char *part)
{
    char prefix[32];
    int k = snprintf(prefix, sizeof prefix, "<!-- %s: examples/", kind);
    const char *tail = " -->";
    if (len < (size_t)k + 6 || strncmp(line, prefix, (size_t)k) != 0 ||
        strncmp(line + len - 4, tail, 4) != 0)
        return false;
    char ref[128];
    size_t rlen = len - (size_t)k - 4;
    if (rlen >= sizeof ref)
        TEST_FAIL("marker too long: %.*s", (int)len, line);
    memcpy(ref, line + k, rlen);
    ref[rlen] = 0;
    char *hash = strchr(ref, '#');
    snprintf(part, 128, "%s", hash ? hash + 1 : "");
    if (hash)
        *hash = 0;
    size_t nlen = strlen(ref);
    if (nlen < 3 || strcmp(ref + nlen - 2, ".c") != 0 || strchr(ref, '/'))
        TEST_FAIL("marker does not name examples/NAME.c: %.*s", (int)len, line);
    ref[nlen - 2] = 0;
    snprintf(name, 128, "%s", ref);
    return true;
}

/* What one page holds, for the checks. */
struct block {
    int line;            /* of the opening fence */
    char info[16];       /* the fence's info string */
    const char *text;    /* the content, up to the closing fence */
    size_t len;
    char marker[PATH_MAX]; /* the line before the fence (blank lines skipped) */
};

/* Why page_blocks() refused a page. */
struct page_error {
    int line;
    const char *why;
};

/* The columns of a line's indentation (a tab to the next multiple of 4)
 * and, in *rest, what follows it. */
static int indentation(const char *line, size_t len, const char **rest)
{
    int col = 0;
    size_t i = 0;
    for (; i < len && (line[i] == ' ' || line[i] == '\t'); i++)
        col = line[i] == '\t' ? (col / 4 + 1) * 4 : col + 1;
    *rest = line + i;
    return col;
}

/* Whether a line (its indentation skipped) opens or closes a fence for a
 * Markdown renderer: three or more backticks or tildes. */
static bool fence_like(const char *rest, size_t len)
{
    return len >= 3 && (strncmp(rest, "```", 3) == 0 || strncmp(rest, "~~~", 3) == 0);
}

/* The fenced blocks of md (at most max), or -1 with *err set when md holds
 * a block the checks would not see as a renderer does: an unclosed fence,
 * a fence that is not ``` at the start of its line (~~~, or indented, as
 * inside a list item), a closing fence with indentation or trailing text,
 * and, if strict, an indented code block (four columns of indentation
 * after a blank line). */
static int page_blocks(const char *md, bool strict, struct block *blocks, int max,
                       struct page_error *err)
{
    int n = 0, lineno = 0;
    const char *prev = NULL;
    size_t prevlen = 0;
    bool after_blank = true;
    for (const char *p = md; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        lineno++;
        const char *rest;
        int indent = indentation(p, len, &rest);
        size_t rlen = len - (size_t)(rest - p);
        err->line = lineno;
        if (fence_like(rest, rlen) && (indent > 0 || *rest == '~')) {
            err->why = "a fence that is indented or made of ~~~: the check reads only ``` at "
                       "the start of a line";
            return -1;
        }
        if (strict && indent >= 4 && rlen > 0 && after_blank) {
            err->why = "an indented code block: the check reads only ``` fences";
            return -1;
        }
        if (fence_like(rest, rlen)) {
            CHECK(n < max);
            struct block *b = &blocks[n++];
            b->line = lineno;
            snprintf(b->info, sizeof b->info, "%.*s", (int)(len - 3), p + 3);
            snprintf(b->marker, sizeof b->marker, "%.*s", prev ? (int)prevlen : 0,
                     prev ? prev : "");
            b->text = eol ? eol + 1 : p + len;
            const char *q = b->text;
            for (;;) {
                err->line = lineno + 1;
                if (!*q) {
                    err->line = b->line;
                    err->why = "a code block never closed";
                    return -1;
                }
                const char *qe = strchr(q, '\n');
                size_t qlen = qe ? (size_t)(qe - q) : strlen(q);
                const char *qrest;
                int qindent = indentation(q, qlen, &qrest);
                size_t qrlen = qlen - (size_t)(qrest - q);
                if (qlen == 3 && strncmp(q, "```", 3) == 0)
                    break;
                if (qindent < 4 && qrlen >= 3 && strspn(qrest, "`") >= 3 &&
                    strspn(qrest, "` \t") == qrlen) {
                    err->why = "a closing fence with indentation or trailing blanks";
                    return -1;
                }
                lineno++;
                q = qe ? qe + 1 : q + qlen;
            }
            b->len = (size_t)(q - b->text);
            lineno++;
            const char *qe = strchr(q, '\n');
            p = qe ? qe + 1 : q + strlen(q);
            prev = NULL;
            after_blank = false;
            continue;
        }
        if (rlen > 0) {
            prev = p;
            prevlen = len;
        }
        after_blank = rlen == 0;
        p = eol ? eol + 1 : p + len;
    }
    return n;
}

/* page_blocks(), failing the test on a refused page. */
static int page_blocks_or_fail(const char *page, const char *md, bool strict,
                               struct block *blocks, int max)
{
    struct page_error err;
    int n = page_blocks(md, strict, blocks, max, &err);
    if (n < 0)
        TEST_FAIL("%s:%d: %s", page, err.line, err.why);
    return n;
}

/* Report the first line where a block and its example differ. */
static void block_differs(const char *page, const struct block *b, const char *want,
                          const char *what)
{
    size_t i = 0, start = 0, line = 1;
    while (i < b->len && want[i] && b->text[i] == want[i]) {
        if (want[i] == '\n') {
            line++;
            start = i + 1;
        }
        i++;
    }
    int glen = (int)strcspn(b->text + start, "\n"), wlen = (int)strcspn(want + start, "\n");
    if ((size_t)glen > b->len - start)
        glen = (int)(b->len - start);
    TEST_FAIL("%s:%d: the block differs from %s at its line %zu:\n  guide:   \"%.*s\"\n"
              "  example: \"%.*s\"",
              page, b->line, what, line, glen, b->text + start, wlen, want + start);
}

enum { MAX_BLOCKS = 128, MAX_PAGES = 32 };

/* Check one page's code blocks (strict: a guide page, where every block is
 * code, output or commands); returns how many were C blocks. */
static int check_page_code(const char *page, bool strict)
{
    char *md = slurp(page);
    CHECK(md != NULL);
    static struct block blocks[MAX_BLOCKS];
    int n = page_blocks_or_fail(page, md, strict, blocks, MAX_BLOCKS), c_blocks = 0;
    for (int i = 0; i < n; i++) {
        struct block *b = &blocks[i];
        char name[128], part[128];
        bool marked = parse_marker(b->marker, strlen(b->marker), "example", name, part);
        if (strcmp(b->info, "c") != 0 && !strict && !marked)
            continue;
        if (strcmp(b->info, "c") != 0) {
            char oname[128], opart[128];
            bool output = parse_marker(b->marker, strlen(b->marker), "output", oname, opart);
            if (marked || (strcmp(b->info, "text") == 0) != output ||
                (!output && strcmp(b->info, "sh") != 0))
                TEST_FAIL("%s:%d: a ```%s block: code is ```c after an example marker, "
                          "output ```text after an output marker, commands ```sh",
                          page, b->line, b->info);
            continue;
        }
        c_blocks++;
        if (!marked)
            TEST_FAIL("%s:%d: a C block without an <!-- example: examples/NAME.c --> marker",
                      page, b->line);
        char rel[PATH_MAX];
        snprintf(rel, sizeof rel, "examples/%s.c", name);
        char *src = slurp(rel);
        if (!src)
            TEST_FAIL("%s:%d: %s does not exist", page, b->line, rel);
        if (!example_built(name))
            TEST_FAIL("%s:%d: ex_%s was not built next to this test", page, b->line, name);
        if (!example_run_by_a_test(name))
            TEST_FAIL("%s:%d: no test runs %s (TEST(example_%s) in tests/test_examples.c)",
                      page, b->line, rel, name);
        char *want = src;
        if (part[0]) {
            const char *why = "";
            want = excerpt(src, part, &why);
            if (!want)
                TEST_FAIL("%s:%d: %s#%s: %s", page, b->line, rel, part, why);
        }
        if (strlen(want) != b->len || memcmp(want, b->text, b->len) != 0)
            block_differs(page, b, want, rel);
        if (want != src)
            free(want);
        free(src);
    }
    free(md);
    return c_blocks;
}

TEST(guide_code_blocks_are_the_examples)
{
    static char pages[MAX_PAGES][PATH_MAX];
    int n = guide_pages(pages, MAX_PAGES), total = 0;
    CHECK(n >= 3);
    for (int i = 0; i < n; i++)
        total += check_page_code(pages[i], true);
    CHECK(total >= 10); /* the check saw the guide's code, not an empty tree */
}

TEST(readme_code_blocks_are_the_examples)
{
    CHECK(check_page_code("README.md", false) >= 2);
}

/* A page with a block the check would not see is refused; a page whose
 * blocks it sees is read as a renderer reads it. */
TEST(hidden_blocks_are_refused)
{
    static struct block blocks[8];
    struct page_error err;
    static const struct {
        const char *md;
        int strict_blocks, relaxed_blocks; /* -1: refused */
    } cases[] = {
        { "Text.\n<!-- example: examples/x.c -->\n```c\nint x;\n```\n", 1, 1 },
        { "Text\n    lazily continued.\n\n```sh\nmake\n```\n", 1, 1 },
        { "~~~c\nint x;\n~~~\n", -1, -1 },
        { "~~~c\nint x;\n~~~\n\n```sh\nmake\n```\n", -1, -1 },
        { "- a list item:\n\n  ```c\n  int x;\n  ```\n", -1, -1 },
        { "   ```c\nint x;\n```\n", -1, -1 },
        { "Text.\n\n    int x;\n", -1, 0 },
        { "Text.\n\n\tint x;\n", -1, 0 },
        { "```c\nint x;\n", -1, -1 },
        { "```c\nint x;\n  ```\n", -1, -1 },
        { "```c\nint x;\n``` \n```\n", -1, -1 },
        { "```c\nchar *s = \"~~~\";\n```\n", 1, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int strict = page_blocks(cases[i].md, true, blocks, 8, &err);
        int relaxed = page_blocks(cases[i].md, false, blocks, 8, &err);
        if (strict != cases[i].strict_blocks || relaxed != cases[i].relaxed_blocks)
            TEST_FAIL("case %zu: %d and %d blocks (strict, relaxed), want %d and %d", i, strict,
                      relaxed, cases[i].strict_blocks, cases[i].relaxed_blocks);
    }
    CHECK_EQ(page_blocks(cases[0].md, true, blocks, 8, &err), 1);
    CHECK_STR(blocks[0].info, "c");
    CHECK_STR(blocks[0].marker, "<!-- example: examples/x.c -->");
    CHECK_EQ(blocks[0].len, strlen("int x;\n"));
}

TEST(guide_outputs_are_what_the_examples_print)
{
    static char pages[MAX_PAGES][PATH_MAX];
    static struct block blocks[MAX_BLOCKS];
    int n = guide_pages(pages, MAX_PAGES), outputs = 0;
    for (int i = 0; i < n; i++) {
        char *md = slurp(pages[i]);
        CHECK(md != NULL);
        int nb = page_blocks_or_fail(pages[i], md, true, blocks, MAX_BLOCKS);
        for (int k = 0; k < nb; k++) {
            struct block *b = &blocks[k];
            char name[128], part[128];
            if (!parse_marker(b->marker, strlen(b->marker), "output", name, part))
                continue;
            if (part[0] || strcmp(b->info, "text") != 0)
                TEST_FAIL("%s:%d: an output marker must precede a ```text block and name "
                          "a whole example", pages[i], b->line);
            char *out = example_output(name);
            if (strlen(out) != b->len || memcmp(out, b->text, b->len) != 0) {
                char what[192];
                snprintf(what, sizeof what, "what ex_%s prints", name);
                block_differs(pages[i], b, out, what);
            }
            free(out);
            outputs++;
        }
        free(md);
    }
    CHECK(outputs >= 3);
}

/* Whether a link target is relative to the page (not a URL or an anchor). */
static bool relative_link(const char *target, size_t len)
{
    return len > 0 && target[0] != '#' && !memmem(target, len, "://", 3) &&
           strncmp(target, "mailto:", 7) != 0;
}

TEST(guide_links_lead_somewhere)
{
    static char pages[MAX_PAGES][PATH_MAX];
    int n = guide_pages(pages, MAX_PAGES), links = 0;
    for (int i = 0; i < n; i++) {
        char *md = slurp(pages[i]);
        CHECK(md != NULL);
        for (const char *p = md; (p = strstr(p, "](")); p += 2) {
            const char *t = p + 2, *close = strchr(t, ')');
            CHECK(close != NULL);
            size_t len = strcspn(t, "#)");
            if (!relative_link(t, (size_t)(close - t)))
                continue;
            char rel[PATH_MAX], full[PATH_MAX * 2];
            snprintf(rel, sizeof rel, "docs/guide/%.*s", (int)len, t);
            snprintf(full, sizeof full, "%s/%s", BRAID_SOURCE_DIR, rel);
            struct stat st;
            if (stat(full, &st) != 0)
                TEST_FAIL("%s: the link to %.*s leads nowhere", pages[i], (int)len, t);
            links++;
        }
        free(md);
    }
    CHECK(links >= 10);
}

/* The guide is reachable: the README links its index, and the index links
 * every page. */
TEST(guide_index_lists_every_page)
{
    char *readme = slurp("README.md");
    CHECK(readme != NULL);
    CHECK(strstr(readme, "](docs/guide/README.md)") != NULL);
    free(readme);
    char *index = slurp("docs/guide/README.md");
    CHECK(index != NULL);
    static char pages[MAX_PAGES][PATH_MAX];
    int n = guide_pages(pages, MAX_PAGES);
    for (int i = 0; i < n; i++) {
        const char *file = pages[i] + strlen("docs/guide/");
        if (strcmp(file, "README.md") == 0)
            continue;
        char link[PATH_MAX];
        snprintf(link, sizeof link, "](%s)", file);
        if (!strstr(index, link))
            TEST_FAIL("docs/guide/README.md does not link %s", file);
    }
    free(index);
}
