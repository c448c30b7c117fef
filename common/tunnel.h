/*
 * tunnel — the multiplexer both daemons run on one TLS conn: frames, streams, flow control,
 * keepalive. The relay opens streams (OPEN); the agent accepts them. Once a stream is bound
 * to a local conn (the PostgreSQL client at the relay, the PostgreSQL server at the agent),
 * the tunnel splices bytes both ways by itself, within per-stream credit windows:
 *
 *   local conn --on_read--> [credit? tunnel writable?] --DATA--> peer
 *   peer --DATA--> [within window?] --conn_write--> local conn --drained--> WINDOW --> peer
 *
 * A stream whose local side stops reading stops only itself: its peer runs out of credit,
 * nothing else waits. A tunnel whose TLS conn backs up pauses every stream's local reads
 * until it drains (bounded memory: one window per stream plus the tunnel watermark).
 *
 * Stream states (per direction: open -> CLOSE sent/received; RESET ends both):
 *
 *   relay:  OPENING --OPEN_OK--> OPEN --CLOSE both ways / RESET / tunnel down--> DONE
 *                  \--OPEN_FAIL--> DONE
 *   agent:  ACCEPTED --tunnel_stream_accept_ok--> OPEN ... --> DONE
 *                   \--tunnel_stream_fail--> DONE
 *
 * Ownership: a tunnel owns its conn and all its streams. A stream owns the local conn bound
 * to it (tunnel_stream_bind takes ownership). A stream's events go to whoever opened or
 * accepted it (its struct tunnel_stream_ops), not through the tunnel: sops->on_done is that
 * owner's last look at the stream. ops->on_tunnel_done is the tunnel owner's last look at the
 * tunnel, after every stream is done and the conn closed; the tunnel is freed when it returns.
 */
#ifndef PGB_TUNNEL_H
#define PGB_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/conn.h"
#include "proto/proto.h"

struct tunnel;
struct tunnel_stream;

struct tunnel_ops {
    /* Frames on stream 0 other than PING/PONG (HELLO, WELCOME, GOAWAY). Return negative to
     * fail the tunnel (it then sends nothing more and closes). */
    int (*on_control)(struct tunnel *t, const struct proto_hdr *h, const uint8_t *body);
    /* Agent: the relay asks for a stream. Return 0 after tunnel_stream_accept() (answer later
     * with accept_ok/fail), or a negative to refuse (the tunnel sends OPEN_FAIL itself). */
    int (*on_open)(struct tunnel *t, uint32_t stream_id, const struct proto_open *m);
    /* The tunnel's TLS conn established (handshake done). */
    void (*on_up)(struct tunnel *t);
    /* The tunnel is finished (reason: why it ended); freed after this returns. */
    void (*on_tunnel_done)(struct tunnel *t, const char *reason);
};

/* The events of one stream, for whoever opened (relay) or accepted (agent) it. */
struct tunnel_stream_ops {
    /* Opener: the peer answered the OPEN (a RESET while opening counts as a refusal). fail is
     * NULL for OPEN_OK; after a refusal on_done follows. Unused for accepted streams. */
    void (*on_open_result)(struct tunnel_stream *s, const struct proto_error *fail);
    /* The stream ended. err is NULL when both directions closed cleanly. */
    void (*on_done)(struct tunnel_stream *s, const char *err);
};

struct tunnel_limits {
    uint32_t ping_interval_ms;
    uint32_t dead_timeout_ms;
    uint32_t max_streams;
    uint32_t initial_window;
};

/* Takes ownership of conn (its ops and data are replaced). Returns new, or NULL (conn closed). */
struct tunnel *tunnel_new(uv_loop_t *loop, struct conn *conn, const struct tunnel_ops *ops,
                          const struct tunnel_limits *lim, uint32_t id, void *data);
void *tunnel_data(const struct tunnel *t);
/* The owner's pointer handed to ops: a new owner takes the tunnel over (agent: a retired link). */
void tunnel_set_data(struct tunnel *t, void *data);
uint32_t tunnel_id(const struct tunnel *t);
struct conn *tunnel_conn(const struct tunnel *t);
uint32_t tunnel_nstreams(const struct tunnel *t);
/* Closing (failed, closed, peer gone): takes no new stream; on_tunnel_done follows. */
bool tunnel_closing(const struct tunnel *t);
/* The agent adopts the relay's window from WELCOME: only before any stream exists. */
int tunnel_set_initial_window(struct tunnel *t, uint32_t window);
/* Milliseconds since the last frame arrived. */
uint64_t tunnel_idle_ms(const struct tunnel *t);
/* Start keepalive (call when the tunnel is established and HELLO/WELCOME done). */
void tunnel_start_keepalive(struct tunnel *t);
/* Send a complete frame (from proto_encode_*). 0 or negative (tunnel closing). */
int tunnel_send(struct tunnel *t, const uint8_t *frame, size_t len);
/* Send GOAWAY(code "00000", msg): the sender opens or accepts no new streams; running ones go
 * on. The tunnel stays up. */
