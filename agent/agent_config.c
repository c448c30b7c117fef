/*
 * agent_config — agent keys, defaults and checks. See agent_config.h and deploy/agent.ini.
 *
 * Every key is checked when it is set, so that a bad value is reported with its file line;
 * only what depends on several keys waits for agent_config_check().
 */
#include "agent/agent_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define AGENT_DEFAULT_PG_HOST "/var/run/postgresql"
#define AGENT_DEFAULT_PG_PORT 5432

void agent_config_init(struct agent_config *c)
{
    memset(c, 0, sizeof(*c));
    c->reconnect_min_ms = 100;
    c->reconnect_max_ms = 30000;
    c->connect_timeout_ms = 5000;
    c->drain_timeout_ms = 30000;
    c->resolve_interval_ms = 30000;
    c->ping_interval_ms = 1000;
    c->dead_timeout_ms = 4000;
    c->max_streams = 1000;
    c->max_stream_window = 1024 * 1024;
    /* A failed strdup leaves NULL, which agent_config_check reports. */
    c->log_level = strdup("info");
    c->log_format = strdup("text");
}

void agent_config_free(struct agent_config *c)
{
    if (!c)
        return;
    free(c->relay_server_name);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->log_level);
    free(c->log_format);
    free(c->log_file);
    free(c->metrics_listen);
    for (size_t i = 0; i < c->nroutes; i++) {
        struct agent_route *r = &c->routes[i];
        free(r->host);
        free(r->sslrootcert);
        free(r->sslcert);
        free(r->sslkey);
        free(r->sslservername);
        SSL_CTX_free(r->ssl_ctx);
    }
    free(c->routes);
    memset(c, 0, sizeof(*c));
}

const struct agent_route *agent_config_route(const struct agent_config *c, const char *name)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        if (strcmp(c->routes[i].name, name) == 0)
            return &c->routes[i];
    }
    return NULL;
}

/* Find route `name`, creating it with the default PostgreSQL address if it is new. */
static int route_get(struct agent_config *c, const char *name, struct agent_route **out, char *err,
                     size_t cap)
{
    struct agent_route *r = (struct agent_route *)agent_config_route(c, name);

    if (!r) {
        char *host = strdup(AGENT_DEFAULT_PG_HOST);
        void *routes = c->routes, *added;
        /* HELLO carries every route; more than it can carry could never be offered. */
        int rc = host ? config_route_append(&routes, &c->nroutes, sizeof(*r), PROTO_MAX_ROUTES,
                                            name, &added, err, cap)
                      : -ENOMEM;
        c->routes = routes;
        if (rc < 0) {
            free(host);
            return rc;
        }
        r = added;
        memcpy(r->name, name, strlen(name) + 1);
        r->host = host;
        r->port = AGENT_DEFAULT_PG_PORT;
    }
    *out = r;
    return 0;
}

/* host = an absolute Unix socket directory, or a host name / IP address. */
static int set_pg_host(char **dst, const char *value, char *err, size_t cap)
{
    if (value[0] != '/') {
        size_t n = strlen(value);
        bool ok = n > 0 && n < 256;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = value[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '-' || ch == '_' || ch == ':';
        }
        if (!ok) {
            config_err(err, cap,
                       "expected an absolute socket directory, a host name or an IP address, got "
                       "\"%.80s\"",
                       value);
            return -EINVAL;
        }
    }
    return config_set_str(dst, value);
}

static const char *const agent_sslmode_names[] = {"disable", "require", "verify-ca", "verify-full"};

const char *agent_sslmode_name(enum agent_sslmode m)
{
    return (size_t)m < sizeof(agent_sslmode_names) / sizeof(agent_sslmode_names[0])
               ? agent_sslmode_names[m]
               : "?";
}

static int set_sslmode(enum agent_sslmode *dst, const char *value, char *err, size_t cap)
{
    for (size_t i = 0; i < sizeof(agent_sslmode_names) / sizeof(agent_sslmode_names[0]); i++) {
        if (strcmp(value, agent_sslmode_names[i]) == 0) {
            *dst = (enum agent_sslmode)i;
            return 0;
        }
    }
    if (strcmp(value, "prefer") == 0 || strcmp(value, "allow") == 0)
        config_err(err, cap,
                   "\"%s\" is not offered (it falls back to plaintext silently); expected "
                   "disable, require, verify-ca or verify-full",
                   value);
    else
        config_err(err, cap, "expected disable, require, verify-ca or verify-full, got \"%.80s\"",
                   value);
    return -EINVAL;
}

