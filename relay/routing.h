/*
 * routing — which route a client session is for.
 *
 * In order: the TLS server name (SNI) when it is LABEL.<domain> for one of the configured
 * sni_domains (route = LABEL, e.g. orders.db.example.com -> orders, with a wildcard relay
 * certificate); else the StartupMessage options: "-c pgburrow.route=NAME" or a Neon-style
 * "endpoint=NAME" word (for clients that cannot send SNI; removed before the StartupMessage
 * goes to PostgreSQL, which would refuse it); else default_route. A server name under no
 * configured domain ("localhost", or none at all when connecting by IP address) is ignored.
 * Two sources naming different routes are refused rather than one silently winning.
 * Pure code: borrows its inputs, no I/O. Whether the route exists is the caller's check.
 */
#ifndef PGB_ROUTING_H
#define PGB_ROUTING_H

#include <stdbool.h>
#include <stddef.h>

#include "common/pgwire.h"
#include "proto/proto.h"

enum routing_source { ROUTING_SNI, ROUTING_OPTIONS, ROUTING_DEFAULT };

struct routing_result {
    char route[PROTO_NAME_MAX];
    enum routing_source source;
    bool options_changed;             /* endpoint= words removed: forward options below */
    char options[PGWIRE_STARTUP_MAX]; /* the options without them ("" = drop the parameter) */
};

/*
 * Find "-c pgburrow.route=NAME" (also "-cpgburrow.route=NAME", "--pgburrow.route=NAME")
 * in an options string, honouring PostgreSQL's backslash escapes and whitespace splitting.
 * Returns 1 and copies NAME into route[cap] when found, 0 when absent, -EINVAL when the value
 * is not a valid route name (or does not fit in cap). When set several times, the last
 * setting counts, as in the server.
 */
int routing_options_route(const char *options, char *route, size_t cap);

/*
 * Find Neon-style "endpoint=NAME" words in an options string (libpq: options=endpoint%3DNAME),
 * for clients that cannot send SNI. Only words that stand alone count (not the argument of an
 * option such as "-c endpoint=x"). Returns 1 and copies NAME of the last such word into
 * route[cap], 0 when there is none, -EINVAL when a value is not a valid route name.
 * rest[restcap] receives the options without those words (the other words unchanged, one
 * blank apart), for PostgreSQL, which would refuse them; restcap > strlen(options) always
 * suffices (-ENOSPC otherwise).
 */
int routing_options_endpoint(const char *options, char *route, size_t cap, char *rest,
                             size_t restcap);

/* 1 and LABEL in route[cap] when sni is LABEL.<domain> for one of domains (compared without
 * regard to case, as DNS does; LABEL is kept as sent); 0 when sni is NULL or under no domain;
 * -EINVAL when what precedes the domain is not a route name (e.g. "a.b" or too long). */
int routing_sni_route(const char *sni, char *const *domains, size_t ndomains, char *route,
                      size_t cap);

/* Choose the route. Returns 0 with *out filled, or -EINVAL with the client's FATAL message
 * (SQLSTATE 3D000, starting "pgburrow: ") in msg[cap]. */
int routing_choose(char *const *domains, size_t ndomains, const char *sni, const char *options,
                   const char *default_route, struct routing_result *out, char *msg, size_t cap);

#endif
