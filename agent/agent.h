/*
 * agent — the agent's per-loop context: one link per relay address, each holding at most one
 * tunnel, and the sessions to the local PostgreSQL that the relays open.
 *
 * Owns its configuration, the client TLS context, every link and every session. A link never
 * gives up: after any failure it waits a full-jitter exponential backoff and dials again.
 */
#ifndef PGB_AGENT_H
#define PGB_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "agent/agent_config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/monitor.h"
#include "common/route_stats.h"
#include "common/tunnel.h"

struct agent_link;
struct agent_relay;
struct agent_reload; /* SIGHUP, SIGUSR1, watched certificate files (reload.c) */
struct cancel_key_map;
struct agent_session;

struct agent {
    uv_loop_t *loop;
    struct conn_loop *cl;
    struct agent_config cfg;
    SSL_CTX *relay_ctx;
    struct agent_link *links;      /* one per relay address (list), plus removed ones draining */
    struct agent_relay *relays;    /* one per configured relay address; names resolve (relays.c) */
    struct daemon_signals signals; /* SIGTERM drains, SIGINT stops (daemon.h) */
    uint32_t next_tunnel_id;
    uint64_t rng;                       /* xorshift state for backoff jitter */
    struct cancel_key_map *cancel_keys; /* the sessions' cancel keys (cancel_key.h) */
    struct agent_reload *reload;        /* NULL until agent_reload_start (reload.h) */
    bool stopping;
    bool draining;                   /* SIGTERM: GOAWAY sent, sessions finishing */
    struct agent_session *sessions;  /* every session, for scrapes (session.c) */
    struct route_stats_table routes; /* per configured route: /metrics (route_stats.h) */
    struct monitor monitor;          /* metrics_listen (agent_metrics.h) */
};

int agent_init(struct agent *a, uv_loop_t *loop, struct agent_config *cfg, char *err, size_t cap);
int agent_start(struct agent *a, char *err, size_t cap);
void agent_stop(struct agent *a);
/* Graceful stop: GOAWAY to every relay (no new sessions), let sessions finish for
 * drain_timeout, then agent_stop. */
void agent_drain(struct agent *a);
void agent_free(struct agent *a);

#endif
