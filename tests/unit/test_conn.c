/*
 * test_conn — conn and tls over a real libuv loop on 127.0.0.1 (ephemeral ports).
 *
 * A throwaway CA, server and client certificates are made with the openssl CLI in a mkdtemp
 * directory once per run. Each test builds a fresh loop with listeners and conns whose roles
 * (client, server, a plaintext proxy in between) are driven by the flags of struct tctx, then
 * runs the loop until everything has closed and checks that no handle leaked
 * (uv_loop_close() == 0) and that every conn got exactly one on_close.
 *
 * Every byte received is checked against the source buffer at its offset, so an echo, a reply
 * after EOF and a proxied stream are all verified byte for byte, not only counted.
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
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/conn.h"
#include "common/tls.h"

#include <openssl/pem.h>

#define MIB (1024u * 1024u)
#define SRC_LEN (4 * MIB)
#define MAX_PEERS 8
#define TEST_TIMEOUT_MS 120000

enum role { ROLE_CLIENT, ROLE_SERVER, ROLE_PROXY_IN, ROLE_PROXY_OUT };

struct tctx;

struct peer {
    struct tctx *t;
    enum role role;
    struct conn *c;
    struct peer *pair; /* proxy: the other side */
    int connects, connect_status, handshakes, eofs, errors, drains, closes, reads;
    bool eof_clean;
    bool want_resume;
    char err[512];
    size_t rx, tx, to_send;
    char version[32], alpn[32], peer_cn[64], sni[64];
    int peer_cn_rc;
};

struct tctx {
    uv_loop_t loop;
    struct conn_loop *cl;
    uv_tcp_t lsn[2];
    enum role lsn_role[2];
    struct sockaddr_in lsn_addr[2];
    int nlsn;
    uv_timer_t tick, timeout;
    SSL_CTX *server_ctx; /* NULL: plaintext */
    SSL_CTX *client_ctx;
    const char *server_name;
    struct peer peers[MAX_PEERS];
    int npeers, created, closed;
    uint64_t rng;
    /* scenario */
    bool echo;             /* the server echoes what it consumes */
    bool partial;          /* both ends sometimes consume only a prefix */
    bool client_shutdown;  /* client: conn_shutdown once everything is written */
    bool client_end;       /* client: conn_end once everything is written */
    bool client_early;     /* client: writes before the connect completes (plaintext) */
    bool small_watermarks; /* client: watermarks 0/1, so that every write waits for on_drain */
    size_t reply;          /* server: bytes written after the client's EOF, then conn_end */
    bool bare_fin;         /* the proxy sends a bare FIN to the server once all data passed */
    bool direct_tls;       /* server: plaintext accept, TLS switched on from inside on_read */
    bool server_idle;      /* server: never starts reading */
    bool server_close_on_handshake;
};

static uint8_t *g_src;
static char g_dir[64];
static char g_ca[128], g_ca2[128], g_srv_crt[128], g_srv_key[128], g_cli_crt[128], g_cli_key[128],
    g_open_key[128];

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rnd(struct tctx *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng;
}

static struct peer *peer_new(struct tctx *t, enum role role)
{
    struct peer *p;

    assert_true(t->npeers < MAX_PEERS);
    p = &t->peers[t->npeers++];
    memset(p, 0, sizeof(*p));
    p->t = t;
    p->role = role;
    p->peer_cn_rc = 1;
    return p;
}

static struct peer *peer_find(struct tctx *t, enum role role)
{
    for (int i = 0; i < t->npeers; i++)
        if (t->peers[i].role == role)
            return &t->peers[i];
    return NULL;
}

static void check_rx(struct peer *p, const uint8_t *data, size_t len)
{
    assert_true(p->rx + len <= SRC_LEN);
    if (memcmp(data, g_src + p->rx, len) != 0)
        fail_msg("role %d: data mismatch at offset %zu", p->role, p->rx);
    p->rx += len;
}

/* ---- callbacks ------------------------------------------------------------------------------ */

static void client_write_some(struct peer *p);
static void tick_cb(uv_timer_t *h);

static void tick_arm(struct tctx *t)
{
    uv_timer_start(&t->tick, tick_cb, 1, 0);
}

static void on_connect(struct conn *c, int status)
{
    struct peer *p = conn_data(c);
    struct tctx *t = p->t;

    p->connects++;
    p->connect_status = status;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (p->role == ROLE_CLIENT && t->client_ctx)
        assert_int_equal(conn_tls_client(c, t->client_ctx, t->server_name), 0);
    assert_int_equal(conn_read_start(c), 0);
    if (p->role == ROLE_CLIENT)
        client_write_some(p);
}

static void on_handshake(struct conn *c)
{
    struct peer *p = conn_data(c);
    const char *s;

    p->handshakes++;
    if ((s = conn_tls_version(c)))
        snprintf(p->version, sizeof(p->version), "%s", s);
    conn_tls_alpn(c, p->alpn, sizeof(p->alpn));
    if ((s = conn_tls_sni(c)))
        snprintf(p->sni, sizeof(p->sni), "%s", s);
    p->peer_cn_rc = conn_tls_peer_cn(c, p->peer_cn, sizeof(p->peer_cn));
    assert_non_null(conn_tls_cipher(c));
    if (p->role == ROLE_SERVER && p->t->server_close_on_handshake)
        conn_close(c);
}

