/*
 * frontdoor — the relay's PostgreSQL client connections: the first bytes (SSLRequest,
 * GSSENCRequest, CancelRequest, direct TLS), TLS, the StartupMessage, routing and access
 * checks, then the session streamed through an agent's tunnel (the state machine is drawn at
 * the top of frontdoor.c).
 *
 * Each client is a struct relay_client on r->clients, owned by the relay and freed in its
 * connection's last close callback; the stream it opens is its own (tunnel_stream_ops).
 */
#ifndef PGB_RELAY_FRONTDOOR_H
#define PGB_RELAY_FRONTDOOR_H

#include <stdbool.h>
#include <uv.h>

struct relay;

/* The client listener has a connection: admit it (admit.h) and read its first bytes. */
void frontdoor_accept(struct relay *r, uv_stream_t *server);
/* Close every client connection (relay_stop). */
void frontdoor_close_all(struct relay *r);
/* The sessions' part of relay_certs_recheck (reload.h); now: the wall clock. Returns the
 * earliest notAfter among the sessions left (0: none). */
long long frontdoor_certs_recheck(struct relay *r, bool reverify, long long now);
/* Add the bytes of running sessions so far to their routes' live_to_server / live_to_client
 * (stats.h), for a scrape. */
void frontdoor_stats_live(struct relay *r);

#endif
