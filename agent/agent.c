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

#include "agent/cancel_key.h"
#include "agent/links.h"
#include "agent/relays.h"
#include "agent/reload.h"
#include "agent/upstream.h"
#include "common/log.h"
#include "common/tls.h"

/* ---- lifecycle ----------------------------------------------------------------------- */

static void on_signal(uv_signal_t *sig, int signum)
{
    struct agent *a = sig->data;
    if (signum == SIGTERM && !a->draining) {
        agent_drain(a);
        return;
    }
    log_info("received %s: shutting down now", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    agent_stop(a);
}

static void drain_tick(uv_timer_t *timer)
{
    struct agent *a = timer->data;
    uint64_t n = agent_links_nsessions(a);
    if (n == 0) {
        log_info("drain: every session has ended; stopping");
        agent_stop(a);
    } else if (uv_now(a->loop) >= a->drain_deadline_ms) {
        log_warn("drain: drain_timeout reached; closing %llu remaining session(s)",
                 (unsigned long long)n);
        agent_stop(a);
    }
}

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
    a->drain_deadline_ms = uv_now(a->loop) + a->cfg.drain_timeout_ms;
    uv_timer_init(a->loop, &a->drain_timer);
    a->drain_timer.data = a;
    uv_timer_start(&a->drain_timer, drain_tick, 0, 100);
}

int agent_init(struct agent *a, uv_loop_t *loop, struct agent_config *cfg, char *err)
{
    char terr[TLS_ERR_MAX];
    memset(a, 0, sizeof(*a));
    a->loop = loop;
    a->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    a->cl = conn_loop_new(loop);
    if (!a->cl) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    a->relay_ctx = agent_links_ctx_new(&a->cfg, err);
    if (!a->relay_ctx)
        return -EINVAL;
    if (upstream_build_contexts(&a->cfg, err) < 0)
        return -EINVAL;
    /* The relays know this agent by its certificate's CN: one without is refused at start. */
    char name[256];
    if (tls_cert_file_cn(a->cfg.cert, name, sizeof(name), terr) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "%s", terr);
        return -EINVAL;
    }
    a->cancel_keys = cancel_key_map_new(loop, a->cl, a->cfg.connect_timeout_ms);
    if (!a->cancel_keys) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    if (uv_random(NULL, NULL, &a->rng, sizeof(a->rng), 0, NULL) < 0 || a->rng == 0)
        a->rng = (uint64_t)uv_hrtime() | 1;
    return 0;
}

int agent_start(struct agent *a, char *err)
{
    (void)err;
    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    a->sig_term.data = a->sig_int.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    if (agent_relays_sync(a, true) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    log_info("started relays=%zu routes=%zu", a->cfg.nrelays, a->cfg.nroutes);
    return 0;
}

void agent_stop(struct agent *a)
{
    if (a->stopping)
        return;
    a->stopping = true;
    if (a->draining)
        uv_close((uv_handle_t *)&a->drain_timer, NULL);
    if (a->sig_term.loop) {
        uv_close((uv_handle_t *)&a->sig_term, NULL);
        uv_close((uv_handle_t *)&a->sig_int, NULL);
    }
    agent_links_stop(a);
    agent_relays_stop(a);
    cancel_key_map_stop(a->cancel_keys);
    agent_reload_stop(a);
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
    agent_config_free(&a->cfg);
}