static size_t server_read(struct peer *p, const uint8_t *data, size_t len)
{
    struct tctx *t = p->t;
    size_t used = len;

    if (!conn_tls_version(p->c) && t->direct_tls) {
        /* direct TLS: the first bytes were a ClientHello; hand a few over as "pre" and leave
         * the rest unconsumed, which the conn must treat as ciphertext too */
        size_t pre = len < 3 ? len : 3;

        assert_int_equal(conn_tls_server(p->c, t->server_ctx, data, pre), 0);
        return pre;
    }
    if (t->partial && rnd(t) % 4 == 0) {
        used = (size_t)(rnd(t) % len);
        p->want_resume = true;
        tick_arm(t);
    }
    check_rx(p, data, used);
    if (t->echo && used > 0) {
        assert_int_equal(conn_write(p->c, data, used), 0);
        if (!conn_writable(p->c))
            conn_read_stop(p->c); /* resumed by on_drain */
    }
    if (t->bare_fin && p->rx == peer_find(t, ROLE_CLIENT)->to_send) {
        struct peer *out = peer_find(t, ROLE_PROXY_OUT);
        assert_int_equal(conn_shutdown(out->c), 0);
    }
    return used;
}

static size_t on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct peer *p = conn_data(c);
    struct tctx *t = p->t;
    size_t used = len;

    assert_false(conn_closing(c));
    assert_true(len > 0);
    p->reads++;
    switch (p->role) {
    case ROLE_SERVER:
        return server_read(p, data, len);
    case ROLE_CLIENT:
        if (t->partial && rnd(t) % 8 == 0) {
            used = (size_t)(rnd(t) % len);
            p->want_resume = true;
            tick_arm(t);
        }
        check_rx(p, data, used);
        return used;
    case ROLE_PROXY_IN:
    case ROLE_PROXY_OUT:
        if (p->pair && !conn_closing(p->pair->c))
            conn_write(p->pair->c, data, len); /* EPIPE after a test-made shutdown is fine */
        return len;
    }
    return len;
}

static void server_after_eof(struct peer *p)
{
    struct tctx *t = p->t;

    if (t->bare_fin) {
        conn_close(p->c); /* no close_notify: the client must see a bare FIN as well */
        return;
    }
    for (size_t off = 0; off < t->reply; off += 64 * 1024)
        assert_int_equal(conn_write(p->c, g_src + off, 64 * 1024), 0);
    p->tx = t->reply;
    conn_end(p->c);
}

static void on_eof(struct conn *c)
{
    struct peer *p = conn_data(c);

    assert_false(conn_closing(c));
    p->eofs++;
    p->eof_clean = conn_eof_clean(c);
    switch (p->role) {
    case ROLE_SERVER:
        server_after_eof(p);
        break;
    case ROLE_CLIENT:
        conn_close(c);
        break;
    case ROLE_PROXY_IN:
    case ROLE_PROXY_OUT:
        if (p->pair) {
            conn_shutdown(p->pair->c);
            if (p->pair->eofs) {
                conn_end(p->pair->c);
                conn_end(c);
            }
        } else {
            conn_end(c);
        }
        break;
    }
}

static void on_error(struct conn *c, int err, const char *reason)
{
    struct peer *p = conn_data(c);

    assert_true(conn_closing(c));
    assert_true(err < 0);
    p->errors++;
    snprintf(p->err, sizeof(p->err), "%s", reason);
    if (p->pair)
        conn_close(p->pair->c);
}

static void on_drain(struct conn *c)
{
    struct peer *p = conn_data(c);

    p->drains++;
    if (p->role == ROLE_CLIENT)
        client_write_some(p);
    else if (p->role == ROLE_SERVER && !p->eofs)
        conn_read_start(c);
}

static void on_close(struct conn *c)
{
    struct peer *p = conn_data(c);

    p->closes++;
    p->t->closed++;
    if (p->pair) {
        p->pair->pair = NULL;
        conn_end(p->pair->c);
    }
    if (p->role == ROLE_CLIENT && p->t->server_idle) {
        struct peer *s = peer_find(p->t, ROLE_SERVER);
        if (s && !s->closes)
            conn_close(s->c);
    }
}

static const struct conn_ops test_ops = {
    .on_connect = on_connect,
    .on_handshake = on_handshake,
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_drain = on_drain,
    .on_close = on_close,
};

static void client_write_some(struct peer *p)
{
    struct tctx *t = p->t;
    int writes = 0;

    if (conn_closing(p->c))
        return;
    while (p->tx < p->to_send && conn_writable(p->c) && writes++ < 16) {
        size_t left = p->to_send - p->tx;
        size_t n = 1 + (size_t)(rnd(t) % 40000);

        if (rnd(t) % 4 == 0)
            n = 1 + (size_t)(rnd(t) % 100); /* small ones, to be coalesced */
        if (n > left)
            n = left;
        assert_int_equal(conn_write(p->c, g_src + p->tx, n), 0);
        p->tx += n;
    }
    if (p->tx < p->to_send) {
        if (conn_writable(p->c))
            tick_arm(t); /* go on next turn; otherwise on_drain resumes */
        return;
    }
    if (t->client_shutdown)
        assert_int_equal(conn_shutdown(p->c), 0);
    else if (t->client_end)
        conn_end(p->c);
}

