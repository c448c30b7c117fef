/* Unit tests for relay/routing (SNI, options: pgburrow.route and endpoint=, default route)
 * and the pgwire StartupMessage rebuild it relies on. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/pgwire.h"
#include "relay/routing.h"

static char *const domains[] = {"db.example.com", "pg.example.net"};

static int sni(const char *name, char *route)
{
    return routing_sni_route(name, domains, 2, route, PROTO_NAME_MAX);
}

static void test_sni_route(void **state)
{
    char route[PROTO_NAME_MAX];

    assert_int_equal(sni("orders.db.example.com", route), 1);
    assert_string_equal(route, "orders");
    assert_int_equal(sni("billing_2.pg.example.net", route), 1);
    assert_string_equal(route, "billing_2");
    /* DNS compares without regard to case; the label is kept as sent */
    assert_int_equal(sni("Orders.DB.Example.COM", route), 1);
    assert_string_equal(route, "Orders");
    /* not under a domain: ignored */
    assert_int_equal(sni("localhost", route), 0);
    assert_int_equal(sni(NULL, route), 0);
    assert_int_equal(sni("db.example.com", route), 0);
    assert_int_equal(sni(".db.example.com", route), 0);
    assert_int_equal(sni("orders.xdb.example.com", route), 0);
    assert_int_equal(sni("orders.db.example.com.evil.org", route), 0);
    assert_int_equal(routing_sni_route("orders.db.example.com", domains, 0, route, sizeof(route)),
                     0);
    /* under a domain but not a route name */
    assert_int_equal(sni("a.b.db.example.com", route), -EINVAL);
    assert_int_equal(sni("a%b.db.example.com", route), -EINVAL);
    char longname[200];
    memset(longname, 'x', 70);
    snprintf(longname + 70, sizeof(longname) - 70, ".db.example.com");
    assert_int_equal(sni(longname, route), -EINVAL);
    assert_int_equal(routing_sni_route("orders.db.example.com", domains, 2, route, 4), -EINVAL);
}

static int endpoint(const char *options, char *route, char *rest)
{
    return routing_options_endpoint(options, route, PROTO_NAME_MAX, rest, 512);
}

static void test_endpoint_parse(void **state)
{
    char route[PROTO_NAME_MAX], rest[512];

    assert_int_equal(endpoint("endpoint=orders", route, rest), 1);
    assert_string_equal(route, "orders");
    assert_string_equal(rest, "");
    assert_int_equal(endpoint("  endpoint=orders  ", route, rest), 1);
    assert_string_equal(rest, "");
    assert_int_equal(endpoint("-c search_path=x endpoint=orders -c work_mem=64MB", route, rest), 1);
    assert_string_equal(route, "orders");
    assert_string_equal(rest, "-c search_path=x -c work_mem=64MB");
    /* the last one wins; every one is removed */
    assert_int_equal(endpoint("endpoint=a endpoint=b", route, rest), 1);
    assert_string_equal(route, "b");
    assert_string_equal(rest, "");
    /* escapes: the word is unescaped before it is looked at; kept words stay escaped */
    assert_int_equal(endpoint("endpoint\\=orders -c application_name=a\\ b", route, rest), 1);
    assert_string_equal(route, "orders");
    assert_string_equal(rest, "-c application_name=a\\ b");
    /* absent */
    route[0] = '\0';
    assert_int_equal(endpoint("-c pgburrow.route=x", route, rest), 0);
    assert_string_equal(rest, "-c pgburrow.route=x");
    assert_string_equal(route, "");
    assert_int_equal(endpoint("", route, rest), 0);
    assert_int_equal(routing_options_endpoint(NULL, route, PROTO_NAME_MAX, rest, 512), 0);
    assert_string_equal(rest, "");
    assert_int_equal(endpoint("xendpoint=a endpoints=b", route, rest), 0);
    assert_string_equal(rest, "xendpoint=a endpoints=b");
    /* the argument of an option is not a word of its own */
    assert_int_equal(endpoint("-c endpoint=x", route, rest), 0);
    assert_string_equal(rest, "-c endpoint=x");
    assert_int_equal(endpoint("-cendpoint=x --endpoint=y", route, rest), 0);
    assert_int_equal(endpoint("-e -c endpoint=x endpoint=z", route, rest), 1);
    assert_string_equal(route, "z");
    assert_string_equal(rest, "-e -c endpoint=x");
    /* after "--" every word is an operand */
    assert_int_equal(endpoint("-- endpoint=z", route, rest), 1);
    assert_string_equal(rest, "--");
}

