/*
 * test_tunnel — common/tunnel.c on a real libuv loop, in isolation from the daemons.
 *
 * A relay-side tunnel (opens streams) and an agent-side tunnel (accepts them) talk through a
 * tap, and every stream is bound to a real local conn whose far end the test drives:
 *
 *   far client <-> local <-> relay tunnel <-> tap <-> agent tunnel <-> local <-> far server
 *
 * Every link is a Unix socket in a mkdtemp directory (small kernel buffers, so back-pressure
 * shows after a few hundred KiB). The tap forwards whole frames (DATA re-cut at read
 * boundaries, which the protocol allows) and checks on every frame the flow-control rules of
 * both directions: a sender never has more DATA out than the window plus the credit it was
 * given (credit never negative), a receiver never returns more credit than it received (credit
 * never above the window). Tests also hold one direction of the tap (the tunnel's writes back
 * up) and inject frames through it.
 *
 * Every wait runs the loop against a deadline (RUN_UNTIL) or until nothing moves any more
 * (run_idle); every test ends with all handles closed and uv_loop_close() == 0.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/conn.h"
#include "common/tunnel.h"
#include "proto/proto.h"

#define KIB 1024u
#define MIB (1024u * 1024u)
#define DEADLINE_MS 10000
#define MAX_IDS 64
#define MAX_STREAMS 16
#define MAX_FARS 32
#define MAX_PENDING 8
/* tunnel.c: above this backlog the tunnel pauses every stream's local reads */
#define TUNNEL_HIGH_WATER MIB

enum side { RELAY = 0, AGENT = 1 };

struct tctx;

/* The test's end of a local conn: the PostgreSQL client (relay side) or server (agent side). */
struct far {
    struct tctx *x;
    struct conn *c;
    uint8_t tx_seed, rx_seed; /* byte patterns of each direction */
    size_t tx, rx;
    bool hold; /* not reading */
    bool eof, error, closed;
};

struct tstream {
    struct tctx *x;
    enum side side;
    struct tunnel_stream *s; /* NULL once done */
    uint32_t id;
    int results, dones;
    bool opened; /* relay: OPEN_OK arrived */
    char fail_code[8];
    char err[640]; /* on_stream_done's err, "" when clean */
    bool clean;
    struct conn *local; /* bound local conn, until done */
    struct far *far;
    bool far_hold; /* the far end starts without reading */
};

/* One direction of the tap: frames read from `in` (written by one tunnel) go to `out`. */
struct tap_dir {
    struct tctx *x;
    enum side from;
    struct conn *in, *out;
    struct proto_reader rd;
    bool hold;
    uint64_t data[MAX_IDS], window[MAX_IDS];
    int frames[PROTO_TYPE_MAX + 1];
    char goaway_code[8];
};

struct pending {
    const struct conn_ops *ops;
    void *data;
    void (*accepted)(struct tctx *x, struct conn *c, void *arg);
};

struct tctx {
    uv_loop_t loop;
    struct conn_loop *cl;
    uv_pipe_t lsn;
    uv_timer_t deadline;
    bool timed_out;
    char path[128];
    struct pending pend[MAX_PENDING];
    int pend_head, pend_tail;
    uint32_t window;
    struct tunnel *t[2];
    int tunnel_dones[2];
    char reason[2][300];
    int goaways[2]; /* GOAWAY frames each tunnel's on_control saw */
    char goaway_code[2][8];
    struct tap_dir tap[2]; /* tap[RELAY]: relay -> agent; tap[AGENT]: agent -> relay */
    int tap_closed;
    struct tstream st[MAX_STREAMS];
    int nst;
    struct far far[MAX_FARS];
    int nfar;
    int opens; /* agent on_open calls */
    /* called from on_stream_done (after the bookkeeping) */
    void (*done_hook)(struct tstream *ts, const char *err);
    int hook_opens; /* streams opened from done_hook */
    bool closing_seen_in_done;
    bool tearing_down;
    /* agent behaviour */
    bool agent_defer;     /* accept, answer later */
    bool agent_far_hold;  /* the PostgreSQL side starts without reading */
    bool end_on_close[2]; /* per side, for tunnel_stream_bind */
};

static char g_dir[64];
static int g_seq;

static const struct conn_ops no_ops;

/* ---- byte patterns ------------------------------------------------------------------------ */

static uint8_t pat(uint8_t seed, size_t i)
{
    return (uint8_t)(((uint32_t)i * 2654435761u) >> 24) ^ seed;
}

/* ---- the loop ----------------------------------------------------------------------------- */

static void deadline_cb(uv_timer_t *h)
{
    struct tctx *x = h->data;
    x->timed_out = true;
    uv_stop(&x->loop);
}

/* Run the loop until cond holds, at most DEADLINE_MS. */
#define RUN_UNTIL(x, cond)                                                                         \
    do {                                                                                           \
        (x)->timed_out = false;                                                                    \
        uv_update_time(&(x)->loop);                                                                \
        uv_timer_start(&(x)->deadline, deadline_cb, DEADLINE_MS, 0);                               \
        while (!(cond) && !(x)->timed_out)                                                         \
            uv_run(&(x)->loop, UV_RUN_ONCE);                                                       \
        uv_timer_stop(&(x)->deadline);                                                             \
        if (!(cond))                                                                               \
            fail_msg("%s:%d: timed out waiting for %s", __FILE__, __LINE__, #cond);                \
    } while (0)

static void mix(uint64_t *h, uint64_t v)
{
    *h = (*h ^ v) * 0x100000001b3ull;
}

/* Everything that moves when anything moves. */
static uint64_t progress(struct tctx *x)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < MAX_IDS; i++) {
            mix(&h, x->tap[d].data[i]);
            mix(&h, x->tap[d].window[i]);
        }
        for (int k = 0; k <= PROTO_TYPE_MAX; k++)
            mix(&h, (uint64_t)x->tap[d].frames[k]);
        if (x->tap[d].in)
            mix(&h, conn_backlog(x->tap[d].in));
        if (x->t[d])
            mix(&h, conn_backlog(tunnel_conn(x->t[d])));
    }
    for (int i = 0; i < x->nfar; i++) {
        mix(&h, x->far[i].rx);
        if (x->far[i].c)
            mix(&h, conn_backlog(x->far[i].c));
    }
    for (int i = 0; i < x->nst; i++) {
        struct tstream *ts = &x->st[i];
        mix(&h, (uint64_t)ts->dones);
        if (ts->s) {
            mix(&h, tunnel_stream_bytes_in(ts->s));
            mix(&h, tunnel_stream_bytes_out(ts->s));
        }
        if (ts->local)
            mix(&h, conn_backlog(ts->local));
    }
    return h;
}