static void tick_cb(uv_timer_t *h)
{
    struct tctx *t = h->data;

    for (int i = 0; i < t->npeers; i++) {
        struct peer *p = &t->peers[i];

        if (p->closes || !p->c)
            continue;
        if (p->want_resume) {
            p->want_resume = false;
            if (!conn_closing(p->c))
                conn_read_start(p->c);
        }
        if (p->role == ROLE_CLIENT && p->tx < p->to_send && p->connects)
            client_write_some(p);
    }
}

static void timeout_cb(uv_timer_t *h)
{
    struct tctx *t = h->data;

    for (int i = 0; i < t->npeers; i++) {
        struct peer *p = &t->peers[i];
        print_message("peer %d role %d: rx %zu tx %zu/%zu eofs %d errors %d closes %d err %s\n", i,
                      p->role, p->rx, p->tx, p->to_send, p->eofs, p->errors, p->closes, p->err);
    }
    fail_msg("test timed out");
}

static struct peer *conn_for_kind(struct tctx *t, enum role role, bool pipe)
{
    struct peer *p = peer_new(t, role);

    p->c = conn_new(t->cl, &test_ops, p, pipe);
    assert_non_null(p->c);
    t->created++;
    return p;
}

static struct peer *conn_for(struct tctx *t, enum role role)
{
    return conn_for_kind(t, role, false);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tctx *t = server->data;
    enum role role = (uv_tcp_t *)server == &t->lsn[0] ? t->lsn_role[0] : t->lsn_role[1];
    struct peer *p;

    assert_int_equal(status, 0);
    p = conn_for(t, role);
    assert_int_equal(conn_accept(p->c, server), 0);
    assert_true(strncmp(conn_peer_addr(p->c), "127.0.0.1:", 10) == 0);
    if (role == ROLE_PROXY_IN) {
        struct peer *out = conn_for(t, ROLE_PROXY_OUT);
        p->pair = out;
        out->pair = p;
        assert_int_equal(conn_connect_tcp(out->c, (const struct sockaddr *)&t->lsn_addr[1]), 0);
        assert_int_equal(conn_read_start(p->c), 0);
        return;
    }
    if (t->server_idle)
        return;
    if (t->server_ctx && !t->direct_tls)
        assert_int_equal(conn_tls_server(p->c, t->server_ctx, NULL, 0), 0);
    assert_int_equal(conn_read_start(p->c), 0);
}

/* ---- per-test loop ------------------------------------------------------------------------- */

static struct tctx *tctx_new(void)
{
    struct tctx *t = calloc(1, sizeof(*t));

    assert_non_null(t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    t->cl = conn_loop_new(&t->loop);
    assert_non_null(t->cl);
    uv_timer_init(&t->loop, &t->tick);
    uv_timer_init(&t->loop, &t->timeout);
    t->tick.data = t;
    t->timeout.data = t;
    uv_timer_start(&t->timeout, timeout_cb, TEST_TIMEOUT_MS, 0);
    uv_unref((uv_handle_t *)&t->timeout);
    t->rng = 0x9e3779b97f4a7c15ull;
    return t;
}

static void listen_on(struct tctx *t, enum role role)
{
    int i = t->nlsn++;
    struct sockaddr_in a;
    int len = sizeof(t->lsn_addr[i]);

    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_init(&t->loop, &t->lsn[i]), 0);
    t->lsn[i].data = t;
    t->lsn_role[i] = role;
    assert_int_equal(uv_tcp_bind(&t->lsn[i], (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&t->lsn[i], 16, on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&t->lsn[i], (struct sockaddr *)&t->lsn_addr[i], &len), 0);
    uv_unref((uv_handle_t *)&t->lsn[i]); /* the loop ends when the conns are done */
}

/* Listener 0 takes the client (the proxy when proxied); listener 1 is the server behind it. */
static struct peer *start(struct tctx *t, bool proxied, size_t to_send)
{
    struct peer *p;

