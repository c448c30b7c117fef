/*
 * relay — the relay's per-loop context: listeners, agent tunnels, client sessions.
 *
 * Owns the configuration in force, the TLS contexts built from it, both listeners, every
 * agent tunnel (struct relay_agent) and every client connection (struct relay_client, see
 * frontdoor.c). Nothing here is global: several relays could run in one process.
 */
#ifndef PGB_RELAY_H
#define PGB_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "common/conn.h"
#include "common/tunnel.h"
#include "relay/relay_config.h"

struct relay_agent;  /* one accepted agent tunnel */
struct relay_client; /* one PostgreSQL client connection */

struct relay {
    uv_loop_t *loop;
    struct conn_loop *cl;
    struct relay_config cfg;
    SSL_CTX *client_ctx;        /* SSLRequest path: ALPN "postgresql" optional */
    SSL_CTX *client_direct_ctx; /* direct TLS: ALPN "postgresql" required */
    SSL_CTX *tunnel_ctx;        /* agents: TLS 1.3, client certificate required */
    uv_tcp_t client_listener, tunnel_listener;
    uv_signal_t sig_term, sig_int;
    struct relay_agent *agents; /* every tunnel, up or not (doubly linked) */
    struct relay_client *clients;
    uint32_t next_tunnel_id;
    uint64_t nsessions;         /* client connections that have a stream open */
    uint64_t nclients;
    uint64_t session_counter;
    bool stopping;
    int open_handles;           /* listeners + signals: for clean shutdown */
};

int relay_init(struct relay *r, uv_loop_t *loop, struct relay_config *cfg, char *err);
int relay_start(struct relay *r, char *err);
/* Stop accepting, close every tunnel and client; the loop then ends. */
void relay_stop(struct relay *r);
void relay_free(struct relay *r);

/* Tunnels (relay.c), used by the front door: pick an up tunnel serving route, round robin. */
struct tunnel *relay_route_pick_tunnel(struct relay *r, const char *route, const char **agent);

/* Front door (frontdoor.c). */
void frontdoor_accept(struct relay *r, uv_stream_t *server);
void frontdoor_close_all(struct relay *r);

#endif