/* Run without blocking until nothing has moved for a number of turns in a row (every link is
 * a Unix socket: a write is readable at the other end at once, so a quiet turn is quiet). */
static void run_idle(struct tctx *x)
{
    uint64_t start = uv_hrtime(), last = progress(x);
    int still = 0;
    while (still < 20) {
        uv_run(&x->loop, UV_RUN_NOWAIT);
        uint64_t p = progress(x);
        if (p == last) {
            still++;
        } else {
            still = 0;
            last = p;
        }
        if (uv_hrtime() - start > (uint64_t)DEADLINE_MS * 1000000u)
            fail_msg("the loop never went quiet");
    }
}

/* ---- the listener: every conn made here is accepted in connect order ---------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct tctx *x = server->data;
    assert_int_equal(status, 0);
    assert_true(x->pend_head != x->pend_tail);
    struct pending p = x->pend[x->pend_head++ % MAX_PENDING];
    struct conn *c = conn_new(x->cl, p.ops, p.data, true);
    assert_non_null(c);
    assert_int_equal(conn_accept(c, server), 0);
    p.accepted(x, c, p.data);
}

/* A new conn connecting to the listener; the accepted end gets ops/data, then `accepted`. */
static struct conn *connect_pair(struct tctx *x, const struct conn_ops *ops, void *data,
                                 const struct conn_ops *peer_ops, void *peer_data,
                                 void (*accepted)(struct tctx *, struct conn *, void *))
{
    struct conn *c = conn_new(x->cl, ops, data, true);
    assert_non_null(c);
    assert_true(x->pend_tail - x->pend_head < MAX_PENDING);
    x->pend[x->pend_tail++ % MAX_PENDING] = (struct pending){peer_ops, peer_data, accepted};
    assert_int_equal(conn_connect_pipe(c, x->path), 0);
    return c;
}

/* ---- far ends ----------------------------------------------------------------------------- */

static size_t far_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct far *f = conn_data(c);
    for (size_t i = 0; i < len; i++)
        if (data[i] != pat(f->rx_seed, f->rx + i))
            fail_msg("far end %d: wrong byte at offset %zu", (int)(f - f->x->far), f->rx + i);
    f->rx += len;
    return len;
}

static void far_on_eof(struct conn *c)
{
    struct far *f = conn_data(c);
    f->eof = true;
    if (f->x->tearing_down)
        conn_close(c);
}

static void far_on_error(struct conn *c, int err, const char *reason)
{
    struct far *f = conn_data(c);
    f->error = true;
}

static void far_on_close(struct conn *c)
{
    struct far *f = conn_data(c);
    f->closed = true;
    f->c = NULL;
}

static const struct conn_ops far_ops = {
    .on_read = far_on_read,
    .on_eof = far_on_eof,
    .on_error = far_on_error,
    .on_close = far_on_close,
};

static void far_accepted(struct tctx *x, struct conn *c, void *arg)
{
    struct far *f = arg;
    f->c = c;
    if (x->tearing_down)
        conn_close(c);
    else if (!f->hold)
        assert_int_equal(conn_read_start(c), 0);
}

static void far_write(struct far *f, size_t n)
{
    uint8_t buf[16 * KIB];
    assert_non_null(f->c);
    while (n > 0) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);
        for (size_t i = 0; i < k; i++)
            buf[i] = pat(f->tx_seed, f->tx + i);
        assert_int_equal(conn_write(f->c, buf, k), 0);
        f->tx += k;
        n -= k;
    }
}

static void far_release(struct far *f)
{
    f->hold = false;
    assert_int_equal(conn_read_start(f->c), 0);
}

/* ---- streams ------------------------------------------------------------------------------ */

static struct tstream *tstream_new(struct tctx *x, enum side side)
{
    assert_true(x->nst < MAX_STREAMS);
    struct tstream *ts = &x->st[x->nst++];
    memset(ts, 0, sizeof(*ts));
    ts->x = x;
    ts->side = side;
    return ts;
}

/* Bind a new local conn to the stream; its far end is accepted a turn later. Seeds: what the
 * relay's client sends is what the agent's server must receive, and the other way round. */
static void bind_local(struct tstream *ts)
{
    struct tctx *x = ts->x;
    assert_true(x->nfar < MAX_FARS);
    struct far *f = &x->far[x->nfar++];
    memset(f, 0, sizeof(*f));
    f->x = x;
    f->hold = ts->far_hold;
    uint8_t up = (uint8_t)(0x11 * ts->id), down = (uint8_t)(0x5a + ts->id);
    f->tx_seed = ts->side == RELAY ? up : down;
    f->rx_seed = ts->side == RELAY ? down : up;
    ts->far = f;
    ts->local = connect_pair(x, &no_ops, NULL, &far_ops, f, far_accepted);
    tunnel_stream_bind(ts->s, ts->local, x->end_on_close[ts->side]);
}

/* Both sides' streams report here (on_open_result, on_stream_done). */
static const struct tunnel_stream_ops stream_ops;

static void agent_answer(struct tstream *ts)
{
    assert_int_equal(tunnel_stream_accept_ok(ts->s), 0);
    bind_local(ts);
}

static struct tstream *relay_open(struct tctx *x)
{
    struct proto_open m;
    memset(&m, 0, sizeof(m));
    snprintf(m.route, sizeof(m.route), "db");
    snprintf(m.session_id, sizeof(m.session_id), "s%d", x->nst);
    struct tstream *ts = tstream_new(x, RELAY);
    ts->s = tunnel_stream_open(x->t[RELAY], &m, &stream_ops, ts);
    assert_non_null(ts->s);
    ts->id = tunnel_stream_id(ts->s);
    return ts;
}

