/*
 * access — allowlists, client certificates per route, TLS policy (see access.h).
 */
#include "relay/access.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cidr.h"

struct access_route {
    char name[PROTO_NAME_MAX];
    X509_STORE *store; /* NULL: client_cert = none */
    bool has_map;
    struct access_ident_map map;
};

struct access {
    size_t nroutes;
    struct access_route *routes;
    X509_STORE *admin_store; /* admin_ca + admin_crl; NULL: the console is off */
};

/* ---- configuration keys ---------------------------------------------------------------- */

/* An optional string: empty means "not set". */
static int set_policy(char **dst, const char *value, int (*check)(const char *, char *, size_t),
                      char *err, size_t cap)
{
    char terr[PGB_ERR_MAX];

    if (value[0] != '\0' && check(value, terr, sizeof(terr)) < 0) {
        config_err(err, cap, "%s", terr);
        return -EINVAL;
    }
    return config_set_optional(dst, value);
}

static int set_allow(struct cidr_list *l, const char *value, char *err, size_t cap)
{
    if (value[0] == '\0') {
        cidr_list_free(l);
        return 0;
    }
    return cidr_list_parse(value, l, err, cap);
}

/* A list of strings the config owns (sni_domains, admin_users), built item by item. */
struct str_list {
    size_t n;
    char **v;
};

/* Appends a copy of item (the caller checked it). */
static int str_list_push(struct str_list *l, const char *item, char *err, size_t cap)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

    if (v)
        l->v = v;
    if (!v || !(v[l->n] = strdup(item))) {
        config_err(err, cap, "out of memory");
        return -ENOMEM;
    }
    l->n++;
    return 0;
}

static void str_list_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Parses value with add into a new list, which replaces *v, *n only when all of it is valid. */
static int str_list_set(char ***v, size_t *n, const char *value,
                        int (*add)(void *, const char *, char *, size_t), char *err, size_t cap)
{
    struct str_list l = {0, NULL};
    int rc = value[0] ? config_parse_list(value, add, &l, err, cap) : 0;

    if (rc < 0) {
        str_list_free(l.v, l.n);
        return rc;
    }
    str_list_free(*v, *n);
    *v = l.v;
    *n = l.n;
    return 0;
}

static int domain_add(void *ctx, const char *item, char *err, size_t cap)
{
    struct str_list *l = ctx;
    size_t n = strlen(item), label = 0;

    if (strncmp(item, "*.", 2) == 0) {
        config_err(err, cap, "\"%.80s\": write the domain without \"*.\" (\"%.80s\")", item,
                   item + 2);
        return -EINVAL;
    }
    if (n == 0 || n > 253 || item[0] == '.' || item[n - 1] == '.') {
        config_err(err, cap, "invalid domain name \"%.80s\"", item);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (item[i] == '.') {
            if (label == 0) {
                config_err(err, cap, "invalid domain name \"%.80s\": empty label", item);
                return -EINVAL;
            }
            label = 0;
        } else if (isalnum((unsigned char)item[i]) || item[i] == '-' || item[i] == '_') {
            if (++label > 63) {
                config_err(err, cap, "invalid domain name \"%.80s\": label longer than 63", item);
                return -EINVAL;
            }
        } else {
            config_err(err, cap, "invalid domain name \"%.80s\": only A-Z a-z 0-9 - _ and dots",
                       item);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < l->n; i++) {
        if (strcasecmp(l->v[i], item) == 0) {
            config_err(err, cap, "domain \"%.80s\" listed twice", item);
            return -EINVAL;
        }
    }
    return str_list_push(l, item, err, cap);
}

/* One admin_users item: a certificate CN, as tls_peer_info prints it (no control bytes). */
static int admin_user_add(void *ctx, const char *item, char *err, size_t cap)
{
    struct str_list *l = ctx;
    size_t n = strlen(item);

    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)item[i] < 0x20 || item[i] == 0x7f) {
            config_err(err, cap, "invalid CN \"%.80s\": control character", item);
            return -EINVAL;
        }
    }
    if (n > ACCESS_ADMIN_CN_MAX) {
        config_err(err, cap, "CN \"%.80s...\" longer than %d bytes", item, ACCESS_ADMIN_CN_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], item) == 0) {
            config_err(err, cap, "CN \"%.80s\" listed twice", item);
            return -EINVAL;
        }
    }
    if (l->n == ACCESS_ADMIN_USERS_MAX) {
        config_err(err, cap, "too many admin users (max %d)", ACCESS_ADMIN_USERS_MAX);
        return -EINVAL;
    }
    return str_list_push(l, item, err, cap);
}

