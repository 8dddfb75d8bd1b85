/*
 * mini_redis: a small Redis-compatible server on braid, in the spirit of
 * Tokio's mini-redis tutorial.  Real clients (redis-cli, redis-benchmark,
 * client libraries speaking RESP2) work with it.
 *
 *   mini_redis [--port N] [--bind HOST] [--workers N] [--idle-timeout-ms N]
 *              [--max-bulk-len N]
 *
 * --port 0 picks a free port; the first line on stdout is "listening on
 * ADDR".  SIGINT or SIGTERM shuts the server down gracefully: it stops
 * accepting, lets the connections finish what they have received (up to
 * 2 s), cancels the rest and exits 0.
 *
 * How it is built:
 *  - one task per connection, which reads into its own buffer, parses the
 *    commands there in place (RESP arrays of bulk strings, and inline
 *    commands as typed into telnet), answers them into an output buffer,
 *    and writes that once no complete command is left (pipelining).  It
 *    keeps its own buffer rather than a braid_reader: it needs to see
 *    whether a whole command is buffered before deciding to write, and to
 *    leave a command that arrives in pieces where it is;
 *  - the keyspace is a hash table split into 64 shards, each behind a
 *    braid_mutex (connections run on every worker); keys expire lazily
 *    when touched and a sweeper task removes expired keys in the
 *    background;
 *  - PUBLISH hands a reference-counted message to each subscriber's
 *    outbox (a braid channel); a subscribed connection has a second task
 *    that writes its outbox to the socket, so the connection's task keeps
 *    reading commands (SUBSCRIBE, UNSUBSCRIBE, PING) meanwhile.  A
 *    subscriber that falls 1024 messages behind is disconnected;
 *  - bad protocol input gets "-ERR Protocol error: ..." and the connection
 *    is closed; a connection that does not complete a command within the
 *    idle timeout (or does not read its replies) is closed too.
 *
 * Commands: PING, ECHO, GET, SET (EX, PX, NX, XX, KEEPTTL, GET), DEL,
 * EXISTS, INCR, DECR, INCRBY, DECRBY, EXPIRE, PEXPIRE, TTL, PTTL, PERSIST,
 * DBSIZE, FLUSHDB, FLUSHALL, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, QUIT, and
 * what clients send when they connect: CONFIG GET, COMMAND, CLIENT,
 * SELECT 0.  HELLO is unknown, so clients fall back to RESP2.  Commands on
 * several keys (DEL, EXISTS) take the keys one at a time, not atomically.
 */
#include <braid.h>

#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- configuration ---------------------------------------------------------- */

static struct {
    unsigned port;
    const char *bind;
    unsigned workers;          /* 0: one per CPU */
    uint64_t idle_timeout_ms;  /* 0: none */
    long long max_bulk_len;
} opt = { 6379, "127.0.0.1", 0, 60000, 512LL * 1024 * 1024 };

#define NSHARDS 64             /* keyspace shards: the hash's top 6 bits */
#define SHARD_SHIFT 58
#define MAX_MULTIBULK (1024LL * 1024)
#define MAX_LINE ((size_t)64 * 1024) /* an inline command or a length line */
#define IN_INITIAL ((size_t)16384)
#define OUT_INITIAL ((size_t)16384)
#define OUT_FLUSH ((size_t)64 * 1024) /* write out mid-batch once this much is waiting */
#define OUTBOX_CAP 1024        /* messages queued for a subscriber before it is dropped */
#define DRAIN_MS 2000          /* graceful shutdown: time given to connections */
#define SWEEP_MS 100
#define TASK_STACK ((size_t)64 * 1024)
#define NS_PER_MS 1000000ull

/* ---- the keyspace ------------------------------------------------------------- */

struct entry {
    struct entry *next;
    uint64_t hash;
    uint64_t expires;          /* braid_now_ns() deadline; 0: never */
    size_t klen, vlen, vcap;
    char data[];               /* the key, then vcap bytes for the value */
};

#define VAL(e) ((e)->data + (e)->klen)

struct shard {
    _Alignas(64) braid_mutex lock; /* one cache line each: no false sharing */
    struct entry **buckets;
    size_t mask;               /* buckets - 1 */
    size_t count;
    size_t sweep;              /* the sweeper's next bucket */
};

static struct shard shards[NSHARDS];

/* A string argument of a command: p points into the connection's buffer. */
struct arg {
    const char *p;
    size_t n;
    size_t off;                /* while parsing: p's offset in the buffer */
};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static bool keyspace_init(void)
{
    for (int i = 0; i < NSHARDS; i++) {
        braid_mutex_init(&shards[i].lock);
        shards[i].mask = 15;
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers: sizeof *p is meant */
        shards[i].buckets = calloc(16, sizeof *shards[i].buckets);
        if (!shards[i].buckets)
            return false;
    }
    return true;
}

