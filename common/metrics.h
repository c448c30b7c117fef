/*
 * metrics — the Prometheus text exposition format (version 0.0.4), written into a growing
 * buffer: families (# HELP, # TYPE), samples with escaped label values, and a fixed-bucket
 * histogram. Pure: no sockets, no loop; the caller renders its counters at scrape time.
 *
 * Label values are escaped as the format asks (backslash, double quote and newline become
 * \\, \" and \n); HELP text escapes backslash and newline. Names are the caller's constants
 * and are not checked. A buffer that could not grow keeps what it had and remembers the
 * failure (metrics_buf.failed): the caller answers 500 rather than a truncated scrape.
 */
#ifndef PGB_METRICS_H
#define PGB_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_buf {
    char *data; /* NUL-terminated once anything is written; owned, metrics_buf_free */
    size_t len, cap;
    bool failed; /* out of memory: the text is incomplete */
};

void metrics_buf_init(struct metrics_buf *b);
void metrics_buf_free(struct metrics_buf *b); /* NULL-tolerant; b is empty afterwards */

/* "# HELP name help\n# TYPE name type\n"; type: counter, gauge, histogram. */
void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",...} value. labels: key, value pairs ending with NULL (or NULL
 * for none). */
void metrics_u64(struct metrics_buf *b, const char *name, const char *const *labels, uint64_t v);
void metrics_double(struct metrics_buf *b, const char *name, const char *const *labels, double v);

/* The escaped form of a label value into out[cap] (truncated, always terminated when cap > 0).
 * Returns the length the whole escaped value needs. */
size_t metrics_escape_label(const char *v, char *out, size_t cap);

/* A histogram over fixed upper bounds (seconds), ascending; +Inf is implicit. Observing is a
 * short scan and two additions. */
#define METRICS_BUCKETS_MAX 16
struct metrics_histogram {
    const double *bounds; /* borrowed, nbounds ascending values */
    size_t nbounds;
    uint64_t counts[METRICS_BUCKETS_MAX]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
};

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t nbounds);
void metrics_histogram_observe(struct metrics_histogram *h, double v);
/* The _bucket (cumulative, le="..."), _sum and _count samples of name, with labels. */
void metrics_histogram_write(struct metrics_buf *b, const char *name, const char *const *labels,
                             const struct metrics_histogram *h);

#endif
