/*
 * tunnels.c — the agents' tunnels on the relay: accept, verify, HELLO, serve routes.
 *
 * An agent tunnel goes through:
 *
 *   accepted --TLS 1.3 + client cert verified--> handshaken --HELLO--> up (WELCOME sent)
 *       \------------------------- any failure / dead_timeout -----------------> done
 *
 * Only "up" tunnels are offered routes, and only the routes the configuration allows for the
 * agent's certificate name (relay_route_allows).
 */
#include "relay/tunnels.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/sqlstate.h"
#include "common/tls.h"
#include "relay/admit.h"
#include "relay/audit.h"
#include "relay/cert_expiry.h"
#include "relay/relay.h"

struct relay_agent {
    struct relay *r;
    struct relay_agent *prev, *next;
    struct tunnel *t;
    bool handshaken;       /* TLS done, certificate verified */
    bool up;               /* HELLO accepted: serves its routes */
    bool draining;         /* sent GOAWAY: no new sessions */
    bool drained_by_admin; /* DRAIN AGENT: closed once its last session ends (drain_tick) */
    char name[PROTO_NAME_MAX];
    char peer[64];
    uint32_t nroutes;
    char routes[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    uint32_t noffered; /* routes in its HELLO: re-checked against the config on reload */
    char offered[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    long long not_after;      /* its certificate chain's first expiry (seconds since the epoch) */
    long long connected_at;   /* accepted (seconds since the epoch) */
    struct preauth_slot slot; /* pending: from accept until its HELLO is accepted (admit.h) */
};

static uint16_t min_u16(uint16_t a, uint16_t b)
{
    return a < b ? a : b;
}

/*
 * The handshake verified the chain against agent_ca (and agent_crl); the certificate must also
 * be an agent's: URI SAN pgburrow-agent:NAME, NAME = CN. A client certificate from the same CA
 * (`mkcerts.sh DIR client db2-agent`) has no such SAN and is refused here.
 */
static void relay_tunnel_on_up(struct tunnel *t)
{
    struct relay_agent *a = tunnel_data(t);
    struct relay *r = a->r;
    struct tls_peer_info info;
    char name[256], why[PGB_ERR_MAX];
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    int rc;

    if (conn_tls_verify_peer(tunnel_conn(t), r->agent_store, &info, why, sizeof(why)) < 0) {
        log_msg(LOG_WARN, tunnel_id(t), 0, "tunnel rejected peer=%s reason=certificate: %s",
                a->peer, why);
        tunnel_fail(t, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                    "agent certificate not accepted: %s", why);
        return;
    }
    rc = conn_tls_peer_chain(tunnel_conn(t), &leaf, &chain);
    if (rc == 0)
        rc = tls_cert_agent_name(leaf, name, sizeof(name), why, sizeof(why));
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

static int relay_tunnel_on_hello(struct relay_agent *a, const uint8_t *body, uint32_t len)
{
    struct relay *r = a->r;
    struct tunnel *t = a->t;
    struct proto_hello h;
    struct proto_welcome w;
    char accepted[PROTO_MAX_ROUTES * PROTO_NAME_MAX] = "";
    int rc;

    rc = proto_decode_hello(body, len, &h);
    if (rc < 0)
        return tunnel_fail_decode(t, "HELLO", rc);
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

static int relay_tunnel_on_control(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    struct relay_agent *a = tunnel_data(t);
    struct proto_goaway g;
    int rc;

    switch (h->type) {
    case PROTO_HELLO:
        if (!a->handshaken || a->up) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "unexpected HELLO");
            return -EPROTO;
        }
        return relay_tunnel_on_hello(a, body, h->length);
    case PROTO_GOAWAY:
        if ((rc = proto_decode_goaway(body, h->length, &g)) < 0)
            return tunnel_fail_decode(t, "GOAWAY", rc);
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

static void relay_tunnel_on_done(struct tunnel *t, const char *reason)
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
static void relay_tunnel_shed(struct preauth_slot *slot, const char *why)
{
    struct relay_agent *a =
        (struct relay_agent *)(void *)((char *)slot - offsetof(struct relay_agent, slot));

    relay_admit_release(a->r, slot);
    tunnel_close(a->t, why);
}

static const struct tunnel_ops relay_tunnel_ops = {
    .on_control = relay_tunnel_on_control,
    .on_up = relay_tunnel_on_up,
    .on_tunnel_done = relay_tunnel_on_done,
};

void relay_tunnels_accept(struct relay *r, uv_stream_t *server)
{
    struct relay_agent *a = NULL;
    struct conn *c = NULL;
    int rc = UV_ENOMEM;

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
    a->connected_at = (long long)time(NULL);
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
    a->slot.shed = relay_tunnel_shed;
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
    if (rc == UV_ENOTCONN)
        log_debug("tunnel connection reset before it was accepted");
    else
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

long long relay_tunnels_certs_recheck(struct relay *r, bool reverify, long long now)
{
    long long first = 0;
    struct relay_agent *next;

    for (struct relay_agent *a = r->agents; a; a = next) {
        struct tls_peer_info info;
        char why[PGB_ERR_MAX] = "";

        next = a->next;
        if (!a->handshaken || tunnel_closing(a->t))
            continue;
        if (reverify &&
            conn_tls_verify_peer(tunnel_conn(a->t), r->agent_store, &info, why, sizeof(why)) == 0)
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

void relay_foreach_agent_tunnel(struct relay *r, relay_tunnel_fn fn, void *ctx)
{
    for (struct relay_agent *a = r->agents; a; a = a->next) {
        if (a->up)
            fn(ctx, a->t, a->name);
    }
}

void relay_tunnels_goaway(struct relay *r, const char *why)
{
    for (struct relay_agent *a = r->agents; a; a = a->next)
        tunnel_goaway(a->t, why);
}

void relay_tunnels_close_all(struct relay *r, const char *why)
{
    for (struct relay_agent *a = r->agents; a; a = a->next)
        tunnel_close(a->t, why);
}

static const char *tunnel_state(const struct relay_agent *a)
{
    if (tunnel_closing(a->t))
        return "closing";
    if (a->draining)
        return "draining";
    if (a->up)
        return "up";
    return a->handshaken ? "hello" : "handshake";
}

void relay_tunnels_list(struct relay *r, relay_tunnel_info_fn fn, void *ctx)
{
    struct relay_tunnel_info ti;

    for (struct relay_agent *a = r->agents; a; a = a->next) {
        size_t n = 0;

        memset(&ti, 0, sizeof(ti));
        ti.id = tunnel_id(a->t);
        ti.agent = a->name;
        ti.peer = a->peer;
        ti.state = tunnel_state(a);
        ti.up = a->up && !a->draining && !tunnel_closing(a->t);
        for (uint32_t i = 0; i < a->nroutes; i++)
            n += (size_t)snprintf(ti.routes + n, sizeof(ti.routes) - n, "%s%s", i ? "," : "",
                                  a->routes[i]);
        ti.sessions = tunnel_nstreams(a->t);
        ti.idle_ms = tunnel_idle_ms(a->t);
        ti.connected_at = a->connected_at;
        ti.not_after = a->not_after;
        fn(ctx, &ti);
    }
}

/* DRAIN AGENT: a drained tunnel whose sessions have all ended is closed, so that its agent
 * dials again (its usual reconnect) and serves new sessions on a fresh tunnel. Polled: the
 * sessions end in the front door, which knows nothing of draining. */
static void drain_tick(uv_timer_t *timer)
{
    struct relay *r = timer->data;
    uint32_t waiting = 0;

    for (struct relay_agent *a = r->agents; a; a = a->next) {
        if (!a->drained_by_admin || tunnel_closing(a->t))
            continue;
        if (tunnel_nstreams(a->t) > 0) {
            waiting++;
            continue;
        }
        log_msg(LOG_INFO, tunnel_id(a->t), 0,
                "tunnel closed agent=%s peer=%s reason=drained by an administrator, no session "
                "left",
                a->name, a->peer);
        tunnel_fail(a->t, SQLSTATE_SUCCESSFUL_COMPLETION, "drained by an administrator");
    }
    if (waiting == 0)
        uv_timer_stop(timer);
}

int relay_tunnels_drain_agent(struct relay *r, const char *agent, const char *why)
{
    int n = 0;

    for (struct relay_agent *a = r->agents; a; a = a->next) {
        if (!a->up || a->draining || tunnel_closing(a->t) || strcmp(a->name, agent) != 0)
            continue;
        a->draining = true;
        a->drained_by_admin = true;
        tunnel_goaway(a->t, why);
        log_msg(LOG_INFO, tunnel_id(a->t), 0, "tunnel draining agent=%s peer=%s sessions=%u (%s)",
                a->name, a->peer, tunnel_nstreams(a->t), why);
        n++;
    }
    if (n > 0 && r->drain_timer.loop)
        uv_timer_start(&r->drain_timer, drain_tick, 0, RELAY_DRAIN_POLL_MS);
    return n;
}
