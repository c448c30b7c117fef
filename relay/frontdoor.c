/*
 * frontdoor.c — the relay's PostgreSQL client listener: from the first byte to a spliced
 * session.
 *
 *   FIRST --SSLRequest (nothing pipelined)--> 'S' --> TLS --+
 *     |  --GSSENCRequest--> 'N' --> FIRST (once)             |
 *     |  --0x16 (direct TLS, ALPN postgresql)--> TLS --------+--> STARTUP --route, OPEN--> OPENING
 *     |  --plaintext StartupMessage--> FATAL 28000                                      |
 *     |  --anything else--> FATAL 08P01                       OPEN_FAIL: FATAL <code> <-+
 *                                                             OPEN_OK: StartupMessage sent,
 *                                                                      conn bound --> STREAMING
 *   STARTUP --dbname=pgburrow, console on, admin certificate--> conn handed to admin.c
 *
 * Until STREAMING the client conn belongs to struct relay_client; from then on to the tunnel
 * stream, and the client struct only waits for the stream's end to log it.
 * Every refusal is an ErrorResponse, a log line, and a close; nothing else is touched.
 */
#include "relay/frontdoor.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/pgwire.h"
#include "relay/audit.h"
#include "relay/cancel.h"
#include "relay/access.h"
#include "relay/admit.h"
#include "relay/proxied.h"
#include "relay/cert_expiry.h"
#include "relay/relay.h"
#include "relay/routing.h"
#include "relay/tunnels.h"
#include "common/sqlstate.h"

enum client_state {
    CLIENT_FIRST,
    CLIENT_TLS,
    CLIENT_STARTUP,
    CLIENT_CANCEL,
    CLIENT_OPENING,
    CLIENT_STREAMING,
    CLIENT_ENDING
};

/* Message boundaries of the server's bytes to the client (type byte, int32 length, body): an
 * ErrorResponse of the relay's own can only go between two messages. */
struct msg_edge {
    uint32_t left; /* body bytes of the current message still to come */
    uint8_t hdr[5];
    uint8_t have; /* header bytes seen */
    bool lost;    /* a length below 4: boundaries unknown from here on */
};

struct relay_client {
    struct relay *r;
    struct relay_client *prev, *next;
    struct conn *conn; /* NULL once handed to the stream */
    struct tunnel_stream *s;
    uv_timer_t timer; /* startup timeout */
    enum client_state state;
    bool gss_answered;
    bool got_bytes;
    bool counted;              /* counted in r->nsessions */
    struct route_stats *stats; /* its route's counters while counted (stats.h) */
    uint8_t first[8];
    size_t first_have;
    uint8_t *pkt; /* StartupMessage being read (<= PGWIRE_STARTUP_MAX) */
    uint32_t pkt_len, pkt_have;
    uint64_t start_ms;
    char sid[17];
    char peer[64];
    char source_ip[COUNTS_KEY_MAX]; /* peer without the port: the per-source limit's key */
    char route[PROTO_NAME_MAX];
    char agent[PROTO_NAME_MAX];
    char user[PROTO_META_MAX];
    char database[PROTO_META_MAX];
    char sni[256];
    char tls_version[16];
    char tls_cipher[64];
    char application_name[PROTO_META_MAX];
    struct audit_stmt *stmt;         /* statement audit filter (audit_statements = on) */
    struct relay_cancel_watch *keyw; /* the session's cancel key (cancel.h) */
    struct pgwire_bescan *scan;      /* the server's first messages, until ReadyForQuery */
    bool authenticated;              /* PostgreSQL said AuthenticationOk */
    char auth_sqlstate[6];           /* its ErrorResponse before that, if any */
    char auth_error[128];
    bool denied;            /* not in [relay] allow: refused before any TLS work */
    struct proxyproto *px;  /* a load balancer's PROXY header still to come (proxied.h) */
    char cert_subject[256]; /* verified client certificate (routes with client_cert) */
    char cert_serial[80];
    bool retried;             /* OPEN went to a second agent after OPEN_FAIL 08006 */
    struct preauth_slot slot; /* pending: from accept until routed (admit.h) */
    bool throttled;           /* waiting for a handshake token (handshake_rate) */
    /* the verified client certificate and the chain its client sent, checked again on reload
     * (CRL, CA, ident map) and at cert_not_after (the chain's first expiry) */
    X509 *cert;
    STACK_OF(X509) * cert_chain;
    long long cert_not_after;
    struct msg_edge edge; /* server -> client: where messages end (for a FATAL of our own) */
};

static const struct conn_ops client_ops;

/* The scanner of the server's first messages saw the cancel key: wiped, then freed. */
static void scan_free(struct relay_client *c)
{
    if (!c->scan)
        return;
    OPENSSL_cleanse(c->scan, sizeof(*c->scan));
    free(c->scan);
    c->scan = NULL;
}

static void client_unlink_free(uv_handle_t *h)
{
    struct relay_client *c = h->data;
    struct relay *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    r->nclients--;
    audit_stmt_free(c->stmt);
    relay_cancel_watch_free(c->keyw);
    scan_free(c); /* a session that ended before ReadyForQuery */
    X509_free(c->cert);
    sk_X509_pop_free(c->cert_chain, X509_free);
    free(c->pkt);
    free(c->px);
    free(c);
}

/* "10.1.2.3:5555" -> "10.1.2.3", "[::1]:5555" -> "::1". */
static void source_ip_of(const char *peer, char *out, size_t cap)
{
    const char *start = peer, *end = strrchr(peer, ':');
    if (peer[0] == '[') {
        start = peer + 1;
        end = strchr(start, ']');
    }
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, start, n);
    out[n] = '\0';
}

/* The client struct is done: nothing refers to it any more. */
static void client_release(struct relay_client *c)
{
    if (c->counted) {
        c->r->nsessions--;
        counts_sub(c->r->route_sessions, c->route);
        counts_sub(c->r->source_sessions, c->source_ip);
        if (c->stats)
            c->stats->active--;
        c->counted = false;
    }
    relay_admit_release(c->r, &c->slot);
    uv_close((uv_handle_t *)&c->timer, client_unlink_free);
}

/* End the connection without a word (a CancelRequest is never answered; a refusal before any
 * PostgreSQL message could be sent): its close callback releases the client. */
