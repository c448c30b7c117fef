/*
 * cancel_key.c — BackendKeyData rewriting and real CancelRequests (see cancel_key.h).
 *
 * The filter parses the server's message stream (type byte, int32 length, body) from the
 * start of the session, in whatever pieces the bytes arrive:
 *
 *   HEADER (5 bytes) --'K'--> KEY BODY: each byte saved as real, replaced by the fake
 *      ^    |  \                 | body complete: register (fake -> real) in the map
 *      |    |   \--other--> SKIP BODY
 *      +----+-------------------+
 *      'Z' (ReadyForQuery) or a malformed length: stop filtering (return false)
 *
 * The fake pid and key are drawn when the 'K' header is seen, so every byte can be replaced
 * as it passes; nothing is buffered and nothing is delayed. A 'K' whose length is not that of
 * a 4..256-byte key is zeroed rather than passed on: the real key must never reach a client.
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
#include <openssl/rand.h>

#include "common/log.h"
#include "common/pgwire.h"
#include "common/tls.h"
#include "proto/proto.h"

#define BE_MSG_HDR 5                            /* type byte + int32 length */
#define KEY_WIRE_MAX (4 + PROTO_CANCEL_KEY_MAX) /* pid + longest key */

struct cancel_key_req;

struct cancel_key_map {
    uv_loop_t *loop;
    struct conn_loop *cl;
    uint64_t timeout_ms;
    uint16_t name_hash;
    size_t nbuckets; /* a power of 2 */
    size_t nkeys;
    struct cancel_key_watch **buckets;
    struct cancel_key_req *reqs; /* outgoing cancel connections (doubly linked) */
    size_t nreqs;
};

struct cancel_key_watch {
    struct cancel_key_map *m;
    struct cancel_key_watch *hnext; /* bucket chain, while registered */
    bool registered;
    /* parser */
    uint8_t hdr[BE_MSG_HDR];
    uint8_t hdr_have;
    uint32_t body_len, body_off;
    bool in_key; /* the body being read is BackendKeyData */
    bool key_ok; /* ... with a key we rewrite (else it is zeroed) */
    /* the key, as on the wire: pid (big-endian) then key bytes */
    uint32_t fake_pid, real_pid;
    uint32_t key_len;
    uint8_t fake[KEY_WIRE_MAX];
    uint8_t real[KEY_WIRE_MAX];
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

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- the map --------------------------------------------------------------------------- */

struct cancel_key_map *cancel_key_map_new(uv_loop_t *loop, struct conn_loop *cl,
                                          const char *agent_name, uint64_t timeout_ms)
{
    struct cancel_key_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->cl = cl;
    m->timeout_ms = timeout_ms;
    m->name_hash = proto_cancel_name_hash(agent_name);
    return m;
}

uint16_t cancel_key_map_name_hash(const struct cancel_key_map *m)
{
    return m->name_hash;
}

size_t cancel_key_map_size(const struct cancel_key_map *m)
{
    return m->nkeys;
}

static size_t bucket_of(const struct cancel_key_map *m, uint32_t pid)
{
    /* the low 16 bits are random; the high ones are the same for every key of this agent */
    return (pid * 2654435761u) & (m->nbuckets - 1);
}

/* Grow at load 1 so that chains stay short; a failed grow only costs speed. */
static void map_grow(struct cancel_key_map *m)
{
    size_t n = m->nbuckets * 2;
    struct cancel_key_watch **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    struct cancel_key_watch **old = m->buckets;
    size_t oldn = m->nbuckets;
    m->buckets = b;
    m->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (struct cancel_key_watch *w = old[i], *next; w; w = next) {
            next = w->hnext;
            size_t k = bucket_of(m, w->fake_pid);
            w->hnext = b[k];
            b[k] = w;
        }
    }
    free(old);
}

static void map_remove(struct cancel_key_watch *w)
{
    struct cancel_key_map *m = w->m;
    if (!w->registered)
        return;
    for (struct cancel_key_watch **pp = &m->buckets[bucket_of(m, w->fake_pid)]; *pp;
         pp = &(*pp)->hnext) {
        if (*pp == w) {
            *pp = w->hnext;
            break;
        }
    }
    w->registered = false;
    w->hnext = NULL;
    m->nkeys--;
}

static void map_insert(struct cancel_key_watch *w)
{
    struct cancel_key_map *m = w->m;
    if (m->nkeys >= m->nbuckets)
        map_grow(m);
    size_t k = bucket_of(m, w->fake_pid);
    w->hnext = m->buckets[k];
    m->buckets[k] = w;
    w->registered = true;
    m->nkeys++;
}

static struct cancel_key_watch *map_find(const struct cancel_key_map *m, uint32_t pid,
                                         const uint8_t *key, size_t key_len)
{
    struct cancel_key_watch *found = NULL;
    /* Every entry with this pid is compared in full, in constant time per key, so that the
     * time taken tells nothing about how much of a guessed key was right. */
    for (struct cancel_key_watch *w = m->buckets[bucket_of(m, pid)]; w; w = w->hnext) {
        if (w->fake_pid == pid && w->key_len == key_len &&
            CRYPTO_memcmp(w->fake + 4, key, key_len) == 0)
            found = w;
    }
    return found;
}

