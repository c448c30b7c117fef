/*
 * admin_wire.c — the admin console's command parser and message builder (see admin_wire.h).
 */
#include "relay/admin_wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/sqlstate.h"

/* ---- commands ------------------------------------------------------------------------------ */

#define MAX_WORDS 4

struct word {
    const char *p;
    size_t n;
};

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

static bool word_is(const struct word *w, const char *s)
{
    return w->n == strlen(s) && strncasecmp(w->p, s, w->n) == 0;
}

static const struct {
    const char *name;
    enum admin_cmd_kind kind;
} show_targets[] = {
    {"ROUTES", ADMIN_SHOW_ROUTES},   {"AGENTS", ADMIN_SHOW_AGENTS},
    {"TUNNELS", ADMIN_SHOW_TUNNELS}, {"SESSIONS", ADMIN_SHOW_SESSIONS},
    {"STATS", ADMIN_SHOW_STATS},     {"CONFIG", ADMIN_SHOW_CONFIG},
    {"VERSION", ADMIN_SHOW_VERSION},
};

static const char commands_hint[] =
    "commands: SHOW ROUTES|AGENTS|TUNNELS|SESSIONS|STATS|CONFIG|VERSION, RELOAD, DRAIN AGENT name, "
    "KILL SESSION sid";

