/*
 * relay.c — the relay's context, its listeners, and the agents' tunnels.
 *
 * An agent tunnel goes through:
 *
 *   accepted --TLS 1.3 + client cert verified--> handshaken --HELLO--> up (WELCOME sent)
 *       \------------------------- any failure / dead_timeout -----------------> done
 *
 * Only "up" tunnels are offered routes, and only the routes the configuration allows for the
 * agent's certificate name (relay_route_allows).
 */
#include "relay/relay.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/tls.h"
#include "relay/cancel.h"
#include "relay/audit.h"
#include "relay/reload.h"
#include "relay/access.h"
#include "relay/admit.h"
#include "common/sqlstate.h"

struct relay_agent {
    struct relay *r;
    struct relay_agent *prev, *next;
    struct tunnel *t;
    bool handshaken; /* TLS done, certificate verified */
    bool up;         /* HELLO accepted: serves its routes */
    bool draining;   /* sent GOAWAY: no new sessions */
    char name[PROTO_NAME_MAX];
    char peer[64];
    uint32_t nroutes;
    char routes[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    uint32_t noffered; /* routes in its HELLO: re-checked against the config on reload */
    char offered[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    long long not_after;      /* its certificate chain's first expiry (seconds since the epoch) */
    struct preauth_slot slot; /* pending: from accept until its HELLO is accepted (admit.h) */
};

/* ---- agent tunnels ------------------------------------------------------------------- */

static uint16_t min_u16(uint16_t a, uint16_t b)
{
    return a < b ? a : b;
}

/*
 * The handshake verified the chain against agent_ca (and agent_crl); the certificate must also
 * be an agent's: URI SAN pgburrow-agent:NAME, NAME = CN. A client certificate from the same CA
 * (`mkcerts.sh DIR client db2-agent`) has no such SAN and is refused here.
 */
static void agent_on_up(struct tunnel *t)
{
    struct relay_agent *a = tunnel_data(t);
    struct relay *r = a->r;
    struct tls_peer_info info;
    char name[256], why[TLS_ERR_MAX];
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    int rc;

    if (conn_tls_verify_peer(tunnel_conn(t), r->agent_store, &info, why) < 0) {
        log_msg(LOG_WARN, tunnel_id(t), 0, "tunnel rejected peer=%s reason=certificate: %s",
                a->peer, why);
        tunnel_fail(t, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                    "agent certificate not accepted: %s", why);
        return;
    }
    rc = conn_tls_peer_chain(tunnel_conn(t), &leaf, &chain);
    if (rc == 0)
        rc = tls_cert_agent_name(leaf, name, sizeof(name), why);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    if (rc == -ENOENT)
        snprintf(why, sizeof(why), "not an agent certificate (no URI subjectAltName %sNAME)",
                 TLS_AGENT_URI_SCHEME);
    else if (rc == 0 && !proto_name_valid(name))
        snprintf(why, sizeof(why), "invalid agent name \"%.80s\"", name);
    if (rc < 0 || !proto_name_valid(name)) {
        log_msg(LOG_WARN, tunnel_id(t), 0, "tunnel rejected peer=%s subject=%s reason=%s", a->peer,
                info.subject, why);
        tunnel_fail(t, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                    "agent certificate refused: %s", why);
        return;
    }
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->not_after = info.not_after;
    a->handshaken = true;
}

/*
 * At most max_tunnels_per_agent (default 1) tunnels per agent name. An agent that reconnects
 * after a network cut leaves its old tunnel behind until keepalive notices: a tunnel over the
 * limit that has been silent for two ping intervals is such a zombie and is replaced at once,
 * so no session is routed into it. If the older tunnels are all alive (the same agent reached
 * this relay twice, e.g. over IPv4 and IPv6), the new tunnel is the one refused.
 * Returns 0 to keep `newest`, -EBUSY when it was refused. The list is newest first.
 */
static int enforce_tunnels_per_agent(struct relay_agent *newest)
{
    struct relay *r = newest->r;
    uint64_t live = 0;
    for (struct relay_agent *a = r->agents; a; a = a->next)
        if (a != newest && a->up && !a->draining && strcmp(a->name, newest->name) == 0)
            live++;
    if (live < r->cfg.max_tunnels_per_agent)
        return 0;
    for (struct relay_agent *a = r->agents; a && live >= r->cfg.max_tunnels_per_agent;
         a = a->next) {
        if (a == newest || !a->up || a->draining || strcmp(a->name, newest->name) != 0)
            continue;
        if (tunnel_idle_ms(a->t) < 2 * r->cfg.ping_interval_ms)
            continue;
        log_msg(LOG_WARN, tunnel_id(a->t), 0,
                "tunnel replaced agent=%s peer=%s silent for %llu ms, by the new tunnel from %s",
                a->name, a->peer, (unsigned long long)tunnel_idle_ms(a->t), newest->peer);
        a->draining = true;
        tunnel_fail(a->t, SQLSTATE_SUCCESSFUL_COMPLETION,
                    "replaced by a newer tunnel from the same agent");
        live--;
    }
    if (live < r->cfg.max_tunnels_per_agent)
        return 0;
    log_msg(LOG_WARN, tunnel_id(newest->t), 0,
            "tunnel refused agent=%s peer=%s reason=agent already has %llu live tunnel(s) to this "
            "relay (max_tunnels_per_agent=%llu)",
            newest->name, newest->peer, (unsigned long long)live,
            (unsigned long long)r->cfg.max_tunnels_per_agent);
    tunnel_fail(newest->t, SQLSTATE_TOO_MANY_CONNECTIONS,
                "agent \"%s\" already has a live tunnel to this relay (max_tunnels_per_agent=%llu)",
                newest->name, (unsigned long long)r->cfg.max_tunnels_per_agent);
    return -EBUSY;
}

static int agent_on_hello(struct relay_agent *a, const uint8_t *body, uint32_t len)
{
    struct relay *r = a->r;
    struct tunnel *t = a->t;
    struct proto_hello h;
    struct proto_welcome w;
    char accepted[PROTO_MAX_ROUTES * PROTO_NAME_MAX] = "";
    int rc;

    rc = proto_decode_hello(body, len, &h);
    if (rc < 0) {
        tunnel_fail(t, sqlstate_of_failure(rc), "%s HELLO: %s",
                    proto_is_violation(rc) ? "bad" : "could not decode", proto_strerror(rc));
        return -EPROTO;
    }
    if (h.ver_major != PROTO_VERSION_MAJOR) {
        log_msg(LOG_WARN, tunnel_id(t), 0,
                "tunnel rejected agent=%s peer=%s reason=protocol version %u.%u not supported",
                a->name, a->peer, h.ver_major, h.ver_minor);
        tunnel_fail(t, SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "protocol version %u.%u not supported (relay speaks %u.%u)", h.ver_major,
                    h.ver_minor, PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
        return -EPROTO;
    }
    memset(&w, 0, sizeof(w));
    w.ver_major = PROTO_VERSION_MAJOR;
    w.ver_minor = min_u16(h.ver_minor, PROTO_VERSION_MINOR);
    snprintf(w.relay_id, sizeof(w.relay_id), "%s", r->cfg.name ? r->cfg.name : "relay");
    w.ping_interval_ms = (uint32_t)r->cfg.ping_interval_ms;
    w.idle_timeout_ms = (uint32_t)r->cfg.dead_timeout_ms;
    w.initial_window = (uint32_t)r->cfg.stream_window;
    w.max_streams = (uint32_t)r->cfg.max_streams;
    for (uint32_t i = 0; i < h.nroutes; i++)
        snprintf(a->offered[a->noffered++], PROTO_NAME_MAX, "%s", h.routes[i]);
    for (uint32_t i = 0; i < h.nroutes; i++) {
        const struct relay_route *route = relay_config_route(&r->cfg, h.routes[i]);
        if (route && relay_route_allows(route, a->name)) {
            snprintf(w.accepted[w.naccepted++], PROTO_NAME_MAX, "%s", h.routes[i]);
            snprintf(a->routes[a->nroutes++], PROTO_NAME_MAX, "%s", h.routes[i]);
            if (accepted[0])
                strcat(accepted, ",");
            strcat(accepted, h.routes[i]);
        } else {
            snprintf(w.refused[w.nrefused++], PROTO_NAME_MAX, "%s", h.routes[i]);
            log_msg(LOG_WARN, tunnel_id(t), 0, "tunnel refused agent=%s route=%s reason=%s",
                    a->name, h.routes[i],
                    route ? "agent not allowed for this route" : "no such route");
        }
    }
    if (w.naccepted == 0) {
        tunnel_fail(t, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                    "agent \"%s\" is not allowed to serve any route it offered", a->name);
        return -EPERM;
    }
    if (enforce_tunnels_per_agent(a) < 0)
        return -EBUSY;
    {
        uint8_t buf[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
        int n = proto_encode_welcome(buf, sizeof(buf), &w);
        if (n < 0 || tunnel_send(t, buf, (size_t)n) < 0) {
            tunnel_close(t, "could not send WELCOME");
            return -EIO;
        }
    }
    a->up = true;
    relay_admit_release(r, &a->slot);
    tunnel_start_keepalive(t);
    relay_cert_expiry_note(r, a->not_after);
    log_msg(LOG_INFO, tunnel_id(t), 0, "tunnel up agent=%s routes=%s peer=%s version=%u.%u",
            a->name, accepted, a->peer, w.ver_major, w.ver_minor);
    audit_tunnel(r->audit, "tunnel_up", r->cfg.name, a->name, a->peer, accepted, NULL);
    return 0;
}

static int agent_on_control(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    struct relay_agent *a = tunnel_data(t);
    struct proto_goaway g;

    switch (h->type) {
    case PROTO_HELLO:
        if (!a->handshaken || a->up) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "unexpected HELLO");
            return -EPROTO;
        }
        return agent_on_hello(a, body, h->length);
    case PROTO_GOAWAY:
        if (proto_decode_goaway(body, h->length, &g) < 0) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "bad GOAWAY");
            return -EPROTO;
        }
        a->draining = true;
        log_msg(LOG_INFO, tunnel_id(t), 0, "tunnel draining agent=%s code=%s reason=%s", a->name,
                g.code, g.message);
        return 0;
    default:
        if (!a->up) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "expected HELLO, got %s",
                        proto_type_name(h->type));
            return -EPROTO;
        }
        tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "unexpected %s", proto_type_name(h->type));
        return -EPROTO;
    }
}