bool cancel_key_lookup(const struct cancel_key_map *m, uint32_t pid, const uint8_t *key,
                       size_t key_len, uint32_t *real_pid)
{
    const struct cancel_key_watch *w = map_find(m, pid, key, key_len);
    if (w && real_pid)
        *real_pid = w->real_pid;
    return w != NULL;
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
    w->m = m;
    w->pipe = pipe;
    snprintf(w->target, sizeof(w->target), "%s", target);
    snprintf(w->route, sizeof(w->route), "%s", route ? route : "");
    snprintf(w->sid, sizeof(w->sid), "%s", sid ? sid : "");
    if (!pipe && (!peer || parse_peer(peer, &w->addr) < 0)) {
        free(w);
        return NULL;
    }
    return w;
}

void cancel_key_watch_free(struct cancel_key_watch *w)
{
    if (!w)
        return;
    map_remove(w);
    upstream_tls_release(&w->up);
    OPENSSL_cleanse(w, sizeof(*w));
    free(w);
}

/* A 'K' header was read: draw the fake key now, so that every byte can be swapped as it
 * passes. */
static void key_begin(struct cancel_key_watch *w)
{
    struct cancel_key_map *m = w->m;
    uint16_t rnd;

    w->in_key = true;
    w->key_ok = false;
    map_remove(w); /* a second BackendKeyData replaces the first */
    if (w->body_len < 4 + PROTO_CANCEL_KEY_MIN || w->body_len > KEY_WIRE_MAX) {
        log_warn("session sid=%s: BackendKeyData of %u bytes is not a 4..%d byte key; "
                 "zeroed (cancel will not work for this session)",
                 w->sid, (unsigned)w->body_len, PROTO_CANCEL_KEY_MAX);
        return;
    }
    w->key_len = w->body_len - 4;
    /* (pid, key) must be unique in the map; with 16 + 32 random bits a retry is rare */
    for (int tries = 0; tries < 8; tries++) {
        if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1 ||
            RAND_bytes(w->fake + 4, (int)w->key_len) != 1) {
            log_error("session sid=%s: no random bytes for the cancel key; BackendKeyData "
                      "zeroed (cancel will not work for this session)",
                      w->sid);
            return;
        }
        w->fake_pid = proto_cancel_fake_pid(m->name_hash, rnd);
        if (!map_find(m, w->fake_pid, w->fake + 4, w->key_len)) {
            put_be32(w->fake, w->fake_pid);
            w->key_ok = true;
            return;
        }
    }
    log_error("session sid=%s: could not draw a unique cancel key; BackendKeyData zeroed", w->sid);
}

static void key_end(struct cancel_key_watch *w)
{
    w->in_key = false;
    if (!w->key_ok)
        return;
    w->real_pid = get_be32(w->real);
    map_insert(w);
    log_msg(LOG_DEBUG, 0, 0, "session sid=%s: cancel key rewritten", w->sid);
}

bool cancel_key_filter(void *ctx, uint8_t *data, size_t len)
{
    struct cancel_key_watch *w = ctx;
    size_t i = 0;

    while (i < len) {
        if (w->hdr_have < BE_MSG_HDR) {
            /* ReadyForQuery: startup is over; nothing later carries a key */
            if (w->hdr_have == 0 && data[i] == 'Z')
                return false;
            w->hdr[w->hdr_have++] = data[i++];
            if (w->hdr_have < BE_MSG_HDR)
                continue;
            uint32_t mlen = get_be32(w->hdr + 1);
            if (mlen < 4) {
                /* not PostgreSQL's protocol: the client will fail on it anyway */
                log_warn("session sid=%s: malformed server message; cancel key not tracked",
                         w->sid);
                return false;
            }
            w->body_len = mlen - 4;
            w->body_off = 0;
            if (w->hdr[0] == 'K')
                key_begin(w);
            if (w->body_len == 0) {
                w->hdr_have = 0;
                if (w->in_key)
                    key_end(w);
            }
            continue;
        }
        size_t n = w->body_len - w->body_off;
        if (n > len - i)
            n = len - i;
        if (w->in_key) {
            for (size_t j = 0; j < n; j++) {
                uint32_t off = w->body_off + (uint32_t)j;
                if (w->key_ok) {
                    w->real[off] = data[i + j];
                    data[i + j] = w->fake[off];
                } else {
                    data[i + j] = 0;
                }
            }
        }
        i += n;
        w->body_off += (uint32_t)n;
        if (w->body_off == w->body_len) {
            w->hdr_have = 0;
            if (w->in_key)
                key_end(w);
        }
    }
    return true;
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
        tunnel_stream_reset(s, "53200", "agent could not track the session's cancel key");
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
    q->pkt_len = 12 + w->key_len;
    put_be32(q->pkt, (uint32_t)q->pkt_len);
    put_be32(q->pkt + 4, PGWIRE_CANCEL_REQUEST);
    memcpy(q->pkt + 8, w->real, 4 + w->key_len);
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
        tunnel_fail(t, "08P01", "bad CANCEL: %s", proto_strerror(rc));
        return -EPROTO;
    }
    const struct cancel_key_watch *w = map_find(m, c.pid, c.key, c.key_len);
    OPENSSL_cleanse(&c, sizeof(c));
    if (!w) {
        log_msg(LOG_INFO, tunnel_id(t), 0, "cancel dropped: unknown key");
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
    free(m->buckets);
    free(m);
}
