/*
 * metrics — Prometheus text format writer (see metrics.h).
 */
#include "common/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void metrics_buf_init(struct metrics_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void metrics_buf_free(struct metrics_buf *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Room for n more bytes and the terminating NUL. */
static bool buf_reserve(struct metrics_buf *b, size_t n)
{
    size_t want, cap;
    char *p;

    if (b->failed)
        return false;
    if (n > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    want = b->len + n + 1;
    if (want <= b->cap)
        return true;
    for (cap = b->cap ? b->cap : 4096; cap < want; cap *= 2)
        ;
    if (!(p = realloc(b->data, cap))) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

static void buf_put(struct metrics_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(struct metrics_buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->failed = true;
        return;
    }
    buf_put(b, tmp, (size_t)n);
}

/* s with backslash and newline escaped, and double quote too when quote is set. */
static void buf_escaped(struct metrics_buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_put(b, "\\\\", 2);
        else if (*s == '\n')
            buf_put(b, "\\n", 2);
        else if (*s == '"' && quote)
            buf_put(b, "\\\"", 2);
        else
            buf_put(b, s, 1);
    }
}

size_t metrics_escape_label(const char *v, char *out, size_t cap)
{
    size_t need = 0, o = 0;

    for (; *v; v++) {
        char esc[2] = {*v, 0};
        size_t n = 1;
        if (*v == '\\' || *v == '"' || *v == '\n') {
            esc[0] = '\\';
            esc[1] = *v == '\n' ? 'n' : *v;
            n = 2;
        }
        need += n;
        if (cap > 0 && o + n < cap) {
            memcpy(out + o, esc, n);
            o += n;
        }
    }
    if (cap > 0)
        out[o] = '\0';
    return need;
}

void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help)
{
    buf_puts(b, "# HELP ");
    buf_puts(b, name);
    buf_puts(b, " ");
    buf_escaped(b, help, false);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, name);
    buf_puts(b, " ");
    buf_puts(b, type);
    buf_puts(b, "\n");
}

/* name{k="v",...} followed by a blank (extra: one more label pair, e.g. le, or NULL). */
static void sample_head(struct metrics_buf *b, const char *name, const char *const *labels,
                        const char *extra_key, const char *extra_value)
{
    bool any = false;

    buf_puts(b, name);
    for (size_t i = 0; labels && labels[i]; i += 2) {
        buf_puts(b, any ? "," : "{");
        buf_puts(b, labels[i]);
        buf_puts(b, "=\"");
        buf_escaped(b, labels[i + 1] ? labels[i + 1] : "", true);
        buf_puts(b, "\"");
        any = true;
    }
    if (extra_key) {
        buf_puts(b, any ? "," : "{");
        buf_puts(b, extra_key);
        buf_puts(b, "=\"");
        buf_escaped(b, extra_value, true);
        buf_puts(b, "\"");
        any = true;
    }
    buf_puts(b, any ? "} " : " ");
}

void metrics_u64(struct metrics_buf *b, const char *name, const char *const *labels, uint64_t v)
{
    sample_head(b, name, labels, NULL, NULL);
    buf_printf(b, "%" PRIu64 "\n", v);
}

/* The shortest of %.15g, %.16g, %.17g that reads back as v (0.028, not 0.028000000000000001). */
static void buf_shortest(struct metrics_buf *b, double v)
{
    char tmp[40];

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v || prec == 17)
            break;
    }
    buf_puts(b, tmp);
}

/* Go's strconv forms for the special values, as the format asks. */
static void put_double(struct metrics_buf *b, double v)
{
    if (isnan(v))
        buf_puts(b, "NaN");
    else if (isinf(v))
        buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else
        buf_shortest(b, v);
}

void metrics_double(struct metrics_buf *b, const char *name, const char *const *labels, double v)
{
    sample_head(b, name, labels, NULL, NULL);
    put_double(b, v);
    buf_puts(b, "\n");
}

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t nbounds)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->nbounds = nbounds < METRICS_BUCKETS_MAX ? nbounds : METRICS_BUCKETS_MAX - 1;
}

void metrics_histogram_observe(struct metrics_histogram *h, double v)
{
    size_t i = 0;

    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++; /* i == nbounds: only +Inf */
    h->count++;
    h->sum += v;
}

void metrics_histogram_write(struct metrics_buf *b, const char *name, const char *const *labels,
                             const struct metrics_histogram *h)
{
    char series[128], le[32];
    uint64_t cum = 0;

    snprintf(series, sizeof(series), "%s_bucket", name);
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        snprintf(le, sizeof(le), "%g", h->bounds[i]);
        sample_head(b, series, labels, "le", le);
        buf_printf(b, "%" PRIu64 "\n", cum);
    }
    sample_head(b, series, labels, "le", "+Inf");
    buf_printf(b, "%" PRIu64 "\n", h->count);
    snprintf(series, sizeof(series), "%s_sum", name);
    metrics_double(b, series, labels, h->sum);
    snprintf(series, sizeof(series), "%s_count", name);
    metrics_u64(b, series, labels, h->count);
}
