/*
 * relay_config — the relay's configuration: keys, defaults, validation.
 *
 * Owns every string it holds (relay_config_free releases them). A config is built whole
 * (defaults, file, flags, then relay_config_check) and then only read; a reload builds a new
 * one and swaps it in only when it is valid.
 */
#ifndef PGB_RELAY_CONFIG_H
#define PGB_RELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cidr.h"
#include "common/config.h"
#include "proto/proto.h"

#define RELAY_MAX_ROUTES 1024
#define RELAY_MAX_ROUTE_AGENTS 64

enum relay_client_cert { RELAY_CERT_NONE = 0, RELAY_CERT_VERIFY, RELAY_CERT_VERIFY_USER };

struct relay_route {
    char name[PROTO_NAME_MAX];
    uint32_t nagents;      /* agents = a, b, c */
    uint64_t max_sessions; /* max_sessions = 0 (0: only the relay-wide limit) */
    char agents[RELAY_MAX_ROUTE_AGENTS][PROTO_NAME_MAX];
    /* access control (keys parsed and checked in relay/access.c) */
    enum relay_client_cert client_cert; /* client_cert = none | verify | verify-user */
    char *client_ca;                    /* client_ca = CA file (required unless none) */
    char *client_crl;                   /* client_crl = CRL file (optional) */
    char *ident_map;                    /* ident_map = "CERT_CN PG_USER" lines (verify-user) */
    struct cidr_list allow;             /* allow = CIDR, ... (empty: no route-level check) */
};

struct relay_config {
    /* [relay] */
    char *name;               /* name = relay id in logs and WELCOME (default: hostname) */
    char *listen;             /* listen = host:port for PostgreSQL clients (default *:5432) */
    char *tunnel_listen;      /* tunnel_listen = host:port for agents (default *:7443) */
    char *default_route;      /* default_route = route when the client names none (default none) */
    char *tls_cert, *tls_key; /* tls_cert / tls_key: certificate shown to clients (required) */
    int tls_min_version;      /* tls_min_version = TLSv1.2 | TLSv1.3 (default TLSv1.2) */
    char *tunnel_cert, *tunnel_key; /* shown to agents (default: tls_cert / tls_key) */
    char *agent_ca;       /* agent_ca = CA file that signs agent certificates (required) */
    char *agent_crl;      /* agent_crl = CRL file for agent certificates (revocation) */
    char *user;           /* user = drop to this user (and its groups) after binding */
    char *metrics_listen; /* metrics_listen = host:port for /metrics, /healthz, /readyz (off) */
    uint64_t
        drain_timeout_ms;    /* drain_timeout = 30s: SIGTERM -> sessions may finish for this long */
    uint64_t drain_delay_ms; /* drain_delay = 0: SIGTERM -> /readyz 503, still accepting */
    uint64_t startup_timeout_ms; /* startup_timeout = 10s: connect -> StartupMessage received */
    uint64_t ping_interval_ms;   /* ping_interval = 1s */
    uint64_t dead_timeout_ms;    /* dead_timeout = 4s: no frame from an agent for this long */
    uint64_t max_sessions;       /* max_sessions = 10000 (all routes) */
    uint64_t max_streams;        /* max_streams_per_tunnel = 10000 */
    uint64_t stream_window; /* stream_window = 256k: flow-control window per session, each way */
    uint64_t max_sessions_per_source; /* max_sessions_per_source = 0 (0: no limit per client IP) */
    uint64_t max_tunnels_per_agent;   /* max_tunnels_per_agent = 1: more replace the oldest */
    /* before authentication (relay/admit.h) */
    uint64_t max_pending;            /* max_pending = 256: accepted, not yet routed / HELLO */
    uint64_t max_pending_per_source; /* max_pending_per_source = 128 (0: no limit) */
    uint64_t handshake_rate;         /* handshake_rate = 100: TLS handshakes/s per source */
    uint64_t handshake_burst;        /* handshake_burst = 200 */
    uint64_t hello_timeout_ms;       /* hello_timeout = 5s: tunnel accept -> HELLO */
    /* proxy_protocol_from = CIDR, ...: load balancers whose connections begin with a PROXY
     * protocol header naming the client (relay/proxied.h; empty: none) */
    struct cidr_list proxy_protocol_from;
    /* audit log (relay/audit.h) */
    char *audit_log;              /* audit_log = PATH | stdout (default: empty = off) */
    bool audit_statements;        /* audit_statements = on | off (default off) */
    uint64_t audit_statement_max; /* audit_statement_max = 1024 (bytes kept per statement) */
    char *log_level, *log_format, *log_file; /* log_level=info log_format=text log_file= */
    /* SNI routing, source addresses, TLS policy (keys parsed in relay/access.c) */
    char **sni_domains; /* sni_domains = db.example.com, ... (route = first label) */
    size_t nsni_domains;
    struct cidr_list allow;    /* allow = CIDR, ... (empty: every address) */
    char *tls_ciphers;         /* tls_ciphers = TLS 1.2 cipher list (OpenSSL default) */
    char *tls_ciphersuites;    /* tls_ciphersuites = TLS 1.3 suites for clients */
    char *tls_groups;          /* tls_groups = key exchange groups for clients */
    char *tunnel_ciphersuites; /* tunnel_ciphersuites = TLS 1.3 suites for agents */
    char *tunnel_groups;       /* tunnel_groups = key exchange groups for agents */
    /* the admin console, dbname=pgburrow (keys parsed in relay/access.c; relay/admin.h) */
    char **admin_users; /* admin_users = CN, ... (empty: console off) */
    size_t nadmin_users;
    char *admin_ca;  /* admin_ca = CA file for admin client certificates (required with users) */
    char *admin_crl; /* admin_crl = CRL file of admin_ca (optional) */
    /* [route NAME] */
    size_t nroutes;
    struct relay_route *routes;
};

void relay_config_init(struct relay_config *c); /* defaults */
void relay_config_free(struct relay_config *c); /* accepts a zeroed or initialised config */
/* The config_handler for relay keys (ctx = struct relay_config *). */
int relay_config_handle(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t cap);
/* Cross-key checks after file + flags (required keys present, default_route exists...). */
int relay_config_check(const struct relay_config *c, char *err, size_t cap);
/* Load file (may be NULL) then flags (argv-style "--x.y=z" strings), then check. */
int relay_config_build(struct relay_config *c, const char *path, int nflags, char **flags,
                       char *err, size_t cap);
const struct relay_route *relay_config_route(const struct relay_config *c, const char *name);
bool relay_route_allows(const struct relay_route *r, const char *agent);

#endif
