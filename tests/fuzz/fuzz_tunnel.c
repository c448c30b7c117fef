/*
 * fuzz_tunnel — a real tunnel (common/tunnel.c on a libuv loop) driven by arbitrary frame
 * sequences from its peer, with real local conns behind its streams.
 *
 *   harness "peer" conn <-- Unix socket --> tunnel (relay or agent role)
 *                                            +-- stream local conn <-- Unix socket --> far end
 *
 * The input is a small program (a structured encoding, so that the fuzzer reaches deep stream
 * states instead of dying on the first header check):
 *
 *   byte 0        configuration: bit 0 role (0 relay: the tunnel opens streams, 1 agent: the
 *                 peer opens them), bits 1-2 window (4 KiB, 16 KiB, 64 KiB, 256 KiB), bits 3-4
 *                 max_streams (1, 2, 3, 8), bit 5 end_on_close, bit 6 the agent answers OPEN
 *                 later (an op), bit 7 on_stream_done closes the tunnel when a stream fails
 *   then ops      op byte % 10, then its argument bytes:
 *     0 FRAME     type, stream selector, value bytes: one well-formed frame of that type
 *                 (DATA bodies carry the stream's byte pattern; WINDOW increments small or raw)
 *     1 RAW       n, then n bytes written as they are (garbage, split headers)
 *     2 WRITE     selector, size: the stream's far end writes (size + 1) KiB
 *     3 SHUTDOWN  selector: the far end half-closes
 *     4 ABORT     selector: the far end closes abruptly
 *     5 HOLD      selector: the far end stops or starts reading (toggle)
 *     6 API       sub-op, selector: tunnel_stream_open, _reset, _write, the agent's deferred
 *                 answer (accept_ok + bind, or fail), tunnel_goaway
 *     7 PEER      how: the peer stops or starts reading (the tunnel's writes back up),
 *                 half-closes, or closes
 *     8 TURN      run the loop a few more turns
 *     9 FILTER    selector, direction: a read-only filter that stops after some bytes
 *
 * After every op the loop runs a few turns, and whatever the tunnel wrote is parsed and checked
 * against what the peer sent (per stream id, counted by a mirror of the tunnel's frame reader,
 * so that RAW bytes count too):
 *   - the tunnel's output is well-formed frames, and nothing follows an error GOAWAY;
 *   - DATA the tunnel sent <= window + WINDOW credit the peer gave (credit never negative);
 *   - WINDOW credit the tunnel returned <= DATA the peer sent (credit never above the window);
 *   - no DATA after the tunnel's own CLOSE/RESET/OPEN_FAIL on a stream, one CLOSE at most;
 *   - frames only for stream ids that exist (relay: it opened them, increasing; agent: the
 *     peer OPENed them);
 *   - bytes arrive in order and unchanged, both ways (far end and peer check the pattern; the
 *     far end only until RAW bytes went out);
 *   - the public byte counters agree with the above.
 * At the end the tunnel is closed: on_tunnel_done exactly once, on_stream_done exactly once per
 * stream, every conn closed, uv_loop_close() == 0, and LeakSanitizer sees nothing.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conn.h"
#include "common/tunnel.h"
#include "proto/proto.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tunnel: check failed at line %d: %s\n", __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_IDS 16 /* stream ids tracked; frames for others are still sent */
#define MAX_FARS 24
#define MAX_PENDING 32
#define MAX_OPS 256

enum { ROLE_RELAY = 0, ROLE_AGENT = 1 };

struct fz;

struct far {
    struct fz *z;
    struct conn *c;
    uint32_t id;
    bool hold, closed;
    uint64_t rx, tx;
};