void tunnel_goaway(struct tunnel *t, const char *msg);
/* Send GOAWAY(code, msg) and close the tunnel after it is flushed. */
void tunnel_fail(struct tunnel *t, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A peer's message `what` ("WELCOME", "OPEN", ...) could not be decoded, rc from
 * proto_decode_*: GOAWAY 08P01 "bad WHAT: why" when the peer broke the protocol
 * (proto_is_violation), 53200 "could not decode WHAT: why" when this side ran out of memory;
 * then close. Returns -EPROTO for a frame handler to return. */
int tunnel_fail_decode(struct tunnel *t, const char *what, int rc);
/* Close now; every stream ends with `reason`. */
void tunnel_close(struct tunnel *t, const char *reason);

/* Relay: open a stream (sends OPEN); its events go to sops (borrowed: must outlive the
 * stream) with data. Returns new stream or NULL (limit, or closing). */
struct tunnel_stream *tunnel_stream_open(struct tunnel *t, const struct proto_open *m,
                                         const struct tunnel_stream_ops *sops, void *data);
/* Agent: register the stream the relay opened (from on_open); its events go to sops. */
struct tunnel_stream *tunnel_stream_accept(struct tunnel *t, uint32_t stream_id,
                                           const struct tunnel_stream_ops *sops, void *data);
/* Agent: answer OPEN_OK (then bind), or OPEN_FAIL (stream done; sops->on_done follows). */
int tunnel_stream_accept_ok(struct tunnel_stream *s);
void tunnel_stream_fail(struct tunnel_stream *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Send bytes on the stream outside the splice (relay: the StartupMessage). Must fit credit. */
int tunnel_stream_write(struct tunnel_stream *s, const uint8_t *data, size_t len);
/* Bind the local conn: the stream takes ownership and starts splicing. end_on_close: when the
 * peer CLOSEs, end the local conn entirely (relay: the server ended the session). */
void tunnel_stream_bind(struct tunnel_stream *s, struct conn *local, bool end_on_close);
/* Abort the stream: RESET to the peer, local conn closed. */
void tunnel_stream_reset(struct tunnel_stream *s, const char *code, const char *msg);
/* Abort the stream toward the peer (RESET code msg), but end the local conn gracefully: what is
 * queued for it is flushed, then last[last_len] (copied; the relay: a FATAL ErrorResponse), then
 * TLS close_notify and FIN. sops->on_done sees msg as the error. */
void tunnel_stream_end_local(struct tunnel_stream *s, const char *code, const char *msg,
                             const uint8_t *last, size_t last_len);

/*
 * Filters see the bytes of one direction of a stream as they move on, read-only: the bytes a
 * peer sends are the bytes the other end gets (both daemons read BackendKeyData for cancel
 * routing, the relay reads statements for the audit log). Bytes come in arbitrary pieces (a
 * message may be split anywhere). Return false to stop that filter (no cost afterwards).
 * Up to TUNNEL_MAX_FILTERS per direction, run in the order they were set (-ENOSPC beyond).
 * TUNNEL_TO_PEER: local conn -> tunnel; TUNNEL_TO_LOCAL: tunnel -> local conn.
 */
enum tunnel_dir { TUNNEL_TO_PEER = 0, TUNNEL_TO_LOCAL = 1 };
typedef bool (*tunnel_filter_fn)(void *ctx, const uint8_t *data, size_t len);
#define TUNNEL_MAX_FILTERS 2
int tunnel_stream_set_filter(struct tunnel_stream *s, enum tunnel_dir dir, tunnel_filter_fn fn,
                             void *ctx);

uint32_t tunnel_stream_id(const struct tunnel_stream *s);
struct tunnel *tunnel_stream_tunnel(const struct tunnel_stream *s);
void *tunnel_stream_data(const struct tunnel_stream *s);
void tunnel_stream_set_data(struct tunnel_stream *s, void *data);
uint64_t tunnel_stream_bytes_out(const struct tunnel_stream *s); /* local -> peer */
uint64_t tunnel_stream_bytes_in(const struct tunnel_stream *s);  /* peer -> local */

#endif