static void client_drop(struct relay_client *c)
{
    c->state = CLIENT_ENDING;
    uv_timer_stop(&c->timer);
    if (c->conn)
        conn_close(c->conn);
}

/* The client stops following its stream (no more of its events reach it); the stream is reset
 * with sqlstate and why unless sqlstate is NULL (it has ended already). */
static void client_detach_stream(struct relay_client *c, const char *sqlstate, const char *why)
{
    struct tunnel_stream *s = c->s;

    if (!s)
        return;
    c->s = NULL;
    tunnel_stream_set_data(s, NULL);
    if (sqlstate)
        tunnel_stream_reset(s, sqlstate, why);
}

/* The OPEN of the session's stream, from what the client sent. */
static void client_open_msg(const struct relay_client *c, struct proto_open *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->route, sizeof(m->route), "%s", c->route);
    snprintf(m->session_id, sizeof(m->session_id), "%s", c->sid);
    snprintf(m->client_addr, sizeof(m->client_addr), "%s", c->peer);
    snprintf(m->user, sizeof(m->user), "%s", c->user);
    snprintf(m->database, sizeof(m->database), "%s", c->database);
    snprintf(m->application_name, sizeof(m->application_name), "%s", c->application_name);
}

static void client_fail(struct relay_client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The events of the stream a client opens (session_on_open_result, session_on_done). */
static const struct tunnel_stream_ops session_stream_ops;

/* Answer with a FATAL ErrorResponse, log the reason, and end the connection. */
static void client_fail(struct relay_client *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    uint8_t buf[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* the client sees "pgburrow: ..."; the log and audit lines say who anyway */
    const char *reason = strncmp(msg, "pgburrow: ", 10) == 0 ? msg + 10 : msg;
    char more[64];
    relay_stats_refused_sqlstate(&c->r->stats, sqlstate);
    if (relay_admit_log_ok(c->r, c->peer, PREAUTH_REFUSED, more, sizeof(more))) {
        log_warn("refused client=%s sqlstate=%s reason=%s%s", c->peer, sqlstate, reason, more);
        audit_refused(c->r->audit, c->r->cfg.name, c->peer, sqlstate, reason);
    }
    client_detach_stream(c, SQLSTATE_CONNECTION_FAILURE, "client refused");
    c->state = CLIENT_ENDING;
    uv_timer_stop(&c->timer);
    if (!c->conn)
        return;
    int n = pgwire_error_response(buf, sizeof(buf), "FATAL", sqlstate, msg);
    if (n > 0)
        conn_write(c->conn, buf, (size_t)n);
    conn_end(c->conn);
}

static void startup_timeout(uv_timer_t *timer)
{
    struct relay_client *c = timer->data;
    if (c->state == CLIENT_ENDING || c->state == CLIENT_STREAMING)
        return;
    if (c->state == CLIENT_CANCEL) {
        /* a CancelRequest is never answered, not even with an error */
        c->r->stats.cancel_dropped++;
        log_info("cancel dropped reason=incomplete request after %llu ms client=%s",
                 (unsigned long long)c->r->cfg.startup_timeout_ms, c->peer);
        client_drop(c);
        return;
    }
    if (c->state == CLIENT_FIRST || c->state == CLIENT_TLS) {
        char more[64];
        if (relay_admit_log_ok(c->r, c->peer, PREAUTH_TIMEOUT, more, sizeof(more))) {
            log_warn("refused client=%s reason=no %s within %llu ms%s", c->peer,
                     c->px ? "PROXY protocol header" : "startup",
                     (unsigned long long)c->r->cfg.startup_timeout_ms, more);
            audit_refused(c->r->audit, c->r->cfg.name, c->peer, NULL, "no startup in time");
        }
        client_drop(c);
        return;
    }
    client_fail(c, SQLSTATE_CONNECTION_FAILURE, "pgburrow: timeout while opening the session");
}

/* ---- session ------------------------------------------------------------------------- */

static void frontdoor_tls_refused(struct relay_client *c, const char *reason)
{
    char why[300], more[64];
    if (!relay_admit_log_ok(c->r, c->peer, PREAUTH_TLS, more, sizeof(more)))
        return;
    snprintf(why, sizeof(why), "TLS handshake failed: %s", reason);
    log_warn("refused client=%s reason=%s%s", c->peer, why, more);
    audit_refused(c->r->audit, c->r->cfg.name, c->peer, NULL, why);
}

/* One audit line for the session; s (session_end) adds bytes, duration and reason. */
static void audit_session_event(struct relay_client *c, const char *event,
                                const struct tunnel_stream *s, const char *err)
{
    struct audit_session as = {
        .relay = c->r->cfg.name,
        .sid = c->sid,
        .route = c->route,
        .client = c->peer,
        .sni = c->sni[0] ? c->sni : NULL,
        .user = c->user,
        .database = c->database,
        .application_name = c->application_name[0] ? c->application_name : NULL,
        .cert_subject = c->cert_subject[0] ? c->cert_subject : NULL,
        .cert_serial = c->cert_serial[0] ? c->cert_serial : NULL,
        .agent = c->agent,
        .tls_version = c->tls_version,
        .tls_cipher = c->tls_cipher[0] ? c->tls_cipher : NULL,
        .authenticated = c->authenticated,
        .sqlstate = c->auth_sqlstate[0] ? c->auth_sqlstate : NULL,
    };
    if (!audit_enabled(c->r->audit))
        return;
    if (s) {
        as.bytes_in = tunnel_stream_bytes_out(s);
        as.bytes_out = tunnel_stream_bytes_in(s);
        as.duration_ms = uv_now(c->r->loop) - c->start_ms;
        as.reason = err ? err : "closed";
        if (!c->authenticated && c->auth_error[0])
            as.reason = c->auth_error; /* PostgreSQL's own words */
    }
    audit_session(c->r->audit, event, &as);
}

static bool edge_filter(void *ctx, const uint8_t *data, size_t len)
{
    struct msg_edge *e = ctx;

    while (len > 0) {
        if (e->left > 0) {
            size_t n = len < e->left ? len : e->left;

            e->left -= (uint32_t)n;
            data += n;
            len -= n;
            continue;
        }
        e->hdr[e->have++] = *data++;
        len--;
        if (e->have == sizeof(e->hdr)) {
            uint32_t n = pgwire_packet_len(e->hdr + 1, 4);

            if (n < 4) {
                e->lost = true;
                return false;
            }
            e->left = n - 4;
            e->have = 0;
        }
    }
    return true;
}

/* PostgreSQL would refuse the endpoint= words of options (they only choose the route): the
 * StartupMessage goes on without them. su points into c->pkt, which is replaced. */
static int client_strip_endpoint(struct relay_client *c, const struct pgwire_startup *su,
                                 const char *options)
{
    uint8_t *pkt = malloc(c->pkt_len); /* the rebuilt packet is never longer */
    int n;

    if (!pkt)
        return -ENOMEM;
    n = pgwire_startup_with_options(su, options, pkt, c->pkt_len);
    if (n < 0) {
        free(pkt);
        return n;
    }
    free(c->pkt);
    c->pkt = pkt;
    c->pkt_len = c->pkt_have = (uint32_t)n;
    return 0;
}

/* Whether the client may have a session: a route it may use, within the session limits.
 * 0, or -1 after client_fail. */
static int session_admit(struct relay_client *c, const struct pgwire_startup *su,
                         struct routing_result *rt)
{
    struct relay *r = c->r;
    const struct relay_route *route;
    struct tls_peer_info cert;
    char msg[PGB_ERR_MAX];

    if (routing_choose(r->cfg.sni_domains, r->cfg.nsni_domains, c->sni[0] ? c->sni : NULL,
                       su->options, r->cfg.default_route, rt, msg, sizeof(msg)) < 0) {
        client_fail(c, SQLSTATE_INVALID_CATALOG_NAME, "%s", msg);
        return -1;
    }
    snprintf(c->route, sizeof(c->route), "%s", rt->route);
    if (!(route = relay_config_route(&r->cfg, c->route))) {
        client_fail(c, SQLSTATE_INVALID_CATALOG_NAME, "pgburrow: unknown route \"%s\"", c->route);
        return -1;
    }
    if (access_check_session(r->access, route, c->conn, c->peer, c->user, &cert, msg, sizeof(msg)) <
        0) {
        client_fail(c, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, "%s", msg);
        return -1;
    }
    snprintf(c->cert_subject, sizeof(c->cert_subject), "%s", cert.subject);
    snprintf(c->cert_serial, sizeof(c->cert_serial), "%s", cert.serial);
    if (cert.subject[0] && conn_tls_peer_chain(c->conn, &c->cert, &c->cert_chain) < 0) {
        client_fail(c, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
        return -1;
    }
    c->cert_not_after = cert.not_after;
    if (r->nsessions >= r->cfg.max_sessions) {
        client_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                    "pgburrow: too many sessions on this relay (max_sessions=%llu)",
                    (unsigned long long)r->cfg.max_sessions);
        return -1;
    }
    if (route->max_sessions && counts_get(r->route_sessions, c->route) >= route->max_sessions) {
        client_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                    "pgburrow: too many sessions for route \"%s\" (max_sessions=%llu)", c->route,
                    (unsigned long long)route->max_sessions);
        return -1;
    }
    if (r->cfg.max_sessions_per_source &&
        counts_get(r->source_sessions, c->source_ip) >= r->cfg.max_sessions_per_source) {
        client_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                    "pgburrow: too many sessions from %s (max_sessions_per_source=%llu)",
                    c->source_ip, (unsigned long long)r->cfg.max_sessions_per_source);
        return -1;
    }
    return 0;
}

