/*
 * config — INI files through libinih, command-line flags, value parsers.
 *
 * How libinih is used. inih (r55 as Debian ships it) calls its handler without a line
 * number (the library is not built with INI_HANDLER_LINENO), truncates section names to 49
 * bytes, never tells the handler that a section starts, reads lines into a 200-byte buffer
 * and splits longer ones into pieces, treats indented lines as continuations of the previous
 * value, and goes on after an error. So the file is fed to ini_parse_stream() through our own
 * reader, load_read_line(), which:
 *   - reads one physical line per call and counts it; inih calls the handler for a line
 *     before it asks for the next one, so the count is the line of the key being handled;
 *   - trims blanks (so no line is ever a continuation), refuses NUL bytes and lines over
 *     CONFIG_RAW_LINE_MAX, skips a UTF-8 BOM on line 1;
 *   - tracks "[section]" itself: names are kept whole, normalised (blanks trimmed and
 *     collapsed), must not repeat, and the handler is told when a section starts;
 *   - splits "key = value" with inih's rules (first '=' or ':'; ';' after a blank starts an
 *     inline comment) and hands inih only a short stand-in line ("key="), keeping the value
 *     itself, so that values are not limited by inih's line buffer;
 *   - stops at the first error, so the message names the first bad line.
 * What is left to inih is the key/value syntax and the calls to the handler.
 * Comments start a line with ';' or '#', or follow a blank with ';' ("k = v ; note").
 * A key may appear once per section in a file; a flag given later overrides it.
 */
#include "common/config.h"
#include "common/log.h"
#include "proto/proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_SECTION_MAX 128 /* "route " + a 63-byte name fits with room to spare */
#define CONFIG_KEY_MAX 64
#define CONFIG_RAW_LINE_MAX 4096 /* bytes read per line before giving up on it */
#define CONFIG_QUOTE_MAX 96      /* bytes of a bad value echoed in a message */

static void errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static bool is_blank(char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* A printable, bounded rendering of v for error messages (the caller adds the quotes). */
static const char *quote(char buf[CONFIG_QUOTE_MAX], const char *v)
{
    size_t n = 0;
    for (; *v; v++) {
        unsigned char ch = (unsigned char)*v;
        if (n + 8 >= CONFIG_QUOTE_MAX) {
            memcpy(buf + n, "...", 3);
            n += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            n += (size_t)snprintf(buf + n, CONFIG_QUOTE_MAX - n, "\\x%02x", ch);
        } else {
            buf[n++] = (char)ch;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* ---- value parsers ---------------------------------------------------------------------- */

/* Parse the leading decimal digits of *p (at least one); -ERANGE on overflow. */
static int parse_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t n = 0;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -ERANGE;
        n = n * 10 + d;
    }
    *p = s;
    *out = n;
    return 0;
}

int config_parse_bool(const char *v, bool *out, char *err, size_t cap)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    char q[CONFIG_QUOTE_MAX];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    errf(err, cap, "expected a boolean (on/off, true/false, yes/no, 1/0), got \"%s\"", quote(q, v));
    return -EINVAL;
}

int config_parse_uint(const char *v, uint64_t min, uint64_t max, uint64_t *out, char *err,
                      size_t cap)
{
    const char *p = v;
    uint64_t n;
    char q[CONFIG_QUOTE_MAX];

    if (parse_digits(&p, &n) < 0 || *p != '\0' || n < min || n > max) {
        errf(err, cap, "expected an integer from %" PRIu64 " to %" PRIu64 ", got \"%s\"", min, max,
             quote(q, v));
        return -EINVAL;
    }
    *out = n;
    return 0;
}

/* digits followed by one of the suffixes; mult[i] scales the number for suffix[i]. */
static int parse_scaled(const char *v, const char *const *suffix, const uint64_t *mult,
                        size_t nsuffix, uint64_t *out)
{
    const char *p = v;
    uint64_t n;
    int rc = parse_digits(&p, &n);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < nsuffix; i++) {
        if (strcmp(p, suffix[i]) != 0)
            continue;
        if (n > UINT64_MAX / mult[i])
            return -ERANGE;
        *out = n * mult[i];
        return 0;
    }
    return -EINVAL;
}

