/*
 * cancel — the relay's half of cancel routing (the agent's half is agent/cancel_key.h).
 *
 * A client's CancelRequest carries the fake pid and key its agent put in BackendKeyData. The
 * pid holds a 15-bit hash of that agent's name (proto_cancel_pid_hash), so the relay, with no
 * state shared with other relays, forwards a CANCEL frame to every up tunnel whose agent name
 * has that hash; since agents keep a tunnel to every relay, a cancel that reaches any relay
 * reaches the agent holding the session. The relay never answers a CancelRequest.
 *
 * Cancels are rate limited per source (token bucket, RELAY_CANCEL_RATE per second, burst
 * RELAY_CANCEL_BURST) in a table of at most RELAY_CANCEL_SOURCES sources; the least recently
 * seen source makes room for a new one. A source is an IPv4 address or an IPv6 /64 (one host
 * usually owns a whole /64). Owns the limiter; borrows everything else.
 */
#ifndef PGB_RELAY_CANCEL_H
#define PGB_RELAY_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

struct relay;
struct relay_cancel_limiter;

#define RELAY_CANCEL_PKT_MIN 16                          /* 3.0: length, code, pid, 4-byte key */
#define RELAY_CANCEL_PKT_MAX (12 + PROTO_CANCEL_KEY_MAX) /* 3.2: keys up to 256 bytes */
#define RELAY_CANCEL_RATE 10                             /* cancels per second per source */
#define RELAY_CANCEL_BURST 20
#define RELAY_CANCEL_SOURCES 4096
/* and relay-wide, whatever the sources: many addresses cannot flood the agents either */
#define RELAY_CANCEL_GLOBAL_RATE 1000
#define RELAY_CANCEL_GLOBAL_BURST 2000
#define RELAY_CANCEL_LOG_MS 1000 /* rate-limit drops are logged once per this, per source */

/* Returns new, or NULL (out of memory). rate: tokens per second; burst: bucket size. */
struct relay_cancel_limiter *relay_cancel_limiter_new(size_t sources, uint32_t rate,
                                                      uint32_t burst);
void relay_cancel_limiter_free(struct relay_cancel_limiter *l); /* NULL-tolerant */
/*
 * Take a token for the source of peer ("ip:port", "[v6]:port") at now_ms. Returns true when
 * allowed. When refused, *log_drop says whether to log this drop (the first one, then at
 * most once per RELAY_CANCEL_LOG_MS) and *suppressed how many drops went unlogged before it.
 */
bool relay_cancel_limiter_take(struct relay_cancel_limiter *l, const char *peer, uint64_t now_ms,
                               bool *log_drop, uint32_t *suppressed);
size_t relay_cancel_limiter_size(const struct relay_cancel_limiter *l); /* sources tracked */

/* True when len is a possible CancelRequest length (RELAY_CANCEL_PKT_MIN..MAX). */
bool relay_cancel_len_ok(uint32_t len);

/* A complete CancelRequest pkt[len] (length word included) from client peer: rate limit,
 * forward to the matching agents, log "cancel forwarded ..." or "cancel dropped reason=...".
 * The caller closes the client's connection without answering. */
void relay_cancel_request(struct relay *r, const char *peer, const uint8_t *pkt, size_t len);

#endif