static void shard_clear(struct shard *s)
{
    for (size_t b = 0; b <= s->mask; b++) {
        for (struct entry *e = s->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        s->buckets[b] = NULL;
    }
    s->count = 0;
}

static void keyspace_free(void)
{
    for (int i = 0; i < NSHARDS; i++) {
        if (shards[i].buckets)
            shard_clear(&shards[i]);
        free(shards[i].buckets);
        braid_mutex_destroy(&shards[i].lock);
    }
}

static bool expired(const struct entry *e, uint64_t now)
{
    return e->expires && e->expires <= now;
}

/* The live entry of key in s (locked), or NULL; *linkp (if not NULL) gets
 * the link pointing at it.  An expired entry met here is removed. */
static struct entry *lookup(struct shard *s, uint64_t h, const struct arg *key,
                            struct entry ***linkp)
{
    struct entry **link = &s->buckets[h & s->mask];
    for (struct entry *e; (e = *link) != NULL; link = &e->next) {
        if (e->hash != h || e->klen != key->n || memcmp(e->data, key->p, key->n) != 0)
            continue;
        if (e->expires && expired(e, braid_now_ns())) {
            *link = e->next;
            free(e);
            s->count--;
            return NULL;
        }
        if (linkp)
            *linkp = link;
        return e;
    }
    return NULL;
}

static void shard_grow(struct shard *s)
{
    size_t n = (s->mask + 1) * 2;
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers: sizeof *p is meant */
    struct entry **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i <= s->mask; i++) {
        for (struct entry *e = s->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->mask = n - 1;
}

/* Store v as key's value in s (locked).  link points at the existing entry
 * (NULL: there is none); its memory is reused when v fits, and its expiry
 * is kept.  Returns the entry, or NULL when out of memory. */
static struct entry *store(struct shard *s, uint64_t h, const struct arg *key, const char *v,
                           size_t vlen, struct entry **link)
{
    struct entry *old = link ? *link : NULL;
    if (old && vlen <= old->vcap && old->vcap <= 2 * vlen + 64) {
        memcpy(VAL(old), v, vlen);
        old->vlen = vlen;
        return old;
    }
    size_t cap = vlen < 16 ? 16 : vlen;
    struct entry *e = malloc(sizeof *e + key->n + cap);
    if (!e)
        return NULL;
    e->hash = h;
    e->expires = old ? old->expires : 0;
    e->klen = key->n;
    e->vlen = vlen;
    e->vcap = cap;
    memcpy(e->data, key->p, key->n);
    memcpy(VAL(e), v, vlen);
    if (old) {
        e->next = old->next;
        *link = e;
        free(old);
    } else {
        struct entry **head = &s->buckets[h & s->mask];
        e->next = *head;
        *head = e;
        if (++s->count > s->mask + 1)
            shard_grow(s);
    }
    return e;
}

static void unlink_entry(struct shard *s, struct entry **link)
{
    struct entry *e = *link;
    *link = e->next;
    free(e);
    s->count--;
}

/* ---- connections ------------------------------------------------------------- */

struct subscriber;

struct conn {
    int fd;
    bool listed;               /* in srv.conns */
    struct conn *prev, *next;
    /* input: bytes [in_pos, in_len) of in are not consumed yet */
    char *in;
    size_t in_cap, in_len, in_pos;
    /* a RESP array being parsed: want elements, have of them so far, the
     * next one's header at scan (kept across reads, so a large command is
     * not parsed again from its start) */
    long long want, have;
    size_t scan;
    struct arg *argv;
    size_t argc, argv_cap;
    /* output waiting to be written */
    char *out;
    size_t out_len, out_cap;
    bool closing;              /* QUIT or a protocol error: answer, then close */
    bool failed;               /* out of memory, cancelled, or the peer is gone */
    struct subscriber *sub;    /* set once the connection has subscribed */
};

static struct {
    braid_mutex lock;          /* conns, draining */
    struct conn *conns;
    atomic_bool draining;
    int listener;
    braid_token *stop;
    braid_joinset *tasks;      /* the connections; the acceptor's until shutdown */
} srv = { .lock = BRAID_MUTEX_INIT, .listener = -1 };

/* ---- replies ----------------------------------------------------------------- */

static char *out_reserve(struct conn *c, size_t n)
{
    if (c->out_cap - c->out_len < n) {
        size_t cap = c->out_cap ? c->out_cap : OUT_INITIAL;
        while (cap - c->out_len < n)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            c->failed = true;
            return NULL;
        }
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

static void out_add(struct conn *c, const void *p, size_t n)
{
    char *d = out_reserve(c, n);
    if (d) {
        memcpy(d, p, n);
        c->out_len += n;
    }
}

#define OUT_LIT(c, s) out_add((c), (s), sizeof(s) - 1)

/* Decimal digits of v into buf (21 bytes); returns the length. */
static size_t fmt_ll(char *buf, long long v)
{
    char tmp[24];
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    size_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    return len;
}

/* A prefix character, a number, CRLF: ":12\r\n", "$5\r\n", "*3\r\n". */
static void out_num(struct conn *c, char prefix, long long v)
{
    char *d = out_reserve(c, 24);
    if (d) {
        d[0] = prefix;
        size_t n = 1 + fmt_ll(d + 1, v);
        d[n] = '\r';
        d[n + 1] = '\n';
        c->out_len += n + 2;
    }
}

static void out_int(struct conn *c, long long v)
{
    out_num(c, ':', v);
}

static void out_array(struct conn *c, long long n)
{
    out_num(c, '*', n);
}

static void out_bulk(struct conn *c, const char *p, size_t n)
{
    char *d = out_reserve(c, n + 26);
    if (d) {
        d[0] = '$';
        size_t h = 1 + fmt_ll(d + 1, (long long)n);
        d[h] = '\r';
        d[h + 1] = '\n';
        memcpy(d + h + 2, p, n);
        d[h + 2 + n] = '\r';
        d[h + 3 + n] = '\n';
        c->out_len += h + 4 + n;
    }
}

static void out_null(struct conn *c)
{
    OUT_LIT(c, "$-1\r\n");
}

static void out_ok(struct conn *c)
{
    OUT_LIT(c, "+OK\r\n");
}

/* "-ERR <message>\r\n"; CR and LF in the message become spaces. */
BRAID_PRINTF(2, 3)
static void out_error(struct conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    for (int i = 0; i < n; i++)
        if (msg[i] == '\r' || msg[i] == '\n')
            msg[i] = ' ';
    OUT_LIT(c, "-ERR ");
    out_add(c, msg, (size_t)n);
    OUT_LIT(c, "\r\n");
}

/* A client-supplied name made printable for an error message (at most 64
 * characters kept). */
static const char *printable(const struct arg *a, char buf[72])
{
    size_t n = a->n < 64 ? a->n : 64;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)a->p[i];
        buf[i] = (char)(ch >= 0x20 && ch < 0x7f && ch != '\'' ? ch : '?');
    }
    snprintf(buf + n, 4, "%s", a->n > 64 ? "..." : "");
    return buf;
}

/* ---- parsing --------------------------------------------------------------------- */

enum { PARSE_MORE, PARSE_COMMAND, PARSE_EMPTY, PARSE_ERROR };

BRAID_PRINTF(2, 3)
static int protocol_error(struct conn *c, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    out_error(c, "Protocol error: %s", msg);
    c->closing = true;
    return PARSE_ERROR;
}

/* Strict decimal: an optional '-', digits, no leading zeros, no overflow. */
static bool parse_ll(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    bool neg = n > 0 && s[0] == '-';
    if (neg)
        i = 1;
    if (n == i || n - i > 19 || (s[i] == '0' && n - i > 1))
        return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0'); /* 19 digits cannot overflow */
    }
    if (v > (unsigned long long)LLONG_MAX + neg)
        return false;
    *out = neg ? (long long)(0ull - v) : (long long)v;
    return true;
}

static bool arg_ll(const struct arg *a, long long *out)
{
    return parse_ll(a->p, a->n, out);
}

static bool arg_is(const struct arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->n == n && strncasecmp(a->p, word, n) == 0;
}

static bool argv_reserve(struct conn *c, size_t n)
{
    if (n <= c->argv_cap)
        return true;
    size_t cap = c->argv_cap ? c->argv_cap * 2 : 16;
    while (cap < n)
        cap *= 2;
    struct arg *a = realloc(c->argv, cap * sizeof *a);
    if (!a) {
        c->failed = true;
        return false;
    }
    c->argv = a;
    c->argv_cap = cap;
    return true;
}

/* The number on the line starting at in[pos] (after a '*' or '$'), ended
 * by CRLF (a bare LF is an error); *after gets the position past the CRLF.  Returns PARSE_COMMAND
 * (parsed), PARSE_MORE or PARSE_ERROR. */
static int parse_number_line(struct conn *c, size_t pos, long long *v, size_t *after,
                             const char *what)
{
    const char *p = c->in + pos;
    size_t avail = c->in_len - pos;
    const char *nl = memchr(p, '\n', avail < MAX_LINE ? avail : MAX_LINE);
    if (!nl)
        return avail >= MAX_LINE ? protocol_error(c, "too big %s", what) : PARSE_MORE;
    size_t len = (size_t)(nl - p);
    if (len == 0 || nl[-1] != '\r' || !parse_ll(p, len - 1, v))
        return protocol_error(c, "invalid %s", what);
    *after = pos + len + 1;
    return PARSE_COMMAND;
}

