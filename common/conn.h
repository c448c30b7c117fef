/*
 * conn — one byte stream over a libuv handle (TCP socket or Unix socket), plaintext or TLS.
 *
 * TLS is OpenSSL driven through a memory BIO pair: ciphertext moves between the BIOs and
 * libuv; the owner only ever sees plaintext. A conn can start plaintext and switch to TLS
 * (the PostgreSQL SSLRequest dance), or start TLS at once with bytes already read (direct TLS).
 *
 * Lifecycle. conn_new() returns a conn owned by the caller until conn_close(); after that the
 * conn closes its handle and calls ops->on_close exactly once, from the loop (never from inside
 * a conn_* call), then frees itself. Every other callback may be followed by conn_close() from
 * within it. After on_error the conn is already closing: only on_close follows.
 *
 *   new --connect/accept--> open --tls_*--> handshaking --> established
 *     \__________________________________________________________/ \--> eof/error --> closing -->
 * (on_close) freed
 *
 * Reading and back-pressure. on_read returns how many bytes it consumed. If fewer than len,
 * the conn stops reading, keeps the rest, and delivers it first when conn_read_start() is
 * called again (from a later loop turn, never re-entrantly).
 *
 * Writing. conn_write() copies the bytes and never writes partially. Small writes made in the
 * same loop turn are coalesced (one TLS record where they fit, encrypted at once when 16 KiB
 * are pending); what a turn wrote leaves in one writev at the end of the turn, or as soon as
 * 256 KiB are ready. conn_backlog() is the plaintext not yet encrypted plus what libuv queued
 * (ciphertext of the current turn not yet handed to the kernel is not counted); when it
 * reaches the high watermark conn_writable() turns false, and on_drain fires once it falls to
 * the low watermark. Writing is never refused for being over the watermark: bounding is the
 * owner's job (flow-control windows), the watermark is its signal.
 *
 * Memory. Idle conns hold no read buffer: reads use per-loop buffers (struct conn_loop), so an
 * idle conn costs its handle, its SSL and this struct. Once 64 conns are gone and the loop has
 * freed none for a second, the loop gives free memory back to the kernel (malloc_trim).
 */
#ifndef PGB_CONN_H
#define PGB_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

struct conn;
struct conn_loop;

struct conn_ops {
    void (*on_connect)(struct conn *c, int status); /* outgoing connect done: 0 or UV_E* */
    void (*on_handshake)(struct conn *c);           /* TLS established (both roles) */
    size_t (*on_read)(struct conn *c, const uint8_t *data, size_t len); /* returns consumed */
    void (*on_eof)(struct conn *c); /* peer sends no more (FIN, or TLS close_notify) */
    void (*on_error)(struct conn *c, int err, const char *reason); /* conn is now closing */
    void (*on_drain)(struct conn *c); /* backlog fell to the low watermark */
    void (*on_close)(struct conn *c); /* last callback; c is freed when it returns */
};

/* Per-loop shared state: read buffers, the coalescing flush. One per uv_loop_t. */
struct conn_loop *conn_loop_new(uv_loop_t *loop);
/* Close the loop's own handles; call before the final uv_run that drains closes. */
void conn_loop_close(struct conn_loop *cl);
/* Free it after the loop has finished (uv_loop_close succeeded or is about to). */
void conn_loop_free(struct conn_loop *cl);

/* Returns new (NULL on ENOMEM). pipe: a Unix-socket conn instead of TCP. */
struct conn *conn_new(struct conn_loop *cl, const struct conn_ops *ops, void *data, bool pipe);
/* Then conn_read_start. UV_ENOTCONN: the peer was gone before it was accepted (close c). */
int conn_accept(struct conn *c, uv_stream_t *server);
int conn_connect_tcp(struct conn *c, const struct sockaddr *addr); /* -> on_connect */
int conn_connect_pipe(struct conn *c, const char *path);           /* -> on_connect */

/* Switch to TLS as server. pre[pre_len]: ciphertext already read (direct TLS), copied.
 * Takes a reference on ctx. Reading must be (or will be) started. */
int conn_tls_server(struct conn *c, SSL_CTX *ctx, const uint8_t *pre, size_t pre_len);
/* Switch to TLS as client; server_name is sent as SNI and verified against the certificate
 * (hostname or IP address) when not NULL. */