static int handle_route(struct agent_config *c, const char *name, const char *key,
                        const char *value, char *err, size_t cap)
{
    struct agent_route *r;
    uint64_t port;
    int rc = route_get(c, name, &r, err, cap);

    if (rc < 0 || !key)
        return rc;
    if (strcmp(key, "host") == 0)
        return set_pg_host(&r->host, value, err, cap);
    if (strcmp(key, "port") == 0) {
        rc = config_parse_uint(value, 1, 65535, &port, err, cap);
        if (rc == 0)
            r->port = (uint16_t)port;
        return rc;
    }
    if (strcmp(key, "sslmode") == 0)
        return set_sslmode(&r->sslmode, value, err, cap);
    if (strcmp(key, "sslrootcert") == 0)
        return config_set_optional(&r->sslrootcert, value);
    if (strcmp(key, "sslcert") == 0)
        return config_set_optional(&r->sslcert, value);
    if (strcmp(key, "sslkey") == 0)
        return config_set_optional(&r->sslkey, value);
    if (strcmp(key, "sslservername") == 0)
        return config_set_optional(&r->sslservername, value);
    return -ENOENT;
}

/* Collects "relay = a:1, b:2" into a scratch list, so that a bad list changes nothing. */
struct relay_list {
    size_t n;
    struct agent_relay_addr addrs[AGENT_MAX_RELAYS];
};

static int relay_list_add(void *ctx, const char *item, char *err, size_t cap)
{
    struct relay_list *l = ctx;
    struct agent_relay_addr a;
    int rc = config_parse_hostport(item, a.host, &a.port, err, cap);

    if (rc < 0)
        return rc;
    if (strcmp(a.host, "*") == 0) {
        config_err(err, cap, "cannot dial \"%.80s\": name the relay host", item);
        return -EINVAL;
    }
    if (l->n == AGENT_MAX_RELAYS) {
        config_err(err, cap, "too many relays (max %d)", AGENT_MAX_RELAYS);
        return -EINVAL;
    }
    l->addrs[l->n++] = a;
    return 0;
}

static int set_relays(struct agent_config *c, const char *value, char *err, size_t cap)
{
    struct relay_list *l = calloc(1, sizeof(*l));
    int rc;

    if (!l)
        return -ENOMEM;
    rc = config_parse_list(value, relay_list_add, l, err, cap);
    if (rc == 0) {
        c->nrelays = l->n;
        memcpy(c->relays, l->addrs, l->n * sizeof(l->addrs[0]));
    }
    free(l);
    return rc;
}

/* An optional string: empty means "not set" (the default applies). */
int agent_config_handle(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t cap)
{
    struct agent_config *c = ctx;

    if (strncmp(section, "route ", 6) == 0)
        return handle_route(c, section + 6, key, value, err, cap);
    if (strcmp(section, "route") == 0) {
        config_err(err, cap, "a route section needs a name: [route NAME]");
        return -EINVAL;
    }
    if (strcmp(section, "agent") != 0)
        return -ENOENT;
    if (!key)
        return 0;

    if (strcmp(key, "relay") == 0)
        return set_relays(c, value, err, cap);
    if (strcmp(key, "relay_server_name") == 0)
        return config_set_optional(&c->relay_server_name, value);
    if (strcmp(key, "ca") == 0)
        return config_set_optional(&c->ca, value);
    if (strcmp(key, "cert") == 0)
        return config_set_optional(&c->cert, value);
    if (strcmp(key, "key") == 0)
        return config_set_optional(&c->key, value);
    if (strcmp(key, "reconnect_min") == 0)
        return config_set_duration(&c->reconnect_min_ms, value, err, cap);
    if (strcmp(key, "reconnect_max") == 0)
        return config_set_duration(&c->reconnect_max_ms, value, err, cap);
    if (strcmp(key, "drain_timeout") == 0)
        return config_set_duration(&c->drain_timeout_ms, value, err, cap);
    if (strcmp(key, "connect_timeout") == 0)
        return config_set_duration(&c->connect_timeout_ms, value, err, cap);
    if (strcmp(key, "resolve_interval") == 0)
        return config_set_duration(&c->resolve_interval_ms, value, err, cap);
    if (strcmp(key, "ping_interval") == 0)
        return config_set_duration(&c->ping_interval_ms, value, err, cap);
    if (strcmp(key, "dead_timeout") == 0)
        return config_set_duration(&c->dead_timeout_ms, value, err, cap);
    if (strcmp(key, "max_streams_per_tunnel") == 0)
        return config_parse_uint(value, 1, 100000, &c->max_streams, err, cap);
    if (strcmp(key, "max_stream_window") == 0)
        return config_set_window(&c->max_stream_window, value, err, cap);
    if (strcmp(key, "log_level") == 0)
        return config_set_log_level(&c->log_level, value, err, cap);
    if (strcmp(key, "log_format") == 0)
        return config_set_log_format(&c->log_format, value, err, cap);
    if (strcmp(key, "log_file") == 0)
        return config_set_optional(&c->log_file, value);
    if (strcmp(key, "metrics_listen") == 0)
        return config_set_optional_hostport(&c->metrics_listen, value, err, cap);
    return -ENOENT;
}