    if (proxied) {
        listen_on(t, ROLE_PROXY_IN);
        listen_on(t, ROLE_SERVER);
    } else {
        listen_on(t, ROLE_SERVER);
    }
    p = conn_for(t, ROLE_CLIENT);
    p->to_send = to_send;
    if (t->small_watermarks)
        conn_set_watermarks(p->c, 0, 1);
    assert_int_equal(conn_connect_tcp(p->c, (const struct sockaddr *)&t->lsn_addr[0]), 0);
    if (t->client_early)
        client_write_some(p); /* held until the connect completes */
    return p;
}

/* Runs the loop until every conn has closed (the listeners and the timeout are unref'd). */
static void run(struct tctx *t)
{
    uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* Checks that every conn got one on_close, closes the rest and checks that nothing leaked. */
static void finish(struct tctx *t)
{
    for (int i = 0; i < t->npeers; i++)
        assert_int_equal(t->peers[i].closes, 1);
    assert_int_equal(t->closed, t->created);
    for (int i = 0; i < t->nlsn; i++)
        uv_close((uv_handle_t *)&t->lsn[i], NULL);
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_close((uv_handle_t *)&t->timeout, NULL);
    conn_loop_close(t->cl);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    conn_loop_free(t->cl);
    SSL_CTX_free(t->server_ctx);
    SSL_CTX_free(t->client_ctx);
    free(t);
}

/* ---- TLS contexts -------------------------------------------------------------------------- */

static SSL_CTX *server_ctx(bool client_ca, bool require, const char *alpn, bool alpn_required)
{
    char err[PGB_ERR_MAX];
    struct tls_server_opts o = {
        .cert_file = g_srv_crt,
        .key_file = g_srv_key,
        .client_ca_file = client_ca ? g_ca : NULL,
        .require_client_cert = require,
        .min_version = TLS1_3_VERSION,
        .alpn = alpn,
        .alpn_required = alpn_required,
    };
    SSL_CTX *ctx = tls_server_ctx_new(&o, err, sizeof(err));

    if (!ctx)
        fail_msg("tls_server_ctx_new: %s", err);
    return ctx;
}

static SSL_CTX *client_ctx(const char *ca, bool with_cert, const char *alpn)
{
    char err[PGB_ERR_MAX];
    struct tls_client_opts o = {
        .ca_file = ca,
        .cert_file = with_cert ? g_cli_crt : NULL,
        .key_file = with_cert ? g_cli_key : NULL,
        .alpn = alpn,
    };
    SSL_CTX *ctx = tls_client_ctx_new(&o, err, sizeof(err));

    if (!ctx)
        fail_msg("tls_client_ctx_new: %s", err);
    return ctx;
}

/* ---- tests --------------------------------------------------------------------------------- */

/* (1) plaintext echo of 1 MiB: random chunking (small writes coalesced), writes made before the
 * connect completes, a writer paced by on_drain, partial consumption on both ends. */
static void test_plain_echo(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->echo = true;
    t->partial = true;
    t->client_shutdown = true;
    t->client_early = true;
    t->small_watermarks = true;
    cli = start(t, false, MIB);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_non_null(srv);
    assert_int_equal(srv->rx, MIB);
    assert_int_equal(cli->rx, MIB);
    assert_int_equal(cli->errors + srv->errors, 0);
    assert_int_equal(srv->eofs, 1);
    assert_int_equal(cli->eofs, 1);
    assert_false(cli->eof_clean); /* plaintext: a FIN is never "clean" */
    assert_false(srv->eof_clean);
    assert_true(cli->drains > 0);
    assert_int_equal(cli->handshakes + srv->handshakes, 0);
    finish(t);
}

/* (2) mutual TLS echo of 4 MiB: identity, version, ALPN, SNI; close_notify both ways. */
static void test_tls_echo(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = server_ctx(true, true, "pgburrow/1", true);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "localhost";
    t->echo = true;
    t->partial = true;
    t->client_shutdown = true;
    cli = start(t, false, SRC_LEN);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_non_null(srv);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_int_equal(srv->handshakes, 1);
    assert_int_equal(cli->handshakes, 1);
    assert_string_equal(srv->version, "TLSv1.3");
    assert_string_equal(cli->version, "TLSv1.3");
    assert_string_equal(srv->alpn, "pgburrow/1");
    assert_string_equal(cli->alpn, "pgburrow/1");
    assert_string_equal(srv->sni, "localhost");
    assert_int_equal(srv->peer_cn_rc, 0);
    assert_string_equal(srv->peer_cn, "agent1");
    assert_int_equal(cli->peer_cn_rc, 0);
    assert_string_equal(cli->peer_cn, "localhost");
    assert_int_equal(srv->rx, SRC_LEN);
    assert_int_equal(cli->rx, SRC_LEN);
    assert_int_equal(srv->eofs, 1);
    assert_int_equal(cli->eofs, 1);
    assert_true(srv->eof_clean); /* (7) close_notify from conn_shutdown */
    assert_true(cli->eof_clean); /* close_notify from conn_end */
    finish(t);
}

/* Direct TLS (the server switches from inside on_read, with "pre" bytes and an unconsumed
 * rest), an IP literal as server name (IP SAN verified, no SNI), no client certificate asked:
 * no peer CN. */
static void test_tls_direct_ip(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = server_ctx(false, false, "pgburrow/1", false);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "127.0.0.1";
    t->direct_tls = true;
    t->echo = true;
    t->client_shutdown = true;
    cli = start(t, false, 256 * 1024);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_int_equal(srv->handshakes, 1);
    assert_string_equal(srv->sni, "");
    assert_int_equal(srv->peer_cn_rc, -ENOENT);
    assert_int_equal(cli->rx, 256 * 1024);
    assert_true(srv->eof_clean);
    finish(t);
}

/* TLS 1.2 with 8 KiB records, as the relay's client listener runs it. */
static void test_tls12_small_records(void **state)
{
    char err[PGB_ERR_MAX];
    struct tls_server_opts o = {
        .cert_file = g_srv_crt,
        .key_file = g_srv_key,
        .max_version = TLS1_2_VERSION,
        .alpn = "postgresql",
        .max_send_fragment = 8192,
    };
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = tls_server_ctx_new(&o, err, sizeof(err));
    if (!t->server_ctx)
        fail_msg("%s", err);
    t->client_ctx = client_ctx(g_ca, false, "postgresql");
    t->server_name = "localhost";
    t->echo = true;
    t->partial = true;
    t->client_shutdown = true;
    cli = start(t, false, MIB);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_string_equal(srv->version, "TLSv1.2");
    assert_string_equal(cli->alpn, "postgresql");
    assert_int_equal(cli->rx, MIB);
    assert_true(srv->eof_clean);
    assert_true(cli->eof_clean);
    finish(t);
}

static void on_pipe_connection(uv_stream_t *server, int status)
{
    struct tctx *t = server->data;
    struct peer *p;

    assert_int_equal(status, 0);
    p = conn_for_kind(t, ROLE_SERVER, true);
    assert_int_equal(conn_accept(p->c, server), 0);
    assert_string_equal(conn_peer_addr(p->c), "unix");
    assert_int_equal(conn_read_start(p->c), 0);
}

/* A Unix-socket conn (the agent's way to a local PostgreSQL). */
static void test_pipe_echo(void **state)
{
    struct tctx *t = tctx_new();
    uv_pipe_t lsn;
    char path[160];
    struct peer *cli, *srv;

    snprintf(path, sizeof(path), "%s/.s.PGSQL.5432", g_dir);
    assert_int_equal(uv_pipe_init(&t->loop, &lsn, 0), 0);
    lsn.data = t;
    assert_int_equal(uv_pipe_bind(&lsn, path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&lsn, 4, on_pipe_connection), 0);
    uv_unref((uv_handle_t *)&lsn);
    t->echo = true;
    t->partial = true;
    t->client_shutdown = true;
    cli = conn_for_kind(t, ROLE_CLIENT, true);
    cli->to_send = 300000;
    assert_int_equal(conn_connect_tcp(cli->c, (const struct sockaddr *)&t->lsn_addr[0]), UV_EINVAL);
    assert_int_equal(conn_connect_pipe(cli->c, path), 0);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_non_null(srv);
    assert_int_equal(cli->errors + srv->errors, 0);
    assert_int_equal(srv->rx, 300000);
    assert_int_equal(cli->rx, 300000);
    uv_close((uv_handle_t *)&lsn, NULL);
    finish(t);
    unlink(path);
}

static struct tctx *handshake_failure(SSL_CTX *sctx, SSL_CTX *cctx, const char *name)
{
    struct tctx *t = tctx_new();

    t->server_ctx = sctx;
    t->client_ctx = cctx;
    t->server_name = name;
    t->client_shutdown = true;
    start(t, false, 1000);
    run(t);
    return t;
}

/* (3) a client that does not trust the server's CA, and a name the certificate lacks. */
static void test_tls_wrong_ca(void **state)
{
    struct tctx *t = handshake_failure(server_ctx(true, true, "pgburrow/1", false),
                                       client_ctx(g_ca2, true, "pgburrow/1"), "localhost");
    struct peer *cli = peer_find(t, ROLE_CLIENT), *srv = peer_find(t, ROLE_SERVER);

    assert_int_equal(cli->errors, 1);
    assert_int_equal(cli->handshakes, 0);
    assert_non_null(strstr(cli->err, "certificate verify failed: unable to get local issuer"));
    assert_int_equal(srv->errors, 1);
    assert_non_null(strstr(srv->err, "unknown ca"));
    assert_int_equal(srv->handshakes, 0);
    finish(t);

    t = handshake_failure(server_ctx(true, true, "pgburrow/1", false),
                          client_ctx(g_ca, true, "pgburrow/1"), "db.example.org");
    cli = peer_find(t, ROLE_CLIENT);
    assert_int_equal(cli->errors, 1);
    assert_non_null(strstr(cli->err, "certificate verify failed: hostname mismatch"));
    finish(t);
}

/* (4) the server requires a client certificate; the client has none. */
static void test_tls_client_cert_required(void **state)
{
    struct tctx *t = handshake_failure(server_ctx(true, true, "pgburrow/1", false),
                                       client_ctx(g_ca, false, "pgburrow/1"), "localhost");
    struct peer *cli = peer_find(t, ROLE_CLIENT), *srv = peer_find(t, ROLE_SERVER);

    assert_int_equal(srv->errors, 1);
    assert_int_equal(srv->handshakes, 0);
    assert_non_null(strstr(srv->err, "peer did not return a certificate"));
    /* TLS 1.3: the client is done before the server checks; it learns from the alert */
    assert_int_equal(cli->errors, 1);
    assert_non_null(strstr(cli->err, "certificate required"));
    assert_int_equal(cli->rx, 0);
    finish(t);
}

/* (5) ALPN: offered but different; not offered while required; not offered, not required. */
static void test_alpn(void **state)
{
    struct tctx *t = handshake_failure(server_ctx(true, true, "pgburrow/1", false),
                                       client_ctx(g_ca, true, "postgresql"), "localhost");
    struct peer *cli = peer_find(t, ROLE_CLIENT), *srv = peer_find(t, ROLE_SERVER);

    assert_int_equal(srv->errors, 1);
    assert_non_null(strstr(srv->err, "no application protocol"));
    assert_non_null(strstr(srv->err, "postgresql"));
    assert_int_equal(cli->errors, 1);
    assert_non_null(strstr(cli->err, "no application protocol"));
    finish(t);

    t = handshake_failure(server_ctx(true, true, "pgburrow/1", true), client_ctx(g_ca, true, NULL),
                          "localhost");
    cli = peer_find(t, ROLE_CLIENT);
    srv = peer_find(t, ROLE_SERVER);
    assert_int_equal(srv->errors, 1);
    assert_non_null(strstr(srv->err, "client did not offer ALPN pgburrow/1"));
    assert_int_equal(cli->errors, 1);
    finish(t);

    t = tctx_new();
    t->server_ctx = server_ctx(true, true, "pgburrow/1", false);
    t->client_ctx = client_ctx(g_ca, true, NULL);
    t->server_name = "localhost";
    t->echo = true;
    t->client_shutdown = true;
    cli = start(t, false, 1000);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_int_equal(cli->errors + srv->errors, 0);
    assert_int_equal(srv->handshakes, 1);
    assert_string_equal(srv->alpn, "");
    assert_int_equal(cli->rx, 1000);
    finish(t);
}

/* (6) key files readable by others are refused, as PostgreSQL does; helpers. */
static void test_tls_files_and_helpers(void **state)
{
    char err[PGB_ERR_MAX], cn[64];
    struct tls_server_opts so = {.cert_file = g_srv_crt, .key_file = g_open_key};
    struct tls_client_opts co = {.ca_file = g_ca, .cert_file = g_srv_crt, .key_file = g_open_key};
    int v = 0;
    FILE *f;
    X509 *x;

    assert_null(tls_server_ctx_new(&so, err, sizeof(err)));
    assert_non_null(strstr(err, "has group or world access; permissions should be u=rw (0600)"));
    assert_non_null(strstr(err, g_open_key));
    assert_null(tls_client_ctx_new(&co, err, sizeof(err)));
    assert_non_null(strstr(err, "has group or world access"));
    assert_int_equal(tls_check_key_file(g_srv_key, err, sizeof(err)), 0);
    assert_true(tls_check_key_file(g_dir, err, sizeof(err)) < 0);
    assert_true(tls_check_key_file("/nonexistent/key", err, sizeof(err)) < 0);
    so.key_file = g_cli_key; /* a key that does not match the certificate */
    assert_null(tls_server_ctx_new(&so, err, sizeof(err)));
    assert_non_null(strstr(err, "does not match"));
    so.key_file = g_srv_key;
    so.cert_file = "/nonexistent/cert";
    assert_null(tls_server_ctx_new(&so, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file"));

    assert_int_equal(tls_parse_version("TLSv1.2", &v), 0);
    assert_int_equal(v, TLS1_2_VERSION);
    assert_int_equal(tls_parse_version("TLSv1.3", &v), 0);
    assert_int_equal(v, TLS1_3_VERSION);
    assert_true(tls_parse_version("TLSv1.1", &v) < 0);
    assert_true(tls_parse_version("TLSv1", &v) < 0);

    f = fopen(g_cli_crt, "r");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    assert_int_equal(tls_cert_common_name(x, cn, sizeof(cn)), 0);
    assert_string_equal(cn, "agent1");
    assert_true(tls_cert_common_name(x, cn, 4) < 0); /* does not fit: refused, not truncated */
    X509_free(x);
}

/* (7) through a plaintext proxy: close_notify is clean; a bare FIN after the handshake is not. */
static void test_eof_clean_and_bare_fin(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = server_ctx(true, true, "pgburrow/1", true);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "localhost";
    t->echo = true;
    t->client_shutdown = true;
    cli = start(t, true, 100000);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_int_equal(srv->rx, 100000);
    assert_int_equal(cli->rx, 100000);
    assert_true(srv->eof_clean);
    assert_true(cli->eof_clean);
    finish(t);

    t = tctx_new();
    t->server_ctx = server_ctx(true, true, "pgburrow/1", true);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "localhost";
    t->bare_fin = true;
    cli = start(t, true, 100000);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_int_equal(srv->rx, 100000);
    assert_int_equal(srv->eofs, 1);
    assert_false(srv->eof_clean);
    assert_int_equal(cli->eofs, 1);
    assert_false(cli->eof_clean);
    finish(t);
}

/* (8) half-close: the client shuts down its side after 256 KiB; the server then sends 1 MiB
 * and ends; the client gets all of it and a clean EOF. */
static void test_half_close(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = server_ctx(true, true, "pgburrow/1", true);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "localhost";
    t->client_shutdown = true;
    t->reply = MIB;
    cli = start(t, false, 256 * 1024);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    if (cli->errors || srv->errors)
        fail_msg("client: %s / server: %s", cli->err, srv->err);
    assert_int_equal(srv->rx, 256 * 1024);
    assert_true(srv->eof_clean);
    assert_int_equal(cli->rx, MIB);
    assert_int_equal(cli->eofs, 1);
    assert_true(cli->eof_clean);
    finish(t);

    /* the same in plaintext */
    t = tctx_new();
    t->client_shutdown = true;
    t->reply = MIB;
    cli = start(t, false, 256 * 1024);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_int_equal(cli->errors + srv->errors, 0);
    assert_int_equal(srv->rx, 256 * 1024);
    assert_int_equal(cli->rx, MIB);
    finish(t);
}

/* conn_end toward a peer that never reads: the conn still closes, after the bound. */
static void test_end_bounded(void **state)
{
    struct tctx *t;
    struct peer *cli;
    uint64_t t0;

    t = tctx_new();
    t->server_idle = true;
    start(t, false, 0);
    cli = peer_find(t, ROLE_CLIENT);
    cli->to_send = 0;
    /* fill the socket: 64 MiB the server never reads */
    uv_run(&t->loop, UV_RUN_NOWAIT);
    while (!cli->connects)
        uv_run(&t->loop, UV_RUN_ONCE);
    for (int i = 0; i < 16; i++)
        assert_int_equal(conn_write(cli->c, g_src, SRC_LEN), 0);
    assert_false(conn_writable(cli->c));
    t0 = uv_now(&t->loop);
    conn_end(cli->c);
    assert_true(conn_closing(cli->c));
    assert_int_equal(conn_write(cli->c, "x", 1), UV_EPIPE);
    run(t);
    assert_int_equal(cli->closes, 1);
    assert_int_equal(cli->errors, 0); /* nothing is reported after conn_end */
    assert_true(uv_now(&t->loop) - t0 >= 4000);
    finish(t);
}

/* A conn no owner took yet (the relay accepts a tunnel before the tunnel exists; the accept
 * can fail when the peer is gone) closes without ops: no callback, no leak. */
static void test_close_without_ops(void **state)
{
    struct tctx *t = tctx_new();
    struct conn *c = conn_new(t->cl, NULL, NULL, false);

    assert_non_null(c);
    assert_int_equal(conn_write(c, "x", 1), 0); /* pending, never sent */
    conn_close(c);
    run(t);
    finish(t);
}

/* Re-entrant closes: from inside on_handshake, and twice. */
static void test_close_in_callbacks(void **state)
{
    struct tctx *t = tctx_new();
    struct peer *cli, *srv;

    t->server_ctx = server_ctx(true, true, "pgburrow/1", true);
    t->client_ctx = client_ctx(g_ca, true, "pgburrow/1");
    t->server_name = "localhost";
    t->server_close_on_handshake = true;
    cli = start(t, false, 100000);
    run(t);
    srv = peer_find(t, ROLE_SERVER);
    assert_int_equal(srv->handshakes, 1);
    assert_int_equal(srv->reads, 0);
    assert_int_equal(srv->errors, 0);
    assert_int_equal(srv->closes, 1);
    assert_true(cli->eofs + cli->errors == 1);
    finish(t);

    /* closing twice, and closing a conn that never connected */
    t = tctx_new();
    cli = conn_for(t, ROLE_CLIENT);
    conn_close(cli->c);
    conn_close(cli->c);
    assert_int_equal(cli->closes, 0); /* never from inside conn_close */
    run(t);
    assert_int_equal(cli->closes, 1);
    finish(t);
}

/* ---- on_drain and bytes of the current turn ------------------------------------------------ */

/*
 * The ordering behind a stall of the tunnel's flow control: in one poll event libuv reads a
 * conn first and then writes its queue. The read callback writes new bytes B (pending until
 * the end of the turn); the queue then empties and the write callback of the older bytes A
 * comes while B still waits. An owner that returns credit for what the conn has handed on
 * (the tunnel, watermarks 0 / 1) must get its last on_drain after B is gone too: with a low
 * mark above B's size the drain came at A's callback, the owner saw B queued, and no drain
 * followed B's flush (the tunnel's window stayed shut). Driven deterministically: a raw peer
 * socket, from an idle handle each loop turn, first sends one byte (the conn turns readable, its
 * on_read writes B) and then reads what it can (the conn turns writable), with small socket
 * buffers so that A waits in libuv's queue; A's completion always shares its event with a B.
 */
struct dr {
    struct conn *c;
    int raw; /* the peer end, plain blocking-free socket */
    int lsn; /* its listener */
    uv_idle_t idle;
    size_t a_len, tx, rx, pings;
    int drains, closes, connects;
    size_t last_drain_backlog, tx_at_last_drain;
    bool stop_b; /* no B after the first drain */
};

static void dr_write(struct dr *d, size_t n)
{
    assert_true(d->tx + n <= SRC_LEN);
    assert_int_equal(conn_write(d->c, g_src + d->tx, n), 0);
    d->tx += n;
}

/* The conn's own socket (the one whose address is the raw end's peer) gets a small send
 * buffer, so that A waits in libuv's queue instead of the kernel's. */
static void dr_small_sndbuf(struct dr *d)
{
    struct sockaddr_in peer, me;
    socklen_t plen = sizeof(peer), mlen;
    int small = 16 * 1024, found = 0;

    assert_int_equal(getpeername(d->raw, (struct sockaddr *)&peer, &plen), 0);
    for (int fd = 3; fd < 1024; fd++) {
        mlen = sizeof(me);
        if (fd == d->raw || getsockname(fd, (struct sockaddr *)&me, &mlen) != 0 || mlen != plen ||
            memcmp(&me, &peer, plen) != 0)
            continue;
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        found++;
    }
    assert_int_equal(found, 1);
}

static void dr_on_connect(struct conn *c, int status)
{
    struct dr *d = conn_data(c);

    assert_int_equal(status, 0);
    d->connects++;
    d->raw = accept4(d->lsn, NULL, NULL, SOCK_NONBLOCK);
    assert_true(d->raw >= 0);
    dr_small_sndbuf(d);
    assert_int_equal(conn_read_start(c), 0);
    for (size_t off = 0; off < d->a_len; off += 64 * 1024)
        dr_write(d, 64 * 1024); /* A: far more than the socket buffers take at once */
}

static size_t dr_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct dr *d = conn_data(c);

    (void)data;
    d->pings += len;
    if (!d->stop_b)
        dr_write(d, 100); /* B, in the same event as A's last write callback */
    return len;
}

static void dr_on_drain(struct conn *c)
{
    struct dr *d = conn_data(c);

    d->drains++;
    d->last_drain_backlog = conn_backlog(c);
    d->tx_at_last_drain = d->tx;
    d->stop_b = true;
}

static void dr_on_close(struct conn *c)
{
    struct dr *d = conn_data(c);

    d->closes++;
}

static const struct conn_ops dr_ops = {
    .on_connect = dr_on_connect,
    .on_read = dr_on_read,
    .on_drain = dr_on_drain,
    .on_close = dr_on_close,
};

static void dr_idle(uv_idle_t *h)
{
    struct dr *d = h->data;
    uint8_t buf[65536];
    ssize_t n;

    if (d->raw < 0)
        return;
    if (!d->stop_b)
        assert_int_equal(send(d->raw, "p", 1, 0), 1);
    while ((n = recv(d->raw, buf, sizeof(buf), 0)) > 0) {
        assert_true(d->rx + (size_t)n <= d->tx);
        assert_memory_equal(buf, g_src + d->rx, (size_t)n);
        d->rx += (size_t)n;
    }
    if (d->stop_b && d->rx == d->tx && conn_backlog(d->c) == 0) {
        uv_idle_stop(h);
        conn_close(d->c);
    }
}

static void test_drain_after_bytes_of_this_turn(void **state)
{
    struct tctx *t = tctx_new();
    struct dr d = {.raw = -1, .a_len = 2 * MIB};
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d.lsn = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(d.lsn >= 0);
    assert_int_equal(setsockopt(d.lsn, SOL_SOCKET, SO_RCVBUF, &(int){16 * 1024}, sizeof(int)), 0);
    assert_int_equal(bind(d.lsn, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(d.lsn, 1), 0);
    assert_int_equal(getsockname(d.lsn, (struct sockaddr *)&a, &alen), 0);
    d.c = conn_new(t->cl, &dr_ops, &d, false);
    assert_non_null(d.c);
    conn_set_watermarks(d.c, 0, 1); /* as the tunnel sets a stream's local conn */
    assert_int_equal(conn_connect_tcp(d.c, (const struct sockaddr *)&a), 0);
    uv_idle_init(&t->loop, &d.idle);
    d.idle.data = &d;
    uv_idle_start(&d.idle, dr_idle);
    run(t);
    assert_int_equal(d.connects, 1);
    assert_int_equal(d.closes, 1);
    assert_true(d.pings > 0); /* B really was written from on_read */
    assert_true(d.drains >= 1);
    assert_int_equal(d.rx, d.tx);
    assert_int_equal(d.last_drain_backlog, 0);  /* every byte handed on ... */
    assert_int_equal(d.tx_at_last_drain, d.tx); /* ... and none written after it */
    uv_close((uv_handle_t *)&d.idle, NULL);
    close(d.raw);
    close(d.lsn);
    t->created = t->closed = 0;
    finish(t);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    char cmd[4096];
    uint64_t x = 0x243f6a8885a308d3ull;

    snprintf(g_dir, sizeof(g_dir), "/tmp/pgb-test-conn-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_ca, sizeof(g_ca), "%s/ca.crt", g_dir);
    snprintf(g_ca2, sizeof(g_ca2), "%s/ca2.crt", g_dir);
    snprintf(g_srv_crt, sizeof(g_srv_crt), "%s/server.crt", g_dir);
    snprintf(g_srv_key, sizeof(g_srv_key), "%s/server.key", g_dir);
    snprintf(g_cli_crt, sizeof(g_cli_crt), "%s/client.crt", g_dir);
    snprintf(g_cli_key, sizeof(g_cli_key), "%s/client.key", g_dir);
    snprintf(g_open_key, sizeof(g_open_key), "%s/open.key", g_dir);
    snprintf(cmd, sizeof(cmd),
             "set -e; cd '%s'; umask 077; "
             "printf '[req]\\ndistinguished_name=dn\\n[dn]\\n"
             "[ca]\\nbasicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n"
             "[server]\\nbasicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
             "extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n"
             "[client]\\nbasicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
             "extendedKeyUsage=clientAuth\\n' > x.cnf; "
             "for n in ca ca2 server client; do "
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $n.key; "
             "chmod 600 $n.key; done; "
             "openssl req -config x.cnf -new -x509 -key ca.key -subj /CN=test-ca -extensions ca "
             "-days 2 -out ca.crt; "
             "openssl req -config x.cnf -new -x509 -key ca2.key -subj /CN=other-ca -extensions ca "
             "-days 2 -out ca2.crt; "
             "openssl req -config x.cnf -new -key server.key -subj /CN=localhost -out server.csr; "
             "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile x.cnf -extensions server -out server.crt 2>/dev/null; "
             "openssl req -config x.cnf -new -key client.key -subj /CN=agent1 -out client.csr; "
             "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile x.cnf -extensions client -out client.crt 2>/dev/null; "
             "cp server.key open.key; chmod 644 open.key",
             g_dir);
    if (system(cmd) != 0)
        return -1;
    if (!(g_src = malloc(SRC_LEN)))
        return -1;
    for (size_t i = 0; i < SRC_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        g_src[i] = (uint8_t)(x >> 24);
    }
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[128];

    free(g_src);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    /* libuv writes with write(2): a peer gone would kill the process (the daemons do this too) */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_echo),
        cmocka_unit_test(test_tls_echo),
        cmocka_unit_test(test_tls_direct_ip),
        cmocka_unit_test(test_tls12_small_records),
        cmocka_unit_test(test_pipe_echo),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_tls_client_cert_required),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_tls_files_and_helpers),
        cmocka_unit_test(test_eof_clean_and_bare_fin),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_end_bounded),
        cmocka_unit_test(test_close_without_ops),
        cmocka_unit_test(test_close_in_callbacks),
        cmocka_unit_test(test_drain_after_bytes_of_this_turn),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
