/*
 * cancel — the relay's half of cancel routing (the agent's half is agent/cancel_key.h).
 *
 * Clients get BackendKeyData exactly as PostgreSQL sent it (real pid, real key), and the relay
 * notes each of its sessions' keys as the message passes (relay_cancel_watch_stream). A client's
 * CancelRequest whose (pid, key) is one of this relay's sessions goes, as a CANCEL frame, to
 * that session's tunnel only. Any other (the client reached another relay than its session's,
 * behind a load balancer) goes to every up tunnel: agents keep a tunnel to every relay, so the
 * agent holding the session gets it whichever relay the client reached, with no state shared
 * between relays; each agent compares the key in constant time and only the owner acts. The
 * relay never answers a CancelRequest.
 *
 * Cancels are rate limited per source (token bucket, RELAY_CANCEL_RATE per second, burst
 * RELAY_CANCEL_BURST) in a table of at most RELAY_CANCEL_SOURCES sources; the least recently
 * seen source makes room for a new one. A source is an IPv4 address or an IPv6 /64 (one host
 * usually owns a whole /64). Then per network (IPv4 /24, IPv6 /48: what one party usually
 * holds, RELAY_CANCEL_NET_RATE), then relay-wide (RELAY_CANCEL_GLOBAL_RATE): one party with
 * many addresses gets at most a tenth of the relay-wide budget, so the cancels of others still
 * pass unless at least ten networks flood together. Owns the limiter and the watches; borrows
 * everything else.
 */
#ifndef PGB_RELAY_CANCEL_H
#define PGB_RELAY_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

struct relay;
struct relay_cancel_limiter;
struct relay_cancel_watch;
struct tunnel_stream;

#define RELAY_CANCEL_PKT_MIN 16                          /* 3.0: length, code, pid, 4-byte key */
#define RELAY_CANCEL_PKT_MAX (12 + PROTO_CANCEL_KEY_MAX) /* 3.2: keys up to 256 bytes */
#define RELAY_CANCEL_RATE 10                             /* cancels per second per source */
#define RELAY_CANCEL_BURST 20
#define RELAY_CANCEL_SOURCES 4096
/* per network (IPv4 /24, IPv6 /48), so that one party's many addresses share one budget */
#define RELAY_CANCEL_NET_RATE 100
#define RELAY_CANCEL_NET_BURST 200
/* and relay-wide, whatever the sources: many addresses cannot flood the agents either */
#define RELAY_CANCEL_GLOBAL_RATE 1000
#define RELAY_CANCEL_GLOBAL_BURST 2000

/* Returns new, or NULL (out of memory). rate: tokens per second; burst: bucket size. */
struct relay_cancel_limiter *relay_cancel_limiter_new(size_t sources, uint32_t rate,
                                                      uint32_t burst);
void relay_cancel_limiter_free(struct relay_cancel_limiter *l); /* NULL-tolerant */
/* Take a token for the source of peer ("ip:port", "[v6]:port") at now_ms. Returns true when
 * allowed. relay_cancel_request logs drops as other refusals are logged (relay_admit_log_ok,
 * PREAUTH_CANCEL). */
bool relay_cancel_limiter_take(struct relay_cancel_limiter *l, const char *peer, uint64_t now_ms);
size_t relay_cancel_limiter_size(const struct relay_cancel_limiter *l); /* sources tracked */
/* What makes a source: the first v4_prefix bits of an IPv4 address (default 32), the first
 * v6_prefix bits of an IPv6 one (default 64, at most 64). */
void relay_cancel_limiter_set_prefix(struct relay_cancel_limiter *l, unsigned v4_prefix,
                                     unsigned v6_prefix);

/* The cancel key of the session on stream s (sid and agent are copied, for logs), noted when
 * its BackendKeyData passes: call relay_cancel_watch_follow after each pgwire_bescan_feed of
 * the session's server-to-client bytes. Returns new, or NULL (out of memory). Free it before
 * the stream is done. */
struct pgwire_bescan;
struct relay_cancel_watch *relay_cancel_watch_new(struct relay *r, struct tunnel_stream *s,
                                                  const char *sid, const char *agent);
void relay_cancel_watch_follow(struct relay_cancel_watch *w, const struct pgwire_bescan *scan,
                               unsigned ev);
void relay_cancel_watch_free(struct relay_cancel_watch *w); /* NULL-tolerant */

/* True when len is a possible CancelRequest length (RELAY_CANCEL_PKT_MIN..MAX). */
bool relay_cancel_len_ok(uint32_t len);

/* A complete CancelRequest pkt[len] (length word included) from client peer: rate limit,
 * forward to the session's agent or to every agent, log "cancel forwarded ..." or "cancel
 * dropped reason=...".
 * The caller closes the client's connection without answering. */
void relay_cancel_request(struct relay *r, const char *peer, const uint8_t *pkt, size_t len);

#endif
