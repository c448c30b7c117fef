/* Unit tests for relay/access: its configuration keys, ident maps, address checks, and the
 * TLS policy validators of common/tls it relies on. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/tls.h"
#include "relay/access.h"
#include "relay/relay_config.h"

#define RELAY_BASE                                                                                 \
    "[relay]\n"                                                                                    \
    "tls_cert = /etc/pgburrow/relay.crt\n"                                                         \
    "tls_key = /etc/pgburrow/relay.key\n"                                                          \
    "agent_ca = /etc/pgburrow/ca.crt\n"

/* Build a relay config from an INI text; the file is removed again. */
static int relay_from(struct relay_config *c, const char *text, char *err, size_t cap)
{
    char path[] = "/tmp/pgburrow-access-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
    relay_config_init(c);
    int rc = relay_config_build(c, path, 0, NULL, err, cap);
    unlink(path);
    /* the path is in the message: keep only what follows it */
    char *p = strstr(err, path);
    if (rc < 0 && p)
        memmove(err, p + strlen(path), strlen(p + strlen(path)) + 1);
    return rc;
}

static void test_relay_keys(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX] = "";

    assert_int_equal(relay_from(&c,
                                RELAY_BASE
                                "sni_domains = db.example.com, PG.example.net\n"
                                "allow = 10.0.0.0/8, ::1\n"
                                "tls_ciphers = ECDHE+AESGCM:!aNULL\n"
                                "tls_ciphersuites = TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n"
                                "tls_groups = X25519:P-256\n"
                                "tunnel_ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n"
                                "tunnel_groups = P-384\n"
                                "[route a]\nagents = x\n",
                                err, sizeof(err)),
                     0);
    assert_int_equal(c.nsni_domains, 2);
    assert_string_equal(c.sni_domains[1], "PG.example.net");
    assert_int_equal(c.allow.n, 2);
    assert_string_equal(c.tls_ciphers, "ECDHE+AESGCM:!aNULL");
    assert_string_equal(c.tunnel_groups, "P-384");
    assert_true(access_address_allowed(&c.allow, "10.9.8.7:5555"));
    assert_true(access_address_allowed(&c.allow, "[::ffff:10.9.8.7]:5555"));
    assert_true(access_address_allowed(&c.allow, "[::1]:5555"));
    assert_false(access_address_allowed(&c.allow, "127.0.0.1:5555"));
    assert_false(access_address_allowed(&c.allow, "garbage"));
    relay_config_free(&c);

    /* empty values mean "not set" */
    assert_int_equal(relay_from(&c,
                                RELAY_BASE "sni_domains =\nallow =\ntls_ciphers =\n"
                                           "[route a]\nagents = x\n",
                                err, sizeof(err)),
                     0);
    assert_int_equal(c.nsni_domains, 0);
    assert_int_equal(c.allow.n, 0);
    assert_null(c.tls_ciphers);
    assert_true(access_address_allowed(&c.allow, "127.0.0.1:5555"));
    assert_true(access_address_allowed(&c.allow, "garbage"));
    relay_config_free(&c);
}