/* "*<n>\r\n" then n times "$<len>\r\n<len bytes>\r\n".  The arguments stay
 * in the buffer: argv records where. */
static int parse_multibulk(struct conn *c)
{
    int r;
    if (c->want == 0) {
        /* Set though parse_number_line() sets them whenever it returns
         * PARSE_COMMAND: clang's analyzer cannot follow the variadic
         * protocol_error() to see that it never returns that. */
        long long n = 0;
        size_t after = 0;
        if ((r = parse_number_line(c, c->in_pos + 1, &n, &after, "multibulk length")) !=
            PARSE_COMMAND)
            return r;
        if (n < 0 || n > MAX_MULTIBULK)
            return protocol_error(c, "invalid multibulk length");
        if (n == 0) {
            c->in_pos = after;
            return PARSE_EMPTY;
        }
        c->want = n;
        c->have = 0;
        c->scan = after;
    }
    while (c->have < c->want) {
        size_t pos = c->scan;
        if (pos >= c->in_len)
            return PARSE_MORE;
        unsigned char ch = (unsigned char)c->in[pos];
        if (ch != '$')
            return ch >= 0x20 && ch < 0x7f ? protocol_error(c, "expected '$', got '%c'", ch)
                                           : protocol_error(c, "expected '$', got byte 0x%02x", ch);
        long long len = 0; /* as n above */
        size_t after = 0;
        if ((r = parse_number_line(c, pos + 1, &len, &after, "bulk length")) != PARSE_COMMAND)
            return r;
        if (len < 0 || len > opt.max_bulk_len)
            return protocol_error(c, "invalid bulk length");
        if (c->in_len - after < (size_t)len + 2)
            return PARSE_MORE;
        if (c->in[after + len] != '\r' || c->in[after + len + 1] != '\n')
            return protocol_error(c, "expected CRLF after a bulk string");
        if (!argv_reserve(c, (size_t)c->have + 1))
            return PARSE_ERROR;
        c->argv[c->have].off = after;
        c->argv[c->have].n = (size_t)len;
        c->have++;
        c->scan = after + (size_t)len + 2;
    }
    c->argc = (size_t)c->want;
    for (size_t i = 0; i < c->argc; i++)
        c->argv[i].p = c->in + c->argv[i].off;
    c->in_pos = c->scan;
    c->want = 0;
    return PARSE_COMMAND;
}

/* An inline command: one line of words separated by blanks, words may be
 * quoted ("a b", 'a b'; \n, \r, \t, \\ and \" inside double quotes).
 * Control characters (binary data, a TLS handshake, ...) are a protocol
 * error.  The words are unquoted in place. */
static int parse_inline(struct conn *c)
{
    char *start = c->in + c->in_pos, *nl = NULL;
    size_t avail = c->in_len - c->in_pos, scan = avail < MAX_LINE ? avail : MAX_LINE;
    for (size_t i = 0; i < scan && !nl; i++) { /* junk is refused before its end */
        unsigned char ch = (unsigned char)start[i];
        if (ch == '\n')
            nl = start + i;
        else if ((ch < 0x20 && ch != '\t' && (ch != '\r' || (i + 1 < avail && start[i + 1] != '\n'))) ||
                 ch == 0x7f)
            return protocol_error(c, "invalid byte 0x%02x in an inline request", ch);
    }
    if (!nl)
        return avail >= MAX_LINE ? protocol_error(c, "too big inline request") : PARSE_MORE;
    char *end = nl > start && nl[-1] == '\r' ? nl - 1 : nl;
    size_t argc = 0;
    for (char *p = start;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        char *word = p, *o = p;
        if (*p == '"' || *p == '\'') {
            char quote = *p++;
            for (;;) {
                if (p == end)
                    return protocol_error(c, "unbalanced quotes in request");
                if (*p == quote) {
                    p++;
                    break;
                }
                if (quote == '"' && *p == '\\' && p + 1 < end) {
                    p++;
                    *o++ = (char)(*p == 'n' ? '\n' : *p == 'r' ? '\r' : *p == 't' ? '\t' : *p);
                    p++;
                } else {
                    *o++ = *p++;
                }
            }
            if (p < end && *p != ' ' && *p != '\t')
                return protocol_error(c, "unbalanced quotes in request");
        } else {
            while (p < end && *p != ' ' && *p != '\t')
                o++, p++;
        }
        if (!argv_reserve(c, argc + 1))
            return PARSE_ERROR;
        c->argv[argc].p = word;
        c->argv[argc].n = (size_t)(o - word);
        argc++;
    }
    c->in_pos = (size_t)(nl + 1 - c->in);
    if (argc == 0)
        return PARSE_EMPTY;
    c->argc = argc;
    return PARSE_COMMAND;
}

static int parse(struct conn *c)
{
    if (c->want)
        return parse_multibulk(c);
    if (c->in_pos == c->in_len)
        return PARSE_MORE;
    return c->in[c->in_pos] == '*' ? parse_multibulk(c) : parse_inline(c);
}

/* ---- key commands --------------------------------------------------------------- */

/* Lock the shard of key; NULL if the task was cancelled meanwhile. */
static struct shard *lock_key(struct conn *c, const struct arg *key, uint64_t *h)
{
    *h = hash_bytes(key->p, key->n);
    struct shard *s = &shards[*h >> SHARD_SHIFT];
    if (braid_mutex_lock(&s->lock) != 0) {
        c->failed = true;
        return NULL;
    }
    return s;
}

static void unlock_shard(struct shard *s)
{
    braid_mutex_unlock(&s->lock);
}

static void cmd_get(struct conn *c)
{
    uint64_t h;
    struct shard *s = lock_key(c, &c->argv[1], &h);
    if (!s)
        return;
    struct entry *e = lookup(s, h, &c->argv[1], NULL);
    if (e)
        out_bulk(c, VAL(e), e->vlen); /* copied under the lock */
    else
        out_null(c);
    unlock_shard(s);
}

/* ms milliseconds from now as a braid_now_ns() deadline; false if that
 * overflows. */
static bool deadline_after_ms(long long ms, uint64_t *out)
{
    uint64_t now = braid_now_ns();
    if (ms < 0 || (uint64_t)ms > (UINT64_MAX - now) / NS_PER_MS)
        return false;
    *out = now + (uint64_t)ms * NS_PER_MS;
    return true;
}

/* SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | KEEPTTL] */
static void cmd_set(struct conn *c)
{
    enum { NX = 1, XX = 2, GET = 4, KEEPTTL = 8, EXPIRY = 16 };
    unsigned flags = 0;
    uint64_t expires = 0;
    for (size_t i = 3; i < c->argc; i++) {
        const struct arg *a = &c->argv[i];
        if (arg_is(a, "nx") && !(flags & XX)) {
            flags |= NX;
        } else if (arg_is(a, "xx") && !(flags & NX)) {
            flags |= XX;
        } else if (arg_is(a, "get")) {
            flags |= GET;
        } else if (arg_is(a, "keepttl") && !(flags & EXPIRY)) {
            flags |= KEEPTTL;
        } else if ((arg_is(a, "ex") || arg_is(a, "px")) && !(flags & (EXPIRY | KEEPTTL)) &&
                   i + 1 < c->argc) {
            long long v;
            if (!arg_ll(&c->argv[i + 1], &v)) {
                out_error(c, "value is not an integer or out of range");
                return;
            }
            bool secs = arg_is(a, "ex");
            if (v <= 0 || (secs && v > LLONG_MAX / 1000) ||
                !deadline_after_ms(secs ? v * 1000 : v, &expires)) {
                out_error(c, "invalid expire time in 'set' command");
                return;
            }
            flags |= EXPIRY;
            i++;
        } else {
            out_error(c, "syntax error");
            return;
        }
    }
    const struct arg *key = &c->argv[1], *val = &c->argv[2];
    uint64_t h;
    struct shard *s = lock_key(c, key, &h);
    if (!s)
        return;
    struct entry **link = NULL;
    struct entry *e = lookup(s, h, key, &link);
    size_t mark = c->out_len;
    if (flags & GET) {
        if (e)
            out_bulk(c, VAL(e), e->vlen);
        else
            out_null(c);
    }
    if ((flags & NX && e) || (flags & XX && !e)) {
        unlock_shard(s);
        if (!(flags & GET))
            out_null(c);
        return;
    }
    e = store(s, h, key, val->p, val->n, e ? link : NULL);
    if (e && !(flags & KEEPTTL))
        e->expires = expires;
    unlock_shard(s);
    if (!e) {
        c->out_len = mark;
        out_error(c, "out of memory");
    } else if (!(flags & GET)) {
        out_ok(c);
    }
}

static void incr_by(struct conn *c, long long delta)
{
    const struct arg *key = &c->argv[1];
    uint64_t h;
    struct shard *s = lock_key(c, key, &h);
    if (!s)
        return;
    struct entry **link = NULL;
    struct entry *e = lookup(s, h, key, &link);
    long long v = 0;
    if (e && !parse_ll(VAL(e), e->vlen, &v)) {
        unlock_shard(s);
        out_error(c, "value is not an integer or out of range");
        return;
    }
    if ((delta > 0 && v > LLONG_MAX - delta) || (delta < 0 && v < LLONG_MIN - delta)) {
        unlock_shard(s);
        out_error(c, "increment or decrement would overflow");
        return;
    }
    v += delta;
    char digits[24];
    e = store(s, h, key, digits, fmt_ll(digits, v), e ? link : NULL);
    unlock_shard(s);
    if (e)
        out_int(c, v);
    else
        out_error(c, "out of memory");
}

static void cmd_incr(struct conn *c)
{
    incr_by(c, 1);
}

static void cmd_decr(struct conn *c)
{
    incr_by(c, -1);
}

static void cmd_incrby(struct conn *c)
{
    long long d;
    if (!arg_ll(&c->argv[2], &d))
        out_error(c, "value is not an integer or out of range");
    else
        incr_by(c, d);
}

static void cmd_decrby(struct conn *c)
{
    long long d;
    if (!arg_ll(&c->argv[2], &d) || d == LLONG_MIN)
        out_error(c, "value is not an integer or out of range");
    else
        incr_by(c, -d);
}

/* DEL and EXISTS: how many of the keys there are (deleting them for DEL). */
static void count_keys(struct conn *c, bool del)
{
    long long n = 0;
    for (size_t i = 1; i < c->argc; i++) {
        uint64_t h;
        struct shard *s = lock_key(c, &c->argv[i], &h);
        if (!s)
            return;
        struct entry **link;
        if (lookup(s, h, &c->argv[i], &link)) {
            n++;
            if (del)
                unlink_entry(s, link);
        }
        unlock_shard(s);
    }
    out_int(c, n);
}

static void cmd_del(struct conn *c)
{
    count_keys(c, true);
}

static void cmd_exists(struct conn *c)
{
    count_keys(c, false);
}

/* EXPIRE key seconds, PEXPIRE key milliseconds: 1 if key exists.  A time
 * not in the future deletes the key. */
static void expire_in(struct conn *c, long long unit_ms, const char *name)
{
    long long v;
    if (!arg_ll(&c->argv[2], &v)) {
        out_error(c, "value is not an integer or out of range");
        return;
    }
    uint64_t deadline = 0;
    if (v > 0 && (v > LLONG_MAX / unit_ms || !deadline_after_ms(v * unit_ms, &deadline))) {
        out_error(c, "invalid expire time in '%s' command", name);
        return;
    }
    uint64_t h;
    struct shard *s = lock_key(c, &c->argv[1], &h);
    if (!s)
        return;
    struct entry **link;
    struct entry *e = lookup(s, h, &c->argv[1], &link);
    if (e && v <= 0)
        unlink_entry(s, link);
    else if (e)
        e->expires = deadline;
    unlock_shard(s);
    out_int(c, e != NULL);
}

static void cmd_expire(struct conn *c)
{
    expire_in(c, 1000, "expire");
}

static void cmd_pexpire(struct conn *c)
{
    expire_in(c, 1, "pexpire");
}

/* TTL and PTTL: -2 no such key, -1 no expiry, else the time left. */
static void ttl(struct conn *c, bool ms)
{
    uint64_t h;
    struct shard *s = lock_key(c, &c->argv[1], &h);
    if (!s)
        return;
    struct entry *e = lookup(s, h, &c->argv[1], NULL);
    long long left = -2;
    if (e && !e->expires) {
        left = -1;
    } else if (e) {
        uint64_t now = braid_now_ns(), ns = e->expires > now ? e->expires - now : 0;
        left = ms ? (long long)((ns + NS_PER_MS / 2) / NS_PER_MS)
                  : (long long)((ns + 500 * NS_PER_MS) / (1000 * NS_PER_MS));
    }
    unlock_shard(s);
    out_int(c, left);
}

static void cmd_ttl(struct conn *c)
{
    ttl(c, false);
}

static void cmd_pttl(struct conn *c)
{
    ttl(c, true);
}

static void cmd_persist(struct conn *c)
{
    uint64_t h;
    struct shard *s = lock_key(c, &c->argv[1], &h);
    if (!s)
        return;
    struct entry *e = lookup(s, h, &c->argv[1], NULL);
    bool had = e && e->expires;
    if (had)
        e->expires = 0;
    unlock_shard(s);
    out_int(c, had);
}

static void cmd_dbsize(struct conn *c)
{
    long long n = 0;
    for (int i = 0; i < NSHARDS; i++) {
        if (braid_mutex_lock(&shards[i].lock) != 0) {
            c->failed = true;
            return;
        }
        n += (long long)shards[i].count;
        braid_mutex_unlock(&shards[i].lock);
    }
    out_int(c, n);
}

static void cmd_flushall(struct conn *c)
{
    for (int i = 0; i < NSHARDS; i++) {
        if (braid_mutex_lock(&shards[i].lock) != 0) {
            c->failed = true;
            return;
        }
        shard_clear(&shards[i]);
        braid_mutex_unlock(&shards[i].lock);
    }
    out_ok(c);
}

/* ---- publish and subscribe ---------------------------------------------------- */

