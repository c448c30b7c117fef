/*
 * admin.c — the admin console's sessions: messages in, commands run, results out (admin.h).
 *
 *   greeted (AuthenticationOk, ParameterStatus..., BackendKeyData, ReadyForQuery)
 *     --Query--> run --> [RowDescription, DataRow...] CommandComplete | ErrorResponse
 *                        --> ReadyForQuery
 *     --Parse/Bind/Describe/Execute/Close--> answers; an ErrorResponse skips to Sync
 *     --Sync--> ReadyForQuery
 *     --Terminate, EOF, an oversized or unknown message--> closed
 *
 * Reading: a message header (type, length), then its body into a buffer of that length (at
 * most ADMIN_MSG_MAX). Each complete message is answered into one output buffer that is handed
 * to the conn after each read; while the conn holds more than its watermark the session reads
 * no further (on_drain resumes it), so a client that does not read makes the relay hold at
 * most one result more.
 */
#include "relay/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/sqlstate.h"
#include "common/tls.h"
#include "relay/access.h"
#include "relay/admin_wire.h"
#include "relay/audit.h"
#include "relay/frontdoor.h"
#include "relay/preauth.h"
#include "relay/relay.h"
#include "relay/reload.h"
#include "relay/tunnels.h"

#define ADMIN_NAME_MAX 64 /* statement and portal names kept (longer ones: 08P01) */

/* A prepared statement, or a portal bound from one (formats: Bind's result formats). */
struct admin_prepared {
    bool used;
    char name[ADMIN_NAME_MAX];
    struct admin_cmd cmd;
    char text[ADMIN_CMD_TEXT_MAX + 1];
    uint16_t nformats;
    int16_t formats[ADMIN_MAX_COLS];
};

struct admin_session {
    struct relay *r;
    struct admin_session *prev, *next;
    struct conn *conn;
    char peer[64];
    char cn[256];
    char serial[80];
    char user[PROTO_META_MAX];
    bool skip_to_sync; /* an error in the extended protocol: skip messages up to Sync */
    bool closing;
    uint8_t hdr[5];
    size_t hdr_have;
    uint8_t *body; /* the message being read: body_len bytes */
    uint32_t body_len, body_have;
    /* [0]: the unnamed one */
    struct admin_prepared stmts[ADMIN_MAX_STMTS + 1];
    struct admin_prepared portals[ADMIN_MAX_STMTS + 1];
    struct admin_out out;
};

static const struct conn_ops admin_conn_ops;

/* ---- SHOW STATS ------------------------------------------------------------------------------ */

size_t admin_stats_collect(const struct relay *r, struct admin_stat *v, size_t cap)
{
    const struct relay_stats *rs = &r->stats;
    uint64_t refused = 0, failures = 0, to_server = 0, to_client = 0;

    /* the counters behind /metrics (stats.h), summed over their labels; bytes are those of
     * sessions that ended */
    for (size_t i = 0; i < sizeof(rs->refused) / sizeof(rs->refused[0]); i++)
        refused += rs->refused[i];
    for (size_t i = 0; i < rs->routes.n; i++) {
        failures += rs->routes.routes[i]->failures;
        to_server += rs->routes.routes[i]->to_server;
        to_client += rs->routes.routes[i]->to_client;
    }
    const struct admin_stat all[] = {
        {"sessions", r->nsessions},
        {"sessions_routed", r->session_counter},
        {"session_failures", failures},
        {"session_setups", rs->setup.count},
        {"session_setup_us_avg",
         rs->setup.count ? (uint64_t)(rs->setup.sum * 1e6 / (double)rs->setup.count) : 0},
        {"bytes_to_server", to_server},
        {"bytes_to_client", to_client},
        {"clients", r->nclients},
        {"pending", preauth_pending(r->preauth)},
        {"refused", refused},
        {"cancel_forwarded", rs->cancel_forwarded},
        {"cancel_dropped", rs->cancel_dropped},
        {"tunnels", r->nagents},
        {"routes", r->cfg.nroutes},
        {"admin_sessions", r->nadmins},
        {"draining", r->draining ? 1 : 0},
    };
    size_t n = sizeof(all) / sizeof(all[0]);

    if (n > cap)
        n = cap;
    memcpy(v, all, n * sizeof(*v));
    return n;
}

/* ---- results ----------------------------------------------------------------------------------
 */

/* A command's result: rows into the output, with or without the RowDescription (Execute sends
 * none: Describe did). */
struct result {
    struct admin_session *a;
    const struct admin_col *cols;
    size_t ncols;
    const int16_t *formats;
    size_t nformats;
    uint64_t rows;
};

static void row(struct result *res, const struct admin_val *vals)
{
    admin_put_data_row(&res->a->out, res->cols, vals, res->ncols, res->formats, res->nformats);
    res->rows++;
}

