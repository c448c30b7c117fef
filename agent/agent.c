/*
 * agent.c — the agent's context: configuration, signals, drain, start and stop.
 *
 * The relay entries (relays.h) hold one link per relay address (links.h); each link's tunnel
 * carries the sessions its relay opens (session.h).
 */
#include "agent/agent.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_metrics.h"
#include "agent/cancel_key.h"
#include "agent/links.h"
#include "agent/relays.h"
#include "agent/reload.h"
#include "agent/upstream.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/tls.h"

/* ---- lifecycle ----------------------------------------------------------------------- */

static void agent_signal_drain(void *ctx)
{
    agent_drain(ctx);
}

static void agent_signal_stop(void *ctx)
{
    agent_stop(ctx);
}

static uint64_t agent_signal_sessions(void *ctx)
{
    return agent_links_nsessions(ctx);
}

static const struct daemon_signal_ops agent_signal_ops = {
    .drain = agent_signal_drain,
    .stop = agent_signal_stop,
    .sessions = agent_signal_sessions,
};

void agent_drain(struct agent *a)
{
    if (a->draining || a->stopping)
        return;
    a->draining = true;
    log_info("received SIGTERM: draining: GOAWAY to every relay; %llu session(s) may run for up "
             "to %llu ms (send SIGTERM again to stop now)",
             (unsigned long long)agent_links_nsessions(a),
             (unsigned long long)a->cfg.drain_timeout_ms);
    agent_links_goaway(a, "agent is shutting down");
    daemon_drain_start(&a->signals, a->loop, a->cfg.drain_timeout_ms);
}

int agent_init(struct agent *a, uv_loop_t *loop, struct agent_config *cfg, char *err, size_t cap)
{
    char terr[PGB_ERR_MAX];
    memset(a, 0, sizeof(*a));
    a->loop = loop;
    a->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    a->cl = conn_loop_new(loop);
    if (!a->cl) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    a->relay_ctx = agent_links_ctx_new(&a->cfg, err, cap);
    if (!a->relay_ctx)
        return -EINVAL;
    if (upstream_build_contexts(&a->cfg, err, cap) < 0)
        return -EINVAL;
    /* The relays know this agent by its certificate's CN: one without is refused at start. */
    char name[256];
    if (tls_cert_file_cn(a->cfg.cert, name, sizeof(name), terr, sizeof(terr)) < 0) {
        snprintf(err, cap, "%s", terr);
        return -EINVAL;
    }
    a->cancel_keys = cancel_key_map_new(loop, a->cl, a->cfg.connect_timeout_ms);
    if (!a->cancel_keys) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    agent_metrics_init(a);
    if (uv_random(NULL, NULL, &a->rng, sizeof(a->rng), 0, NULL) < 0 || a->rng == 0)
        a->rng = (uint64_t)uv_hrtime() | 1;
    return 0;
}

int agent_start(struct agent *a, char *err, size_t cap)
{
    if (agent_metrics_start(a, err, cap) < 0)
        return -EINVAL;
    daemon_signals_start(&a->signals, a->loop, &agent_signal_ops, a);
    if (agent_relays_sync(a, true) < 0) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    log_info("started relays=%zu routes=%zu metrics=%s", a->cfg.nrelays, a->cfg.nroutes,
             a->cfg.metrics_listen ? a->cfg.metrics_listen : "off");
    return 0;
}

void agent_stop(struct agent *a)
{
    if (a->stopping)
        return;
    a->stopping = true;
    daemon_signals_close(&a->signals, NULL);
    agent_links_stop(a);
    agent_relays_stop(a);
    cancel_key_map_stop(a->cancel_keys);
    agent_reload_stop(a);
    monitor_close(&a->monitor);
    if (a->cl)
        conn_loop_close(a->cl);
}

void agent_free(struct agent *a)
{
    cancel_key_map_free(a->cancel_keys);
    SSL_CTX_free(a->relay_ctx);
    if (a->cl)
        conn_loop_free(a->cl);
    agent_links_free(a);
    agent_relays_free(a);
    route_stats_free(&a->routes);
    monitor_free(&a->monitor);
    agent_config_free(&a->cfg);
}