static void test_endpoint_invalid(void **state)
{
    char route[PROTO_NAME_MAX], rest[512], big[300];

    assert_int_equal(endpoint("endpoint=", route, rest), -EINVAL);
    assert_int_equal(endpoint("endpoint=a/b", route, rest), -EINVAL);
    assert_int_equal(endpoint("endpoint=ok endpoint=b@d", route, rest), -EINVAL);
    assert_int_equal(endpoint("endpoint=b@d endpoint=ok", route, rest), -EINVAL);
    snprintf(big, sizeof(big), "endpoint=");
    memset(big + 9, 'a', 200);
    big[209] = '\0';
    assert_int_equal(endpoint(big, route, rest), -EINVAL);
    assert_int_equal(routing_options_endpoint("endpoint=abcdef", route, 4, rest, 512), -EINVAL);
    /* rest too small */
    assert_int_equal(routing_options_endpoint("-c a=b endpoint=x", route, PROTO_NAME_MAX, rest, 4),
                     -ENOSPC);
    assert_int_equal(routing_options_endpoint("x", route, PROTO_NAME_MAX, rest, 0), -ENOSPC);
}

/* A StartupMessage from name/value pairs (kv ends with NULL). */
static size_t startup(uint8_t *buf, size_t cap, const char *const *kv)
{
    size_t n = 8;
    for (; *kv; kv++) {
        size_t l = strlen(*kv) + 1;
        assert_true(n + l < cap);
        memcpy(buf + n, *kv, l);
        n += l;
    }
    buf[n++] = '\0';
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    buf[4] = 0, buf[5] = 3, buf[6] = 0, buf[7] = 0;
    return n;
}

static void test_startup_rebuild(void **state)
{
    const char *kv[] = {"user",     "alice", "options",          "endpoint=orders -c work_mem=1MB",
                        "database", "app",   "application_name", "psql",
                        NULL};
    uint8_t in[512], out[512];
    size_t n = startup(in, sizeof(in), kv);
    struct pgwire_startup su, again;
    char err[PGB_ERR_MAX];
    int m;

    assert_int_equal(pgwire_startup_parse(in, n, &su, err, sizeof(err)), 0);
    m = pgwire_startup_with_options(&su, "-c work_mem=1MB", out, sizeof(out));
    assert_true(m > 0 && (size_t)m < n);
    assert_int_equal(pgwire_startup_parse(out, (size_t)m, &again, err, sizeof(err)), 0);
    assert_string_equal(again.user, "alice");
    assert_string_equal(again.options, "-c work_mem=1MB");
    assert_string_equal(again.database, "app");
    assert_string_equal(again.application_name, "psql");
    assert_int_equal(again.nparams, 4);
    assert_string_equal(again.names[1], "options"); /* order kept */
    assert_int_equal(again.protocol, 0x00030000);

    /* an empty result drops the parameter */
    m = pgwire_startup_with_options(&su, "", out, sizeof(out));
    assert_true(m > 0);
    assert_int_equal(pgwire_startup_parse(out, (size_t)m, &again, err, sizeof(err)), 0);
    assert_null(again.options);
    assert_int_equal(again.nparams, 3);
    m = pgwire_startup_with_options(&su, NULL, out, sizeof(out));
    assert_int_equal(pgwire_startup_parse(out, (size_t)m, &again, err, sizeof(err)), 0);
    assert_null(again.options);
    /* too small */
    assert_int_equal(pgwire_startup_with_options(&su, "", out, 20), -ENOSPC);
}

static void test_startup_rebuild_duplicates(void **state)
{
    /* the server uses the last "options"; earlier ones go */
    const char *kv[] = {"options", "endpoint=a", "user", "u", "options", "endpoint=b", NULL};
    uint8_t in[256], out[256];
    size_t n = startup(in, sizeof(in), kv);
    struct pgwire_startup su, again;
    char err[PGB_ERR_MAX];

    assert_int_equal(pgwire_startup_parse(in, n, &su, err, sizeof(err)), 0);
    int m = pgwire_startup_with_options(&su, "", out, sizeof(out));
    assert_true(m > 0);
    assert_int_equal(pgwire_startup_parse(out, (size_t)m, &again, err, sizeof(err)), 0);
    assert_int_equal(again.nparams, 1);
    assert_string_equal(again.user, "u");
}