static void agent_on_tunnel_done(struct tunnel *t, const char *reason)
{
    struct relay_agent *a = tunnel_data(t);
    struct relay *r = a->r;
    if (a->up) {
        char routes[PROTO_MAX_ROUTES * PROTO_NAME_MAX] = "";
        for (uint32_t i = 0; i < a->nroutes; i++) {
            if (i)
                strcat(routes, ",");
            strcat(routes, a->routes[i]);
        }
        log_msg(LOG_INFO, tunnel_id(t), 0, "tunnel down agent=%s reason=%s", a->name, reason);
        audit_tunnel(r->audit, "tunnel_down", r->cfg.name, a->name, a->peer, routes, reason);
    } else if (!r->stopping && !a->handshaken &&
               (strstr(reason, "reset by peer") || strstr(reason, "closed by peer"))) {
        /* gone before its handshake (a port scan, a health check): not worth a warning */
        log_msg(LOG_DEBUG, tunnel_id(t), 0, "tunnel closed by peer=%s before TLS: %s", a->peer,
                reason);
    } else if (!r->stopping) {
        char more[64];
        if (relay_admit_log_ok(r, a->peer, PREAUTH_TUNNEL, more, sizeof(more)))
            log_msg(LOG_WARN, tunnel_id(t), 0, "tunnel rejected peer=%s%s%s reason=%s%s", a->peer,
                    a->name[0] ? " agent=" : "", a->name, reason, more);
    }
    relay_admit_release(r, &a->slot);
    r->nagents--;
    if (a->prev)
        a->prev->next = a->next;
    else
        r->agents = a->next;
    if (a->next)
        a->next->prev = a->prev;
    free(a);
}

