/*
 * session.c — one session a relay opened: the local PostgreSQL connection behind a stream.
 *
 * Each OPEN becomes a session: connect to the route's PostgreSQL (Unix socket or TCP; with the
 * route's sslmode, SSLRequest and the TLS handshake first, see upstream.h), answer OPEN_OK and
 * hand the connection to the stream, or answer OPEN_FAIL with the reason.
 */
#include "agent/session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/cancel_key.h"
#include "agent/upstream.h"
#include "common/log.h"
#include "common/sqlstate.h"

struct agent_session {
    struct agent *a;
    struct agent_session *prev, *next; /* a->sessions */
    struct route_stats *stats;         /* its route's counters (route_stats.h) */
    struct tunnel_stream *s;           /* NULL once done */
    struct conn *pg;                   /* owned until handed to the stream */
    uv_getaddrinfo_t gai;
    uv_timer_t timer; /* connect timeout */
    /* besides the stream (s), what can still call back into the session: it is freed once the
     * stream is done and none of these is left (session_free_if_done) */
    bool pg_open;    /* ss->pg's close callback has yet to run (until the stream takes it) */
    bool timer_open; /* the timer's close callback has yet to run */
    bool gai_busy;   /* the resolver's callback has yet to run */
    bool bound;
    uint32_t tunnel_id, stream_id;
    uint64_t start_ms;
    char sid[40];
    char route[PROTO_NAME_MAX];
    char target[300];
    uint16_t port;
    struct upstream_tls up;          /* the route's upstream TLS, until the handshake is done */
    struct cancel_key_watch *cancel; /* notes the session's cancel key once bound */
};

/* Free the session once nothing that can still call back refers to it. */
static void session_free_if_done(struct agent_session *ss)
{
    if (ss->s || ss->pg_open || ss->timer_open || ss->gai_busy)
        return;
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        ss->a->sessions = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    upstream_tls_release(&ss->up);
    free(ss);
}

static void session_timer_closed(uv_handle_t *h)
{
    struct agent_session *ss = h->data;
    ss->timer_open = false;
    session_free_if_done(ss);
}

/* The events of an accepted stream (session_on_done). */
static const struct tunnel_stream_ops session_stream_ops;

static void session_pg_on_connect(struct conn *c, int status);
static void session_pg_on_handshake(struct conn *c);
static size_t session_pg_on_read(struct conn *c, const uint8_t *data, size_t len);
static void session_pg_on_eof(struct conn *c);
static void session_pg_on_error(struct conn *c, int err, const char *reason);
static void session_pg_on_close(struct conn *c);

/* Until the stream takes the conn: connecting, and the upstream SSLRequest and handshake. */
static const struct conn_ops session_pg_ops = {
    .on_connect = session_pg_on_connect,
    .on_handshake = session_pg_on_handshake,
    .on_read = session_pg_on_read,
    .on_eof = session_pg_on_eof,
    .on_error = session_pg_on_error,
    .on_close = session_pg_on_close,
};