int access_relay_key(struct relay_config *c, const char *key, const char *value, char *err,
                     size_t cap)
{
    if (strcmp(key, "sni_domains") == 0)
        return str_list_set(&c->sni_domains, &c->nsni_domains, value, domain_add, err, cap);
    if (strcmp(key, "allow") == 0)
        return set_allow(&c->allow, value, err, cap);
    if (strcmp(key, "tls_ciphers") == 0)
        return set_policy(&c->tls_ciphers, value, tls_check_ciphers, err, cap);
    if (strcmp(key, "tls_ciphersuites") == 0)
        return set_policy(&c->tls_ciphersuites, value, tls_check_ciphersuites, err, cap);
    if (strcmp(key, "tls_groups") == 0)
        return set_policy(&c->tls_groups, value, tls_check_groups, err, cap);
    if (strcmp(key, "tunnel_ciphersuites") == 0)
        return set_policy(&c->tunnel_ciphersuites, value, tls_check_ciphersuites, err, cap);
    if (strcmp(key, "tunnel_groups") == 0)
        return set_policy(&c->tunnel_groups, value, tls_check_groups, err, cap);
    if (strcmp(key, "admin_users") == 0)
        return str_list_set(&c->admin_users, &c->nadmin_users, value, admin_user_add, err, cap);
    if (strcmp(key, "admin_ca") == 0)
        return config_set_optional(&c->admin_ca, value);
    if (strcmp(key, "admin_crl") == 0)
        return config_set_optional(&c->admin_crl, value);
    return -ENOENT;
}

int access_route_key(struct relay_route *r, const char *key, const char *value, char *err,
                     size_t cap)
{
    if (strcmp(key, "client_cert") == 0) {
        if (strcmp(value, "none") == 0 || value[0] == '\0')
            r->client_cert = RELAY_CERT_NONE;
        else if (strcmp(value, "verify") == 0)
            r->client_cert = RELAY_CERT_VERIFY;
        else if (strcmp(value, "verify-user") == 0)
            r->client_cert = RELAY_CERT_VERIFY_USER;
        else {
            config_err(err, cap, "expected none, verify or verify-user, got \"%.80s\"", value);
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "client_ca") == 0)
        return config_set_optional(&r->client_ca, value);
    if (strcmp(key, "client_crl") == 0)
        return config_set_optional(&r->client_crl, value);
    if (strcmp(key, "ident_map") == 0)
        return config_set_optional(&r->ident_map, value);
    if (strcmp(key, "allow") == 0)
        return set_allow(&r->allow, value, err, cap);
    return -ENOENT;
}

/* The admin console's keys: a CA with the users, nothing without them, and the database name
 * it answers to is no route's name. */
static int access_admin_check(const struct relay_config *c, char *err, size_t cap)
{
    if (c->nadmin_users == 0) {
        if (c->admin_ca || c->admin_crl) {
            config_err(err, cap,
                       "[relay] admin_ca/admin_crl are set but admin_users is empty: list the "
                       "admins' certificate CNs in admin_users (or remove them)");
            return -EINVAL;
        }
        return 0;
    }
    if (!c->admin_ca) {
        config_err(err, cap, "[relay] admin_ca: required when admin_users is set");
        return -EINVAL;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        if (strcmp(c->routes[i].name, ACCESS_ADMIN_DATABASE) != 0)
            continue;
        config_err(err, cap,
                   "[route %s]: a route may not be named \"%s\" while the admin console is on "
                   "(admin_users): rename the route",
                   ACCESS_ADMIN_DATABASE, ACCESS_ADMIN_DATABASE);
        return -EINVAL;
    }
    return 0;
}