/* Closed before its HELLO: to make room (admit.h), or past hello_timeout. */
static void agent_shed(struct preauth_slot *slot, const char *why)
{
    struct relay_agent *a =
        (struct relay_agent *)(void *)((char *)slot - offsetof(struct relay_agent, slot));

    relay_admit_release(a->r, slot);
    tunnel_close(a->t, why);
}

static const struct tunnel_ops relay_tunnel_ops = {
    .on_control = agent_on_control,
    .on_up = agent_on_up,
    .on_tunnel_done = agent_on_tunnel_done,
};

static void tunnel_on_connection(uv_stream_t *server, int status)
{
    struct relay *r = server->data;
    struct relay_agent *a = NULL;
    struct conn *c = NULL;
    int rc = UV_ENOMEM;

    if (status < 0 && !r->stopping)
        relay_admit_accept_failed(r, status, "tunnel");
    if (status < 0 || r->stopping)
        return;
    a = calloc(1, sizeof(*a));
    c = conn_new(r->cl, NULL, NULL, false);
    if (!a || !c) {
        free(a);
        if (c)
            conn_close(c);
        relay_admit_drop_unaccepted(r, server, "tunnel"); /* or the listener stops */
        return;
    }
    if ((rc = conn_accept(c, server)) < 0)
        goto fail;
    a->r = r;
    snprintf(a->peer, sizeof(a->peer), "%s", conn_peer_addr(c));
    struct tunnel_limits lim = {
        .ping_interval_ms = (uint32_t)r->cfg.ping_interval_ms,
        .dead_timeout_ms = (uint32_t)r->cfg.dead_timeout_ms,
        .max_streams = (uint32_t)r->cfg.max_streams,
        .initial_window = (uint32_t)r->cfg.stream_window,
    };
    a->t = tunnel_new(r->loop, c, &relay_tunnel_ops, &lim, ++r->next_tunnel_id, a);
    c = NULL; /* owned by the tunnel now, even on failure */
    rc = UV_ENOMEM;
    if (!a->t)
        goto fail;
    a->next = r->agents;
    if (r->agents)
        r->agents->prev = a;
    r->agents = a;
    r->nagents++;
    a->slot.shed = agent_shed;
    if (relay_admit(r, &a->slot, a->peer, tunnel_conn(a->t), "tunnel") < 0) {
        tunnel_close(a->t, "refused before TLS");
        return;
    }
    /* the HELLO deadline runs from the accept: a TLS handshake that drags on counts too */
    a->slot.deadline_ms = uv_now(r->loop) + r->cfg.hello_timeout_ms;
    if (!relay_admit_handshake(r, &a->slot)) {
        tunnel_close(a->t, "too many TLS handshakes from this source (handshake_rate)");
        return;
    }
    if (conn_tls_server(tunnel_conn(a->t), r->tunnel_ctx, NULL, 0) < 0 ||
        conn_read_start(tunnel_conn(a->t)) < 0)
        tunnel_close(a->t, "could not start TLS");
    return;
fail:
    relay_admit_accept_failed(r, rc, "tunnel"); /* logged at most once a second */
    if (c)
        conn_close(c);
    if (!a || !a->t)
        free(a);
}