/* Open the session's stream on the tunnel of an agent serving the route (OPEN; the answer
 * comes to session_on_open_result). */
static void session_open(struct relay_client *c, const struct pgwire_startup *su,
                         const struct routing_result *rt)
{
    struct relay *r = c->r;
    const char *agent = NULL;

    r->session_counter++;
    struct tunnel *t = relay_route_pick_tunnel(r, c->route, &agent);
    if (!t) {
        client_fail(c, SQLSTATE_CANNOT_CONNECT_NOW,
                    "pgburrow: no agent is connected for route \"%s\"", c->route);
        return;
    }
    snprintf(c->agent, sizeof(c->agent), "%s", agent);

    struct proto_open m;
    client_open_msg(c, &m);
    if (rt->options_changed && client_strip_endpoint(c, su, rt->options) < 0) {
        client_fail(c, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
        return;
    }
    su = NULL; /* it pointed into the packet client_strip_endpoint replaced */
    c->s = tunnel_stream_open(t, &m, &session_stream_ops, c);
    if (!c->s) {
        client_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                    "pgburrow: agent %s cannot take more sessions", c->agent);
        return;
    }
    if (counts_add(r->route_sessions, c->route) < 0 ||
        counts_add(r->source_sessions, c->source_ip) < 0) {
        counts_sub(r->route_sessions, c->route);
        client_detach_stream(c, SQLSTATE_OUT_OF_MEMORY, "out of memory");
        client_fail(c, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
        return;
    }
    c->counted = true;
    r->nsessions++;
    if ((c->stats = route_stats_find(&r->stats.routes, c->route))) {
        c->stats->active++;
        c->stats->total++;
    }
    c->state = CLIENT_OPENING;
    relay_admit_release(r, &c->slot); /* routed: max_sessions bounds it from here on */
}

/* The StartupMessage su is complete: admit the session, then open it. */
static void session_start(struct relay_client *c, const struct pgwire_startup *su)
{
    struct routing_result *rt;

    snprintf(c->user, sizeof(c->user), "%s", su->user);
    snprintf(c->database, sizeof(c->database), "%s", su->database ? su->database : su->user);
    if (c->r->draining) {
        client_fail(c, SQLSTATE_ADMIN_SHUTDOWN,
                    "pgburrow: the relay is shutting down; connect again");
        return;
    }
    if (su->application_name)
        snprintf(c->application_name, sizeof(c->application_name), "%s", su->application_name);
    /* on the heap: it holds a copy of the options, up to a whole startup packet */
    if (!(rt = malloc(sizeof(*rt)))) {
        client_fail(c, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
        return;
    }
    if (session_admit(c, su, rt) == 0)
        session_open(c, su, rt);
    free(rt);
}

/*
 * The agent could not reach PostgreSQL (OPEN_FAIL 08006): when another agent serves the route,
 * open the session there instead, once, before failing the client. Several agents per route
 * are there for failover, and the first one's path to PostgreSQL may be what is broken.
 */
static bool session_retry_other_agent(struct relay_client *c, const struct proto_error *fail)
{
    const char *agent = NULL;
    struct tunnel_stream *s;
    struct tunnel *t;
    struct proto_open m;

    if (c->retried || !sqlstate_open_fail_is_unreachable(fail->code) || c->r->draining)
        return false;
    t = relay_route_pick_other_tunnel(c->r, c->route, c->agent, &agent);
    if (!t)
        return false;
    client_open_msg(c, &m);
    if (!(s = tunnel_stream_open(t, &m, &session_stream_ops, c)))
        return false;
    log_msg(LOG_WARN, tunnel_id(t), tunnel_stream_id(s),
            "session retry sid=%s route=%s failed_agent=%s agent=%s reason=%s", c->sid, c->route,
            c->agent, agent, fail->message);
    c->retried = true;
    c->s = s;
    snprintf(c->agent, sizeof(c->agent), "%s", agent);
    return true;
}

/* The server's first messages, read as they pass: the session's cancel key, and whether
 * PostgreSQL authenticated the user (until then the user is only claimed, and statements are
 * held: audit.h). */
static bool session_from_server(void *ctx, const uint8_t *data, size_t len)
{
    struct relay_client *c = ctx;
    unsigned ev = pgwire_bescan_feed(c->scan, data, len);

    relay_cancel_watch_follow(c->keyw, c->scan, ev);
    if ((ev & PGWIRE_BESCAN_ERROR) && !c->authenticated) {
        snprintf(c->auth_sqlstate, sizeof(c->auth_sqlstate), "%s", c->scan->err_code);
        snprintf(c->auth_error, sizeof(c->auth_error), "%s", c->scan->err_msg);
    }
    if ((ev & PGWIRE_BESCAN_AUTH_OK) && !c->authenticated) {
        c->authenticated = true;
        c->auth_sqlstate[0] = c->auth_error[0] = '\0';
        log_msg(LOG_DEBUG, 0, 0, "session authenticated sid=%s user=%s", c->sid, c->user);
        audit_session_event(c, "session_authenticated", NULL, NULL);
        audit_stmt_authenticated(c->stmt);
    }
    if (!c->scan->done)
        return true;
    scan_free(c);
    return false;
}

static void session_on_open_result(struct tunnel_stream *s, const struct proto_error *fail)
{
    struct relay_client *c = tunnel_stream_data(s);
    if (!c)
        return;
    if (fail) {
        client_detach_stream(c, NULL, NULL);
        if (session_retry_other_agent(c, fail))
            return;
        client_fail(c, fail->code[0] ? fail->code : SQLSTATE_CONNECTION_FAILURE,
                    "pgburrow: agent %s: %s", c->agent, fail->message);
        return;
    }
    c->scan = malloc(sizeof(*c->scan));
    c->keyw = relay_cancel_watch_new(c->r, s, c->sid, c->agent);
    if (!c->scan || !c->keyw) {
        client_fail(c, SQLSTATE_OUT_OF_MEMORY,
                    "pgburrow: out of memory"); /* resets the stream too */
        return;
    }
    pgwire_bescan_init(c->scan);
    if (tunnel_stream_write(s, c->pkt, c->pkt_len) < 0) {
        client_fail(c, SQLSTATE_CONNECTION_FAILURE,
                    "pgburrow: could not forward the startup packet");
        return;
    }
    free(c->pkt);
    c->pkt = NULL;
    uv_timer_stop(&c->timer);
    c->state = CLIENT_STREAMING;
    metrics_histogram_observe(&c->r->stats.setup,
                              (double)(uv_now(c->r->loop) - c->start_ms) / 1000.0);
    struct conn *conn = c->conn;
    c->conn = NULL;
    log_msg(LOG_INFO, tunnel_id(tunnel_stream_tunnel(s)), tunnel_stream_id(s),
            "session start sid=%s route=%s client=%s user=%s database=%s agent=%s sni=%s tls=%s "
            "cert_subject=%s cert_serial=%s",
            c->sid, c->route, c->peer, c->user, c->database, c->agent, c->sni[0] ? c->sni : "-",
            c->tls_version, c->cert_subject[0] ? c->cert_subject : "-",
            c->cert_serial[0] ? c->cert_serial : "-");
    audit_session_event(c, "session_start", NULL, NULL);
    tunnel_stream_bind(s, conn, true);
    tunnel_stream_set_filter(s, TUNNEL_TO_LOCAL, session_from_server, c); /* the first filter */
    /* after the StartupMessage went out: the filter sees typed messages only */
    c->stmt = audit_stmt_new(c->r->audit, c->r->cfg.name, c->sid, c->route, c->user);
    if (c->stmt)
        tunnel_stream_set_filter(s, TUNNEL_TO_PEER, audit_stmt_filter, c->stmt);
    /* message boundaries, for a FATAL of our own: a revoked certificate, KILL SESSION */
    if (tunnel_stream_set_filter(s, TUNNEL_TO_LOCAL, edge_filter, &c->edge) < 0)
        c->edge.lost = true;
    if (c->cert)
        relay_cert_expiry_note(c->r, c->cert_not_after);
}

/* ---- certificates of running sessions: revocation and expiry --------------------------- */

/*
 * End a session whose certificate is no longer accepted. Before OPEN_OK it is an ordinary
 * refusal. Once streaming: RESET toward the agent (PostgreSQL ends the backend), and the client
 * gets FATAL 28000 after the bytes already queued for it, when those end on a message
 * boundary; in the middle of a server message an ErrorResponse would corrupt the stream, so the
 * client then only sees the connection end.
 */
static void session_end_fatal(struct relay_client *c, const char *sqlstate, const char *msg,
                              const char *what);

static void session_revoke(struct relay_client *c, const char *msg)
{
    session_end_fatal(c, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, msg, "revoked");
}

/* End a routed session with FATAL sqlstate msg (logged as "session WHAT ..."). */
static void session_end_fatal(struct relay_client *c, const char *sqlstate, const char *msg,
                              const char *what)
{
    const char *reason = strncmp(msg, "pgburrow: ", 10) == 0 ? msg + 10 : msg;
    struct tunnel_stream *s = c->s;
    bool at_edge = !c->edge.lost && c->edge.have == 0 && c->edge.left == 0;
    uint8_t buf[700];
    int n = 0;

    if (c->state == CLIENT_OPENING) {
        client_fail(c, sqlstate, "%s", msg);
        return;
    }
    if (c->state != CLIENT_STREAMING || !s)
        return;
    log_msg(LOG_WARN, tunnel_id(tunnel_stream_tunnel(s)), tunnel_stream_id(s),
            "session %s sid=%s route=%s client=%s user=%s cert_subject=%s cert_serial=%s "
            "sqlstate=%s reason=%s%s",
            what, c->sid, c->route, c->peer, c->user, c->cert_subject[0] ? c->cert_subject : "-",
            c->cert_serial[0] ? c->cert_serial : "-", sqlstate, reason,
            at_edge ? "" : " (in the middle of a server message: closed without ErrorResponse)");
    if (at_edge && (n = pgwire_error_response(buf, sizeof(buf), "FATAL", sqlstate, msg)) < 0)
        n = 0;
    tunnel_stream_end_local(s, sqlstate, reason, buf, (size_t)n);
}

void frontdoor_stats_live(struct relay *r)
{
    for (const struct relay_client *c = r->clients; c; c = c->next) {
        if (c->state != CLIENT_STREAMING || !c->s || !c->stats)
            continue;
        c->stats->live_to_server += tunnel_stream_bytes_out(c->s);
        c->stats->live_to_client += tunnel_stream_bytes_in(c->s);
    }
}

long long frontdoor_certs_recheck(struct relay *r, bool reverify, long long now)
{
    long long first = 0;
    struct relay_client *next;

    for (struct relay_client *c = r->clients; c; c = next) {
        const struct relay_route *route;
        struct tls_peer_info info;
        char msg[PGB_ERR_MAX + 64] = "", why[PGB_ERR_MAX];

        next = c->next;
        if (!c->cert || (c->state != CLIENT_OPENING && c->state != CLIENT_STREAMING))
            continue;
        /* a route that a reload removed: its sessions go on, as they do without certificates */
        route = relay_config_route(&r->cfg, c->route);
        if (reverify && route) {
            if (access_recheck_cert(r->access, route, c->cert, c->cert_chain, c->user, &info, why,
                                    sizeof(why)) < 0)
                snprintf(msg, sizeof(msg), "%s; session ended by a configuration reload", why);
            else
                c->cert_not_after = info.not_after; /* 0: the route asks for none any more */
        }
        if (!msg[0] && c->cert_not_after > 0 && now > c->cert_not_after)
            snprintf(msg, sizeof(msg),
                     "pgburrow: route \"%s\": client certificate expired; session ended", c->route);
        if (msg[0]) {
            session_revoke(c, msg);
            continue;
        }
        if (c->cert_not_after > 0 && (first == 0 || c->cert_not_after < first))
            first = c->cert_not_after;
    }
    return first;
}

static void session_on_done(struct tunnel_stream *s, const char *err)
{
    struct relay_client *c = tunnel_stream_data(s);
    if (!c)
        return;
    c->s = NULL;
    relay_cancel_watch_free(c->keyw); /* it refers to the stream, which ends now */
    c->keyw = NULL;
    if (c->state == CLIENT_OPENING) {
        /* the tunnel went away before the agent answered (the agent died, or froze and the
         * keepalive gave up on it): another agent of the route gets the session, once */
        struct proto_error lost;
        memset(&lost, 0, sizeof(lost));
        snprintf(lost.code, sizeof(lost.code), SQLSTATE_CONNECTION_FAILURE);
        snprintf(lost.message, sizeof(lost.message), "lost the tunnel: %s", err ? err : "closed");
        if (session_retry_other_agent(c, &lost))
            return;
        client_fail(c, SQLSTATE_CONNECTION_FAILURE, "pgburrow: lost the tunnel to agent %s: %s",
                    c->agent, err ? err : "closed");
        return;
    }
    if (c->state != CLIENT_STREAMING)
        return;
    uint64_t ms = uv_now(c->r->loop) - c->start_ms;
    log_msg(err ? LOG_WARN : LOG_INFO, tunnel_id(tunnel_stream_tunnel(s)), tunnel_stream_id(s),
            "session end sid=%s route=%s client=%s user=%s authenticated=%s database=%s agent=%s "
            "bytes_in=%llu bytes_out=%llu duration_ms=%llu reason=%s",
            c->sid, c->route, c->peer, c->user, c->authenticated ? "yes" : "no", c->database,
            c->agent, (unsigned long long)tunnel_stream_bytes_out(s),
            (unsigned long long)tunnel_stream_bytes_in(s), (unsigned long long)ms,
            err ? err : "closed");
    if (c->stats) {
        c->stats->to_server += tunnel_stream_bytes_out(s);
        c->stats->to_client += tunnel_stream_bytes_in(s);
    }
    if (!c->authenticated)
        audit_session_event(c, "auth_failed", s, err);
    audit_session_event(c, "session_end", s, err);
    client_release(c);
}

static const struct tunnel_stream_ops session_stream_ops = {
    .on_open_result = session_on_open_result,
    .on_done = session_on_done,
};

/* ---- CancelRequest: read it whole (bounded), forward it, close; never answer ----------- */

static size_t read_cancel(struct relay_client *c, const uint8_t *data, size_t len)
{
    size_t n = c->pkt_len - c->pkt_have;
    if (n > len)
        n = len;
    memcpy(c->pkt + c->pkt_have, data, n);
    c->pkt_have += n;
    if (c->pkt_have == c->pkt_len) {
        relay_cancel_request(c->r, c->peer, c->pkt, c->pkt_len);
        client_drop(c);
    }
    return len; /* whatever follows the request is ignored */
}

/* libpq <= 16 sends the CancelRequest in plaintext on a new connection; the first 8 bytes
 * (length and code) are in c->first. */
static size_t start_cancel(struct relay_client *c, const uint8_t *data, size_t len)
{
    uint32_t n = pgwire_packet_len(c->first, sizeof(c->first));
    bool len_ok = relay_cancel_len_ok(n);
    if (!len_ok || !(c->pkt = malloc(n))) {
        c->r->stats.cancel_dropped++;
        log_info("cancel dropped reason=%s client=%s", len_ok ? "out of memory" : "invalid length",
                 c->peer);
        client_drop(c);
        return len;
    }
    memcpy(c->pkt, c->first, sizeof(c->first));
    c->pkt_len = n;
    c->pkt_have = sizeof(c->first);
    c->state = CLIENT_CANCEL;
    return read_cancel(c, data, len);
}

/* ---- reading the start of the connection --------------------------------------------- */

/* Not in [relay] allow: no TLS work is spent. The first request gets a plaintext FATAL
 * ErrorResponse (libpq reports it as the answer to its SSLRequest); a TLS ClientHello (no
 * PostgreSQL message can be sent there) and a CancelRequest (never answered) are just closed. */
static size_t read_denied(struct relay_client *c, const uint8_t *data, size_t len)
{
    size_t n = sizeof(c->first) - c->first_have;

    if (c->first_have == 0 && len > 0 && data[0] == PGWIRE_TLS_HANDSHAKE) {
        c->r->stats.refused[PREAUTH_REFUSED]++; /* not through client_fail: no message */
        log_warn("refused client=%s sqlstate=%s reason=address not allowed (direct TLS)", c->peer,
                 SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION);
        audit_refused(c->r->audit, c->r->cfg.name, c->peer,
                      SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                      "address not allowed (direct TLS)");
        client_drop(c);
        return len;
    }
    if (n > len)
        n = len;
    memcpy(c->first + c->first_have, data, n);
    c->first_have += n;
    if (c->first_have < sizeof(c->first))
        return len;
    if (pgwire_classify(c->first, sizeof(c->first)) == PGWIRE_CANCEL) {
        c->r->stats.cancel_dropped++;
        log_info("cancel dropped reason=address not allowed client=%s", c->peer);
        client_drop(c);
        return len;
    }
    client_fail(c, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, "pgburrow: address not allowed");
    return len;
}

static void throttle_tick(uv_timer_t *timer);

/* No handshake token for the client's source now (handshake_rate): stop reading and try again
 * shortly. The client waits for its answer; startup_timeout still runs from the accept. */
static void client_throttle(struct relay_client *c)
{
    uint64_t rate = c->r->cfg.handshake_rate, wait = rate ? 1000 / rate : 1;

    c->throttled = true;
    conn_read_stop(c->conn);
    uv_timer_start(&c->timer, throttle_tick, wait ? wait : 1, 0);
}

/* After an SSLRequest: 'S', then TLS. */
static void client_start_tls(struct relay_client *c)
{
    conn_write(c->conn, "S", 1);
    c->state = CLIENT_TLS;
    if (conn_tls_server(c->conn, c->r->client_ctx, NULL, 0) < 0)
        client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: could not start TLS");
}

static void throttle_tick(uv_timer_t *timer)
{
    struct relay_client *c = timer->data;
    uint64_t now = uv_now(c->r->loop), deadline = c->start_ms + c->r->cfg.startup_timeout_ms;

    if (c->state != CLIENT_FIRST || !c->conn || !c->throttled)
        return;
    if (now >= deadline) {
        startup_timeout(timer);
        return;
    }
    uv_timer_start(&c->timer, startup_timeout, deadline - now, 0);
    c->throttled = false;
    if (c->first_have == sizeof(c->first)) { /* an SSLRequest waits for its answer */
        if (!relay_admit_handshake(c->r, &c->slot)) {
            client_throttle(c);
            return;
        }
        client_start_tls(c);
    }
    /* direct TLS: the ClientHello held by the conn is read again (and takes its token) */
    if (c->state != CLIENT_ENDING && c->conn)
        conn_read_start(c->conn);
}

static size_t read_first(struct relay_client *c, const uint8_t *data, size_t len)
{
    struct relay *r = c->r;
    size_t used = 0;

    if (c->denied)
        return read_denied(c, data, len);

    while (used < len && c->state == CLIENT_FIRST) {
        if (c->first_have == 0 && data[used] == PGWIRE_TLS_HANDSHAKE) {
            /* direct TLS: everything read so far is the start of the ClientHello */
            if (!relay_admit_handshake(r, &c->slot)) {
                client_throttle(c);
                return used; /* the conn holds the rest until reading starts again */
            }
            c->state = CLIENT_TLS;
            if (conn_tls_server(c->conn, r->client_direct_ctx, data + used, len - used) < 0)
                client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: could not start TLS");
            return len;
        }
        size_t n = sizeof(c->first) - c->first_have;
        if (n > len - used)
            n = len - used;
        memcpy(c->first + c->first_have, data + used, n);
        c->first_have += n;
        used += n;
        if (c->first_have < sizeof(c->first))
            break;
        switch (pgwire_classify(c->first, sizeof(c->first))) {
        case PGWIRE_SSL:
            if (used < len) {
                /* CVE-2021-23214 class: never let plaintext pipelined after the
                 * SSLRequest be taken for data received over TLS */
                client_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
                            "pgburrow: unencrypted data after SSL request");
                return len;
            }
            if (!relay_admit_handshake(r, &c->slot)) {
                client_throttle(c);
                return len;
            }
            client_start_tls(c);
            return len;
        case PGWIRE_GSSENC:
            if (c->gss_answered) {
                client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: repeated GSSENCRequest");
                return len;
            }
            c->gss_answered = true;
            c->first_have = 0;
            conn_write(c->conn, "N", 1);
            continue;
        case PGWIRE_CANCEL:
            start_cancel(c, data + used, len - used);
            return len;
        case PGWIRE_STARTUP:
            client_fail(c, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
                        "pgburrow: TLS is required; connect with sslmode=require or stronger");
            return len;
        default:
            if (proxyproto_looks_like_header(c->first, sizeof(c->first))) {
                client_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
                            "pgburrow: PROXY protocol header from an address not in "
                            "proxy_protocol_from");
                return len;
            }
            client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid startup packet");
            return len;
        }
    }
    return len;
}

