/*
 * audit.c — JSON lines for the audit log, and the statement parser (see audit.h).
 *
 * Statement parser, per session, one client message at a time:
 *
 *   HEADER (5 bytes: type, int32 length incl. itself)
 *     --'Q'--> TEXT until NUL or end ........................................+
 *     --'P'--> NAME (skip until NUL) --> TEXT until NUL --> SKIP rest of body -+--> emit --> HEADER
 *     --other--> SKIP body ----------------------------------------------------> HEADER
 *
 * TEXT copies at most statement_max bytes and counts the rest (truncated = true). A statement
 * is emitted when its message ends, so a message split over many reads is still one line.
 */
#include "relay/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "common/log.h"

#define AUDIT_LINE_MIN 4096   /* most lines fit; longer ones grow the buffer (line_begin) */
#define AUDIT_LINE_FIXED 1024 /* keys, numbers, timestamp, punctuation of any one line */

struct audit {
    int fd; /* -1: off */
    bool is_stdout;
    char *path; /* the file, NULL for stdout / off */
    bool statements;
    size_t statement_max;
    char *line; /* reused for every line */
    size_t line_cap;
    uint64_t dropped;
};

enum stmt_state { ST_HEADER, ST_NAME, ST_TEXT, ST_SKIP };

struct audit_stmt {
    struct audit *a;
    enum stmt_state state;
    uint8_t hdr[5];
    size_t hdr_have;
    char type;         /* 'Q' or 'P' while reading one */
    uint32_t left;     /* body bytes of the current message not yet seen */
    bool emit_pending; /* a statement was read; emit at the end of its message */
    size_t max;        /* statement_max when the session started: the size of text */
    size_t text_len;   /* bytes kept in text (<= max) */
    bool truncated;
    char relay[64];
    char sid[40];
    char route[64];
    char user[256]; /* PROTO_META_MAX */
    bool authenticated;
    /* before authentication: statements held as (kind, truncated, u16 length, text)... */
    uint8_t *held;
    size_t held_len;
    uint64_t omitted; /* statements that did not fit in the held bytes */
    char text[];      /* statement_max bytes */
};

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (!err || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

struct audit *audit_new(void)
{
    struct audit *a = calloc(1, sizeof(*a));
    if (a)
        a->fd = -1;
    return a;
}

static void close_fd(struct audit *a)
{
    if (a->fd >= 0 && !a->is_stdout)
        close(a->fd);
    a->fd = -1;
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    close_fd(a);
    free(a->path);
    free(a->line);
    free(a);
}

static bool is_off(const char *path)
{
    return !path || !path[0];
}

static bool is_stdout(const char *path)
{
    return path && strcmp(path, "stdout") == 0;
}

int audit_check_path(const char *path, char *err, size_t err_cap)
{
    char dir[PATH_MAX];
    const char *slash;

    if (is_off(path) || is_stdout(path))
        return 0;
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) < 0) {
            int e = errno;
            set_err(err, err_cap, "audit_log \"%s\" is not writable: %s", path, strerror(e));
            return -e;
        }
        return 0;
    }
    slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK) < 0) {
        int e = errno;
        set_err(err, err_cap, "audit_log \"%s\": cannot create it in \"%s\": %s", path, dir,
                strerror(e));
        return -e;
    }
    return 0;
}

static int open_file(const char *path, char *err, size_t err_cap)
{
    char why[256];
    int fd = log_file_open(path, 0600, why, sizeof(why));
    if (fd < 0)
        set_err(err, err_cap, "audit_log: %s", why);
    return fd;
}

