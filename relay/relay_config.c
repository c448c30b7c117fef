/*
 * relay_config — relay keys, defaults and checks. See relay_config.h and deploy/relay.ini.
 *
 * Every key is checked when it is set, so that a bad value is reported with its file line;
 * only what depends on several keys waits for relay_config_check().
 */
#include "relay/relay_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "common/log.h"
#include "relay/access.h"

#define RELAY_DEFAULT_NAME "pgburrow-relay"
#define RELAY_COUNT_MAX 1000000

void relay_config_init(struct relay_config *c)
{
    char host[256];

    memset(c, 0, sizeof(*c));
    /* A failed strdup leaves NULL, which relay_config_check reports. */
    host[sizeof(host) - 1] = '\0';
    if (gethostname(host, sizeof(host) - 1) == 0 && strlen(host) < PROTO_NAME_MAX &&
        proto_name_valid(host))
        c->name = strdup(host);
    else
        c->name = strdup(RELAY_DEFAULT_NAME);
    c->listen = strdup("*:5432");
    c->tunnel_listen = strdup("*:7443");
    c->tls_min_version = TLS1_2_VERSION;
    c->startup_timeout_ms = 10000;
    c->drain_timeout_ms = 30000;
    c->ping_interval_ms = 1000;
    c->dead_timeout_ms = 4000;
    c->max_sessions = 10000;
    c->max_streams = 10000;
    c->max_tunnels_per_agent = 1;
    c->max_pending = 256;
    c->max_pending_per_source = 128;
    c->handshake_rate = 100;
    c->handshake_burst = 200;
    c->hello_timeout_ms = 5000;
    c->stream_window = PROTO_INITIAL_WINDOW;
    c->log_level = strdup("info");
    c->log_format = strdup("text");
    c->audit_statement_max = 1024;
}

void relay_config_free(struct relay_config *c)
{
    if (!c)
        return;
    free(c->name);
    free(c->user);
    free(c->metrics_listen);
    free(c->listen);
    free(c->tunnel_listen);
    free(c->default_route);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tunnel_cert);
    free(c->tunnel_key);
    free(c->agent_ca);
    free(c->agent_crl);
    free(c->log_level);
    free(c->log_format);
    free(c->log_file);
    free(c->audit_log);
    access_config_free(c);
    cidr_list_free(&c->proxy_protocol_from);
    free(c->routes);
    memset(c, 0, sizeof(*c));
}

const struct relay_route *relay_config_route(const struct relay_config *c, const char *name)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        if (strcmp(c->routes[i].name, name) == 0)
            return &c->routes[i];
    }
    return NULL;
}

bool relay_route_allows(const struct relay_route *r, const char *agent)
{
    if (!r || !agent)
        return false;
    for (uint32_t i = 0; i < r->nagents; i++) {
        if (strcmp(r->agents[i], agent) == 0)
            return true;
    }
    return false;
}

/* Find route `name`, creating it (without agents) if it is new. */
static int route_get(struct relay_config *c, const char *name, struct relay_route **out, char *err,
                     size_t cap)
{
    struct relay_route *r = (struct relay_route *)relay_config_route(c, name);

    if (!r) {
        void *routes = c->routes, *added;
        int rc = config_route_append(&routes, &c->nroutes, sizeof(*r), RELAY_MAX_ROUTES, name,
                                     &added, err, cap);
        c->routes = routes;
        if (rc < 0)
            return rc;
        r = added;
        memcpy(r->name, name, strlen(name) + 1);
    }
    *out = r;
    return 0;
}

/* Collects "agents = a, b" into a scratch route, so that a bad list changes nothing. */
static int route_add_agent(void *ctx, const char *item, char *err, size_t cap)
{
    struct relay_route *r = ctx;

    if (!proto_name_valid(item)) {
        config_err(err, cap, "invalid agent name \"%.80s\": expected 1 to %d of A-Z a-z 0-9 _ . -",
                   item, PROTO_NAME_MAX - 1);
        return -EINVAL;
    }
    if (relay_route_allows(r, item)) {
        config_err(err, cap, "agent \"%s\" listed twice", item);
        return -EINVAL;
    }
    if (r->nagents == RELAY_MAX_ROUTE_AGENTS) {
        config_err(err, cap, "too many agents (max %d)", RELAY_MAX_ROUTE_AGENTS);
        return -EINVAL;
    }
    memcpy(r->agents[r->nagents++], item, strlen(item) + 1);
    return 0;
}