struct fstream {             /* per stream id */
    struct tunnel_stream *s; /* NULL when none or done */
    bool exists;             /* the tunnel created it (open or accept) */
    int dones;
    bool opened;   /* relay: OPEN_OK arrived; agent: answered OK */
    bool deferred; /* agent: accepted, not answered yet */
    struct conn *local;
    struct far *far;
    /* what the peer sent */
    uint64_t p_data, p_win; /* as the tunnel's reader splits it (a mirror of it) */
    bool p_close;
    /* what the tunnel sent */
    uint64_t t_data, t_win;
    bool t_close, t_end; /* CLOSE; RESET or OPEN_FAIL */
    uint64_t api_tx;     /* bytes sent with tunnel_stream_write (not in the far end's pattern) */
    uint64_t filter_seen[2];
};

struct pending {
    struct far *far; /* NULL: the peer conn */
};

struct fz {
    uv_loop_t loop;
    struct conn_loop *cl;
    uv_pipe_t lsn;
    char path[64];
    struct pending pend[MAX_PENDING];
    unsigned pend_head, pend_tail;
    int role;
    uint32_t window, max_streams;
    bool end_on_close, defer, close_on_fail;
    struct tunnel *t;
    int tunnel_dones;
    struct conn *peer;
    bool peer_hold, peer_closed;
    struct proto_reader rd;     /* what the tunnel writes */
    struct proto_reader mirror; /* what the peer writes, framed as the tunnel reads it */
    bool raw_used;              /* RAW bytes went out: DATA contents are no longer the pattern */
    bool t_goaway_error;        /* the tunnel sent an error GOAWAY: nothing may follow */
    uint32_t t_max_open;        /* relay role: highest id in an OPEN the tunnel sent */
    uint32_t api_max_open;      /* relay role: highest id tunnel_stream_open returned */
    uint32_t p_max_open;        /* agent role: highest id the peer OPENed */
    struct fstream st[MAX_IDS];
    int extra_dones; /* on_stream_done for untracked ids */
    int extra_streams;
    struct far far[MAX_FARS];
    int nfar, far_closed;
};

static const struct conn_ops no_ops;

static uint8_t pat(uint32_t id, bool up, uint64_t off)
{
    return (uint8_t)(((uint32_t)off * 2654435761u) >> 24) ^ (uint8_t)(id * 29 + (up ? 7 : 101));
}

static struct fstream *fst(struct fz *z, uint32_t id)
{
    return id > 0 && id < MAX_IDS ? &z->st[id] : NULL;
}

/* ---- the listener ------------------------------------------------------------------------- */

static size_t far_on_read(struct conn *c, const uint8_t *data, size_t len);
static void far_on_close(struct conn *c);
static size_t peer_on_read(struct conn *c, const uint8_t *data, size_t len);
static void peer_on_close(struct conn *c);

static const struct conn_ops far_ops = {.on_read = far_on_read, .on_close = far_on_close};
static const struct conn_ops peer_ops = {.on_read = peer_on_read, .on_close = peer_on_close};

static void on_connection(uv_stream_t *server, int status)
{
    struct fz *z = server->data;
    CHECK(status == 0 && z->pend_head != z->pend_tail);
    struct pending p = z->pend[z->pend_head++ % MAX_PENDING];
    struct conn *c = conn_new(z->cl, p.far ? &far_ops : &peer_ops, p.far ? (void *)p.far : z, true);
    CHECK(c && conn_accept(c, server) == 0);
    if (p.far) {
        p.far->c = c;
        if (!p.far->hold)
            conn_read_start(c);
    } else {
        z->peer = c;
        conn_read_start(c);
    }
}

static struct conn *connect_to(struct fz *z, struct far *f)
{
    struct conn *c = conn_new(z->cl, &no_ops, NULL, true);
    CHECK(c && z->pend_tail - z->pend_head < MAX_PENDING);
    z->pend[z->pend_tail++ % MAX_PENDING] = (struct pending){f};
    CHECK(conn_connect_pipe(c, z->path) == 0);
    return c;
}

/* ---- far ends ----------------------------------------------------------------------------- */

