/*
 * proxied.c — the client's address from a load balancer's PROXY header (proxied.h).
 */
#include "relay/proxied.h"

#include <stdio.h>

#include "common/cidr.h"
#include "common/log.h"
#include "relay/admit.h"
#include "relay/relay.h"

bool relay_proxied_expected(const struct relay *r, const char *peer)
{
    uint8_t addr[16];

    return r->cfg.proxy_protocol_from.n > 0 && cidr_addr_parse(peer, addr) == 0 &&
           cidr_list_match(&r->cfg.proxy_protocol_from, addr);
}

int relay_proxied_apply(struct relay *r, const struct proxyproto_result *res,
                        struct preauth_slot *slot, char *peer, size_t cap)
{
    char client[PROXYPROTO_ADDR_STR_MAX];
    int rc;

    if (proxyproto_format_source(res, client, sizeof(client)) < 0) {
        log_debug("client=%s PROXY v%d %s: no client address, the balancer's own applies", peer,
                  res->version, res->local ? "LOCAL" : "header");
        return 0;
    }
    log_debug("client=%s via=%s (PROXY v%d)", client, peer, res->version);
    snprintf(peer, cap, "%s", client);
    rc = relay_admit_rekey(r, slot, peer, "client");
    return rc < 0 ? rc : 0;
}