static struct tstream *agent_stream(struct tctx *x, uint32_t id)
{
    for (int i = 0; i < x->nst; i++)
        if (x->st[i].side == AGENT && x->st[i].id == id)
            return &x->st[i];
    return NULL;
}

/* A stream open on both sides, both far ends connected. */
static void open_pair(struct tctx *x, struct tstream **r, struct tstream **a)
{
    *r = relay_open(x);
    RUN_UNTIL(x, (*r)->opened && (*r)->far->c && agent_stream(x, (*r)->id) &&
                     agent_stream(x, (*r)->id)->far && agent_stream(x, (*r)->id)->far->c);
    *a = agent_stream(x, (*r)->id);
}

/* ---- tunnel callbacks --------------------------------------------------------------------- */

static enum side side_of(struct tctx *x, struct tunnel *t)
{
    assert_true(t == x->t[RELAY] || t == x->t[AGENT]);
    return t == x->t[RELAY] ? RELAY : AGENT;
}

static int on_control(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    struct tctx *x = tunnel_data(t);
    enum side side = side_of(x, t);
    struct proto_goaway g;
    if (h->type == PROTO_GOAWAY && proto_decode_goaway(body, h->length, &g) == 0) {
        x->goaways[side]++;
        snprintf(x->goaway_code[side], sizeof(x->goaway_code[side]), "%s", g.code);
    }
    return 0;
}

static int on_open(struct tunnel *t, uint32_t id, const struct proto_open *m)
{
    struct tctx *x = tunnel_data(t);
    x->opens++;
    assert_string_equal(m->route, "db");
    struct tstream *ts = tstream_new(x, AGENT);
    ts->id = id;
    ts->far_hold = x->agent_far_hold;
    ts->s = tunnel_stream_accept(t, id, &stream_ops, ts);
    assert_non_null(ts->s);
    if (!x->agent_defer)
        agent_answer(ts);
    return 0;
}

static void on_open_result(struct tunnel_stream *s, const struct proto_error *fail)
{
    struct tstream *ts = tunnel_stream_data(s);
    ts->results++;
    if (fail) {
        snprintf(ts->fail_code, sizeof(ts->fail_code), "%s", fail->code);
        return;
    }
    ts->opened = true;
    bind_local(ts);
}

static void on_stream_done(struct tunnel_stream *s, const char *err)
{
    struct tstream *ts = tunnel_stream_data(s);
    struct tctx *x = ts->x;
    struct tunnel *t = tunnel_stream_tunnel(s);
    ts->dones++;
    ts->clean = err == NULL;
    snprintf(ts->err, sizeof(ts->err), "%s", err ? err : "");
    ts->s = NULL;
    ts->local = NULL; /* owned by the stream, closing now */
    if (tunnel_closing(t))
        x->closing_seen_in_done = true;
    if (x->done_hook)
        x->done_hook(ts, err);
}

static const struct tunnel_stream_ops stream_ops = {
    .on_open_result = on_open_result,
    .on_done = on_stream_done,
};

static void on_tunnel_done(struct tunnel *t, const char *reason)
{
    struct tctx *x = tunnel_data(t);
    enum side side = side_of(x, t);
    assert_int_equal(tunnel_nstreams(t), 0);
    x->tunnel_dones[side]++;
    snprintf(x->reason[side], sizeof(x->reason[side]), "%s", reason);
    x->t[side] = NULL;
}

static const struct tunnel_ops relay_ops = {
    .on_control = on_control,
    .on_tunnel_done = on_tunnel_done,
};

static const struct tunnel_ops agent_ops = {
    .on_control = on_control,
    .on_open = on_open,
    .on_tunnel_done = on_tunnel_done,
};

/* ---- the tap ------------------------------------------------------------------------------ */

static int tap_on_data(void *ctx, uint32_t id, const uint8_t *data, size_t len)
{
    struct tap_dir *d = ctx;
    struct tap_dir *back = &d->x->tap[!d->from];
    uint8_t hdr[PROTO_HDR_SIZE];
    if (id < MAX_IDS) {
        d->data[id] += len;
        if (d->data[id] > d->x->window + back->window[id])
            fail_msg("side %d stream %u: %llu bytes of DATA sent on %llu of credit", d->from, id,
                     (unsigned long long)d->data[id],
                     (unsigned long long)(d->x->window + back->window[id]));
    }
    proto_encode_data_hdr(hdr, id, (uint32_t)len);
    if (d->out && !conn_closing(d->out)) {
        conn_write(d->out, hdr, sizeof(hdr));
        conn_write(d->out, data, len);
    }
    return 0;
}

static int tap_on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    struct tap_dir *d = ctx;
    struct tap_dir *back = &d->x->tap[!d->from];
    uint8_t hdr[PROTO_HDR_SIZE];
    struct proto_goaway g;
    uint32_t inc;
    d->frames[h->type]++;
    if (h->type == PROTO_WINDOW && h->stream_id < MAX_IDS) {
        assert_int_equal(proto_decode_window(body, h->length, &inc), 0);
        d->window[h->stream_id] += inc;
        if (d->window[h->stream_id] > back->data[h->stream_id])
            fail_msg("side %d stream %u: credit returned for %llu bytes, %llu received", d->from,
                     h->stream_id, (unsigned long long)d->window[h->stream_id],
                     (unsigned long long)back->data[h->stream_id]);
    }
    if (h->type == PROTO_GOAWAY) {
        assert_int_equal(proto_decode_goaway(body, h->length, &g), 0);
        snprintf(d->goaway_code, sizeof(d->goaway_code), "%s", g.code);
    }
    proto_hdr_encode(hdr, h);
    if (d->out && !conn_closing(d->out)) {
        conn_write(d->out, hdr, sizeof(hdr));
        conn_write(d->out, body, h->length);
    }
    return 0;
}

static const struct proto_reader_ops tap_reader_ops = {
    .on_data = tap_on_data,
    .on_frame = tap_on_frame,
};