static size_t far_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct far *f = conn_data(c);
    if (!f->z->raw_used)
        for (size_t i = 0; i < len; i++)
            CHECK(data[i] == pat(f->id, false, f->rx + i));
    f->rx += len;
    struct fstream *fs = fst(f->z, f->id);
    CHECK(!fs || f->rx <= fs->p_data);
    return len;
}

static void far_on_close(struct conn *c)
{
    struct far *f = conn_data(c);
    f->closed = true;
    f->c = NULL;
    f->z->far_closed++;
}

static void bind_local(struct fz *z, uint32_t id, struct tunnel_stream *s, bool hold)
{
    struct fstream *fs = fst(z, id);
    if (!fs || z->nfar >= MAX_FARS || z->pend_tail - z->pend_head >= MAX_PENDING)
        return; /* not bound: the stream stays without a local conn */
    struct far *f = &z->far[z->nfar++];
    memset(f, 0, sizeof(*f));
    f->z = z;
    f->id = id;
    f->hold = hold;
    fs->far = f;
    fs->local = connect_to(z, f);
    tunnel_stream_bind(s, fs->local, z->end_on_close);
}

/* ---- tunnel callbacks --------------------------------------------------------------------- */

static int on_control(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body)
{
    return 0;
}

/* Both roles' streams report here (on_open_result, on_stream_done). */
static const struct tunnel_stream_ops stream_ops;

static int on_open(struct tunnel *t, uint32_t id, const struct proto_open *m)
{
    struct fz *z = tunnel_data(t);
    struct fstream *fs = fst(z, id);
    if (id % 5 == 4)
        return -1; /* refused: the tunnel answers OPEN_FAIL */
    struct tunnel_stream *s = tunnel_stream_accept(t, id, &stream_ops, z);
    if (!s)
        return -1;
    if (!fs) {
        z->extra_streams++;
        tunnel_stream_fail(s, "57P03", "untracked");
        return 0;
    }
    CHECK(!fs->exists);
    fs->exists = true;
    fs->s = s;
    if (z->defer) {
        fs->deferred = true;
        return 0;
    }
    CHECK(tunnel_stream_accept_ok(s) == 0);
    fs->opened = true;
    bind_local(z, id, s, false);
    return 0;
}

static void on_open_result(struct tunnel_stream *s, const struct proto_error *fail)
{
    struct fz *z = tunnel_data(tunnel_stream_tunnel(s));
    struct fstream *fs = fst(z, tunnel_stream_id(s));
    if (!fs) {
        if (!fail)
            tunnel_stream_reset(s, "57014", "untracked");
        return;
    }
    CHECK(fs->s == s && !fs->opened);
    if (fail)
        return;
    fs->opened = true;
    bind_local(z, tunnel_stream_id(s), s, false);
}

static void on_stream_done(struct tunnel_stream *s, const char *err)
{
    struct tunnel *t = tunnel_stream_tunnel(s);
    struct fz *z = tunnel_data(t);
    uint32_t id = tunnel_stream_id(s);
    struct fstream *fs = fst(z, id);
    CHECK(tunnel_stream_bytes_in(s) <= (fs ? fs->p_data : UINT64_MAX));
    if (!fs) {
        z->extra_dones++;
        return;
    }
    CHECK(fs->s == s && fs->dones == 0);
    fs->dones++;
    fs->s = NULL;
    fs->local = NULL;
    if (err && z->close_on_fail)
        tunnel_close(t, "closed from on_stream_done");
}

static const struct tunnel_stream_ops stream_ops = {
    .on_open_result = on_open_result,
    .on_done = on_stream_done,
};