static void client_to_admin(struct relay_client *c, const struct pgwire_startup *su,
                            const uint8_t *rest, size_t rest_len);

static size_t read_startup(struct relay_client *c, const uint8_t *data, size_t len)
{
    size_t used = 0;
    char err[PGB_ERR_MAX];
    struct pgwire_startup su;

    if (!c->pkt) {
        /* the length word first, into pkt_len via first[] */
        size_t n = 4 - c->first_have;
        if (n > len)
            n = len;
        memcpy(c->first + c->first_have, data, n);
        c->first_have += n;
        used += n;
        if (c->first_have < 4)
            return used;
        c->pkt_len = pgwire_packet_len(c->first, 4);
        if (c->pkt_len < 8 || c->pkt_len > PGWIRE_STARTUP_MAX) {
            client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid startup packet length");
            return len;
        }
        c->pkt = malloc(c->pkt_len);
        if (!c->pkt) {
            client_fail(c, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
            return len;
        }
        memcpy(c->pkt, c->first, 4);
        c->pkt_have = 4;
    }
    size_t n = c->pkt_len - c->pkt_have;
    if (n > len - used)
        n = len - used;
    memcpy(c->pkt + c->pkt_have, data + used, n);
    c->pkt_have += n;
    used += n;
    if (c->pkt_have < c->pkt_len)
        return used;

    uint32_t code = pgwire_packet_len(c->pkt + 4, 4);
    if (code == PGWIRE_SSL_REQUEST || code == PGWIRE_GSSENC_REQUEST) {
        client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: SSL or GSS request inside TLS");
        return len;
    }
    if (code == PGWIRE_CANCEL_REQUEST) {
        /* libpq 17 sends it inside TLS, after SSLRequest; the packet is complete here */
        relay_cancel_request(c->r, c->peer, c->pkt, c->pkt_len);
        client_drop(c);
        return len;
    }
    if (pgwire_startup_parse(c->pkt, c->pkt_len, &su, err, sizeof(err)) < 0) {
        client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid startup packet: %s", err);
        return len;
    }
    if (access_admin_requested(&c->r->cfg, su.database)) {
        client_to_admin(c, &su, data + used, len - used);
        return len;
    }
    session_start(c, &su);
    /* anything the client sent after the StartupMessage waits in the conn until bound */
    return c->state == CLIENT_OPENING ? used : len;
}

/*
 * dbname=pgburrow with the admin console on: no route, no stream. The client's certificate is
 * checked here (access.h), then its conn (and what it sent after the StartupMessage) goes to the
 * console (r->open_admin, admin.h) and this client struct is released.
 */
static void client_to_admin(struct relay_client *c, const struct pgwire_startup *su,
                            const uint8_t *rest, size_t rest_len)
{
    struct relay *r = c->r;
    struct tls_peer_info cert;
    char msg[PGB_ERR_MAX];
    struct relay_admin_login login = {
        .peer = c->peer,
        .cn = cert.cn,
        .cert_subject = cert.subject,
        .cert_serial = cert.serial,
        .user = su->user,
        .application_name = su->application_name,
        .tls_version = c->tls_version,
    };
    struct conn *conn = c->conn;

    snprintf(c->user, sizeof(c->user), "%s", su->user);
    snprintf(c->database, sizeof(c->database), "%s", su->database);
    if (r->draining) {
        client_fail(c, SQLSTATE_ADMIN_SHUTDOWN,
                    "pgburrow: the relay is shutting down; connect again");
        return;
    }
    if (access_check_admin(r->access, &r->cfg, conn, &cert, msg, sizeof(msg)) < 0) {
        client_fail(c, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, "%s", msg);
        return;
    }
    if (!r->open_admin) {
        client_fail(c, SQLSTATE_CANNOT_CONNECT_NOW, "pgburrow: the admin console is not ready");
        return;
    }
    if (r->open_admin(r, conn, &login, rest, rest_len, msg, sizeof(msg)) < 0) {
        client_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS, "%s", msg);
        return;
    }
    c->conn = NULL; /* the console's now */
    c->state = CLIENT_ENDING;
    uv_timer_stop(&c->timer);
    client_release(c);
}

