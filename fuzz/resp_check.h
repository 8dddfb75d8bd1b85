/*
 * The RESP parser of examples/mini_redis.c, checked on arbitrary bytes
 * (fuzz/fuzz_resp.c; tests/test_fuzz_corpus.c replays fuzz/corpus/resp).
 * The example is compiled in whole, its main renamed; only its parser runs,
 * on a connection with no socket.
 *
 * The bytes are parsed twice: all at once, and arriving in two parts (the
 * first byte says where the input is cut), as reads deliver them.  Both must
 * give the same commands and end the same way, every argument must lie
 * inside the buffer, and the parser must never step past the input.
 */
#ifndef BRAID_FUZZ_RESP_CHECK_H
#define BRAID_FUZZ_RESP_CHECK_H

#define main mini_redis_main
#include "../examples/mini_redis.c"
#undef main

struct resp_result {
    uint64_t hash;                  /* of every command's arguments */
    size_t commands;
    bool error;
};

static void resp_fail(const char *what)
{
    fprintf(stderr, "RESP check failed: %s\n", what);
    abort();
}

static void resp_hash(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= UINT64_C(0x100000001b3);
    }
}

/* Parse what c holds up to its in_len, as the connection loop does. */
static bool resp_drain(struct conn *c, struct resp_result *res)
{
    while (!c->closing && !c->failed) {
        int r = parse(c);
        if (c->in_pos > c->in_len)
            resp_fail("consumed past the input");
        if (r == PARSE_MORE)
            return true;
        if (r == PARSE_ERROR)
            break;
        if (r == PARSE_COMMAND) {
            if (c->argc == 0)
                resp_fail("a command without arguments");
            resp_hash(&res->hash, &c->argc, sizeof c->argc);
            for (size_t i = 0; i < c->argc; i++) {
                const struct arg *a = &c->argv[i];
                if (a->p < c->in || a->p + a->n > c->in + c->in_len)
                    resp_fail("an argument outside the buffer");
                resp_hash(&res->hash, &a->n, sizeof a->n);
                resp_hash(&res->hash, a->p, a->n);
            }
            res->commands++;
        }
    }
    res->error = true;
    return false;
}

static struct resp_result resp_parse(const uint8_t *data, size_t len, size_t cut)
{
    struct resp_result res = { UINT64_C(0xcbf29ce484222325), 0, false };
    struct conn c;
    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.in = malloc(len ? len : 1);
    if (!c.in)
        abort();
    memcpy(c.in, data, len);
    c.in_cap = len;
    c.in_len = cut;
    if (resp_drain(&c, &res)) {
        c.in_len = len;
        resp_drain(&c, &res);
    }
    free(c.in);
    free(c.argv);
    free(c.out);
    return res;
}

static void resp_check(const uint8_t *data, size_t len)
{
    if (len == 0)
        return;
    size_t cut = 1 + data[0] * (len - 1) / 255; /* 1 .. len */
    struct resp_result whole = resp_parse(data + 1, len - 1, len - 1);
    struct resp_result parts = resp_parse(data + 1, len - 1, cut - 1);
    if (whole.hash != parts.hash || whole.commands != parts.commands ||
        whole.error != parts.error)
        resp_fail("parsing in two parts differs from parsing at once");
}

#endif
