/*
 * The API reference: every public function (each BRAID_API declaration of
 * include/braid.h, whoever added it) is documented by a comment block
 * right above it, and has a generated man page in BUILD/man/man3 (make
 * man, which make test builds first).  The header is parsed, not listed,
 * so a function added anywhere is checked.
 *
 * Documented means: a comment ends on the line before the declaration, or
 * the declaration follows (line after line) others under such a comment,
 * which then names it or its plain form (braid_x_until under braid_x).
 *
 * The comment then states, in the words the top of include/braid.h
 * defines (aspects[] below), when the function waits ("Suspends",
 * "Blocks", "Waits", "Never waits", ...), whether it is a cancellation
 * point ("Cancellation point", "Not a cancellation point"), and which
 * threads may call it ("Any thread", "Task only", "Plain threads only",
 * "not thread-safe").  A comment shared by a group states them for every
 * declaration of the group.  A function returning int or ssize_t also
 * says what its errors are: the comment names a negative errno value or
 * "error", or defers to another function ("as braid_x()", or a comment
 * that is a call of one).  Whether the statements are true is for the
 * reader of the code to check; this test makes sure none is left out.
 *
 * Runs in the normal configuration only (the test binaries of the other
 * configurations are not built; under Valgrind it skips: there is no braid
 * code to check here).
 */
#include "test.h"

#include <ctype.h>
#include <sys/stat.h>

#define MAX_DECLS 1024

struct decl {
    char name[96];
    char type[64];  /* the return type, e.g. "int" */
    int group;      /* index of the group's first declaration */
    int line;       /* where it starts, 1-based */
    const char *comment; /* the group's comment, NULL if none */
};

struct header {
    struct decl d[MAX_DECLS];
    int n;
    char *comments[MAX_DECLS]; /* owned */
    int ncomments;
};

static void append(char **buf, size_t *len, const char *s)
{
    size_t k = strlen(s);
    char *p = realloc(*buf, *len + k + 1);
    if (!p)
        TEST_FAIL("out of memory");
    memcpy(p + *len, s, k + 1);
    *buf = p;
    *len += k;
}

/* The name and return type of a declaration: the identifier before the
 * first "(" once the attribute macros are gone, and what precedes it. */
static void parse_decl(const char *text, struct decl *d)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    const char *drop[] = { "BRAID_API", "BRAID_NORETURN", "BRAID_PRINTF" };
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++) {
        char *p = strstr(buf, drop[i]);
        if (!p)
            continue;
        char *end = p + strlen(drop[i]);
        if (*end == '(')
            end = strchr(end, ')') + 1;
        memset(p, ' ', (size_t)(end - p));
    }
    char *paren = strchr(buf, '(');
    if (!paren)
        TEST_FAIL("no '(' in declaration: %s", text);
    char *e = paren;
    while (e > buf && e[-1] == ' ')
        e--;
    char *s = e;
    while (s > buf && (isalnum((unsigned char)s[-1]) || s[-1] == '_'))
        s--;
    snprintf(d->name, sizeof d->name, "%.*s", (int)(e - s), s);
    while (s > buf && (s[-1] == ' ' || s[-1] == '*'))
        s--;
    char *t = buf;
    while (*t == ' ')
        t++;
    snprintf(d->type, sizeof d->type, "%.*s", (int)(s > t ? s - t : 0), t);
}

/* Parse header text (NUL-terminated, modified in place). */
static void parse_header(char *text, struct header *h)
{
    memset(h, 0, sizeof *h);
    int line = 0, comment_end = -1, last_decl_end = -1, group = -1;
    const char *comment = NULL;
    char *decl = NULL;
    size_t decl_len = 0;
    int decl_start = 0;
    char *cbuf = NULL;
    size_t clen = 0;
    int in_comment = 0, section = 0;

    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        line++; /* no line is empty: see keep_blank_lines() */
        if (!in_comment && !decl && strstr(l, "/*") == l + strspn(l, " \t")) {
            in_comment = 1;
            section = strncmp(l + strspn(l, " \t"), "/* ----", 7) == 0;
            cbuf = NULL;
            clen = 0;
        }
        if (in_comment) {
            append(&cbuf, &clen, l);
            append(&cbuf, &clen, "\n");
            if (strstr(l, "*/")) {
                in_comment = 0;
                if (section || h->ncomments >= MAX_DECLS) {
                    free(cbuf);
                    comment_end = -1;
                } else {
                    h->comments[h->ncomments++] = cbuf;
                    comment = cbuf;
                    comment_end = line;
                }
                cbuf = NULL;
            }
            continue;
        }
        if (!decl && strncmp(l, "BRAID_API", 9) == 0) {
            decl_start = line;
            decl_len = 0;
            append(&decl, &decl_len, "");
        }
        if (decl) {
            append(&decl, &decl_len, l);
            append(&decl, &decl_len, " ");
            if (!strchr(l, ';'))
                continue;
            if (h->n >= MAX_DECLS)
                TEST_FAIL("more than %d declarations", MAX_DECLS);
            struct decl *d = &h->d[h->n];
            parse_decl(decl, d);
            d->line = decl_start;
            if (decl_start == comment_end + 1) {
                group = h->n;
                d->comment = comment;
            } else if (group >= 0 && decl_start == last_decl_end + 1) {
                d->comment = h->d[group].comment;
            } else {
                group = h->n;
                d->comment = NULL;
            }
            d->group = group;
            last_decl_end = line;
            h->n++;
            free(decl);
            decl = NULL;
        }
    }
    free(decl);
    free(cbuf);
}