static size_t tap_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct tap_dir *d = conn_data(c);
    if (d->hold)
        return 0; /* the conn keeps it and stops reading */
    int rc = proto_reader_feed(&d->rd, data, len, &tap_reader_ops, d);
    if (rc != 0)
        fail_msg("side %d wrote a malformed frame: %s", d->from, proto_strerror(rc));
    if (d->out && !conn_closing(d->out) && !conn_writable(d->out))
        conn_read_stop(c); /* on_drain of out starts it again */
    return len;
}

/* This conn is the `out` of the other direction: it drained, that direction may go on. */
static void tap_on_drain(struct conn *c)
{
    struct tap_dir *d = conn_data(c);
    struct tap_dir *other = &d->x->tap[!d->from];
    if (!other->hold && other->in && !conn_closing(other->in))
        conn_read_start(other->in);
}

/* One tunnel went: the tap passes the end on (FIN after what is queued). */
static void tap_on_eof(struct conn *c)
{
    struct tap_dir *d = conn_data(c);
    if (d->out)
        conn_end(d->out);
    conn_end(c);
}

static void tap_on_close(struct conn *c)
{
    struct tap_dir *d = conn_data(c);
    struct conn *out = d->out;
    d->x->tap_closed++;
    d->in = NULL;
    d->x->tap[!d->from].out = NULL;
    if (out && !conn_closing(out)) /* one that is ending finishes its flush first */
        conn_close(out);
}

static const struct conn_ops tap_ops = {
    .on_read = tap_on_read,
    .on_eof = tap_on_eof,
    .on_drain = tap_on_drain,
    .on_close = tap_on_close,
};

static void tap_hold(struct tctx *x, enum side from)
{
    x->tap[from].hold = true;
}

static void tap_release(struct tctx *x, enum side from)
{
    x->tap[from].hold = false;
    assert_int_equal(conn_read_start(x->tap[from].in), 0);
}

/* Write a frame toward side `to`, between two whole frames of the tunnel's own. */
static void tap_inject(struct tctx *x, enum side to, const uint8_t *frame, size_t len)
{
    assert_non_null(x->tap[!to].out);
    assert_int_equal(conn_write(x->tap[!to].out, frame, len), 0);
}

static void tap_accepted(struct tctx *x, struct conn *c, void *arg)
{
    struct tap_dir *d = arg;
    d->in = c;
    x->tap[!d->from].out = c;
    assert_int_equal(conn_read_start(c), 0);
}

/* ---- setup and teardown ------------------------------------------------------------------- */

static const struct tunnel_limits *limits(uint32_t window)
{
    static struct tunnel_limits lim;
    lim.ping_interval_ms = 60000; /* no keepalive traffic during a test */
    lim.dead_timeout_ms = 600000;
    lim.max_streams = MAX_STREAMS;
    lim.initial_window = window;
    return &lim;
}

static void agent_accepted(struct tctx *x, struct conn *c, void *arg)
{
    x->t[AGENT] = tunnel_new(&x->loop, c, &agent_ops, limits(x->window), 2, x);
    assert_non_null(x->t[AGENT]);
    assert_int_equal(conn_read_start(c), 0);
}

static struct tctx *setup(uint32_t window)
{
    struct tctx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    x->window = window;
    assert_int_equal(uv_loop_init(&x->loop), 0);
    x->cl = conn_loop_new(&x->loop);
    assert_non_null(x->cl);
    snprintf(x->path, sizeof(x->path), "%s/s%d", g_dir, g_seq++);
    assert_int_equal(uv_pipe_init(&x->loop, &x->lsn, 0), 0);
    x->lsn.data = x;
    assert_int_equal(uv_pipe_bind(&x->lsn, x->path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&x->lsn, 64, on_connection), 0);
    assert_int_equal(uv_timer_init(&x->loop, &x->deadline), 0);
    x->deadline.data = x;
    for (int d = 0; d < 2; d++) {
        x->tap[d].x = x;
        x->tap[d].from = (enum side)d;
        proto_reader_init(&x->tap[d].rd);
    }

    /* relay tunnel -> tap[RELAY].in ... tap[AGENT].in -> agent tunnel */
    struct conn *rc = connect_pair(x, &no_ops, NULL, &tap_ops, &x->tap[RELAY], tap_accepted);
    x->t[RELAY] = tunnel_new(&x->loop, rc, &relay_ops, limits(window), 1, x);
    assert_non_null(x->t[RELAY]);
    assert_int_equal(conn_read_start(rc), 0);
    x->tap[AGENT].in = connect_pair(x, &tap_ops, &x->tap[AGENT], &no_ops, NULL, agent_accepted);
    x->tap[RELAY].out = x->tap[AGENT].in;
    assert_int_equal(conn_read_start(x->tap[AGENT].in), 0);
    RUN_UNTIL(x, x->t[AGENT] && x->tap[RELAY].in);
    return x;
}

static bool fars_closed(struct tctx *x)
{
    for (int i = 0; i < x->nfar; i++)
        if (!x->far[i].closed)
            return false;
    return x->pend_head == x->pend_tail;
}

static void teardown(struct tctx *x)
{
    x->tearing_down = true;
    for (int d = 0; d < 2; d++)
        if (x->t[d])
            tunnel_close(x->t[d], "test over");
    for (int i = 0; i < x->nfar; i++)
        if (x->far[i].c)
            conn_close(x->far[i].c);
    RUN_UNTIL(x, x->tunnel_dones[RELAY] && x->tunnel_dones[AGENT] && x->tap_closed == 2 &&
                     fars_closed(x));
    assert_int_equal(x->tunnel_dones[RELAY], 1);
    assert_int_equal(x->tunnel_dones[AGENT], 1);
    for (int i = 0; i < x->nst; i++)
        if (x->st[i].s || x->st[i].dones != 1)
            fail_msg("stream %d (side %d id %u): %d on_stream_done", i, x->st[i].side, x->st[i].id,
                     x->st[i].dones);
    conn_loop_close(x->cl);
    uv_close((uv_handle_t *)&x->lsn, NULL);
    uv_close((uv_handle_t *)&x->deadline, NULL);
    /* closes complete within a turn or two; a handle still open fails uv_loop_close */
    for (int i = 0; i < 100 && uv_run(&x->loop, UV_RUN_NOWAIT); i++)
        ;
    assert_int_equal(uv_loop_close(&x->loop), 0);
    conn_loop_free(x->cl);
    unlink(x->path);
    free(x);
}

