/*
 * routing — SNI, options, default route (see routing.h).
 */
#include "relay/routing.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int routing_sni_route(const char *sni, char *const *domains, size_t ndomains, char *route,
                      size_t cap)
{
    size_t slen = sni ? strlen(sni) : 0;

    for (size_t i = 0; i < ndomains; i++) {
        size_t dlen = strlen(domains[i]), llen;

        if (slen < dlen + 2 || sni[slen - dlen - 1] != '.' ||
            strcasecmp(sni + slen - dlen, domains[i]) != 0)
            continue;
        llen = slen - dlen - 1;
        if (llen >= cap || llen >= PROTO_NAME_MAX || memchr(sni, '.', llen))
            return -EINVAL;
        memcpy(route, sni, llen);
        route[llen] = '\0';
        return proto_name_valid(route) ? 1 : -EINVAL;
    }
    return 0;
}

int routing_choose(char *const *domains, size_t ndomains, const char *sni, const char *options,
                   const char *default_route, struct routing_result *out, char *msg)
{
    char by_guc[PROTO_NAME_MAX] = "", by_endpoint[PROTO_NAME_MAX] = "";
    const char *by_options = NULL;
    int rc;

    memset(out, 0, offsetof(struct routing_result, options));
    out->options[0] = '\0';
    msg[0] = '\0';

    rc = routing_sni_route(sni, domains, ndomains, out->route, sizeof(out->route));
    if (rc < 0) {
        snprintf(msg, ROUTING_MSG_MAX,
                 "pgburrow: server name \"%.200s\" does not name a route (expected ROUTE.domain "
                 "with ROUTE made of A-Z a-z 0-9 _ -)",
                 sni);
        return -EINVAL;
    }
    bool from_sni = rc == 1;

    if (options) {
        if (pgwire_options_route(options, by_guc, sizeof(by_guc)) < 0) {
            snprintf(msg, ROUTING_MSG_MAX, "pgburrow: invalid route name in options");
            return -EINVAL;
        }
        rc = pgwire_options_endpoint(options, by_endpoint, sizeof(by_endpoint), out->options,
                                     sizeof(out->options));
        if (rc < 0) {
            snprintf(msg, ROUTING_MSG_MAX, "pgburrow: invalid route name in options (endpoint=)");
            return -EINVAL;
        }
        out->options_changed = rc == 1;
        if (by_guc[0] && by_endpoint[0] && strcmp(by_guc, by_endpoint) != 0) {
            snprintf(msg, ROUTING_MSG_MAX,
                     "pgburrow: options name two routes: \"%s\" (pgburrow.route) and \"%s\" "
                     "(endpoint)",
                     by_guc, by_endpoint);
            return -EINVAL;
        }
        by_options = by_guc[0] ? by_guc : by_endpoint[0] ? by_endpoint : NULL;
    }

    if (from_sni) {
        out->source = ROUTING_SNI;
        if (by_options && strcmp(by_options, out->route) != 0) {
            snprintf(msg, ROUTING_MSG_MAX,
                     "pgburrow: the server name names route \"%s\" but the options name route "
                     "\"%s\"",
                     out->route, by_options);
            return -EINVAL;
        }
        return 0;
    }
    if (by_options) {
        snprintf(out->route, sizeof(out->route), "%s", by_options);
        out->source = ROUTING_OPTIONS;
        return 0;
    }
    if (default_route && default_route[0]) {
        snprintf(out->route, sizeof(out->route), "%s", default_route);
        out->source = ROUTING_DEFAULT;
        return 0;
    }
    snprintf(msg, ROUTING_MSG_MAX, "pgburrow: no route given and no default_route");
    return -EINVAL;
}
