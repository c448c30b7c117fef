/*
 * cancel_key.c — the session keys the agent knows and real CancelRequests (see cancel_key.h).
 *
 * The filter reads the server's first messages (keytab_watch: read-only, the client gets
 * BackendKeyData exactly as PostgreSQL sent it) and enters the session's (pid, key) in the
 * map's table when its BackendKeyData has passed. A CANCEL from a relay is looked up by (pid,
 * key), in constant time: only the agent holding the session acts on it.
 *
 * A cancel connection (one per CANCEL that matched a key) lives until PostgreSQL closes it
 * after reading the request, or until the timeout. When the session's route uses upstream TLS,
 * the request goes inside TLS, as libpq 17 sends it:
 *
 *   connect --ok--> [SSLRequest --'S'--> TLS handshake] --> write CancelRequest, conn_end
 *      |                                                          --> (on_close) freed
 *      \--error / 'N' / timeout--> conn_close --> (on_close) freed
 */
#include "agent/cancel_key.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "common/keytab.h"
#include "common/log.h"
#include "common/pgwire.h"
#include "common/tls.h"
#include "proto/proto.h"
#include "common/sqlstate.h"

struct cancel_key_req;

struct cancel_key_map {
    uv_loop_t *loop;
    struct conn_loop *cl;
    uint64_t timeout_ms;
    struct keytab keys;          /* of the live sessions, borrowing their watches */
    struct cancel_key_req *reqs; /* outgoing cancel connections (doubly linked) */
    size_t nreqs;
};

struct cancel_key_watch {
    struct keytab_watch kw; /* first: the table's entries are cancel_key_watches */
    struct cancel_key_map *m;
    /* where the session's PostgreSQL is */
    struct upstream_tls up; /* the route's upstream TLS (ctx NULL: none) */
    bool pipe;
    struct sockaddr_storage addr; /* TCP */
    char target[300];             /* pipe: socket path; TCP: label */
    char route[PROTO_NAME_MAX];
    char sid[40];
};