static int choose(const char *sni_name, const char *options, const char *def,
                  struct routing_result *r, char *msg, size_t cap)
{
    return routing_choose(domains, 2, sni_name, options, def, r, msg, cap);
}

static void test_choose(void **state)
{
    static struct routing_result r;
    char msg[PGB_ERR_MAX];

    assert_int_equal(choose("orders.db.example.com", NULL, "main", &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "orders");
    assert_int_equal(r.source, ROUTING_SNI);
    assert_false(r.options_changed);

    /* SNI outside the domains is ignored */
    assert_int_equal(choose("localhost", "-c pgburrow.route=b", "main", &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "b");
    assert_int_equal(r.source, ROUTING_OPTIONS);
    assert_false(r.options_changed);

    assert_int_equal(choose(NULL, "endpoint=c -c x.y=1", "main", &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "c");
    assert_int_equal(r.source, ROUTING_OPTIONS);
    assert_true(r.options_changed);
    assert_string_equal(r.options, "-c x.y=1");

    assert_int_equal(choose(NULL, "-c x.y=1", "main", &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "main");
    assert_int_equal(r.source, ROUTING_DEFAULT);
    assert_int_equal(choose(NULL, NULL, "main", &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "main");

    /* endpoint= is removed even when SNI chose the route (same route) */
    assert_int_equal(choose("orders.db.example.com", "endpoint=orders", NULL, &r, msg, sizeof(msg)),
                     0);
    assert_string_equal(r.route, "orders");
    assert_true(r.options_changed);
    assert_string_equal(r.options, "");

    /* both options forms naming the same route are fine */
    assert_int_equal(choose(NULL, "endpoint=d -c pgburrow.route=d", NULL, &r, msg, sizeof(msg)), 0);
    assert_string_equal(r.route, "d");
}

static void test_choose_errors(void **state)
{
    static struct routing_result r;
    char msg[PGB_ERR_MAX];

    assert_int_equal(choose(NULL, NULL, NULL, &r, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "pgburrow: no route given and no default_route");
    assert_int_equal(choose(NULL, "", "", &r, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(choose("a.b.db.example.com", NULL, "main", &r, msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "server name \"a.b.db.example.com\" does not name a route"));
    assert_int_equal(choose(NULL, "-c pgburrow.route=a/b", "main", &r, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "pgburrow: invalid route name in options");
    assert_int_equal(choose(NULL, "endpoint=a/b", "main", &r, msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "invalid route name in options"));
    assert_int_equal(choose(NULL, "endpoint=x -c pgburrow.route=y", "main", &r, msg, sizeof(msg)),
                     -EINVAL);
    assert_non_null(strstr(msg, "options name two routes"));
    assert_int_equal(
        choose("orders.db.example.com", "-c pgburrow.route=y", NULL, &r, msg, sizeof(msg)),
        -EINVAL);
    assert_non_null(strstr(msg, "the server name names route \"orders\""));
    assert_int_equal(strncmp(msg, "pgburrow: ", 10), 0);
}

/* ---- options ------------------------------------------------------------------------------ */

static int route_of(const char *options, char *route)
{
    memset(route, 0, PROTO_NAME_MAX);
    return routing_options_route(options, route, PROTO_NAME_MAX);
}

static void test_options_forms(void **state)
{
    char r[PROTO_NAME_MAX];
    assert_int_equal(route_of("-c pgburrow.route=db1", r), 1);
    assert_string_equal(r, "db1");
    assert_int_equal(route_of("-cpgburrow.route=db2", r), 1);
    assert_string_equal(r, "db2");
    assert_int_equal(route_of("--pgburrow.route=db3", r), 1);
    assert_string_equal(r, "db3");
    assert_int_equal(route_of(" \t-c\n  pgburrow.route=db.4-x_y  ", r), 1);
    assert_string_equal(r, "db.4-x_y");
    /* GUC names are case-insensitive in PostgreSQL. */
    assert_int_equal(route_of("-c PGBURROW.Route=db5", r), 1);
    assert_string_equal(r, "db5");
    assert_int_equal(
        route_of("-c search_path=app -c pgburrow.route=shop --statement_timeout=5s", r), 1);
    assert_string_equal(r, "shop");
}

static void test_options_absent(void **state)
{
    char r[PROTO_NAME_MAX];
    assert_int_equal(routing_options_route(NULL, r, sizeof(r)), 0);
    assert_int_equal(route_of("", r), 0);
    assert_int_equal(route_of("   ", r), 0);
    assert_int_equal(route_of("-c search_path=x", r), 0);
    assert_int_equal(route_of("pgburrow.route=x", r), 0);     /* not an option */
    assert_int_equal(route_of("-c pgburrow.routex=a", r), 0); /* another GUC */
    assert_int_equal(route_of("-c xpgburrow.route=a", r), 0);
    assert_int_equal(route_of("-c", r), 0);                     /* missing argument */
    assert_int_equal(route_of("-- -c pgburrow.route=a", r), 0); /* "--" ends options */
    /* -c takes the next word whatever it is, so the route word is a stray argument. */
    assert_int_equal(route_of("-c application_name=-c pgburrow.route=x", r), 0);
    assert_int_equal(route_of("-c -cpgburrow.route=x", r), 0);
    assert_string_equal(r, "");
}

static void test_options_getopt_clusters(void **state)
{
    char r[PROTO_NAME_MAX];
    /* -e takes no argument, so c follows in the same cluster. */
    assert_int_equal(route_of("-ec pgburrow.route=a", r), 1);
    assert_string_equal(r, "a");
    /* -B takes an argument ("c"), so the next word is not -c's. */
    assert_int_equal(route_of("-Bc pgburrow.route=a", r), 0);
    assert_int_equal(route_of("-e-pgburrow.route=b", r), 1);
    assert_string_equal(r, "b");
}

static void test_options_escapes(void **state)
{
    char r[PROTO_NAME_MAX];
    /* "-c\ pgburrow.route=x" is one word "-c pgburrow.route=x": the server sets a GUC named
     * " pgburrow.route" (and fails), so no route is given. */
    assert_int_equal(route_of("-c\\ pgburrow.route=x", r), 0);
    assert_int_equal(route_of("-c pgburrow.route=ab\\c", r), 1);
    assert_string_equal(r, "abc");
    assert_int_equal(route_of("-c pgburrow.route=a\\ b", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route=a\\\\b", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route=ab\\", r), 1); /* trailing lone backslash */
    assert_string_equal(r, "ab");
    assert_int_equal(route_of("-c\\\tpgburrow.route=x -c pgburrow.route=y", r), 1);
    assert_string_equal(r, "y");
}

static void test_options_invalid_names(void **state)
{
    char r[PROTO_NAME_MAX];
    char opt[200];
    assert_int_equal(route_of("-c pgburrow.route=", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route=bad/name", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route=a=b", r), -EINVAL);
    snprintf(opt, sizeof(opt), "-c pgburrow.route=%0*d", PROTO_NAME_MAX - 1, 7);
    assert_int_equal(route_of(opt, r), 1);
    assert_int_equal(strlen(r), PROTO_NAME_MAX - 1);
    snprintf(opt, sizeof(opt), "-c pgburrow.route=%0*d", PROTO_NAME_MAX, 7);
    assert_int_equal(route_of(opt, r), -EINVAL);
    /* Later settings win, as in the server. */
    assert_int_equal(route_of("-c pgburrow.route=ok -c pgburrow.route=b@d", r), -EINVAL);
    assert_int_equal(route_of("-c pgburrow.route=b@d -c pgburrow.route=ok", r), 1);
    assert_string_equal(r, "ok");
    /* The caller's buffer must hold the name. */
    assert_int_equal(routing_options_route("-c pgburrow.route=abcd", r, 4), -EINVAL);
    assert_int_equal(routing_options_route("-c pgburrow.route=abc", r, 4), 1);
}

/* ---- ErrorResponse ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_route),       cmocka_unit_test(test_options_forms),
        cmocka_unit_test(test_options_absent),  cmocka_unit_test(test_options_getopt_clusters),
        cmocka_unit_test(test_options_escapes), cmocka_unit_test(test_options_invalid_names),
        cmocka_unit_test(test_endpoint_parse),  cmocka_unit_test(test_endpoint_invalid),
        cmocka_unit_test(test_startup_rebuild), cmocka_unit_test(test_startup_rebuild_duplicates),
        cmocka_unit_test(test_choose),          cmocka_unit_test(test_choose_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