/* Bytes to send to subscribers, shared by all of them. */
struct msg {
    atomic_uint refs;
    size_t len;
    char data[];
};

static struct msg *msg_new(size_t len)
{
    struct msg *m = malloc(sizeof *m + len);
    if (m) {
        atomic_init(&m->refs, 1);
        m->len = len;
    }
    return m;
}

static void msg_unref(struct msg *m)
{
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

struct channel;

struct subscriber {
    int fd;
    braid_chan *outbox;        /* struct msg *: what the writer task sends */
    braid_task writer;
    atomic_bool dead;          /* the socket failed, or it fell behind */
    struct channel **chans;    /* its channels (pubsub.lock) */
    size_t nchans, cap;
};

struct channel {
    struct channel *next;
    struct subscriber **subs;
    size_t nsubs, cap;
    size_t len;
    char name[];
};

#define PUBSUB_BUCKETS 1024

static struct {
    braid_mutex lock;
    struct channel *buckets[PUBSUB_BUCKETS];
} pubsub = { .lock = BRAID_MUTEX_INIT };

static struct channel **channel_link(const struct arg *name)
{
    struct channel **link = &pubsub.buckets[hash_bytes(name->p, name->n) % PUBSUB_BUCKETS];
    while (*link && ((*link)->len != name->n || memcmp((*link)->name, name->p, name->n) != 0))
        link = &(*link)->next;
    return link;
}

static bool grow_array(void *arrayp, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *p = realloc(*(void **)arrayp, ncap * elem);
    if (!p)
        return false;
    *(void **)arrayp = p;
    *cap = ncap;
    return true;
}

/* Subscribe s to name (pubsub.lock held).  False when out of memory. */
static bool channel_join(struct subscriber *s, const struct arg *name)
{
    struct channel **link = channel_link(name), *ch = *link;
    for (size_t i = 0; ch && i < s->nchans; i++)
        if (s->chans[i] == ch)
            return true; /* already */
    if (!ch) {
        ch = calloc(1, sizeof *ch + name->n);
        if (!ch)
            return false;
        ch->len = name->n;
        memcpy(ch->name, name->p, name->n);
        *link = ch;
    }
    /* NOLINTBEGIN(bugprone-sizeof-expression): arrays of pointers: sizeof *p is meant */
    if (!grow_array(&ch->subs, &ch->cap, ch->nsubs, sizeof *ch->subs) ||
        !grow_array(&s->chans, &s->cap, s->nchans, sizeof *s->chans)) {
        /* NOLINTEND(bugprone-sizeof-expression) */
        if (ch->nsubs == 0) {
            *link = ch->next;
            free(ch->subs);
            free(ch);
        }
        return false;
    }
    ch->subs[ch->nsubs++] = s;
    s->chans[s->nchans++] = ch;
    return true;
}

/* Remove s from its i-th channel (pubsub.lock held); a channel nobody
 * listens to any more goes. */
static void channel_leave(struct subscriber *s, size_t i)
{
    struct channel *ch = s->chans[i];
    s->chans[i] = s->chans[--s->nchans];
    for (size_t k = 0; k < ch->nsubs; k++) {
        if (ch->subs[k] == s) {
            ch->subs[k] = ch->subs[--ch->nsubs];
            break;
        }
    }
    if (ch->nsubs == 0) {
        struct arg name = { ch->name, ch->len, 0 };
        struct channel **link = channel_link(&name);
        *link = ch->next;
        free(ch->subs);
        free(ch);
    }
}

/* Give up on a subscriber: its connection ends (both of its tasks wake). */
static void subscriber_kill(struct subscriber *s)
{
    if (!atomic_exchange(&s->dead, true))
        braid_shutdown(s->fd, SHUT_RDWR);
}

static void cmd_publish(struct conn *c)
{
    const struct arg *name = &c->argv[1], *payload = &c->argv[2];
    if (braid_mutex_lock(&pubsub.lock) != 0) {
        c->failed = true;
        return;
    }
    struct channel *ch = *channel_link(name);
    long long reached = 0;
    struct msg *m = NULL;
    if (ch && (m = msg_new(name->n + payload->n + 128)) != NULL) {
        struct conn fmt = { .out = m->data, .out_cap = m->len }; /* format in place */
        OUT_LIT(&fmt, "*3\r\n$7\r\nmessage\r\n");
        out_bulk(&fmt, name->p, name->n);
        out_bulk(&fmt, payload->p, payload->n);
        m->len = fmt.out_len;
        for (size_t i = 0; i < ch->nsubs; i++) {
            struct subscriber *s = ch->subs[i];
            if (atomic_load(&s->dead))
                continue;
            atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
            int rc = braid_chan_try_send(s->outbox, &m);
            if (rc == 0) {
                reached++;
                continue;
            }
            /* The reference just taken, not ours (the analyzer does not count them). */
            /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
            msg_unref(m);
            if (rc == -EAGAIN) /* it does not keep up: drop it, as Redis does */
                subscriber_kill(s);
        }
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): ours, the last use of m */
        msg_unref(m);
    }
    braid_mutex_unlock(&pubsub.lock);
    if (ch && !m)
        out_error(c, "out of memory");
    else
        out_int(c, reached);
}

/* The writer task of a subscribed connection: it sends the outbox's
 * messages, several per system call, until the outbox is closed. */
static void *writer_main(void *arg)
{
    struct subscriber *s = arg;
    struct msg *batch[64];
    struct iovec iov[64];
    for (;;) {
        struct msg *m;
        if (braid_chan_recv(s->outbox, &m) != 0)
            return NULL; /* closed and empty, or cancelled */
        int n = 0;
        batch[n++] = m;
        while (n < 64 && braid_chan_try_recv(s->outbox, &m) == 0)
            batch[n++] = m;
        if (!atomic_load(&s->dead)) {
            for (int i = 0; i < n; i++)
                iov[i] = (struct iovec){ batch[i]->data, batch[i]->len };
            uint64_t deadline = opt.idle_timeout_ms ? braid_deadline_ms(opt.idle_timeout_ms)
                                                    : BRAID_FOREVER;
            if (braid_writev_all_until(s->fd, iov, n, deadline) < 0)
                subscriber_kill(s);
        }
        for (int i = 0; i < n; i++)
            msg_unref(batch[i]);
    }
}

/* From now on the connection's output goes through an outbox and a writer
 * task, so that published messages and replies are not interleaved. */
static bool subscriber_start(struct conn *c)
{
    struct subscriber *s = calloc(1, sizeof *s);
    if (!s)
        return false;
    s->fd = c->fd;
    atomic_init(&s->dead, false);
    if (braid_chan_new(&s->outbox, sizeof(struct msg *), OUTBOX_CAP) != 0) {
        free(s);
        return false;
    }
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "redis-writer";
    o.stack_size = TASK_STACK;
    if (braid_spawn_ex(&s->writer, &o, writer_main, s) != 0) {
        braid_chan_sender_drop(s->outbox);
        braid_chan_receiver_drop(s->outbox);
        free(s);
        return false;
    }
    c->sub = s;
    return true;
}

/* Hand the pending output to the writer; with nowait, fail rather than
 * wait for room (a full outbox then drops the subscriber). */
