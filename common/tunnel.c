#include "common/tunnel.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sqlstate.h"

/* DATA frames are cut so that header + body fill one 16 KiB TLS record exactly. */
#define DATA_CHUNK (PROTO_MAX_DATA - PROTO_HDR_SIZE)
/* The tunnel conn's backlog: above HIGH every stream's local reads pause until LOW. */
#define TUNNEL_LOW_WATER (256 * 1024)
#define TUNNEL_HIGH_WATER (1024 * 1024)
/* A local conn's backlog: credit is returned only for bytes it has handed to the kernel,
 * checked once a write leaves nothing queued in user space (the kernel's socket buffer still
 * keeps the pipe full). A higher mark would fire while bytes are still queued, and once those
 * left, no other drain would come to return their credit: with a window no larger than the
 * mark, a stream could stop for good. */
#define LOCAL_LOW_WATER 0
#define INITIAL_BUCKETS 64

enum stream_state { ST_OPENING, ST_ACCEPTED, ST_OPEN, ST_DONE };

struct tunnel_stream {
    struct tunnel *t;            /* NULL once done */
    struct tunnel_stream *hnext; /* hash chain */
    struct tunnel_stream *pnext; /* list of streams paused on the tunnel backlog */
    uint32_t id;
    enum stream_state state;
    struct conn *local;                   /* owned once bound */
    const struct tunnel_stream_ops *sops; /* the opener's (or acceptor's) callbacks */
    void *data;
    uint64_t send_credit;  /* DATA bytes we may still send */
    uint64_t recv_left;    /* DATA bytes the peer may still send */
    uint64_t recv_unacked; /* received, not yet credited back */
    uint64_t bytes_in, bytes_out;
    bool sent_close, got_close, end_on_close;
    bool local_paused; /* local reads stopped (credit or tunnel backlog) */
    /* by enum tunnel_dir, then in the order they were added; NULL when none */
    tunnel_filter_fn filter[2][TUNNEL_MAX_FILTERS];
    void *filter_ctx[2][TUNNEL_MAX_FILTERS];
    bool in_paused_list;
};