/* "2026-12-02T03:04:05Z" into buf[32]; NULL for 0 (unknown). */
static const char *iso_time(long long t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || !gmtime_r(&tt, &tm))
        return NULL;
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* A growing string of comma-separated names (SHOW ROUTES agents, SHOW AGENTS routes). */
struct names {
    char *s;
    size_t len, cap;
};

static int names_add(struct names *l, const char *name)
{
    size_t n = strlen(name) + 2;

    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char *s;

        while (cap < l->len + n)
            cap *= 2;
        if (!(s = realloc(l->s, cap)))
            return -ENOMEM;
        l->s = s;
        l->cap = cap;
    }
    l->len += (size_t)snprintf(l->s + l->len, l->cap - l->len, "%s%s", l->len ? "," : "", name);
    return 0;
}

static bool list_has(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t k = comma ? (size_t)(comma - p) : strlen(p);

        if (k == n && strncmp(p, name, n) == 0)
            return true;
        p += k + (comma ? 1 : 0);
    }
    return false;
}

/* Per route or per agent: what its tunnels add up to. */
struct tally {
    const char *route, *agent; /* the one to count for (the other NULL) */
    uint64_t up, draining, sessions;
};

static void tally_tunnel(void *ctx, const struct relay_tunnel_info *ti)
{
    struct tally *t = ctx;

    if (t->route && (!ti->up || !list_has(ti->routes, t->route)))
        return;
    if (t->agent && strcmp(ti->agent, t->agent) != 0)
        return;
    if (ti->up)
        t->up++;
    else if (strcmp(ti->state, "draining") == 0)
        t->draining++;
    t->sessions += ti->sessions;
}

static int show_routes(struct result *res)
{
    struct relay *r = res->a->r;

    for (size_t i = 0; i < r->cfg.nroutes; i++) {
        const struct relay_route *rt = &r->cfg.routes[i];
        static const char *const certs[] = {"none", "verify", "verify-user"};
        struct names agents = {0};
        struct tally t = {.route = rt->name};
        int rc = 0;

        for (uint32_t k = 0; k < rt->nagents && rc == 0; k++)
            rc = names_add(&agents, rt->agents[k]);
        if (rc < 0) {
            free(agents.s);
            return rc;
        }
        relay_tunnels_list(r, tally_tunnel, &t);
        struct admin_val v[] = {
            {.s = rt->name},
            {.s = agents.s ? agents.s : ""},
            {.i = (int64_t)t.up},
            {.i = counts_get(r->route_sessions, rt->name)},
            {.i = (int64_t)rt->max_sessions},
            {.s = certs[rt->client_cert]},
            {.s = r->cfg.default_route && strcmp(r->cfg.default_route, rt->name) == 0 ? "yes"
                                                                                      : "no"},
        };
        row(res, v);
        free(agents.s);
    }
    return 0;
}

/* Every agent name: configured for a route, or holding a tunnel. */
static void collect_agent(void *ctx, const struct relay_tunnel_info *ti)
{
    struct names *l = ctx;

    if (ti->agent[0] && !list_has(l->s ? l->s : "", ti->agent))
        names_add(l, ti->agent);
}

static int show_agents(struct result *res)
{
    struct relay *r = res->a->r;
    struct names all = {0};
    char name[PROTO_NAME_MAX];
    int rc = 0;

    for (size_t i = 0; i < r->cfg.nroutes && rc == 0; i++)
        for (uint32_t k = 0; k < r->cfg.routes[i].nagents && rc == 0; k++)
            if (!list_has(all.s ? all.s : "", r->cfg.routes[i].agents[k]))
                rc = names_add(&all, r->cfg.routes[i].agents[k]);
    if (rc == 0)
        relay_tunnels_list(r, collect_agent, &all);
    for (const char *p = all.s ? all.s : ""; *p && rc == 0;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        struct names routes = {0};

        snprintf(name, sizeof(name), "%.*s", (int)n, p);
        p += n + (comma ? 1 : 0);
        for (size_t i = 0; i < r->cfg.nroutes && rc == 0; i++)
            if (relay_route_allows(&r->cfg.routes[i], name))
                rc = names_add(&routes, r->cfg.routes[i].name);
        struct tally t = {.agent = name};
        relay_tunnels_list(r, tally_tunnel, &t);
        struct admin_val v[] = {
            {.s = name},
            {.s = routes.s ? routes.s : ""},
            {.i = (int64_t)t.up},
            {.i = (int64_t)t.draining},
            {.i = (int64_t)t.sessions},
        };
        if (rc == 0)
            row(res, v);
        free(routes.s);
    }
    free(all.s);
    return rc;
}

static void tunnel_row(void *ctx, const struct relay_tunnel_info *ti)
{
    char at[32], until[32];
    struct admin_val v[] = {
        {.i = ti->id},
        {.s = ti->agent[0] ? ti->agent : NULL},
        {.s = ti->peer},
        {.s = ti->state},
        {.s = ti->routes},
        {.i = ti->sessions},
        {.i = (int64_t)ti->idle_ms},
        {.s = iso_time(ti->connected_at, at, sizeof(at))},
        {.s = iso_time(ti->not_after, until, sizeof(until))},
    };
    row(ctx, v);
}