static int handle_route(struct relay_config *c, const char *name, const char *key,
                        const char *value, char *err, size_t cap)
{
    struct relay_route *r;
    int rc = route_get(c, name, &r, err, cap);

    if (rc < 0 || !key)
        return rc;
    if (strcmp(key, "max_sessions") == 0)
        return config_parse_uint(value, 0, RELAY_COUNT_MAX, &r->max_sessions, err, cap);
    if (strcmp(key, "agents") != 0)
        return access_route_key(r, key, value, err, cap);
    struct relay_route *scratch = calloc(1, sizeof(*scratch));
    if (!scratch)
        return -ENOMEM;
    rc = config_parse_list(value, route_add_agent, scratch, err, cap);
    if (rc == 0) {
        r->nagents = scratch->nagents;
        memcpy(r->agents, scratch->agents, sizeof(r->agents));
    }
    free(scratch);
    return rc;
}

/* An optional string: empty means "not set" (the default applies). */
static int set_hostport(char **dst, const char *value, char *err, size_t cap)
{
    char host[256];
    uint16_t port;
    int rc = config_parse_hostport(value, host, &port, err, cap);

    return rc < 0 ? rc : config_set_str(dst, value);
}

static int set_tls_version(int *dst, const char *value, char *err, size_t cap)
{
    if (strcasecmp(value, "TLSv1.2") == 0) {
        *dst = TLS1_2_VERSION;
    } else if (strcasecmp(value, "TLSv1.3") == 0) {
        *dst = TLS1_3_VERSION;
    } else if (strcasecmp(value, "TLSv1") == 0 || strcasecmp(value, "TLSv1.0") == 0 ||
               strcasecmp(value, "TLSv1.1") == 0) {
        config_err(err, cap, "%s is not allowed (obsolete, RFC 8996): use TLSv1.2 or TLSv1.3",
                   value);
        return -EINVAL;
    } else {
        config_err(err, cap, "expected TLSv1.2 or TLSv1.3, got \"%.80s\"", value);
        return -EINVAL;
    }
    return 0;
}

static int set_name(char **dst, const char *value, bool optional, char *err, size_t cap)
{
    if (optional && value[0] == '\0')
        return config_set_optional(dst, value);
    if (!proto_name_valid(value)) {
        config_err(err, cap,
                   "expected a name of 1 to %d characters A-Z a-z 0-9 _ . -, got \"%.80s\"",
                   PROTO_NAME_MAX - 1, value);
        return -EINVAL;
    }
    return config_set_str(dst, value);
}

/* Bounded so that a statement line stays a reasonable write (6 bytes per byte, escaped). */
static int set_statement_max(uint64_t *dst, const char *value, char *err, size_t cap)
{
    uint64_t v;
    int rc = config_parse_size(value, &v, err, cap);

    if (rc < 0)
        return rc;
    if (v < 1 || v > 1024 * 1024) {
        config_err(err, cap, "must be from 1 byte to 1M, got \"%.80s\"", value);
        return -EINVAL;
    }
    *dst = v;
    return 0;
}

/* A CIDR list; empty clears it. */
static int set_cidrs(struct cidr_list *l, const char *value, char *err, size_t cap)
{
    if (value[0] == '\0') {
        cidr_list_free(l);
        return 0;
    }
    return cidr_list_parse(value, l, err, cap);
}

/* A duration that may be 0 (off), up to 24h. */
static int set_delay(uint64_t *dst, const char *value, char *err, size_t cap)
{
    uint64_t ms;
    int rc = config_parse_duration_ms(value, &ms, err, cap);

    if (rc < 0)
        return rc;
    if (ms > CONFIG_DURATION_MAX_MS) {
        config_err(err, cap, "must be from 0 to 24h, got \"%.80s\"", value);
        return -EINVAL;
    }
    *dst = ms;
    return 0;
}

