/*
 * relay.c — the relay's context: its listeners, signals, drain, start and stop.
 *
 * Agents' tunnels are in tunnels.c, clients in frontdoor.c, the TLS contexts in relay_tls.c,
 * reloads and certificate re-checks in reload.c.
 */
#include "relay/relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/daemon.h"
#include "common/log.h"
#include "relay/admin.h"
#include "relay/admit.h"
#include "relay/audit.h"
#include "relay/cancel.h"
#include "relay/frontdoor.h"
#include "relay/relay_metrics.h"
#include "relay/relay_tls.h"
#include "relay/reload.h"
#include "relay/tunnels.h"

/* ---- listeners, signals, lifecycle --------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    r->open_handles--;
}

static void relay_signal_drain(void *ctx)
{
    relay_drain(ctx);
}

static void relay_signal_stop(void *ctx)
{
    relay_stop(ctx);
}

static uint64_t relay_signal_sessions(void *ctx)
{
    return ((struct relay *)ctx)->nsessions;
}

static const struct daemon_signal_ops relay_signal_ops = {
    .drain = relay_signal_drain,
    .stop = relay_signal_stop,
    .sessions = relay_signal_sessions,
};

/* The drain proper: stop accepting, GOAWAY, sessions may finish for drain_timeout. */
static void relay_drain_now(struct relay *r)
{
    r->draining = true;
    r->drain_pending = false;
    log_info("received SIGTERM: draining: %llu session(s) may run for up to %llu ms; no new "
             "connections (send SIGTERM again to stop now)",
             (unsigned long long)r->nsessions, (unsigned long long)r->cfg.drain_timeout_ms);
    if (r->client_listener.loop && !uv_is_closing((uv_handle_t *)&r->client_listener))
        uv_close((uv_handle_t *)&r->client_listener, handle_closed);
    if (r->tunnel_listener.loop && !uv_is_closing((uv_handle_t *)&r->tunnel_listener))
        uv_close((uv_handle_t *)&r->tunnel_listener, handle_closed);
    relay_tunnels_goaway(r, "relay is shutting down");
    daemon_drain_start(&r->signals, r->loop, r->cfg.drain_timeout_ms);
    r->open_handles++;
}

static void drain_delay_done(uv_timer_t *t)
{
    struct relay *r = t->data;

    if (!r->stopping && !r->draining)
        relay_drain_now(r);
}

void relay_drain(struct relay *r)
{
    if (r->draining || r->drain_pending || r->stopping)
        return;
    if (r->cfg.drain_delay_ms == 0) {
        relay_drain_now(r);
        return;
    }
    /* a load balancer polling /readyz sees 503 and stops sending new clients here; until it
     * has, they are still served */
    r->drain_pending = true;
    log_info("received SIGTERM: /readyz answers 503; still accepting for drain_delay=%llu ms, "
             "then draining (send SIGTERM again to stop now)",
             (unsigned long long)r->cfg.drain_delay_ms);
    uv_timer_init(r->loop, &r->drain_delay_timer);
    r->drain_delay_timer.data = r;
    r->open_handles++;
    uv_timer_start(&r->drain_delay_timer, drain_delay_done, r->cfg.drain_delay_ms, 0);
}

static void tunnel_on_connection(uv_stream_t *server, int status)
{
    struct relay *r = server->data;
    if (status < 0 && !r->stopping)
        relay_admit_accept_failed(r, status, "tunnel");
    if (status < 0 || r->stopping)
        return;
    relay_tunnels_accept(r, server);
}

static void client_on_connection(uv_stream_t *server, int status)
{
    struct relay *r = server->data;
    if (status < 0 && !r->stopping)
        relay_admit_accept_failed(r, status, "client");
    if (status < 0 || r->stopping)
        return;
    frontdoor_accept(r, server);
}

static int listen_on(struct relay *r, uv_tcp_t *h, const char *hostport, uv_connection_cb cb,
                     char *err, size_t cap)
{
    struct sockaddr_storage ss;
    int rc;
    memset(&ss, 0, sizeof(ss));
    rc = conn_resolve_listen(r->loop, hostport, &ss, err, cap);
    if (rc < 0)
        return rc;
    uv_tcp_init(r->loop, h);
    h->data = r;
    r->open_handles++;
    rc = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)h, 511, cb);
    if (rc < 0) {
        snprintf(err, cap, "cannot listen on %s: %s", hostport, uv_strerror(rc));
        return rc;
    }
    return 0;
}