struct tunnel {
    uv_loop_t *loop;
    struct conn *conn;
    const struct tunnel_ops *ops;
    struct tunnel_limits lim;
    void *data;
    uint32_t id;
    uv_timer_t timer;
    int open_handles; /* conn + timer; freed when both closed */
    bool closing;
    bool keepalive;
    bool goaway_sent; /* drain: no new streams from this side */
    bool opener;      /* relay role: opens streams */
    char close_reason[256];
    uint64_t last_rx_ms;
    uint64_t ping_sent_ms;
    uint32_t next_stream_id; /* opener: next id to use */
    uint32_t max_stream_id;  /* highest id ever used on this tunnel */
    uint32_t nstreams;
    uint32_t nbuckets;
    struct tunnel_stream **buckets;
    struct tunnel_stream *paused; /* streams waiting for the tunnel to drain */
    struct proto_reader reader;
    uint8_t scratch[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
};

static const struct conn_ops tunnel_conn_ops;
static const struct conn_ops local_conn_ops;

/* ---- stream table -------------------------------------------------------------------- */

static uint32_t bucket_of(const struct tunnel *t, uint32_t id)
{
    return (id * 2654435761u) & (t->nbuckets - 1);
}

static struct tunnel_stream *stream_find(const struct tunnel *t, uint32_t id)
{
    for (struct tunnel_stream *s = t->buckets[bucket_of(t, id)]; s; s = s->hnext)
        if (s->id == id)
            return s;
    return NULL;
}

static int table_grow(struct tunnel *t)
{
    uint32_t n = t->nbuckets * 2;
    struct tunnel_stream **b = calloc(n, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        struct tunnel_stream *s = t->buckets[i], *next;
        for (; s; s = next) {
            next = s->hnext;
            uint32_t h = (s->id * 2654435761u) & (n - 1);
            s->hnext = b[h];
            b[h] = s;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

static int stream_insert(struct tunnel *t, struct tunnel_stream *s)
{
    if (t->nstreams >= t->nbuckets * 2 && table_grow(t) < 0)
        return -ENOMEM;
    uint32_t h = bucket_of(t, s->id);
    s->hnext = t->buckets[h];
    t->buckets[h] = s;
    t->nstreams++;
    return 0;
}

static void stream_remove(struct tunnel *t, struct tunnel_stream *s)
{
    struct tunnel_stream **pp = &t->buckets[bucket_of(t, s->id)];
    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            t->nstreams--;
            break;
        }
    }
    if (s->in_paused_list) {
        for (pp = &t->paused; *pp; pp = &(*pp)->pnext) {
            if (*pp == s) {
                *pp = s->pnext;
                break;
            }
        }
        s->in_paused_list = false;
    }
}

/* ---- sending ------------------------------------------------------------------------- */

int tunnel_send(struct tunnel *t, const uint8_t *frame, size_t len)
{
    if (t->closing)
        return -ECONNRESET;
    return conn_write(t->conn, frame, len);
}

static void send_error_frame(struct tunnel *t, uint8_t type, uint32_t stream, const char *code,
                             const char *msg)
{
    struct proto_error e;
    memset(&e, 0, sizeof(e));
    snprintf(e.code, sizeof(e.code), "%s", code);
    snprintf(e.message, sizeof(e.message), "%s", msg);
    int n = proto_encode_error(t->scratch, sizeof(t->scratch), type, stream, &e);
    if (n > 0)
        tunnel_send(t, t->scratch, (size_t)n);
}

static void send_close(struct tunnel_stream *s)
{
    uint8_t f[PROTO_HDR_SIZE];
    if (s->sent_close || !s->t)
        return;
    s->sent_close = true;
    int n = proto_encode_close(f, sizeof(f), s->id);
    if (n > 0)
        tunnel_send(s->t, f, (size_t)n);
}

static void run_filters(struct tunnel_stream *s, enum tunnel_dir dir, const uint8_t *data,
                        size_t len)
{
    for (int i = 0; i < TUNNEL_MAX_FILTERS; i++) {
        if (s->filter[dir][i] && !s->filter[dir][i](s->filter_ctx[dir][i], data, len))
            s->filter[dir][i] = NULL;
    }
}

/* Send len bytes as DATA frames; the caller has checked credit. */
static int send_data(struct tunnel_stream *s, const uint8_t *data, size_t len)
{
    struct tunnel *t = s->t;
    uint8_t hdr[PROTO_HDR_SIZE];
    while (len > 0) {
        size_t n = len < DATA_CHUNK ? len : DATA_CHUNK;
        run_filters(s, TUNNEL_TO_PEER, data, n);
        proto_encode_data_hdr(hdr, s->id, (uint32_t)n);
        if (tunnel_send(t, hdr, sizeof(hdr)) < 0 || tunnel_send(t, data, n) < 0)
            return -ECONNRESET;
        s->send_credit -= n;
        s->bytes_out += n;
        data += n;
        len -= n;
    }
    return 0;
}

/* Return credit for the bytes the local conn has handed on (see tunnel.h). */
static void credit_check(struct tunnel_stream *s)
{
    if (s->state != ST_OPEN || !s->local || !s->t || s->t->closing)
        return;
    uint64_t backlog = conn_backlog(s->local);
    uint64_t delivered = s->recv_unacked > backlog ? s->recv_unacked - backlog : 0;
    if (delivered == 0)
        return;
    if (delivered < s->t->lim.initial_window / 4 && s->recv_left > 0)
        return;
    uint8_t f[PROTO_HDR_SIZE + 4];
    int n = proto_encode_window(f, sizeof(f), s->id, (uint32_t)delivered);
    if (n > 0 && tunnel_send(s->t, f, (size_t)n) == 0) {
        s->recv_unacked -= delivered;
        s->recv_left += delivered;
    }
}

static void local_resume(struct tunnel_stream *s)
{
    if (!s->local_paused || !s->local || s->send_credit == 0 || s->sent_close)
        return;
    if (!conn_writable(s->t->conn))
        return;
    s->local_paused = false;
    conn_read_start(s->local);
}

/* ---- stream end ---------------------------------------------------------------------- */

static void stream_free(struct tunnel_stream *s)
{
    free(s);
}

/* The stream is over: tell the owner, release the local conn (aborted on error). */
/* The stream is done; its local conn is closed at once when err (unless end_local: flushed and
 * ended, as when both directions closed). */
static void stream_finish_local(struct tunnel_stream *s, const char *err, bool end_local)
{
    struct tunnel *t = s->t;
    if (s->state == ST_DONE)
        return;
    s->state = ST_DONE;
    stream_remove(t, s);
    if (s->sops->on_done)
        s->sops->on_done(s, err);
    s->t = NULL;
    if (s->local) {
        if (err && !end_local)
            conn_close(s->local);
        else
            conn_end(s->local);
        /* freed in the local conn's on_close */
    } else {
        stream_free(s);
    }
}

static void stream_finish(struct tunnel_stream *s, const char *err)
{
    stream_finish_local(s, err, false);
}

/* ---- local conn callbacks (the spliced PostgreSQL connection) ------------------------ */

static size_t local_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct tunnel_stream *s = conn_data(c);
    if (s->state != ST_OPEN || s->sent_close)
        return len; /* stream over: nothing more goes anywhere */
    struct tunnel *t = s->t;
    size_t n = len;
    if (n > s->send_credit)
        n = (size_t)s->send_credit;
    if (!conn_writable(t->conn)) {
        n = 0;
        if (!s->in_paused_list) {
            s->pnext = t->paused;
            t->paused = s;
            s->in_paused_list = true;
        }
    }
    if (n > 0 && send_data(s, data, n) < 0)
        return len;
    if (n < len)
        s->local_paused = true; /* the conn stops reading and keeps the rest */
    return n;
}

static void local_on_eof(struct conn *c)
{
    struct tunnel_stream *s = conn_data(c);
    if (s->state != ST_OPEN)
        return;
    send_close(s);
    if (s->got_close)
        stream_finish(s, NULL);
}

static void local_on_error(struct conn *c, int err, const char *reason)
{
    struct tunnel_stream *s = conn_data(c);
    char msg[PROTO_MSG_MAX];
    if (s->state == ST_DONE)
        return;
    snprintf(msg, sizeof(msg), "%s", reason ? reason : uv_strerror(err));
    if (s->t && !s->t->closing)
        send_error_frame(s->t, PROTO_RESET, s->id, SQLSTATE_CONNECTION_FAILURE, msg);
    stream_finish(s, msg);
}

static void local_on_drain(struct conn *c)
{
    credit_check(conn_data(c));
}

static void local_on_close(struct conn *c)
{
    struct tunnel_stream *s = conn_data(c);
    s->local = NULL;
    if (s->state != ST_DONE) {
        /* closed under us (an error found inside a conn_* call): the peer must know */
        if (s->t && !s->t->closing)
            send_error_frame(s->t, PROTO_RESET, s->id, SQLSTATE_CONNECTION_FAILURE,
                             "connection closed");
        stream_finish(s, "connection closed");
    } else {
        stream_free(s);
    }
}

static const struct conn_ops local_conn_ops = {
    .on_read = local_on_read,
    .on_eof = local_on_eof,
    .on_error = local_on_error,
    .on_drain = local_on_drain,
    .on_close = local_on_close,
};

/* ---- streams: public ----------------------------------------------------------------- */

static struct tunnel_stream *stream_new(struct tunnel *t, uint32_t id, enum stream_state st,
                                        const struct tunnel_stream_ops *sops, void *data)
{
    struct tunnel_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->t = t;
    s->id = id;
    s->state = st;
    s->sops = sops;
    s->data = data;
    s->send_credit = t->lim.initial_window;
    s->recv_left = t->lim.initial_window;
    if (stream_insert(t, s) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

struct tunnel_stream *tunnel_stream_open(struct tunnel *t, const struct proto_open *m,
                                         const struct tunnel_stream_ops *sops, void *data)
{
    if (t->closing || t->nstreams >= t->lim.max_streams || t->next_stream_id == UINT32_MAX)
        return NULL;
    uint32_t id = t->next_stream_id;
    int n = proto_encode_open(t->scratch, sizeof(t->scratch), id, m);
    if (n < 0)
        return NULL;
    struct tunnel_stream *s = stream_new(t, id, ST_OPENING, sops, data);
    if (!s)
        return NULL;
    t->next_stream_id++;
    t->max_stream_id = id;
    if (tunnel_send(t, t->scratch, (size_t)n) < 0) {
        stream_remove(t, s);
        free(s);
        return NULL;
    }
    return s;
}

struct tunnel_stream *tunnel_stream_accept(struct tunnel *t, uint32_t stream_id,
                                           const struct tunnel_stream_ops *sops, void *data)
{
    if (t->closing || stream_find(t, stream_id))
        return NULL;
    return stream_new(t, stream_id, ST_ACCEPTED, sops, data);
}

int tunnel_stream_accept_ok(struct tunnel_stream *s)
{
    uint8_t f[PROTO_HDR_SIZE + 8];
    if (s->state != ST_ACCEPTED)
        return -EINVAL;
    int n = proto_encode_open_ok(f, sizeof(f), s->id);
    if (n < 0 || tunnel_send(s->t, f, (size_t)n) < 0)
        return -ECONNRESET;
    s->state = ST_OPEN;
    return 0;
}

void tunnel_stream_fail(struct tunnel_stream *s, const char *code, const char *fmt, ...)
{
    char msg[PROTO_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s->state == ST_DONE)
        return;
    if (!s->t->closing)
        send_error_frame(s->t, PROTO_OPEN_FAIL, s->id, code, msg);
    stream_finish(s, msg);
}

int tunnel_stream_write(struct tunnel_stream *s, const uint8_t *data, size_t len)
{
    if (s->state != ST_OPEN || s->sent_close)
        return -EINVAL;
    if (len > s->send_credit)
        return -ENOBUFS;
    return send_data(s, data, len);
}

void tunnel_stream_bind(struct tunnel_stream *s, struct conn *local, bool end_on_close)
{
    s->local = local;
    s->end_on_close = end_on_close;
    conn_set_ops(local, &local_conn_ops, s);
    /* credit goes back as the local socket takes bytes: on_drain once the kernel took all
     * that was written (see credit_check) */
    conn_set_watermarks(local, LOCAL_LOW_WATER, 1);
    s->local_paused = true;
    local_resume(s);
    if (s->local_paused && !s->in_paused_list && s->send_credit > 0) {
        s->pnext = s->t->paused;
        s->t->paused = s;
        s->in_paused_list = true;
    }
}

void tunnel_stream_reset(struct tunnel_stream *s, const char *code, const char *msg)
{
    if (s->state == ST_DONE)
        return;
    if (!s->t->closing)
        send_error_frame(s->t, PROTO_RESET, s->id, code, msg);
    stream_finish(s, msg);
}

void tunnel_stream_end_local(struct tunnel_stream *s, const char *code, const char *msg,
                             const uint8_t *last, size_t last_len)
{
    if (s->state == ST_DONE)
        return;
    if (!s->t->closing)
        send_error_frame(s->t, PROTO_RESET, s->id, code, msg);
    if (s->local && last_len > 0)
        conn_write(s->local, last, last_len);
    stream_finish_local(s, msg, true);
}

int tunnel_stream_set_filter(struct tunnel_stream *s, enum tunnel_dir dir, tunnel_filter_fn fn,
                             void *ctx)
{
    for (int i = 0; i < TUNNEL_MAX_FILTERS; i++) {
        if (!s->filter[dir][i]) {
            s->filter[dir][i] = fn;
            s->filter_ctx[dir][i] = ctx;
            return 0;
        }
    }
    return -ENOSPC;
}

uint32_t tunnel_stream_id(const struct tunnel_stream *s)
{
    return s->id;
}
struct tunnel *tunnel_stream_tunnel(const struct tunnel_stream *s)
{
    return s->t;
}
void *tunnel_stream_data(const struct tunnel_stream *s)
{
    return s->data;
}
void tunnel_stream_set_data(struct tunnel_stream *s, void *data)
{
    s->data = data;
}
uint64_t tunnel_stream_bytes_out(const struct tunnel_stream *s)
{
    return s->bytes_out;
}
uint64_t tunnel_stream_bytes_in(const struct tunnel_stream *s)
{
    return s->bytes_in;
}

/* ---- incoming frames ----------------------------------------------------------------- */

/* A protocol violation: GOAWAY 08P01 with the reason, then close (PROTOCOL.md section 9).
 * Returns -EPROTO for the frame handler to return. */
static int violation(struct tunnel *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int violation(struct tunnel *t, const char *fmt, ...)
{
    char msg[PROTO_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "%s", msg);
    return -EPROTO;
}

/* A frame for a stream we no longer have: fine if the id was used (the stream ended while
 * the peer's frames were in flight), a protocol violation otherwise. */
static int unknown_stream(struct tunnel *t, uint32_t id, const char *what)
{
    if (id != 0 && id <= t->max_stream_id)
        return 0;
    return violation(t, "%s on unknown stream %u", what, id);
}

/* DATA: bytes for the local conn, within the window we granted. */
static int reader_on_data(void *ctx, uint32_t id, const uint8_t *data, size_t len)
{
    struct tunnel *t = ctx;
    struct tunnel_stream *s = stream_find(t, id);
    if (!s)
        return unknown_stream(t, id, "DATA");
    if (s->state != ST_OPEN || s->got_close || !s->local)
        return violation(t, "DATA on stream %u that is not open for it", id);
    if (len > s->recv_left)
        return violation(t, "stream %u: DATA beyond the flow-control window", id);
    s->recv_left -= len;
    s->recv_unacked += len;
    s->bytes_in += len;
    run_filters(s, TUNNEL_TO_LOCAL, data, len);
    conn_write(s->local, data, len);
    credit_check(s);
    return t->closing ? -ECONNRESET : 0;
}

/* OPEN (agent): the relay asks for a new stream; the owner accepts it from on_open, or the
 * tunnel refuses it with OPEN_FAIL. */
static int on_open(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    struct proto_open m;
    int rc;

    if (t->opener || !t->ops->on_open)
        return violation(t, "OPEN sent to the relay");
    if (h->stream_id <= t->max_stream_id)
        return violation(t, "OPEN reuses stream id %u", h->stream_id);
    t->max_stream_id = h->stream_id;
    rc = proto_decode_open(body, h->length, &m);
    if (rc < 0)
        return tunnel_fail_decode(t, "OPEN", rc);
    if (t->goaway_sent) {
        send_error_frame(t, PROTO_OPEN_FAIL, h->stream_id, SQLSTATE_CANNOT_CONNECT_NOW,
                         "agent is shutting down");
        return 0;
    }
    if (t->nstreams >= t->lim.max_streams) {
        send_error_frame(t, PROTO_OPEN_FAIL, h->stream_id, SQLSTATE_TOO_MANY_CONNECTIONS,
                         "too many streams on this tunnel");
        return 0;
    }
    if (t->ops->on_open(t, h->stream_id, &m) < 0 && !stream_find(t, h->stream_id) && !t->closing)
        send_error_frame(t, PROTO_OPEN_FAIL, h->stream_id, SQLSTATE_CANNOT_CONNECT_NOW,
                         "agent does not serve this route");
    return t->closing ? -ECONNRESET : 0;
}

/* OPEN_OK and OPEN_FAIL answer an OPEN of ours, once. */
static bool open_result_expected(const struct tunnel *t, const struct tunnel_stream *s)
{
    return t->opener && s->state == ST_OPENING;
}

/* OPEN_OK (relay): the agent reached PostgreSQL; the stream is open. */
static int on_open_ok(struct tunnel *t, struct tunnel_stream *s, const struct proto_hdr *h,
                      const uint8_t *body)
{
    int rc;

    if (!open_result_expected(t, s))
        return violation(t, "unexpected OPEN_OK on stream %u", s->id);
    rc = proto_decode_open_ok(body, h->length);
    if (rc < 0)
        return tunnel_fail_decode(t, "OPEN_OK", rc);
    s->state = ST_OPEN;
    if (s->sops->on_open_result)
        s->sops->on_open_result(s, NULL);
    return 0;
}

/* OPEN_FAIL (relay): the agent refused the stream; it is over. */
static int on_open_fail(struct tunnel *t, struct tunnel_stream *s, const struct proto_hdr *h,
                        const uint8_t *body)
{
    struct proto_error e;
    int rc;

    if (!open_result_expected(t, s))
        return violation(t, "unexpected OPEN_FAIL on stream %u", s->id);
    rc = proto_decode_error(body, h->length, &e);
    if (rc < 0)
        return tunnel_fail_decode(t, "OPEN_FAIL", rc);
    if (s->sops->on_open_result)
        s->sops->on_open_result(s, &e);
    stream_finish(s, e.message);
    return 0;
}

/* WINDOW: the peer's local side took bytes; we may send that many more. */
static int on_window(struct tunnel *t, struct tunnel_stream *s, const struct proto_hdr *h,
                     const uint8_t *body)
{
    uint32_t inc;
    int rc = proto_decode_window(body, h->length, &inc);

    if (rc < 0)
        return tunnel_fail_decode(t, "WINDOW", rc);
    if (s->send_credit + inc > PROTO_MAX_WINDOW)
        return violation(t, "stream %u: bad WINDOW increment", s->id);
    s->send_credit += inc;
    local_resume(s);
    return 0;
}

/* CLOSE: the peer sends no more on this stream; pass the half-close on to the local conn
 * (or end it, end_on_close), and finish once both directions are closed. */
static int on_close(struct tunnel *t, struct tunnel_stream *s)
{
    if (s->got_close || s->state != ST_OPEN)
        return violation(t, "unexpected CLOSE on stream %u", s->id);
    s->got_close = true;
    if (s->end_on_close) {
        send_close(s);
        stream_finish(s, NULL);
        return 0;
    }
    if (s->local)
        conn_shutdown(s->local);
    if (s->sent_close)
        stream_finish(s, NULL);
    return 0;
}

/* RESET: the peer aborted the stream (while opening, that answers our OPEN). */
static int on_reset(struct tunnel *t, struct tunnel_stream *s, const struct proto_hdr *h,
                    const uint8_t *body)
{
    char msg[PROTO_MSG_MAX + 32];
    struct proto_error e;
    int rc;

    rc = proto_decode_error(body, h->length, &e);
    if (rc < 0)
        return tunnel_fail_decode(t, "RESET", rc);
    snprintf(msg, sizeof(msg), "reset by peer: %s", e.message);
    if (s->state == ST_OPENING && s->sops->on_open_result)
        s->sops->on_open_result(s, &e);
    stream_finish(s, msg);
    return 0;
}

/* Frames on a stream other than DATA: one handler per type. */
static int on_stream_frame(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    struct tunnel_stream *s;

    if (h->type == PROTO_OPEN)
        return on_open(t, h, body);
    s = stream_find(t, h->stream_id);
    if (!s)
        return unknown_stream(t, h->stream_id, proto_type_name(h->type));
    switch (h->type) {
    case PROTO_OPEN_OK:
        return on_open_ok(t, s, h, body);
    case PROTO_OPEN_FAIL:
        return on_open_fail(t, s, h, body);
    case PROTO_WINDOW:
        return on_window(t, s, h, body);
    case PROTO_CLOSE:
        return on_close(t, s);
    case PROTO_RESET:
        return on_reset(t, s, h, body);
    default:
        return violation(t, "unexpected %s frame", proto_type_name(h->type));
    }
}

static int reader_on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    struct tunnel *t = ctx;
    uint64_t opaque;

    if (h->stream_id != 0)
        return on_stream_frame(t, h, body);
    switch (h->type) {
    case PROTO_PING:
        /* Before HELLO/WELCOME a PING is ignored, not answered: a peer that never says HELLO
         * cannot keep a tunnel alive with PINGs (the relay's hello_timeout runs regardless). */
        if (!t->keepalive)
            return 0;
        if (proto_decode_ping(body, h->length, &opaque) == 0) {
            int n = proto_encode_ping(t->scratch, sizeof(t->scratch), PROTO_PONG, opaque);
            if (n > 0)
                tunnel_send(t, t->scratch, (size_t)n);
        }
        return 0;
    case PROTO_PONG:
        return 0;
    default:
        if (!t->ops->on_control)
            return 0;
        return t->ops->on_control(t, h, body);
    }
}

static const struct proto_reader_ops reader_ops = {
    .on_data = reader_on_data,
    .on_frame = reader_on_frame,
};

/* ---- tunnel conn callbacks ----------------------------------------------------------- */

static size_t tunnel_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct tunnel *t = conn_data(c);
    if (t->closing)
        return len;
    t->last_rx_ms = uv_now(t->loop);
    int rc = proto_reader_feed(&t->reader, data, len, &reader_ops, t);
    if (rc < 0 && !t->closing)
        tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "protocol error: %s", proto_strerror(rc));
    return len;
}

static void tunnel_on_handshake(struct conn *c)
{
    struct tunnel *t = conn_data(c);

    t->last_rx_ms = uv_now(t->loop);
    conn_tls_keep_buffers(c); /* one per agent and relay, busy: no allocation per record */
    if (t->ops->on_up)
        t->ops->on_up(t);
}

static void tunnel_on_eof(struct conn *c)
{
    struct tunnel *t = conn_data(c);
    tunnel_close(t, t->close_reason[0] ? t->close_reason : "peer closed the tunnel");
}

static void tunnel_on_error(struct conn *c, int err, const char *reason)
{
    struct tunnel *t = conn_data(c);
    tunnel_close(t, reason ? reason : uv_strerror(err));
}

static void tunnel_on_drain(struct conn *c)
{
    struct tunnel *t = conn_data(c);
    struct tunnel_stream *list = t->paused;
    t->paused = NULL;
    while (list && !t->closing) {
        struct tunnel_stream *s = list;
        list = s->pnext;
        s->in_paused_list = false;
        local_resume(s);
    }
    /* a resume may have refilled the backlog: whatever is left waits for the next drain */
    while (list) {
        struct tunnel_stream *s = list;
        list = s->pnext;
        s->pnext = t->paused;
        t->paused = s;
    }
}

static void tunnel_maybe_free(struct tunnel *t)
{
    if (--t->open_handles > 0)
        return;
    if (t->ops->on_tunnel_done)
        t->ops->on_tunnel_done(t, t->close_reason);
    free(t->buckets);
    free(t);
}

static void tunnel_on_close(struct conn *c)
{
    tunnel_maybe_free(conn_data(c));
}

static void timer_on_close(uv_handle_t *h)
{
    tunnel_maybe_free(h->data);
}

static const struct conn_ops tunnel_conn_ops = {
    .on_handshake = tunnel_on_handshake,
    .on_read = tunnel_on_read,
    .on_eof = tunnel_on_eof,
    .on_error = tunnel_on_error,
    .on_drain = tunnel_on_drain,
    .on_close = tunnel_on_close,
};

static void keepalive_tick(uv_timer_t *timer)
{
    struct tunnel *t = timer->data;
    uint64_t now = uv_now(t->loop);
    if (t->closing)
        return;
    if (now - t->last_rx_ms >= t->lim.dead_timeout_ms) {
        char why[96];
        snprintf(why, sizeof(why), "no frame received for %llu ms",
                 (unsigned long long)(now - t->last_rx_ms));
        tunnel_close(t, why);
        return;
    }
    if (t->keepalive && now - t->ping_sent_ms >= t->lim.ping_interval_ms) {
        int n = proto_encode_ping(t->scratch, sizeof(t->scratch), PROTO_PING, now);
        if (n > 0 && tunnel_send(t, t->scratch, (size_t)n) == 0)
            t->ping_sent_ms = now;
    }
}

/* ---- tunnel: public ------------------------------------------------------------------ */

struct tunnel *tunnel_new(uv_loop_t *loop, struct conn *conn, const struct tunnel_ops *ops,
                          const struct tunnel_limits *lim, uint32_t id, void *data)
{
    struct tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        goto fail;
    t->buckets = calloc(INITIAL_BUCKETS, sizeof(*t->buckets));
    if (!t->buckets)
        goto fail;
    t->nbuckets = INITIAL_BUCKETS;
    t->loop = loop;
    t->conn = conn;
    t->ops = ops;
    t->lim = *lim;
    t->data = data;
    t->id = id;
    t->opener = ops->on_open == NULL;
    t->next_stream_id = 1;
    t->last_rx_ms = uv_now(loop);
    proto_reader_init(&t->reader);
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->open_handles = 2;
    conn_set_ops(conn, &tunnel_conn_ops, t);
    conn_set_watermarks(conn, TUNNEL_LOW_WATER, TUNNEL_HIGH_WATER);
    /* The tick checks for a dead peer (late by at most one tick: dead_timeout / 8) and sends
     * a PING whenever ping_interval has passed since the last. */
    uint64_t tick = lim->dead_timeout_ms / 8;
    if (tick > lim->ping_interval_ms)
        tick = lim->ping_interval_ms;
    if (tick == 0)
        tick = 1;
    uv_timer_start(&t->timer, keepalive_tick, tick, tick);
    return t;
fail:
    if (t)
        free(t->buckets);
    free(t);
    conn_close(conn);
    return NULL;
}

void tunnel_start_keepalive(struct tunnel *t)
{
    t->keepalive = true;
}

void *tunnel_data(const struct tunnel *t)
{
    return t->data;
}

void tunnel_set_data(struct tunnel *t, void *data)
{
    t->data = data;
}
uint32_t tunnel_id(const struct tunnel *t)
{
    return t->id;
}
struct conn *tunnel_conn(const struct tunnel *t)
{
    return t->conn;
}
int tunnel_set_initial_window(struct tunnel *t, uint32_t window)
{
    if (t->nstreams || t->max_stream_id || window == 0 || window > PROTO_MAX_WINDOW)
        return -EINVAL;
    t->lim.initial_window = window;
    return 0;
}

uint64_t tunnel_idle_ms(const struct tunnel *t)
{
    return uv_now(t->loop) - t->last_rx_ms;
}

uint32_t tunnel_nstreams(const struct tunnel *t)
{
    return t->nstreams;
}

bool tunnel_closing(const struct tunnel *t)
{
    return t->closing;
}

static void finish_all_streams(struct tunnel *t, const char *reason)
{
    for (uint32_t i = 0; i < t->nbuckets; i++)
        while (t->buckets[i])
            stream_finish(t->buckets[i], reason);
}

static void tunnel_teardown(struct tunnel *t, const char *reason, bool flush)
{
    if (t->closing)
        return;
    if (!t->close_reason[0])
        snprintf(t->close_reason, sizeof(t->close_reason), "%s", reason);
    /* closing before the streams end: their sops->on_done may look (tunnel_closing, no new
     * stream on this tunnel) or close the tunnel again, which must then be a no-op */
    t->closing = true;
    finish_all_streams(t, t->close_reason);
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, timer_on_close);
    if (flush)
        conn_end(t->conn);
    else
        conn_close(t->conn);
}