/* Round robin over the up tunnels serving route, skipping the agent named not_agent (NULL:
 * none skipped). */
static struct tunnel *pick_tunnel(struct relay *r, const char *route, const char *not_agent,
                                  const char **agent)
{
    static const uint32_t none = UINT32_MAX;
    uint32_t count = 0, pick = none;
    struct relay_agent *a;

    for (int pass = 0; pass < 2; pass++) {
        uint32_t i = 0;
        for (a = r->agents; a; a = a->next) {
            /* never a tunnel that is going away: a SIGKILLed agent's EOF closes it at once */
            if (!a->up || a->draining || tunnel_closing(a->t))
                continue;
            if (not_agent && strcmp(a->name, not_agent) == 0)
                continue;
            bool serves = false;
            for (uint32_t k = 0; k < a->nroutes && !serves; k++)
                serves = strcmp(a->routes[k], route) == 0;
            if (!serves)
                continue;
            if (pass == 0) {
                count++;
            } else if (i++ == pick) {
                *agent = a->name;
                return a->t;
            }
        }
        if (count == 0)
            return NULL;
        pick = (uint32_t)(r->session_counter % count);
    }
    return NULL;
}

struct tunnel *relay_route_pick_tunnel(struct relay *r, const char *route, const char **agent)
{
    return pick_tunnel(r, route, NULL, agent);
}

struct tunnel *relay_route_pick_other_tunnel(struct relay *r, const char *route,
                                             const char *not_agent, const char **agent)
{
    return pick_tunnel(r, route, not_agent, agent);
}