static void session_row(void *ctx, const struct frontdoor_session_info *si)
{
    char at[32];
    long long started = (long long)time(NULL) - (long long)(si->duration_ms / 1000);
    struct admin_val v[] = {
        {.s = si->sid},
        {.s = si->state},
        {.s = si->route},
        {.s = si->agent[0] ? si->agent : NULL},
        {.s = si->client},
        {.s = si->user},
        {.s = si->database},
        {.s = si->application_name},
        {.s = si->cert_subject},
        {.s = si->tls_version},
        {.s = si->authenticated ? "yes" : "no"},
        {.s = iso_time(started, at, sizeof(at))},
        {.i = (int64_t)si->duration_ms},
        {.i = (int64_t)si->bytes_in},
        {.i = (int64_t)si->bytes_out},
    };
    row(ctx, v);
}

static void show_stats(struct result *res)
{
    struct admin_stat st[32];
    size_t n = admin_stats_collect(res->a->r, st, sizeof(st) / sizeof(st[0]));

    for (size_t i = 0; i < n; i++) {
        struct admin_val v[] = {{.s = st[i].name}, {.i = (int64_t)st[i].value}};
        row(res, v);
    }
}

static void config_row(struct result *res, const char *key, const char *value)
{
    struct admin_val v[] = {{.s = key}, {.s = value}};
    row(res, v);
}

static void config_u64(struct result *res, const char *key, uint64_t value)
{
    char num[24];

    snprintf(num, sizeof(num), "%llu", (unsigned long long)value);
    config_row(res, key, num);
}

/* A CIDR list as the configuration writes it ("10.0.0.0/8,2001:db8::/32"); IPv4 ranges are
 * kept as IPv4-mapped IPv6 (cidr.h). */
static int cidrs_add(struct names *l, const struct cidr_list *cl)
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char addr[64], item[80];
    int rc = 0;

    for (size_t i = 0; i < cl->n && rc == 0; i++) {
        const struct cidr *c = &cl->v[i];
        bool v4 = c->bits >= 96 && memcmp(c->addr, v4_mapped, sizeof(v4_mapped)) == 0;

        if (v4)
            uv_inet_ntop(AF_INET, c->addr + 12, addr, sizeof(addr));
        else
            uv_inet_ntop(AF_INET6, c->addr, addr, sizeof(addr));
        snprintf(item, sizeof(item), "%s/%u", addr, v4 ? c->bits - 96u : (unsigned)c->bits);
        rc = names_add(l, item);
    }
    return rc;
}

/* A list key's row: "" when empty. */
static int config_list(struct result *res, const char *key, const struct cidr_list *cl,
                       char *const *v, size_t n)
{
    struct names l = {0};
    int rc = cl ? cidrs_add(&l, cl) : 0;

    for (size_t i = 0; i < n && rc == 0; i++)
        rc = names_add(&l, v[i]);
    if (rc == 0)
        config_row(res, key, l.s ? l.s : "");
    free(l.s);
    return rc;
}

