/*
 * agent_config — the agent's configuration: keys, defaults, validation.
 *
 * Owns every string it holds (agent_config_free releases them).
 */
#ifndef PGB_AGENT_CONFIG_H
#define PGB_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/config.h"
#include "proto/proto.h"

#define AGENT_MAX_RELAYS 64

struct agent_relay_addr {
    char host[256];
    uint16_t port;
};

/* Upstream TLS modes, ordered by strength (as libpq's sslmode; prefer/allow are not offered:
 * an agent either needs TLS to its PostgreSQL or it does not). */
enum agent_sslmode {
    AGENT_SSLMODE_DISABLE,
    AGENT_SSLMODE_REQUIRE,
    AGENT_SSLMODE_VERIFY_CA,
    AGENT_SSLMODE_VERIFY_FULL,
};

struct agent_route {
    char name[PROTO_NAME_MAX];
    char *host;    /* host = absolute Unix socket directory, or hostname / IP (default
                      /var/run/postgresql) */
    uint16_t port; /* port = 5432 */
    /* Upstream TLS (agent -> PostgreSQL over TCP), as libpq's keys of the same names. */
    enum agent_sslmode sslmode; /* sslmode = disable | require | verify-ca | verify-full */
    char *sslrootcert;          /* sslrootcert = CA file (required for verify-ca / verify-full) */
    char *sslcert, *sslkey;     /* sslcert / sslkey = optional client certificate and key */
    char *sslservername;        /* sslservername = name verified by verify-full (default: host) */
    SSL_CTX *ssl_ctx;           /* built by upstream_build_contexts(); freed with the config */
};

struct agent_config {
    /* [agent] */
    size_t nrelays; /* relay = host:port[, host:port ...] (required) */
    struct agent_relay_addr relays[AGENT_MAX_RELAYS];
    char *relay_server_name;   /* relay_server_name = name checked in the relay certificate
                                  (default: the host part of each relay address) */
    char *ca;                  /* ca = CA file that signs the relay certificate (required) */
    char *cert, *key;          /* cert / key = agent client certificate; its CN is the agent name */
    uint64_t reconnect_min_ms; /* reconnect_min = 100ms: first backoff step */
    uint64_t reconnect_max_ms; /* reconnect_max = 30s: backoff cap */
    uint64_t
        drain_timeout_ms; /* drain_timeout = 30s: SIGTERM -> sessions may finish for this long */
    uint64_t connect_timeout_ms;  /* connect_timeout = 5s (relay TCP+TLS, and PostgreSQL) */
    uint64_t resolve_interval_ms; /* resolve_interval = 30s: relay names are resolved again this
                                     often; one tunnel per address (links.c) */
    uint64_t ping_interval_ms;    /* ping_interval = 1s */
    uint64_t dead_timeout_ms;     /* dead_timeout = 4s */
    /* what a relay can make this agent hold, whatever its WELCOME says */
    uint64_t max_streams;       /* max_streams_per_tunnel = 1000: sessions on one tunnel */
    uint64_t max_stream_window; /* max_stream_window = 1M: largest WELCOME window accepted */
    char *log_level, *log_format, *log_file;
    char *metrics_listen; /* metrics_listen = host:port for /metrics, /healthz, /readyz (off) */
    /* [route NAME] */
    size_t nroutes;
    struct agent_route *routes;
};

void agent_config_init(struct agent_config *c);
void agent_config_free(struct agent_config *c);
int agent_config_handle(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t cap);
int agent_config_check(const struct agent_config *c, char *err, size_t cap);
int agent_config_build(struct agent_config *c, const char *path, int nflags, char **flags,
                       char *err, size_t cap);
const struct agent_route *agent_config_route(const struct agent_config *c, const char *name);
/* "disable", "require", "verify-ca", "verify-full". */
const char *agent_sslmode_name(enum agent_sslmode m);

#endif
