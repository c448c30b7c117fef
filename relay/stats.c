/*
 * stats — the relay's counters (see stats.h).
 */
#include "relay/stats.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sqlstate.h"

const double relay_stats_setup_bounds[RELAY_STATS_SETUP_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

static const char *const sqlstates[RELAY_STATS_SQLSTATES + 1] = {
    SQLSTATE_CONNECTION_FAILURE,    SQLSTATE_PROTOCOL_VIOLATION,
    SQLSTATE_FEATURE_NOT_SUPPORTED, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION,
    SQLSTATE_INVALID_CATALOG_NAME,  SQLSTATE_OUT_OF_MEMORY,
    SQLSTATE_TOO_MANY_CONNECTIONS,  SQLSTATE_CONFIGURATION_LIMIT_EXCEEDED,
    SQLSTATE_ADMIN_SHUTDOWN,        SQLSTATE_CANNOT_CONNECT_NOW,
    SQLSTATE_SUCCESSFUL_COMPLETION, "other",
};

static const char *const reasons[PREAUTH_REASONS] = {
    [PREAUTH_SOURCE_FULL] = "source_full", [PREAUTH_SHED] = "shed",
    [PREAUTH_RATE] = "handshake_rate",     [PREAUTH_TLS] = "tls",
    [PREAUTH_TUNNEL] = "tunnel",           [PREAUTH_TIMEOUT] = "timeout",
    [PREAUTH_REFUSED] = "refused",         [PREAUTH_CANCEL] = "cancel_rate",
};

void relay_stats_init(struct relay_stats *s)
{
    memset(s, 0, sizeof(*s));
    metrics_histogram_init(&s->setup, relay_stats_setup_bounds, RELAY_STATS_SETUP_BUCKETS);
}

void relay_stats_free(struct relay_stats *s)
{
    route_stats_free(&s->routes);
}

void relay_stats_sync(struct relay_stats *s, const struct relay_config *cfg)
{
    const char **names = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*names));

    if (!names) {
        log_warn("metrics: out of memory; routes not updated");
        return;
    }
    for (size_t i = 0; i < cfg->nroutes; i++)
        names[i] = cfg->routes[i].name;
    route_stats_sync(&s->routes, names, cfg->nroutes);
    free(names);
}

void relay_stats_refused_sqlstate(struct relay_stats *s, const char *sqlstate)
{
    size_t i = 0;

    while (i < RELAY_STATS_SQLSTATES && strcmp(sqlstates[i], sqlstate) != 0)
        i++;
    s->refused_sqlstate[i]++;
}

const char *relay_stats_reason_name(enum preauth_reason why)
{
    return why < PREAUTH_REASONS ? reasons[why] : "other";
}

const char *relay_stats_sqlstate_name(size_t i)
{
    return i <= RELAY_STATS_SQLSTATES ? sqlstates[i] : "other";
}