static void free_header(struct header *h)
{
    for (int i = 0; i < h->ncomments; i++)
        free(h->comments[i]);
}

/* Whether word occurs in s as a whole identifier. */
static int names(const char *s, const char *word)
{
    size_t k = strlen(word);
    for (const char *p = strstr(s, word); p; p = strstr(p + 1, word)) {
        int before = p == s || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
        int after = !(isalnum((unsigned char)p[k]) || p[k] == '_');
        if (before && after)
            return 1;
    }
    return 0;
}

/* Why declaration i is not documented, or NULL if it is. */
static const char *undocumented(const struct header *h, int i)
{
    const struct decl *d = &h->d[i];
    if (!d->comment)
        return "no comment block right above it";
    if (d->group == i)
        return NULL;
    char plain[96];
    snprintf(plain, sizeof plain, "%s", d->name);
    size_t k = strlen(plain);
    if (k > 6 && strcmp(plain + k - 6, "_until") == 0)
        plain[k - 6] = '\0';
    if (names(d->comment, d->name) || names(d->comment, plain))
        return NULL;
    for (int j = d->group; j < i; j++)
        if (strcmp(h->d[j].name, plain) == 0)
            return NULL;
    return "shares the comment of the declarations above it, which does not name it";
}

/* A comment's text without its decoration (the opening and closing marks
 * and each line's leading star), lines joined by single spaces, so that a
 * phrase broken across lines is found.  Returns a static buffer. */
static const char *flatten(const char *comment)
{
    static char out[8192];
    size_t k = 0;
    int space = 0;
    for (const char *p = comment; *p && k + 2 < sizeof out; p++) {
        if (*p == '\n') {
            p += strspn(p + 1, " \t"); /* the next line's indentation */
            if (p[1] == '*' && p[2] != '/')
                p++; /* and its " * " */
            space = 1;
            continue;
        }
        if ((p[0] == '/' && p[1] == '*') || (p[0] == '*' && p[1] == '/')) {
            p++;
            space = 1;
            continue;
        }
        if (*p == ' ' || *p == '\t') {
            space = 1;
            continue;
        }
        if (space && k > 0)
            out[k++] = ' ';
        space = 0;
        out[k++] = *p;
    }
    out[k] = '\0';
    return out;
}

/* The aspects every function's comment states, each by one of its phrases
 * (matched as whole words, in the case given: "Waits" opens a sentence,
 * while "nobody waits on it" states nothing). */
static const struct aspect {
    const char *what;
    const char *phrases[12];
} aspects[] = {
    { "when it waits",
      { "Suspends", "Blocks", "Waits", "Never waits", "never waits", "Never blocks",
        "never blocks", "Does not wait", "does not wait", "Does not block", "does not block",
        NULL } },
    { "whether it is a cancellation point",
      { "Cancellation point", "a cancellation point", NULL } },
    { "which threads may call it",
      { "Any thread", "any thread", "Task only", "task only", "Plain threads only",
        "plain threads only", "Thread-safe", "thread-safe", NULL } },
};

/* The first aspect a documented declaration's comment leaves out, or NULL
 * if it states them all. */
static const char *aspect_missing(const struct decl *d)
{
    if (!d->comment)
        return aspects[0].what;
    const char *text = flatten(d->comment);
    for (size_t a = 0; a < sizeof aspects / sizeof *aspects; a++) {
        int found = 0;
        for (const char *const *ph = aspects[a].phrases; *ph && !found; ph++)
            found = names(text, *ph);
        if (!found)
            return aspects[a].what;
    }
    return NULL;
}

/* Whether a documented int/ssize_t function's comment says what it returns
 * on failure. */
static int errors_told(const struct decl *d)
{
    if (strcmp(d->type, "int") != 0 && strcmp(d->type, "ssize_t") != 0)
        return 1;
    const char *c = d->comment;
    if (!c)
        return 0;
    if (strstr(c, "-E") || strstr(c, "rror") || strstr(c, "as braid_"))
        return 1;
    /* A comment that is a call: "braid_listen(addr, SOCK_DGRAM, 0, 0)." */
    const char *p = c + strspn(c, "/* \t\n");
    return strncmp(p, "braid_", 6) == 0 && strchr(p, '(') && strchr(p, '(') < strchr(p, ' ');
}

