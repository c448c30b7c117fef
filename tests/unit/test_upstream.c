/* Unit tests for agent/upstream and the [route NAME] ssl* keys of agent/agent_config. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agent_config.h"
#include "agent/upstream.h"
#include "common/config.h"

#define BASE                                                                                       \
    "--agent.relay=relay.example.com:7443", "--agent.ca=ca.crt", "--agent.cert=agent.crt",         \
        "--agent.key=agent.key"

/* Build an agent config from flags only; returns rc, the message in err. */
static int agent_flags(struct agent_config *c, char **flags, int n, char *err, size_t cap)
{
    agent_config_init(c);
    err[0] = '\0';
    return agent_config_build(c, NULL, n, flags, err, cap);
}

#define BUILD(c, err, ...)                                                                         \
    do {                                                                                           \
        char *flags_[] = {BASE, __VA_ARGS__};                                                      \
        rc = agent_flags(c, flags_, (int)(sizeof(flags_) / sizeof(flags_[0])), err, sizeof(err));  \
    } while (0)

static void test_sslmode_values(void **state)
{
    (void)state;
    struct agent_config c;
    char err[PGB_ERR_MAX];
    int rc;

    BUILD(&c, err, "--route.db.host=db.example.com");
    assert_int_equal(rc, 0);
    assert_int_equal(c.routes[0].sslmode, AGENT_SSLMODE_DISABLE);
    agent_config_free(&c);

    BUILD(&c, err, "--route.db.host=db.example.com", "--route.db.sslmode=verify-full",
          "--route.db.sslrootcert=db-ca.crt", "--route.db.sslservername=db.internal",
          "--route.db.sslcert=c.crt", "--route.db.sslkey=c.key");
    assert_int_equal(rc, 0);
    assert_int_equal(c.routes[0].sslmode, AGENT_SSLMODE_VERIFY_FULL);
    assert_string_equal(c.routes[0].sslrootcert, "db-ca.crt");
    assert_string_equal(c.routes[0].sslservername, "db.internal");
    assert_string_equal(agent_sslmode_name(c.routes[0].sslmode), "verify-full");
    agent_config_free(&c);

    BUILD(&c, err, "--route.db.host=10.0.0.5", "--route.db.sslmode=require");
    assert_int_equal(rc, 0);
    assert_int_equal(c.routes[0].sslmode, AGENT_SSLMODE_REQUIRE);
    agent_config_free(&c);

    BUILD(&c, err, "--route.db.host=db", "--route.db.sslmode=verify-ca",
          "--route.db.sslrootcert=ca.crt");
    assert_int_equal(rc, 0);
    assert_string_equal(agent_sslmode_name(c.routes[0].sslmode), "verify-ca");
    agent_config_free(&c);
}

static void expect_error(char **flags, int n, const char *want)
{
    struct agent_config c;
    char err[PGB_ERR_MAX];
    int rc = agent_flags(&c, flags, n, err, sizeof(err));

    assert_int_equal(rc, -EINVAL);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    agent_config_free(&c);
}

#define EXPECT_ERROR(want, ...)                                                                    \
    do {                                                                                           \
        char *flags_[] = {BASE, __VA_ARGS__};                                                      \
        expect_error(flags_, (int)(sizeof(flags_) / sizeof(flags_[0])), want);                     \
    } while (0)

static void test_sslmode_errors(void **state)
{
    (void)state;
    EXPECT_ERROR("expected disable, require, verify-ca or verify-full, got \"verify\"",
                 "--route.db.host=db", "--route.db.sslmode=verify");
    EXPECT_ERROR("\"prefer\" is not offered", "--route.db.host=db", "--route.db.sslmode=prefer");
    EXPECT_ERROR("[route db] sslmode: require needs a TCP host", "--route.db.sslmode=require");
    EXPECT_ERROR("[route db] sslrootcert: required with sslmode=verify-full", "--route.db.host=db",
                 "--route.db.sslmode=verify-full");
    EXPECT_ERROR("[route db] sslrootcert: required with sslmode=verify-ca", "--route.db.host=db",
                 "--route.db.sslmode=verify-ca");
    EXPECT_ERROR("[route db] sslrootcert: has no effect with sslmode=disable", "--route.db.host=db",
                 "--route.db.sslrootcert=ca.crt");
    EXPECT_ERROR("[route db] sslkey: sslcert and sslkey go together", "--route.db.host=db",
                 "--route.db.sslmode=require", "--route.db.sslcert=c.crt");
    EXPECT_ERROR("[route db] sslservername: only verify-full checks a name", "--route.db.host=db",
                 "--route.db.sslmode=verify-ca", "--route.db.sslrootcert=ca.crt",
                 "--route.db.sslservername=x");
}