static void outbox_put(struct conn *c, bool nowait)
{
    struct msg *m = msg_new(c->out_len);
    if (!m) {
        c->failed = true;
        return;
    }
    memcpy(m->data, c->out, c->out_len);
    c->out_len = 0;
    int rc = nowait ? braid_chan_try_send(c->sub->outbox, &m)
                    : braid_chan_send_until(c->sub->outbox, &m,
                                            opt.idle_timeout_ms
                                                ? braid_deadline_ms(opt.idle_timeout_ms)
                                                : BRAID_FOREVER);
    if (rc != 0) {
        msg_unref(m);
        c->failed = true;
    }
}

static void subscription_reply(struct conn *c, const char *kind, const struct arg *name)
{
    out_array(c, 3);
    out_bulk(c, kind, strlen(kind));
    if (name)
        out_bulk(c, name->p, name->n);
    else
        out_null(c);
    out_int(c, (long long)c->sub->nchans);
}

static void cmd_subscribe(struct conn *c)
{
    if (!c->sub && !subscriber_start(c)) {
        out_error(c, "out of memory");
        return;
    }
    if (braid_mutex_lock(&pubsub.lock) != 0) {
        c->failed = true;
        return;
    }
    for (size_t i = 1; i < c->argc && !c->failed; i++) {
        if (!channel_join(c->sub, &c->argv[i]))
            c->failed = true;
        else
            subscription_reply(c, "subscribe", &c->argv[i]);
    }
    /* Queued while the channels are locked: the confirmations go out
     * before any message published to them. */
    if (!c->failed)
        outbox_put(c, true);
    braid_mutex_unlock(&pubsub.lock);
}

static void cmd_unsubscribe(struct conn *c)
{
    struct subscriber *s = c->sub;
    if (!s || (c->argc == 1 && s->nchans == 0)) {
        OUT_LIT(c, "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        return;
    }
    if (braid_mutex_lock(&pubsub.lock) != 0) {
        c->failed = true;
        return;
    }
    if (c->argc == 1) {
        while (s->nchans) {
            struct channel *ch = s->chans[s->nchans - 1];
            out_array(c, 3);
            OUT_LIT(c, "$11\r\nunsubscribe\r\n");
            out_bulk(c, ch->name, ch->len);
            channel_leave(s, s->nchans - 1);
            out_int(c, (long long)s->nchans);
        }
    }
    for (size_t i = 1; i < c->argc; i++) {
        const struct arg *name = &c->argv[i];
        for (size_t k = 0; k < s->nchans; k++) {
            if (s->chans[k]->len == name->n && !memcmp(s->chans[k]->name, name->p, name->n)) {
                channel_leave(s, k);
                break;
            }
        }
        subscription_reply(c, "unsubscribe", name);
    }
    braid_mutex_unlock(&pubsub.lock);
}

/* Unsubscribe from everything, let the writer send what is queued (unless
 * the peer is gone or the task is being cancelled), free it all. */
static void subscriber_stop(struct conn *c)
{
    struct subscriber *s = c->sub;
    braid_mutex_lock(&pubsub.lock); /* shielded: cannot fail */
    while (s->nchans)
        channel_leave(s, s->nchans - 1);
    braid_mutex_unlock(&pubsub.lock);
    braid_chan_close(s->outbox);
    uint64_t give_up = braid_deadline_ms(opt.idle_timeout_ms ? opt.idle_timeout_ms : DRAIN_MS);
    while (braid_join_until(s->writer, NULL, braid_deadline_ms(20)) == -ETIMEDOUT)
        if (braid_cancelled() || braid_now_ns() >= give_up)
            braid_cancel(s->writer);
    struct msg *m;
    while (braid_chan_try_recv(s->outbox, &m) == 0)
        msg_unref(m);
    braid_chan_sender_drop(s->outbox);
    braid_chan_receiver_drop(s->outbox);
    free(s->chans);
    free(s);
    c->sub = NULL;
}

/* ---- other commands --------------------------------------------------------------- */

static void cmd_ping(struct conn *c)
{
    if (c->argc > 2) {
        out_error(c, "wrong number of arguments for 'ping' command");
    } else if (c->sub && c->sub->nchans) { /* RESP2 subscribers get an array */
        OUT_LIT(c, "*2\r\n$4\r\npong\r\n");
        out_bulk(c, c->argc == 2 ? c->argv[1].p : "", c->argc == 2 ? c->argv[1].n : 0);
    } else if (c->argc == 2) {
        out_bulk(c, c->argv[1].p, c->argv[1].n);
    } else {
        OUT_LIT(c, "+PONG\r\n");
    }
}

static void cmd_echo(struct conn *c)
{
    out_bulk(c, c->argv[1].p, c->argv[1].n);
}

static void cmd_quit(struct conn *c)
{
    out_ok(c);
    c->closing = true;
}

static void cmd_select(struct conn *c)
{
    if (arg_is(&c->argv[1], "0"))
        out_ok(c);
    else
        out_error(c, "DB index is out of range");
}

/* CONFIG GET: what redis-benchmark asks for; other parameters are unknown
 * (an empty array), other subcommands an error. */
static void cmd_config(struct conn *c)
{
    static const char *const params[][2] = { { "save", "" }, { "appendonly", "no" },
                                             { "databases", "1" } };
    if (!arg_is(&c->argv[1], "get") || c->argc != 3) {
        out_error(c, "only CONFIG GET <parameter> is supported");
        return;
    }
    const struct arg *want = &c->argv[2];
    bool all = want->n == 1 && want->p[0] == '*';
    size_t n = 0;
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        n += all || arg_is(want, params[i][0]);
    out_array(c, (long long)n * 2);
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        if (all || arg_is(want, params[i][0])) {
            out_bulk(c, params[i][0], strlen(params[i][0]));
            out_bulk(c, params[i][1], strlen(params[i][1]));
        }
    }
}

static void cmd_client(struct conn *c)
{
    if (arg_is(&c->argv[1], "setname") || arg_is(&c->argv[1], "setinfo"))
        out_ok(c);
    else if (arg_is(&c->argv[1], "getname"))
        out_null(c);
    else if (arg_is(&c->argv[1], "id"))
        out_int(c, c->fd);
    else
        out_error(c, "unsupported CLIENT subcommand");
}

static void cmd_command(struct conn *c);

struct command {
    const char *name;
    int arity;                 /* argc (name included) if > 0; at least -arity if < 0 */
    bool subscribed;           /* allowed while subscribed */
    void (*fn)(struct conn *c);
};

