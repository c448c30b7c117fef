/*
 * conn — one byte stream over a libuv handle, plaintext or TLS (the contract is in conn.h).
 *
 * State of one conn (one enum per line of the diagram, asserted where it changes):
 *
 *   net, tls    NET_NEW --connect/accept--> NET_CONNECTED (plaintext, TLS_NONE)
 *               --conn_tls_*--> TLS_SERVER_HANDSHAKE | TLS_CLIENT_HANDSHAKE --> TLS_ESTABLISHED
 *
 *   read side   reading --on_read < len--> paused (rest held)
 *               paused --conn_read_start--> resume (next turn, idle) --> reading
 *   input       IN_OPEN --FIN behind held input--> IN_FIN_HELD --delivered--> IN_EOF
 *               IN_OPEN --FIN / close_notify--> IN_EOF / IN_EOF_CLEAN (no more reads)
 *   write side  conn_write --> pending plaintext (dirty list)
 *               --16 KiB pending, or end of turn--> [SSL_write --> ciphertext chunks]
 *               --end of turn, or 16 chunks--> uv_try_write (one writev), the rest
 *               uv_write --> chunks back to the pool
 *   shut        SHUT_NONE --conn_shutdown--> SHUT_REQUESTED --after pending writes:
 *               close_notify, uv_shutdown--> SHUT_ISSUED --FIN out--> SHUT_DONE
 *   life        ACTIVE --conn_end--> ENDING: owner callbacks muted; flush, shut down, then
 *               read and discard until the peer's EOF (closing with unread input would RST
 *               away data the peer has not read yet); a timer bounds all of it
 *               ACTIVE | ENDING --conn_close or an error--> CLOSING: uv_close on every
 *               handle; the last close callback reports an error noticed inside a conn_*
 *               call (never from inside that call), calls on_close and frees the conn
 *
 * TLS runs through a custom BIO (one per SSL, both directions), as h2o does: OpenSSL reads
 * ciphertext straight from the per-loop read buffer (copied to the conn only when the owner
 * pauses with input left over), and writes ciphertext into pooled chunks that go to uv_write
 * without another copy. Every SSL_* I/O call is preceded by ERR_clear_error(), followed by
 * SSL_get_error() and by a flush of the produced ciphertext.
 *
 * Callbacks into the owner happen only from libuv callbacks of this module (read, write,
 * connect, shutdown, timer, the per-loop idle/prepare/check), never from inside a conn_* call,
 * and every one is followed by a check for CONN_CLOSING before any more state is touched.
 */
#include "common/conn.h"

#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/config.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/tls_guard.h"

#define CONN_READ_BUF (64 * 1024)         /* one socket read */
#define CONN_PLAIN_BUF (64 * 1024)        /* plaintext gathered from several records per on_read */
#define CONN_RECORD (16 * 1024)           /* largest TLS record payload; the coalescing threshold */
#define CONN_BUF_SIZE (CONN_RECORD + 512) /* a full record's ciphertext fits in one chunk */
#define CONN_WRITE_BUFS 4 /* chunks per uv_write: libuv keeps up to 4 bufs without malloc */
#define CONN_TRY_BUFS 16  /* chunks per uv_try_write (one writev, nothing kept) */
#define CONN_SUBMIT_BYTES (CONN_TRY_BUFS * CONN_RECORD) /* sent before the end of the turn */
#define CONN_POOL_MAX 64            /* free chunks kept per loop (about 1 MiB) */
#define CONN_POOL_IDLE 4            /* ... and once the loop has been quiet (conn_loop_trim) */
#define CONN_TRIM_AFTER 64          /* conns freed since the last trim before one is planned */
#define CONN_TRIM_QUIET_MS 1000     /* the trim runs this long after the last free ... */
#define CONN_TRIM_MAX_WAIT_MS 10000 /* ... or this long after it was first planned */
#define CONN_END_TIMEOUT_MS 5000
#define CONN_KEEPALIVE_S 30
#define CONN_LOW_DEFAULT (64 * 1024)
#define CONN_HIGH_DEFAULT (256 * 1024)

#define conn_container_of(ptr, type, member)                                                       \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* A pooled chunk: pending plaintext, or ciphertext on its way to the socket. The first chunk of
 * a group handed to one uv_write carries the request; the group is linked through next. */
struct conn_buf {
    struct conn_buf *next;
    struct conn *c;
    uv_write_t req;
    size_t len; /* bytes filled */
    size_t off; /* bytes already taken (encrypted) */
    uint8_t data[CONN_BUF_SIZE];
};

struct conn_chain {
    struct conn_buf *head;
    struct conn_buf *tail;
};

enum { CONN_LINK_DIRTY = 0, CONN_LINK_RESUME, CONN_LINK_ENDING, CONN_LINK_COUNT };

struct conn_link {
    struct conn *next;
    struct conn **pprev; /* NULL: not on the list */
};

struct conn_loop {
    uv_loop_t *loop;
    uv_prepare_t prepare; /* flush before the loop blocks (writes made in timers, idles...) */
    uv_check_t check;     /* flush right after the I/O callbacks of a turn */
    uv_idle_t idle;       /* deferred read resume: runs next turn without blocking */
    struct conn *dirty;   /* conns with pending plaintext to flush this turn */
    struct conn *resume;  /* conns whose held input must be delivered next turn */
    struct conn *ending;  /* conns lingering after conn_end: owned by nobody, closed by
                             conn_loop_close so that a shutdown never waits for them */
    struct conn_buf *pool;
    unsigned pool_len;
    uv_timer_t trim;        /* gives memory back after a wave of conns is gone */
    uint64_t freed;         /* conns freed since the last trim */
    uint64_t trim_first_ms; /* when the pending trim was first planned (0: none) */
    BIO_METHOD *bio_method;
    bool closing;
    uint8_t rbuf[CONN_READ_BUF];
    uint8_t pbuf[CONN_PLAIN_BUF];
};

/* The whole conn: active, then perhaps ending (conn_end), then closing (uv_close issued). */
enum conn_life { CONN_ACTIVE, CONN_ENDING, CONN_CLOSING };
/* The socket: new --connect/accept--> connected (a failed connect leaves it new). */
enum conn_net { CONN_NET_NEW, CONN_NET_CONNECTING, CONN_NET_CONNECTED };
/* TLS on top: none (plaintext), then a handshake as server (its input guarded, tls_guard.h)
 * or as client, then established. */
enum conn_tls {
    CONN_TLS_NONE,
    CONN_TLS_SERVER_HANDSHAKE,
    CONN_TLS_CLIENT_HANDSHAKE,
    CONN_TLS_ESTABLISHED
};
/* The end of the input: open, FIN arrived behind held input, EOF (FIN, or close_notify:
 * clean). */
enum conn_input { CONN_IN_OPEN, CONN_IN_FIN_HELD, CONN_IN_EOF, CONN_IN_EOF_CLEAN };
/* The write side's end: requested (conn_shutdown / conn_end), issued (close_notify sent,
 * uv_shutdown called), done (FIN out). */
enum conn_shut { CONN_SHUT_NONE, CONN_SHUT_REQUESTED, CONN_SHUT_ISSUED, CONN_SHUT_DONE };

