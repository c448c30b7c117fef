/*
 * route_stats — per-route session counters (see route_stats.h).
 */
#include "common/route_stats.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

void route_stats_free(struct route_stats_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->routes[i]);
    free(t->routes);
    t->routes = NULL;
    t->n = 0;
}

struct route_stats *route_stats_find(const struct route_stats_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->routes[i]->name, name) == 0)
            return t->routes[i];
    }
    return NULL;
}

void route_stats_sync(struct route_stats_table *t, const char *const *names, size_t n)
{
    size_t kept = 0;

    for (size_t i = 0; i < t->n; i++)
        t->routes[i]->configured = false;
    for (size_t i = 0; i < n; i++) {
        struct route_stats *e = route_stats_find(t, names[i]);
        struct route_stats **grown;

        if (e) {
            e->configured = true;
            continue;
        }
        grown = realloc(t->routes, (t->n + 1) * sizeof(*grown));
        if (grown)
            t->routes = grown;
        if (!grown || strlen(names[i]) >= sizeof(e->name) || !(e = calloc(1, sizeof(*e)))) {
            log_warn("metrics: route %.63s is not counted (out of memory, or name too long)",
                     names[i]);
            continue;
        }
        memcpy(e->name, names[i], strlen(names[i]) + 1);
        e->configured = true;
        t->routes[t->n++] = e;
    }
    /* removed routes go once idle; their running sessions keep counting until then */
    for (size_t i = 0; i < t->n; i++) {
        if (!t->routes[i]->configured && t->routes[i]->active == 0)
            free(t->routes[i]);
        else
            t->routes[kept++] = t->routes[i];
    }
    t->n = kept;
}

void route_stats_live_reset(struct route_stats_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        t->routes[i]->live_to_server = t->routes[i]->live_to_client = 0;
}
