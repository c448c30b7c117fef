/*
 * tunnels — the agents' tunnels on the relay: accepted on the tunnel listener, the agent
 * certificate verified (URI SAN pgburrow-agent:NAME), HELLO answered with WELCOME for the
 * routes the configuration allows for NAME, then offered to the front door for sessions.
 *
 * Each tunnel is a struct relay_agent on r->agents, owned by the relay and freed when its
 * tunnel is done. Borrows the relay's configuration and TLS contexts.
 */
#ifndef PGB_RELAY_TUNNELS_H
#define PGB_RELAY_TUNNELS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/tunnel.h"

struct relay;

/* The tunnel listener has a connection: admit it (admit.h) and start TLS. */
void relay_tunnels_accept(struct relay *r, uv_stream_t *server);
/* GOAWAY to every agent (drain: no new sessions). */
void relay_tunnels_goaway(struct relay *r, const char *why);
/* Close every tunnel (relay_stop). */
void relay_tunnels_close_all(struct relay *r, const char *why);

/* Pick an up tunnel serving route, round robin (the front door). */
struct tunnel *relay_route_pick_tunnel(struct relay *r, const char *route, const char **agent);
/* The same, but never a tunnel of agent not_agent: a second try after that agent failed. */
struct tunnel *relay_route_pick_other_tunnel(struct relay *r, const char *route,
                                             const char *not_agent, const char **agent);
/* Call fn for every tunnel whose agent said HELLO and was accepted, draining ones included
 * (their sessions go on): cancel routing (cancel.c). agent: its certificate name. */
typedef void (*relay_tunnel_fn)(void *ctx, struct tunnel *t, const char *agent);
void relay_foreach_agent_tunnel(struct relay *r, relay_tunnel_fn fn, void *ctx);

/* After r->cfg changed: each up tunnel serves exactly the routes it offered that the new
 * configuration allows for its agent (logged when that changes; open sessions go on). */
void relay_agents_recheck(struct relay *r);
/* The tunnels' part of relay_certs_recheck (reload.h); now: the wall clock. Returns the
 * earliest notAfter among the tunnels left (0: none). */
long long relay_tunnels_certs_recheck(struct relay *r, bool reverify, long long now);

/* One tunnel as the admin console shows it (SHOW TUNNELS); strings borrowed for the call. */
struct relay_tunnel_info {
    uint32_t id;
    const char *agent; /* "" before the certificate was checked */
    const char *peer;
    const char *state; /* handshake, hello, up, draining, closing */
    bool up;           /* serves new sessions */
    char routes[PROTO_MAX_ROUTES * PROTO_NAME_MAX];
    uint32_t sessions;
    uint64_t idle_ms;
    long long connected_at, not_after; /* seconds since the epoch (not_after 0: unknown) */
};
typedef void (*relay_tunnel_info_fn)(void *ctx, const struct relay_tunnel_info *ti);
void relay_tunnels_list(struct relay *r, relay_tunnel_info_fn fn, void *ctx);

/* DRAIN AGENT (admin.h): GOAWAY to every up tunnel of agent (no new sessions; running ones go
 * on), each closed once its last session ends (polled every RELAY_DRAIN_POLL_MS on
 * r->drain_timer), after which the agent dials again. Returns how many tunnels it drained. */
#define RELAY_DRAIN_POLL_MS 250
int relay_tunnels_drain_agent(struct relay *r, const char *agent, const char *why);

#endif
