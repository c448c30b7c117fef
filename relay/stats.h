/*
 * stats — the relay's counters behind /metrics (relay_metrics.h renders them at scrape time).
 *
 * Label values are bounded: routes are the configured ones (route_stats.h); refusal reasons and
 * SQLSTATEs are fixed sets, anything else counts as "other". Counting is an increment on a struct
 * the caller already holds (a session keeps its route's entry), or an index into a fixed array.
 *
 * Owned by struct relay (r->stats); owns its route entries.
 */
#ifndef PGB_RELAY_STATS_H
#define PGB_RELAY_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "common/metrics.h"
#include "common/route_stats.h"
#include "proto/proto.h"
#include "relay/preauth.h"
#include "relay/relay_config.h"

/* The SQLSTATEs of refusals counted by name; any other is "other". */
#define RELAY_STATS_SQLSTATES 11

/* upper bounds of pgburrow_relay_session_setup_seconds (seconds) */
#define RELAY_STATS_SETUP_BUCKETS 12

struct relay_stats {
    struct route_stats_table routes; /* per configured route (route_stats.h) */
    struct metrics_histogram setup;  /* accept -> the agent's OPEN_OK */
    uint64_t refused[PREAUTH_REASONS];
    uint64_t refused_sqlstate[RELAY_STATS_SQLSTATES + 1]; /* the last: other */
    uint64_t cancel_forwarded, cancel_dropped;
};

void relay_stats_init(struct relay_stats *s);
void relay_stats_free(struct relay_stats *s);
/* The route entries for cfg's routes (route_stats_sync). */
void relay_stats_sync(struct relay_stats *s, const struct relay_config *cfg);

/* A refusal with an ErrorResponse of this SQLSTATE. */
void relay_stats_refused_sqlstate(struct relay_stats *s, const char *sqlstate);
/* The names of the fixed label sets. */
const char *relay_stats_reason_name(enum preauth_reason why);
const char *relay_stats_sqlstate_name(size_t i); /* i <= RELAY_STATS_SQLSTATES */
/* The histogram's bucket bounds (seconds). */
extern const double relay_stats_setup_bounds[RELAY_STATS_SETUP_BUCKETS];

#endif