static const struct command commands[] = {
    { "get", 2, false, cmd_get },
    { "set", -3, false, cmd_set },
    { "ping", -1, true, cmd_ping },
    { "echo", 2, false, cmd_echo },
    { "del", -2, false, cmd_del },
    { "exists", -2, false, cmd_exists },
    { "incr", 2, false, cmd_incr },
    { "decr", 2, false, cmd_decr },
    { "incrby", 3, false, cmd_incrby },
    { "decrby", 3, false, cmd_decrby },
    { "expire", 3, false, cmd_expire },
    { "pexpire", 3, false, cmd_pexpire },
    { "ttl", 2, false, cmd_ttl },
    { "pttl", 2, false, cmd_pttl },
    { "persist", 2, false, cmd_persist },
    { "dbsize", 1, false, cmd_dbsize },
    { "flushdb", -1, false, cmd_flushall },
    { "flushall", -1, false, cmd_flushall },
    { "publish", 3, false, cmd_publish },
    { "subscribe", -2, true, cmd_subscribe },
    { "unsubscribe", -1, true, cmd_unsubscribe },
    { "quit", -1, true, cmd_quit },
    { "select", 2, false, cmd_select },
    { "config", -2, false, cmd_config },
    { "client", -2, false, cmd_client },
    { "command", -1, false, cmd_command },
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* COMMAND (DOCS, INFO, ...): an empty list, which redis-cli accepts (it
 * then has no hints); COMMAND COUNT: the number of commands. */
static void cmd_command(struct conn *c)
{
    if (c->argc == 2 && arg_is(&c->argv[1], "count"))
        out_int(c, (long long)NCOMMANDS);
    else
        OUT_LIT(c, "*0\r\n");
}

static void execute(struct conn *c)
{
    const struct arg *name = &c->argv[0];
    const struct command *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (arg_is(name, commands[i].name)) {
            cmd = &commands[i];
            break;
        }
    }
    char shown[72];
    if (!cmd) {
        out_error(c, "unknown command '%s'", printable(name, shown));
    } else if (cmd->arity > 0 ? c->argc != (size_t)cmd->arity : c->argc < (size_t)-cmd->arity) {
        out_error(c, "wrong number of arguments for '%s' command", cmd->name);
    } else if (c->sub && c->sub->nchans && !cmd->subscribed) {
        out_error(c,
                  "Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                  "RESET are allowed in this context",
                  cmd->name);
    } else {
        cmd->fn(c);
    }
}

/* ---- the connection task ------------------------------------------------------ */

static uint64_t idle_ns(void)
{
    return opt.idle_timeout_ms * NS_PER_MS;
}

/* Write out the pending replies: to the socket, or to the writer task once
 * the connection has subscribed. */