void relay_agents_recheck(struct relay *r)
{
    for (struct relay_agent *a = r->agents; a; a = a->next) {
        uint32_t n = 0;
        if (!a->up)
            continue;
        for (uint32_t i = 0; i < a->noffered; i++) {
            const char *route = a->offered[i];
            const struct relay_route *rr = relay_config_route(&r->cfg, route);
            bool was = false, allowed = rr && relay_route_allows(rr, a->name);
            for (uint32_t k = 0; k < a->nroutes && !was; k++)
                was = strcmp(a->routes[k], route) == 0;
            if (was && !allowed)
                log_msg(LOG_WARN, tunnel_id(a->t), 0,
                        "tunnel route revoked agent=%s route=%s reason=%s (open sessions go on)",
                        a->name, route,
                        rr ? "agent no longer allowed for this route" : "route removed");
            else if (!was && allowed)
                log_msg(LOG_INFO, tunnel_id(a->t), 0, "tunnel route added agent=%s route=%s",
                        a->name, route);
            if (allowed)
                memcpy(a->routes[n++], route, strlen(route) + 1); /* both PROTO_NAME_MAX */
        }
        a->nroutes = n;
    }
}

/* ---- certificates of running tunnels and sessions: revocation and expiry --------------- */

/* The timer follows the wall clock only roughly (libuv timers are monotonic): it fires at the
 * next expiry, or within the hour, so that a clock step is noticed within an hour; and at most
 * once a second, so that many certificates expiring one after another cost one pass a second. */
static void cert_timer_fired(uv_timer_t *timer);

static void cert_timer_arm(struct relay *r, long long now)
{
    long long delay_s;

    if (!r->cert_timer.loop || r->stopping || uv_is_closing((uv_handle_t *)&r->cert_timer))
        return;
    if (r->cert_next == 0) {
        uv_timer_stop(&r->cert_timer);
        return;
    }
    delay_s = r->cert_next + 1 - now; /* a certificate is valid through its notAfter second */
    if (delay_s < 1)
        delay_s = 1;
    if (delay_s > 3600)
        delay_s = 3600;
    uv_timer_start(&r->cert_timer, cert_timer_fired, (uint64_t)delay_s * 1000, 0);
}

static long long agents_certs_recheck(struct relay *r, bool reverify, long long now)
{
    long long first = 0;
    struct relay_agent *next;

    for (struct relay_agent *a = r->agents; a; a = next) {
        struct tls_peer_info info;
        char why[TLS_ERR_MAX] = "";

        next = a->next;
        if (!a->handshaken || tunnel_closing(a->t))
            continue;
        if (reverify && conn_tls_verify_peer(tunnel_conn(a->t), r->agent_store, &info, why) == 0)
            a->not_after = info.not_after;
        if (!why[0] && a->not_after > 0 && now > a->not_after)
            snprintf(why, sizeof(why), "certificate has expired");
        if (why[0]) {
            log_msg(LOG_WARN, tunnel_id(a->t), 0,
                    "tunnel closed agent=%s peer=%s reason=agent certificate no longer "
                    "accepted: %s",
                    a->name, a->peer, why);
            tunnel_fail(a->t, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                        "agent certificate no longer accepted: %s", why);
            continue;
        }
        if (a->not_after > 0 && (first == 0 || a->not_after < first))
            first = a->not_after;
    }
    return first;
}

void relay_certs_recheck(struct relay *r, bool reverify)
{
    long long now = (long long)time(NULL);
    long long agents = agents_certs_recheck(r, reverify, now);
    long long sessions = frontdoor_certs_recheck(r, reverify, now);

    r->cert_next = agents == 0 || (sessions != 0 && sessions < agents) ? sessions : agents;
    cert_timer_arm(r, now);
}

void relay_cert_expiry_note(struct relay *r, long long not_after)
{
    if (not_after <= 0 || (r->cert_next != 0 && r->cert_next <= not_after))
        return;
    r->cert_next = not_after;
    cert_timer_arm(r, (long long)time(NULL));
}

static void cert_timer_fired(uv_timer_t *timer)
{
    relay_certs_recheck(timer->data, false);
}

void relay_foreach_agent_tunnel(struct relay *r, relay_tunnel_fn fn, void *ctx)
{
    for (struct relay_agent *a = r->agents; a; a = a->next) {
        if (a->up)
            fn(ctx, a->t, a->name);
    }
}