int access_config_check(const struct relay_config *c, char *err, size_t cap)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct relay_route *r = &c->routes[i];

        if (r->client_cert == RELAY_CERT_NONE && (r->client_ca || r->client_crl)) {
            config_err(err, cap,
                       "[route %s] client_ca/client_crl are set but client_cert = none: set "
                       "client_cert = verify or verify-user (or remove them)",
                       r->name);
            return -EINVAL;
        }
        if (r->client_cert != RELAY_CERT_NONE && !r->client_ca) {
            config_err(err, cap, "[route %s] client_ca: required when client_cert = %s", r->name,
                       r->client_cert == RELAY_CERT_VERIFY ? "verify" : "verify-user");
            return -EINVAL;
        }
        if (r->ident_map && r->client_cert != RELAY_CERT_VERIFY_USER) {
            config_err(err, cap, "[route %s] ident_map: only used with client_cert = verify-user",
                       r->name);
            return -EINVAL;
        }
    }
    return access_admin_check(c, err, cap);
}

void access_config_free(struct relay_config *c)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        struct relay_route *r = &c->routes[i];

        free(r->client_ca);
        free(r->client_crl);
        free(r->ident_map);
        cidr_list_free(&r->allow);
        r->client_ca = r->client_crl = r->ident_map = NULL;
    }
    str_list_free(c->sni_domains, c->nsni_domains);
    c->sni_domains = NULL;
    c->nsni_domains = 0;
    cidr_list_free(&c->allow);
    str_list_free(c->admin_users, c->nadmin_users);
    c->admin_users = NULL;
    c->nadmin_users = 0;
    free(c->admin_ca);
    free(c->admin_crl);
    c->admin_ca = c->admin_crl = NULL;
    free(c->tls_ciphers);
    free(c->tls_ciphersuites);
    free(c->tls_groups);
    free(c->tunnel_ciphersuites);
    free(c->tunnel_groups);
    c->tls_ciphers = c->tls_ciphersuites = c->tls_groups = NULL;
    c->tunnel_ciphersuites = c->tunnel_groups = NULL;
}

void access_client_tls_opts(const struct relay_config *c, struct tls_server_opts *o,
                            const char **files)
{
    size_t n = 0;

    o->ciphers = c->tls_ciphers;
    o->ciphersuites = c->tls_ciphersuites;
    o->groups = c->tls_groups;
    for (size_t i = 0; i < c->nroutes && n < RELAY_MAX_ROUTES; i++) {
        const char *ca = c->routes[i].client_ca;
        bool dup = false;

        if (c->routes[i].client_cert == RELAY_CERT_NONE || !ca)
            continue;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(files[k], ca) == 0;
        if (!dup)
            files[n++] = ca;
    }
    if (c->nadmin_users && c->admin_ca) {
        bool dup = false;

        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(files[k], c->admin_ca) == 0;
        if (!dup)
            files[n++] = c->admin_ca;
    }
    o->request_cert_ca_files = n ? files : NULL;
    o->nrequest_cert_ca_files = n;
}

void access_tunnel_tls_opts(const struct relay_config *c, struct tls_server_opts *o)
{
    o->ciphersuites = c->tunnel_ciphersuites;
    o->groups = c->tunnel_groups;
}

/* ---- ident maps ---------------------------------------------------------------------------- */

/* Next field of a line: bare (up to a blank or '#') or double-quoted. 1 with the field copied
 * into out[cap], 0 at the end of the line (or a comment), -EINVAL when malformed. */
