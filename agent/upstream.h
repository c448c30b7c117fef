/*
 * upstream — TLS from the agent to its PostgreSQL, per route, the way libpq does it
 * (`sslmode = disable | require | verify-ca | verify-full`, sslrootcert, sslcert, sslkey,
 * sslservername).
 *
 * Contexts: upstream_build_contexts() builds one SSL_CTX per route that uses TLS, at start-up
 * and for every configuration loaded on reload; each lives and dies with its agent_route.
 *
 * Per session, after the TCP connect to PostgreSQL:
 *
 *   connected --SSLRequest--> ASKED --'S' (1 byte)--> conn_tls_client --on_handshake--> ready
 *                                   \--'N', any other byte, bytes after 'S', EOF--> failure
 *
 * A session holds its own reference on the route's context from upstream_tls_init() until
 * upstream_tls_release(), so that a reload freeing the old configuration during the SSLRequest
 * round trip harms nobody. Borrows the conn.
 */
#ifndef PGB_AGENT_UPSTREAM_H
#define PGB_AGENT_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "agent/agent_config.h"
#include "common/conn.h"

struct upstream_tls {
    SSL_CTX *ctx; /* held reference; NULL: the route uses no TLS */
    enum agent_sslmode mode;
    char server_name[256]; /* sent as SNI (unless an IP address), as libpq does */
    bool verify_name;      /* verify-full: the certificate must carry server_name */
    bool asked;            /* SSLRequest sent, answer not yet read */
};

/* Build the context of every route of cfg whose sslmode is not disable (routes that already
 * have one keep it). Reads the CA, certificate and key files (the key is permission-checked).
 * 0, or negative with err[cap] naming the route. */
int upstream_build_contexts(struct agent_config *cfg, char *err, size_t cap);

/* Take what the session needs from its route (a reference on its context). */
void upstream_tls_init(struct upstream_tls *u, const struct agent_route *r);
bool upstream_tls_enabled(const struct upstream_tls *u);
/* Send SSLRequest on the freshly connected conn and start reading the answer. */
int upstream_tls_request(struct upstream_tls *u, struct conn *c);
/* The answer (bytes read after SSLRequest): on 'S' starts the TLS handshake (on_handshake
 * follows) and returns 0; otherwise negative with why[cap] for the client's error message.
 * target: "host:port" for messages. */
int upstream_tls_on_answer(struct upstream_tls *u, struct conn *c, const uint8_t *data, size_t len,
                           const char *target, char *why, size_t cap);
/* Drop the context reference. Safe to call twice, and on an upstream_tls never inited. */
void upstream_tls_release(struct upstream_tls *u);

#endif