struct conn {
    struct conn_loop *cl;
    const struct conn_ops *ops;
    void *data;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    union { /* never both in flight: shutdown waits for the connect */
        uv_connect_t connect;
        uv_shutdown_t shutdown;
    } req;
    uv_timer_t end_timer; /* initialised by conn_end only */
    SSL *ssl;
    struct tls_guard guard; /* CONN_TLS_SERVER_HANDSHAKE: what OpenSSL may read */
    struct conn_link link[CONN_LINK_COUNT];

    uint8_t *held; /* plaintext read but not consumed by the owner */
    size_t held_len;
    uint8_t *cin; /* ciphertext read but not yet taken by OpenSSL */
    size_t cin_len, cin_cap;
    const uint8_t *in_ptr; /* what the BIO serves to OpenSSL during one pump */
    size_t in_len;

    struct conn_chain plain; /* pending plaintext (held until connect / handshake) */
    size_t plain_len;
    struct conn_chain out; /* ciphertext produced by OpenSSL, not yet handed to libuv */
    size_t low, high;

    int open_handles;
    int api_depth; /* > 0: inside a conn_* call; errors are reported later */
    int err_code;
    char *err_reason;
    char peer[INET6_ADDRSTRLEN + 8];

    /* the states of the diagram at the top */
    enum conn_life life;
    enum conn_net net;
    enum conn_tls tls;
    enum conn_input input;
    enum conn_shut shut;

    bool is_pipe;
    bool reading;    /* the owner wants on_read (else paused) */
    bool uv_reading; /* uv_read_start is in effect */
    bool in_on_read;
    bool err_pending; /* an error noticed inside a conn_* call, reported before on_close */
    bool drain_armed;
    bool timer_inited;
};

static bool conn_tls_handshaking(const struct conn *c)
{
    return c->tls == CONN_TLS_SERVER_HANDSHAKE || c->tls == CONN_TLS_CLIENT_HANDSHAKE;
}

static bool conn_eof_seen(const struct conn *c)
{
    return c->input == CONN_IN_EOF || c->input == CONN_IN_EOF_CLEAN;
}

static void conn_tls_pump(struct conn *c);
static int conn_flush(struct conn *c);
static void conn_try_shutdown(struct conn *c);
static int conn_update_reading(struct conn *c);
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_check_drain(struct conn *c);

/* ---- small helpers ------------------------------------------------------------------------ */

static void conn_link_add(struct conn **head, struct conn *c, int k)
{
    struct conn_link *l = &c->link[k];

    if (l->pprev)
        return;
    l->next = *head;
    if (*head)
        (*head)->link[k].pprev = &l->next;
    *head = c;
    l->pprev = head;
}

static void conn_link_del(struct conn *c, int k)
{
    struct conn_link *l = &c->link[k];

    if (!l->pprev)
        return;
    *l->pprev = l->next;
    if (l->next)
        l->next->link[k].pprev = l->pprev;
    l->next = NULL;
    l->pprev = NULL;
}

static struct conn_buf *conn_buf_get(struct conn_loop *cl)
{
    struct conn_buf *b = cl->pool;

    if (b) {
        cl->pool = b->next;
        cl->pool_len--;
    } else if (!(b = malloc(sizeof(*b)))) {
        return NULL;
    }
    b->next = NULL;
    b->c = NULL;
    b->len = 0;
    b->off = 0;
    return b;
}

/* Returns a chain of chunks (linked through next) to the pool. */
static void conn_buf_put(struct conn_loop *cl, struct conn_buf *b)
{
    while (b) {
        struct conn_buf *next = b->next;

        if (cl->pool_len < CONN_POOL_MAX) {
            b->next = cl->pool;
            cl->pool = b;
            cl->pool_len++;
        } else {
            free(b);
        }
        b = next;
    }
}

