/*
 * relay_metrics — the relay's metrics_listen: its families rendered from r->stats and the
 * live state (sessions, tunnels, pending connections) at scrape time, and its readiness
 * (listening and not draining). The endpoint itself is common/monitor.h.
 */
#ifndef PGB_RELAY_METRICS_H
#define PGB_RELAY_METRICS_H

#include <stddef.h>

struct relay;

/* Listen on r->cfg.metrics_listen (off when unset): 0, or negative with err[cap]. */
int relay_metrics_start(struct relay *r, char *err, size_t cap);
/* The certificate files r->cfg names, read again for pgburrow_cert_expiry_timestamp_seconds
 * (start-up and reload). */
void relay_metrics_certs(struct relay *r);

#endif
