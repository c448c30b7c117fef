/*
 * relay_tls — the relay's TLS contexts (client listener with and without direct TLS, tunnel
 * listener), the agents' CA store and the access stores (access.h), built from a
 * configuration and swapped into the relay as a whole (start-up and reload).
 */
#ifndef PGB_RELAY_TLS_H
#define PGB_RELAY_TLS_H

#include <openssl/ssl.h>

#include "relay/relay_config.h"

struct relay;
struct access;

/*
 * Everything a reload rebuilds from files (certificates, keys, CAs, CRLs) and swaps as a
 * whole. A reload replaces r->cfg and these contexts between two loop turns: never keep a
 * pointer into r->cfg across turns (copy what you need), and take an SSL_CTX reference
 * (conn_tls_server does) to use a context later. A context added to struct relay must be
 * built in relay_tls_build and moved in relay_tls_swap.
 */
struct relay_tls {
    SSL_CTX *client_ctx, *client_direct_ctx, *tunnel_ctx;
    X509_STORE *agent_store;
    struct access *access; /* per-route client certificate stores, ident maps (access.h) */
};
/* Build every context from cfg. 0, or negative with err[cap] (t then empty). */
int relay_tls_build(const struct relay_config *cfg, struct relay_tls *t, char *err, size_t cap);
/* Exchange t with the relay's contexts (t then holds the old ones: relay_tls_free them). */
void relay_tls_swap(struct relay *r, struct relay_tls *t);
void relay_tls_free(struct relay_tls *t);
#endif