static int conn_chain_append(struct conn_loop *cl, struct conn_chain *ch, const uint8_t *p,
                             size_t n)
{
    while (n > 0) {
        struct conn_buf *b = ch->tail;
        size_t k;

        if (!b || b->len == CONN_BUF_SIZE) {
            if (!(b = conn_buf_get(cl)))
                return UV_ENOMEM;
            if (ch->tail)
                ch->tail->next = b;
            else
                ch->head = b;
            ch->tail = b;
        }
        k = CONN_BUF_SIZE - b->len;
        if (k > n)
            k = n;
        memcpy(b->data + b->len, p, k);
        b->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

static void conn_chain_release(struct conn_loop *cl, struct conn_chain *ch)
{
    conn_buf_put(cl, ch->head);
    ch->head = NULL;
    ch->tail = NULL;
}

static int conn_bytes_append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p, size_t n)
{
    if (*len + n > *cap) {
        size_t want = *len + n;
        uint8_t *q = realloc(*buf, want);

        if (!q)
            return UV_ENOMEM;
        *buf = q;
        *cap = want;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

static int conn_cin_append(struct conn *c, const uint8_t *p, size_t n)
{
    return conn_bytes_append(&c->cin, &c->cin_len, &c->cin_cap, p, n);
}

static int conn_hold(struct conn *c, const uint8_t *p, size_t n)
{
    size_t cap = c->held_len;

    return conn_bytes_append(&c->held, &c->held_len, &cap, p, n);
}

static void conn_format_addr(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        uv_ip4_name(in, ip, sizeof(ip));
        snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        uv_ip6_name(in6, ip, sizeof(ip));
        snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, cap, "unknown");
    }
}

/* The reason of a failed SSL_* call, taken from the error queue (which it clears). A failed
 * certificate verification names the X509 error, since "certificate verify failed" alone does
 * not tell an operator what to fix. */
static void conn_ssl_reason(const struct conn *c, int ssl_err, char *buf, size_t cap)
{
    const char *file = NULL, *func = NULL, *data = NULL;
    int line = 0, flags = 0;
    unsigned long e = ERR_get_error_all(&file, &line, &func, &data, &flags);
    long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
        snprintf(buf, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    } else if (e != 0) {
        tls_error_text(e, data, flags, ": ", "", buf, cap);
    } else if (ssl_err == SSL_ERROR_SYSCALL) {
        snprintf(buf, cap, "unexpected end of the TLS stream");
    } else {
        snprintf(buf, cap, "TLS error %d", ssl_err);
    }
    ERR_clear_error();
}

/* ---- closing and errors ------------------------------------------------------------------- */

/* Memory. glibc keeps what a wave of sessions freed (each held an SSL, buffers, a stream),
 * so after one an idle daemon would sit on its peak. Once CONN_TRIM_AFTER conns are gone and
 * the loop has freed none for CONN_TRIM_QUIET_MS (or CONN_TRIM_MAX_WAIT_MS have passed under
 * a steady trickle), the chunk pool shrinks and malloc_trim returns free pages to the kernel.
 * It costs one heap walk per wave, never one per conn. */
static void conn_loop_trim(uv_timer_t *t)
{
    struct conn_loop *cl = t->data;

    while (cl->pool_len > CONN_POOL_IDLE) {
        struct conn_buf *b = cl->pool;

        cl->pool = b->next;
        cl->pool_len--;
        free(b);
    }
    cl->freed = 0;
    cl->trim_first_ms = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void conn_loop_freed_one(struct conn_loop *cl)
{
    uint64_t now;

    if (++cl->freed < CONN_TRIM_AFTER || cl->closing)
        return;
    now = uv_now(cl->loop);
    if (!cl->trim_first_ms)
        cl->trim_first_ms = now;
    if (now - cl->trim_first_ms < CONN_TRIM_MAX_WAIT_MS)
        uv_timer_start(&cl->trim, conn_loop_trim, CONN_TRIM_QUIET_MS, 0);
}

static void conn_free(struct conn *c)
{
    conn_loop_freed_one(c->cl);
    SSL_free(c->ssl);
    conn_chain_release(c->cl, &c->plain);
    conn_chain_release(c->cl, &c->out);
    free(c->held);
    free(c->cin);
    free(c->err_reason);
    free(c);
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    if (c->err_pending && c->ops->on_error)
        c->ops->on_error(c, c->err_code, c->err_reason ? c->err_reason : "connection failed");
    if (c->ops->on_close)
        c->ops->on_close(c);
    conn_free(c);
}

/* Buffers are freed only in conn_free: a pump may still hold pointers into them when a
 * callback closes the conn. */
static void conn_start_close(struct conn *c)
{
    if (c->life == CONN_CLOSING)
        return;
    c->life = CONN_CLOSING;
    conn_link_del(c, CONN_LINK_DIRTY);
    conn_link_del(c, CONN_LINK_RESUME);
    conn_link_del(c, CONN_LINK_ENDING);
    uv_close(&c->h.handle, conn_handle_closed);
    if (c->timer_inited)
        uv_close((uv_handle_t *)&c->end_timer, conn_handle_closed);
}

static void conn_fail(struct conn *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Starts closing and reports the error once: at once from libuv callbacks, or just before
 * on_close when noticed inside a conn_* call (the owner is on the stack then). Nothing is
 * reported after conn_end or conn_close. */
static void conn_fail(struct conn *c, int err, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    bool report = c->life == CONN_ACTIVE;

    if (c->life == CONN_CLOSING)
        return;
    conn_start_close(c);
    if (!report)
        return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (c->api_depth > 0) {
        c->err_pending = true;
        c->err_code = err;
        c->err_reason = strdup(reason);
        return;
    }
    if (c->ops->on_error)
        c->ops->on_error(c, err, reason);
}

/* ---- the per-loop flush and resume -------------------------------------------------------- */

static void conn_loop_flush(struct conn_loop *cl)
{
    struct conn *c;

    while ((c = cl->dirty) != NULL) {
        conn_link_del(c, CONN_LINK_DIRTY);
        if (conn_flush(c) == 0)
            conn_check_drain(c);
    }
    uv_prepare_stop(&cl->prepare);
    uv_check_stop(&cl->check);
}

static void conn_loop_prepare_cb(uv_prepare_t *h)
{
    conn_loop_flush(h->data);
}

static void conn_loop_check_cb(uv_check_t *h)
{
    conn_loop_flush(h->data);
}

static void conn_mark_dirty(struct conn *c)
{
    struct conn_loop *cl = c->cl;

    if (c->link[CONN_LINK_DIRTY].pprev || cl->closing)
        return;
    conn_link_add(&cl->dirty, c, CONN_LINK_DIRTY);
    uv_prepare_start(&cl->prepare, conn_loop_prepare_cb);
    uv_check_start(&cl->check, conn_loop_check_cb);
}

static void conn_resume(struct conn *c);

static void conn_loop_idle_cb(uv_idle_t *h)
{
    struct conn_loop *cl = h->data;
    struct conn *snap = cl->resume;

    /* Work on a snapshot: a conn whose owner asks again while we run waits for the next turn,
     * so an owner that never consumes cannot spin this callback forever. */
    cl->resume = NULL;
    if (snap)
        snap->link[CONN_LINK_RESUME].pprev = &snap;
    while (snap) {
        struct conn *c = snap;

        conn_link_del(c, CONN_LINK_RESUME);
        conn_resume(c);
    }
    if (!cl->resume)
        uv_idle_stop(&cl->idle);
}

static void conn_schedule_resume(struct conn *c)
{
    struct conn_loop *cl = c->cl;

    if (c->link[CONN_LINK_RESUME].pprev || cl->closing)
        return;
    conn_link_add(&cl->resume, c, CONN_LINK_RESUME);
    uv_idle_start(&cl->idle, conn_loop_idle_cb);
}

/* ---- the BIO between OpenSSL and libuv ---------------------------------------------------- */

static int conn_bio_write(BIO *b, const char *data, int len)
{
    struct conn *c = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (!c || c->life == CONN_CLOSING)
        return len; /* the conn is going away: nothing will be sent */
    if (conn_chain_append(c->cl, &c->out, (const uint8_t *)data, (size_t)len) < 0)
        return -1;
    return len;
}

static int conn_bio_read(BIO *b, char *out, int len)
{
    struct conn *c = BIO_get_data(b);
    size_t n;

    BIO_clear_retry_flags(b);
    if (!c || len <= 0)
        return 0;
    if (c->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    n = c->in_len < (size_t)len ? c->in_len : (size_t)len;
    if (c->tls == CONN_TLS_SERVER_HANDSHAKE) {
        /* before OpenSSL sizes a buffer from a length the client announced (tls_guard.h) */
        /* The version is negotiated once the first ClientHello is processed, which OpenSSL
         * does before it reads a change_cipher_spec (SSL_version says TLS 1.3 before that). */
        if (c->guard.ccs_seen && !c->guard.tls13 && SSL_version(c->ssl) == TLS1_3_VERSION)
            c->guard.tls13 = true;
        if (tls_guard_feed(&c->guard, c->in_ptr, n) < 0)
            return -1;
    }
    memcpy(out, c->in_ptr, n);
    c->in_ptr += n;
    c->in_len -= n;
    return (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct conn *c = BIO_get_data(b);

    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return c ? (long)c->in_len : 0;
    default:
        return 0;
    }
}

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int conn_bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL);
    return 1;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Callback context only. Writes the kernel took at once have no write callback, so the
 * end-of-turn flush checks too. Bytes written this turn and not yet flushed (a write callback
 * of earlier bytes can come first) are not drained: the flush, which checks again after it
 * hands them on, decides. Firing here would let the owner look, find them still queued, and
 * never hear again (a stream's credit would stay unreturned). */
static void conn_check_drain(struct conn *c)
{
    if (c->life != CONN_ACTIVE || !c->drain_armed || conn_backlog(c) > c->low)
        return;
    if (c->plain_len > 0 || c->out.head) {
        if (c->net == CONN_NET_CONNECTED &&
            (c->tls == CONN_TLS_NONE || c->tls == CONN_TLS_ESTABLISHED))
            conn_mark_dirty(c);
        return;
    }
    c->drain_armed = false;
    if (c->ops->on_drain)
        c->ops->on_drain(c);
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct conn_buf *head = conn_container_of(req, struct conn_buf, req);
    struct conn *c = head->c;

    conn_buf_put(c->cl, head);
    if (status == UV_ECANCELED || c->life == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, status, "write failed: %s", uv_strerror(status));
        return;
    }
    conn_check_drain(c);
}

/* Takes n written bytes off the front of a chain; chunks fully written go back to the pool. */
static void conn_chain_consume(struct conn_loop *cl, struct conn_chain *ch, size_t n)
{
    while (n > 0 && ch->head) {
        struct conn_buf *b = ch->head;
        size_t avail = b->len - b->off;

        if (n < avail) {
            b->off += n;
            return;
        }
        n -= avail;
        ch->head = b->next;
        if (!ch->head)
            ch->tail = NULL;
        b->next = NULL;
        conn_buf_put(cl, b);
    }
}

/* Hands a chain to the kernel. First uv_try_write (as Node's TryWrite): what the kernel takes at
 * once needs no request, and its chunks are back in the pool before this returns, so a busy
 * conn cycles through a few chunks instead of holding every chunk of a turn until the next
 * turn's callbacks. The rest is queued with uv_write, CONN_WRITE_BUFS chunks per request. */
static int conn_submit(struct conn *c, struct conn_chain *ch)
{
    uv_buf_t bufs[CONN_TRY_BUFS];
    bool queued = false;

    while (ch->head) {
        struct conn_buf *head = ch->head, *b = head, *last = head;
        unsigned n = 0;
        size_t total = 0;
        int r;

        if (c->life == CONN_CLOSING || c->shut >= CONN_SHUT_ISSUED) {
            /* Closing discards; after uv_shutdown nothing may be written (OpenSSL only
             * produces output then if the peer asks for a key update we cannot answer). */
            conn_chain_release(c->cl, ch);
            return c->life == CONN_CLOSING ? UV_EPIPE : 0;
        }
        if (!queued) {
            for (; b && n < CONN_TRY_BUFS; b = b->next) {
                bufs[n++] = uv_buf_init((char *)b->data + b->off, (unsigned)(b->len - b->off));
                total += b->len - b->off;
            }
            r = uv_try_write(&c->h.stream, bufs, n);
            if (r < 0 && r != UV_EAGAIN) {
                conn_chain_release(c->cl, ch);
                conn_fail(c, r, "write failed: %s", uv_strerror(r));
                return r;
            }
            if (r > 0)
                conn_chain_consume(c->cl, ch, (size_t)r);
            if (r < 0 || (size_t)r < total)
                queued = true; /* the kernel is full: the rest waits in libuv's queue */
            continue;
        }
        for (n = 0; b && n < CONN_WRITE_BUFS; b = b->next) {
            bufs[n++] = uv_buf_init((char *)b->data + b->off, (unsigned)(b->len - b->off));
            last = b;
        }
        ch->head = b;
        if (!b)
            ch->tail = NULL;
        last->next = NULL;
        head->c = c;
        r = uv_write(&head->req, &c->h.stream, bufs, n, conn_write_cb);
        if (r < 0) {
            conn_buf_put(c->cl, head);
            conn_chain_release(c->cl, ch);
            conn_fail(c, r, "write failed: %s", uv_strerror(r));
            return r;
        }
    }
    return 0;
}

static int conn_flush_out(struct conn *c)
{
    return conn_submit(c, &c->out);
}

/* True when a chain holds CONN_TRY_BUFS chunks or more: one writev's worth, sent at once rather
 * than at the end of the turn (which bounds what a turn can queue per conn). */
static bool conn_chain_full(const struct conn_chain *ch)
{
    const struct conn_buf *b = ch->head;
    unsigned n = 0;

    for (; b && n < CONN_TRY_BUFS; b = b->next)
        n++;
    return n >= CONN_TRY_BUFS;
}

static int conn_ssl_write(struct conn *c, const uint8_t *p, size_t n)
{
    char reason[300];
    int r, e;

    ERR_clear_error();
    r = SSL_write(c->ssl, p, (int)n);
    e = SSL_get_error(c->ssl, r);
    if (r > 0)
        return 0; /* without partial-write mode, all of it */
    conn_ssl_reason(c, e, reason, sizeof(reason));
    conn_chain_release(c->cl, &c->out);
    conn_fail(c, UV_EPROTO, "TLS write failed: %s", reason);
    return UV_EPROTO;
}

/* Encrypts all pending plaintext, a record (at most 16 KiB) per SSL_write; no flush. */
static int conn_tls_encrypt(struct conn *c)
{
    while (c->plain.head) {
        struct conn_buf *b = c->plain.head;
        size_t avail = b->len - b->off, n;
        int rc;

        if (avail == 0) {
            c->plain.head = b->next;
            if (!c->plain.head)
                c->plain.tail = NULL;
            b->next = NULL;
            conn_buf_put(c->cl, b);
            continue;
        }
        n = avail < CONN_RECORD ? avail : CONN_RECORD;
        if ((rc = conn_ssl_write(c, b->data + b->off, n)) < 0)
            return rc;
        b->off += n;
        c->plain_len -= n;
    }
    return 0;
}

/* Sends what is pending, if the conn can send yet (connected; handshake done under TLS). */
static int conn_flush(struct conn *c)
{
    int rc;

    if (c->life == CONN_CLOSING || c->net != CONN_NET_CONNECTED || (!c->plain.head && !c->out.head))
        return 0;
    if (c->ssl) {
        if (c->tls != CONN_TLS_ESTABLISHED)
            return 0;
        if ((rc = conn_tls_encrypt(c)) < 0)
            return rc;
        return conn_flush_out(c);
    }
    c->plain_len = 0;
    return conn_submit(c, &c->plain);
}

/* Established TLS: tops up the pending record; full records are encrypted at once (straight
 * from the caller's bytes when nothing is pending), a tail below 16 KiB waits for the end of
 * the turn so that small writes share a record. The ciphertext waits for the end of the turn
 * too, so that the records of a turn leave in one writev (up to CONN_TRY_BUFS of them). */
static int conn_tls_write(struct conn *c, const uint8_t *p, size_t len)
{
    int rc;

    if (c->plain_len > 0) {
        size_t room = c->plain_len < CONN_RECORD ? CONN_RECORD - c->plain_len : 0;
        size_t n = len < room ? len : room;

        if ((rc = conn_chain_append(c->cl, &c->plain, p, n)) < 0)
            return rc;
        c->plain_len += n;
        p += n;
        len -= n;
        if (c->plain_len < CONN_RECORD)
            return 0;
        if ((rc = conn_tls_encrypt(c)) < 0)
            return rc;
    }
    while (len >= CONN_RECORD) {
        if ((rc = conn_ssl_write(c, p, CONN_RECORD)) < 0)
            return rc;
        p += CONN_RECORD;
        len -= CONN_RECORD;
    }
    if (len > 0) {
        if ((rc = conn_chain_append(c->cl, &c->plain, p, len)) < 0)
            return rc;
        c->plain_len += len;
    }
    return conn_chain_full(&c->out) ? conn_flush_out(c) : 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    /* Shared by every conn of the loop: libuv calls alloc and read back to back, and all the
     * input is dealt with (delivered, or copied to the conn) before read_cb returns. */
    buf->base = (char *)c->cl->rbuf;
    buf->len = CONN_READ_BUF;
}

static int conn_update_reading(struct conn *c)
{
    bool want = c->net == CONN_NET_CONNECTED && c->life != CONN_CLOSING &&
                c->input == CONN_IN_OPEN && c->held_len == 0 &&
                (c->life == CONN_ENDING || c->reading);
    int r = 0;

    if (want && !c->uv_reading) {
        r = uv_read_start(&c->h.stream, conn_alloc_cb, conn_read_cb);
        if (r == 0)
            c->uv_reading = true;
    } else if (!want && c->uv_reading) {
        uv_read_stop(&c->h.stream);
        c->uv_reading = false;
    }
    return r;
}

/* Hands plaintext to the owner. Returns true when the owner took all of it and still reads.
 * What it leaves is held for conn_read_start; if it switched to TLS meanwhile (direct TLS,
 * SSLRequest), what it leaves is the start of the ciphertext. */
static bool conn_deliver(struct conn *c, const uint8_t *p, size_t n)
{
    bool was_tls = c->ssl != NULL;
    size_t used = n;

    if (c->life == CONN_ENDING)
        return true; /* after conn_end input is read and dropped */
    if (!c->reading) {
        if (conn_hold(c, p, n) < 0)
            conn_fail(c, UV_ENOMEM, "out of memory holding input");
        else
            conn_update_reading(c);
        return false;
    }
    if (c->ops->on_read) {
        c->in_on_read = true;
        used = c->ops->on_read(c, p, n);
        c->in_on_read = false;
    }
    if (c->life == CONN_CLOSING)
        return false;
    if (c->life == CONN_ENDING)
        return true;
    if (used > n)
        used = n;
    if (!was_tls && c->ssl) {
        if (used < n && conn_cin_append(c, p + used, n - used) < 0)
            conn_fail(c, UV_ENOMEM, "out of memory holding input");
        return false;
    }
    if (used < n) {
        if (conn_hold(c, p + used, n - used) < 0) {
            conn_fail(c, UV_ENOMEM, "out of memory holding input");
            return false;
        }
        c->reading = false;
        conn_update_reading(c);
        return false;
    }
    return c->reading;
}

static void conn_eof(struct conn *c, bool clean)
{
    assert(c->input == CONN_IN_OPEN || c->input == CONN_IN_FIN_HELD);
    c->input = clean ? CONN_IN_EOF_CLEAN : CONN_IN_EOF;
    conn_update_reading(c);
    if (c->life == CONN_ENDING) {
        /* lingering after conn_end: the peer is done too, close once our FIN is out */
        if (c->shut != CONN_SHUT_ISSUED)
            conn_start_close(c);
        return;
    }
    if (c->ops->on_eof)
        c->ops->on_eof(c);
}

/* The peer's FIN, once everything read before it has been handed over. */
static void conn_on_fin(struct conn *c)
{
    c->uv_reading = false;
    if (conn_tls_handshaking(c)) {
        conn_fail(c, UV_EOF, "TLS handshake failed: connection closed by peer");
        return;
    }
    conn_eof(c, false);
}

static int conn_tls_handshake(struct conn *c)
{
    char reason[300] = "";
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    e = SSL_get_error(c->ssl, r);
    if (r != 1 && e != SSL_ERROR_WANT_READ) {
        conn_ssl_reason(c, e, reason, sizeof(reason));
        if (c->tls == CONN_TLS_SERVER_HANDSHAKE && c->guard.error)
            tls_guard_strerror(&c->guard, reason, sizeof(reason));
    }
    conn_flush_out(c); /* handshake records, or the alert that tells the peer why */
    if (c->life == CONN_CLOSING)
        return -1;
    if (r != 1) {
        if (e == SSL_ERROR_WANT_READ)
            return 1;
        conn_fail(c, UV_EPROTO, "TLS handshake failed: %s", reason);
        return -1;
    }
    assert(conn_tls_handshaking(c));
    c->tls = CONN_TLS_ESTABLISHED;
    /* writes made during the handshake go first */
    if (conn_flush(c) < 0 || c->life == CONN_CLOSING)
        return -1;
    if (c->life != CONN_ENDING && c->ops->on_handshake) {
        c->ops->on_handshake(c);
        if (c->life == CONN_CLOSING)
            return -1;
    }
    conn_try_shutdown(c);
    return c->life == CONN_CLOSING ? -1 : 0;
}

/* SSL_read until WANT_READ, gathering several records per on_read. Stops as soon as the owner
 * pauses: OpenSSL keeps what it has not returned, and our BIO input is kept by the caller. */
static void conn_tls_read_loop(struct conn *c)
{
    uint8_t *buf = c->cl->pbuf;

    for (;;) {
        char reason[300] = "";
        size_t off = 0;
        int e = SSL_ERROR_NONE;

        if (!c->reading && c->life != CONN_ENDING)
            return;
        while (off < CONN_PLAIN_BUF) {
            int r;

            ERR_clear_error();
            r = SSL_read(c->ssl, buf + off, (int)(CONN_PLAIN_BUF - off));
            e = SSL_get_error(c->ssl, r);
            if (r > 0) {
                off += (size_t)r;
                continue;
            }
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN)
                conn_ssl_reason(c, e, reason, sizeof(reason));
            break;
        }
        conn_flush_out(c); /* post-handshake messages may answer (key update) */
        if (c->life == CONN_CLOSING)
            return;
        if (off > 0 && !conn_deliver(c, buf, off)) {
            if (c->life == CONN_CLOSING)
                return;
            /* Paused. A close_notify is reported again by SSL_read on resume. */
            if (e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN)
                return;
        }
        if (e == SSL_ERROR_NONE)
            continue;
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn_eof(c, true);
            return;
        }
        conn_fail(c, UV_EPROTO, "TLS read failed: %s", reason);
        return;
    }
}

static void conn_tls_pump(struct conn *c)
{
    if (c->tls != CONN_TLS_ESTABLISHED && conn_tls_handshake(c) != 0)
        return;
    conn_tls_read_loop(c);
}

/* Runs the pump over the held ciphertext and keeps what OpenSSL did not take. */
static void conn_tls_process_cin(struct conn *c)
{
    size_t used;

    c->in_ptr = c->cin;
    c->in_len = c->cin_len;
    conn_tls_pump(c);
    if (c->life == CONN_CLOSING) {
        c->in_ptr = NULL;
        c->in_len = 0;
        return;
    }
    used = c->cin_len - c->in_len;
    if (c->in_len > 0 && used > 0)
        memmove(c->cin, c->cin + used, c->in_len);
    c->cin_len = c->in_len;
    c->in_ptr = NULL;
    c->in_len = 0;
    if (c->cin_len == 0) {
        free(c->cin);
        c->cin = NULL;
        c->cin_cap = 0;
    }
}

/* Ciphertext from the socket: served to OpenSSL straight from the read buffer; only what is
 * left when the owner pauses is copied into the conn. */
static void conn_tls_input(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->cin_len > 0) {
        if (conn_cin_append(c, p, n) < 0) {
            conn_fail(c, UV_ENOMEM, "out of memory holding input");
            return;
        }
        conn_tls_process_cin(c);
        return;
    }
    c->in_ptr = p;
    c->in_len = n;
    conn_tls_pump(c);
    if (c->life != CONN_CLOSING && c->in_len > 0 && conn_cin_append(c, c->in_ptr, c->in_len) < 0)
        conn_fail(c, UV_ENOMEM, "out of memory holding input");
    c->in_ptr = NULL;
    c->in_len = 0;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread == 0 || nread == UV_ECANCELED || c->life == CONN_CLOSING)
        return;
    if (nread < 0) {
        c->uv_reading = false; /* libuv has stopped reading */
        if (nread != UV_EOF) {
            conn_fail(c, (int)nread, "read failed: %s", uv_strerror((int)nread));
            return;
        }
        if (c->cin_len > 0 || c->held_len > 0) {
            assert(c->input == CONN_IN_OPEN);
            c->input = CONN_IN_FIN_HELD; /* delivered after what came before it */
            conn_schedule_resume(c);
            return;
        }
        conn_on_fin(c);
        return;
    }
    if (c->life == CONN_ENDING && (!c->ssl || c->shut >= CONN_SHUT_ISSUED))
        return; /* lingering after conn_end: drop */
    if (c->ssl)
        conn_tls_input(c, (const uint8_t *)buf->base, (size_t)nread);
    else
        conn_deliver(c, (const uint8_t *)buf->base, (size_t)nread);
}