static int ident_field(const char **pp, char *out, size_t cap)
{
    const char *p = *pp;
    size_t n = 0;

    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    if (*p == '\0' || *p == '\n' || *p == '#') {
        *pp = p;
        return 0;
    }
    if (*p == '"') {
        for (p++;; p++) {
            if (*p == '\0' || *p == '\n')
                return -EINVAL; /* unterminated */
            if (*p == '"' && p[1] == '"')
                p++;
            else if (*p == '"')
                break;
            if (n + 1 >= cap)
                return -EINVAL;
            out[n++] = *p;
        }
        p++;
        if (n == 0 ||
            (*p != '\0' && *p != '\n' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#'))
            return -EINVAL;
    } else {
        while (*p && *p != '\n' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#') {
            if (n + 1 >= cap)
                return -EINVAL;
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    *pp = p;
    return 1;
}

int access_ident_parse(const char *text, struct access_ident_map *m, char *err, size_t cap)
{
    struct access_ident_map l = {0, NULL};
    char cn[256], user[256], extra[8];
    const char *p = text;
    int line = 0, rc = 0;

    while (*p) {
        line++;
        const char *start = p;
        int a = ident_field(&p, cn, sizeof(cn));
        int b = a == 1 ? ident_field(&p, user, sizeof(user)) : 0;
        int c = b == 1 ? ident_field(&p, extra, sizeof(extra)) : 0;

        if (a < 0 || b < 0 || (a == 1 && b == 0) || c != 0) {
            int len = (int)strcspn(start, "\r\n");

            config_err(err, cap,
                       "line %d: expected CERT_CN PG_USER (two fields, \"quoted\" when they "
                       "hold blanks), got \"%.*s\"",
                       line, len > 60 ? 60 : len, start);
            rc = -EINVAL;
            goto out;
        }
        if (a == 1) {
            struct access_ident *v = realloc(l.v, (l.n + 1) * sizeof(*v));
            if (!v) {
                rc = -ENOMEM;
                goto nomem;
            }
            l.v = v;
            v[l.n].cn = strdup(cn);
            v[l.n].user = strdup(user);
            l.n++;
            if (!v[l.n - 1].cn || !v[l.n - 1].user) {
                rc = -ENOMEM;
                goto nomem;
            }
        }
        /* skip the comment, if any, and the newline */
        while (*p && *p != '\n')
            p++;
        if (*p == '\n')
            p++;
    }
    access_ident_free(m);
    *m = l;
    l.v = NULL;
    l.n = 0;
    goto out;
nomem:
    config_err(err, cap, "out of memory");
out:
    access_ident_free(&l);
    return rc;
}

bool access_ident_allows(const struct access_ident_map *m, const char *cn, const char *user)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->v[i].cn, cn) == 0 && strcmp(m->v[i].user, user) == 0)
            return true;
    }
    return false;
}

void access_ident_free(struct access_ident_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].cn);
        free(m->v[i].user);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

/* ---- run time ------------------------------------------------------------------------------ */