static void on_tunnel_done(struct tunnel *t, const char *reason)
{
    struct fz *z = tunnel_data(t);
    CHECK(tunnel_nstreams(t) == 0);
    z->tunnel_dones++;
    z->t = NULL;
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

/* ---- what the tunnel writes --------------------------------------------------------------- */

static bool id_known(struct fz *z, uint32_t id)
{
    return id != 0 && id <= (z->role == ROLE_RELAY ? z->t_max_open : z->p_max_open);
}

static int peer_on_data(void *ctx, uint32_t id, const uint8_t *data, size_t len)
{
    struct fz *z = ctx;
    struct fstream *fs = fst(z, id);
    CHECK(!z->t_goaway_error);
    CHECK(id_known(z, id));
    if (!fs)
        return 0;
    CHECK(!fs->t_close && !fs->t_end);
    if (fs->api_tx == 0)
        for (size_t i = 0; i < len; i++)
            CHECK(data[i] == pat(id, true, fs->t_data + i));
    fs->t_data += len;
    CHECK(fs->t_data <= z->window + fs->p_win);
    CHECK(fs->t_data <= (fs->far ? fs->far->tx : 0) + fs->api_tx);
    return 0;
}

static int peer_on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    struct fz *z = ctx;
    struct fstream *fs = fst(z, h->stream_id);
    struct proto_goaway g;
    struct proto_error e;
    struct proto_open m;
    uint32_t inc;
    uint64_t opaque;

    CHECK(!z->t_goaway_error);
    switch (h->type) {
    case PROTO_OPEN:
        CHECK(z->role == ROLE_RELAY && h->stream_id > z->t_max_open);
        CHECK(proto_decode_open(body, h->length, &m) == 0);
        z->t_max_open = h->stream_id;
        return 0;
    case PROTO_OPEN_OK:
    case PROTO_OPEN_FAIL:
        CHECK(z->role == ROLE_AGENT && id_known(z, h->stream_id));
        if (h->type == PROTO_OPEN_OK) {
            CHECK(proto_decode_open_ok(body, h->length) == 0);
        } else {
            CHECK(proto_decode_error(body, h->length, &e) == 0);
            if (fs)
                fs->t_end = true;
        }
        return 0;
    case PROTO_WINDOW:
        CHECK(id_known(z, h->stream_id));
        CHECK(proto_decode_window(body, h->length, &inc) == 0);
        if (fs) {
            fs->t_win += inc;
            CHECK(fs->t_win <= fs->p_data);
        }
        return 0;
    case PROTO_CLOSE:
        CHECK(id_known(z, h->stream_id));
        if (fs) {
            CHECK(!fs->t_close && !fs->t_end);
            fs->t_close = true;
        }
        return 0;
    case PROTO_RESET:
        CHECK(id_known(z, h->stream_id));
        CHECK(proto_decode_error(body, h->length, &e) == 0);
        if (fs)
            fs->t_end = true;
        return 0;
    case PROTO_PING:
    case PROTO_PONG:
        CHECK(proto_decode_ping(body, h->length, &opaque) == 0);
        return 0;
    case PROTO_GOAWAY:
        CHECK(proto_decode_goaway(body, h->length, &g) == 0);
        if (strcmp(g.code, "00000") != 0)
            z->t_goaway_error = true;
        return 0;
    default:
        CHECK(!"the tunnel sent a frame it never sends");
        return 0;
    }
}

static const struct proto_reader_ops peer_reader_ops = {
    .on_data = peer_on_data,
    .on_frame = peer_on_frame,
};

static size_t peer_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct fz *z = conn_data(c);
    CHECK(proto_reader_feed(&z->rd, data, len, &peer_reader_ops, z) == 0);
    return len;
}

static void peer_on_close(struct conn *c)
{
    struct fz *z = conn_data(c);
    z->peer = NULL;
    z->peer_closed = true;
}

/* ---- the input program -------------------------------------------------------------------- */

struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t next(struct in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static uint32_t next32(struct in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | next(in);
    return v;
}

/* Mostly the ids in play (1..8), sometimes 0, the next unused one, or the largest. */
static uint32_t pick_id(struct fz *z, uint8_t b)
{
    uint32_t max = z->role == ROLE_RELAY ? z->api_max_open : z->p_max_open;
    if (b < 0xf0)
        return b % 8 + 1;
    switch (b & 3) {
    case 0:
        return 0;
    case 1:
        return max + 1;
    case 2:
        return UINT32_MAX;
    default:
        return b & 0x0f;
    }
}

static int mirror_on_data(void *ctx, uint32_t id, const uint8_t *data, size_t len)
{
    struct fz *z = ctx;
    struct fstream *fs = fst(z, id);
    if (fs)
        fs->p_data += len;
    return 0;
}

static int mirror_on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    struct fz *z = ctx;
    struct fstream *fs = fst(z, h->stream_id);
    uint32_t inc;
    if (h->type == PROTO_OPEN && h->stream_id > z->p_max_open)
        z->p_max_open = h->stream_id;
    if (!fs)
        return 0;
    if (h->type == PROTO_WINDOW && proto_decode_window(body, h->length, &inc) == 0)
        fs->p_win += inc;
    if (h->type == PROTO_CLOSE)
        fs->p_close = true;
    return 0;
}

static const struct proto_reader_ops mirror_ops = {
    .on_data = mirror_on_data,
    .on_frame = mirror_on_frame,
};

/* Every byte to the tunnel goes through here: the mirror counts what the tunnel will see
 * (exact even for RAW bytes; an upper bound once the tunnel has failed and stops reading). */
static void peer_send(struct fz *z, const uint8_t *buf, size_t len)
{
    if (!z->peer || conn_closing(z->peer))
        return;
    proto_reader_feed(&z->mirror, buf, len, &mirror_ops, z);
    conn_write(z->peer, buf, len);
}

/* A header as given (proto_encode_* refuse to emit invalid ones). */
static void raw_hdr(uint8_t *out, uint8_t type, uint32_t id, uint32_t len)
{
    struct proto_hdr h = {.type = type, .stream_id = id, .length = len};
    proto_hdr_encode(out, &h);
}

static void op_frame(struct fz *z, struct in *in)
{
    static uint8_t buf[PROTO_HDR_SIZE + PROTO_MAX_DATA];
    static const char *const codes[] = {"08006", "57P03", "53300", "00000", "08P01"};
    uint8_t type = next(in) % (PROTO_TYPE_MAX + 2);
    uint32_t id = pick_id(z, next(in));
    struct fstream *fs = fst(z, id);
    int n = -1;

    switch (type) {
    case PROTO_DATA: {
        uint32_t len = 1 + (((uint32_t)next(in) << 8 | next(in)) % PROTO_MAX_DATA);
        uint64_t off = fs ? fs->p_data : 0;
        raw_hdr(buf, PROTO_DATA, id, len);
        for (uint32_t i = 0; i < len; i++)
            buf[PROTO_HDR_SIZE + i] = pat(id, false, off + i);
        n = (int)(PROTO_HDR_SIZE + len);
        break;
    }
    case PROTO_WINDOW: {
        uint8_t how = next(in);
        uint32_t inc = how & 1 ? next32(in) : 1 + ((uint32_t)next(in) << 8 | next(in)) * 16;
        if (inc == 0) { /* a valid header with an invalid body */
            raw_hdr(buf, PROTO_WINDOW, id, 4);
            memset(buf + PROTO_HDR_SIZE, 0, 4);
            n = PROTO_HDR_SIZE + 4;
            break;
        }
        n = proto_encode_window(buf, sizeof(buf), id ? id : 1, inc);
        break;
    }
    case PROTO_OPEN: {
        struct proto_open m;
        memset(&m, 0, sizeof(m));
        snprintf(m.route, sizeof(m.route), "db");
        snprintf(m.session_id, sizeof(m.session_id), "f%u", id);
        if (z->role == ROLE_AGENT && next(in) < 0xe0)
            id = z->p_max_open + 1; /* usually a fresh id, as a relay would */
        n = proto_encode_open(buf, sizeof(buf), id ? id : 1, &m);
        break;
    }
    case PROTO_OPEN_OK:
        n = proto_encode_open_ok(buf, sizeof(buf), id ? id : 1);
        break;
    case PROTO_OPEN_FAIL:
    case PROTO_RESET: {
        struct proto_error e;
        memset(&e, 0, sizeof(e));
        snprintf(e.code, sizeof(e.code), "%s", codes[next(in) % 5]);
        snprintf(e.message, sizeof(e.message), "fuzz");
        n = proto_encode_error(buf, sizeof(buf), type, id ? id : 1, &e);
        break;
    }
    case PROTO_CLOSE:
        n = proto_encode_close(buf, sizeof(buf), id ? id : 1);
        break;
    case PROTO_PING:
    case PROTO_PONG:
        n = proto_encode_ping(buf, sizeof(buf), type, (uint64_t)next32(in) << 32 | next32(in));
        break;
    case PROTO_HELLO:
    case PROTO_WELCOME:
    case PROTO_CANCEL:
    case PROTO_GOAWAY: {
        /* stream 0 control frames go to on_control; the body is the owner's business */
        struct proto_goaway g;
        memset(&g, 0, sizeof(g));
        g.last_stream_id = next32(in);
        snprintf(g.code, sizeof(g.code), "%s", codes[next(in) % 5]);
        n = proto_encode_goaway(buf, sizeof(buf), &g);
        if (n > 0)
            buf[1] = type;
        break;
    }
    default: /* a header no receiver accepts */
        raw_hdr(buf, (uint8_t)(PROTO_TYPE_MAX + 1 + next(in) % 100), id, 0);
        n = PROTO_HDR_SIZE;
        break;
    }
    if (n > 0)
        peer_send(z, buf, (size_t)n);
}