/* proxy_protocol_from: the balancer's header comes first (proxied.h). Returns how much of
 * data it took; the rest is the client's. */
static size_t read_proxy_header(struct relay_client *c, const uint8_t *data, size_t len)
{
    size_t used;
    int rc;

    switch (proxyproto_feed(c->px, data, len, &used)) {
    case PROXYPROTO_NEED_MORE:
        return len;
    case PROXYPROTO_ERROR:
        client_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid PROXY protocol header: %s",
                    c->px->err);
        return len;
    case PROXYPROTO_DONE:
        break;
    }
    rc = relay_proxied_apply(c->r, &c->px->res, &c->slot, c->peer, sizeof(c->peer));
    free(c->px);
    c->px = NULL;
    source_ip_of(c->peer, c->source_ip, sizeof(c->source_ip));
    if (rc < 0) {
        client_drop(c);
        return len;
    }
    c->denied = !access_address_allowed(&c->r->cfg.allow, c->peer);
    return used;
}

static size_t client_on_read(struct conn *conn, const uint8_t *data, size_t len)
{
    struct relay_client *c = conn_data(conn);
    if (c->px && c->state == CLIENT_FIRST) {
        size_t hdr = read_proxy_header(c, data, len);
        if (c->px || hdr == len || c->state != CLIENT_FIRST)
            return len; /* a health check's header alone does not count as bytes */
        c->got_bytes = true;
        return hdr + read_first(c, data + hdr, len - hdr);
    }
    c->got_bytes = true;
    switch (c->state) {
    case CLIENT_FIRST:
        return read_first(c, data, len);
    case CLIENT_STARTUP:
        return read_startup(c, data, len);
    case CLIENT_CANCEL:
        return read_cancel(c, data, len);
    case CLIENT_OPENING:
        return 0;
    default:
        return len;
    }
}