/* Both far ends half-close; the stream ends cleanly on both sides. */
static void close_pair(struct tctx *x, struct tstream *r, struct tstream *a)
{
    assert_int_equal(conn_shutdown(r->far->c), 0);
    assert_int_equal(conn_shutdown(a->far->c), 0);
    RUN_UNTIL(x, r->dones && a->dones);
    assert_true(r->clean);
    assert_true(a->clean);
}

static void assert_up(struct tctx *x)
{
    assert_non_null(x->t[RELAY]);
    assert_non_null(x->t[AGENT]);
    assert_false(tunnel_closing(x->t[RELAY]));
    assert_false(tunnel_closing(x->t[AGENT]));
    assert_int_equal(x->tap[RELAY].frames[PROTO_GOAWAY] + x->tap[AGENT].frames[PROTO_GOAWAY], 0);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A far end that stops reading stops its own stream: the receiving tunnel returns credit only
 * for bytes its local socket took, the sender runs out of credit and pauses; once the far end
 * reads, WINDOW frames flow and the rest arrives. Both directions. */
static void test_window_pause_resume(void **state)
{
    const uint32_t w = 64 * KIB;
    const size_t n = 2 * MIB;
    for (int to_agent = 1; to_agent >= 0; to_agent--) {
        struct tctx *x = setup(w);
        struct tstream *r, *a;
        x->agent_far_hold = to_agent;
        r = relay_open(x);
        r->far_hold = !to_agent;
        RUN_UNTIL(x, r->opened && r->far->c && agent_stream(x, r->id) &&
                         agent_stream(x, r->id)->far && agent_stream(x, r->id)->far->c);
        a = agent_stream(x, r->id);
        struct tstream *snd = to_agent ? r : a, *rcv = to_agent ? a : r;
        struct tap_dir *fwd = &x->tap[snd->side], *back = &x->tap[rcv->side];

        far_write(snd->far, n);
        run_idle(x);
        /* the sender spent exactly the credit it had, and waits */
        assert_true(fwd->data[r->id] < n);
        assert_int_equal(fwd->data[r->id], w + back->window[r->id]);
        assert_int_equal(tunnel_stream_bytes_out(snd->s), fwd->data[r->id]);
        assert_int_equal(tunnel_stream_bytes_in(rcv->s), fwd->data[r->id]);
        /* what the far end did not take waits in the receiver's local conn, uncredited */
        assert_true(conn_backlog(rcv->local) > 0);
        assert_true(back->window[r->id] <= fwd->data[r->id] - conn_backlog(rcv->local));
        assert_int_equal(rcv->far->rx, 0);
        uint64_t credit_before = back->window[r->id];

        far_release(rcv->far);
        RUN_UNTIL(x, rcv->far->rx == n);
        assert_true(back->window[r->id] > credit_before);
        assert_int_equal(fwd->data[r->id], n);
        close_pair(x, r, a);
        teardown(x);
    }
}

/* The stall fixed by "return credit after every local write": with a window smaller than the
 * local conn's old high watermark, a whole window arrived in one loop turn, was written in one
 * go, and no on_drain ever came to give the credit back. */
static void test_whole_window_in_one_turn(void **state)
{
    const uint32_t windows[] = {4096, 16 * KIB, 40 * KIB};
    const size_t n = 1 * MIB;
    for (size_t k = 0; k < sizeof(windows) / sizeof(windows[0]); k++) {
        struct tctx *x = setup(windows[k]);
        struct tstream *r, *a;
        open_pair(x, &r, &a);
        far_write(r->far, n);
        far_write(a->far, n);
        RUN_UNTIL(x, a->far->rx == n && r->far->rx == n);
        assert_true(x->tap[AGENT].frames[PROTO_WINDOW] >= (int)(n / windows[k]) - 1);
        assert_true(x->tap[RELAY].frames[PROTO_WINDOW] >= (int)(n / windows[k]) - 1);
        close_pair(x, r, a);
        assert_int_equal(tunnel_nstreams(x->t[RELAY]), 0);
        assert_int_equal(tunnel_nstreams(x->t[AGENT]), 0);
        teardown(x);
    }
}

/* CLOSE from the relay's side first: the agent shuts its local conn down (the server sees
 * EOF) while the other direction goes on; the server's reply after that arrives whole, and
 * the stream ends cleanly once both have closed. */
static void test_close_client_first(void **state)
{
    struct tctx *x = setup(64 * KIB);
    struct tstream *r, *a;
    open_pair(x, &r, &a);
    far_write(r->far, 100 * KIB);
    assert_int_equal(conn_shutdown(r->far->c), 0);
    RUN_UNTIL(x, a->far->rx == 100 * KIB && a->far->eof);
    assert_int_equal(x->tap[RELAY].frames[PROTO_CLOSE], 1);
    assert_int_equal(x->tap[AGENT].frames[PROTO_CLOSE], 0);
    assert_int_equal(r->dones + a->dones, 0);
    assert_false(r->far->eof);

    far_write(a->far, 300 * KIB); /* beyond one window: WINDOW still flows the other way */
    RUN_UNTIL(x, r->far->rx == 300 * KIB);
    assert_int_equal(r->dones + a->dones, 0);
    assert_int_equal(conn_shutdown(a->far->c), 0);
    RUN_UNTIL(x, r->dones && a->dones && r->far->eof);
    assert_true(r->clean && a->clean);
    assert_int_equal(x->tap[AGENT].frames[PROTO_CLOSE], 1);
    assert_int_equal(x->tap[RELAY].frames[PROTO_RESET] + x->tap[AGENT].frames[PROTO_RESET], 0);
    assert_int_equal(tunnel_nstreams(x->t[RELAY]), 0);
    assert_int_equal(tunnel_nstreams(x->t[AGENT]), 0);
    assert_up(x);
    teardown(x);
}

/* CLOSE from the agent's side first, both ways the relay can take it: half-close (the client
 * may still send) or end_on_close (the relay daemon's choice: the server ended the session,
 * the client gets everything, then the end). */
static void test_close_server_first(void **state)
{
    for (int end_on_close = 0; end_on_close < 2; end_on_close++) {
        struct tctx *x = setup(64 * KIB);
        struct tstream *r, *a;
        x->end_on_close[RELAY] = end_on_close;
        open_pair(x, &r, &a);
        far_write(a->far, 200 * KIB);
        assert_int_equal(conn_shutdown(a->far->c), 0);
        RUN_UNTIL(x, r->far->rx == 200 * KIB && r->far->eof);
        assert_int_equal(x->tap[AGENT].frames[PROTO_CLOSE], 1);
        if (end_on_close) {
            /* the relay answered with its own CLOSE and ended the stream */
            RUN_UNTIL(x, r->dones && a->dones && a->far->eof);
            assert_true(r->clean && a->clean);
            assert_int_equal(x->tap[RELAY].frames[PROTO_CLOSE], 1);
        } else {
            assert_int_equal(r->dones + a->dones, 0);
            far_write(r->far, 150 * KIB);
            RUN_UNTIL(x, a->far->rx == 150 * KIB);
            assert_false(a->far->eof);
            assert_int_equal(conn_shutdown(r->far->c), 0);
            RUN_UNTIL(x, r->dones && a->dones && a->far->eof);
            assert_true(r->clean && a->clean);
        }
        assert_int_equal(tunnel_nstreams(x->t[RELAY]), 0);
        assert_int_equal(tunnel_nstreams(x->t[AGENT]), 0);
        assert_up(x);
        teardown(x);
    }
}

/* A stream reset before the agent answered, from either side, and an OPEN_FAIL: each side
 * ends it once, the relay hears the outcome once, and late frames for it are ignored. */
static void test_reset_while_opening(void **state)
{
    struct tctx *x = setup(64 * KIB);
    uint8_t f[PROTO_HDR_SIZE + 64];
    int n;
    x->agent_defer = true;

    /* the relay gives up (its client left) */
    struct tstream *r1 = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r1->id));
    struct tstream *a1 = agent_stream(x, r1->id);
    tunnel_stream_reset(r1->s, "57014", "client went away");
    assert_int_equal(r1->dones, 1);
    assert_string_equal(r1->err, "client went away");
    assert_int_equal(r1->results, 0);
    RUN_UNTIL(x, a1->dones);
    assert_string_equal(a1->err, "reset by peer: client went away");

    /* the agent gives up before OPEN_OK */
    struct tstream *r2 = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r2->id));
    struct tstream *a2 = agent_stream(x, r2->id);
    tunnel_stream_reset(a2->s, "08006", "server went away");
    RUN_UNTIL(x, r2->dones);
    assert_int_equal(r2->results, 1);
    assert_string_equal(r2->fail_code, "08006");
    assert_false(r2->opened);
    assert_string_equal(r2->err, "reset by peer: server went away");

    /* OPEN_FAIL */
    struct tstream *r3 = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r3->id));
    tunnel_stream_fail(agent_stream(x, r3->id)->s, "57P03", "route %s not served", "db");
    RUN_UNTIL(x, r3->dones);
    assert_int_equal(r3->results, 1);
    assert_string_equal(r3->fail_code, "57P03");
    assert_string_equal(r3->err, "route db not served");
    assert_int_equal(tunnel_nstreams(x->t[RELAY]), 0);
    assert_int_equal(tunnel_nstreams(x->t[AGENT]), 0);

    /* the agent's late answers to stream 1 cross the reset */
    n = proto_encode_open_ok(f, sizeof(f), r1->id);
    tap_inject(x, RELAY, f, (size_t)n);
    n = proto_encode_window(f, sizeof(f), r1->id, 100);
    tap_inject(x, RELAY, f, (size_t)n);
    run_idle(x);
    assert_int_equal(r1->results, 0);
    assert_up(x);

    /* and the tunnel still carries a stream */
    x->agent_defer = false;
    struct tstream *r, *a;
    open_pair(x, &r, &a);
    far_write(r->far, 10 * KIB);
    RUN_UNTIL(x, a->far->rx == 10 * KIB);
    close_pair(x, r, a);
    teardown(x);
}