/* Deferred from conn_read_start (or a TLS switch): held plaintext first, then what OpenSSL and
 * the held ciphertext still have (they may hold whole records while no new byte will arrive),
 * then a FIN seen meanwhile, and only then the socket again. */
static void conn_resume(struct conn *c)
{
    int r;

    if (c->life == CONN_CLOSING)
        return;
    if (c->held_len > 0 && (c->reading || c->life == CONN_ENDING)) {
        uint8_t *h = c->held;
        size_t n = c->held_len;

        c->held = NULL;
        c->held_len = 0;
        conn_deliver(c, h, n);
        free(h);
        if (c->life == CONN_CLOSING)
            return;
    }
    if (c->ssl && c->held_len == 0) {
        if (c->cin_len > 0)
            conn_tls_process_cin(c);
        else
            conn_tls_pump(c);
        if (c->life == CONN_CLOSING)
            return;
    }
    if (c->input == CONN_IN_FIN_HELD && c->held_len == 0 && c->cin_len == 0 &&
        (c->reading || c->life == CONN_ENDING)) {
        conn_on_fin(c); /* CONN_IN_FIN_HELD -> CONN_IN_EOF */
        return;
    }
    if ((r = conn_update_reading(c)) < 0)
        conn_fail(c, r, "read failed: %s", uv_strerror(r));
}