static void test_build_contexts(void **state)
{
    (void)state;
    struct agent_config c;
    char err[PGB_ERR_MAX];
    int rc;

    /* require without a CA: a context that verifies nothing */
    BUILD(&c, err, "--route.a.host=db", "--route.a.sslmode=require", "--route.b.host=/tmp");
    assert_int_equal(rc, 0);
    assert_int_equal(upstream_build_contexts(&c, err, sizeof(err)), 0);
    assert_non_null(c.routes[0].ssl_ctx);
    assert_int_equal(SSL_CTX_get_verify_mode(c.routes[0].ssl_ctx), SSL_VERIFY_NONE);
    assert_null(c.routes[1].ssl_ctx); /* disable: none */

    struct upstream_tls u;
    upstream_tls_init(&u, &c.routes[0]);
    assert_true(upstream_tls_enabled(&u));
    assert_string_equal(u.server_name, "db"); /* sent as SNI ... */
    assert_false(u.verify_name);              /* ... but require checks no name */
    agent_config_free(&c);                    /* the session's reference keeps the context alive */
    assert_int_equal(SSL_CTX_get_verify_mode(u.ctx), SSL_VERIFY_NONE);
    upstream_tls_release(&u);
    upstream_tls_release(&u);

    upstream_tls_init(&u, &(struct agent_route){.host = "/tmp"});
    assert_false(upstream_tls_enabled(&u));
    upstream_tls_release(&u);

    /* a missing CA file names the route */
    BUILD(&c, err, "--route.r.host=db", "--route.r.sslmode=verify-full",
          "--route.r.sslrootcert=/nonexistent/ca.crt");
    assert_int_equal(rc, 0);
    assert_int_equal(upstream_build_contexts(&c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "[route r] upstream TLS: could not access CA file"));
    agent_config_free(&c);
}

static void test_answers(void **state)
{
    (void)state;
    struct upstream_tls u = {.mode = AGENT_SSLMODE_VERIFY_FULL, .asked = true};
    char why[256];

    assert_int_equal(
        upstream_tls_on_answer(&u, NULL, (const uint8_t *)"N", 1, "db:5432", why, sizeof(why)),
        -EPROTO);
    assert_string_equal(why,
                        "PostgreSQL at db:5432 does not support SSL (route sslmode=verify-full)");

    u.asked = true;
    assert_int_equal(
        upstream_tls_on_answer(&u, NULL, (const uint8_t *)"E", 1, "db:5432", why, sizeof(why)),
        -EPROTO);
    assert_string_equal(why, "PostgreSQL at db:5432 sent an invalid answer to the SSL request");

    /* CVE-2021-23222 class: plaintext after 'S' is never fed to TLS */
    u.asked = true;
    assert_int_equal(
        upstream_tls_on_answer(&u, NULL, (const uint8_t *)"SX", 2, "db:5432", why, sizeof(why)),
        -EPROTO);
    assert_string_equal(why, "PostgreSQL at db:5432 sent unencrypted data after the SSL response");

    /* nothing was asked: any byte is unexpected */
    assert_int_equal(
        upstream_tls_on_answer(&u, NULL, (const uint8_t *)"S", 1, "db:5432", why, sizeof(why)),
        -EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sslmode_values),
        cmocka_unit_test(test_sslmode_errors),
        cmocka_unit_test(test_build_contexts),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