int relay_init(struct relay *r, uv_loop_t *loop, struct relay_config *cfg, char *err, size_t cap)
{
    struct relay_tls tls;
    char aerr[PGB_ERR_MAX];
    int rc;

    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* ownership moves into the relay */
    r->cl = conn_loop_new(loop);
    relay_stats_init(&r->stats);
    relay_stats_sync(&r->stats, &r->cfg);
    r->route_sessions = counts_new();
    r->source_sessions = counts_new();
    if (!r->route_sessions || !r->source_sessions || keytab_init(&r->cancel_keys) < 0) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    r->audit = audit_new();
    if (!r->cl || !r->audit) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    /* checked here (--check-config), opened by relay_start */
    if ((rc = audit_check_path(r->cfg.audit_log, aerr, sizeof(aerr))) < 0) {
        snprintf(err, cap, "%s", aerr);
        return rc;
    }
    rc = relay_tls_build(&r->cfg, &tls, err, cap);
    if (rc < 0)
        return rc;
    relay_tls_swap(r, &tls);
    return 0;
}

int relay_start(struct relay *r, char *err, size_t cap)
{
    int rc;
    rc = audit_configure(r->audit, r->cfg.audit_log, r->cfg.audit_statements,
                         (size_t)r->cfg.audit_statement_max, err, cap);
    if (rc < 0)
        return rc;
    rc = relay_admit_start(r, err, cap);
    if (rc < 0)
        return rc;
    rc = listen_on(r, &r->client_listener, r->cfg.listen, client_on_connection, err, cap);
    if (rc < 0)
        return rc;
    rc = listen_on(r, &r->tunnel_listener, r->cfg.tunnel_listen, tunnel_on_connection, err, cap);
    if (rc < 0)
        return rc;
    rc = relay_metrics_start(r, err, cap);
    if (rc < 0)
        return rc;
    daemon_signals_start(&r->signals, r->loop, &relay_signal_ops, r);
    r->open_handles += 2;
    uv_timer_init(r->loop, &r->cert_timer);
    r->cert_timer.data = r;
    r->cert_recheck = relay_certs_recheck;
    r->open_handles++;
    uv_timer_init(r->loop, &r->drain_timer);
    r->drain_timer.data = r;
    r->open_handles++;
    r->open_admin = admin_session_open;
    log_info("listening clients=%s tunnels=%s metrics=%s", r->cfg.listen, r->cfg.tunnel_listen,
             r->cfg.metrics_listen ? r->cfg.metrics_listen : "off");
    return 0;
}

void relay_stop(struct relay *r)
{
    if (r->stopping)
        return;
    r->stopping = true;
    if (r->client_listener.loop && !uv_is_closing((uv_handle_t *)&r->client_listener))
        uv_close((uv_handle_t *)&r->client_listener, handle_closed);
    if (r->tunnel_listener.loop && !uv_is_closing((uv_handle_t *)&r->tunnel_listener))
        uv_close((uv_handle_t *)&r->tunnel_listener, handle_closed);
    relay_admit_stop(r);
    daemon_signals_close(&r->signals, handle_closed);
    if (r->cert_timer.loop)
        uv_close((uv_handle_t *)&r->cert_timer, handle_closed);
    if (r->drain_timer.loop)
        uv_close((uv_handle_t *)&r->drain_timer, handle_closed);
    if (r->drain_delay_timer.loop)
        uv_close((uv_handle_t *)&r->drain_delay_timer, handle_closed);
    monitor_close(&r->monitor);
    relay_reload_stop(r);
    frontdoor_close_all(r);
    admin_close_all(r);
    relay_tunnels_close_all(r, "relay shutting down");
    conn_loop_close(r->cl);
}

void relay_free(struct relay *r)
{
    relay_admit_free(r);
    counts_free(r->route_sessions);
    counts_free(r->source_sessions);
    relay_cancel_limiter_free(r->cancel_limiter);
    relay_cancel_limiter_free(r->cancel_net);
    relay_cancel_limiter_free(r->cancel_global);
    keytab_fini(&r->cancel_keys);
    struct relay_tls tls = {0};
    relay_tls_swap(r, &tls);
    relay_tls_free(&tls);
    audit_free(r->audit);
    r->audit = NULL;
    relay_stats_free(&r->stats);
    monitor_free(&r->monitor);
    conn_loop_free(r->cl);
    relay_config_free(&r->cfg);
}