/* ---- shutdown and end --------------------------------------------------------------------- */

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct conn *c = req->handle->data;

    if (status == UV_ECANCELED || c->life == CONN_CLOSING)
        return;
    assert(c->shut == CONN_SHUT_ISSUED);
    c->shut = CONN_SHUT_DONE;
    if (c->life == CONN_ENDING) {
        if (status < 0 || conn_eof_seen(c))
            conn_start_close(c);
        return;
    }
    if (status < 0)
        conn_fail(c, status, "shutdown failed: %s", uv_strerror(status));
}

/* Once connected (and, under TLS, established): pending writes, close_notify, FIN. */
static void conn_try_shutdown(struct conn *c)
{
    int r;

    if (c->life == CONN_CLOSING || c->shut != CONN_SHUT_REQUESTED || c->net != CONN_NET_CONNECTED)
        return;
    if (conn_tls_handshaking(c))
        return;
    if (conn_flush(c) < 0 || c->life == CONN_CLOSING)
        return;
    if (c->ssl) {
        int e;

        ERR_clear_error();
        r = SSL_shutdown(c->ssl);
        e = SSL_get_error(c->ssl, r);
        if (r < 0)
            log_debug("conn %s: SSL_shutdown failed (%d); sending FIN without close_notify",
                      c->peer, e);
        ERR_clear_error();
        if (conn_flush_out(c) < 0 || c->life == CONN_CLOSING)
            return;
    }
    assert(c->shut == CONN_SHUT_REQUESTED);
    c->shut = CONN_SHUT_ISSUED;
    r = uv_shutdown(&c->req.shutdown, &c->h.stream, conn_shutdown_cb);
    if (r < 0)
        conn_fail(c, r, "shutdown failed: %s", uv_strerror(r));
}