int config_parse_duration_ms(const char *v, uint64_t *out, char *err, size_t cap)
{
    static const char *const suffix[] = {"", "ms", "s", "m", "h"};
    static const uint64_t mult[] = {1000, 1, 1000, 60 * 1000, 60 * 60 * 1000};
    char q[CONFIG_QUOTE_MAX];
    int rc = parse_scaled(v, suffix, mult, 5, out);

    if (rc == -ERANGE)
        errf(err, cap, "duration too large: \"%s\"", quote(q, v));
    else if (rc < 0)
        errf(err, cap, "expected a duration such as 250ms, 5s, 2m or 1h, got \"%s\"", quote(q, v));
    return rc < 0 ? -EINVAL : 0;
}

int config_parse_size(const char *v, uint64_t *out, char *err, size_t cap)
{
    static const char *const suffix[] = {"", "k", "K", "m", "M", "g", "G"};
    static const uint64_t mult[] = {1, 1 << 10, 1 << 10, 1 << 20, 1 << 20, 1 << 30, 1 << 30};
    char q[CONFIG_QUOTE_MAX];
    int rc = parse_scaled(v, suffix, mult, 7, out);

    if (rc == -ERANGE)
        errf(err, cap, "size too large: \"%s\"", quote(q, v));
    else if (rc < 0)
        errf(err, cap, "expected a size such as 4096, 64k, 16M or 1G, got \"%s\"", quote(q, v));
    return rc < 0 ? -EINVAL : 0;
}

/* A DNS name or IPv4 literal: letters, digits, '.', '-', '_'. */
static bool hostname_valid(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

int config_parse_hostport(const char *v, char *host, uint16_t *port, char *err, size_t cap)
{
    char q[CONFIG_QUOTE_MAX];
    char h[256];
    const char *colon;
    size_t hlen;
    uint64_t n;

    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        struct in6_addr a6;
        if (!close || close[1] != ':')
            goto bad_form;
        hlen = (size_t)(close - (v + 1));
        if (hlen == 0 || hlen >= sizeof(h))
            goto bad_host;
        memcpy(h, v + 1, hlen);
        h[hlen] = '\0';
        if (inet_pton(AF_INET6, h, &a6) != 1)
            goto bad_host;
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon || colon == v)
            goto bad_form;
        hlen = (size_t)(colon - v);
        if (memchr(v, ':', hlen)) {
            errf(err, cap,
                 "expected host:port (an IPv6 address needs brackets: [::1]:5432), got \"%s\"",
                 quote(q, v));
            return -EINVAL;
        }
        if (!(hlen == 1 && v[0] == '*') && !hostname_valid(v, hlen))
            goto bad_host;
        memcpy(h, v, hlen);
        h[hlen] = '\0';
    }
    const char *p = colon + 1;
    if (parse_digits(&p, &n) < 0 || *p != '\0' || n < 1 || n > 65535) {
        errf(err, cap, "expected host:port with a port from 1 to 65535, got \"%s\"", quote(q, v));
        return -EINVAL;
    }
    memcpy(host, h, hlen + 1);
    *port = (uint16_t)n;
    return 0;

bad_host:
    errf(err, cap,
         "expected host:port with a host name, IPv4 address, [IPv6] address or *, got \"%s\"",
         quote(q, v));
    return -EINVAL;
bad_form:
    errf(err, cap, "expected host:port, got \"%s\"", quote(q, v));
    return -EINVAL;
}