static struct fstream *pick_stream(struct fz *z, uint8_t b, uint32_t *id)
{
    *id = b % (MAX_IDS - 1) + 1;
    return &z->st[*id];
}

static void far_write(struct far *f, size_t n)
{
    static uint8_t buf[64 * 1024];
    while (n > 0 && f->c && !conn_closing(f->c)) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);
        for (size_t i = 0; i < k; i++)
            buf[i] = pat(f->id, true, f->tx + i);
        if (conn_write(f->c, buf, k) < 0)
            return;
        f->tx += k;
        n -= k;
    }
}

static bool filter_fn(void *ctx, const uint8_t *data, size_t len)
{
    uint64_t *seen = ctx;
    *seen += len;
    return *seen < 20000;
}

static void op_api(struct fz *z, struct in *in)
{
    uint8_t sub = next(in);
    uint32_t id;
    struct fstream *fs = pick_stream(z, next(in), &id);
    if (!z->t)
        return;
    switch (sub % 6) {
    case 0: /* relay: open a stream */
        if (z->role == ROLE_RELAY && !tunnel_closing(z->t)) {
            struct proto_open m;
            memset(&m, 0, sizeof(m));
            snprintf(m.route, sizeof(m.route), "db");
            snprintf(m.session_id, sizeof(m.session_id), "x");
            struct tunnel_stream *s = tunnel_stream_open(z->t, &m, &stream_ops, z);
            if (s) {
                uint32_t nid = tunnel_stream_id(s);
                struct fstream *ns = fst(z, nid);
                CHECK(nid > z->api_max_open);
                z->api_max_open = nid;
                if (!ns) {
                    z->extra_streams++;
                    tunnel_stream_reset(s, "57014", "untracked");
                    break;
                }
                CHECK(!ns->exists);
                ns->exists = true;
                ns->s = s;
            }
        }
        break;
    case 1:
        if (fs->s)
            tunnel_stream_reset(fs->s, "57014", "fuzz reset");
        break;
    case 2:
        if (fs->s) {
            /* bytes from outside the splice: from here on the stream's bytes are counted,
             * no longer checked against the far end's pattern */
            uint8_t buf[256];
            size_t n = 1 + sub % 200;
            memset(buf, 'w', n);
            fs->api_tx += n;
            tunnel_stream_write(fs->s, buf, n);
        }
        break;
    case 3: /* agent: the deferred answer */
        if (fs->s && fs->deferred) {
            fs->deferred = false;
            if (sub & 0x40) {
                tunnel_stream_fail(fs->s, "08006", "could not connect");
            } else if (tunnel_stream_accept_ok(fs->s) == 0) {
                fs->opened = true;
                bind_local(z, id, fs->s, sub & 0x80);
            }
        }
        break;
    case 4:
        tunnel_goaway(z->t, "draining");
        break;
    default:
        break;
    }
}