/* Read a whole (small) file; start-up or reload only. */
static char *read_text_file(const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t n;

    if (!f) {
        config_err(err, cap, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    if (!(buf = malloc(ACCESS_IDENT_FILE_MAX + 1))) {
        config_err(err, cap, "out of memory");
        goto out;
    }
    n = fread(buf, 1, ACCESS_IDENT_FILE_MAX + 1, f);
    if (ferror(f) || n > ACCESS_IDENT_FILE_MAX) {
        config_err(err, cap, "cannot read \"%s\": %s", path,
                   ferror(f) ? "read error" : "larger than 1 MiB");
        free(buf);
        buf = NULL;
        goto out;
    }
    if (memchr(buf, '\0', n)) {
        config_err(err, cap, "\"%s\" is not a text file (NUL byte)", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = '\0';
out:
    fclose(f);
    return buf;
}

struct access *access_new(const struct relay_config *c, char *err, size_t cap)
{
    struct access *a = calloc(1, sizeof(*a));
    char terr[PGB_ERR_MAX], why[PGB_ERR_MAX];

    if (!a || (c->nroutes && !(a->routes = calloc(c->nroutes, sizeof(*a->routes))))) {
        config_err(err, cap, "out of memory");
        goto fail;
    }
    a->nroutes = c->nroutes;
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct relay_route *r = &c->routes[i];
        struct access_route *ar = &a->routes[i];

        memcpy(ar->name, r->name, sizeof(ar->name));
        if (r->client_cert == RELAY_CERT_NONE)
            continue;
        if (!(ar->store = tls_store_new(r->client_ca, r->client_crl, terr, sizeof(terr)))) {
            config_err(err, cap, "[route %s] client_ca/client_crl: %s", r->name, terr);
            goto fail;
        }
        if (r->ident_map) {
            char *text = read_text_file(r->ident_map, why, sizeof(why));
            bool was_read = text != NULL;
            int rc = was_read ? access_ident_parse(text, &ar->map, why, sizeof(why)) : -EIO;

            free(text);
            if (rc < 0) {
                config_err(err, cap, "[route %s] ident_map: %s%s%s", r->name,
                           was_read ? r->ident_map : "", was_read ? ": " : "", why);
                goto fail;
            }
            ar->has_map = true;
        }
    }
    if (c->nadmin_users &&
        !(a->admin_store = tls_store_new(c->admin_ca, c->admin_crl, terr, sizeof(terr)))) {
        config_err(err, cap, "[relay] admin_ca/admin_crl: %s", terr);
        goto fail;
    }
    return a;
fail:
    access_free(a);
    return NULL;
}

void access_free(struct access *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nroutes; i++) {
        X509_STORE_free(a->routes[i].store);
        access_ident_free(&a->routes[i].map);
    }
    free(a->routes);
    X509_STORE_free(a->admin_store);
    free(a);
}

bool access_address_allowed(const struct cidr_list *l, const char *peer)
{
    uint8_t addr[16];

    if (l->n == 0)
        return true;
    return cidr_addr_parse(peer, addr) == 0 && cidr_list_match(l, addr);
}

static const struct access_route *access_route_find(const struct access *a, const char *name)
{
    for (size_t i = 0; i < a->nroutes; i++) {
        if (strcmp(a->routes[i].name, name) == 0)
            return &a->routes[i];
    }
    return NULL;
}

/* PostgreSQL cuts a startup user name to NAMEDATALEN - 1 (63) bytes before it looks the role
 * up and before its own `cert` method compares it with the CN (ProcessStartupPacket): compare
 * the name of the role PostgreSQL will log in, not the bytes the client sent. */
static void access_pg_role_name(const char *user, char out[ACCESS_PG_NAME_MAX + 1])
{
    size_t n = strlen(user);

    if (n > ACCESS_PG_NAME_MAX)
        n = ACCESS_PG_NAME_MAX;
    memcpy(out, user, n);
    out[n] = '\0';
}

/* The client certificate rule of ar for leaf (and the chain the client sent). */
static int access_check_cert(const struct access_route *ar, const struct relay_route *route,
                             X509 *leaf, STACK_OF(X509) * chain, const char *user,
                             struct tls_peer_info *info, char *msg, size_t cap)
{
    char why[PGB_ERR_MAX], role[ACCESS_PG_NAME_MAX + 1];

    if (tls_verify_client_cert(leaf, chain, ar->store, info, why, sizeof(why)) < 0) {
        snprintf(msg, cap, "pgburrow: route \"%s\": certificate verify failed: %s", route->name,
                 why);
        memset(info, 0, sizeof(*info));
        return -EACCES;
    }
    if (info->agent_mark) {
        /* an agent's key must never open sessions as a client, even from a shared CA */
        snprintf(msg, cap,
                 "pgburrow: route \"%s\": an agent certificate (URI %sNAME) is not a client "
                 "certificate",
                 route->name, TLS_AGENT_URI_SCHEME);
        return -EACCES;
    }
    if (route->client_cert == RELAY_CERT_VERIFY_USER) {
        bool ok;

        access_pg_role_name(user, role);
        ok = ar->has_map ? access_ident_allows(&ar->map, info->cn, role)
                         : strcmp(info->cn, role) == 0;
        if (!ok) {
            snprintf(msg, cap, "pgburrow: route \"%s\": certificate CN \"%s\" %s user \"%s\"",
                     route->name, info->cn,
                     ar->has_map ? "is not mapped (ident_map) to" : "does not match", role);
            return -EACCES;
        }
    }
    return 0;
}

int access_check_session(const struct access *a, const struct relay_route *route,
                         const struct conn *conn, const char *peer, const char *user,
                         struct tls_peer_info *info, char *msg, size_t cap)
{
    const struct access_route *ar;
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    int rc;

    memset(info, 0, sizeof(*info));
    if (!access_address_allowed(&route->allow, peer)) {
        snprintf(msg, cap, "pgburrow: address not allowed for route \"%s\"", route->name);
        return -EACCES;
    }
    if (route->client_cert == RELAY_CERT_NONE)
        return 0;
    ar = access_route_find(a, route->name);
    if (!ar || !ar->store) {
        /* a route added by a reload whose certificate store was not built: fail closed */
        snprintf(msg, cap, "pgburrow: route \"%s\" cannot verify client certificates", route->name);
        return -EACCES;
    }
    rc = conn_tls_peer_chain(conn, &leaf, &chain);
    if (rc == -ENOENT) {
        snprintf(msg, cap, "pgburrow: route \"%s\" requires a client certificate", route->name);
        return -EACCES;
    }
    if (rc < 0) {
        snprintf(msg, cap, "pgburrow: out of memory");
        return -EACCES;
    }
    rc = access_check_cert(ar, route, leaf, chain, user, info, msg, cap);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

int access_recheck_cert(const struct access *a, const struct relay_route *route, X509 *leaf,
                        STACK_OF(X509) * chain, const char *user, struct tls_peer_info *info,
                        char *msg, size_t cap)
{
    const struct access_route *ar;

    memset(info, 0, sizeof(*info));
    if (route->client_cert == RELAY_CERT_NONE)
        return 0;
    ar = access_route_find(a, route->name);
    if (!ar || !ar->store || !leaf) {
        snprintf(msg, cap, "pgburrow: route \"%s\" cannot verify client certificates", route->name);
        return -EACCES;
    }
    return access_check_cert(ar, route, leaf, chain, user, info, msg, cap);
}

bool access_admin_requested(const struct relay_config *c, const char *database)
{
    return c->nadmin_users > 0 && database && strcmp(database, ACCESS_ADMIN_DATABASE) == 0;
}

int access_check_admin(const struct access *a, const struct relay_config *c,
                       const struct conn *conn, struct tls_peer_info *info, char *msg, size_t cap)
{
    char why[PGB_ERR_MAX];
    int rc;

    memset(info, 0, sizeof(*info));
    if (!a->admin_store) {
        snprintf(msg, cap, "pgburrow: the admin console cannot verify client certificates");
        return -EACCES;
    }
    rc = conn_tls_verify_peer(conn, a->admin_store, info, why, sizeof(why));
    if (rc == -ENOENT) {
        snprintf(msg, cap, "pgburrow: the admin console requires a client certificate");
        return -EACCES;
    }
    if (rc < 0) {
        snprintf(msg, cap, "pgburrow: admin console: certificate verify failed: %s", why);
        memset(info, 0, sizeof(*info));
        return -EACCES;
    }
    if (info->agent_mark) {
        snprintf(msg, cap,
                 "pgburrow: admin console: an agent certificate (URI %sNAME) is not a client "
                 "certificate",
                 TLS_AGENT_URI_SCHEME);
        return -EACCES;
    }
    for (size_t i = 0; i < c->nadmin_users; i++) {
        if (strcmp(c->admin_users[i], info->cn) == 0)
            return 0;
    }
    snprintf(msg, cap, "pgburrow: admin console: certificate CN \"%s\" is not in admin_users",
             info->cn);
    return -EACCES;
}