/* The [relay] keys in force, and each route's: paths and settings, never a key's contents. */
static int show_config(struct result *res)
{
    const struct relay_config *c = &res->a->r->cfg;
    int rc;

    config_row(res, "name", c->name);
    config_row(res, "listen", c->listen);
    config_row(res, "tunnel_listen", c->tunnel_listen);
    config_row(res, "default_route", c->default_route);
    config_row(res, "tls_cert", c->tls_cert);
    config_row(res, "tls_key", c->tls_key);
    config_row(res, "tls_min_version",
               c->tls_min_version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
    config_row(res, "tunnel_cert", c->tunnel_cert);
    config_row(res, "tunnel_key", c->tunnel_key);
    config_row(res, "agent_ca", c->agent_ca);
    config_row(res, "agent_crl", c->agent_crl);
    config_row(res, "user", c->user);
    config_u64(res, "startup_timeout_ms", c->startup_timeout_ms);
    config_u64(res, "drain_timeout_ms", c->drain_timeout_ms);
    config_u64(res, "ping_interval_ms", c->ping_interval_ms);
    config_u64(res, "dead_timeout_ms", c->dead_timeout_ms);
    config_u64(res, "max_sessions", c->max_sessions);
    config_u64(res, "max_streams_per_tunnel", c->max_streams);
    config_u64(res, "stream_window", c->stream_window);
    config_u64(res, "max_sessions_per_source", c->max_sessions_per_source);
    config_u64(res, "max_tunnels_per_agent", c->max_tunnels_per_agent);
    config_u64(res, "max_pending", c->max_pending);
    config_u64(res, "max_pending_per_source", c->max_pending_per_source);
    config_u64(res, "handshake_rate", c->handshake_rate);
    config_u64(res, "handshake_burst", c->handshake_burst);
    config_u64(res, "hello_timeout_ms", c->hello_timeout_ms);
    config_row(res, "audit_log", c->audit_log);
    config_row(res, "audit_statements", c->audit_statements ? "on" : "off");
    config_u64(res, "audit_statement_max", c->audit_statement_max);
    config_row(res, "log_level", c->log_level);
    config_row(res, "log_format", c->log_format);
    config_row(res, "log_file", c->log_file);
    config_row(res, "tls_ciphers", c->tls_ciphers);
    config_row(res, "tls_ciphersuites", c->tls_ciphersuites);
    config_row(res, "tls_groups", c->tls_groups);
    config_row(res, "tunnel_ciphersuites", c->tunnel_ciphersuites);
    config_row(res, "tunnel_groups", c->tunnel_groups);
    rc = config_list(res, "sni_domains", NULL, c->sni_domains, c->nsni_domains);
    if (rc == 0)
        rc = config_list(res, "allow", &c->allow, NULL, 0);
    if (rc == 0)
        rc = config_list(res, "proxy_protocol_from", &c->proxy_protocol_from, NULL, 0);
    if (rc == 0)
        rc = config_list(res, "admin_users", NULL, c->admin_users, c->nadmin_users);
    config_row(res, "admin_ca", c->admin_ca);
    config_row(res, "admin_crl", c->admin_crl);
    for (size_t i = 0; i < c->nroutes && rc == 0; i++) {
        const struct relay_route *rt = &c->routes[i];
        static const char *const certs[] = {"none", "verify", "verify-user"};
        struct names agents = {0};
        char key[PROTO_NAME_MAX + 32];

        for (uint32_t k = 0; k < rt->nagents && rc == 0; k++)
            rc = names_add(&agents, rt->agents[k]);
        snprintf(key, sizeof(key), "route.%s.agents", rt->name);
        config_row(res, key, agents.s ? agents.s : "");
        free(agents.s);
        snprintf(key, sizeof(key), "route.%s.max_sessions", rt->name);
        config_u64(res, key, rt->max_sessions);
        snprintf(key, sizeof(key), "route.%s.client_cert", rt->name);
        config_row(res, key, certs[rt->client_cert]);
        snprintf(key, sizeof(key), "route.%s.client_ca", rt->name);
        config_row(res, key, rt->client_ca);
        snprintf(key, sizeof(key), "route.%s.client_crl", rt->name);
        config_row(res, key, rt->client_crl);
        snprintf(key, sizeof(key), "route.%s.ident_map", rt->name);
        config_row(res, key, rt->ident_map);
        snprintf(key, sizeof(key), "route.%s.allow", rt->name);
        if (rc == 0)
            rc = config_list(res, key, &rt->allow, NULL, 0);
    }
    return rc;
}

/* ---- commands -------------------------------------------------------------------------------- */

/* Log and audit one command. sqlstate NULL: it succeeded, result says how. */
static void admin_record(struct admin_session *a, const char *text, const char *sqlstate,
                         const char *result)
{
    struct audit_admin_command ac = {
        .relay = a->r->cfg.name,
        .admin = a->cn,
        .cert_serial = a->serial,
        .client = a->peer,
        .user = a->user,
        .command = text,
        .sqlstate = sqlstate,
        .result = result,
    };

    log_msg(sqlstate ? LOG_WARN : LOG_INFO, 0, 0,
            "admin command cn=%s client=%s command=%s sqlstate=%s result=%s", a->cn, a->peer, text,
            sqlstate ? sqlstate : "-", result);
    audit_admin(a->r->audit, &ac);
}

static void admin_error(struct admin_session *a, const char *sqlstate, const char *msg)
{
    admin_put_error(&a->out, "ERROR", sqlstate, msg);
}

static void admin_fatal(struct admin_session *a, const char *sqlstate, const char *msg);

/* The console's rule again, with the configuration in force: a reload may have removed the CN
 * from admin_users or revoked the certificate, and the certificate may have expired. An admin
 * no longer allowed runs nothing more: FATAL 28000, and the session ends. */
static int admin_still_allowed(struct admin_session *a, const char *text)
{
    struct tls_peer_info info;
    char msg[PGB_ERR_MAX], why[PGB_ERR_MAX + 64];

    if (access_check_admin(a->r->access, &a->r->cfg, a->conn, &info, msg, sizeof(msg)) == 0)
        return 0;
    snprintf(why, sizeof(why), "%s; session ended", msg);
    admin_record(a, text, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, why);
    admin_fatal(a, SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION, why);
    return -1;
}

/*
 * Run cmd (text: as the client sent it, for the log and the audit), its rows formatted as
 * formats say. describe: send the RowDescription first (simple query). 0, or -1 after an
 * ErrorResponse.
 */
static int admin_run(struct admin_session *a, const struct admin_cmd *cmd, const char *text,
                     bool describe, const int16_t *formats, size_t nformats)
{
    struct relay *r = a->r;
    size_t mark = a->out.len;
    struct result res = {.a = a, .formats = formats, .nformats = nformats};
    char msg[PGB_ERR_MAX], tag[32], result[PGB_ERR_MAX + 16];
    const char *sqlstate = NULL;
    int rc = 0, n;

    if (cmd->kind == ADMIN_EMPTY) {
        admin_put_empty(&a->out, 'I');
        return 0;
    }
    if (admin_still_allowed(a, text) < 0)
        return -1;
    res.cols = admin_cmd_columns(cmd->kind, &res.ncols);
    if (describe && res.ncols)
        admin_put_row_description(&a->out, res.cols, res.ncols, formats, nformats);
    snprintf(result, sizeof(result), "ok");
    switch (cmd->kind) {
    case ADMIN_SHOW_ROUTES:
        rc = show_routes(&res);
        break;
    case ADMIN_SHOW_AGENTS:
        rc = show_agents(&res);
        break;
    case ADMIN_SHOW_TUNNELS:
        relay_tunnels_list(r, tunnel_row, &res);
        break;
    case ADMIN_SHOW_SESSIONS:
        frontdoor_sessions_list(r, session_row, &res);
        break;
    case ADMIN_SHOW_STATS:
        show_stats(&res);
        break;
    case ADMIN_SHOW_CONFIG:
        rc = show_config(&res);
        break;
    case ADMIN_SHOW_VERSION: {
        struct admin_val v[] = {{.s = "pgburrow-relay " PGB_VERSION}};
        row(&res, v);
        break;
    }
    case ADMIN_RELOAD: {
        char trigger[300];

        snprintf(trigger, sizeof(trigger), "admin console, %s", a->cn);
        if (relay_reload(r, trigger, msg, sizeof(msg)) < 0) {
            sqlstate = SQLSTATE_CONFIG_FILE_ERROR;
            snprintf(result, sizeof(result), "pgburrow: reload failed: %s", msg);
        }
        break;
    }
    case ADMIN_DRAIN_AGENT: {
        char why[300];

        snprintf(why, sizeof(why), "drained from the admin console by %s", a->cn);
        if ((n = relay_tunnels_drain_agent(r, cmd->arg, why)) == 0) {
            sqlstate = SQLSTATE_UNDEFINED_OBJECT;
            snprintf(result, sizeof(result),
                     "pgburrow: agent \"%s\" has no tunnel up on this relay to drain", cmd->arg);
        } else {
            snprintf(result, sizeof(result), "ok: %d tunnel(s) draining", n);
        }
        break;
    }
    case ADMIN_KILL_SESSION:
        if (frontdoor_kill_session(r, cmd->arg, a->cn) < 0) {
            sqlstate = SQLSTATE_UNDEFINED_OBJECT;
            snprintf(result, sizeof(result), "pgburrow: no session \"%s\" on this relay", cmd->arg);
        }
        break;
    default: /* ADMIN_SET: ignored */
        break;
    }
    if (rc < 0 || a->out.failed) {
        a->out.len = mark;
        a->out.failed = false;
        sqlstate = rc == -ENOMEM ? SQLSTATE_OUT_OF_MEMORY : SQLSTATE_PROGRAM_LIMIT_EXCEEDED;
        snprintf(result, sizeof(result), "pgburrow: %s",
                 rc == -ENOMEM ? "out of memory" : "result too large");
    }
    admin_record(a, text, sqlstate, result);
    if (sqlstate) {
        admin_error(a, sqlstate, result);
        return -1;
    }
    if (res.ncols)
        snprintf(tag, sizeof(tag), "%s %llu", admin_cmd_tag(cmd->kind),
                 (unsigned long long)res.rows);
    else
        snprintf(tag, sizeof(tag), "%s", admin_cmd_tag(cmd->kind));
    admin_put_command_complete(&a->out, tag);
    return 0;
}

/* Parse text as a command; on failure the ErrorResponse is written, logged and audited. */
static int admin_parse_cmd(struct admin_session *a, const char *text, struct admin_cmd *cmd)
{
    const char *sqlstate;
    char err[PGB_ERR_MAX], msg[PGB_ERR_MAX + 16];
    char cut[ADMIN_CMD_TEXT_MAX + 1];

    if (admin_cmd_parse(text, strlen(text), cmd, &sqlstate, err, sizeof(err)) == 0)
        return 0;
    snprintf(msg, sizeof(msg), "pgburrow: %s", err);
    snprintf(cut, sizeof(cut), "%s", text);
    admin_record(a, cut, sqlstate, msg);
    admin_error(a, sqlstate, msg);
    return -1;
}

/* ---- the extended protocol ---------------------------------------------------------------- */

static struct admin_prepared *prepared_find(struct admin_prepared *v, const char *name)
{
    if (name[0] == '\0')
        return v[0].used ? &v[0] : NULL;
    for (size_t i = 1; i <= ADMIN_MAX_STMTS; i++)
        if (v[i].used && strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

/* A slot for name: the unnamed one, the one of that name, or a free one (NULL: none left). */
static struct admin_prepared *prepared_slot(struct admin_prepared *v, const char *name)
{
    struct admin_prepared *p = prepared_find(v, name);

    if (name[0] == '\0')
        return &v[0];
    for (size_t i = 1; i <= ADMIN_MAX_STMTS && !p; i++)
        if (!v[i].used)
            p = &v[i];
    return p;
}

/* An error in the extended protocol: everything up to Sync is skipped. */
static void ext_fail(struct admin_session *a, const char *sqlstate, const char *msg)
{
    admin_error(a, sqlstate, msg);
    a->skip_to_sync = true;
}

static void on_parse(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    struct admin_parse m;
    struct admin_cmd cmd;
    struct admin_prepared *p;

    if (admin_read_parse(body, len, &m) < 0) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid Parse message");
        return;
    }
    if (strlen(m.name) >= ADMIN_NAME_MAX) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: statement name too long");
        return;
    }
    if (admin_parse_cmd(a, m.query, &cmd) < 0) {
        a->skip_to_sync = true;
        return;
    }
    if (!(p = prepared_slot(a->stmts, m.name))) {
        ext_fail(a, SQLSTATE_PROGRAM_LIMIT_EXCEEDED, "pgburrow: too many prepared statements");
        return;
    }
    memset(p, 0, sizeof(*p));
    p->used = true;
    snprintf(p->name, sizeof(p->name), "%s", m.name);
    p->cmd = cmd;
    snprintf(p->text, sizeof(p->text), "%s", m.query);
    admin_put_empty(&a->out, '1');
}

static void on_bind(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    struct admin_bind m;
    struct admin_prepared *st, *p;
    char msg[PGB_ERR_MAX];
    size_t ncols;
    int rc = admin_read_bind(body, len, &m);

    if (rc < 0) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION,
                 rc == -E2BIG ? "pgburrow: too many result formats"
                              : "pgburrow: invalid Bind message");
        return;
    }
    if (!(st = prepared_find(a->stmts, m.stmt))) {
        snprintf(msg, sizeof(msg), "pgburrow: prepared statement \"%.63s\" does not exist", m.stmt);
        ext_fail(a, SQLSTATE_INVALID_SQL_STATEMENT_NAME, msg);
        return;
    }
    admin_cmd_columns(st->cmd.kind, &ncols);
    if (m.nparams > 0) {
        snprintf(msg, sizeof(msg),
                 "pgburrow: bind message supplies %u parameters, but prepared statement "
                 "\"%.63s\" requires 0",
                 m.nparams, m.stmt);
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, msg);
        return;
    }
    if (m.nformats > 1 && m.nformats != ncols) {
        snprintf(msg, sizeof(msg),
                 "pgburrow: bind message has %u result formats but query has %zu "
                 "columns",
                 m.nformats, ncols);
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, msg);
        return;
    }
    if (strlen(m.portal) >= ADMIN_NAME_MAX || !(p = prepared_slot(a->portals, m.portal))) {
        ext_fail(a, SQLSTATE_PROGRAM_LIMIT_EXCEEDED, "pgburrow: too many portals");
        return;
    }
    *p = *st;
    snprintf(p->name, sizeof(p->name), "%s", m.portal);
    p->nformats = m.nformats;
    memcpy(p->formats, m.formats, sizeof(p->formats));
    admin_put_empty(&a->out, '2');
}