static void test_relay_key_errors(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX];
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"sni_domains = *.db.example.com", "write the domain without \"*.\""},
        {"sni_domains = db..example.com", "empty label"},
        {"sni_domains = db.example.com.", "invalid domain name"},
        {"sni_domains = db/example", "only A-Z a-z 0-9"},
        {"sni_domains = a.com, A.COM", "listed twice"},
        {"allow = 10.0.0.0/33", "prefix length must be 0 to 32"},
        {"allow = 10.1.0.0/8", "bits are set after the /8 prefix"},
        {"allow = 10.0.0.0/8,", "empty item"},
        {"tls_ciphers = BOGUS", "TLS 1.2 cipher list \"BOGUS\" not accepted"},
        {"tls_ciphers = TLS_AES_128_GCM_SHA256", "not accepted"},
        {"tls_ciphersuites = TLS_BOGUS", "unknown TLS 1.3 cipher suite \"TLS_BOGUS\""},
        {"tls_ciphersuites = TLS_AES_128_GCM_SHA256:TLS_TYPO",
         "unknown TLS 1.3 cipher suite \"TLS_TYPO\""},
        {"tls_ciphersuites = ECDHE-RSA-AES128-GCM-SHA256", "unknown TLS 1.3 cipher suite"},
        {"tunnel_ciphersuites = TLS_AES_128_GCM_SHA256:", "invalid TLS 1.3 cipher suite list"},
        {"tls_groups = X25519:bogus", "group list \"X25519:bogus\" not accepted"},
        {"tunnel_groups = nope", "group list \"nope\" not accepted"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), RELAY_BASE "%s\n[route a]\nagents = x\n", cases[i].line);
        err[0] = '\0';
        assert_int_equal(relay_from(&c, text, err, sizeof(err)), -EINVAL);
        if (!strstr(err, cases[i].msg))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].line, err, cases[i].msg);
        assert_non_null(strstr(err, ":5: [relay] ")); /* the line and key are named */
        relay_config_free(&c);
    }
}

static void test_route_keys(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX] = "";

    assert_int_equal(relay_from(&c,
                                RELAY_BASE "[route a]\nagents = x\nclient_cert = verify-user\n"
                                           "client_ca = /ca.crt\nclient_crl = /ca.crl\n"
                                           "ident_map = /ident\nallow = 192.168.0.0/16\n"
                                           "[route b]\nagents = y\nclient_cert = verify\n"
                                           "client_ca = /ca2.crt\n"
                                           "[route c]\nagents = z\n",
                                err, sizeof(err)),
                     0);
    const struct relay_route *a = relay_config_route(&c, "a"), *b = relay_config_route(&c, "b"),
                             *cc = relay_config_route(&c, "c");
    assert_int_equal(a->client_cert, RELAY_CERT_VERIFY_USER);
    assert_string_equal(a->client_ca, "/ca.crt");
    assert_string_equal(a->client_crl, "/ca.crl");
    assert_string_equal(a->ident_map, "/ident");
    assert_int_equal(a->allow.n, 1);
    assert_int_equal(b->client_cert, RELAY_CERT_VERIFY);
    assert_int_equal(cc->client_cert, RELAY_CERT_NONE);
    assert_null(cc->client_ca);

    /* the client listener asks for certificates from both CAs, once each */
    struct tls_server_opts o;
    const char *files[RELAY_MAX_ROUTES];
    memset(&o, 0, sizeof(o));
    access_client_tls_opts(&c, &o, files);
    assert_int_equal(o.nrequest_cert_ca_files, 2);
    assert_string_equal(o.request_cert_ca_files[0], "/ca.crt");
    assert_string_equal(o.request_cert_ca_files[1], "/ca2.crt");
    relay_config_free(&c);

    /* no route with client_cert: nobody is asked for a certificate */
    assert_int_equal(relay_from(&c, RELAY_BASE "[route a]\nagents = x\n", err, sizeof(err)), 0);
    memset(&o, 0, sizeof(o));
    access_client_tls_opts(&c, &o, files);
    assert_int_equal(o.nrequest_cert_ca_files, 0);
    assert_null(o.request_cert_ca_files);
    relay_config_free(&c);
}

static void test_route_key_errors(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX];
    static const struct {
        const char *keys, *msg;
    } cases[] = {
        {"client_cert = yes", "expected none, verify or verify-user, got \"yes\""},
        {"client_cert = verify", "[route a] client_ca: required when client_cert = verify"},
        {"client_cert = verify-user", "client_ca: required when client_cert = verify-user"},
        {"client_ca = /ca.crt", "client_ca/client_crl are set but client_cert = none"},
        {"client_cert = verify\nclient_ca = /ca\nident_map = /m",
         "[route a] ident_map: only used with client_cert = verify-user"},
        {"allow = nope", "invalid address range \"nope\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), RELAY_BASE "[route a]\nagents = x\n%s\n", cases[i].keys);
        err[0] = '\0';
        assert_int_equal(relay_from(&c, text, err, sizeof(err)), -EINVAL);
        if (!strstr(err, cases[i].msg))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].keys, err, cases[i].msg);
        relay_config_free(&c);
    }
}

