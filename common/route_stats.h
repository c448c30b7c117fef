/*
 * route_stats — per-route session counters for /metrics, one entry per configured route.
 *
 * route_stats_sync (start-up and each reload) keeps one entry per configured route name and
 * drops the entries of routes no longer configured once no session uses them, so the label
 * values stay the configured names. A session keeps a pointer to its route's entry (counting
 * is then an increment); an entry with active > 0 is never freed, so that pointer stays valid
 * until the session gives it up. Owns its entries; a failed allocation leaves a route
 * uncounted (logged).
 */
#ifndef PGB_ROUTE_STATS_H
#define PGB_ROUTE_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

struct route_stats {
    char name[PROTO_NAME_MAX];
    uint64_t active;   /* sessions running (or opening) */
    uint64_t total;    /* sessions started since start-up */
    uint64_t failures; /* sessions that could not start (agent: PostgreSQL unreachable) */
    /* bytes of sessions that ended; those of running ones are added at scrape time */
    uint64_t to_server, to_client;
    uint64_t live_to_server, live_to_client; /* scratch for one scrape */
    bool configured;                         /* scratch for route_stats_sync */
};

struct route_stats_table {
    struct route_stats **routes;
    size_t n;
};

void route_stats_free(struct route_stats_table *t); /* the table is empty afterwards */
/* Entries for names[0..n) (new ones zeroed); others go when idle. */
void route_stats_sync(struct route_stats_table *t, const char *const *names, size_t n);
/* The entry of name, or NULL. */
struct route_stats *route_stats_find(const struct route_stats_table *t, const char *name);
/* Zero every entry's live_to_server and live_to_client (before a scrape adds them up). */
void route_stats_live_reset(struct route_stats_table *t);

#endif
