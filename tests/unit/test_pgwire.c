/* Unit tests for common/pgwire: classification, StartupMessage parsing, options, errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/pgwire.h"
#include "proto/proto.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An 8-byte request: length word then code. */
static void request(uint8_t *buf, uint32_t len, uint32_t code)
{
    put32(buf, len);
    put32(buf + 4, code);
}

/* A StartupMessage with name/value pairs (kv ends with NULL), as libpq writes it. */
static size_t startup(uint8_t *buf, size_t cap, uint32_t protocol, const char *const *kv)
{
    size_t n = 8;
    for (; *kv; kv++) {
        size_t l = strlen(*kv) + 1;
        assert_true(n + l < cap);
        memcpy(buf + n, *kv, l);
        n += l;
    }
    buf[n++] = '\0';
    put32(buf, (uint32_t)n);
    put32(buf + 4, protocol);
    return n;
}

/* ---- classification ----------------------------------------------------------------------- */

static void test_classify_short_input(void **state)
{
    uint8_t buf[8];
    request(buf, 8, PGWIRE_SSL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 0), PGWIRE_NEED_MORE);
    for (size_t n = 1; n < 8; n++)
        assert_int_equal(pgwire_classify(buf, n), PGWIRE_NEED_MORE);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_SSL);
}

static void test_classify_tls_hello(void **state)
{
    const uint8_t one[] = {0x16};
    const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    assert_int_equal(pgwire_classify(one, 1), PGWIRE_TLS_HELLO);
    assert_int_equal(pgwire_classify(hello, sizeof(hello)), PGWIRE_TLS_HELLO);
    /* Another TLS record type is not a ClientHello: with fewer than 8 bytes, wait. */
    const uint8_t alert[] = {0x15, 0x03, 0x01};
    assert_int_equal(pgwire_classify(alert, sizeof(alert)), PGWIRE_NEED_MORE);
}

static void test_classify_ssl_and_gssenc(void **state)
{
    uint8_t buf[16] = {0};
    request(buf, 8, PGWIRE_SSL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_SSL);
    /* More bytes in the buffer (pipelined data) do not change the kind; the caller checks. */
    assert_int_equal(pgwire_classify(buf, sizeof(buf)), PGWIRE_SSL);
    request(buf, 12, PGWIRE_SSL_REQUEST);
    assert_int_equal(pgwire_classify(buf, sizeof(buf)), PGWIRE_INVALID);
    request(buf, 8, PGWIRE_GSSENC_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_GSSENC);
    request(buf, 16, PGWIRE_GSSENC_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
}

static void test_classify_cancel(void **state)
{
    uint8_t buf[8];
    request(buf, 16, PGWIRE_CANCEL_REQUEST); /* protocol 3.0: 4-byte key */
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_CANCEL);
    request(buf, 12 + 32, PGWIRE_CANCEL_REQUEST); /* PostgreSQL 18: 32-byte key */
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_CANCEL);
    request(buf, 12 + 256, PGWIRE_CANCEL_REQUEST); /* longest key the protocol allows */
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_CANCEL);
    request(buf, 12 + 257, PGWIRE_CANCEL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 15, PGWIRE_CANCEL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 8, PGWIRE_CANCEL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
}

static void test_classify_startup(void **state)
{
    uint8_t buf[8];
    request(buf, 40, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_STARTUP);
    request(buf, 40, 0x00030002);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_STARTUP);
    request(buf, 40, 0x00020000); /* protocol 2 is long gone */
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 40, 0x00040000);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 8, 80877105u); /* an unknown 1234.xxxx request code */
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
}

static void test_classify_bad_lengths(void **state)
{
    uint8_t buf[8];
    request(buf, 7, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 0, PGWIRE_SSL_REQUEST);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, PGWIRE_STARTUP_MAX, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_STARTUP);
    request(buf, PGWIRE_STARTUP_MAX + 1, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    request(buf, 0xffffffffu, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_classify(buf, 8), PGWIRE_INVALID);
    const uint8_t http[] = "GET / HTTP/1.1\r\n";
    assert_int_equal(pgwire_classify(http, sizeof(http) - 1), PGWIRE_INVALID);
}

static void test_packet_len(void **state)
{
    uint8_t buf[8];
    request(buf, 0x01020304, 0);
    assert_int_equal(pgwire_packet_len(buf, 3), 0);
    assert_int_equal(pgwire_packet_len(buf, 4), 0x01020304);
    assert_int_equal(pgwire_packet_len(buf, 8), 0x01020304);
}

/* ---- StartupMessage ----------------------------------------------------------------------- */