/* The upstream TLS keys of one route fit together (files are checked when contexts are built). */
static int check_route_tls(const struct agent_route *r, char *err, size_t cap)
{
    const char *mode = agent_sslmode_name(r->sslmode);

    if (r->sslmode == AGENT_SSLMODE_DISABLE) {
        const char *stray = r->sslrootcert     ? "sslrootcert"
                            : r->sslcert       ? "sslcert"
                            : r->sslkey        ? "sslkey"
                            : r->sslservername ? "sslservername"
                                               : NULL;
        if (stray) {
            /* Most likely a forgotten sslmode: say so rather than connect in plaintext. */
            config_err(err, cap, "[route %s] %s: has no effect with sslmode=disable (set sslmode)",
                       r->name, stray);
            return -EINVAL;
        }
        return 0;
    }
    if (r->host[0] == '/') {
        /* PostgreSQL answers N to SSLRequest on Unix sockets; the socket is local anyway. */
        config_err(err, cap,
                   "[route %s] sslmode: %s needs a TCP host; PostgreSQL does not offer TLS on "
                   "the Unix socket %s (use sslmode=disable)",
                   r->name, mode, r->host);
        return -EINVAL;
    }
    if (r->sslmode >= AGENT_SSLMODE_VERIFY_CA && !r->sslrootcert) {
        config_err(err, cap, "[route %s] sslrootcert: required with sslmode=%s", r->name, mode);
        return -EINVAL;
    }
    if (!r->sslcert != !r->sslkey) {
        config_err(err, cap, "[route %s] %s: sslcert and sslkey go together", r->name,
                   r->sslcert ? "sslkey" : "sslcert");
        return -EINVAL;
    }
    if (r->sslservername && r->sslmode != AGENT_SSLMODE_VERIFY_FULL) {
        config_err(err, cap,
                   "[route %s] sslservername: only verify-full checks a name (sslmode=%s)", r->name,
                   mode);
        return -EINVAL;
    }
    return 0;
}

int agent_config_check(const struct agent_config *c, char *err, size_t cap)
{
    static const char *const required[] = {"ca", "cert", "key"};
    const char *const values[] = {c->ca, c->cert, c->key};

    if (!c->log_level || !c->log_format) {
        config_err(err, cap, "out of memory");
        return -ENOMEM;
    }
    if (c->nrelays == 0) {
        config_err(err, cap, "[agent] relay: required key is missing");
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!values[i]) {
            config_err(err, cap, "[agent] %s: required key is missing", required[i]);
            return -EINVAL;
        }
    }
    if (c->reconnect_min_ms > c->reconnect_max_ms) {
        config_err(
            err, cap, "[agent] reconnect_min (%llums) must not exceed reconnect_max (%llums)",
            (unsigned long long)c->reconnect_min_ms, (unsigned long long)c->reconnect_max_ms);
        return -EINVAL;
    }
    if (c->resolve_interval_ms < 100) {
        config_err(err, cap, "[agent] resolve_interval (%llums) must be at least 100ms",
                   (unsigned long long)c->resolve_interval_ms);
        return -EINVAL;
    }
    if (c->dead_timeout_ms <= c->ping_interval_ms) {
        config_err(err, cap,
                   "[agent] dead_timeout (%llums) must be greater than ping_interval (%llums)",
                   (unsigned long long)c->dead_timeout_ms, (unsigned long long)c->ping_interval_ms);
        return -EINVAL;
    }
    if (c->nroutes == 0) {
        config_err(err, cap, "no route: define at least one [route NAME] section");
        return -EINVAL;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        if (!c->routes[i].host || c->routes[i].host[0] == '\0') {
            config_err(err, cap, "[route %s] host: must not be empty", c->routes[i].name);
            return -EINVAL;
        }
        if (check_route_tls(&c->routes[i], err, cap) < 0)
            return -EINVAL;
    }
    return 0;
}

static int check_any(const void *ctx, char *err, size_t cap)
{
    return agent_config_check(ctx, err, cap);
}

int agent_config_build(struct agent_config *c, const char *path, int nflags, char **flags,
                       char *err, size_t cap)
{
    return config_build(path, nflags, flags, agent_config_handle, check_any, c, err, cap);
}