struct cancel_key_req {
    struct cancel_key_map *m;
    struct cancel_key_req *prev, *next;
    struct conn *conn;
    uv_timer_t timer;
    struct upstream_tls up;
    int refs; /* conn + timer */
    uint32_t tunnel_id;
    size_t pkt_len;
    uint8_t pkt[12 + PROTO_CANCEL_KEY_MAX];
    char target[300];
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- the map --------------------------------------------------------------------------- */

struct cancel_key_map *cancel_key_map_new(uv_loop_t *loop, struct conn_loop *cl,
                                          uint64_t timeout_ms)
{
    struct cancel_key_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (keytab_init(&m->keys) < 0) {
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->cl = cl;
    m->timeout_ms = timeout_ms;
    return m;
}

size_t cancel_key_map_size(const struct cancel_key_map *m)
{
    return keytab_size(&m->keys);
}

static const struct cancel_key_watch *map_find(const struct cancel_key_map *m, uint32_t pid,
                                               const uint8_t *key, size_t key_len)
{
    return (const struct cancel_key_watch *)keytab_find(&m->keys, pid, key, key_len);
}

bool cancel_key_lookup(const struct cancel_key_map *m, uint32_t pid, const uint8_t *key,
                       size_t key_len)
{
    return map_find(m, pid, key, key_len) != NULL;
}

/* ---- watches and the filter ------------------------------------------------------------ */

static int parse_peer(const char *peer, struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(peer, ':');
    char *end;

    if (!colon || (size_t)(colon - peer) >= sizeof(host))
        return -EINVAL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return -EINVAL;
    memcpy(host, peer, (size_t)(colon - peer));
    host[colon - peer] = '\0';
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']')
            return -EINVAL;
        host[n - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss);
    }
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

struct cancel_key_watch *cancel_key_watch_new(struct cancel_key_map *m, bool pipe,
                                              const char *target, const char *peer,
                                              const char *route, const char *sid)
{
    struct cancel_key_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (keytab_watch_init(&w->kw, &m->keys) < 0) {
        free(w);
        return NULL;
    }
    w->m = m;
    w->pipe = pipe;
    snprintf(w->target, sizeof(w->target), "%s", target);
    snprintf(w->route, sizeof(w->route), "%s", route ? route : "");
    snprintf(w->sid, sizeof(w->sid), "%s", sid ? sid : "");
    if (!pipe && (!peer || parse_peer(peer, &w->addr) < 0)) {
        keytab_watch_fini(&w->kw);
        free(w);
        return NULL;
    }
    return w;
}

void cancel_key_watch_free(struct cancel_key_watch *w)
{
    if (!w)
        return;
    keytab_watch_fini(&w->kw);
    upstream_tls_release(&w->up);
    OPENSSL_cleanse(w, sizeof(*w));
    free(w);
}

bool cancel_key_filter(void *ctx, const uint8_t *data, size_t len)
{
    struct cancel_key_watch *w = ctx;
    return keytab_watch_feed(&w->kw, data, len);
}

struct cancel_key_watch *cancel_key_watch_stream(struct cancel_key_map *m, struct tunnel_stream *s,
                                                 struct conn *pg, const char *target,
                                                 const struct agent_route *route, const char *sid)
{
    const char *peer = conn_peer_addr(pg);
    bool pipe = strcmp(peer, "unix") == 0;
    struct cancel_key_watch *w =
        cancel_key_watch_new(m, pipe, target, peer, route ? route->name : "", sid);
    if (!w) {
        tunnel_stream_reset(s, SQLSTATE_OUT_OF_MEMORY,
                            "agent could not track the session's cancel key");
        return NULL;
    }
    if (route && !pipe)
        upstream_tls_init(&w->up, route);
    tunnel_stream_set_filter(s, TUNNEL_TO_PEER, cancel_key_filter, w);
    return w;
}

/* ---- outgoing cancel connections ------------------------------------------------------- */

static void req_unref(struct cancel_key_req *q)
{
    if (--q->refs > 0)
        return;
    struct cancel_key_map *m = q->m;
    if (q->prev)
        q->prev->next = q->next;
    else
        m->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    m->nreqs--;
    upstream_tls_release(&q->up);
    OPENSSL_cleanse(q->pkt, sizeof(q->pkt));
    free(q);
}

static void req_timer_closed(uv_handle_t *h)
{
    req_unref(h->data);
}

static void req_finish(struct cancel_key_req *q)
{
    if (!uv_is_closing((uv_handle_t *)&q->timer))
        uv_close((uv_handle_t *)&q->timer, req_timer_closed);
}

/* PostgreSQL never answers a CancelRequest; it closes once it has read it. */
static void req_send(struct conn *c)
{
    struct cancel_key_req *q = conn_data(c);
    if (conn_write(c, q->pkt, q->pkt_len) < 0) {
        conn_close(c);
        return;
    }
    conn_end(c);
}

static void req_on_connect(struct conn *c, int status)
{
    struct cancel_key_req *q = conn_data(c);
    int rc = status;
    if (rc == 0 && !upstream_tls_enabled(&q->up)) {
        req_send(c);
        return;
    }
    if (rc == 0)
        rc = upstream_tls_request(&q->up, c); /* the answer comes to req_on_read */
    if (rc < 0) {
        log_msg(LOG_WARN, q->tunnel_id, 0, "cancel failed postgres=%s: %s", q->target,
                uv_strerror(rc));
        conn_close(c);
    }
}

/* Only the answer to SSLRequest is read; after the handshake PostgreSQL sends nothing. */
static size_t req_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct cancel_key_req *q = conn_data(c);
    char why[256];
    if (!q->up.asked)
        return len;
    if (upstream_tls_on_answer(&q->up, c, data, len, q->target, why, sizeof(why)) < 0) {
        log_msg(LOG_WARN, q->tunnel_id, 0, "cancel failed: %s", why);
        conn_close(c);
    }
    return len;
}

static void req_on_handshake(struct conn *c)
{
    req_send(c);
}

static void req_on_error(struct conn *c, int err, const char *reason)
{
    struct cancel_key_req *q = conn_data(c);
    log_msg(LOG_WARN, q->tunnel_id, 0, "cancel failed postgres=%s: %s", q->target,
            reason ? reason : uv_strerror(err));
}

static void req_on_close(struct conn *c)
{
    struct cancel_key_req *q = conn_data(c);
    q->conn = NULL;
    req_finish(q);
    req_unref(q);
}