static void test_startup_psql(void **state)
{
    static const char *const kv[] = {
        "user", "alice",           "database", "shop",    "application_name",
        "psql", "client_encoding", "UTF8",     "options", "-c pgburrow.route=db1",
        NULL};
    uint8_t buf[512];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX] = "";
    size_t n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, kv);

    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), 0);
    assert_int_equal(st.protocol, PGWIRE_PROTO_3_0);
    assert_string_equal(st.user, "alice");
    assert_string_equal(st.database, "shop");
    assert_string_equal(st.application_name, "psql");
    assert_string_equal(st.options, "-c pgburrow.route=db1");
    assert_int_equal(st.nparams, 5);
    assert_string_equal(st.names[3], "client_encoding");
    assert_string_equal(st.values[3], "UTF8");
    /* Pointers borrow the packet. */
    assert_ptr_equal(st.names[0], (const char *)buf + 8);
}

static void test_startup_protocol_3_2(void **state)
{
    static const char *const kv[] = {"user", "bob", "_pq_.test_option", "on", NULL};
    uint8_t buf[256];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(buf, sizeof(buf), 0x00030002, kv);

    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), 0);
    assert_int_equal(st.protocol, 0x00030002);
    assert_string_equal(st.user, "bob");
    assert_null(st.database);
    assert_null(st.options);
    assert_int_equal(st.nparams, 2);
    assert_string_equal(st.names[1], "_pq_.test_option");
}

static void test_startup_wrong_version(void **state)
{
    static const char *const kv[] = {"user", "bob", NULL};
    uint8_t buf[256];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(buf, sizeof(buf), 0x00030003, kv);

    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unsupported frontend protocol 3.3"));
    assert_null(st.user);
    n = startup(buf, sizeof(buf), 0x00020000, kv);
    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unsupported frontend protocol 2.0"));
}

static void test_startup_missing_user(void **state)
{
    static const char *const nouser[] = {"database", "shop", NULL};
    static const char *const empty[] = {"user", "", NULL};
    uint8_t buf[256];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, nouser);

    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "no PostgreSQL user name specified in startup packet");
    assert_null(st.database);
    n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, empty);
    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "no PostgreSQL user name specified in startup packet");
}

static void test_startup_missing_terminator(void **state)
{
    static const char *const kv[] = {"user", "bob", NULL};
    uint8_t buf[256];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, kv);

    /* Drop the final NUL: "user\0bob\0" then the end. */
    put32(buf, (uint32_t)(n - 1));
    assert_int_equal(pgwire_startup_parse(buf, n - 1, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "terminator"));
    /* Only the length word and the version: no terminator at all. */
    put32(buf, 8);
    assert_int_equal(pgwire_startup_parse(buf, 8, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "terminator"));
}

static void test_startup_unterminated(void **state)
{
    uint8_t buf[64];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];

    /* "user\0bob" without its NUL: the value runs to the end of the packet. */
    memcpy(buf + 8, "user\0bob", 8);
    request(buf, 16, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(buf, 16, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unterminated value"));
    /* A name without NUL. */
    memcpy(buf + 8, "user", 4);
    request(buf, 12, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(buf, 12, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unterminated parameter name"));
    /* A name, then the end: its value is missing. */
    memcpy(buf + 8, "user\0", 5);
    request(buf, 13, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(buf, 13, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "missing"));
    /* "user\0\0": name user, empty value, then no terminator. */
    memcpy(buf + 8, "user\0\0", 6);
    request(buf, 14, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(buf, 14, &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "terminator"));
}

static void test_startup_empty_name_and_trailing_bytes(void **state)
{
    uint8_t buf[64];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    /* An empty name ends the list; anything after it is junk, as PostgreSQL says. */
    static const uint8_t body[] = "user\0bob\0\0x\0y\0";
    memcpy(buf + 8, body, sizeof(body));
    request(buf, (uint32_t)(8 + sizeof(body)), PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(buf, 8 + sizeof(body), &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "expected terminator as last byte"));
    assert_null(st.user);
}

static void test_startup_length(void **state)
{
    static uint8_t big[PGWIRE_STARTUP_MAX + 16];
    static const char *const kv[] = {"user", "bob", NULL};
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(big, sizeof(big), PGWIRE_PROTO_3_0, kv);

    /* The length word must match the bytes given. */
    assert_int_equal(pgwire_startup_parse(big, n + 1, &st, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "invalid startup packet length");
    /* Over the limit: "user" then a value filling up to 10001 bytes. */
    memcpy(big + 8, "user\0", 5);
    memset(big + 13, 'x', PGWIRE_STARTUP_MAX + 1 - 13 - 2);
    big[PGWIRE_STARTUP_MAX - 1] = '\0';
    big[PGWIRE_STARTUP_MAX] = '\0';
    request(big, PGWIRE_STARTUP_MAX + 1, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(big, PGWIRE_STARTUP_MAX + 1, &st, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "invalid startup packet length");
    /* One byte shorter fits exactly. */
    big[PGWIRE_STARTUP_MAX - 2] = '\0';
    big[PGWIRE_STARTUP_MAX - 1] = '\0';
    request(big, PGWIRE_STARTUP_MAX, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(big, PGWIRE_STARTUP_MAX, &st, err, sizeof(err)), 0);
    assert_int_equal(strlen(st.user), PGWIRE_STARTUP_MAX - 13 - 2);
    /* Too short to hold a version. */
    request(big, 4, PGWIRE_PROTO_3_0);
    assert_int_equal(pgwire_startup_parse(big, 4, &st, err, sizeof(err)), -EINVAL);
}

static void test_startup_too_many_params(void **state)
{
    static uint8_t buf[4096];
    static char names[PGWIRE_MAX_PARAMS + 1][16];
    const char *kv[2 * (PGWIRE_MAX_PARAMS + 1) + 1];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n;

    kv[0] = "user";
    kv[1] = "bob";
    for (int i = 1; i <= PGWIRE_MAX_PARAMS; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        kv[2 * i] = names[i];
        kv[2 * i + 1] = "v";
    }
    kv[2 * PGWIRE_MAX_PARAMS] = NULL; /* exactly PGWIRE_MAX_PARAMS parameters */
    n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, kv);
    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), 0);
    assert_int_equal(st.nparams, PGWIRE_MAX_PARAMS);
    kv[2 * PGWIRE_MAX_PARAMS] = names[PGWIRE_MAX_PARAMS];
    kv[2 * PGWIRE_MAX_PARAMS + 1] = "v";
    kv[2 * PGWIRE_MAX_PARAMS + 2] = NULL;
    n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, kv);
    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), -E2BIG);
    assert_non_null(strstr(err, "too many"));
}