static void conn_end_timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;

    conn_start_close(c); /* the peer did not take our data or did not close in time */
}

/* ---- connecting --------------------------------------------------------------------------- */

static void conn_tcp_tune(struct conn *c)
{
    int r;

    /* Nagle would hold small query/response messages for a round trip */
    if ((r = uv_tcp_nodelay(&c->h.tcp, 1)) < 0)
        log_warn("conn %s: TCP_NODELAY: %s", c->peer, uv_strerror(r));
    if ((r = uv_tcp_keepalive(&c->h.tcp, 1, CONN_KEEPALIVE_S)) < 0)
        log_warn("conn %s: TCP keepalive: %s", c->peer, uv_strerror(r));
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = req->handle->data;
    int r;

    assert(c->net == CONN_NET_CONNECTING);
    c->net = CONN_NET_NEW;
    if (status == UV_ECANCELED || c->life == CONN_CLOSING)
        return;
    if (status == 0) {
        c->net = CONN_NET_CONNECTED;
        if (!c->is_pipe)
            conn_tcp_tune(c);
    }
    if (c->life == CONN_ENDING) {
        if (status < 0) {
            conn_start_close(c);
            return;
        }
    } else if (c->ops->on_connect) {
        c->ops->on_connect(c, status);
        if (c->life == CONN_CLOSING)
            return;
    }
    if (status < 0)
        return;
    /* writes made before the connect completed */
    if (c->plain_len > 0 && !c->ssl)
        conn_mark_dirty(c);
    conn_try_shutdown(c);
    if (c->life == CONN_CLOSING)
        return;
    if ((r = conn_update_reading(c)) < 0)
        conn_fail(c, r, "read failed: %s", uv_strerror(r));
}

/* ---- public API --------------------------------------------------------------------------- */

/* The ops of a conn that has no owner yet (accepted, then closed before one took it). */
static const struct conn_ops conn_no_ops;

struct conn_loop *conn_loop_new(uv_loop_t *loop)
{
    struct conn_loop *cl = calloc(1, sizeof(*cl));

    if (!cl)
        return NULL;
    cl->loop = loop;
    cl->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pgburrow conn");
    if (!cl->bio_method || !BIO_meth_set_write(cl->bio_method, conn_bio_write) ||
        !BIO_meth_set_read(cl->bio_method, conn_bio_read) ||
        !BIO_meth_set_ctrl(cl->bio_method, conn_bio_ctrl) ||
        !BIO_meth_set_create(cl->bio_method, conn_bio_create) ||
        !BIO_meth_set_destroy(cl->bio_method, conn_bio_destroy)) {
        BIO_meth_free(cl->bio_method);
        free(cl);
        return NULL;
    }
    uv_prepare_init(loop, &cl->prepare);
    uv_check_init(loop, &cl->check);
    uv_idle_init(loop, &cl->idle);
    uv_timer_init(loop, &cl->trim);
    uv_unref((uv_handle_t *)&cl->trim); /* never what keeps a loop alive */
    cl->trim.data = cl;
    cl->prepare.data = cl;
    cl->check.data = cl;
    cl->idle.data = cl;
    return cl;
}

void conn_loop_close(struct conn_loop *cl)
{
    if (!cl || cl->closing)
        return;
    cl->closing = true;
    while (cl->ending)
        conn_start_close(cl->ending); /* unlinks it */
    uv_close((uv_handle_t *)&cl->prepare, NULL);
    uv_close((uv_handle_t *)&cl->check, NULL);
    uv_close((uv_handle_t *)&cl->idle, NULL);
    uv_close((uv_handle_t *)&cl->trim, NULL);
}