static void test_ident_map(void **state)
{
    struct access_ident_map m = {0, NULL};
    char err[PGB_ERR_MAX];

    assert_int_equal(access_ident_parse("# cert CN   PostgreSQL user\n"
                                        "alice  alice\n"
                                        "alice\tapp_rw   # several users per CN\n"
                                        "\n"
                                        "   \n"
                                        "\"Bob Smith\" bob\r\n"
                                        "\"x\"\"y\" \"u v\"\n"
                                        "ops report#comment right after\n",
                                        &m, err, sizeof(err)),
                     0);
    assert_int_equal(m.n, 5);
    assert_true(access_ident_allows(&m, "alice", "alice"));
    assert_true(access_ident_allows(&m, "alice", "app_rw"));
    assert_false(access_ident_allows(&m, "alice", "bob"));
    assert_true(access_ident_allows(&m, "Bob Smith", "bob"));
    assert_false(access_ident_allows(&m, "bob", "bob"));
    assert_true(access_ident_allows(&m, "x\"y", "u v"));
    assert_true(access_ident_allows(&m, "ops", "report"));
    assert_false(access_ident_allows(&m, "ALICE", "alice")); /* exact, as PostgreSQL */

    /* an empty file maps nobody */
    assert_int_equal(access_ident_parse("# nothing\n", &m, err, sizeof(err)), 0);
    assert_int_equal(m.n, 0);
    assert_false(access_ident_allows(&m, "alice", "alice"));
    access_ident_free(&m);
    access_ident_free(NULL);
}

static void test_ident_map_errors(void **state)
{
    struct access_ident_map m = {0, NULL};
    char err[PGB_ERR_MAX];
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"alice\n", "line 1: expected CERT_CN PG_USER"},
        {"ok ok\nalice bob carol\n", "line 2: expected CERT_CN PG_USER"},
        {"\"unterminated bob\n", "line 1:"},
        {"\"\" bob\n", "line 1:"},
        {"\"a\"b c\n", "line 1:"},
    };
    assert_int_equal(access_ident_parse("a a\n", &m, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(access_ident_parse(cases[i].text, &m, err, sizeof(err)), -EINVAL);
        if (!strstr(err, cases[i].msg))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].text, err, cases[i].msg);
        /* the previous map is kept */
        assert_int_equal(m.n, 1);
    }
    access_ident_free(&m);
}

static void test_access_new_files(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX] = "";

    assert_int_equal(relay_from(&c,
                                RELAY_BASE "[route a]\nagents = x\nclient_cert = verify\n"
                                           "client_ca = /nonexistent/ca.crt\n",
                                err, sizeof(err)),
                     0);
    assert_null(access_new(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "[route a] client_ca/client_crl: could not access CA file "
                                "\"/nonexistent/ca.crt\""));
    relay_config_free(&c);

    /* no client certificates anywhere: nothing to load */
    assert_int_equal(relay_from(&c, RELAY_BASE "[route a]\nagents = x\n", err, sizeof(err)), 0);
    struct access *a = access_new(&c, err, sizeof(err));
    assert_non_null(a);
    access_free(a);
    access_free(NULL);
    relay_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_keys),       cmocka_unit_test(test_relay_key_errors),
        cmocka_unit_test(test_route_keys),       cmocka_unit_test(test_route_key_errors),
        cmocka_unit_test(test_ident_map),        cmocka_unit_test(test_ident_map_errors),
        cmocka_unit_test(test_access_new_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