static void client_on_handshake(struct conn *conn)
{
    struct relay_client *c = conn_data(conn);
    const char *v = conn_tls_version(conn), *sni = conn_tls_sni(conn);
    const char *cipher = conn_tls_cipher(conn);
    snprintf(c->tls_version, sizeof(c->tls_version), "%s", v ? v : "?");
    snprintf(c->tls_cipher, sizeof(c->tls_cipher), "%s", cipher ? cipher : "");
    if (sni)
        snprintf(c->sni, sizeof(c->sni), "%s", sni);
    c->state = CLIENT_STARTUP;
    c->first_have = 0;
}

static void client_on_eof(struct conn *conn)
{
    struct relay_client *c = conn_data(conn);
    if (c->state == CLIENT_ENDING)
        return;
    if (!c->got_bytes)
        log_debug("client=%s closed without sending anything", c->peer);
    else
        log_info("client=%s closed the connection during startup", c->peer);
    c->state = CLIENT_ENDING;
    conn_close(conn);
}

static void client_on_error(struct conn *conn, int err, const char *reason)
{
    struct relay_client *c = conn_data(conn);
    if (c->state == CLIENT_ENDING)
        return;
    if (!c->got_bytes)
        log_debug("client=%s closed without sending anything: %s", c->peer,
                  reason ? reason : uv_strerror(err)); /* a load balancer's health check */
    else if (c->state == CLIENT_TLS)
        frontdoor_tls_refused(c, reason ? reason : uv_strerror(err));
    else
        log_info("client=%s error during startup: %s", c->peer, reason ? reason : uv_strerror(err));
    c->state = CLIENT_ENDING;
}