void conn_loop_free(struct conn_loop *cl)
{
    if (!cl)
        return;
    while (cl->pool) {
        struct conn_buf *b = cl->pool;

        cl->pool = b->next;
        free(b);
    }
    BIO_meth_free(cl->bio_method);
    free(cl);
}

struct conn *conn_new(struct conn_loop *cl, const struct conn_ops *ops, void *data, bool pipe)
{
    struct conn *c = calloc(1, sizeof(*c));
    int r;

    if (!c)
        return NULL;
    c->cl = cl;
    c->ops = ops ? ops : &conn_no_ops;
    c->data = data;
    c->is_pipe = pipe;
    c->low = CONN_LOW_DEFAULT;
    c->high = CONN_HIGH_DEFAULT;
    r = pipe ? uv_pipe_init(cl->loop, &c->h.pipe, 0) : uv_tcp_init(cl->loop, &c->h.tcp);
    if (r < 0) {
        free(c);
        return NULL;
    }
    c->h.handle.data = c;
    c->open_handles = 1;
    snprintf(c->peer, sizeof(c->peer), "%s", pipe ? "unix" : "-");
    return c;
}

int conn_accept(struct conn *c, uv_stream_t *server)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int r;

    if (c->life == CONN_CLOSING || c->net != CONN_NET_NEW)
        return UV_EINVAL;
    if ((r = uv_accept(server, &c->h.stream)) < 0)
        return r;
    c->net = CONN_NET_CONNECTED;
    if (!c->is_pipe) {
        /* a peer that reset the connection while it waited in the backlog (a load balancer's
         * health check often does) has no address left: UV_ENOTCONN, nothing to serve */
        if ((r = uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len)) < 0)
            return r;
        conn_format_addr((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
        conn_tcp_tune(c);
    }
    return 0;
}

int conn_connect_tcp(struct conn *c, const struct sockaddr *addr)
{
    int r;

    if (c->is_pipe || c->life == CONN_CLOSING || c->net != CONN_NET_NEW)
        return UV_EINVAL;
    c->req.connect.data = c;
    if ((r = uv_tcp_connect(&c->req.connect, &c->h.tcp, addr, conn_connect_cb)) < 0)
        return r;
    c->net = CONN_NET_CONNECTING;
    conn_format_addr(addr, c->peer, sizeof(c->peer));
    return 0;
}

int conn_connect_pipe(struct conn *c, const char *path)
{
    if (!c->is_pipe || c->life == CONN_CLOSING || c->net != CONN_NET_NEW)
        return UV_EINVAL;
    c->req.connect.data = c;
    uv_pipe_connect(&c->req.connect, &c->h.pipe, path, conn_connect_cb);
    c->net = CONN_NET_CONNECTING;
    return 0;
}

static int conn_tls_start(struct conn *c, SSL_CTX *ctx, bool server)
{
    SSL *ssl = NULL;
    BIO *bio = NULL;
    int rc = 0;

    if (c->life != CONN_ACTIVE)
        return UV_EPIPE;
    if (c->ssl)
        return UV_EALREADY;
    if (c->net != CONN_NET_CONNECTED)
        return UV_ENOTCONN;
    c->api_depth++;
    /* plaintext written before the switch (an SSLRequest, its 'S') goes first, in the clear */
    if (c->plain.head) {
        c->plain_len = 0;
        if ((rc = conn_submit(c, &c->plain)) < 0)
            goto out;
    }
    ERR_clear_error();
    if (!(ssl = SSL_new(ctx)) || !(bio = BIO_new(c->cl->bio_method))) {
        SSL_free(ssl);
        ERR_clear_error();
        rc = UV_ENOMEM;
        goto out;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio); /* one reference, used both ways */
    if (server) {
        SSL_set_accept_state(ssl);
        /* No OpenSSL read or write buffer while a connection waits, in its handshake (an
         * idle pending peer costs the SSL object only) and after it (thousands of idle
         * sessions are the common case): tls.c sets this on every context too. */
        SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
        tls_guard_init(&c->guard);
    } else {
        SSL_set_connect_state(ssl);
    }
    assert(c->tls == CONN_TLS_NONE);
    c->tls = server ? CONN_TLS_SERVER_HANDSHAKE : CONN_TLS_CLIENT_HANDSHAKE;
    c->ssl = ssl;
out:
    c->api_depth--;
    return rc;
}

/* Unconsumed plaintext read before the switch is, in fact, the start of the ciphertext. From
 * inside on_read the deliver path does this itself, after the owner returns. */
static int conn_tls_begin(struct conn *c)
{
    if (!c->in_on_read && c->held_len > 0) {
        int rc = conn_cin_append(c, c->held, c->held_len);

        if (rc < 0)
            return rc;
        free(c->held);
        c->held = NULL;
        c->held_len = 0;
    }
    conn_schedule_resume(c); /* drives the handshake from the loop, never from here */
    return 0;
}

int conn_tls_server(struct conn *c, SSL_CTX *ctx, const uint8_t *pre, size_t pre_len)
{
    int rc = conn_tls_start(c, ctx, true);

    if (rc < 0)
        return rc;
    if (pre_len > 0 && (rc = conn_cin_append(c, pre, pre_len)) < 0)
        return rc;
    return conn_tls_begin(c);
}

int conn_tls_client(struct conn *c, SSL_CTX *ctx, const char *server_name)
{
    return conn_tls_client_sni(c, ctx, server_name, server_name != NULL);
}