static void flush(struct conn *c)
{
    if (c->out_len && !c->failed) {
        if (c->sub) {
            outbox_put(c, false);
        } else {
            uint64_t deadline = idle_ns() ? braid_now_ns() + idle_ns() : BRAID_FOREVER;
            if (braid_write_all_until(c->fd, c->out, c->out_len, deadline) < 0)
                c->failed = true;
        }
    }
    c->out_len = 0;
    if (c->out_cap > 4 * OUT_INITIAL) { /* after a large reply */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* Make room to read into: move the unconsumed bytes to the front, grow the
 * buffer if it is full.  False when out of memory or over the limit. */
static bool make_room(struct conn *c)
{
    if (c->in_pos == c->in_len) {
        c->in_pos = c->in_len = 0;
        if (c->in_cap > 4 * IN_INITIAL) { /* after a large command */
            char *p = realloc(c->in, IN_INITIAL);
            if (p) {
                c->in = p;
                c->in_cap = IN_INITIAL;
            }
        }
        return true;
    }
    if (c->in_pos > 0) {
        size_t shift = c->in_pos;
        memmove(c->in, c->in + shift, c->in_len - shift);
        c->in_len -= shift;
        c->in_pos = 0;
        if (c->want) { /* a command parsed in part: its offsets move too */
            c->scan -= shift;
            for (long long i = 0; i < c->have; i++)
                c->argv[i].off -= shift;
        }
    }
    if (c->in_len == c->in_cap) {
        /* Bounded: lines are at most MAX_LINE, bulk strings max_bulk_len. */
        size_t limit = (size_t)opt.max_bulk_len + 2 * MAX_LINE;
        if (limit < ((size_t)1 << 30))
            limit = (size_t)1 << 30;
        size_t cap = c->in_cap * 2;
        if (c->in_cap >= limit) {
            protocol_error(c, "query buffer limit exceeded");
            return false;
        }
        char *p = realloc(c->in, cap);
        if (!p)
            return false;
        c->in = p;
        c->in_cap = cap;
    }
    return true;
}

/* After a protocol error: send the error (already queued), say we are
 * done writing, and drain what the client still sends for a moment, so
 * that closing does not reset the connection and discard the reply. */
static void linger(struct conn *c)
{
    braid_shutdown(c->fd, SHUT_WR);
    char junk[4096];
    uint64_t deadline = braid_deadline_ms(500);
    size_t total = 0;
    ssize_t n;
    while (total < (1u << 20) && (n = braid_read_until(c->fd, junk, sizeof junk, deadline)) > 0)
        total += (size_t)n;
}

/* Serve commands until the client leaves, misbehaves or idles too long. */
static void serve(struct conn *c)
{
    uint64_t since = braid_now_ns(); /* when the wait for the next command began */
    for (;;) {
        bool answered = false;
        while (!c->closing && !c->failed) {
            int r = parse(c);
            if (r == PARSE_MORE || r == PARSE_ERROR)
                break;
            if (r == PARSE_COMMAND) {
                execute(c);
                answered = true;
            }
            if (c->out_len >= OUT_FLUSH)
                flush(c);
        }
        flush(c); /* one write for everything answered */
        if (c->failed)
            return;
        if (c->closing) {
            if (c->in_pos < c->in_len) /* left unread: a protocol error */
                linger(c);
            return;
        }
        if (answered)
            since = braid_now_ns();
        bool was_empty = c->in_pos == c->in_len;
        if (!make_room(c)) {
            flush(c);
            return;
        }
        /* Idle means "no complete command": a client trickling a command
         * byte by byte is cut off as well.  A subscriber may wait for
         * messages as long as it likes. */
        bool listening = c->sub && c->sub->nchans && was_empty;
        uint64_t deadline = idle_ns() && !listening ? since + idle_ns() : BRAID_FOREVER;
        ssize_t n = braid_read_until(c->fd, c->in + c->in_len, c->in_cap - c->in_len, deadline);
        if (n <= 0) {
            if (n == 0 && !was_empty && !atomic_load(&srv.draining)) {
                protocol_error(c, "unexpected end of stream");
                flush(c);
            }
            return;
        }
        if (listening)
            since = braid_now_ns();
        c->in_len += (size_t)n;
    }
}

static bool conn_list(struct conn *c)
{
    if (braid_mutex_lock(&srv.lock) != 0)
        return false;
    if (!atomic_load(&srv.draining)) {
        c->next = srv.conns;
        if (srv.conns)
            srv.conns->prev = c;
        srv.conns = c;
        c->listed = true;
    }
    braid_mutex_unlock(&srv.lock);
    return c->listed;
}

static void conn_unlist(struct conn *c)
{
    braid_mutex_lock(&srv.lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    braid_mutex_unlock(&srv.lock);
}

/* A connection that never ran (cancelled at shutdown before it started). */
static void conn_drop(void *arg)
{
    struct conn *c = arg;
    braid_close(c->fd);
    free(c);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    c->in = malloc(IN_INITIAL);
    c->in_cap = c->in ? IN_INITIAL : 0;
    if (c->in && conn_list(c))
        serve(c);
    /* Cleanup needs locks and a join, which must not fail because the
     * task is being cancelled. */
    bool shielded = braid_cancel_shield(true);
    if (c->sub)
        subscriber_stop(c);
    if (c->listed)
        conn_unlist(c); /* before the descriptor closes: see drain() */
    braid_close(c->fd);
    braid_cancel_shield(shielded);
    free(c->in);
    free(c->out);
    free(c->argv);
    free(c);
    return NULL;
}

/* ---- the server ----------------------------------------------------------------- */

static void *acceptor_main(void *arg)
{
    (void)arg;
    braid_spawn_opts o = BRAID_SPAWN_OPTS_INIT;
    o.name = "redis-conn";
    o.stack_size = TASK_STACK;
    o.arg_drop = conn_drop;
    for (;;) {
        int fd = braid_accept(srv.listener, NULL, NULL);
        if (fd == -ECANCELED || fd == -EBADF)
            return NULL; /* shutting down */
        if (fd < 0) { /* out of descriptors (-EMFILE, ...): back off */
            if (braid_sleep_ms(fd == -EMFILE || fd == -ENFILE ? 100 : 10) != 0)
                return NULL;
            continue;
        }
        braid_tcp_nodelay(fd, true);
        struct conn *c = calloc(1, sizeof *c);
        if (c)
            c->fd = fd;
        if (!c || braid_joinset_spawn(srv.tasks, &o, conn_main, c, NULL) != 0) {
            free(c);
            braid_close(fd);
            continue;
        }
        /* Reap the connections that have ended. */
        while (braid_joinset_join_next_until(srv.tasks, NULL, NULL, 0) >= 0)
            ;
    }
}

static void *sweeper_main(void *arg)
{
    (void)arg;
    while (braid_sleep_ms(SWEEP_MS) == 0) {
        for (int i = 0; i < NSHARDS; i++) {
            struct shard *s = &shards[i];
            if (braid_mutex_lock(&s->lock) != 0)
                return NULL;
            uint64_t now = braid_now_ns();
            for (size_t k = 0; k < 256 && k <= s->mask; k++) {
                struct entry **link = &s->buckets[s->sweep++ & s->mask];
                while (*link) {
                    if (expired(*link, now))
                        unlink_entry(s, link);
                    else
                        link = &(*link)->next;
                }
            }
            braid_mutex_unlock(&s->lock);
        }
    }
    return NULL;
}

static void *signal_main(void *arg)
{
    int signo = (int)(intptr_t)arg;
    if (braid_signal_wait(signo) == signo) {
        fprintf(stderr, "mini_redis: %s, shutting down\n", strsignal(signo));
        braid_token_cancel(srv.stop);
    }
    return NULL;
}

/* Stop reading from every connection: each answers what it has received,
 * then ends.  New connections see draining and end at once. */
static void drain(void)
{
    braid_mutex_lock(&srv.lock);
    atomic_store(&srv.draining, true);
    for (struct conn *c = srv.conns; c; c = c->next)
        braid_shutdown(c->fd, SHUT_RD);
    braid_mutex_unlock(&srv.lock);
}

static void cancel_and_join(braid_task t)
{
    braid_cancel(t);
    braid_join(t, NULL);
}

static void *server_main(void *arg)
{
    (void)arg;
    int rc;
    /* Caught before "listening" is printed, so no early signal is lost. */
    if ((rc = braid_signal_catch(SIGINT)) < 0 || (rc = braid_signal_catch(SIGTERM)) < 0) {
        fprintf(stderr, "mini_redis: signals: %s\n", braid_strerror(rc));
        return (void *)1;
    }
    char addr[128];
    snprintf(addr, sizeof addr, "%s:%u", opt.bind, opt.port);
    srv.listener = braid_tcp_listen(addr, 0);
    if (srv.listener < 0) {
        fprintf(stderr, "mini_redis: listen on %s: %s\n", addr, braid_strerror(srv.listener));
        return (void *)1;
    }
    if (!keyspace_init() || braid_token_new(&srv.stop, NULL) != 0 ||
        braid_joinset_new(&srv.tasks) != 0) {
        fprintf(stderr, "mini_redis: out of memory\n");
        keyspace_free();
        braid_close(srv.listener);
        if (srv.stop)
            braid_token_free(srv.stop);
        return (void *)1;
    }
    braid_local_addr(srv.listener, addr, sizeof addr);
    printf("listening on %s\n", addr);
    fflush(stdout);

    braid_task sigint, sigterm, acceptor, sweeper;
    braid_spawn(&sigint, signal_main, (void *)(intptr_t)SIGINT);
    braid_spawn(&sigterm, signal_main, (void *)(intptr_t)SIGTERM);
    braid_spawn(&acceptor, acceptor_main, NULL);
    braid_spawn(&sweeper, sweeper_main, NULL);

    braid_token_wait(srv.stop);

    cancel_and_join(acceptor); /* the joinset is ours from here on */
    braid_close(srv.listener);
    drain();
    uint64_t deadline = braid_deadline_ms(DRAIN_MS);
    while (braid_joinset_join_next_until(srv.tasks, NULL, NULL, deadline) >= 0)
        ;
    size_t left = braid_joinset_len(srv.tasks);
    if (left)
        fprintf(stderr, "mini_redis: cancelling %zu connections\n", left);
    braid_joinset_free(srv.tasks); /* cancels and waits for the rest */
    cancel_and_join(sweeper);
    cancel_and_join(sigint);
    cancel_and_join(sigterm);
    braid_token_free(srv.stop);
    keyspace_free();
    return NULL;
}

/* ---- command line ------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: mini_redis [--port N] [--bind HOST] [--workers N] "
                    "[--idle-timeout-ms N] [--max-bulk-len N]\n");
    exit(2);
}

static unsigned long long number(const char *s, unsigned long long max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > max)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--port"))
            opt.port = (unsigned)number(v, 65535);
        else if (!strcmp(o, "--bind"))
            opt.bind = v;
        else if (!strcmp(o, "--workers"))
            opt.workers = (unsigned)number(v, 1024);
        else if (!strcmp(o, "--idle-timeout-ms"))
            opt.idle_timeout_ms = number(v, UINT64_MAX / NS_PER_MS / 2);
        else if (!strcmp(o, "--max-bulk-len"))
            opt.max_bulk_len = (long long)number(v, (unsigned long long)1 << 40);
        else
            usage();
    }
    braid_config cfg;
    braid_config_init(&cfg);
    cfg.workers = opt.workers;
    braid_runtime *rt;
    int rc = braid_runtime_new(&cfg, &rt);
    if (rc != 0) {
        fprintf(stderr, "mini_redis: %s\n", braid_strerror(rc));
        return 1;
    }
    void *failed = NULL;
    rc = braid_block_on(rt, server_main, NULL, &failed);
    int rc2 = braid_runtime_free(rt);
    if (rc != BRAID_OK || rc2 != 0 || failed) {
        if (rc != BRAID_OK || rc2 != 0)
            fprintf(stderr, "mini_redis: %s\n", braid_strerror(rc != BRAID_OK ? rc : rc2));
        return 1;
    }
    return 0;
}
