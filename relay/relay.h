/*
 * relay — the relay's per-loop context: listeners, agent tunnels, client sessions.
 *
 * Owns the configuration in force, the TLS contexts built from it, both listeners, every
 * agent tunnel (struct relay_agent, tunnels.h) and every client connection (struct
 * relay_client, frontdoor.h). Nothing here is global: several relays could run in one process.
 */
#ifndef PGB_RELAY_H
#define PGB_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "common/conn.h"
#include "common/counts.h"
#include "common/daemon.h"
#include "common/keytab.h"
#include "common/monitor.h"
#include "common/tunnel.h"
#include "relay/admit.h"
#include "relay/relay_config.h"
#include "relay/stats.h"

struct relay_agent;   /* one accepted agent tunnel */
struct relay_client;  /* one PostgreSQL client connection */
struct reloader;      /* SIGHUP, SIGUSR1, watched certificate files (reload.c) */
struct audit;         /* the audit log (audit.h) */
struct access;        /* allowlists and client certificate checks (access.h) */
struct admin_session; /* one admin console connection (admin.h) */

/* Who logged in to the admin console, as the front door checked it (admin.h). */
struct relay_admin_login {
    const char *peer;         /* client address */
    const char *cn;           /* verified certificate CN, in admin_users */
    const char *cert_subject; /* and its subject, serial */
    const char *cert_serial;
    const char *user;             /* StartupMessage user: logged, not trusted */
    const char *application_name; /* NULL when absent */
    const char *tls_version;
};

struct relay {
    uv_loop_t *loop;
    struct conn_loop *cl;
    struct relay_config cfg;
    SSL_CTX *client_ctx;        /* SSLRequest path: ALPN "postgresql" optional */
    SSL_CTX *client_direct_ctx; /* direct TLS: ALPN "postgresql" required */
    SSL_CTX *tunnel_ctx;        /* agents: TLS 1.3, client certificate required */
    X509_STORE *agent_store;    /* agent_ca + agent_crl: running tunnels checked again */
    uv_tcp_t client_listener, tunnel_listener;
    struct daemon_signals signals; /* SIGTERM drains, SIGINT stops (daemon.h) */
    struct relay_agent *agents;    /* every tunnel, up or not (doubly linked) */
    struct relay_client *clients;
    struct relay_cancel_limiter *cancel_limiter; /* cancel.h; created at the first cancel */
    struct relay_cancel_limiter *cancel_net;     /* per IPv4 /24, IPv6 /48 */
    struct relay_cancel_limiter *cancel_global;  /* one bucket for the whole relay */
    struct keytab cancel_keys; /* the cancel keys of this relay's sessions (cancel.h) */
    uint32_t next_tunnel_id;
    uint64_t nsessions; /* client connections that have a stream open */
    uint64_t nclients;
    uint64_t nagents; /* tunnels, up or not (each holds a descriptor) */
    uint64_t session_counter;
    /* unauthenticated connections: pending slots, buckets, descriptors (admit.h) */
    struct preauth *preauth;
    uint64_t fd_limit; /* RLIMIT_NOFILE in force */
    uint64_t fd_base;  /* descriptors open before the first connection */
    uv_timer_t admit_timer;
    uint64_t accept_fail_ms, accept_fail_suppressed;
    struct admit_spare client_spare, tunnel_spare; /* listeners' spare handles (admit.h) */
    bool stopping;
    struct counts *route_sessions;  /* live sessions per route (route max_sessions) */
    struct counts *source_sessions; /* live sessions per client IP (max_sessions_per_source) */
    bool draining;                  /* SIGTERM: no new sessions, running ones may finish */
    bool drain_pending;             /* SIGTERM during drain_delay: /readyz 503, accepting */
    uv_timer_t drain_delay_timer;   /* drain_delay: then relay_drain_now */
    int open_handles;               /* listeners + signals: for clean shutdown */
    struct reloader *reload;        /* NULL until relay_reload_start (reload.h) */
    struct audit *audit;            /* always allocated; off when audit_log is empty */
    struct access *access;          /* built with the TLS contexts (struct relay_tls) */
    uv_timer_t cert_timer; /* the next certificate expiry among live peers (cert_expiry.h) */
    long long cert_next;   /* its time, seconds since the epoch; 0: not armed */
    /* relay_certs_recheck (reload.h), run by cert_timer */
    void (*cert_recheck)(struct relay *r, bool reverify);
    uv_timer_t drain_timer; /* agents drained from the admin console (tunnels.h) */
    /* the admin console (admin.h): admin_session_open, handed to the front door as a pointer (the
     * console calls into the front door), and its sessions */
    int (*open_admin)(struct relay *r, struct conn *conn, const struct relay_admin_login *login,
                      const uint8_t *rest, size_t rest_len, char *msg, size_t cap);
    struct admin_session *admins;
    uint64_t nadmins;
    struct relay_stats stats; /* counters behind /metrics (stats.h) */
    struct monitor monitor;   /* metrics_listen: /metrics, /healthz, /readyz (relay_metrics.h) */
};

int relay_init(struct relay *r, uv_loop_t *loop, struct relay_config *cfg, char *err, size_t cap);
int relay_start(struct relay *r, char *err, size_t cap);
/* Stop accepting, close every tunnel and client; the loop then ends. */
void relay_stop(struct relay *r);
/* Graceful stop: /readyz turns 503 at once; after drain_delay (0: at once) stop accepting,
 * GOAWAY to agents, refuse StartupMessages still to come (FATAL 57P01), let sessions finish
 * for drain_timeout, then relay_stop. */
void relay_drain(struct relay *r);
void relay_free(struct relay *r);

#endif
