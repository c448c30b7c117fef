/*
 * monitor — the metrics and health listener both daemons share (metrics_listen): on an
 * http_server, GET or HEAD
 *   /metrics  the role's metrics and the common ones below (Prometheus text format 0.0.4)
 *   /healthz  200 whenever the loop answers
 *   /readyz   200 when ops->ready says so, else 503
 * Unknown paths get 404, other methods 405; the HTTP bounds are those of http.h.
 *
 * The common metrics: pgburrow_build_info, pgburrow_reloads_total{result},
 * pgburrow_last_reload_timestamp_seconds, pgburrow_last_reload_success,
 * pgburrow_metrics_connections_refused_total and
 * pgburrow_cert_expiry_timestamp_seconds{file} for the certificate files the configuration
 * names (read at start-up and at each reload, never at scrape time).
 *
 * Lives in the role's context, borrows ops and ctx, owns its listener, the address in use
 * and the certificate list.
 */
#ifndef PGB_MONITOR_H
#define PGB_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/http.h"
#include "common/metrics.h"

struct monitor_ops {
    const char *daemon;                               /* "relay" or "agent" (build_info) */
    void (*render)(void *ctx, struct metrics_buf *b); /* the role's own families */
    bool (*ready)(void *ctx);                         /* /readyz */
};

struct monitor_cert {
    char *file;
    long long not_after; /* seconds since the epoch */
};

struct monitor {
    struct http_server http;
    bool on;      /* listening on listen */
    char *listen; /* the address in use (NULL: off) */
    const struct monitor_ops *ops;
    void *ctx;
    uint64_t reloads_ok, reloads_failed;
    long long last_reload; /* seconds since the epoch; 0: none yet */
    bool last_reload_ok;
    struct monitor_cert *certs;
    size_t ncerts;
};

void monitor_init(struct monitor *m, const struct monitor_ops *ops, void *ctx);
/* Listen on hostport (NULL or empty: stay off). 0, or negative with err[cap]. */
int monitor_start(struct monitor *m, uv_loop_t *loop, const char *hostport, char *err, size_t cap);
/* Close the listener and its connections (the loop then runs their close callbacks). */
void monitor_close(struct monitor *m);
void monitor_free(struct monitor *m); /* after the loop ran out; NULL-tolerant */

/* A reload finished (ok or not): counted, timestamped. */
void monitor_reloaded(struct monitor *m, bool ok);
/* The certificate files in force (NULL entries and repeats skipped): each file's earliest
 * notAfter, read now. An unreadable file is left out (its daemon reports it elsewhere). */
void monitor_certs_read(struct monitor *m, const char *const *files, size_t n);

/* Whether a reload's metrics_listen differs from the one in use (it needs a restart). */
bool monitor_listen_differs(const struct monitor *m, const char *hostport);

#endif
