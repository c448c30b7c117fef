/*
 * relay_metrics — the relay's /metrics families and /readyz (see relay_metrics.h).
 */
#include "relay/relay_metrics.h"

#include <stdlib.h>
#include <string.h>

#include "relay/frontdoor.h"
#include "relay/preauth.h"
#include "relay/relay.h"
#include "relay/tunnels.h"

/* The agent names of the configuration (every route's), sorted and distinct, with the number
 * of up tunnels of each; tunnels of other agents count as "other". */
struct agent_tally {
    const char **names;
    uint64_t *up;
    size_t n;
    uint64_t other;
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void tally_tunnel(void *ctx, struct tunnel *t, const char *agent)
{
    struct agent_tally *at = ctx;
    const char **hit = bsearch(&agent, at->names, at->n, sizeof(*at->names), cmp_name);

    if (hit)
        at->up[hit - at->names]++;
    else
        at->other++;
}

static void render_tunnels(struct relay *r, struct metrics_buf *b)
{
    const struct relay_config *c = &r->cfg;
    struct agent_tally at = {0};
    size_t total = 0, n = 0;

    for (size_t i = 0; i < c->nroutes; i++)
        total += c->routes[i].nagents;
    at.names = calloc(total ? total : 1, sizeof(*at.names));
    at.up = calloc(total ? total : 1, sizeof(*at.up));
    if (!at.names || !at.up) {
        b->failed = true;
        goto out;
    }
    for (size_t i = 0; i < c->nroutes; i++)
        for (uint32_t j = 0; j < c->routes[i].nagents; j++)
            at.names[n++] = c->routes[i].agents[j];
    qsort(at.names, n, sizeof(*at.names), cmp_name);
    for (size_t i = 0; i < n; i++)
        if (at.n == 0 || strcmp(at.names[at.n - 1], at.names[i]) != 0)
            at.names[at.n++] = at.names[i];
    relay_foreach_agent_tunnel(r, tally_tunnel, &at);
    metrics_family(b, "pgburrow_relay_tunnels_up", "gauge",
                   "Agent tunnels whose HELLO was accepted (draining ones included), per agent "
                   "named in the configuration; agents not named there count as \"other\".");
    for (size_t i = 0; i < at.n; i++) {
        const char *labels[] = {"agent", at.names[i], NULL};
        metrics_u64(b, "pgburrow_relay_tunnels_up", labels, at.up[i]);
    }
    const char *other[] = {"agent", "other", NULL};
    metrics_u64(b, "pgburrow_relay_tunnels_up", other, at.other);
out:
    free(at.names);
    free(at.up);
}

static void render_routes(struct relay *r, struct metrics_buf *b)
{
    struct relay_stats *s = &r->stats;

    route_stats_live_reset(&s->routes);
    frontdoor_stats_live(r);
    metrics_family(b, "pgburrow_relay_sessions_active", "gauge",
                   "Client sessions with a stream open to an agent, per route.");
    for (size_t i = 0; i < s->routes.n; i++) {
        const char *labels[] = {"route", s->routes.routes[i]->name, NULL};
        metrics_u64(b, "pgburrow_relay_sessions_active", labels, s->routes.routes[i]->active);
    }
    metrics_family(b, "pgburrow_relay_sessions_total", "counter",
                   "Client sessions opened toward an agent, per route.");
    for (size_t i = 0; i < s->routes.n; i++) {
        const char *labels[] = {"route", s->routes.routes[i]->name, NULL};
        metrics_u64(b, "pgburrow_relay_sessions_total", labels, s->routes.routes[i]->total);
    }
    metrics_family(b, "pgburrow_relay_session_bytes_total", "counter",
                   "Bytes streamed through sessions after the StartupMessage, per route and "
                   "direction (to_server: from clients; to_client: from PostgreSQL).");
    for (size_t i = 0; i < s->routes.n; i++) {
        const struct route_stats *e = s->routes.routes[i];
        const char *up[] = {"route", e->name, "direction", "to_server", NULL};
        const char *down[] = {"route", e->name, "direction", "to_client", NULL};
        metrics_u64(b, "pgburrow_relay_session_bytes_total", up, e->to_server + e->live_to_server);
        metrics_u64(b, "pgburrow_relay_session_bytes_total", down,
                    e->to_client + e->live_to_client);
    }
}

static void render(void *ctx, struct metrics_buf *b)
{
    struct relay *r = ctx;
    struct relay_stats *s = &r->stats;

    render_routes(r, b);
    metrics_family(b, "pgburrow_relay_session_setup_seconds", "histogram",
                   "From a client's TCP accept to its agent's OPEN_OK (PostgreSQL connected, "
                   "StartupMessage forwarded), client TLS handshake included.");
    metrics_histogram_write(b, "pgburrow_relay_session_setup_seconds", NULL, &s->setup);
    metrics_family(b, "pgburrow_relay_refused_total", "counter",
                   "Connections refused or dropped before or while opening a session (client "
                   "and tunnel listeners, cancel requests), by reason.");
    for (int i = 0; i < PREAUTH_REASONS; i++) {
        /* over handshake_rate a client waits and a tunnel is refused as "tunnel": not a
         * reason of its own here */
        if (i == PREAUTH_RATE)
            continue;
        const char *labels[] = {"reason", relay_stats_reason_name((enum preauth_reason)i), NULL};
        metrics_u64(b, "pgburrow_relay_refused_total", labels, s->refused[i]);
    }
    metrics_family(b, "pgburrow_relay_refused_sqlstate_total", "counter",
                   "Client connections refused with a FATAL ErrorResponse, by its SQLSTATE.");
    for (size_t i = 0; i <= RELAY_STATS_SQLSTATES; i++) {
        const char *labels[] = {"sqlstate", relay_stats_sqlstate_name(i), NULL};
        metrics_u64(b, "pgburrow_relay_refused_sqlstate_total", labels, s->refused_sqlstate[i]);
    }
    render_tunnels(r, b);
    metrics_family(b, "pgburrow_relay_pending_connections", "gauge",
                   "Accepted connections not yet routed (clients) or without an accepted HELLO "
                   "(tunnels): the max_pending slots in use.");
    metrics_u64(b, "pgburrow_relay_pending_connections", NULL,
                r->preauth ? (uint64_t)preauth_pending(r->preauth) : 0);
    metrics_family(b, "pgburrow_relay_cancel_requests_total", "counter",
                   "PostgreSQL CancelRequests received, by what became of them.");
    const char *fwd[] = {"result", "forwarded", NULL};
    const char *drop[] = {"result", "dropped", NULL};
    metrics_u64(b, "pgburrow_relay_cancel_requests_total", fwd, s->cancel_forwarded);
    metrics_u64(b, "pgburrow_relay_cancel_requests_total", drop, s->cancel_dropped);
    metrics_family(b, "pgburrow_relay_draining", "gauge",
                   "1 from SIGTERM on (drain_delay, then the drain), else 0.");
    metrics_u64(b, "pgburrow_relay_draining", NULL, r->drain_pending || r->draining);
}

static bool ready(void *ctx)
{
    const struct relay *r = ctx;
    return !r->drain_pending && !r->draining && !r->stopping;
}

static const struct monitor_ops relay_monitor_ops = {
    .daemon = "relay",
    .render = render,
    .ready = ready,
};

void relay_metrics_certs(struct relay *r)
{
    const struct relay_config *c = &r->cfg;
    size_t n = 0;
    const char **files = calloc(3 + c->nroutes, sizeof(*files));

    if (!files)
        return;
    files[n++] = c->tls_cert;
    files[n++] = c->tunnel_cert;
    files[n++] = c->agent_ca;
    for (size_t i = 0; i < c->nroutes; i++)
        files[n++] = c->routes[i].client_ca;
    monitor_certs_read(&r->monitor, files, n);
    free(files);
}

int relay_metrics_start(struct relay *r, char *err, size_t cap)
{
    monitor_init(&r->monitor, &relay_monitor_ops, r);
    relay_metrics_certs(r);
    return monitor_start(&r->monitor, r->loop, r->cfg.metrics_listen, err, cap);
}
