/*
 * upstream — TLS from the agent to its PostgreSQL. See upstream.h.
 *
 * The modes mean what they mean in libpq, so that an operator can copy a working connection
 * string into agent.ini:
 *   require      encrypt; verify nothing (but with sslrootcert set, verify the chain, as libpq
 *                does when a root certificate is present)
 *   verify-ca    encrypt; the chain must lead to sslrootcert; no name check
 *   verify-full  verify-ca, and the certificate must name sslservername (default: host; an IP
 *                address is checked against the IP SANs)
 * prefer and allow are not offered: silently falling back to plaintext is what an operator
 * who writes sslmode at all does not want.
 */
#include "agent/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/tls.h"

int upstream_build_contexts(struct agent_config *cfg, char *err, size_t cap)
{
    char terr[PGB_ERR_MAX];
    int rc = 0;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct agent_route *r = &cfg->routes[i];
        if (r->sslmode == AGENT_SSLMODE_DISABLE || r->ssl_ctx)
            continue;
        struct tls_client_opts o = {
            .ca_file = r->sslrootcert,
            .cert_file = r->sslcert,
            .key_file = r->sslkey,
            .verify_none = r->sslmode == AGENT_SSLMODE_REQUIRE && !r->sslrootcert,
        };
        r->ssl_ctx = tls_client_ctx_new(&o, terr, sizeof(terr));
        if (!r->ssl_ctx) {
            snprintf(err, cap, "[route %s] upstream TLS: %s", r->name, terr);
            rc = -EINVAL;
            goto out;
        }
    }
out:
    return rc;
}

void upstream_tls_init(struct upstream_tls *u, const struct agent_route *r)
{
    memset(u, 0, sizeof(*u));
    u->mode = r->sslmode;
    if (r->sslmode == AGENT_SSLMODE_DISABLE || !r->ssl_ctx)
        return;
    u->ctx = tls_ctx_ref(r->ssl_ctx);
    /* SNI in every mode, as libpq sends it: managed services route on it. */
    u->verify_name = r->sslmode == AGENT_SSLMODE_VERIFY_FULL;
    snprintf(u->server_name, sizeof(u->server_name), "%s",
             r->sslservername ? r->sslservername : r->host);
}

bool upstream_tls_enabled(const struct upstream_tls *u)
{
    return u->ctx != NULL;
}

int upstream_tls_request(struct upstream_tls *u, struct conn *c)
{
    /* Int32 length 8, Int32 80877103 (0x04d2162f), big-endian */
    static const uint8_t req[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    int rc = conn_write(c, req, sizeof(req));

    if (rc == 0)
        rc = conn_read_start(c);
    if (rc == 0)
        u->asked = true;
    return rc;
}

int upstream_tls_on_answer(struct upstream_tls *u, struct conn *c, const uint8_t *data, size_t len,
                           const char *target, char *why, size_t cap)
{
    int rc = -EPROTO;

    if (!u->asked || len == 0) {
        snprintf(why, cap, "%s: unexpected data from PostgreSQL", target);
        goto out;
    }
    u->asked = false;
    if (data[0] == 'N') {
        snprintf(why, cap, "PostgreSQL at %s does not support SSL (route sslmode=%s)", target,
                 agent_sslmode_name(u->mode));
        goto out;
    }
    if (data[0] != 'S') {
        snprintf(why, cap, "PostgreSQL at %s sent an invalid answer to the SSL request", target);
        goto out;
    }
    if (len > 1) {
        /* CVE-2021-23222 class: plaintext injected before the handshake must never be taken
         * as coming from inside TLS. */
        snprintf(why, cap, "PostgreSQL at %s sent unencrypted data after the SSL response", target);
        goto out;
    }
    rc = conn_tls_client_sni(c, u->ctx, u->server_name, u->verify_name);
    if (rc < 0)
        snprintf(why, cap, "%s: could not start TLS", target);
out:
    return rc;
}

void upstream_tls_release(struct upstream_tls *u)
{
    SSL_CTX_free(u->ctx);
    u->ctx = NULL;
}