/* ---- listeners, signals, lifecycle --------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    r->open_handles--;
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct relay *r = sig->data;
    if (signum == SIGTERM && !r->draining) {
        relay_drain(r);
        return;
    }
    log_info("received %s: shutting down now", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    relay_stop(r);
}

static void drain_tick(uv_timer_t *timer)
{
    struct relay *r = timer->data;
    if (r->nsessions == 0) {
        log_info("drain: every session has ended; stopping");
        relay_stop(r);
    } else if (uv_now(r->loop) >= r->drain_deadline_ms) {
        log_warn("drain: drain_timeout reached; closing %llu remaining session(s)",
                 (unsigned long long)r->nsessions);
        relay_stop(r);
    }
}

void relay_drain(struct relay *r)
{
    if (r->draining || r->stopping)
        return;
    r->draining = true;
    log_info("received SIGTERM: draining: %llu session(s) may run for up to %llu ms; no new "
             "connections (send SIGTERM again to stop now)",
             (unsigned long long)r->nsessions, (unsigned long long)r->cfg.drain_timeout_ms);
    if (r->client_listener.loop && !uv_is_closing((uv_handle_t *)&r->client_listener))
        uv_close((uv_handle_t *)&r->client_listener, handle_closed);
    if (r->tunnel_listener.loop && !uv_is_closing((uv_handle_t *)&r->tunnel_listener))
        uv_close((uv_handle_t *)&r->tunnel_listener, handle_closed);
    for (struct relay_agent *a = r->agents; a; a = a->next)
        tunnel_goaway(a->t, "relay is shutting down");
    r->drain_deadline_ms = uv_now(r->loop) + r->cfg.drain_timeout_ms;
    uv_timer_init(r->loop, &r->drain_timer);
    r->drain_timer.data = r;
    r->open_handles++;
    uv_timer_start(&r->drain_timer, drain_tick, 0, 100);
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

static int resolve_listen(const char *hostport, struct sockaddr_storage *ss, char *err)
{
    char host[256];
    uint16_t port;
    if (config_parse_hostport(hostport, host, &port, err) < 0)
        return -EINVAL;
    if (strcmp(host, "*") == 0 || host[0] == '\0')
        return uv_ip6_addr("::", port, (struct sockaddr_in6 *)ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    /* A host name: resolved once at start-up (synchronous uv_getaddrinfo is fine here). */
    uv_getaddrinfo_t req;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(uv_default_loop(), &req, NULL, host, NULL, &hints);
    if (rc < 0) {
        snprintf(err, CONFIG_ERR_MAX, "cannot resolve \"%s\": %s", host, uv_strerror(rc));
        return rc;
    }
    memcpy(ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    uv_freeaddrinfo(req.addrinfo);
    return 0;
}

static int listen_on(struct relay *r, uv_tcp_t *h, const char *hostport, uv_connection_cb cb,
                     char *err)
{
    struct sockaddr_storage ss;
    int rc;
    memset(&ss, 0, sizeof(ss));
    rc = resolve_listen(hostport, &ss, err);
    if (rc < 0)
        return rc;
    uv_tcp_init(r->loop, h);
    h->data = r;
    r->open_handles++;
    rc = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)h, 511, cb);
    if (rc < 0) {
        snprintf(err, CONFIG_ERR_MAX, "cannot listen on %s: %s", hostport, uv_strerror(rc));
        return rc;
    }
    return 0;
}

int relay_tls_build(const struct relay_config *cfg, struct relay_tls *t, char *err)
{
    char terr[TLS_ERR_MAX];
    int rc = -EINVAL;

    memset(t, 0, sizeof(*t));
    const char *client_cas[RELAY_MAX_ROUTES];
    if (!(t->access = access_new(cfg, terr)))
        goto out;
    struct tls_server_opts client = {
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .min_version = cfg->tls_min_version,
        .alpn = "postgresql",
        .max_send_fragment = 8192,
    };
    access_client_tls_opts(cfg, &client, client_cas);
    t->client_ctx = tls_server_ctx_new(&client, terr);
    if (!t->client_ctx)
        goto out;
    client.alpn_required = true;
    t->client_direct_ctx = tls_server_ctx_new(&client, terr);
    if (!t->client_direct_ctx)
        goto out;
    struct tls_server_opts tunnel = {
        .cert_file = cfg->tunnel_cert ? cfg->tunnel_cert : cfg->tls_cert,
        .key_file = cfg->tunnel_key ? cfg->tunnel_key : cfg->tls_key,
        .client_ca_file = cfg->agent_ca,
        .client_crl_file = cfg->agent_crl,
        .require_client_cert = true,
        .min_version = TLS1_3_VERSION,
        .alpn = PROTO_ALPN,
        .alpn_required = true,
    };
    access_tunnel_tls_opts(cfg, &tunnel);
    t->tunnel_ctx = tls_server_ctx_new(&tunnel, terr);
    if (!t->tunnel_ctx)
        goto out;
    if (!(t->agent_store = tls_store_new(cfg->agent_ca, cfg->agent_crl, terr)))
        goto out;
    rc = 0;
out:
    if (rc < 0) {
        snprintf(err, CONFIG_ERR_MAX, "%s", terr);
        relay_tls_free(t);
    }
    return rc;
}