static void op_filter(struct fz *z, struct in *in)
{
    uint32_t id;
    struct fstream *fs = pick_stream(z, next(in), &id);
    int dir = next(in) & 1;
    if (fs->s)
        tunnel_stream_set_filter(fs->s, (enum tunnel_dir)dir, filter_fn, &fs->filter_seen[dir]);
}

static void turns(struct fz *z, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(&z->loop, UV_RUN_NOWAIT);
}

/* What the public counters say agrees with what the peer sent and saw. */
static void check_streams(struct fz *z)
{
    if (z->t)
        CHECK(tunnel_nstreams(z->t) <= z->max_streams + 1);
    for (uint32_t id = 1; id < MAX_IDS; id++) {
        struct fstream *fs = &z->st[id];
        CHECK(fs->dones <= 1);
        if (!fs->s)
            continue;
        CHECK(tunnel_stream_bytes_out(fs->s) <= z->window + fs->p_win);
        CHECK(tunnel_stream_bytes_in(fs->s) <= fs->p_data);
        CHECK(fs->t_data <= tunnel_stream_bytes_out(fs->s));
        CHECK(fs->t_win <= tunnel_stream_bytes_in(fs->s));
        if (fs->far)
            CHECK(fs->far->rx <= tunnel_stream_bytes_in(fs->s));
    }
}

static void run_program(struct fz *z, struct in *in)
{
    for (int ops = 0; in->n > 0 && ops < MAX_OPS; ops++) {
        uint32_t id;
        struct fstream *fs;
        uint8_t op = next(in) % 10;
        switch (op) {
        case 0:
            op_frame(z, in);
            break;
        case 1: {
            uint8_t buf[256];
            size_t n = next(in);
            for (size_t i = 0; i < n; i++)
                buf[i] = next(in);
            z->raw_used = true;
            peer_send(z, buf, n);
            break;
        }
        case 2:
            fs = pick_stream(z, next(in), &id);
            if (fs->far)
                far_write(fs->far, ((size_t)next(in) + 1) * 1024);
            break;
        case 3:
            fs = pick_stream(z, next(in), &id);
            if (fs->far && fs->far->c && !conn_closing(fs->far->c))
                conn_shutdown(fs->far->c);
            break;
        case 4:
            fs = pick_stream(z, next(in), &id);
            if (fs->far && fs->far->c)
                conn_close(fs->far->c);
            break;
        case 5:
            fs = pick_stream(z, next(in), &id);
            if (fs->far) {
                fs->far->hold = !fs->far->hold;
                if (fs->far->c && !conn_closing(fs->far->c)) {
                    if (fs->far->hold)
                        conn_read_stop(fs->far->c);
                    else
                        conn_read_start(fs->far->c);
                }
            }
            break;
        case 6:
            op_api(z, in);
            break;
        case 7: {
            uint8_t how = next(in) % 4;
            if (!z->peer || conn_closing(z->peer))
                break;
            if (how == 2) {
                conn_shutdown(z->peer); /* FIN: the tunnel sees EOF */
            } else if (how == 3) {
                conn_close(z->peer);
            } else {
                z->peer_hold = !z->peer_hold;
                if (z->peer_hold)
                    conn_read_stop(z->peer);
                else
                    conn_read_start(z->peer);
            }
            break;
        }
        case 8:
            turns(z, 1 + next(in) % 8);
            break;
        default:
            op_filter(z, in);
            break;
        }
        turns(z, 2);
        check_streams(z);
    }
}

