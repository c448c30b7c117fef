/*
 * relay — the relay's per-loop context: listeners, agent tunnels, client sessions.
 *
 * Owns the configuration in force, the TLS contexts built from it, both listeners, every
 * agent tunnel (struct relay_agent) and every client connection (struct relay_client, see
 * frontdoor.c). Nothing here is global: several relays could run in one process.
 */
#ifndef PGB_RELAY_H
#define PGB_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "common/conn.h"
#include "common/counts.h"
#include "common/keytab.h"
#include "common/tunnel.h"
#include "relay/admit.h"
#include "relay/relay_config.h"

struct relay_agent;  /* one accepted agent tunnel */
struct relay_client; /* one PostgreSQL client connection */
struct reloader;     /* SIGHUP, SIGUSR1, watched certificate files (reload.c) */
struct audit;        /* the audit log (audit.h) */
struct access;       /* allowlists and client certificate checks (access.h) */

struct relay {
    uv_loop_t *loop;
    struct conn_loop *cl;
    struct relay_config cfg;
    SSL_CTX *client_ctx;        /* SSLRequest path: ALPN "postgresql" optional */
    SSL_CTX *client_direct_ctx; /* direct TLS: ALPN "postgresql" required */
    SSL_CTX *tunnel_ctx;        /* agents: TLS 1.3, client certificate required */
    X509_STORE *agent_store;    /* agent_ca + agent_crl: running tunnels checked again */
    uv_tcp_t client_listener, tunnel_listener;
    uv_signal_t sig_term, sig_int;
    struct relay_agent *agents; /* every tunnel, up or not (doubly linked) */
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
    uint64_t fd_limit;     /* RLIMIT_NOFILE in force */
    uint64_t fd_base;      /* descriptors open before the first connection */
    uint64_t pending_peak; /* connections accepted since the last memory trim */
    uv_timer_t admit_timer;
    uint64_t accept_fail_ms, accept_fail_suppressed;
    struct admit_spare client_spare, tunnel_spare; /* listeners' spare handles (admit.h) */
    bool stopping;
    struct counts *route_sessions;  /* live sessions per route (route max_sessions) */
    struct counts *source_sessions; /* live sessions per client IP (max_sessions_per_source) */
    bool draining;                  /* SIGTERM: no new sessions, running ones may finish */
    uv_timer_t drain_timer;
    uint64_t drain_deadline_ms;
    int open_handles;        /* listeners + signals: for clean shutdown */
    struct reloader *reload; /* NULL until relay_reload_start (reload.h) */
    struct audit *audit;     /* always allocated; off when audit_log is empty */
    struct access *access;   /* built with the TLS contexts (struct relay_tls) */
    uv_timer_t cert_timer;   /* the next certificate expiry among live peers (relay_certs_*) */
    long long cert_next;     /* its time, seconds since the epoch; 0: not armed */
};

/*
 * Everything a reload rebuilds from files (certificates, keys, CAs, CRLs) and swaps as a
 * whole. A reload replaces r->cfg and these contexts between two loop turns: never keep a
 * pointer into r->cfg across turns (copy what you need), and take an SSL_CTX reference
 * (conn_tls_server does) to use a context later. A context added to struct relay must be
 * built in relay_tls_build and moved in relay_tls_swap.
 */
struct relay_tls {
    SSL_CTX *client_ctx, *client_direct_ctx, *tunnel_ctx;
    X509_STORE *agent_store;
    struct access *access; /* per-route client certificate stores, ident maps (access.h) */
};
/* Build every context from cfg. 0, or negative with err[CONFIG_ERR_MAX] (t then empty). */
int relay_tls_build(const struct relay_config *cfg, struct relay_tls *t, char *err);
/* Exchange t with the relay's contexts (t then holds the old ones: relay_tls_free them). */
void relay_tls_swap(struct relay *r, struct relay_tls *t);
void relay_tls_free(struct relay_tls *t);
/* After r->cfg changed: each up tunnel serves exactly the routes it offered that the new
 * configuration allows for its agent (logged when that changes; open sessions go on). */
void relay_agents_recheck(struct relay *r);
/* Check the certificates of every running tunnel and certificate-authenticated session again:
 * after a reload (reverify: the new CA, CRL and ident map) or when one expires (a timer at the
 * earliest notAfter among them, at least hourly). A tunnel no longer accepted gets GOAWAY 28000
 * and closes; a session gets FATAL 28000. Logged; audited as tunnel_down / session_end. */
void relay_certs_recheck(struct relay *r, bool reverify);
/* A tunnel or session came up whose certificate chain expires at not_after (seconds since the
 * epoch; 0: nothing to watch): arm the expiry timer earlier if needed. */
void relay_cert_expiry_note(struct relay *r, long long not_after);

int relay_init(struct relay *r, uv_loop_t *loop, struct relay_config *cfg, char *err);
int relay_start(struct relay *r, char *err);
/* Stop accepting, close every tunnel and client; the loop then ends. */
void relay_stop(struct relay *r);
/* Graceful stop: stop accepting, GOAWAY to agents, refuse StartupMessages still to come
 * (FATAL 57P01), let sessions finish for drain_timeout, then relay_stop. */
void relay_drain(struct relay *r);
void relay_free(struct relay *r);

/* Tunnels (relay.c), used by the front door: pick an up tunnel serving route, round robin. */
struct tunnel *relay_route_pick_tunnel(struct relay *r, const char *route, const char **agent);
/* The same, but never a tunnel of agent not_agent: a second try after that agent failed. */
struct tunnel *relay_route_pick_other_tunnel(struct relay *r, const char *route,
                                             const char *not_agent, const char **agent);
/* Call fn for every tunnel whose agent said HELLO and was accepted, draining ones included
 * (their sessions go on): cancel routing (cancel.c). agent: its certificate name. */
typedef void (*relay_tunnel_fn)(void *ctx, struct tunnel *t, const char *agent);
void relay_foreach_agent_tunnel(struct relay *r, relay_tunnel_fn fn, void *ctx);

/* Front door (frontdoor.c). */
void frontdoor_accept(struct relay *r, uv_stream_t *server);
void frontdoor_close_all(struct relay *r);
/* The sessions' part of relay_certs_recheck; now: the wall clock. Returns the earliest
 * notAfter among the sessions left (0: none). */
long long frontdoor_certs_recheck(struct relay *r, bool reverify, long long now);

#endif