static void client_on_close(struct conn *conn)
{
    struct relay_client *c = conn_data(conn);
    c->conn = NULL;
    client_detach_stream(c, SQLSTATE_CONNECTION_FAILURE, "client went away");
    client_release(c);
}

static const struct conn_ops client_ops = {
    .on_handshake = client_on_handshake,
    .on_read = client_on_read,
    .on_eof = client_on_eof,
    .on_error = client_on_error,
    .on_close = client_on_close,
};

/* Closed to make room for other sources' connections (admit.h). */
static void client_shed(struct preauth_slot *slot, const char *why)
{
    struct relay_client *c =
        (struct relay_client *)(void *)((char *)slot - offsetof(struct relay_client, slot));
    char more[64];

    relay_admit_release(c->r, slot);
    if (relay_admit_log_ok(c->r, c->peer, PREAUTH_SHED, more, sizeof(more)))
        log_warn("shed client=%s pending_ms=%llu reason=%s%s", c->peer,
                 (unsigned long long)(uv_now(c->r->loop) - c->start_ms), why, more);
    client_drop(c);
}

void frontdoor_accept(struct relay *r, uv_stream_t *server)
{
    struct relay_client *c = calloc(1, sizeof(*c));
    uint8_t rnd[8];
    int rc;

    if (c && !(c->conn = conn_new(r->cl, &client_ops, c, false))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        relay_admit_drop_unaccepted(r, server, "client"); /* or the listener stops */
        return;
    }
    c->r = r;
    uv_timer_init(r->loop, &c->timer);
    c->timer.data = c;
    c->next = r->clients;
    if (r->clients)
        r->clients->prev = c;
    r->clients = c;
    r->nclients++;
    c->start_ms = uv_now(r->loop);
    if (uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL) < 0)
        memcpy(rnd, &c, sizeof(rnd) < sizeof(c) ? sizeof(rnd) : sizeof(c));
    for (int i = 0; i < 8; i++)
        snprintf(c->sid + 2 * i, 3, "%02x", rnd[i]);
    if ((rc = conn_accept(c->conn, server)) < 0) {
        if (rc == UV_ENOTCONN)
            log_debug("client=- closed without sending anything (reset before it was accepted)");
        else
            relay_admit_accept_failed(r, rc, "client");
        client_drop(c);
        return;
    }
    snprintf(c->peer, sizeof(c->peer), "%s", conn_peer_addr(c->conn));
    source_ip_of(c->peer, c->source_ip, sizeof(c->source_ip));
    c->slot.shed = client_shed;
    if (relay_admit(r, &c->slot, c->peer, c->conn, "client") < 0) {
        client_drop(c);
        return;
    }
    if (relay_proxied_expected(r, c->peer)) {
        /* allow applies to the client the header names, not to the balancer */
        if (!(c->px = malloc(sizeof(*c->px)))) {
            c->state = CLIENT_ENDING;
            conn_close(c->conn);
            return;
        }
        proxyproto_init(c->px);
    } else {
        c->denied = !access_address_allowed(&r->cfg.allow, c->peer);
    }
    uv_timer_start(&c->timer, startup_timeout, c->r->cfg.startup_timeout_ms, 0);
    conn_read_start(c->conn);
}