/* Give up on connecting: OPEN_FAIL to the relay with the reason. */
static void session_fail(struct agent_session *ss, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_fail(struct agent_session *ss, const char *fmt, ...)
{
    char msg[PROTO_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uv_timer_stop(&ss->timer);
    if (ss->pg) {
        struct conn *pg = ss->pg;
        ss->pg = NULL;
        conn_close(pg);
    }
    if (ss->s) {
        if (ss->stats)
            ss->stats->failures++;
        log_msg(LOG_WARN, ss->tunnel_id, ss->stream_id, "session failed sid=%s route=%s: %s",
                ss->sid, ss->route, msg);
        tunnel_stream_fail(ss->s, SQLSTATE_CONNECTION_FAILURE,
                           "could not connect to PostgreSQL: %s", msg);
    }
}

/* PostgreSQL is reachable (and TLS is up when the route asks for it): open the stream. */
static void session_pg_ready(struct agent_session *ss, struct conn *c)
{
    const char *tls = conn_tls_version(c);

    uv_timer_stop(&ss->timer);
    if (tunnel_stream_accept_ok(ss->s) < 0) {
        session_fail(ss, "tunnel closing");
        return;
    }
    ss->pg = NULL;
    ss->bound = true;
    ss->pg_open = false; /* the conn is the stream's now */
    log_msg(LOG_INFO, ss->tunnel_id, ss->stream_id,
            "session open sid=%s route=%s postgres=%s postgres_tls=%s", ss->sid, ss->route,
            ss->target, tls ? tls : "off");
    tunnel_stream_bind(ss->s, c, false);
    ss->cancel = cancel_key_watch_stream(ss->a->cancel_keys, ss->s, c, ss->target,
                                         agent_config_route(&ss->a->cfg, ss->route), ss->sid);
}

static void session_pg_on_connect(struct conn *c, int status)
{
    struct agent_session *ss = conn_data(c);
    if (!ss->s || ss->pg != c)
        return;
    if (status < 0) {
        session_fail(ss, "%s: %s", ss->target, uv_strerror(status));
        return;
    }
    if (!upstream_tls_enabled(&ss->up)) {
        session_pg_ready(ss, c);
        return;
    }
    int rc = upstream_tls_request(&ss->up, c);
    if (rc < 0)
        session_fail(ss, "%s: could not send the SSL request: %s", ss->target, uv_strerror(rc));
}

static void session_pg_on_handshake(struct conn *c)
{
    struct agent_session *ss = conn_data(c);
    if (!ss->s || ss->pg != c)
        return;
    upstream_tls_release(&ss->up); /* the conn's SSL holds its own reference */
    session_pg_ready(ss, c);
}

/* Only the answer to SSLRequest arrives here: PostgreSQL says nothing more before startup. */
static size_t session_pg_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct agent_session *ss = conn_data(c);
    char why[PROTO_MSG_MAX - 64];

    if (!ss->s || ss->pg != c)
        return len;
    if (upstream_tls_on_answer(&ss->up, c, data, len, ss->target, why, sizeof(why)) < 0)
        session_fail(ss, "%s", why);
    return len;
}

static void session_pg_on_eof(struct conn *c)
{
    struct agent_session *ss = conn_data(c);
    if (ss->s && ss->pg == c)
        session_fail(ss, "%s: PostgreSQL closed the connection before the session started",
                     ss->target);
}

static void session_pg_on_error(struct conn *c, int err, const char *reason)
{
    struct agent_session *ss = conn_data(c);
    if (ss->pg == c) {
        ss->pg = NULL;
        session_fail(ss, "%s: %s", ss->target, reason ? reason : uv_strerror(err));
    }
}

static void session_pg_on_close(struct conn *c)
{
    struct agent_session *ss = conn_data(c);
    if (ss->pg == c)
        ss->pg = NULL;
    ss->pg_open = false;
    session_free_if_done(ss);
}

static void session_connect_timeout(uv_timer_t *timer)
{
    struct agent_session *ss = timer->data;
    session_fail(ss, "%s: connection timed out after %llu ms", ss->target,
                 (unsigned long long)ss->a->cfg.connect_timeout_ms);
}

static void session_connect_addr(struct agent_session *ss, const struct sockaddr *addr)
{
    int rc;
    ss->pg = conn_new(ss->a->cl, &session_pg_ops, ss, false);
    if (!ss->pg) {
        session_fail(ss, "out of memory");
        return;
    }
    ss->pg_open = true;
    rc = conn_connect_tcp(ss->pg, addr);
    if (rc < 0)
        session_fail(ss, "%s: %s", ss->target, uv_strerror(rc));
}

static void session_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct agent_session *ss = req->data;
    if (status == 0 && ss->s)
        session_connect_addr(ss, res->ai_addr);
    else if (ss->s)
        session_fail(ss, "cannot resolve %s: %s", ss->target, uv_strerror(status));
    uv_freeaddrinfo(res);
    ss->gai_busy = false;
    session_free_if_done(ss);
}