static char root[PATH_MAX], mandir[PATH_MAX + 16];

/* The source tree (the runner's working directory) and the build
 * directory's man pages (next to the directory of this binary). */
static void locate(void)
{
    if (test_under_valgrind())
        SKIP("reads files only: nothing of braid to check under Valgrind");
    if (!getcwd(root, sizeof root) || access("include/braid.h", R_OK) != 0)
        SKIP("not run from the source tree (include/braid.h not found)");
    char self[PATH_MAX];
    test_sibling("..", self, sizeof self);
    snprintf(mandir, sizeof mandir, "%s/man/man3", self);
}


/* strtok skips empty lines, which would hide blank separators: make each
 * empty line a line holding one space. */
static char *keep_blank_lines(char *text)
{
    char *out = NULL;
    size_t len = 0;
    append(&out, &len, "");
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        size_t k = nl ? (size_t)(nl - p) : strlen(p);
        char line[4096];
        snprintf(line, sizeof line, "%.*s\n", (int)k, p);
        append(&out, &len, k == 0 ? " \n" : line);
        p += k + (nl ? 1 : 0);
    }
    free(text);
    return out;
}

static void load(struct header *h)
{
    char *text = test_read_file("include/braid.h");
    if (!text)
        TEST_FAIL("cannot read include/braid.h");
    text = keep_blank_lines(text);
    parse_header(text, h);
    free(text);
}

static struct header hdr;

TEST(header_parsed)
{
    locate();
    load(&hdr);
    /* The parser finds what grep finds. */
    char *text = test_read_file("include/braid.h");
    int grep = 0;
    for (char *p = text; (p = strstr(p, "\nBRAID_API")); p++)
        grep++;
    free(text);
    CHECK_EQ(hdr.n, grep);
    CHECK(hdr.n >= 150);
    int found = 0;
    for (int i = 0; i < hdr.n; i++) {
        if (strcmp(hdr.d[i].name, "braid_panic_at") == 0)
            {
            found |= 1;
            CHECK_STR(hdr.d[i].type, "void");
        }
        if (strcmp(hdr.d[i].name, "braid_read") == 0)
            {
            found |= 2;
            CHECK_STR(hdr.d[i].type, "ssize_t");
        }
        if (strcmp(hdr.d[i].name, "braid_version") == 0)
            {
            found |= 4;
            CHECK_STR(hdr.d[i].type, "const char");
        }
    }
    CHECK_EQ(found, 7);
    free_header(&hdr);
}

TEST(every_function_documented)
{
    locate();
    load(&hdr);
    int bad = 0;
    for (int i = 0; i < hdr.n; i++) {
        const char *why = undocumented(&hdr, i);
        const char *aspect = why ? NULL : aspect_missing(&hdr.d[i]);
        if (why) {
            fprintf(stderr, "include/braid.h:%d: %s: %s\n", hdr.d[i].line, hdr.d[i].name, why);
            bad++;
        } else if (aspect) {
            fprintf(stderr, "include/braid.h:%d: %s: its comment does not say %s\n",
                    hdr.d[i].line, hdr.d[i].name, aspect);
            bad++;
        } else if (!errors_told(&hdr.d[i])) {
            fprintf(stderr, "include/braid.h:%d: %s: its comment names no error it returns\n",
                    hdr.d[i].line, hdr.d[i].name);
            bad++;
        }
    }
    free_header(&hdr);
    CHECK_EQ(bad, 0);
}

/* The checker itself rejects what it must (a test that cannot fail is no
 * test). */
TEST(checker_rejects_undocumented)
{
    char text[] = "/* Does a.  Returns 0 or -EINVAL. */\n"
                  "BRAID_API int braid_a(void);\n"
                  "BRAID_API int braid_a_until(uint64_t d);\n"
                  "BRAID_API int braid_b(void);\n"
                  " \n"
                  "BRAID_API void braid_c(void);\n"
                  "/* Does d. */\n"
                  "BRAID_API int braid_d(int x,\n"
                  "                      int y);\n"
                  "/* ---- part ----\n * Intro. */\n"
                  "BRAID_API void braid_e(void);\n";
    struct header *h = calloc(1, sizeof *h);
    CHECK(h);
    parse_header(text, h);
    CHECK_EQ(h->n, 6);
    CHECK(undocumented(h, 0) == NULL);
    CHECK(undocumented(h, 1) == NULL);  /* braid_a's _until form */
    CHECK(undocumented(h, 2) != NULL);  /* braid_b: not named */
    CHECK(undocumented(h, 3) != NULL);  /* braid_c: blank line */
    CHECK(undocumented(h, 4) == NULL);
    CHECK(undocumented(h, 5) != NULL);  /* braid_e: under a part's introduction */
    CHECK(!errors_told(&h->d[4]));       /* braid_d: no error named */
    CHECK_STR(h->d[4].name, "braid_d");
    CHECK_STR(h->d[4].type, "int");
    free_header(h);
    free(h);
}