int conn_tls_client(struct conn *c, SSL_CTX *ctx, const char *server_name);
/* The same, with the name sent as SNI but checked against the certificate only when
 * verify_name (PostgreSQL's sslmode=require/verify-ca send SNI and check no name). */
int conn_tls_client_sni(struct conn *c, SSL_CTX *ctx, const char *server_name, bool verify_name);
/* Every TLS conn releases OpenSSL's 16 KiB+ read and write buffers whenever they empty, so
 * that an idle one costs little; a conn that is busy and alone of its kind (a tunnel) keeps
 * them instead: no allocation and free per record. Call once its handshake is done. */
void conn_tls_keep_buffers(struct conn *c);

int conn_read_start(struct conn *c);
int conn_read_stop(struct conn *c);

int conn_write(struct conn *c, const void *data, size_t len); /* 0 or negative (closing) */
size_t conn_backlog(const struct conn *c);
bool conn_writable(const struct conn *c); /* backlog < high watermark */
/* Default 64 KiB / 256 KiB. low may exceed high: with high = 1, on_drain follows every write
 * once the backlog is at most low (the tunnel uses this to return flow-control credit). */
void conn_set_watermarks(struct conn *c, size_t low, size_t high);

/* Half-close after all queued writes: TLS close_notify (if TLS) then TCP FIN. Reading goes on. */
int conn_shutdown(struct conn *c);
/* Flush queued writes, then close (close_notify + FIN first, if possible). on_close follows. */
void conn_end(struct conn *c);
/* Close now, discarding queued writes. on_close follows. Safe to call twice. */
void conn_close(struct conn *c);
bool conn_closing(const struct conn *c);

/* Hand the conn to another owner: replace its callbacks (and data). */
void conn_set_ops(struct conn *c, const struct conn_ops *ops, void *data);
void *conn_data(const struct conn *c);
void conn_set_data(struct conn *c, void *data);
/* TCP_NODELAY and keepalive are set on every TCP conn by connect/accept. */

/* The socket's file descriptor, or -1 (not open, closing). */
int conn_fileno(const struct conn *c);
/* Peer address as "ip:port" ("[v6]:port"), or "unix" for pipes. */
const char *conn_peer_addr(const struct conn *c);
/* TLS facts, valid after on_handshake; NULL when not TLS / not present. */
const char *conn_tls_version(const struct conn *c); /* "TLSv1.3" */
const char *conn_tls_cipher(const struct conn *c);
const char *conn_tls_sni(const struct conn *c); /* server role: name the client sent */
const char *conn_tls_alpn(const struct conn *c, char *buf, size_t cap); /* selected ALPN */
/* Verified peer certificate's CN into buf[cap] (0), -ENOENT when no verified certificate. */
int conn_tls_peer_cn(const struct conn *c, char *buf, size_t cap);
/* For server contexts that request certificates without verifying them in the handshake
 * (tls_server_opts.request_cert_ca_files): verify what the client sent against store now.
 * Returns 0 and fills *info (tls.h), -ENOENT when the client sent no certificate, -EACCES
 * when verification failed (the reason in err[cap]). */
struct tls_peer_info;
int conn_tls_verify_peer(const struct conn *c, X509_STORE *store, struct tls_peer_info *info,
                         char *err, size_t cap);
/* The certificate the peer sent and the chain that came with it (server side: without the
 * leaf; NULL when none), as new references (X509_free, sk_X509_pop_free(chain, X509_free)),
 * to verify them again later (a reload's CRL, expiry). 0, -ENOENT (no certificate), -ENOMEM. */
int conn_tls_peer_chain(const struct conn *c, X509 **leaf, STACK_OF(X509) * *chain);
/* True when the last EOF was a TLS close_notify (not a bare TCP FIN). */
bool conn_eof_clean(const struct conn *c);

/* The address to listen on for hostport ("host:port", "[v6]:port", "*:port" = every address);
 * a host name is resolved synchronously (start-up only). 0, or negative with err[cap]. */
int conn_resolve_listen(uv_loop_t *loop, const char *hostport, struct sockaddr_storage *ss,
                        char *err, size_t cap);

#endif