void frontdoor_close_all(struct relay *r)
{
    /* refused clients too: conn_end would otherwise hold the shutdown until its timeout */
    for (struct relay_client *c = r->clients; c; c = c->next) {
        if (c->conn) { /* conn_close is a no-op on a conn already closing */
            c->state = CLIENT_ENDING;
            conn_close(c->conn);
        }
    }
}

/* ---- the admin console's view (frontdoor.h) ------------------------------------------------ */

void frontdoor_sessions_list(struct relay *r, frontdoor_session_fn fn, void *ctx)
{
    uint64_t now = uv_now(r->loop);

    for (struct relay_client *c = r->clients; c; c = c->next) {
        struct frontdoor_session_info si = {
            .sid = c->sid,
            .state = c->state == CLIENT_OPENING ? "opening" : "streaming",
            .route = c->route,
            .agent = c->agent,
            .client = c->peer,
            .user = c->user,
            .database = c->database,
            .application_name = c->application_name[0] ? c->application_name : NULL,
            .cert_subject = c->cert_subject[0] ? c->cert_subject : NULL,
            .tls_version = c->tls_version[0] ? c->tls_version : NULL,
            .authenticated = c->authenticated,
            .duration_ms = now - c->start_ms,
        };

        if (c->state != CLIENT_OPENING && c->state != CLIENT_STREAMING)
            continue;
        if (c->s) {
            si.bytes_in = tunnel_stream_bytes_out(c->s);
            si.bytes_out = tunnel_stream_bytes_in(c->s);
        }
        fn(ctx, &si);
    }
}

int frontdoor_kill_session(struct relay *r, const char *sid, const char *by)
{
    for (struct relay_client *c = r->clients; c; c = c->next) {
        if ((c->state != CLIENT_OPENING && c->state != CLIENT_STREAMING) ||
            strcmp(c->sid, sid) != 0)
            continue;
        log_info("session kill sid=%s by=%s", c->sid, by);
        session_end_fatal(c, SQLSTATE_ADMIN_SHUTDOWN,
                          "pgburrow: terminating connection due to administrator command",
                          "killed");
        return 0;
    }
    return -ENOENT;
}