static void on_describe(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    const struct admin_col *cols;
    struct admin_prepared *p;
    const char *name;
    char kind, msg[PGB_ERR_MAX];
    size_t ncols;

    if (admin_read_target(body, len, &kind, &name) < 0) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid Describe message");
        return;
    }
    if (!(p = prepared_find(kind == 'S' ? a->stmts : a->portals, name))) {
        snprintf(msg, sizeof(msg), "pgburrow: %s \"%.63s\" does not exist",
                 kind == 'S' ? "prepared statement" : "portal", name);
        ext_fail(a,
                 kind == 'S' ? SQLSTATE_INVALID_SQL_STATEMENT_NAME : SQLSTATE_INVALID_CURSOR_NAME,
                 msg);
        return;
    }
    if (kind == 'S')
        admin_put_no_params(&a->out);
    cols = admin_cmd_columns(p->cmd.kind, &ncols);
    if (ncols == 0)
        admin_put_empty(&a->out, 'n');
    else if (kind == 'S')
        admin_put_row_description(&a->out, cols, ncols, NULL, 0);
    else
        admin_put_row_description(&a->out, cols, ncols, p->formats, p->nformats);
}

static void on_execute(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    struct admin_prepared *p;
    const char *name;
    char msg[PGB_ERR_MAX];

    if (admin_read_execute(body, len, &name) < 0) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid Execute message");
        return;
    }
    if (!(p = prepared_find(a->portals, name))) {
        snprintf(msg, sizeof(msg), "pgburrow: portal \"%.63s\" does not exist", name);
        ext_fail(a, SQLSTATE_INVALID_CURSOR_NAME, msg);
        return;
    }
    if (admin_run(a, &p->cmd, p->text, false, p->formats, p->nformats) < 0)
        a->skip_to_sync = true;
}