static const struct conn_ops req_ops = {
    .on_connect = req_on_connect,
    .on_read = req_on_read,
    .on_handshake = req_on_handshake,
    .on_error = req_on_error,
    .on_close = req_on_close,
};

static void req_timeout(uv_timer_t *timer)
{
    struct cancel_key_req *q = timer->data;
    log_msg(LOG_WARN, q->tunnel_id, 0, "cancel failed postgres=%s: no answer within %llu ms",
            q->target, (unsigned long long)q->m->timeout_ms);
    if (q->conn)
        conn_close(q->conn);
}

/* Open a connection to w's PostgreSQL and send the real CancelRequest. */
static int req_start(struct cancel_key_map *m, const struct cancel_key_watch *w, uint32_t tunnel_id)
{
    struct cancel_key_req *q;
    int rc;

    if (m->nreqs >= CANCEL_KEY_MAX_PENDING)
        return -EBUSY;
    q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->conn = conn_new(m->cl, &req_ops, q, w->pipe);
    if (!q->conn) {
        free(q);
        return -ENOMEM;
    }
    q->m = m;
    q->tunnel_id = tunnel_id;
    q->up = w->up;
    q->up.asked = false;
    if (q->up.ctx)
        q->up.ctx = tls_ctx_ref(q->up.ctx);
    snprintf(q->target, sizeof(q->target), "%s", w->target);
    /* CancelRequest: length, code, backend pid, secret key (4 bytes in 3.0, longer in 3.2) */
    q->pkt_len = 12 + w->kw.e.key_len;
    put_be32(q->pkt, (uint32_t)q->pkt_len);
    put_be32(q->pkt + 4, PGWIRE_CANCEL_REQUEST);
    put_be32(q->pkt + 8, w->kw.e.pid);
    memcpy(q->pkt + 12, w->kw.e.key, w->kw.e.key_len);
    q->refs = 2;
    q->next = m->reqs;
    if (m->reqs)
        m->reqs->prev = q;
    m->reqs = q;
    m->nreqs++;
    uv_timer_init(m->loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, req_timeout, m->timeout_ms, 0);
    rc = w->pipe ? conn_connect_pipe(q->conn, w->target)
                 : conn_connect_tcp(q->conn, (const struct sockaddr *)&w->addr);
    if (rc < 0) {
        log_msg(LOG_WARN, tunnel_id, 0, "cancel failed postgres=%s: %s", q->target,
                uv_strerror(rc));
        conn_close(q->conn); /* on_close finishes q */
    }
    return 0;
}

int cancel_key_on_frame(struct cancel_key_map *m, struct tunnel *t, const uint8_t *body, size_t len)
{
    struct proto_cancel c;
    int rc = proto_decode_cancel(body, len, &c);
    if (rc < 0) {
        tunnel_fail(t, sqlstate_of_failure(rc), "%s CANCEL: %s",
                    proto_is_violation(rc) ? "bad" : "could not decode", proto_strerror(rc));
        return -EPROTO;
    }
    const struct cancel_key_watch *w = map_find(m, c.pid, c.key, c.key_len);
    OPENSSL_cleanse(&c, sizeof(c));
    if (!w) {
        /* a relay that does not hold the client's session asks every agent: normal */
        log_msg(LOG_DEBUG, tunnel_id(t), 0, "cancel ignored: not a session of this agent");
        return 0;
    }
    rc = req_start(m, w, tunnel_id(t));
    if (rc < 0) {
        log_msg(LOG_WARN, tunnel_id(t), 0, "cancel dropped sid=%s route=%s: %s", w->sid, w->route,
                rc == -EBUSY ? "too many cancels in progress" : "out of memory");
        return 0;
    }
    log_msg(LOG_INFO, tunnel_id(t), 0, "cancel sent sid=%s route=%s postgres=%s", w->sid, w->route,
            w->target);
    return 0;
}

void cancel_key_map_stop(struct cancel_key_map *m)
{
    if (!m)
        return;
    for (struct cancel_key_req *q = m->reqs; q; q = q->next) {
        if (q->conn)
            conn_close(q->conn);
        req_finish(q);
    }
}

void cancel_key_map_free(struct cancel_key_map *m)
{
    if (!m)
        return;
    keytab_fini(&m->keys);
    free(m);
}
