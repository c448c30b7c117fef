/*
 * frontdoor — the relay's PostgreSQL client connections: the first bytes (SSLRequest,
 * GSSENCRequest, CancelRequest, direct TLS), TLS, the StartupMessage, routing and access
 * checks, then the session streamed through an agent's tunnel (the state machine is drawn at
 * the top of frontdoor.c); or, for dbname=pgburrow with the admin console on, the admin
 * certificate checked and the conn handed to the console (r->open_admin, admin.h). What the
 * console sees of the sessions, and KILL SESSION, are at the end.
 *
 * Each client is a struct relay_client on r->clients, owned by the relay and freed in its
 * connection's last close callback; the stream it opens is its own (tunnel_stream_ops).
 */
#ifndef PGB_RELAY_FRONTDOOR_H
#define PGB_RELAY_FRONTDOOR_H

#include <stdbool.h>
#include <stdint.h>
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

/* One client session as the admin console shows it (SHOW SESSIONS): routed, its stream opening
 * or open. Strings borrowed for the call. */
struct frontdoor_session_info {
    const char *sid, *state, *route, *agent, *client, *user, *database;
    const char *application_name, *cert_subject, *tls_version; /* NULL: none */
    bool authenticated;
    uint64_t duration_ms;
    uint64_t bytes_in, bytes_out; /* client -> server, server -> client */
};
typedef void (*frontdoor_session_fn)(void *ctx, const struct frontdoor_session_info *si);
void frontdoor_sessions_list(struct relay *r, frontdoor_session_fn fn, void *ctx);
/* KILL SESSION: end session sid with FATAL 57P01 (at a server message boundary; in the middle
 * of one the connection only ends) and RESET its stream. 0, or -ENOENT (no such session). */
int frontdoor_kill_session(struct relay *r, const char *sid, const char *by);

#endif
