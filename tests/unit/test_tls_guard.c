/* Unit tests: the TLS record and handshake message size checks (common/tls_guard). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/tls_guard.h"

/* A handshake record holding one handshake message of type and announced length, with
 * body_have body bytes present. Returns its size. */
static size_t record(uint8_t *out, uint8_t rec_type, uint8_t hs_type, uint32_t hs_len,
                     uint32_t body_have)
{
    uint32_t rec_len = 4 + body_have;
    out[0] = rec_type;
    out[1] = 3;
    out[2] = 1;
    out[3] = (uint8_t)(rec_len >> 8);
    out[4] = (uint8_t)rec_len;
    out[5] = hs_type;
    out[6] = (uint8_t)(hs_len >> 16);
    out[7] = (uint8_t)(hs_len >> 8);
    out[8] = (uint8_t)hs_len;
    memset(out + 9, 0xab, body_have);
    return 9 + body_have;
}

static void small_hello_passes_in_any_split(void **state)
{
    (void)state;
    uint8_t buf[600];
    size_t n = record(buf, 22, 1, 500, 500);
    for (size_t cut = 0; cut <= n; cut++) {
        struct tls_guard g;
        tls_guard_init(&g);
        assert_int_equal(tls_guard_feed(&g, buf, cut), TLS_GUARD_OK);
        assert_int_equal(tls_guard_feed(&g, buf + cut, n - cut), TLS_GUARD_OK);
    }
}

static void nine_bytes_announcing_128k_hello_refused(void **state)
{
    (void)state;
    static const uint8_t nine[9] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x02, 0x00, 0x00};
    struct tls_guard g;
    char msg[128];
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, nine, 8), TLS_GUARD_OK);
    assert_int_equal(tls_guard_feed(&g, nine + 8, 1), TLS_GUARD_BIG_MESSAGE);
    assert_string_equal(tls_guard_strerror(&g, msg, sizeof(msg)),
                        "ClientHello of 131072 bytes (max 16380)");
    /* sticky */
    assert_int_equal(tls_guard_feed(&g, nine, 1), TLS_GUARD_BIG_MESSAGE);
}

static void record_limits(void **state)
{
    (void)state;
    struct tls_guard g;
    uint8_t big[5] = {0x16, 0x03, 0x01, 0x48, 0x01}; /* 18433 > 16384 + 2048 */
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, big, 5), TLS_GUARD_BAD_LENGTH);
    uint8_t empty[5] = {0x16, 0x03, 0x01, 0, 0};
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, empty, 5), TLS_GUARD_BAD_LENGTH);
    uint8_t notls[5] = {'G', 'E', 'T', ' ', '/'};
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, notls, 5), TLS_GUARD_BAD_TYPE);
    uint8_t appdata_first[5] = {0x17, 0x03, 0x03, 0, 10};
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, appdata_first, 5), TLS_GUARD_BAD_TYPE);
    uint8_t badver[5] = {0x16, 0x02, 0x00, 0, 10};
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, badver, 5), TLS_GUARD_BAD_VERSION);
}

static void first_message_must_be_client_hello(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct tls_guard g;
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, buf, record(buf, 22, 11, 10, 10)), TLS_GUARD_NOT_HELLO);
}

/* TLS 1.3 after a HelloRetryRequest: change_cipher_spec, then a second (plaintext) ClientHello,
 * which is checked too; TLS 1.2: handshake records after the client's change_cipher_spec are
 * encrypted, and only their record header is checked. */
static void after_change_cipher_spec(void **state)
{
    (void)state;
    uint8_t buf[256];
    static const uint8_t ccs[6] = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01};
    struct tls_guard g;
    size_t n;

    tls_guard_init(&g);
    n = record(buf, 22, 1, 100, 100);
    assert_int_equal(tls_guard_feed(&g, buf, n), TLS_GUARD_OK);
    g.tls13 = true;
    assert_int_equal(tls_guard_feed(&g, ccs, sizeof(ccs)), TLS_GUARD_OK);
    n = record(buf, 22, 1, 131072, 0);
    assert_int_equal(tls_guard_feed(&g, buf, n), TLS_GUARD_BIG_MESSAGE);

    tls_guard_init(&g); /* TLS 1.2: an encrypted Finished looks like anything */
    n = record(buf, 22, 1, 100, 100);
    assert_int_equal(tls_guard_feed(&g, buf, n), TLS_GUARD_OK);
    assert_int_equal(tls_guard_feed(&g, ccs, sizeof(ccs)), TLS_GUARD_OK);
    n = record(buf, 22, 0xee, 0xffffff, 36);
    assert_int_equal(tls_guard_feed(&g, buf, n), TLS_GUARD_OK);
}

static void message_spanning_records_and_cert_limit(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct tls_guard g;
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, buf, record(buf, 22, 1, 20, 20)), TLS_GUARD_OK);
    /* a client Certificate (TLS 1.2) announced at 40000 bytes: above its limit */
    assert_int_equal(tls_guard_feed(&g, buf, record(buf, 22, 11, 40000, 0)), TLS_GUARD_BIG_MESSAGE);
    tls_guard_init(&g);
    assert_int_equal(tls_guard_feed(&g, buf, record(buf, 22, 1, 20, 20)), TLS_GUARD_OK);
    assert_int_equal(tls_guard_feed(&g, buf, record(buf, 22, 11, 30000, 0)), TLS_GUARD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_hello_passes_in_any_split),
        cmocka_unit_test(nine_bytes_announcing_128k_hello_refused),
        cmocka_unit_test(record_limits),
        cmocka_unit_test(first_message_must_be_client_hello),
        cmocka_unit_test(after_change_cipher_spec),
        cmocka_unit_test(message_spanning_records_and_cert_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