int audit_configure(struct audit *a, const char *path, bool statements, size_t statement_max,
                    char *err, size_t err_cap)
{
    /* sized for statement lines at once (text escaped: <= 6 bytes per byte), so that the data
     * path does not reallocate */
    size_t need = AUDIT_LINE_MIN + (statements ? 6 * statement_max : 0);
    bool same = (is_off(path) && a->fd < 0) || (is_stdout(path) && a->is_stdout) ||
                (a->path && path && strcmp(a->path, path) == 0);
    char *new_path = NULL, *line = NULL;
    int fd = -1, rc = 0;

    if (need > a->line_cap && !(line = malloc(need))) {
        set_err(err, err_cap, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    if (!same && !is_off(path) && !is_stdout(path)) {
        if (!(new_path = strdup(path))) {
            set_err(err, err_cap, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
        if ((fd = open_file(path, err, err_cap)) < 0) {
            rc = fd;
            goto out;
        }
    }
    /* nothing fails from here on */
    if (line) {
        free(a->line);
        a->line = line;
        a->line_cap = need;
        line = NULL;
    }
    if (!same) {
        close_fd(a);
        free(a->path);
        a->path = new_path;
        new_path = NULL;
        a->is_stdout = is_stdout(path);
        a->fd = a->is_stdout ? STDOUT_FILENO : fd;
        fd = -1;
    }
    a->statements = statements;
    a->statement_max = statement_max;
out:
    free(line);
    free(new_path);
    if (fd >= 0)
        close(fd);
    return rc;
}

int audit_reopen(struct audit *a, char *err, size_t err_cap)
{
    int fd;
    if (!a || !a->path)
        return 0;
    fd = open_file(a->path, err, err_cap);
    if (fd < 0)
        return fd;
    close_fd(a);
    a->fd = fd;
    return 0;
}

bool audit_enabled(const struct audit *a)
{
    return a && a->fd >= 0;
}

bool audit_statements_enabled(const struct audit *a)
{
    return audit_enabled(a) && a->statements && a->statement_max > 0;
}

/* ---- lines ------------------------------------------------------------------------------ */

static size_t slen(const char *v)
{
    return v ? strlen(v) : 0;
}

/*
 * Start a line whose string values total raw bytes: the buffer grows to the worst case (6
 * escaped bytes per byte), so that no line is ever lost for its size; a client must not be
 * able to keep its session out of the log with a long, odd application_name. false: no memory
 * (counted, logged).
 */
static bool line_begin(struct audit *a, struct json_writer *w, const char *event, const char *relay,
                       size_t raw)
{
    char ts[40];
    struct timespec now;
    struct tm tm;

    size_t need = AUDIT_LINE_FIXED + 6 * (raw + slen(event) + slen(relay));

    if (need > a->line_cap) {
        char *line = realloc(a->line, need);
        if (!line) {
            if (a->dropped++ % 1000 == 0)
                log_error("audit: out of memory: %s event not written (%llu lines lost so far)",
                          event, (unsigned long long)a->dropped);
            return false;
        }
        a->line = line;
        a->line_cap = need;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(now.tv_nsec / 1000000) % 1000);
    json_begin(w, a->line, a->line_cap);
    json_str(w, "ts", ts);
    json_str(w, "event", event);
    json_str(w, "relay", relay);
    return true;
}

static void line_write(struct audit *a, struct json_writer *w)
{
    int n = json_end(w);
    size_t off = 0;

    if (n < 0) {
        /* cannot happen with the sizes above; never write a cut line */
        a->dropped++;
        log_warn("audit: an event did not fit in %zu bytes and was not written", a->line_cap);
        return;
    }
    while (off < (size_t)n) {
        ssize_t k = write(a->fd, a->line + off, (size_t)n - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            /* report the first failure and then every 1000th, not every line */
            if (a->dropped++ % 1000 == 0)
                log_error("audit: cannot write to %s: %s (%llu lines lost so far)",
                          a->path ? a->path : "stdout", strerror(e),
                          (unsigned long long)a->dropped);
            return;
        }
        off += (size_t)k;
    }
}

/* "ip:port" / "[v6]:port" -> client_addr, client_port. */
static void put_client(struct json_writer *w, const char *client)
{
    const char *colon = client ? strrchr(client, ':') : NULL;
    char addr[64];
    long port;
    char *end;

    if (!colon) {
        json_str(w, "client_addr", client);
        json_null(w, "client_port");
        return;
    }
    if (client[0] == '[' && colon > client + 1 && colon[-1] == ']')
        snprintf(addr, sizeof(addr), "%.*s", (int)(colon - client - 2), client + 1);
    else
        snprintf(addr, sizeof(addr), "%.*s", (int)(colon - client), client);
    json_str(w, "client_addr", addr);
    port = strtol(colon + 1, &end, 10);
    if (*end == '\0' && port >= 0 && port <= 65535)
        json_u64(w, "client_port", (uint64_t)port);
    else
        json_null(w, "client_port");
}

void audit_session(struct audit *a, const char *event, const struct audit_session *s)
{
    struct json_writer w;
    if (!audit_enabled(a))
        return;
    size_t raw = slen(s->sid) + slen(s->route) + slen(s->client) + slen(s->sni) + slen(s->user) +
                 slen(s->database) + slen(s->application_name) + slen(s->cert_subject) +
                 slen(s->cert_serial) + slen(s->agent) + slen(s->tls_version) +
                 slen(s->tls_cipher) + slen(s->reason) + slen(s->sqlstate);
    if (!line_begin(a, &w, event, s->relay, raw))
        return;
    json_str(&w, "sid", s->sid);
    json_str(&w, "route", s->route);
    put_client(&w, s->client);
    json_str(&w, "sni", s->sni);
    json_str(&w, s->authenticated ? "user" : "claimed_user", s->user);
    json_bool(&w, "authenticated", s->authenticated);
    json_str(&w, "database", s->database);
    json_str(&w, "application_name", s->application_name);
    json_str(&w, "client_cert_subject", s->cert_subject);
    json_str(&w, "client_cert_serial", s->cert_serial);
    json_str(&w, "agent", s->agent);
    json_str(&w, "tls_version", s->tls_version);
    json_str(&w, "tls_cipher", s->tls_cipher);
    if (strcmp(event, "auth_failed") == 0) {
        json_str(&w, "sqlstate", s->sqlstate);
        json_u64(&w, "duration_ms", s->duration_ms);
        json_str(&w, "reason", s->reason);
    }
    if (strcmp(event, "session_end") == 0) {
        json_u64(&w, "bytes_in", s->bytes_in);
        json_u64(&w, "bytes_out", s->bytes_out);
        json_u64(&w, "duration_ms", s->duration_ms);
        json_str(&w, "reason", s->reason);
    }
    line_write(a, &w);
}

void audit_tunnel(struct audit *a, const char *event, const char *relay, const char *agent,
                  const char *peer, const char *routes, const char *reason)
{
    struct json_writer w;
    if (!audit_enabled(a))
        return;
    if (!line_begin(a, &w, event, relay, slen(agent) + slen(peer) + slen(routes) + slen(reason)))
        return;
    json_str(&w, "agent", agent);
    json_str(&w, "peer", peer);
    json_array_begin(&w, "routes");
    for (const char *p = routes; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n)
            json_strn(&w, NULL, p, n);
        p += n + (comma ? 1 : 0);
    }
    json_array_end(&w);
    json_str(&w, "reason", reason);
    line_write(a, &w);
}

void audit_refused(struct audit *a, const char *relay, const char *client, const char *sqlstate,
                   const char *reason)
{
    struct json_writer w;
    if (!audit_enabled(a))
        return;
    if (!line_begin(a, &w, "refused", relay, slen(client) + slen(sqlstate) + slen(reason)))
        return;
    put_client(&w, client);
    json_str(&w, "sqlstate", sqlstate);
    json_str(&w, "reason", reason);
    line_write(a, &w);
}

void audit_admin(struct audit *a, const struct audit_admin_command *ac)
{
    struct json_writer w;
    if (!audit_enabled(a))
        return;
    if (!line_begin(a, &w, "admin_command", ac->relay,
                    slen(ac->admin) + slen(ac->client) + slen(ac->user) + slen(ac->command) +
                        slen(ac->sqlstate) + slen(ac->result)))
        return;
    json_str(&w, "admin", ac->admin);
    json_str(&w, "cert_serial", ac->cert_serial);
    put_client(&w, ac->client);
    json_str(&w, "claimed_user", ac->user);
    json_str(&w, "command", ac->command);
    json_str(&w, "sqlstate", ac->sqlstate);
    json_str(&w, "result", ac->result);
    line_write(a, &w);
}

/* ---- statements ------------------------------------------------------------------------- */

struct audit_stmt *audit_stmt_new(struct audit *a, const char *relay, const char *sid,
                                  const char *route, const char *user)
{
    struct audit_stmt *st;
    if (!audit_statements_enabled(a))
        return NULL;
    st = calloc(1, sizeof(*st) + a->statement_max);
    if (!st)
        return NULL;
    st->a = a;
    st->max = a->statement_max;
    snprintf(st->relay, sizeof(st->relay), "%s", relay ? relay : "");
    snprintf(st->sid, sizeof(st->sid), "%s", sid ? sid : "");
    snprintf(st->route, sizeof(st->route), "%s", route ? route : "");
    snprintf(st->user, sizeof(st->user), "%s", user ? user : "");
    return st;
}

void audit_stmt_free(struct audit_stmt *st)
{
    if (!st)
        return;
    free(st->held);
    free(st);
}

static void stmt_write(struct audit_stmt *st, char type, const char *text, size_t len,
                       bool truncated)
{
    struct audit *a = st->a;
    struct json_writer w;

    /* the settings may have changed by a reload since the session started */
    if (!audit_enabled(a))
        return;
    if (!line_begin(a, &w, "statement", st->relay,
                    len + slen(st->sid) + slen(st->route) + slen(st->user)))
        return;
    json_str(&w, "sid", st->sid);
    json_str(&w, "route", st->route);
    json_str(&w, "user", st->user);
    json_str(&w, "kind", type == 'Q' ? "query" : "parse");
    /* a cut may fall inside a UTF-8 sequence: the writer turns its bytes into U+FFFD, which
     * is fine for a line marked truncated */
    json_strn(&w, "text", text, len);
    json_bool(&w, "truncated", truncated);
    line_write(a, &w);
}

#define HELD_HDR 4 /* kind, truncated, u16 length */

/* Before authentication: keep the statement for later, within AUDIT_PREAUTH_HELD_BYTES. */
static void stmt_hold(struct audit_stmt *st)
{
    size_t len = st->text_len < UINT16_MAX ? st->text_len : UINT16_MAX;
    if (!st->held && !(st->held = malloc(AUDIT_PREAUTH_HELD_BYTES))) {
        st->omitted++;
        return;
    }
    if (HELD_HDR + len > AUDIT_PREAUTH_HELD_BYTES - st->held_len) {
        st->omitted++;
        return;
    }
    uint8_t *p = st->held + st->held_len;
    p[0] = (uint8_t)st->type;
    p[1] = st->truncated || len < st->text_len;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    memcpy(p + HELD_HDR, st->text, len);
    st->held_len += HELD_HDR + len;
}

static void stmt_emit(struct audit_stmt *st)
{
    if (st->authenticated)
        stmt_write(st, st->type, st->text, st->text_len, st->truncated);
    else
        stmt_hold(st);
}

void audit_stmt_authenticated(struct audit_stmt *st)
{
    if (!st || st->authenticated)
        return;
    st->authenticated = true;
    for (size_t off = 0; off + HELD_HDR <= st->held_len;) {
        const uint8_t *p = st->held + off;
        size_t len = (size_t)p[2] << 8 | p[3];
        stmt_write(st, (char)p[0], (const char *)p + HELD_HDR, len, p[1] != 0);
        off += HELD_HDR + len;
    }
    free(st->held);
    st->held = NULL;
    st->held_len = 0;
    if (st->omitted > 0 && audit_enabled(st->a)) {
        struct json_writer w;
        if (!line_begin(st->a, &w, "statements_omitted", st->relay,
                        slen(st->sid) + slen(st->route) + slen(st->user)))
            return;
        json_str(&w, "sid", st->sid);
        json_str(&w, "route", st->route);
        json_str(&w, "user", st->user);
        json_u64(&w, "count", st->omitted);
        json_str(&w, "reason", "pipelined before authentication beyond the held bytes");
        line_write(st->a, &w);
    }
}

/* Text bytes of the current statement: keep what fits. Returns how many of p were used
 * (up to and including the terminating NUL when found). */
static size_t stmt_text(struct audit_stmt *st, const uint8_t *p, size_t n, bool *done)
{
    const uint8_t *nul = memchr(p, '\0', n);
    size_t text = nul ? (size_t)(nul - p) : n;
    size_t room = st->max - st->text_len;
    size_t keep = text < room ? text : room;

    memcpy(st->text + st->text_len, p, keep);
    st->text_len += keep;
    if (text > keep)
        st->truncated = true;
    *done = nul != NULL;
    return nul ? text + 1 : n;
}

bool audit_stmt_filter(void *ctx, const uint8_t *data, size_t len)
{
    struct audit_stmt *st = ctx;
    size_t i = 0;

    while (i < len) {
        if (st->state == ST_HEADER) {
            size_t n = sizeof(st->hdr) - st->hdr_have;
            if (n > len - i)
                n = len - i;
            memcpy(st->hdr + st->hdr_have, data + i, n);
            st->hdr_have += n;
            i += n;
            if (st->hdr_have < sizeof(st->hdr))
                break;
            st->hdr_have = 0;
            uint32_t mlen = (uint32_t)st->hdr[1] << 24 | (uint32_t)st->hdr[2] << 16 |
                            (uint32_t)st->hdr[3] << 8 | st->hdr[4];
            if (mlen < 4)
                return false;
            st->type = (char)st->hdr[0];
            st->left = mlen - 4;
            st->text_len = 0;
            st->truncated = false;
            st->emit_pending = false;
            if (st->type == 'Q') {
                st->state = ST_TEXT;
                st->emit_pending = true;
            } else if (st->type == 'P') {
                st->state = ST_NAME;
                st->emit_pending = true;
            } else {
                st->state = ST_SKIP;
            }
        } else {
            size_t avail = len - i;
            size_t n = avail < st->left ? avail : st->left;
            bool done = false;
            if (st->state == ST_NAME) {
                const uint8_t *nul = memchr(data + i, '\0', n);
                if (nul) {
                    n = (size_t)(nul - (data + i)) + 1;
                    st->state = ST_TEXT;
                }
            } else if (st->state == ST_TEXT) {
                n = stmt_text(st, data + i, n, &done);
                if (done)
                    st->state = ST_SKIP;
            }
            i += n;
            st->left -= (uint32_t)n;
        }
        if (st->state != ST_HEADER && st->left == 0) {
            if (st->emit_pending)
                stmt_emit(st);
            st->emit_pending = false;
            st->state = ST_HEADER;
        }
    }
    return true;
}