static void fz_start(struct fz *z, uint8_t cfg)
{
    static const uint32_t windows[] = {4096, 16384, 65536, PROTO_INITIAL_WINDOW};
    static const uint32_t maxs[] = {1, 2, 3, 8};
    z->role = cfg & 1;
    z->window = windows[(cfg >> 1) & 3];
    z->max_streams = maxs[(cfg >> 3) & 3];
    z->end_on_close = cfg & 0x20;
    z->defer = cfg & 0x40;
    z->close_on_fail = cfg & 0x80;
    snprintf(z->path, sizeof(z->path), "/tmp/pgb-fuzz-tunnel-%d.sock", (int)getpid());
    unlink(z->path);
    CHECK(uv_loop_init(&z->loop) == 0);
    CHECK((z->cl = conn_loop_new(&z->loop)) != NULL);
    CHECK(uv_pipe_init(&z->loop, &z->lsn, 0) == 0);
    z->lsn.data = z;
    CHECK(uv_pipe_bind(&z->lsn, z->path) == 0);
    CHECK(uv_listen((uv_stream_t *)&z->lsn, 64, on_connection) == 0);
    proto_reader_init(&z->rd);
    proto_reader_init(&z->mirror);

    struct tunnel_limits lim = {
        .ping_interval_ms = 3600 * 1000, /* no timer fires during an input */
        .dead_timeout_ms = 3600 * 1000,
        .max_streams = z->max_streams,
        .initial_window = z->window,
    };
    struct conn *c = connect_to(z, NULL);
    z->t = tunnel_new(&z->loop, c, z->role == ROLE_AGENT ? &agent_ops : &relay_ops, &lim, 1, z);
    CHECK(z->t != NULL);
    CHECK(conn_read_start(c) == 0);
    for (int i = 0; i < 100 && !z->peer; i++)
        uv_run(&z->loop, UV_RUN_NOWAIT);
    CHECK(z->peer != NULL);
}

static void fz_finish(struct fz *z)
{
    /* let what is in flight land, then check once more */
    turns(z, 16);
    check_streams(z);
    if (z->t)
        tunnel_close(z->t, "input over");
    if (z->peer)
        conn_close(z->peer);
    for (int i = 0; i < z->nfar; i++)
        if (z->far[i].c)
            conn_close(z->far[i].c);
    for (int i = 0; i < 1000 && (z->tunnel_dones == 0 || !z->peer_closed ||
                                 z->far_closed < z->nfar || z->pend_head != z->pend_tail);
         i++) {
        uv_run(&z->loop, UV_RUN_NOWAIT);
        for (int k = 0; k < z->nfar; k++) /* far ends accepted after the tunnel went */
            if (z->far[k].c && !conn_closing(z->far[k].c))
                conn_close(z->far[k].c);
    }
    CHECK(z->tunnel_dones == 1 && z->peer_closed && z->far_closed == z->nfar);
    for (uint32_t id = 1; id < MAX_IDS; id++)
        CHECK(z->st[id].dones == (z->st[id].exists ? 1 : 0) && z->st[id].s == NULL);
    CHECK(z->extra_dones == z->extra_streams);

    conn_loop_close(z->cl);
    uv_close((uv_handle_t *)&z->lsn, NULL);
    for (int i = 0; i < 100 && uv_run(&z->loop, UV_RUN_NOWAIT); i++)
        ;
    CHECK(uv_loop_close(&z->loop) == 0);
    conn_loop_free(z->cl);
    unlink(z->path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz z;
    struct in in = {data, size};
    if (size == 0)
        return 0;
    memset(&z, 0, sizeof(z));
    fz_start(&z, next(&in));
    run_program(&z, &in);
    fz_finish(&z);
    return 0;
}
