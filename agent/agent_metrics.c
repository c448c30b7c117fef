/*
 * agent_metrics — the agent's /metrics families and /readyz (see agent_metrics.h).
 */
#include "agent/agent_metrics.h"

#include <stdlib.h>

#include "agent/agent.h"
#include "agent/links.h"
#include "agent/relays.h"
#include "agent/session.h"
#include "common/log.h"

static void render_relay(void *ctx, const char *label, uint32_t up)
{
    const char *labels[] = {"relay", label, NULL};
    metrics_u64(ctx, "pgburrow_agent_tunnels_up", labels, up);
}

static void render(void *ctx, struct metrics_buf *b)
{
    struct agent *a = ctx;
    const struct route_stats_table *t = &a->routes;

    route_stats_live_reset(&a->routes);
    agent_sessions_stats_live(a);
    metrics_family(b, "pgburrow_agent_tunnels_up", "gauge",
                   "Tunnels up (WELCOME received) per relay address of the configuration (a "
                   "name resolving to several relays has one tunnel per address).");
    agent_relays_foreach_up(a, render_relay, b);
    metrics_family(b, "pgburrow_agent_sessions_active", "gauge",
                   "Sessions the relays opened that are connecting or running, per route.");
    for (size_t i = 0; i < t->n; i++) {
        const char *labels[] = {"route", t->routes[i]->name, NULL};
        metrics_u64(b, "pgburrow_agent_sessions_active", labels, t->routes[i]->active);
    }
    metrics_family(b, "pgburrow_agent_sessions_total", "counter",
                   "Sessions the relays opened, per route.");
    for (size_t i = 0; i < t->n; i++) {
        const char *labels[] = {"route", t->routes[i]->name, NULL};
        metrics_u64(b, "pgburrow_agent_sessions_total", labels, t->routes[i]->total);
    }
    metrics_family(b, "pgburrow_agent_upstream_connect_failures_total", "counter",
                   "Sessions that could not connect to PostgreSQL (refused, timed out, TLS "
                   "failed), answered with OPEN_FAIL, per route.");
    for (size_t i = 0; i < t->n; i++) {
        const char *labels[] = {"route", t->routes[i]->name, NULL};
        metrics_u64(b, "pgburrow_agent_upstream_connect_failures_total", labels,
                    t->routes[i]->failures);
    }
    metrics_family(b, "pgburrow_agent_session_bytes_total", "counter",
                   "Bytes streamed between the tunnel and PostgreSQL, per route and direction "
                   "(to_server: toward PostgreSQL; to_client: from PostgreSQL).");
    for (size_t i = 0; i < t->n; i++) {
        const struct route_stats *e = t->routes[i];
        const char *up[] = {"route", e->name, "direction", "to_server", NULL};
        const char *down[] = {"route", e->name, "direction", "to_client", NULL};
        metrics_u64(b, "pgburrow_agent_session_bytes_total", up, e->to_server + e->live_to_server);
        metrics_u64(b, "pgburrow_agent_session_bytes_total", down,
                    e->to_client + e->live_to_client);
    }
    metrics_family(b, "pgburrow_agent_draining", "gauge", "1 from SIGTERM on, else 0.");
    metrics_u64(b, "pgburrow_agent_draining", NULL, a->draining);
}

static bool ready(void *ctx)
{
    const struct agent *a = ctx;
    return !a->stopping && !a->draining && agent_links_up(a) > 0;
}

static const struct monitor_ops agent_monitor_ops = {
    .daemon = "agent",
    .render = render,
    .ready = ready,
};

void agent_metrics_sync(struct agent *a)
{
    const struct agent_config *c = &a->cfg;
    size_t n = 0;
    const char **names = calloc(c->nroutes + 1, sizeof(*names));
    const char **files = calloc(2 + c->nroutes, sizeof(*files));

    if (!names || !files) {
        log_warn("metrics: out of memory; routes and certificates not updated");
        goto out;
    }
    for (size_t i = 0; i < c->nroutes; i++)
        names[i] = c->routes[i].name;
    route_stats_sync(&a->routes, names, c->nroutes);
    files[n++] = c->cert;
    files[n++] = c->ca;
    for (size_t i = 0; i < c->nroutes; i++)
        files[n++] = c->routes[i].sslrootcert;
    monitor_certs_read(&a->monitor, files, n);
out:
    free(names);
    free(files);
}

void agent_metrics_init(struct agent *a)
{
    monitor_init(&a->monitor, &agent_monitor_ops, a);
    agent_metrics_sync(a);
}

int agent_metrics_start(struct agent *a, char *err, size_t cap)
{
    return monitor_start(&a->monitor, a->loop, a->cfg.metrics_listen, err, cap);
}