static void swap_ctx(SSL_CTX **a, SSL_CTX **b)
{
    SSL_CTX *tmp = *a;
    *a = *b;
    *b = tmp;
}

void relay_tls_swap(struct relay *r, struct relay_tls *t)
{
    swap_ctx(&r->client_ctx, &t->client_ctx);
    swap_ctx(&r->client_direct_ctx, &t->client_direct_ctx);
    swap_ctx(&r->tunnel_ctx, &t->tunnel_ctx);
    X509_STORE *store = r->agent_store;
    r->agent_store = t->agent_store;
    t->agent_store = store;
    struct access *a = r->access;
    r->access = t->access;
    t->access = a;
}

void relay_tls_free(struct relay_tls *t)
{
    /* connections made with these contexts hold their own references (SSL_new) */
    SSL_CTX_free(t->client_ctx);
    SSL_CTX_free(t->client_direct_ctx);
    SSL_CTX_free(t->tunnel_ctx);
    X509_STORE_free(t->agent_store);
    access_free(t->access);
    memset(t, 0, sizeof(*t));
}

int relay_init(struct relay *r, uv_loop_t *loop, struct relay_config *cfg, char *err)
{
    struct relay_tls tls;
    char aerr[CONFIG_ERR_MAX];
    int rc;

    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* ownership moves into the relay */
    r->cl = conn_loop_new(loop);
    r->route_sessions = counts_new();
    r->source_sessions = counts_new();
    if (!r->route_sessions || !r->source_sessions || keytab_init(&r->cancel_keys) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    r->audit = audit_new();
    if (!r->cl || !r->audit) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    /* checked here (--check-config), opened by relay_start */
    if ((rc = audit_check_path(r->cfg.audit_log, aerr, sizeof(aerr))) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "%s", aerr);
        return rc;
    }
    rc = relay_tls_build(&r->cfg, &tls, err);
    if (rc < 0)
        return rc;
    relay_tls_swap(r, &tls);
    return 0;
}

int relay_start(struct relay *r, char *err)
{
    int rc;
    rc = audit_configure(r->audit, r->cfg.audit_log, r->cfg.audit_statements,
                         (size_t)r->cfg.audit_statement_max, err, CONFIG_ERR_MAX);
    if (rc < 0)
        return rc;
    rc = relay_admit_start(r, err);
    if (rc < 0)
        return rc;
    rc = listen_on(r, &r->client_listener, r->cfg.listen, client_on_connection, err);
    if (rc < 0)
        return rc;
    rc = listen_on(r, &r->tunnel_listener, r->cfg.tunnel_listen, tunnel_on_connection, err);
    if (rc < 0)
        return rc;
    uv_signal_init(r->loop, &r->sig_term);
    uv_signal_init(r->loop, &r->sig_int);
    r->sig_term.data = r->sig_int.data = r;
    r->open_handles += 2;
    uv_signal_start(&r->sig_term, on_signal, SIGTERM);
    uv_signal_start(&r->sig_int, on_signal, SIGINT);
    uv_timer_init(r->loop, &r->cert_timer);
    r->cert_timer.data = r;
    r->open_handles++;
    log_info("listening clients=%s tunnels=%s", r->cfg.listen, r->cfg.tunnel_listen);
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
    if (r->draining)
        uv_close((uv_handle_t *)&r->drain_timer, handle_closed);
    if (r->sig_term.loop) {
        uv_close((uv_handle_t *)&r->sig_term, handle_closed);
        uv_close((uv_handle_t *)&r->sig_int, handle_closed);
    }
    if (r->cert_timer.loop)
        uv_close((uv_handle_t *)&r->cert_timer, handle_closed);
    relay_reload_stop(r);
    frontdoor_close_all(r);
    for (struct relay_agent *a = r->agents; a; a = a->next)
        tunnel_close(a->t, "relay shutting down");
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
    conn_loop_free(r->cl);
    relay_config_free(&r->cfg);
}