static void test_startup_duplicate_last_wins(void **state)
{
    /* PostgreSQL keeps the last value; the relay must read what the server will read. */
    static const char *const kv[] = {"user", "alice", "database", "a", "user", "bob", NULL};
    uint8_t buf[256];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    size_t n = startup(buf, sizeof(buf), PGWIRE_PROTO_3_0, kv);

    assert_int_equal(pgwire_startup_parse(buf, n, &st, err, sizeof(err)), 0);
    assert_string_equal(st.user, "bob");
    assert_int_equal(st.nparams, 3);
}

static void test_error_response_bytes(void **state)
{
    static const uint8_t expect[] = {'E', 0,   0,   0,   45,  'S', 'F', 'A', 'T', 'A', 'L', 0,
                                     'V', 'F', 'A', 'T', 'A', 'L', 0,   'C', '2', '8', '0', '0',
                                     '0', 0,   'M', 'p', 'g', 'b', 'u', 'r', 'r', 'o', 'w', ':',
                                     ' ', 'n', 'o', 't', ' ', 'T', 'L', 'S', 0,   0};
    uint8_t out[128];
    memset(out, 0xaa, sizeof(out));
    int n = pgwire_error_response(out, sizeof(out), "FATAL", "28000", "pgburrow: not TLS");
    assert_int_equal(n, sizeof(expect));
    assert_memory_equal(out, expect, sizeof(expect));
    assert_int_equal(out[sizeof(expect)], 0xaa); /* nothing written past the end */
}

static void test_error_response_space(void **state)
{
    uint8_t out[64];
    int need = pgwire_error_response(out, sizeof(out), "FATAL", "08P01", "m");
    assert_true(need > 0);
    assert_int_equal(pgwire_error_response(out, (size_t)need - 1, "FATAL", "08P01", "m"), -ENOSPC);
    assert_int_equal(pgwire_error_response(out, (size_t)need, "FATAL", "08P01", "m"), need);
    assert_int_equal(pgwire_error_response(out, 0, "FATAL", "08P01", "m"), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_short_input),
        cmocka_unit_test(test_classify_tls_hello),
        cmocka_unit_test(test_classify_ssl_and_gssenc),
        cmocka_unit_test(test_classify_cancel),
        cmocka_unit_test(test_classify_startup),
        cmocka_unit_test(test_classify_bad_lengths),
        cmocka_unit_test(test_packet_len),
        cmocka_unit_test(test_startup_psql),
        cmocka_unit_test(test_startup_protocol_3_2),
        cmocka_unit_test(test_startup_wrong_version),
        cmocka_unit_test(test_startup_missing_user),
        cmocka_unit_test(test_startup_missing_terminator),
        cmocka_unit_test(test_startup_unterminated),
        cmocka_unit_test(test_startup_empty_name_and_trailing_bytes),
        cmocka_unit_test(test_startup_length),
        cmocka_unit_test(test_startup_too_many_params),
        cmocka_unit_test(test_startup_duplicate_last_wins),
        cmocka_unit_test(test_error_response_bytes),
        cmocka_unit_test(test_error_response_space),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