void tunnel_goaway(struct tunnel *t, const char *msg)
{
    struct proto_goaway g;
    if (t->closing || t->goaway_sent)
        return;
    memset(&g, 0, sizeof(g));
    snprintf(g.code, sizeof(g.code), "%s", SQLSTATE_SUCCESSFUL_COMPLETION);
    snprintf(g.message, sizeof(g.message), "%s", msg);
    g.last_stream_id = t->max_stream_id;
    int n = proto_encode_goaway(t->scratch, sizeof(t->scratch), &g);
    if (n > 0 && tunnel_send(t, t->scratch, (size_t)n) == 0)
        t->goaway_sent = true;
}

void tunnel_fail(struct tunnel *t, const char *code, const char *fmt, ...)
{
    struct proto_goaway g;
    va_list ap;
    if (t->closing)
        return;
    memset(&g, 0, sizeof(g));
    va_start(ap, fmt);
    vsnprintf(g.message, sizeof(g.message), fmt, ap);
    va_end(ap);
    snprintf(g.code, sizeof(g.code), "%s", code);
    g.last_stream_id = t->max_stream_id;
    int n = proto_encode_goaway(t->scratch, sizeof(t->scratch), &g);
    if (n > 0)
        tunnel_send(t, t->scratch, (size_t)n);
    snprintf(t->close_reason, sizeof(t->close_reason), "%s (%s)", g.message, code);
    tunnel_teardown(t, t->close_reason, true);
}

int tunnel_fail_decode(struct tunnel *t, const char *what, int rc)
{
    if (proto_is_violation(rc))
        tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "bad %s: %s", what, proto_strerror(rc));
    else
        tunnel_fail(t, sqlstate_of_failure(rc), "could not decode %s: %s", what,
                    proto_strerror(rc));
    return -EPROTO;
}

void tunnel_close(struct tunnel *t, const char *reason)
{
    tunnel_teardown(t, reason, false);
}