int conn_tls_client_sni(struct conn *c, SSL_CTX *ctx, const char *server_name, bool verify_name)
{
    char host[256];
    unsigned char ip[sizeof(struct in6_addr)];
    size_t n;
    int rc = conn_tls_start(c, ctx, false);

    if (rc < 0 || !server_name)
        return rc < 0 ? rc : conn_tls_begin(c);
    /* "[::1]" as written in host:port lists */
    n = strlen(server_name);
    if (n >= 2 && server_name[0] == '[' && server_name[n - 1] == ']')
        snprintf(host, sizeof(host), "%.*s", (int)(n - 2), server_name + 1);
    else
        snprintf(host, sizeof(host), "%s", server_name);
    ERR_clear_error();
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        /* no SNI for IP literals (RFC 6066); verify the IP SAN instead */
        if (verify_name && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
            rc = UV_EINVAL;
    } else {
        if (SSL_set_tlsext_host_name(c->ssl, host) != 1 ||
            (verify_name && SSL_set1_host(c->ssl, host) != 1))
            rc = UV_EINVAL;
        else if (verify_name)
            SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    ERR_clear_error();
    if (rc < 0)
        return rc;
    return conn_tls_begin(c);
}

void conn_tls_keep_buffers(struct conn *c)
{
    if (c->ssl)
        SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
}

int conn_read_start(struct conn *c)
{
    if (c->life == CONN_CLOSING)
        return UV_EPIPE;
    if (c->life == CONN_ENDING)
        return 0;
    c->reading = true;
    if (c->held_len > 0 || c->cin_len > 0 || c->input == CONN_IN_FIN_HELD ||
        (c->ssl && (c->tls != CONN_TLS_ESTABLISHED || SSL_has_pending(c->ssl))))
        conn_schedule_resume(c);
    return conn_update_reading(c);
}

int conn_read_stop(struct conn *c)
{
    if (c->life == CONN_CLOSING)
        return 0;
    c->reading = false;
    return conn_update_reading(c);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    int rc;

    if (c->life != CONN_ACTIVE || c->shut != CONN_SHUT_NONE)
        return UV_EPIPE;
    if (len == 0)
        return 0;
    c->api_depth++;
    if (c->tls == CONN_TLS_ESTABLISHED) {
        rc = conn_tls_write(c, p, len);
    } else {
        rc = conn_chain_append(c->cl, &c->plain, p, len);
        if (rc == 0) {
            c->plain_len += len;
            if (!c->ssl && c->net == CONN_NET_CONNECTED && c->plain_len >= CONN_SUBMIT_BYTES)
                rc = conn_flush(c);
        }
    }
    if (rc == 0 && c->life == CONN_CLOSING)
        rc = UV_EPIPE;
    if (rc == 0) {
        if ((c->plain_len > 0 || c->out.head) && c->net == CONN_NET_CONNECTED &&
            (c->tls == CONN_TLS_NONE || c->tls == CONN_TLS_ESTABLISHED))
            conn_mark_dirty(c);
        if (conn_backlog(c) >= c->high)
            c->drain_armed = true;
    } else {
        conn_fail(c, rc, "write failed: %s", uv_strerror(rc));
    }
    c->api_depth--;
    return rc;
}

size_t conn_backlog(const struct conn *c)
{
    return c->plain_len + uv_stream_get_write_queue_size(&c->h.stream);
}

bool conn_writable(const struct conn *c)
{
    return conn_backlog(c) < c->high;
}

void conn_set_watermarks(struct conn *c, size_t low, size_t high)
{
    if (high == 0)
        high = CONN_HIGH_DEFAULT;
    c->low = low; /* low >= high is allowed: on_drain after every write that leaves <= low */
    c->high = high;
}

int conn_shutdown(struct conn *c)
{
    if (c->life != CONN_ACTIVE)
        return UV_EPIPE;
    if (c->shut != CONN_SHUT_NONE)
        return 0;
    c->shut = CONN_SHUT_REQUESTED;
    c->api_depth++;
    conn_try_shutdown(c);
    c->api_depth--;
    return c->life == CONN_CLOSING ? UV_EPIPE : 0;
}

void conn_end(struct conn *c)
{
    if (!c || c->life != CONN_ACTIVE)
        return;
    if (c->net == CONN_NET_NEW || c->cl->closing) {
        conn_close(c);
        return;
    }
    c->life = CONN_ENDING;
    if (c->shut == CONN_SHUT_NONE)
        c->shut = CONN_SHUT_REQUESTED;
    conn_link_add(&c->cl->ending, c, CONN_LINK_ENDING);
    free(c->held);
    c->held = NULL;
    c->held_len = 0;
    if (uv_timer_init(c->cl->loop, &c->end_timer) == 0) {
        c->timer_inited = true;
        c->open_handles++;
        c->end_timer.data = c;
        uv_timer_start(&c->end_timer, conn_end_timer_cb, CONN_END_TIMEOUT_MS, 0);
    }
    c->api_depth++;
    conn_try_shutdown(c);
    if (c->life != CONN_CLOSING) {
        if (c->shut == CONN_SHUT_DONE && conn_eof_seen(c))
            conn_start_close(c);
        else if (conn_update_reading(c) < 0)
            conn_start_close(c);
    }
    c->api_depth--;
}

void conn_close(struct conn *c)
{
    if (!c || c->life == CONN_CLOSING)
        return;
    conn_start_close(c);
}

bool conn_closing(const struct conn *c)
{
    return c->life != CONN_ACTIVE;
}

void *conn_data(const struct conn *c)
{
    return c->data;
}

void conn_set_data(struct conn *c, void *data)
{
    c->data = data;
}

void conn_set_ops(struct conn *c, const struct conn_ops *ops, void *data)
{
    c->ops = ops ? ops : &conn_no_ops;
    c->data = data;
}

int conn_fileno(const struct conn *c)
{
    uv_os_fd_t fd;

    if (c->life == CONN_CLOSING || uv_fileno(&c->h.handle, &fd) < 0)
        return -1;
    return fd;
}

const char *conn_peer_addr(const struct conn *c)
{
    return c->peer;
}

const char *conn_tls_version(const struct conn *c)
{
    return c->tls == CONN_TLS_ESTABLISHED ? SSL_get_version(c->ssl) : NULL;
}

const char *conn_tls_cipher(const struct conn *c)
{
    return c->tls == CONN_TLS_ESTABLISHED ? SSL_get_cipher_name(c->ssl) : NULL;
}

const char *conn_tls_sni(const struct conn *c)
{
    return c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

const char *conn_tls_alpn(const struct conn *c, char *buf, size_t cap)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;

    if (c->tls != CONN_TLS_ESTABLISHED || cap == 0)
        return NULL;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    if (!p || len == 0)
        return NULL;
    if (len >= cap)
        len = (unsigned int)cap - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

int conn_tls_peer_cn(const struct conn *c, char *buf, size_t cap)
{
    X509 *cert;

    if (c->tls != CONN_TLS_ESTABLISHED || !(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER))
        return -ENOENT;
    /* without a verified chain the CN means nothing */
    if (SSL_get_verify_result(c->ssl) != X509_V_OK)
        return -ENOENT;
    if (!(cert = SSL_get0_peer_certificate(c->ssl)))
        return -ENOENT;
    return tls_cert_common_name(cert, buf, cap);
}

int conn_tls_verify_peer(const struct conn *c, X509_STORE *store, struct tls_peer_info *info,
                         char *err, size_t cap)
{
    X509 *cert;

    err[0] = '\0';
    if (c->tls != CONN_TLS_ESTABLISHED || !(cert = SSL_get0_peer_certificate(c->ssl)))
        return -ENOENT;
    /* server side: the chain the client sent, without its leaf */
    return tls_verify_client_cert(cert, SSL_get_peer_cert_chain(c->ssl), store, info, err, cap);
}

int conn_tls_peer_chain(const struct conn *c, X509 **leaf, STACK_OF(X509) * *chain)
{
    X509 *cert;
    STACK_OF(X509) * rest;

    *leaf = NULL;
    *chain = NULL;
    if (c->tls != CONN_TLS_ESTABLISHED || !(cert = SSL_get0_peer_certificate(c->ssl)))
        return -ENOENT;
    rest = SSL_get_peer_cert_chain(c->ssl);
    if (rest && !(*chain = X509_chain_up_ref(rest)))
        return -ENOMEM;
    X509_up_ref(cert);
    *leaf = cert;
    return 0;
}

bool conn_eof_clean(const struct conn *c)
{
    return c->input == CONN_IN_EOF_CLEAN;
}

/* ---- listening addresses ---------------------------------------------------------------- */

int conn_resolve_listen(uv_loop_t *loop, const char *hostport, struct sockaddr_storage *ss,
                        char *err, size_t cap)
{
    char host[256];
    uint16_t port;
    if (config_parse_hostport(hostport, host, &port, err, cap) < 0)
        return -EINVAL;
    if (strcmp(host, "*") == 0 || host[0] == '\0')
        return uv_ip6_addr("::", port, (struct sockaddr_in6 *)ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    /* a host name: resolved at start-up, synchronously (no callback given) */
    uv_getaddrinfo_t req;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
    if (rc < 0) {
        snprintf(err, cap, "cannot resolve \"%s\": %s", host, uv_strerror(rc));
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