static size_t encode_frame(uint8_t *f, size_t cap, uint8_t type, uint32_t id, size_t data_len)
{
    struct proto_error e = {.code = "08006", .message = "late"};
    struct proto_open m = {.route = "db", .session_id = "late"};
    int n = -1;
    switch (type) {
    case PROTO_DATA:
        assert_true(PROTO_HDR_SIZE + data_len <= cap);
        proto_encode_data_hdr(f, id, (uint32_t)data_len);
        memset(f + PROTO_HDR_SIZE, 'x', data_len);
        n = (int)(PROTO_HDR_SIZE + data_len);
        break;
    case PROTO_WINDOW:
        n = proto_encode_window(f, cap, id, data_len ? (uint32_t)data_len : 1000);
        break;
    case PROTO_CLOSE:
        n = proto_encode_close(f, cap, id);
        break;
    case PROTO_OPEN_OK:
        n = proto_encode_open_ok(f, cap, id);
        break;
    case PROTO_OPEN_FAIL:
    case PROTO_RESET:
        n = proto_encode_error(f, cap, type, id, &e);
        break;
    case PROTO_OPEN:
        n = proto_encode_open(f, cap, id, &m);
        break;
    }
    assert_true(n > 0);
    return (size_t)n;
}

/* Frames for streams that have ended (both CLOSEs, RESET, OPEN_FAIL) are races, ignored by
 * both sides; the tunnel carries on. */