static int set_count(uint64_t *dst, const char *value, char *err, size_t cap)
{
    return config_parse_uint(value, 1, RELAY_COUNT_MAX, dst, err, cap);
}

/* [relay] keys naming the relay, its listeners and its certificates; -ENOENT when key is not one of
 * them. */
static int relay_key_endpoints(struct relay_config *c, const char *key, const char *value,
                               char *err, size_t cap)
{
    if (strcmp(key, "user") == 0)
        return config_set_optional(&c->user, value);
    if (strcmp(key, "name") == 0)
        return set_name(&c->name, value, false, err, cap);
    if (strcmp(key, "listen") == 0)
        return set_hostport(&c->listen, value, err, cap);
    if (strcmp(key, "tunnel_listen") == 0)
        return set_hostport(&c->tunnel_listen, value, err, cap);
    if (strcmp(key, "metrics_listen") == 0)
        return config_set_optional_hostport(&c->metrics_listen, value, err, cap);
    if (strcmp(key, "default_route") == 0)
        return set_name(&c->default_route, value, true, err, cap);
    if (strcmp(key, "tls_cert") == 0)
        return config_set_optional(&c->tls_cert, value);
    if (strcmp(key, "tls_key") == 0)
        return config_set_optional(&c->tls_key, value);
    if (strcmp(key, "tls_min_version") == 0)
        return set_tls_version(&c->tls_min_version, value, err, cap);
    if (strcmp(key, "tunnel_cert") == 0)
        return config_set_optional(&c->tunnel_cert, value);
    if (strcmp(key, "tunnel_key") == 0)
        return config_set_optional(&c->tunnel_key, value);
    if (strcmp(key, "agent_ca") == 0)
        return config_set_optional(&c->agent_ca, value);
    if (strcmp(key, "agent_crl") == 0)
        return config_set_optional(&c->agent_crl, value);
    return -ENOENT;
}

/* [relay] keys for timeouts, counts, windows and trusted PROXY sources; -ENOENT when key is not one
 * of them. */
static int relay_key_limits(struct relay_config *c, const char *key, const char *value, char *err,
                            size_t cap)
{
    if (strcmp(key, "drain_timeout") == 0)
        return config_set_duration(&c->drain_timeout_ms, value, err, cap);
    if (strcmp(key, "drain_delay") == 0)
        return set_delay(&c->drain_delay_ms, value, err, cap);
    if (strcmp(key, "startup_timeout") == 0)
        return config_set_duration(&c->startup_timeout_ms, value, err, cap);
    if (strcmp(key, "ping_interval") == 0)
        return config_set_duration(&c->ping_interval_ms, value, err, cap);
    if (strcmp(key, "dead_timeout") == 0)
        return config_set_duration(&c->dead_timeout_ms, value, err, cap);
    if (strcmp(key, "max_sessions") == 0)
        return set_count(&c->max_sessions, value, err, cap);
    if (strcmp(key, "max_streams_per_tunnel") == 0)
        return set_count(&c->max_streams, value, err, cap);
    if (strcmp(key, "max_sessions_per_source") == 0)
        return config_parse_uint(value, 0, RELAY_COUNT_MAX, &c->max_sessions_per_source, err, cap);
    if (strcmp(key, "stream_window") == 0)
        return config_set_window(&c->stream_window, value, err, cap);
    if (strcmp(key, "max_tunnels_per_agent") == 0)
        return config_parse_uint(value, 1, 1024, &c->max_tunnels_per_agent, err, cap);
    if (strcmp(key, "max_pending") == 0)
        return set_count(&c->max_pending, value, err, cap);
    if (strcmp(key, "max_pending_per_source") == 0)
        return config_parse_uint(value, 0, RELAY_COUNT_MAX, &c->max_pending_per_source, err, cap);
    if (strcmp(key, "handshake_rate") == 0)
        return config_parse_uint(value, 0, RELAY_COUNT_MAX, &c->handshake_rate, err, cap);
    if (strcmp(key, "handshake_burst") == 0)
        return set_count(&c->handshake_burst, value, err, cap);
    if (strcmp(key, "hello_timeout") == 0)
        return config_set_duration(&c->hello_timeout_ms, value, err, cap);
    if (strcmp(key, "proxy_protocol_from") == 0)
        return set_cidrs(&c->proxy_protocol_from, value, err, cap);
    return -ENOENT;
}

