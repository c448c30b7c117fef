/*
 * access — who may open a session on the relay, and with which TLS policy.
 *
 * Configuration side: the keys sni_domains, allow, tls_ciphers, tls_ciphersuites, tls_groups,
 * tunnel_ciphersuites, tunnel_groups ([relay]) and client_cert, client_ca, client_crl,
 * ident_map, allow ([route NAME]), called from relay_config.c; their cross-key checks; and
 * the TLS server options they imply for both listeners.
 *
 * Run-time side (struct access, built from a config and then read-only): the per-route
 * certificate stores (CA + CRL) and ident maps, read from their files when built (start-up or
 * reload, never while serving), and the checks:
 *   - the global allowlist, at accept, before any TLS work (access_address_allowed);
 *   - after routing: the route's allowlist, then its client certificate rule, as PostgreSQL's
 *     `cert` method: verify = a certificate from client_ca (not revoked in client_crl),
 *     verify-user = and its CN equals the PostgreSQL user or maps to it in ident_map (the user
 *     cut to 63 bytes, as PostgreSQL names the role); an agent certificate (URI SAN
 *     pgburrow-agent:NAME) is never accepted as a client certificate.
 *   - the admin console (dbname=pgburrow when admin_users is set): a client certificate from
 *     admin_ca (not revoked in admin_crl, never an agent certificate) whose CN is listed in
 *     admin_users.
 * A struct access borrows nothing from the config it was built from.
 */
#ifndef PGB_ACCESS_H
#define PGB_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/conn.h"
#include "common/tls.h"
#include "relay/relay_config.h"
#include "common/err.h"

#define ACCESS_IDENT_FILE_MAX (1024 * 1024)
/* PostgreSQL's NAMEDATALEN - 1: the longest role name, to which it cuts a startup user name */
#define ACCESS_PG_NAME_MAX 63
/* The admin console (relay/admin.h): the database name it answers to, and its users' bounds */
#define ACCESS_ADMIN_DATABASE "pgburrow"
#define ACCESS_ADMIN_USERS_MAX 64
#define ACCESS_ADMIN_CN_MAX 255

/* -- configuration ------------------------------------------------------------------------- */

/* One [relay] or [route NAME] key; -ENOENT when the key is not one of these. */
int access_relay_key(struct relay_config *c, const char *key, const char *value, char *err,
                     size_t cap);
int access_route_key(struct relay_route *r, const char *key, const char *value, char *err,
                     size_t cap);
/* Cross-key checks (client_ca required with client_cert, ident_map only with verify-user). */
int access_config_check(const struct relay_config *c, char *err, size_t cap);
/* Frees what the keys above allocated (called by relay_config_free). */
void access_config_free(struct relay_config *c);

/* The policy fields of the client listener's TLS options; when a route or the admin console
 * wants client certificates, every client is asked for one (request_cert_ca_files = the routes'
 * CA files and admin_ca, without duplicates, in files[RELAY_MAX_ROUTES + 1], which must outlive
 * o). */
void access_client_tls_opts(const struct relay_config *c, struct tls_server_opts *o,
                            const char **files);
void access_tunnel_tls_opts(const struct relay_config *c, struct tls_server_opts *o);

/* -- ident maps (pure) ----------------------------------------------------------------------- */

struct access_ident {
    char *cn;
    char *user;
};
struct access_ident_map {
    size_t n;
    struct access_ident *v;
};
/* Parse "CERT_CN PG_USER" lines: '#' starts a comment, blank lines are skipped, a field may be
 * double-quoted ("John Smith"; "" inside is one quote). One CN may map to several users.
 * Errors name the line: "line 3: expected CERT_CN PG_USER". 0 or negative. */
int access_ident_parse(const char *text, struct access_ident_map *m, char *err, size_t cap);
bool access_ident_allows(const struct access_ident_map *m, const char *cn, const char *user);
void access_ident_free(struct access_ident_map *m);

/* -- run time -------------------------------------------------------------------------------- */

struct access;
/* Returns new (access_free), or NULL with err[cap] naming the route and file. */
struct access *access_new(const struct relay_config *c, char *err, size_t cap);
void access_free(struct access *a);

/* Is peer ("ip:port", "[v6]:port" as conn_peer_addr prints it) in l? An empty list allows
 * every address; an address that cannot be parsed is refused when l is not empty. */
bool access_address_allowed(const struct cidr_list *l, const char *peer);

/* The route-level checks once the route and user are known. Returns 0 (info filled when a
 * certificate was verified, else zeroed), or -EACCES with the client's FATAL message
 * (SQLSTATE 28000, starting "pgburrow: ") in msg[cap]. */
int access_check_session(const struct access *a, const struct relay_route *route,
                         const struct conn *conn, const char *peer, const char *user,
                         struct tls_peer_info *info, char *msg, size_t cap);
/* The route's client certificate rule again for a running session's certificate (leaf and the
 * chain its client sent, borrowed), after a reload (new CA, CRL, ident map) or at expiry.
 * 0 (info filled; zeroed when the route no longer asks for a certificate), or -EACCES with
 * the client's FATAL message in msg[cap]. */
int access_recheck_cert(const struct access *a, const struct relay_route *route, X509 *leaf,
                        STACK_OF(X509) * chain, const char *user, struct tls_peer_info *info,
                        char *msg, size_t cap);

/* Does this StartupMessage database ask for the admin console (console on, dbname=pgburrow)? */
bool access_admin_requested(const struct relay_config *c, const char *database);
/* The admin console's rule for the client's certificate (c: the config a was built from).
 * 0 (info filled), or -EACCES with the client's FATAL message (SQLSTATE 28000, starting
 * "pgburrow: ") in msg[cap]. */
int access_check_admin(const struct access *a, const struct relay_config *c,
                       const struct conn *conn, struct tls_peer_info *info, char *msg, size_t cap);

#endif