int agent_session_start(struct agent *a, struct tunnel *t, uint32_t id, const struct proto_open *m)
{
    const struct agent_route *route = agent_config_route(&a->cfg, m->route);
    struct agent_session *ss;
    int rc;

    if (!route) {
        log_msg(LOG_WARN, tunnel_id(t), id,
                "relay asked for route %s, which this agent does "
                "not serve",
                m->route);
        return -ENOENT;
    }
    ss = calloc(1, sizeof(*ss));
    if (!ss)
        return -ENOMEM;
    ss->a = a;
    ss->tunnel_id = tunnel_id(t);
    ss->stream_id = id;
    ss->start_ms = uv_now(a->loop);
    snprintf(ss->sid, sizeof(ss->sid), "%s", m->session_id);
    snprintf(ss->route, sizeof(ss->route), "%s", m->route);
    ss->port = route->port;
    ss->s = tunnel_stream_accept(t, id, &session_stream_ops, ss);
    if (!ss->s) {
        free(ss);
        return -ENOMEM;
    }
    ss->next = a->sessions;
    if (a->sessions)
        a->sessions->prev = ss;
    a->sessions = ss;
    if ((ss->stats = route_stats_find(&a->routes, m->route))) {
        ss->stats->active++;
        ss->stats->total++;
    }
    uv_timer_init(a->loop, &ss->timer);
    ss->timer_open = true;
    ss->timer.data = ss;
    uv_timer_start(&ss->timer, session_connect_timeout, a->cfg.connect_timeout_ms, 0);
    log_msg(LOG_DEBUG, ss->tunnel_id, id, "session opening sid=%s route=%s client=%s user=%s",
            ss->sid, ss->route, m->client_addr, m->user);

    if (route->host[0] == '/') {
        snprintf(ss->target, sizeof(ss->target), "%s/.s.PGSQL.%u", route->host, route->port);
        ss->pg = conn_new(a->cl, &session_pg_ops, ss, true);
        if (!ss->pg) {
            session_fail(ss, "out of memory");
            return 0;
        }
        ss->pg_open = true;
        rc = conn_connect_pipe(ss->pg, ss->target);
        if (rc < 0)
            session_fail(ss, "%s: %s", ss->target, uv_strerror(rc));
        return 0;
    }
    snprintf(ss->target, sizeof(ss->target), "%s:%u", route->host, route->port);
    upstream_tls_init(&ss->up, route);
    struct sockaddr_storage sa;
    if (uv_ip4_addr(route->host, route->port, (struct sockaddr_in *)&sa) == 0 ||
        uv_ip6_addr(route->host, route->port, (struct sockaddr_in6 *)&sa) == 0) {
        session_connect_addr(ss, (struct sockaddr *)&sa);
        return 0;
    }
    char port[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    snprintf(port, sizeof(port), "%u", route->port);
    ss->gai.data = ss;
    ss->gai_busy = true;
    rc = uv_getaddrinfo(a->loop, &ss->gai, session_on_resolved, route->host, port, &hints);
    if (rc < 0) {
        ss->gai_busy = false;
        session_fail(ss, "cannot resolve %s: %s", route->host, uv_strerror(rc));
    }
    return 0;
}

static void session_on_done(struct tunnel_stream *s, const char *err)
{
    struct agent_session *ss = tunnel_stream_data(s);
    if (!ss)
        return;
    ss->s = NULL;
    if (ss->stats) {
        ss->stats->active--;
        if (ss->bound) {
            ss->stats->to_server += tunnel_stream_bytes_in(s);
            ss->stats->to_client += tunnel_stream_bytes_out(s);
        }
        ss->stats = NULL;
    }
    if (ss->bound)
        log_msg(err ? LOG_WARN : LOG_INFO, ss->tunnel_id, ss->stream_id,
                "session end sid=%s route=%s bytes_to_postgres=%llu bytes_from_postgres=%llu "
                "duration_ms=%llu reason=%s",
                ss->sid, ss->route, (unsigned long long)tunnel_stream_bytes_in(s),
                (unsigned long long)tunnel_stream_bytes_out(s),
                (unsigned long long)(uv_now(ss->a->loop) - ss->start_ms), err ? err : "closed");
    cancel_key_watch_free(ss->cancel); /* the session's cancel key dies with it */
    ss->cancel = NULL;
    if (ss->pg) {
        struct conn *pg = ss->pg;
        ss->pg = NULL;
        conn_close(pg);
    }
    uv_cancel((uv_req_t *)&ss->gai);
    uv_close((uv_handle_t *)&ss->timer, session_timer_closed);
    session_free_if_done(ss); /* the stream was one of its holders */
}

void agent_sessions_stats_live(struct agent *a)
{
    for (const struct agent_session *ss = a->sessions; ss; ss = ss->next) {
        if (!ss->s || !ss->bound || !ss->stats)
            continue;
        ss->stats->live_to_server += tunnel_stream_bytes_in(ss->s);
        ss->stats->live_to_client += tunnel_stream_bytes_out(ss->s);
    }
}

static const struct tunnel_stream_ops session_stream_ops = {
    .on_done = session_on_done,
};