static void test_frames_for_closed_ids(void **state)
{
    static const uint8_t to_agent[] = {PROTO_DATA, PROTO_WINDOW, PROTO_CLOSE, PROTO_RESET};
    static const uint8_t to_relay[] = {PROTO_DATA,  PROTO_WINDOW,  PROTO_CLOSE,
                                       PROTO_RESET, PROTO_OPEN_OK, PROTO_OPEN_FAIL};
    uint8_t f[PROTO_HDR_SIZE + 128];
    struct tctx *x = setup(64 * KIB);
    struct tstream *r, *a;

    open_pair(x, &r, &a); /* 1: both CLOSEs */
    far_write(r->far, 1000);
    RUN_UNTIL(x, a->far->rx == 1000);
    close_pair(x, r, a);
    open_pair(x, &r, &a); /* 2: RESET from the agent */
    tunnel_stream_reset(a->s, "08006", "gone");
    RUN_UNTIL(x, r->dones);
    x->agent_defer = true; /* 3: OPEN_FAIL */
    r = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r->id));
    tunnel_stream_fail(agent_stream(x, r->id)->s, "08006", "no");
    RUN_UNTIL(x, r->dones);
    x->agent_defer = false;

    for (uint32_t id = 1; id <= 3; id++) {
        for (size_t i = 0; i < sizeof(to_agent); i++)
            tap_inject(x, AGENT, f, encode_frame(f, sizeof(f), to_agent[i], id, 100));
        for (size_t i = 0; i < sizeof(to_relay); i++)
            tap_inject(x, RELAY, f, encode_frame(f, sizeof(f), to_relay[i], id, 100));
    }
    run_idle(x);
    assert_up(x);
    assert_int_equal(tunnel_nstreams(x->t[RELAY]), 0);
    assert_int_equal(tunnel_nstreams(x->t[AGENT]), 0);

    open_pair(x, &r, &a);
    assert_int_equal(r->id, 4);
    far_write(a->far, 70 * KIB);
    RUN_UNTIL(x, r->far->rx == 70 * KIB);
    close_pair(x, r, a);
    assert_up(x);
    teardown(x);
}

/* Protocol violations on stream ids and windows: the receiving tunnel sends GOAWAY 08P01 and
 * closes, every stream on both sides ends with an error, the other tunnel sees the GOAWAY. */
static void test_stream_id_and_window_violations(void **state)
{
    static const struct {
        enum side to;
        uint8_t type;
        uint32_t id;      /* 0: the open stream's id */
        size_t len;       /* DATA bytes, or WINDOW increment */
        bool close_first; /* the far end toward `to` has half-closed first */
        const char *reason;
    } cases[] = {
        {AGENT, PROTO_OPEN, 0, 0, false, "OPEN reuses stream id 1"},
        {AGENT, PROTO_OPEN, 0, 0, true, "OPEN reuses stream id 1"},
        {RELAY, PROTO_OPEN, 7, 0, false, "OPEN sent to the relay"},
        {RELAY, PROTO_DATA, 7, 10, false, "DATA on unknown stream 7"},
        {AGENT, PROTO_WINDOW, 9, 1, false, "WINDOW on unknown stream 9"},
        {AGENT, PROTO_DATA, 0, 4097, false, "stream 1: DATA beyond the flow-control window"},
        {RELAY, PROTO_WINDOW, 0, PROTO_MAX_WINDOW, false, "stream 1: bad WINDOW increment"},
        {RELAY, PROTO_OPEN_OK, 0, 0, false, "unexpected OPEN_OK on stream 1"},
        {AGENT, PROTO_OPEN_OK, 0, 0, false, "unexpected OPEN_OK on stream 1"},
        {AGENT, PROTO_CLOSE, 0, 0, true, "unexpected CLOSE on stream 1"},
        {AGENT, PROTO_DATA, 0, 10, true, "DATA on stream 1 that is not open for it"},
    };
    uint8_t f[PROTO_HDR_SIZE + 8192];

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct tctx *x = setup(4096);
        struct tstream *r, *a;
        open_pair(x, &r, &a);
        if (cases[k].close_first) {
            /* the relay's client half-closes: the agent has had CLOSE on stream 1 */
            assert_int_equal(conn_shutdown(r->far->c), 0);
            RUN_UNTIL(x, a->far->eof);
        }
        uint32_t id = cases[k].id ? cases[k].id : r->id;
        enum side to = cases[k].to;
        tap_inject(x, to, f, encode_frame(f, sizeof(f), cases[k].type, id, cases[k].len));
        RUN_UNTIL(x, x->tunnel_dones[RELAY] && x->tunnel_dones[AGENT]);
        if (!strstr(x->reason[to], cases[k].reason))
            fail_msg("case %zu: reason \"%s\", expected \"%s\"", k, x->reason[to], cases[k].reason);
        assert_non_null(strstr(x->reason[to], "(08P01)"));
        assert_string_equal(x->tap[to].goaway_code, "08P01");
        assert_int_equal(x->goaways[!to], 1);
        assert_string_equal(x->goaway_code[!to], "08P01");
        assert_true(r->dones == 1 && !r->clean);
        assert_true(a->dones == 1 && !a->clean);
        teardown(x);
    }
}

/* Write an OPEN_OK with the given body toward the relay. */
static void inject_open_ok(struct tctx *x, uint32_t id, const uint8_t *body, size_t len)
{
    uint8_t f[PROTO_HDR_SIZE + 64];
    struct proto_hdr h = {.type = PROTO_OPEN_OK, .stream_id = id, .length = (uint32_t)len};
    assert_true(len <= sizeof(f) - PROTO_HDR_SIZE);
    proto_hdr_encode(f, &h);
    memcpy(f + PROTO_HDR_SIZE, body, len);
    tap_inject(x, RELAY, f, PROTO_HDR_SIZE + len);
}

/* OPEN_OK bodies are checked like every control body: a map with keys this side does not know
 * is an OPEN_OK (future optional fields); a body that is not one whole map is a protocol
 * violation. */
static void test_open_ok_body(void **state)
{
    static const uint8_t future[] = {0x81, 0xa5, 'l', 'a', 't', 'e', 'r', 0x01}; /* {"later":1} */
    static const uint8_t not_a_map[] = {0x91, 0x01};                             /* [1] */
    struct tctx *x = setup(64 * KIB);
    struct tstream *r;

    x->agent_defer = true;
    r = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r->id));
    inject_open_ok(x, r->id, future, sizeof(future));
    RUN_UNTIL(x, r->opened);
    assert_int_equal(r->results, 1);
    tunnel_stream_reset(agent_stream(x, r->id)->s, "08006", "gone");
    RUN_UNTIL(x, r->dones);
    assert_up(x);

    r = relay_open(x);
    RUN_UNTIL(x, agent_stream(x, r->id));
    inject_open_ok(x, r->id, not_a_map, sizeof(not_a_map));
    RUN_UNTIL(x, x->tunnel_dones[RELAY] && x->tunnel_dones[AGENT]);
    assert_non_null(strstr(x->reason[RELAY], "bad OPEN_OK"));
    assert_non_null(strstr(x->reason[RELAY], "(08P01)"));
    assert_string_equal(x->goaway_code[AGENT], "08P01");
    assert_false(r->opened);
    assert_true(r->dones == 1 && !r->clean);
    teardown(x);
}