/* A function whose comment leaves out one aspect fails; the phrases count
 * across line breaks, and only as the conventions spell them. */
TEST(checker_rejects_missing_aspects)
{
    char text[] = "/* All four.  Suspends a task; blocks a plain thread.  Not a\n"
                  " * cancellation point.  Any thread.  Returns 0 or -EINVAL. */\n"
                  "BRAID_API int braid_all(void);\n"
                  "/* No waits.  Cancellation point.  Any thread.  Returns -EINVAL. */\n"
                  "BRAID_API int braid_no_wait(void);\n"
                  "/* No cancel.  Never waits; any thread.  Returns 0 or -EINVAL. */\n"
                  "BRAID_API int braid_no_cancel(void);\n"
                  "/* No thread.  Never waits.  Cancellation point.  Returns -EINVAL. */\n"
                  "BRAID_API int braid_no_thread(void);\n"
                  "/* Silent on failure.  Never waits; not a cancellation point; task\n"
                  " * only. */\n"
                  "BRAID_API int braid_no_errors(void);\n"
                  "/* Incidental words: nobody waits on it, cancellation points elsewhere,\n"
                  " * the thread that owns it.  Returns -EINVAL. */\n"
                  "BRAID_API int braid_incidental(void);\n"
                  "/* A void one needs no errors.  Blocks.  Cancellation point.  Plain\n"
                  " * threads only. */\n"
                  "BRAID_API void braid_void(void);\n"
                  "/* Shared.  Waits.  Cancellation point.  Not thread-safe.  -EINVAL. */\n"
                  "BRAID_API int braid_s(void);\n"
                  "BRAID_API int braid_s_until(uint64_t d);\n";
    struct header *h = calloc(1, sizeof *h);
    CHECK(h);
    parse_header(text, h);
    CHECK_EQ(h->n, 9);
    for (int i = 0; i < h->n; i++)
        CHECK(undocumented(h, i) == NULL);
    CHECK(aspect_missing(&h->d[0]) == NULL);
    CHECK(errors_told(&h->d[0]));
    CHECK_STR(aspect_missing(&h->d[1]), "when it waits");
    CHECK_STR(aspect_missing(&h->d[2]), "whether it is a cancellation point");
    CHECK_STR(aspect_missing(&h->d[3]), "which threads may call it");
    CHECK(aspect_missing(&h->d[4]) == NULL);
    CHECK(!errors_told(&h->d[4]));
    CHECK_STR(aspect_missing(&h->d[5]), "when it waits");
    CHECK(aspect_missing(&h->d[6]) == NULL); /* across a line break */
    CHECK(errors_told(&h->d[6]));            /* void */
    CHECK(aspect_missing(&h->d[7]) == NULL);
    CHECK(aspect_missing(&h->d[8]) == NULL); /* the group's comment */
    /* Each incidental word alone states nothing. */
    const char *const incidental[] = { "nobody waits on it", "cancellation points elsewhere",
                                       "the thread that owns it", "Waiting.", "Suspended." };
    for (size_t i = 0; i < sizeof incidental / sizeof *incidental; i++) {
        char c[128];
        snprintf(c, sizeof c, "/* %s */", incidental[i]);
        struct decl d = { .comment = c };
        CHECK(aspect_missing(&d) != NULL);
    }
    free_header(h);
    free(h);
}

TEST(man_page_per_function)
{
    locate();
    load(&hdr);
    struct stat st;
    if (stat(mandir, &st) != 0)
        TEST_FAIL("%s missing: run make man", mandir);
    int bad = 0;
    for (int i = 0; i < hdr.n; i++) {
        char path[PATH_MAX + 160];
        snprintf(path, sizeof path, "%s/%s.3", mandir, hdr.d[i].name);
        char *page = test_read_file(path);
        char th[160] = ".TH ";
        for (size_t k = 0; hdr.d[i].name[k] && k < sizeof th - 5; k++)
            th[4 + k] = (char)toupper((unsigned char)hdr.d[i].name[k]);
        if (!page || !strstr(page, th) || !strstr(page, ".SH SYNOPSIS") ||
            !strstr(page, ".SH DESCRIPTION") || !names(page, hdr.d[i].name)) {
            fprintf(stderr, "%s: missing or incomplete\n", path);
            bad++;
        }
        free(page);
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/braid.3", mandir);
    CHECK(access(path, R_OK) == 0);
    free_header(&hdr);
    CHECK_EQ(bad, 0);
}
