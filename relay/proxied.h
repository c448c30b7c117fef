/*
 * proxied — client connections that arrive through a load balancer speaking the PROXY protocol
 * ([relay] proxy_protocol_from = CIDR, ...).
 *
 * A connection from one of those addresses must begin with a PROXY protocol v1 or v2 header
 * (common/proxyproto.h) within startup_timeout; until it is complete the connection's pending
 * slot is held by the balancer's address, bounded relay-wide only (max_pending and shedding,
 * admit.h: a balancer's clients may connect all at once). Once the header names a client, the
 * client's address is the
 * connection's address from then on (allow, max_sessions_per_source, handshake_rate, cancel
 * limits, pending bounds, logs, audit, the session's client_addr), and the pending slot moves
 * to the client's source. A header without a client address (v2 LOCAL, as HAProxy's health
 * checks send it; v1 UNKNOWN; v2 UNSPEC or UNIX) keeps the balancer's own address.
 * Connections from elsewhere must not carry a header: the front door refuses one (08P01).
 *
 * The list is read from the running configuration at accept, so a reload applies to the next
 * connections. Borrows the relay; owns nothing.
 */
#ifndef PGB_RELAY_PROXIED_H
#define PGB_RELAY_PROXIED_H

#include <stdbool.h>
#include <stddef.h>

#include "common/proxyproto.h"
#include "relay/preauth.h"

struct relay;

/* Must the connection from peer ("ip:port", "[v6]:port") begin with a PROXY header? */
bool relay_proxied_expected(const struct relay *r, const char *peer);

/* The header of the connection from peer[cap] (the balancer) is complete: res. When it names a
 * client, peer becomes the client's "ip:port" and slot (held) moves to the client's source.
 * 0, or negative when the client's source already holds max_pending_per_source pending
 * connections (refusal logged): the caller closes the connection. */
int relay_proxied_apply(struct relay *r, const struct proxyproto_result *res,
                        struct preauth_slot *slot, char *peer, size_t cap);

#endif
