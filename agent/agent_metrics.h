/*
 * agent_metrics — the agent's metrics_listen: its families rendered from a->routes and the
 * live state (tunnels, sessions) at scrape time, and its readiness (at least one tunnel up).
 * The endpoint itself is common/monitor.h.
 */
#ifndef PGB_AGENT_METRICS_H
#define PGB_AGENT_METRICS_H

#include <stddef.h>

struct agent;

/* The monitor and the route entries for a->cfg (agent_init). */
void agent_metrics_init(struct agent *a);
/* Listen on a->cfg.metrics_listen (off when unset): 0, or negative with err[cap]. */
int agent_metrics_start(struct agent *a, char *err, size_t cap);
/* After a->cfg changed (start-up, reload): route entries and certificate expiry times. */
void agent_metrics_sync(struct agent *a);

#endif