/* "DRAIN AGENT name", "KILL SESSION sid": the argument is one word of printable ASCII. */
static int take_arg(const struct word *w, struct admin_cmd *out, const char **sqlstate, char *err,
                    size_t cap)
{
    if (w->n >= ADMIN_ARG_MAX) {
        *sqlstate = SQLSTATE_UNDEFINED_OBJECT;
        snprintf(err, cap, "name too long (at most %d bytes)", ADMIN_ARG_MAX - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < w->n; i++) {
        if ((unsigned char)w->p[i] <= 0x20 || (unsigned char)w->p[i] >= 0x7f || w->p[i] == ';') {
            *sqlstate = SQLSTATE_SYNTAX_ERROR;
            snprintf(err, cap, "syntax error: invalid character in name");
            return -EINVAL;
        }
    }
    memcpy(out->arg, w->p, w->n);
    out->arg[w->n] = '\0';
    return 0;
}

int admin_cmd_parse(const char *text, size_t len, struct admin_cmd *out, const char **sqlstate,
                    char *err, size_t cap)
{
    struct word w[MAX_WORDS + 1];
    size_t nw = 0, i = 0;

    memset(out, 0, sizeof(*out));
    *sqlstate = SQLSTATE_SYNTAX_ERROR;
    if (memchr(text, '\0', len))
        len = strlen(text);
    if (len > ADMIN_CMD_TEXT_MAX) {
        snprintf(err, cap, "syntax error: command longer than %d bytes; %s", ADMIN_CMD_TEXT_MAX,
                 commands_hint);
        return -EINVAL;
    }
    while (len > 0 && is_blank(text[len - 1]))
        len--;
    if (len > 0 && text[len - 1] == ';')
        len--;
    while (i < len && nw < MAX_WORDS + 1) {
        while (i < len && is_blank(text[i]))
            i++;
        if (i == len)
            break;
        w[nw].p = text + i;
        while (i < len && !is_blank(text[i]))
            i++;
        w[nw].n = (size_t)(text + i - w[nw].p);
        nw++;
    }
    if (nw == 0) {
        out->kind = ADMIN_EMPTY;
        return 0;
    }
    /* drivers set parameters at connect (JDBC: extra_float_digits, application_name) */
    if (word_is(&w[0], "SET") && !memchr(text, ';', len)) {
        out->kind = ADMIN_SET;
        return 0;
    }
    while (i < len && is_blank(text[i]))
        i++;
    if (i < len) {
        snprintf(err, cap, "syntax error: too many words; %s", commands_hint);
        return -EINVAL;
    }
    for (size_t k = 0; k < nw; k++) {
        if (memchr(w[k].p, ';', w[k].n)) {
            snprintf(err, cap, "syntax error: one command at a time");
            return -EINVAL;
        }
    }
    if (word_is(&w[0], "SHOW") && nw == 2) {
        for (size_t k = 0; k < sizeof(show_targets) / sizeof(show_targets[0]); k++) {
            if (word_is(&w[1], show_targets[k].name)) {
                out->kind = show_targets[k].kind;
                return 0;
            }
        }
        *sqlstate = SQLSTATE_UNDEFINED_OBJECT;
        snprintf(err, cap, "unknown SHOW target \"%.*s\"; %s", (int)(w[1].n > 63 ? 63 : w[1].n),
                 w[1].p, commands_hint);
        return -EINVAL;
    }
    if (word_is(&w[0], "RELOAD") && nw == 1) {
        out->kind = ADMIN_RELOAD;
        return 0;
    }
    if (word_is(&w[0], "DRAIN") && nw == 3 && word_is(&w[1], "AGENT")) {
        out->kind = ADMIN_DRAIN_AGENT;
        return take_arg(&w[2], out, sqlstate, err, cap);
    }
    if (word_is(&w[0], "KILL") && nw == 3 && word_is(&w[1], "SESSION")) {
        out->kind = ADMIN_KILL_SESSION;
        return take_arg(&w[2], out, sqlstate, err, cap);
    }
    snprintf(err, cap, "syntax error at or near \"%.*s\"; %s", (int)(w[0].n > 63 ? 63 : w[0].n),
             w[0].p, commands_hint);
    return -EINVAL;
}

const char *admin_cmd_tag(enum admin_cmd_kind kind)
{
    switch (kind) {
    case ADMIN_EMPTY:
        return NULL;
    case ADMIN_RELOAD:
        return "RELOAD";
    case ADMIN_DRAIN_AGENT:
        return "DRAIN";
    case ADMIN_KILL_SESSION:
        return "KILL";
    case ADMIN_SET:
        return "SET";
    default:
        return "SHOW";
    }
}

static const struct admin_col routes_cols[] = {
    {"route", ADMIN_TEXT},      {"agents", ADMIN_TEXT},       {"tunnels", ADMIN_INT8},
    {"sessions", ADMIN_INT8},   {"max_sessions", ADMIN_INT8}, {"client_cert", ADMIN_TEXT},
    {"is_default", ADMIN_TEXT},
};
static const struct admin_col agents_cols[] = {
    {"agent", ADMIN_TEXT},    {"routes", ADMIN_TEXT},   {"tunnels", ADMIN_INT8},
    {"draining", ADMIN_INT8}, {"sessions", ADMIN_INT8},
};
static const struct admin_col tunnels_cols[] = {
    {"id", ADMIN_INT8},      {"agent", ADMIN_TEXT},        {"peer", ADMIN_TEXT},
    {"state", ADMIN_TEXT},   {"routes", ADMIN_TEXT},       {"sessions", ADMIN_INT8},
    {"idle_ms", ADMIN_INT8}, {"connected_at", ADMIN_TEXT}, {"cert_not_after", ADMIN_TEXT},
};
static const struct admin_col sessions_cols[] = {
    {"sid", ADMIN_TEXT},           {"state", ADMIN_TEXT},
    {"route", ADMIN_TEXT},         {"agent", ADMIN_TEXT},
    {"client", ADMIN_TEXT},        {"user", ADMIN_TEXT},
    {"database", ADMIN_TEXT},      {"application_name", ADMIN_TEXT},
    {"cert_subject", ADMIN_TEXT},  {"tls_version", ADMIN_TEXT},
    {"authenticated", ADMIN_TEXT}, {"started_at", ADMIN_TEXT},
    {"duration_ms", ADMIN_INT8},   {"bytes_in", ADMIN_INT8},
    {"bytes_out", ADMIN_INT8},
};
static const struct admin_col stats_cols[] = {{"name", ADMIN_TEXT}, {"value", ADMIN_INT8}};
static const struct admin_col config_cols[] = {{"key", ADMIN_TEXT}, {"value", ADMIN_TEXT}};
static const struct admin_col version_cols[] = {{"version", ADMIN_TEXT}};

#define COLS(a)                                                                                    \
    do {                                                                                           \
        *n = sizeof(a) / sizeof(a[0]);                                                             \
        return a;                                                                                  \
    } while (0)

const struct admin_col *admin_cmd_columns(enum admin_cmd_kind kind, size_t *n)
{
    switch (kind) {
    case ADMIN_SHOW_ROUTES:
        COLS(routes_cols);
    case ADMIN_SHOW_AGENTS:
        COLS(agents_cols);
    case ADMIN_SHOW_TUNNELS:
        COLS(tunnels_cols);
    case ADMIN_SHOW_SESSIONS:
        COLS(sessions_cols);
    case ADMIN_SHOW_STATS:
        COLS(stats_cols);
    case ADMIN_SHOW_CONFIG:
        COLS(config_cols);
    case ADMIN_SHOW_VERSION:
        COLS(version_cols);
    default:
        *n = 0;
        return NULL;
    }
}

/* ---- backend messages ------------------------------------------------------------------------ */

void admin_out_init(struct admin_out *o, size_t max)
{
    memset(o, 0, sizeof(*o));
    o->max = max;
}

void admin_out_reset(struct admin_out *o)
{
    o->len = 0;
    o->failed = false;
}

void admin_out_free(struct admin_out *o)
{
    free(o->p);
    admin_out_init(o, o->max);
}

static void put(struct admin_out *o, const void *data, size_t n)
{
    if (o->failed)
        return;
    if (n > o->max - o->len) {
        o->failed = true;
        return;
    }
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 1024;
        uint8_t *p;

        while (cap < o->len + n)
            cap *= 2;
        if (cap > o->max)
            cap = o->max;
        if (!(p = realloc(o->p, cap))) {
            o->failed = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void put_u8(struct admin_out *o, uint8_t v)
{
    put(o, &v, 1);
}

static void put_u16(struct admin_out *o, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 2);
}

static void put_u32(struct admin_out *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 4);
}

static void put_cstr(struct admin_out *o, const char *s)
{
    put(o, s, strlen(s) + 1);
}

/* A message: type, then a length word patched by msg_end. */
static size_t msg_begin(struct admin_out *o, char type)
{
    size_t at = o->len;

    put_u8(o, (uint8_t)type);
    put_u32(o, 0);
    return at;
}

static void msg_end(struct admin_out *o, size_t at)
{
    uint32_t n;

    if (o->failed)
        return;
    n = (uint32_t)(o->len - at - 1);
    o->p[at + 1] = (uint8_t)(n >> 24);
    o->p[at + 2] = (uint8_t)(n >> 16);
    o->p[at + 3] = (uint8_t)(n >> 8);
    o->p[at + 4] = (uint8_t)n;
}

void admin_put_auth_ok(struct admin_out *o)
{
    size_t at = msg_begin(o, 'R');

    put_u32(o, 0);
    msg_end(o, at);
}

void admin_put_parameter_status(struct admin_out *o, const char *name, const char *value)
{
    size_t at = msg_begin(o, 'S');

    put_cstr(o, name);
    put_cstr(o, value);
    msg_end(o, at);
}

void admin_put_backend_key(struct admin_out *o, uint32_t pid, uint32_t key)
{
    size_t at = msg_begin(o, 'K');

    put_u32(o, pid);
    put_u32(o, key);
    msg_end(o, at);
}

void admin_put_ready(struct admin_out *o)
{
    size_t at = msg_begin(o, 'Z');

    put_u8(o, 'I');
    msg_end(o, at);
}

void admin_put_empty(struct admin_out *o, char type)
{
    msg_end(o, msg_begin(o, type));
}

void admin_put_no_params(struct admin_out *o)
{
    size_t at = msg_begin(o, 't');

    put_u16(o, 0);
    msg_end(o, at);
}

/* Column i's format: Bind's codes, 0 (text) when none, the one code for all when one. */
static int16_t format_of(const int16_t *formats, size_t nformats, size_t i)
{
    if (nformats == 0)
        return 0;
    return nformats == 1 ? formats[0] : formats[i];
}

void admin_put_row_description(struct admin_out *o, const struct admin_col *cols, size_t n,
                               const int16_t *formats, size_t nformats)
{
    size_t at = msg_begin(o, 'T');

    put_u16(o, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        bool int8 = cols[i].type == ADMIN_INT8;

        put_cstr(o, cols[i].name);
        put_u32(o, 0);              /* table oid */
        put_u16(o, 0);              /* column number */
        put_u32(o, int8 ? 20 : 25); /* int8, text */
        put_u16(o, int8 ? 8 : 0xffff);
        put_u32(o, 0xffffffff); /* typmod -1 */
        put_u16(o, (uint16_t)format_of(formats, nformats, i));
    }
    msg_end(o, at);
}

void admin_put_data_row(struct admin_out *o, const struct admin_col *cols,
                        const struct admin_val *vals, size_t n, const int16_t *formats,
                        size_t nformats)
{
    size_t at = msg_begin(o, 'D');

    put_u16(o, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        bool binary = format_of(formats, nformats, i) == 1;

        if (cols[i].type == ADMIN_INT8 && binary) {
            uint64_t v = (uint64_t)vals[i].i;

            put_u32(o, 8);
            put_u32(o, (uint32_t)(v >> 32));
            put_u32(o, (uint32_t)v);
        } else if (cols[i].type == ADMIN_INT8) {
            char num[24];
            int k = snprintf(num, sizeof(num), "%lld", (long long)vals[i].i);

            put_u32(o, (uint32_t)k);
            put(o, num, (size_t)k);
        } else if (!vals[i].s) {
            put_u32(o, 0xffffffff); /* NULL */
        } else {
            size_t k = strlen(vals[i].s); /* text: the same bytes in both formats */

            put_u32(o, (uint32_t)k);
            put(o, vals[i].s, k);
        }
    }
    msg_end(o, at);
}

void admin_put_command_complete(struct admin_out *o, const char *tag)
{
    size_t at = msg_begin(o, 'C');

    put_cstr(o, tag);
    msg_end(o, at);
}

void admin_put_error(struct admin_out *o, const char *severity, const char *sqlstate,
                     const char *message)
{
    size_t at = msg_begin(o, 'E');

    put_u8(o, 'S');
    put_cstr(o, severity);
    put_u8(o, 'V');
    put_cstr(o, severity);
    put_u8(o, 'C');
    put_cstr(o, sqlstate);
    put_u8(o, 'M');
    put_cstr(o, message);
    put_u8(o, 0);
    msg_end(o, at);
}

/* ---- frontend messages ----------------------------------------------------------------------- */

struct reader {
    const uint8_t *p;
    size_t len, off;
};

static int get_cstr(struct reader *r, const char **s)
{
    const uint8_t *nul;

    if (r->off >= r->len) /* an empty body has no buffer at all */
        return -EINVAL;
    if (!(nul = memchr(r->p + r->off, '\0', r->len - r->off)))
        return -EINVAL;
    *s = (const char *)(r->p + r->off);
    r->off = (size_t)(nul - r->p) + 1;
    return 0;
}

static int get_u16(struct reader *r, uint16_t *v)
{
    if (r->len - r->off < 2)
        return -EINVAL;
    *v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
    r->off += 2;
    return 0;
}

static int skip(struct reader *r, size_t n)
{
    if (r->len - r->off < n)
        return -EINVAL;
    r->off += n;
    return 0;
}

static int get_u32(struct reader *r, uint32_t *v)
{
    if (r->len - r->off < 4)
        return -EINVAL;
    *v = (uint32_t)r->p[r->off] << 24 | (uint32_t)r->p[r->off + 1] << 16 |
         (uint32_t)r->p[r->off + 2] << 8 | r->p[r->off + 3];
    r->off += 4;
    return 0;
}

int admin_read_query(const uint8_t *body, size_t len, const char **query)
{
    struct reader r = {body, len, 0};

    return get_cstr(&r, query);
}

int admin_read_parse(const uint8_t *body, size_t len, struct admin_parse *m)
{
    struct reader r = {body, len, 0};

    if (get_cstr(&r, &m->name) < 0 || get_cstr(&r, &m->query) < 0 || get_u16(&r, &m->ntypes) < 0)
        return -EINVAL;
    return skip(&r, 4 * (size_t)m->ntypes);
}

int admin_read_bind(const uint8_t *body, size_t len, struct admin_bind *m)
{
    struct reader r = {body, len, 0};
    uint16_t nfmt;

    memset(m, 0, sizeof(*m));
    if (get_cstr(&r, &m->portal) < 0 || get_cstr(&r, &m->stmt) < 0 || get_u16(&r, &nfmt) < 0 ||
        skip(&r, 2 * (size_t)nfmt) < 0 || get_u16(&r, &m->nparams) < 0)
        return -EINVAL;
    for (uint16_t i = 0; i < m->nparams; i++) {
        uint32_t n;

        if (get_u32(&r, &n) < 0 || (n != 0xffffffff && skip(&r, n) < 0))
            return -EINVAL;
    }
    if (get_u16(&r, &m->nformats) < 0)
        return -EINVAL;
    if (m->nformats > ADMIN_MAX_COLS)
        return -E2BIG;
    for (uint16_t i = 0; i < m->nformats; i++) {
        uint16_t f;

        if (get_u16(&r, &f) < 0 || f > 1)
            return -EINVAL;
        m->formats[i] = (int16_t)f;
    }
    return 0;
}

int admin_read_target(const uint8_t *body, size_t len, char *kind, const char **name)
{
    struct reader r = {body, len, 0};

    if (len < 2 || (body[0] != 'S' && body[0] != 'P'))
        return -EINVAL;
    *kind = (char)body[0];
    r.off = 1;
    return get_cstr(&r, name);
}

int admin_read_execute(const uint8_t *body, size_t len, const char **portal)
{
    struct reader r = {body, len, 0};
    uint32_t maxrows;

    if (get_cstr(&r, portal) < 0 || get_u32(&r, &maxrows) < 0)
        return -EINVAL;
    return 0;
}
