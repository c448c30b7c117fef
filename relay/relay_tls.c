/*
 * relay_tls.c — the relay's TLS contexts and access stores, built and swapped as a whole
 * (see relay_tls.h).
 */
#include "relay/relay_tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/tls.h"
#include "relay/access.h"
#include "relay/relay.h"

int relay_tls_build(const struct relay_config *cfg, struct relay_tls *t, char *err, size_t cap)
{
    char terr[PGB_ERR_MAX];
    int rc = -EINVAL;

    memset(t, 0, sizeof(*t));
    const char *client_cas[RELAY_MAX_ROUTES + 1];
    if (!(t->access = access_new(cfg, terr, sizeof(terr))))
        goto out;
    struct tls_server_opts client = {
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .min_version = cfg->tls_min_version,
        .alpn = "postgresql",
        .max_send_fragment = 8192,
    };
    access_client_tls_opts(cfg, &client, client_cas);
    t->client_ctx = tls_server_ctx_new(&client, terr, sizeof(terr));
    if (!t->client_ctx)
        goto out;
    client.alpn_required = true;
    t->client_direct_ctx = tls_server_ctx_new(&client, terr, sizeof(terr));
    if (!t->client_direct_ctx)
        goto out;
    struct tls_server_opts tunnel = {
        .cert_file = cfg->tunnel_cert ? cfg->tunnel_cert : cfg->tls_cert,
        .key_file = cfg->tunnel_key ? cfg->tunnel_key : cfg->tls_key,
        .client_ca_file = cfg->agent_ca,
        .client_crl_file = cfg->agent_crl,
        .require_client_cert = true,
        .min_version = TLS1_3_VERSION,
        .alpn = PROTO_ALPN,
        .alpn_required = true,
    };
    access_tunnel_tls_opts(cfg, &tunnel);
    t->tunnel_ctx = tls_server_ctx_new(&tunnel, terr, sizeof(terr));
    if (!t->tunnel_ctx)
        goto out;
    if (!(t->agent_store = tls_store_new(cfg->agent_ca, cfg->agent_crl, terr, sizeof(terr))))
        goto out;
    rc = 0;
out:
    if (rc < 0) {
        snprintf(err, cap, "%s", terr);
        relay_tls_free(t);
    }
    return rc;
}

static void swap_ctx(SSL_CTX **a, SSL_CTX **b)
{
    SSL_CTX *tmp = *a;
    *a = *b;
    *b = tmp;
}

void relay_tls_swap(struct relay *r, struct relay_tls *t)
{
    swap_ctx(&r->client_ctx, &t->client_ctx);
    swap_ctx(&r->client_direct_ctx, &t->client_direct_ctx);
    swap_ctx(&r->tunnel_ctx, &t->tunnel_ctx);
    X509_STORE *store = r->agent_store;
    r->agent_store = t->agent_store;
    t->agent_store = store;
    struct access *a = r->access;
    r->access = t->access;
    t->access = a;
}

void relay_tls_free(struct relay_tls *t)
{
    /* connections made with these contexts hold their own references (SSL_new) */
    SSL_CTX_free(t->client_ctx);
    SSL_CTX_free(t->client_direct_ctx);
    SSL_CTX_free(t->tunnel_ctx);
    X509_STORE_free(t->agent_store);
    access_free(t->access);
    memset(t, 0, sizeof(*t));
}