int config_parse_list(const char *v, int (*cb)(void *ctx, const char *item, char *err, size_t cap),
                      void *ctx, char *err, size_t cap)
{
    char q[CONFIG_QUOTE_MAX];
    char *copy = strdup(v);
    char *p = copy;
    int rc = 0;

    if (!copy) {
        errf(err, cap, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        char *comma = strchr(p, ',');
        char *end = comma ? comma : p + strlen(p);
        while (p < end && is_blank(*p))
            p++;
        while (end > p && is_blank(end[-1]))
            end--;
        *end = '\0';
        if (*p == '\0') {
            errf(err, cap, "empty item in list \"%s\"", quote(q, v));
            rc = -EINVAL;
            goto out;
        }
        rc = cb(ctx, p, err, cap);
        if (rc < 0 || !comma)
            goto out;
        p = comma + 1;
    }
out:
    free(copy);
    return rc;
}

int config_set_str(char **dst, const char *v)
{
    char *s = strdup(v);

    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* ---- handler calls ------------------------------------------------------------------------ */

/* Call the handler; on error write "[section] key: why" (or "[section]: why") into where. */
static int run_handler(config_handler h, void *ctx, const char *section, const char *key,
                       const char *value, char *where, size_t cap)
{
    char why[PGB_ERR_MAX] = "";
    int rc = h(ctx, section, key, value, why, sizeof(why));
    const char *text = why;

    if (rc >= 0)
        return 0;
    if (rc == -ENOENT)
        text = key ? "unknown key" : "unknown section";
    else if (!why[0])
        text = strerror(-rc);
    if (key)
        errf(where, cap, "[%s] %s: %s", section, key, text);
    else
        errf(where, cap, "[%s]: %s", section, text);
    return rc;
}

/* ---- files ------------------------------------------------------------------------------ */

struct seen { /* a section (key NULL) or a key already given in this file */
    char *section;
    char *key;
    int line;
};

struct load {
    const char *path;
    FILE *f;
    config_handler h;
    void *hctx;
    char *err;
    size_t err_cap;
    int line;                         /* physical line last handed to inih */
    char section[CONFIG_SECTION_MAX]; /* current section, normalised; "" before the first */
    char raw[CONFIG_RAW_LINE_MAX];
    const char *value; /* value of the current line, in raw */
    struct seen *seen;
    size_t nseen, seencap;
    int rc;       /* first error (0: none yet); its message is in err */
    int err_line; /* line of that error */
};

static void load_fail(struct load *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void load_fail(struct load *l, int rc, const char *fmt, ...)
{
    char why[PGB_ERR_MAX];
    va_list ap;

    if (l->rc)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    errf(l->err, l->err_cap, "%s:%d: %s", l->path, l->line, why);
    l->rc = rc;
    l->err_line = l->line;
}

static int seen_find(const struct load *l, const char *section, const char *key)
{
    for (size_t i = 0; i < l->nseen; i++) {
        const struct seen *s = &l->seen[i];
        if (strcmp(s->section, section) == 0 &&
            (key ? s->key && strcmp(s->key, key) == 0 : s->key == NULL))
            return s->line;
    }
    return 0;
}

static int seen_add(struct load *l, const char *section, const char *key)
{
    if (l->nseen == l->seencap) {
        size_t cap = l->seencap ? l->seencap * 2 : 32;
        struct seen *n = realloc(l->seen, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        l->seen = n;
        l->seencap = cap;
    }
    struct seen *s = &l->seen[l->nseen];
    s->section = strdup(section);
    s->key = key ? strdup(key) : NULL;
    s->line = l->line;
    if (!s->section || (key && !s->key)) {
        free(s->section);
        free(s->key);
        return -ENOMEM;
    }
    l->nseen++;
    return 0;
}

/* A "[section]" line (s starts with '['): find the name the way inih does, check it, and
 * tell the handler the section starts. Returns 0 or negative (l->rc set). */
static int load_section(struct load *l, const char *s)
{
    const char *p = s + 1;
    bool was_blank = false;
    char name[CONFIG_SECTION_MAX];
    char where[PGB_ERR_MAX];
    size_t n = 0;
    int first;

    /* inih ends the name at ']' or at an inline comment (';' after a blank). */
    while (*p && *p != ']' && !(was_blank && *p == ';')) {
        was_blank = is_blank(*p);
        p++;
    }
    if (*p != ']') {
        load_fail(l, -EINVAL, "syntax error: expected \"[section]\"");
        goto out;
    }
    for (const char *t = p + 1; *t && *t != ';' && *t != '#'; t++) {
        if (!is_blank(*t)) {
            load_fail(l, -EINVAL, "syntax error: unexpected text after \"]\"");
            goto out;
        }
    }
    for (const char *t = s + 1; t < p; t++) {
        if (is_blank(*t) && (n == 0 || name[n - 1] == ' '))
            continue;
        if (n == sizeof(name) - 1) {
            load_fail(l, -EINVAL, "section name too long (max %zu bytes)", sizeof(name) - 1);
            goto out;
        }
        name[n++] = is_blank(*t) ? ' ' : *t;
    }
    if (n > 0 && name[n - 1] == ' ')
        n--;
    name[n] = '\0';
    if (n == 0) {
        load_fail(l, -EINVAL, "syntax error: empty section name");
        goto out;
    }
    first = seen_find(l, name, NULL);
    if (first) {
        load_fail(l, -EINVAL, "[%s]: duplicate section (first on line %d)", name, first);
        goto out;
    }
    if (seen_add(l, name, NULL) < 0) {
        load_fail(l, -ENOMEM, "out of memory");
        goto out;
    }
    memcpy(l->section, name, n + 1);
    int rc = run_handler(l->h, l->hctx, name, NULL, NULL, where, sizeof(where));
    if (rc < 0)
        load_fail(l, rc, "%s", where);
out:
    return l->rc;
}

/* Where inih splits "key = value": the first '=' or ':' before an inline comment. */
static char *find_separator(char *s)
{
    bool was_blank = false;

    for (; *s && !(was_blank && *s == ';'); s++) {
        if (*s == '=' || *s == ':')
            return s;
        was_blank = is_blank(*s);
    }
    return NULL;
}

/* The value after the separator, as inih would make it: cut at an inline comment (';'
 * after a blank), blanks trimmed. Edits the line in place. */
static char *clean_value(char *v)
{
    bool was_blank = false;
    char *end = v;

    for (; *end && !(was_blank && *end == ';'); end++)
        was_blank = is_blank(*end);
    while (end > v && is_blank(end[-1]))
        end--;
    *end = '\0';
    while (is_blank(*v))
        v++;
    return v;
}

/*
 * The ini_reader: one physical line per call (see the top of this file). inih gets a short
 * stand-in for each line: "" for blanks and comments, "[s]" for a section (tracked here),
 * "key=" for a setting whose value is kept in l->value. So only the key must fit inih's
 * line buffer, and values can be as long as CONFIG_RAW_LINE_MAX.
 */
static char *load_read_line(char *str, int num, void *stream)
{
    struct load *l = stream;
    size_t n = 0;
    bool nul = false, too_long = false;
    int ch;

    if (l->rc)
        return NULL;
    while ((ch = getc(l->f)) != EOF && ch != '\n') {
        if (n == sizeof(l->raw) - 1) {
            too_long = true;
            continue; /* drain the line so that nothing of it is parsed */
        }
        nul |= ch == '\0';
        l->raw[n++] = (char)ch;
    }
    if (ferror(l->f)) {
        errf(l->err, l->err_cap, "%s: cannot read: %s", l->path, strerror(errno));
        l->rc = -EIO;
        l->err_line = l->line + 1;
        return NULL;
    }
    if (ch == EOF && n == 0 && !too_long)
        return NULL;
    l->line++;
    l->raw[n] = '\0';

    char *s = l->raw;
    if (l->line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        n -= 3;
    }
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    while (n > 0 && is_blank(*s)) {
        s++;
        n--;
    }
    s[n] = '\0';
    if (nul) {
        load_fail(l, -EINVAL, "NUL byte in line");
        return NULL;
    }
    if (too_long) {
        load_fail(l, -EINVAL, "line too long (max %zu bytes)", sizeof(l->raw) - 1);
        return NULL;
    }

    const char *out = s;
    size_t klen = 0;
    l->value = NULL;
    if (*s == '[') {
        if (load_section(l, s) < 0)
            return NULL;
        out = "[s]";
        klen = 3;
    } else if (*s != '\0' && *s != ';' && *s != '#') {
        char *sep = find_separator(s);
        if (!sep) {
            load_fail(l, -EINVAL, "syntax error: expected \"[section]\" or \"key = value\"");
            return NULL;
        }
        l->value = clean_value(sep + 1);
        klen = (size_t)(sep - s);
        while (klen > 0 && is_blank(s[klen - 1]))
            klen--;
        if (klen >= CONFIG_KEY_MAX) {
            load_fail(l, -EINVAL, "key too long (max %d bytes)", CONFIG_KEY_MAX - 1);
            return NULL;
        }
        s[klen++] = '=';
    }
    /* inih needs room for the text, a newline and a NUL. */
    if (num < 0 || klen + 2 > (size_t)num) {
        load_fail(l, -EINVAL, "line too long for libinih (%d bytes)", num);
        return NULL;
    }
    memcpy(str, out, klen);
    str[klen] = '\n';
    str[klen + 1] = '\0';
    return str;
}

/* The ini_handler. inih's section and value are stand-ins: the real ones are in l. */
static int load_on_key(void *user, const char *inih_section, const char *key,
                       const char *inih_value)
{
    struct load *l = user;
    const char *value = l->value;
    char where[PGB_ERR_MAX];
    int first, rc;

    (void)inih_section;
    (void)inih_value;
    if (l->rc)
        return 0;
    if (!value || key[0] == '\0') {
        load_fail(l, -EINVAL, "syntax error: expected \"key = value\"");
        return 0;
    }
    if (l->section[0] == '\0') {
        load_fail(l, -EINVAL, "%s: key outside any [section]", key);
        return 0;
    }
    first = seen_find(l, l->section, key);
    if (first) {
        load_fail(l, -EINVAL, "[%s] %s: duplicate key (first set on line %d)", l->section, key,
                  first);
        return 0;
    }
    rc = run_handler(l->h, l->hctx, l->section, key, value, where, sizeof(where));
    if (rc < 0) {
        load_fail(l, rc, "%s", where);
        return 0;
    }
    if (seen_add(l, l->section, key) < 0) {
        load_fail(l, -ENOMEM, "out of memory");
        return 0;
    }
    return 1;
}

int config_load(const char *path, config_handler h, void *ctx, char *err, size_t cap)
{
    struct load *l = calloc(1, sizeof(*l));
    int rc, ret;

    if (!l) {
        errf(err, cap, "%s: out of memory", path);
        rc = -ENOMEM;
        goto out;
    }
    l->path = path;
    l->h = h;
    l->hctx = ctx;
    l->err = err;
    l->err_cap = cap;
    l->f = fopen(path, "re");
    if (!l->f) {
        rc = -errno;
        errf(err, cap, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    ret = ini_parse_stream(load_read_line, l, load_on_key, l);
    if (l->rc && (ret <= 0 || ret >= l->err_line)) {
        rc = l->rc; /* our message, and no earlier syntax error from inih */
    } else if (ret > 0) {
        errf(err, cap, "%s:%d: syntax error: expected \"[section]\" or \"key = value\"", path, ret);
        rc = -EINVAL;
    } else if (ret < 0) {
        errf(err, cap, "%s: %s", path, ret == -2 ? "out of memory" : "cannot parse");
        rc = ret == -2 ? -ENOMEM : -EIO;
    } else {
        rc = 0;
    }
out:
    if (l) {
        if (l->f)
            fclose(l->f);
        for (size_t i = 0; i < l->nseen; i++) {
            free(l->seen[i].section);
            free(l->seen[i].key);
        }
        free(l->seen);
        free(l);
    }
    return rc;
}

/* ---- flags ------------------------------------------------------------------------------ */

int config_apply_flag(const char *flag, config_handler h, void *ctx, char *err, size_t cap)
{
    char q[CONFIG_QUOTE_MAX];
    char section[CONFIG_SECTION_MAX], key[CONFIG_KEY_MAX], where[PGB_ERR_MAX];
    const char *head, *eq, *dot1, *dot2;
    size_t slen, mlen, klen;
    int rc;

    if (strncmp(flag, "--", 2) != 0 || !(eq = strchr(flag + 2, '=')))
        goto bad;
    head = flag + 2;
    dot1 = memchr(head, '.', (size_t)(eq - head));
    if (!dot1)
        goto bad;
    dot2 = memrchr(head, '.', (size_t)(eq - head));
    slen = (size_t)(dot1 - head);
    mlen = dot1 == dot2 ? 0 : (size_t)(dot2 - dot1 - 1);
    klen = (size_t)(eq - dot2 - 1);
    if (slen == 0 || klen == 0 || (dot1 != dot2 && mlen == 0))
        goto bad;
    for (const char *t = head; t < eq; t++) {
        if (is_blank(*t))
            goto bad;
    }
    if (slen + 1 + mlen >= sizeof(section) || klen >= sizeof(key)) {
        errf(err, cap, "command line: \"%s\": section or key too long", quote(q, flag));
        return -EINVAL;
    }
    /* "--route.NAME.key": the section is "route NAME" (NAME may itself hold dots). */
    memcpy(section, head, slen);
    if (mlen) {
        section[slen] = ' ';
        memcpy(section + slen + 1, dot1 + 1, mlen);
        slen += 1 + mlen;
    }
    section[slen] = '\0';
    memcpy(key, dot2 + 1, klen);
    key[klen] = '\0';

    rc = run_handler(h, ctx, section, NULL, NULL, where, sizeof(where));
    if (rc == 0)
        rc = run_handler(h, ctx, section, key, eq + 1, where, sizeof(where));
    if (rc < 0)
        errf(err, cap, "command line: %s", where);
    return rc;

bad:
    errf(err, cap, "command line: \"%s\": expected --section.key=value", quote(q, flag));
    return -EINVAL;
}

/* ---- helpers for the daemons' key handlers ------------------------------------------- */

void config_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

int config_route_append(void **items, size_t *n, size_t size, size_t max, const char *name,
                        void **out, char *err, size_t cap)
{
    char *grown;

    if (!proto_name_valid(name)) {
        config_err(err, cap, "invalid route name: expected 1 to %d of A-Z a-z 0-9 _ . -",
                   PROTO_NAME_MAX - 1);
        return -EINVAL;
    }
    if (*n == max) {
        config_err(err, cap, "too many routes (max %zu)", max);
        return -EINVAL;
    }
    if (!(grown = realloc(*items, (*n + 1) * size)))
        return -ENOMEM;
    *items = grown;
    *out = grown + *n * size;
    memset(*out, 0, size);
    (*n)++;
    return 0;
}

bool config_str_differs(const char *a, const char *b)
{
    if (!a || !b)
        return a != b;
    return strcmp(a, b) != 0;
}

int config_set_optional(char **dst, const char *value)
{
    if (value[0] == '\0') {
        free(*dst);
        *dst = NULL;
        return 0;
    }
    return config_set_str(dst, value);
}

int config_set_optional_hostport(char **dst, const char *value, char *err, size_t cap)
{
    char host[256];
    uint16_t port;

    if (value[0] && config_parse_hostport(value, host, &port, err, cap) < 0)
        return -EINVAL;
    return config_set_optional(dst, value);
}

int config_set_duration(uint64_t *dst, const char *value, char *err, size_t cap)
{
    uint64_t ms;
    int rc = config_parse_duration_ms(value, &ms, err, cap);

    if (rc < 0)
        return rc;
    if (ms < 1 || ms > CONFIG_DURATION_MAX_MS) {
        config_err(err, cap, "must be from 1ms to 24h, got \"%.80s\"", value);
        return -EINVAL;
    }
    *dst = ms;
    return 0;
}

int config_set_window(uint64_t *dst, const char *value, char *err, size_t cap)
{
    uint64_t size;

    if (config_parse_size(value, &size, err, cap) < 0)
        return -EINVAL;
    if (size < CONFIG_WINDOW_MIN || size > PROTO_MAX_WINDOW) {
        config_err(err, cap, "must be from 16k to 16M, got \"%.80s\"", value);
        return -EINVAL;
    }
    *dst = size;
    return 0;
}

int config_set_log_level(char **dst, const char *value, char *err, size_t cap)
{
    enum log_level level;

    if (log_level_parse(value, &level) < 0) {
        config_err(err, cap, "expected debug, info, warn or error, got \"%.80s\"", value);
        return -EINVAL;
    }
    return config_set_str(dst, value);
}

int config_set_log_format(char **dst, const char *value, char *err, size_t cap)
{
    enum log_format format;

    if (log_format_parse(value, &format) < 0) {
        config_err(err, cap, "expected text or json, got \"%.80s\"", value);
        return -EINVAL;
    }
    return config_set_str(dst, value);
}

int config_build(const char *path, int nflags, char **flags, config_handler h,
                 int (*check)(const void *ctx, char *err, size_t cap), void *ctx, char *err,
                 size_t cap)
{
    char why[PGB_ERR_MAX];
    int rc = 0;

    if (path) {
        rc = config_load(path, h, ctx, err, cap);
        if (rc < 0)
            goto out;
    }
    for (int i = 0; i < nflags; i++) {
        rc = config_apply_flag(flags[i], h, ctx, err, cap);
        if (rc < 0)
            goto out;
    }
    rc = check(ctx, why, sizeof(why));
    if (rc < 0)
        config_err(err, cap, "%s%s%s", path ? path : "", path ? ": " : "", why);
out:
    return rc;
}
