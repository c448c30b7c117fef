/*
 * cancel_key — the agent's half of cancel routing: it knows the cancel key of each of its
 * sessions and sends the real CancelRequest when a relay forwards a matching cancel.
 *
 * Each session's server-to-client bytes are read (never changed: clients see BackendKeyData
 * exactly as PostgreSQL sent it, real pid and key) until the first ReadyForQuery, and the
 * (pid, key) of its BackendKeyData is registered in the map. A relay forwards a client's
 * CancelRequest as a CANCEL frame either to the agent of the session (when the relay holds the
 * session) or to every agent it has a tunnel to (when the client's cancel reached another
 * relay than its session); the agent looks (pid, key) up, comparing keys in constant time,
 * and only the agent holding the session opens a new connection to the same PostgreSQL to
 * send the CancelRequest. The others ignore it.
 *
 * Owns: the map (a hash table of the live sessions' keys: one entry per session, so it is
 * bounded by the sessions) and the outgoing cancel connections (bounded, each with a
 * timeout). A watch belongs to its session; its map entry dies with it. Nothing secret is
 * logged.
 */
#ifndef PGB_CANCEL_KEY_H
#define PGB_CANCEL_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent/upstream.h"
#include "common/conn.h"
#include "common/tunnel.h"

struct cancel_key_map;
struct cancel_key_watch;

#define CANCEL_KEY_MAX_PENDING 256 /* outgoing cancel connections at once; more are dropped */

/* Returns new, or NULL (out of memory). timeout_ms bounds each outgoing cancel connection. */
struct cancel_key_map *cancel_key_map_new(uv_loop_t *loop, struct conn_loop *cl,
                                          uint64_t timeout_ms);
/* Close the outgoing cancel connections (agent shutting down). */
void cancel_key_map_stop(struct cancel_key_map *m);
/* Free; every watch must have been freed and the loop run until the connections closed. */
void cancel_key_map_free(struct cancel_key_map *m);
size_t cancel_key_map_size(const struct cancel_key_map *m); /* registered keys */

/*
 * A session's watch. pipe: PostgreSQL is reached over a Unix socket at target (its path);
 * else over TCP at peer ("ip:port" or "[v6]:port", conn_peer_addr of the session's conn, so
 * that the cancel reaches the very server the backend runs on); target is then a label for
 * logs. route and sid are for logs. Returns new, or NULL (out of memory, bad address).
 */
struct cancel_key_watch *cancel_key_watch_new(struct cancel_key_map *m, bool pipe,
                                              const char *target, const char *peer,
                                              const char *route, const char *sid);
/* Remove the watch's key from the map, wipe it, free. NULL-tolerant. */
void cancel_key_watch_free(struct cancel_key_watch *w);
/* The tunnel_filter_fn (ctx = the watch) for TUNNEL_TO_PEER, PostgreSQL -> relay. */
bool cancel_key_filter(void *ctx, const uint8_t *data, size_t len);

/* Create a watch for a session just bound to its PostgreSQL conn pg and install the filter
 * on stream s. route (borrowed; may be NULL): the session's route, whose upstream TLS
 * settings the cancel connection uses too (the watch holds a reference on its context), so
 * that the key never crosses the network in clear when the session did not. On failure the
 * stream is reset (its cancels could not be routed) and NULL is returned. */
struct cancel_key_watch *cancel_key_watch_stream(struct cancel_key_map *m, struct tunnel_stream *s,
                                                 struct conn *pg, const char *target,
                                                 const struct agent_route *route, const char *sid);

/* True when (pid, key) is the key of one of this agent's sessions. */
bool cancel_key_lookup(const struct cancel_key_map *m, uint32_t pid, const uint8_t *key,
                       size_t key_len);

/* A CANCEL frame body from a relay on tunnel t. Keys of other agents' sessions are ignored
 * (logged at debug); known ones get a CancelRequest to PostgreSQL. Returns 0, or negative after
 * failing the tunnel (malformed frame: protocol violation). */
int cancel_key_on_frame(struct cancel_key_map *m, struct tunnel *t, const uint8_t *body,
                        size_t len);

#endif