static void on_close_msg(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    struct admin_prepared *p;
    const char *name;
    char kind;

    if (admin_read_target(body, len, &kind, &name) < 0) {
        ext_fail(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid Close message");
        return;
    }
    if ((p = prepared_find(kind == 'S' ? a->stmts : a->portals, name)))
        p->used = false;
    admin_put_empty(&a->out, '3');
}

/* ---- messages ------------------------------------------------------------------------------ */

static void admin_fatal(struct admin_session *a, const char *sqlstate, const char *msg)
{
    log_warn("admin session closed cn=%s client=%s sqlstate=%s reason=%s", a->cn, a->peer, sqlstate,
             msg);
    admin_put_error(&a->out, "FATAL", sqlstate, msg);
    a->closing = true;
}

static void on_query(struct admin_session *a, const uint8_t *body, uint32_t len)
{
    struct admin_cmd cmd;
    const char *text;

    if (admin_read_query(body, len, &text) < 0) {
        admin_fatal(a, SQLSTATE_PROTOCOL_VIOLATION, "pgburrow: invalid Query message");
        return;
    }
    if (admin_parse_cmd(a, text, &cmd) == 0)
        admin_run(a, &cmd, text, true, NULL, 0);
    if (!a->closing)
        admin_put_ready(&a->out);
}

static void admin_message(struct admin_session *a, char type, const uint8_t *body, uint32_t len)
{
    char msg[80];

    if (type == 'X') { /* Terminate */
        a->closing = true;
        return;
    }
    if (type == 'S') { /* Sync */
        a->skip_to_sync = false;
        admin_put_ready(&a->out);
        return;
    }
    if (a->skip_to_sync)
        return;
    switch (type) {
    case 'Q':
        on_query(a, body, len);
        break;
    case 'P':
        on_parse(a, body, len);
        break;
    case 'B':
        on_bind(a, body, len);
        break;
    case 'D':
        on_describe(a, body, len);
        break;
    case 'E':
        on_execute(a, body, len);
        break;
    case 'C':
        on_close_msg(a, body, len);
        break;
    case 'H': /* Flush: the output goes out after every read anyway */
        break;
    default:
        snprintf(msg, sizeof(msg), "pgburrow: invalid frontend message type %d",
                 (unsigned char)type);
        admin_fatal(a, SQLSTATE_PROTOCOL_VIOLATION, msg);
        break;
    }
}

/* Hand what was answered to the conn; after a FATAL or Terminate, end it. */
static void admin_flush(struct admin_session *a)
{
    if (a->out.len > 0 && !a->out.failed)
        conn_write(a->conn, a->out.p, a->out.len);
    admin_out_reset(&a->out);
    if (a->closing)
        conn_end(a->conn);
}

static size_t admin_on_read(struct conn *conn, const uint8_t *data, size_t len)
{
    struct admin_session *a = conn_data(conn);
    size_t used = 0;

    while (used < len && !a->closing && conn_writable(conn)) {
        if (a->hdr_have < sizeof(a->hdr)) {
            a->hdr[a->hdr_have++] = data[used++];
            if (a->hdr_have < sizeof(a->hdr))
                continue;
            uint32_t n = (uint32_t)a->hdr[1] << 24 | (uint32_t)a->hdr[2] << 16 |
                         (uint32_t)a->hdr[3] << 8 | a->hdr[4];
            if (n < 4 || n - 4 > ADMIN_MSG_MAX) {
                admin_fatal(a, SQLSTATE_PROTOCOL_VIOLATION,
                            n < 4 ? "pgburrow: invalid message length"
                                  : "pgburrow: message too long (the admin console takes at "
                                    "most 64 KiB)");
                break;
            }
            a->body_len = n - 4;
            a->body_have = 0;
            if (a->body_len && !(a->body = malloc(a->body_len))) {
                admin_fatal(a, SQLSTATE_OUT_OF_MEMORY, "pgburrow: out of memory");
                break;
            }
        }
        size_t n = a->body_len - a->body_have;
        if (n > len - used)
            n = len - used;
        if (n)
            memcpy(a->body + a->body_have, data + used, n);
        a->body_have += (uint32_t)n;
        used += n;
        if (a->body_have < a->body_len)
            continue;
        admin_message(a, (char)a->hdr[0], a->body, a->body_len);
        free(a->body);
        a->body = NULL;
        a->hdr_have = 0;
        admin_flush(a);
    }
    admin_flush(a);
    return a->closing ? len : used; /* less: the conn holds the rest until on_drain */
}

static void admin_on_drain(struct conn *conn)
{
    struct admin_session *a = conn_data(conn);

    if (!a->closing)
        conn_read_start(conn);
}

static void admin_on_eof(struct conn *conn)
{
    struct admin_session *a = conn_data(conn);

    a->closing = true;
    conn_close(conn);
}

static void admin_on_error(struct conn *conn, int err, const char *reason)
{
    struct admin_session *a = conn_data(conn);

    log_info("admin session error cn=%s client=%s: %s", a->cn, a->peer,
             reason ? reason : uv_strerror(err));
    a->closing = true;
}

static void admin_on_close(struct conn *conn)
{
    struct admin_session *a = conn_data(conn);
    struct relay *r = a->r;

    log_info("admin session end cn=%s client=%s", a->cn, a->peer);
    if (a->prev)
        a->prev->next = a->next;
    else
        r->admins = a->next;
    if (a->next)
        a->next->prev = a->prev;
    r->nadmins--;
    free(a->body);
    admin_out_free(&a->out);
    free(a);
}

static const struct conn_ops admin_conn_ops = {
    .on_read = admin_on_read,
    .on_eof = admin_on_eof,
    .on_error = admin_on_error,
    .on_drain = admin_on_drain,
    .on_close = admin_on_close,
};

/* What PostgreSQL reports at the start of a session that clients rely on (JDBC refuses a
 * DateStyle that is not ISO or an encoding that is not UTF8; libpq reads server_version). */
static void admin_greet(struct admin_session *a, const char *application_name)
{
    uint32_t key[2] = {0, 0};

    admin_put_auth_ok(&a->out);
    admin_put_parameter_status(&a->out, "server_version", "15.0 (pgburrow-relay " PGB_VERSION ")");
    admin_put_parameter_status(&a->out, "server_encoding", "UTF8");
    admin_put_parameter_status(&a->out, "client_encoding", "UTF8");
    admin_put_parameter_status(&a->out, "DateStyle", "ISO, MDY");
    admin_put_parameter_status(&a->out, "IntervalStyle", "postgres");
    admin_put_parameter_status(&a->out, "TimeZone", "UTC");
    admin_put_parameter_status(&a->out, "integer_datetimes", "on");
    admin_put_parameter_status(&a->out, "standard_conforming_strings", "on");
    admin_put_parameter_status(&a->out, "is_superuser", "off");
    admin_put_parameter_status(&a->out, "session_authorization", a->user);
    admin_put_parameter_status(&a->out, "application_name",
                               application_name ? application_name : "");
    /* a cancel for it reaches no session (the relay forwards unknown keys to its agents,
     * which ignore them): the console runs nothing that could be cancelled */
    uv_random(NULL, NULL, key, sizeof(key), 0, NULL);
    admin_put_backend_key(&a->out, key[0] & 0x7fffffff, key[1]);
    admin_put_ready(&a->out);
}

int admin_session_open(struct relay *r, struct conn *conn, const struct relay_admin_login *login,
                       const uint8_t *rest, size_t rest_len, char *msg, size_t cap)
{
    struct admin_session *a;

    if (r->nadmins >= ADMIN_MAX_SESSIONS) {
        snprintf(msg, cap, "pgburrow: too many admin console sessions (at most %d)",
                 ADMIN_MAX_SESSIONS);
        return -EBUSY;
    }
    if (!(a = calloc(1, sizeof(*a)))) {
        snprintf(msg, cap, "pgburrow: out of memory");
        return -ENOMEM;
    }
    a->r = r;
    a->conn = conn;
    admin_out_init(&a->out, ADMIN_OUT_MAX);
    snprintf(a->peer, sizeof(a->peer), "%s", login->peer);
    snprintf(a->cn, sizeof(a->cn), "%s", login->cn);
    snprintf(a->serial, sizeof(a->serial), "%s", login->cert_serial);
    snprintf(a->user, sizeof(a->user), "%s", login->user);
    a->next = r->admins;
    if (r->admins)
        r->admins->prev = a;
    r->admins = a;
    r->nadmins++;
    conn_set_ops(conn, &admin_conn_ops, a);
    log_info("admin session start cn=%s client=%s user=%s cert_subject=%s cert_serial=%s tls=%s",
             a->cn, a->peer, a->user, login->cert_subject, login->cert_serial, login->tls_version);
    admin_greet(a, login->application_name);
    admin_flush(a);
    /* what the client pipelined after its StartupMessage; more than the conn's watermark of
     * answers to it (no client does that) ends the session rather than being dropped */
    if (rest_len > 0 && admin_on_read(conn, rest, rest_len) < rest_len && !a->closing) {
        admin_fatal(a, SQLSTATE_PROTOCOL_VIOLATION,
                    "pgburrow: too many messages before the session started");
        admin_flush(a);
    }
    return 0;
}

void admin_close_all(struct relay *r)
{
    for (struct admin_session *a = r->admins; a; a = a->next) {
        a->closing = true;
        conn_close(a->conn);
    }
}