/* A message that cannot be decoded ends the tunnel with a code that says whose fault it was:
 * 53200 when this side ran out of memory, 08P01 when the peer broke the protocol. */
static void test_fail_decode_codes(void **state)
{
    static const struct {
        int rc;
        const char *code, *reason;
    } cases[] = {
        {-ENOMEM, "53200", "could not decode WELCOME"},
        {PROTO_E_TYPE, "08P01", "bad WELCOME"},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct tctx *x = setup(64 * KIB);

        assert_int_equal(tunnel_fail_decode(x->t[AGENT], "WELCOME", cases[k].rc), -EPROTO);
        RUN_UNTIL(x, x->tunnel_dones[RELAY] && x->tunnel_dones[AGENT]);
        assert_non_null(strstr(x->reason[AGENT], cases[k].reason));
        assert_string_equal(x->goaway_code[RELAY], cases[k].code);
        teardown(x);
    }
}

/* A tunnel whose conn backs up (the peer does not read) pauses the local reads of every
 * stream, holding at most about its high watermark; once it drains, every paused stream
 * resumes. The windows here are large: only the tunnel's backlog can stop the streams. */
static void test_tunnel_backlog_pause_resume(void **state)
{
    const size_t n = 3 * MIB;
    struct tctx *x = setup(4 * MIB);
    struct tstream *r1, *a1, *r2, *a2;
    open_pair(x, &r1, &a1);
    open_pair(x, &r2, &a2);
    tap_hold(x, RELAY);
    far_write(r1->far, n);
    far_write(r2->far, n);
    run_idle(x);
    size_t backlog = conn_backlog(tunnel_conn(x->t[RELAY]));
    assert_true(backlog >= TUNNEL_HIGH_WATER);
    /* one read per stream at most after the watermark is crossed (64 KiB reads, cut in
     * 16 KiB frames) */
    assert_true(backlog < TUNNEL_HIGH_WATER + 2 * (64 * KIB + 8 * PROTO_HDR_SIZE));
    assert_true(tunnel_stream_bytes_out(r1->s) < n);
    assert_true(tunnel_stream_bytes_out(r2->s) < n);
    assert_int_equal(a1->far->rx + a2->far->rx, 0);

    tap_release(x, RELAY);
    RUN_UNTIL(x, a1->far->rx == n && a2->far->rx == n);
    assert_int_equal(conn_backlog(tunnel_conn(x->t[RELAY])), 0);
    close_pair(x, r1, a1);
    close_pair(x, r2, a2);
    teardown(x);
}

/* A stream whose far end does not read stops only itself. */
static void test_stalled_stream_stops_only_itself(void **state)
{
    const size_t n = 2 * MIB;
    struct tctx *x = setup(64 * KIB);
    struct tstream *r1, *a1, *r2, *a2;
    x->agent_far_hold = true;
    open_pair(x, &r1, &a1);
    x->agent_far_hold = false;
    open_pair(x, &r2, &a2);
    far_write(r1->far, n);
    far_write(r2->far, n);
    RUN_UNTIL(x, a2->far->rx == n);
    run_idle(x);
    assert_int_equal(a1->far->rx, 0);
    assert_true(x->tap[RELAY].data[r1->id] < n);
    far_release(a1->far);
    RUN_UNTIL(x, a1->far->rx == n);
    close_pair(x, r1, a1);
    close_pair(x, r2, a2);
    teardown(x);
}

/* The owner's on_stream_done runs while a tunnel tears down: the tunnel must already read as
 * closing there (no new stream may be opened on it), and closing it again from there must be
 * harmless. */
static void reopen_or_close_hook(struct tstream *ts, const char *err)
{
    struct tctx *x = ts->x;
    struct tunnel *t = x->t[ts->side];
    if (!t || !err)
        return;
    if (ts->side == AGENT) {
        tunnel_close(t, "closed again from on_stream_done");
        return;
    }
    if (tunnel_closing(t))
        return;
    struct proto_open m = {.route = "db", .session_id = "retry"};
    struct tstream *n = tstream_new(x, RELAY);
    n->s = tunnel_stream_open(t, &m, &stream_ops, n);
    if (n->s) {
        n->id = tunnel_stream_id(n->s);
        x->hook_opens++;
    } else {
        n->dones = 1; /* never existed */
    }
}

static void test_stream_done_during_teardown(void **state)
{
    struct tctx *x = setup(64 * KIB);
    struct tstream *r, *a;
    for (int i = 0; i < 3; i++)
        open_pair(x, &r, &a);
    x->done_hook = reopen_or_close_hook;
    tunnel_close(x->t[AGENT], "agent goes");
    RUN_UNTIL(x, x->tunnel_dones[RELAY] && x->tunnel_dones[AGENT]);
    assert_string_equal(x->reason[AGENT], "agent goes");
    assert_true(x->closing_seen_in_done);
    assert_int_equal(x->hook_opens, 0);
    for (int i = 0; i < x->nst; i++)
        assert_int_equal(x->st[i].dones, 1);
    teardown(x);
}

/* ---- main --------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/pgb-test-tunnel-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return rmdir(g_dir) == 0 ? 0 : -1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_pause_resume),
        cmocka_unit_test(test_whole_window_in_one_turn),
        cmocka_unit_test(test_close_client_first),
        cmocka_unit_test(test_close_server_first),
        cmocka_unit_test(test_reset_while_opening),
        cmocka_unit_test(test_frames_for_closed_ids),
        cmocka_unit_test(test_stream_id_and_window_violations),
        cmocka_unit_test(test_open_ok_body),
        cmocka_unit_test(test_fail_decode_codes),
        cmocka_unit_test(test_tunnel_backlog_pause_resume),
        cmocka_unit_test(test_stalled_stream_stops_only_itself),
        cmocka_unit_test(test_stream_done_during_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