/* [relay] keys for the log and the audit log; -ENOENT when key is not one of them. */
static int relay_key_logs(struct relay_config *c, const char *key, const char *value, char *err,
                          size_t cap)
{
    if (strcmp(key, "log_level") == 0)
        return config_set_log_level(&c->log_level, value, err, cap);
    if (strcmp(key, "log_format") == 0)
        return config_set_log_format(&c->log_format, value, err, cap);
    if (strcmp(key, "log_file") == 0)
        return config_set_optional(&c->log_file, value);
    if (strcmp(key, "audit_log") == 0)
        return config_set_optional(&c->audit_log, value);
    if (strcmp(key, "audit_statements") == 0)
        return config_parse_bool(value, &c->audit_statements, err, cap);
    if (strcmp(key, "audit_statement_max") == 0)
        return set_statement_max(&c->audit_statement_max, value, err, cap);
    return -ENOENT;
}

int relay_config_handle(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t cap)
{
    struct relay_config *c = ctx;
    int rc;

    if (strncmp(section, "route ", 6) == 0)
        return handle_route(c, section + 6, key, value, err, cap);
    if (strcmp(section, "route") == 0) {
        config_err(err, cap, "a route section needs a name: [route NAME]");
        return -EINVAL;
    }
    if (strcmp(section, "relay") != 0)
        return -ENOENT;
    if (!key)
        return 0;

    rc = relay_key_endpoints(c, key, value, err, cap);
    if (rc == -ENOENT)
        rc = relay_key_limits(c, key, value, err, cap);
    if (rc == -ENOENT)
        rc = relay_key_logs(c, key, value, err, cap);
    if (rc == -ENOENT)
        rc = access_relay_key(c, key, value, err, cap);
    return rc;
}

int relay_config_check(const struct relay_config *c, char *err, size_t cap)
{
    static const char *const required[] = {"tls_cert", "tls_key", "agent_ca"};
    const char *const values[] = {c->tls_cert, c->tls_key, c->agent_ca};

    if (!c->name || !c->listen || !c->tunnel_listen || !c->log_level || !c->log_format) {
        config_err(err, cap, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!values[i]) {
            config_err(err, cap, "[relay] %s: required key is missing", required[i]);
            return -EINVAL;
        }
    }
    if (!!c->tunnel_cert != !!c->tunnel_key) {
        config_err(err, cap,
                   "[relay] tunnel_cert and tunnel_key must be set together (or both left out)");
        return -EINVAL;
    }
    if (c->dead_timeout_ms <= c->ping_interval_ms) {
        config_err(err, cap,
                   "[relay] dead_timeout (%llums) must be greater than ping_interval (%llums)",
                   (unsigned long long)c->dead_timeout_ms, (unsigned long long)c->ping_interval_ms);
        return -EINVAL;
    }
    if (c->nroutes == 0) {
        config_err(err, cap, "no route: define at least one [route NAME] section");
        return -EINVAL;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        if (c->routes[i].nagents == 0) {
            config_err(err, cap, "[route %s] agents: required key is missing", c->routes[i].name);
            return -EINVAL;
        }
    }
    if (c->default_route && !relay_config_route(c, c->default_route)) {
        config_err(err, cap,
                   "[relay] default_route: route \"%s\" is not defined (no [route %s] section)",
                   c->default_route, c->default_route);
        return -EINVAL;
    }
    return access_config_check(c, err, cap);
}

static int check_any(const void *ctx, char *err, size_t cap)
{
    return relay_config_check(ctx, err, cap);
}

int relay_config_build(struct relay_config *c, const char *path, int nflags, char **flags,
                       char *err, size_t cap)
{
    return config_build(path, nflags, flags, relay_config_handle, check_any, c, err, cap);
}
