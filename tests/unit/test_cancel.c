/*
 * test_cancel — cancel routing: the CANCEL frame, the read-only scanner of the server's first
 * messages (pgwire_bescan), the agent's key map, the session key table (keytab) and the
 * relay's per-source rate limiter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "agent/cancel_key.h"
#include "common/keytab.h"
#include "common/pgwire.h"
#include "proto/proto.h"
#include "relay/cancel.h"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- CANCEL frame ---------------------------------------------------------------------- */

static void test_cancel_frame_example(void **state)
{
    /* The example of PROTOCOL.md section 12. */
    static const uint8_t expect[] = {
        0x01, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x82, 0xa3, 0x70, 0x69, 0x64, 0xce, 0x7a, 0xb8, 0x3f, 0x21,
        0xa3, 0x6b, 0x65, 0x79, 0xc4, 0x04, 0x9c, 0x41, 0x07, 0xe2,
    };
    struct proto_cancel c = {.pid = 0x7ab83f21, .key_len = 4, .key = {0x9c, 0x41, 0x07, 0xe2}};
    uint8_t b[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    struct proto_hdr h;
    struct proto_cancel d;

    int n = proto_encode_cancel(b, sizeof b, &c);
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(b, expect, sizeof expect);
    assert_int_equal(proto_hdr_decode(b, &h), PROTO_OK);
    assert_int_equal(h.type, PROTO_CANCEL);
    assert_int_equal(h.stream_id, 0);
    assert_string_equal(proto_type_name(PROTO_CANCEL), "CANCEL");
    assert_int_equal(proto_decode_cancel(b + PROTO_HDR_SIZE, h.length, &d), PROTO_OK);
    assert_memory_equal(&c, &d, sizeof c);
    /* CANCEL is a connection frame */
    uint8_t hb[PROTO_HDR_SIZE] = {1, PROTO_CANCEL, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1};
    assert_int_equal(proto_hdr_decode(hb, &h), PROTO_E_STREAM);
}

static void test_cancel_frame_key_sizes(void **state)
{
    uint8_t b[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    struct proto_cancel c, d;
    struct proto_hdr h;

    for (uint32_t len = 0; len <= PROTO_CANCEL_KEY_MAX + 1; len++) {
        memset(&c, 0, sizeof c);
        c.pid = len * 977u;
        c.key_len = len;
        for (uint32_t i = 0; i < len && i < PROTO_CANCEL_KEY_MAX; i++)
            c.key[i] = (uint8_t)(i * 7 + 1);
        int n = proto_encode_cancel(b, sizeof b, &c);
        if (len < PROTO_CANCEL_KEY_MIN || len > PROTO_CANCEL_KEY_MAX) {
            assert_int_equal(n, PROTO_E_FIELD);
            continue;
        }
        assert_true(n > PROTO_HDR_SIZE);
        assert_int_equal(proto_hdr_decode(b, &h), PROTO_OK);
        assert_int_equal(proto_decode_cancel(b + PROTO_HDR_SIZE, h.length, &d), PROTO_OK);
        assert_memory_equal(&c, &d, sizeof c);
    }
    c.key_len = PROTO_CANCEL_KEY_MIN;
    assert_int_equal(proto_encode_cancel(b, PROTO_HDR_SIZE + 3, &c), PROTO_E_NOSPACE);
}

static void test_cancel_frame_decode_rejects(void **state)
{
    struct proto_cancel d;
    /* {"pid": 1, "key": bin(3)} */
    static const uint8_t short_key[] = {0x82, 0xa3, 'p',  'i',  'd', 0x01, 0xa3, 'k',
                                        'e',  'y',  0xc4, 0x03, 1,   2,    3};
    /* {"pid": 1, "key": str(4)}: a str is not a bin */
    static const uint8_t str_key[] = {0x82, 0xa3, 'p',  'i', 'd', 0x01, 0xa3, 'k',
                                      'e',  'y',  0xa4, 1,   2,   3,    4};
    /* {"key": bin(4)}: pid missing */
    static const uint8_t no_pid[] = {0x81, 0xa3, 'k', 'e', 'y', 0xc4, 0x04, 1, 2, 3, 4};
    /* {"pid": 2^32, "key": bin(4)} */
    static const uint8_t big_pid[] = {0x82, 0xa3, 'p',  'i', 'd', 0xcf, 0,    0,    0, 1, 0, 0,
                                      0,    0,    0xa3, 'k', 'e', 'y',  0xc4, 0x04, 1, 2, 3, 4};
    /* {"pid": -1, "key": bin(4)} */
    static const uint8_t neg_pid[] = {0x82, 0xa3, 'p',  'i',  'd', 0xff, 0xa3, 'k',
                                      'e',  'y',  0xc4, 0x04, 1,   2,    3,    4};
    /* {"pid": 5, "key": bin(4), "x": nil}: unknown keys are ignored */
    static const uint8_t extra[] = {0x83, 0xa3, 'p', 'i', 'd', 0x05, 0xa3, 'k', 'e', 'y',
                                    0xc4, 0x04, 1,   2,   3,   4,    0xa1, 'x', 0xc0};
    /* a bin32 header claiming 4 GB */
    static const uint8_t huge[] = {0x82, 0xa3, 'p',  'i',  'd',  0x01, 0xa3, 'k',
                                   'e',  'y',  0xc6, 0xff, 0xff, 0xff, 0xff, 1};

    assert_int_equal(proto_decode_cancel(short_key, sizeof short_key, &d), PROTO_E_FIELD);
    assert_int_equal(proto_decode_cancel(str_key, sizeof str_key, &d), PROTO_E_FIELD);
    assert_int_equal(proto_decode_cancel(no_pid, sizeof no_pid, &d), PROTO_E_FIELD);
    assert_int_equal(proto_decode_cancel(big_pid, sizeof big_pid, &d), PROTO_E_FIELD);
    assert_int_equal(proto_decode_cancel(neg_pid, sizeof neg_pid, &d), PROTO_E_FIELD);
    assert_int_equal(proto_decode_cancel(huge, sizeof huge, &d), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_cancel(extra, sizeof extra, &d), PROTO_OK);
    assert_int_equal(d.pid, 5);
    assert_int_equal(d.key_len, 4);
}

/* ---- the agent's filter and the scanner ----------------------------------------------- */

/* A server's startup reply: AuthenticationOk, ParameterStatus, BackendKeyData(pid, key),
 * ReadyForQuery, then a query result with a 'K' the scanner must not look at. */
static size_t server_reply(uint8_t *out, uint32_t pid, const uint8_t *key, size_t key_len)
{
    size_t n = 0;
    static const uint8_t auth_ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    static const uint8_t ps[] = {'S', 0, 0, 0, 14, 'T', 'i', 'm', 'e', 'Z', 'o', 'n', 'e', 0, 0};
    memcpy(out + n, auth_ok, sizeof auth_ok);
    n += sizeof auth_ok;
    memcpy(out + n, ps, sizeof ps);
    n += sizeof ps;
    out[n++] = 'K';
    put_be32(out + n, (uint32_t)(8 + key_len));
    put_be32(out + n + 4, pid);
    memcpy(out + n + 8, key, key_len);
    n += 8 + key_len;
    static const uint8_t rfq_k[] = {'Z', 0, 0, 0, 5, 'I', 'K', 0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8};
    memcpy(out + n, rfq_k, sizeof rfq_k);
    n += sizeof rfq_k;
    return n;
}

/* Feed buf through the agent's filter in pieces of `piece` bytes, as the tunnel would. */
static void feed(struct cancel_key_watch *w, const uint8_t *buf, size_t len, size_t piece)
{
    bool on = true;
    for (size_t off = 0; off < len && on; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        on = cancel_key_filter(w, buf + off, n);
    }
    assert_false(on); /* stopped at ReadyForQuery */
}

static void check_key_noted(size_t key_len)
{
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, 1000);
    uint8_t key[PGWIRE_KEY_MAX], buf[600], orig[600];
    const uint32_t pid = 4242;

    assert_non_null(m);
    for (size_t i = 0; i < key_len; i++)
        key[i] = (uint8_t)(0xa0 + i);
    size_t len = server_reply(buf, pid, key, key_len);
    memcpy(orig, buf, len);
    for (size_t piece = 1; piece <= len; piece++) {
        struct cancel_key_watch *w =
            cancel_key_watch_new(m, true, "/tmp/.s.PGSQL.5432", NULL, "a", "sid");
        assert_non_null(w);
        feed(w, buf, len, piece);
        assert_memory_equal(buf, orig, len); /* the client gets the bytes PostgreSQL sent */
        assert_int_equal(cancel_key_map_size(m), 1);
        assert_true(cancel_key_lookup(m, pid, key, key_len));
        /* a wrong pid, key, or length is another session's */
        assert_false(cancel_key_lookup(m, pid + 1, key, key_len));
        key[key_len - 1] ^= 1;
        assert_false(cancel_key_lookup(m, pid, key, key_len));
        key[key_len - 1] ^= 1;
        assert_false(cancel_key_lookup(m, pid, key, key_len - 1));
        cancel_key_watch_free(w);
        assert_int_equal(cancel_key_map_size(m), 0);
        assert_false(cancel_key_lookup(m, pid, key, key_len));
    }
    cancel_key_map_free(m);
}

static void test_filter_notes_v30_key(void **state)
{
    check_key_noted(4);
}

static void test_filter_notes_long_keys(void **state)
{
    check_key_noted(32); /* PostgreSQL 18 */
    check_key_noted(PGWIRE_KEY_MAX);
}

static void test_filter_ignores_odd_keys(void **state)
{
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, 1000);
    uint8_t buf[600];
    static const uint8_t key[3] = {7, 7, 7};

    size_t len = server_reply(buf, 777, key, sizeof key);
    struct cancel_key_watch *w = cancel_key_watch_new(m, true, "/x", NULL, "a", "sid");
    feed(w, buf, len, 5);
    assert_int_equal(cancel_key_map_size(m), 0);
    assert_false(cancel_key_lookup(m, 777, key, sizeof key));
    cancel_key_watch_free(w);
    cancel_key_map_free(m);
}

static void test_filter_many_sessions(void **state)
{
    /* the map grows; every session's key stays findable; entries die with their session;
     * sessions of two servers may share a pid, their keys tell them apart */
    enum { N = 300 };
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, 1000);
    struct cancel_key_watch *w[N];
    static uint8_t bufs[N][64];
    uint8_t key[4];

    for (int i = 0; i < N; i++) {
        put_be32(key, 0xc0de0000u + (uint32_t)i);
        size_t len = server_reply(bufs[i], 1000 + (uint32_t)i % 100, key, sizeof key);
        w[i] = cancel_key_watch_new(m, false, "db:5432", "127.0.0.1:5432", "b", "sid");
        assert_non_null(w[i]);
        feed(w[i], bufs[i], len, len);
    }
    assert_int_equal(cancel_key_map_size(m), N);
    for (int i = 0; i < N; i++) {
        put_be32(key, 0xc0de0000u + (uint32_t)i);
        assert_true(cancel_key_lookup(m, 1000 + (uint32_t)i % 100, key, 4));
        assert_false(cancel_key_lookup(m, 1000 + (uint32_t)(i + 1) % 100, key, 4));
    }
    for (int i = 0; i < N; i += 2)
        cancel_key_watch_free(w[i]);
    assert_int_equal(cancel_key_map_size(m), N / 2);
    for (int i = 1; i < N; i += 2) {
        put_be32(key, 0xc0de0000u + (uint32_t)i);
        assert_true(cancel_key_lookup(m, 1000 + (uint32_t)i % 100, key, 4));
        put_be32(key, 0xc0de0000u + (uint32_t)(i - 1));
        assert_false(cancel_key_lookup(m, 1000 + (uint32_t)(i - 1) % 100, key, 4));
        cancel_key_watch_free(w[i]);
    }
    assert_int_equal(cancel_key_map_size(m), 0);
    /* a bad TCP peer address is refused */
    assert_null(cancel_key_watch_new(m, false, "db:5432", "nonsense", "b", "sid"));
    assert_non_null(w[0] = cancel_key_watch_new(m, false, "db", "[::1]:5432", "b", "sid"));
    cancel_key_watch_free(w[0]);
    cancel_key_watch_free(NULL);
    cancel_key_map_free(m);
}

static void test_bescan_events(void **state)
{
    struct pgwire_bescan sc;
    uint8_t buf[200];
    static const uint8_t key[4] = {9, 8, 7, 6};
    size_t len = server_reply(buf, 31337, key, sizeof key);

    /* byte by byte: each event is reported once, by the piece that completes it */
    unsigned all = 0, n_key = 0, n_auth = 0;
    pgwire_bescan_init(&sc);
    for (size_t i = 0; i < len && !sc.done; i++) {
        unsigned ev = pgwire_bescan_feed(&sc, buf + i, 1);
        n_key += (ev & PGWIRE_BESCAN_KEY) != 0;
        n_auth += (ev & PGWIRE_BESCAN_AUTH_OK) != 0;
        all |= ev;
    }
    assert_int_equal(all, PGWIRE_BESCAN_KEY | PGWIRE_BESCAN_AUTH_OK | PGWIRE_BESCAN_DONE);
    assert_int_equal(n_key, 1);
    assert_int_equal(n_auth, 1);
    assert_true(sc.auth_ok && sc.have_key);
    assert_int_equal(sc.pid, 31337);
    assert_int_equal(sc.key_len, 4);
    assert_memory_equal(sc.key, key, 4);
    /* nothing after the end is looked at */
    assert_int_equal(pgwire_bescan_feed(&sc, buf, len), 0);

    /* all at once */
    pgwire_bescan_init(&sc);
    assert_int_equal(pgwire_bescan_feed(&sc, buf, len),
                     PGWIRE_BESCAN_KEY | PGWIRE_BESCAN_AUTH_OK | PGWIRE_BESCAN_DONE);

    /* other authentication requests are not AuthenticationOk; a SASL body is skipped */
    static const uint8_t sasl[] = {'R', 0,   0,   0,   23,  0,   0,   0,   10,  'S', 'C', 'R',
                                   'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,   0};
    static const uint8_t cleartext[] = {'R', 0, 0, 0, 8, 0, 0, 0, 3};
    pgwire_bescan_init(&sc);
    assert_int_equal(pgwire_bescan_feed(&sc, sasl, sizeof sasl), 0);
    assert_int_equal(pgwire_bescan_feed(&sc, cleartext, sizeof cleartext), 0);
    assert_false(sc.auth_ok || sc.done);

    /* an ErrorResponse (as in a failed authentication): its SQLSTATE and message noted */
    static const uint8_t err[] = {'E', 0,   0,   0,   46,  'S', 'F', 'A', 'T', 'A', 'L', 0,
                                  'C', '2', '8', 'P', '0', '1', 0,   'M', 'p', 'a', 's', 's',
                                  'w', 'o', 'r', 'd', ' ', 'a', 'u', 't', 'h', 'e', 'n', 't',
                                  'i', 'c', 'a', 't', 'i', 'o', 'n', ' ', 'f', 0,   0};
    pgwire_bescan_init(&sc);
    assert_int_equal(sizeof err, 47);
    for (size_t i = 0; i + 1 < sizeof err; i++)
        assert_int_equal(pgwire_bescan_feed(&sc, err + i, 1), 0);
    assert_int_equal(pgwire_bescan_feed(&sc, err + sizeof err - 1, 1), PGWIRE_BESCAN_ERROR);
    assert_string_equal(sc.err_code, "28P01");
    assert_string_equal(sc.err_msg, "password authentication f");
    assert_false(sc.have_key || sc.done || sc.auth_ok);
    /* a long ErrorResponse: only its first bytes are kept, the rest skipped */
    uint8_t longerr[5 + 2000];
    memset(longerr, 'x', sizeof longerr);
    longerr[0] = 'E';
    put_be32(longerr + 1, sizeof longerr - 1);
    memcpy(longerr + 5, "C57P01\0M", 8);
    longerr[sizeof longerr - 2] = longerr[sizeof longerr - 1] = 0;
    pgwire_bescan_init(&sc);
    assert_int_equal(pgwire_bescan_feed(&sc, longerr, sizeof longerr), PGWIRE_BESCAN_ERROR);
    assert_string_equal(sc.err_code, "57P01");
    assert_int_equal(strlen(sc.err_msg), sizeof(sc.err_msg) - 1);

    /* a length PostgreSQL never sends ends the scan */
    static const uint8_t bad[] = {'S', 0, 0, 0, 3, 'x'};
    pgwire_bescan_init(&sc);
    assert_int_equal(pgwire_bescan_feed(&sc, bad, sizeof bad), PGWIRE_BESCAN_DONE);
    assert_true(sc.done);

    /* a huge message is skipped without being buffered */
    uint8_t big[5 + 1000];
    memset(big, 'x', sizeof big);
    big[0] = 'D';
    put_be32(big + 1, 0x40000000u);
    pgwire_bescan_init(&sc);
    assert_int_equal(pgwire_bescan_feed(&sc, big, sizeof big), 0);
    assert_false(sc.done);
}

static void test_keytab_watch(void **state)
{
    struct keytab t;
    struct keytab_watch a, b;
    uint8_t buf[200];
    static const uint8_t key[4] = {1, 2, 3, 4};
    size_t len = server_reply(buf, 99, key, sizeof key);

    assert_int_equal(keytab_init(&t), 0);
    assert_int_equal(keytab_watch_init(&a, &t), 0);
    assert_int_equal(keytab_watch_init(&b, &t), 0);
    assert_true(keytab_watch_feed(&a, buf, 30)); /* key not complete yet */
    assert_null(keytab_find(&t, 99, key, 4));
    assert_false(keytab_watch_feed(&a, buf + 30, len - 30));
    assert_ptr_equal(keytab_find(&t, 99, key, 4), &a.e);
    assert_false(keytab_watch_feed(&a, buf, len)); /* done: nothing more is read */
    /* a session that ends before its key: nothing in the table, nothing leaked */
    assert_true(keytab_watch_feed(&b, buf, 9));
    assert_int_equal(keytab_size(&t), 1);
    keytab_watch_fini(&b);
    keytab_watch_fini(&a);
    keytab_watch_fini(&a); /* idempotent */
    assert_int_equal(keytab_size(&t), 0);
    assert_null(keytab_find(&t, 99, key, 4));
    keytab_fini(&t);
}

/* ---- the relay's rate limiter ---------------------------------------------------------- */

static void test_limiter_bucket(void **state)
{
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(16, 10, 20);

    assert_non_null(l);
    for (int i = 0; i < 20; i++)
        assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1000", 5000));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1001", 5000));
    for (int i = 0; i < 5; i++)
        assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1002", 5010));
    /* another source is not affected */
    assert_true(relay_cancel_limiter_take(l, "192.0.2.2:1000", 5010));
    /* 10 per second: one token after 100 ms */
    assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1003", 5100));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1003", 5100));
    /* a long pause refills to the burst, not beyond */
    for (int i = 0; i < 20; i++)
        assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1", 100000));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1", 100000));
    relay_cancel_limiter_free(l);
}

static void test_limiter_sources(void **state)
{
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(4, 10, 1);

    /* one IPv6 /64 is one source; IPv4-mapped IPv6 is its IPv4 address */
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:2::1]:5", 0));
    assert_false(relay_cancel_limiter_take(l, "[2001:db8:1:2:ffff::9]:6", 0));
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:3::1]:5", 0));
    assert_true(relay_cancel_limiter_take(l, "198.51.100.7:5", 0));
    assert_false(relay_cancel_limiter_take(l, "[::ffff:198.51.100.7]:9", 0));
    assert_int_equal(relay_cancel_limiter_size(l), 3);
    /* unparsable addresses share one source, and are limited too */
    assert_true(relay_cancel_limiter_take(l, "unix", 0));
    assert_false(relay_cancel_limiter_take(l, "garbage", 0));
    assert_int_equal(relay_cancel_limiter_size(l), 4);
    /* the table is bounded: a new source recycles the least recently seen one */
    for (int i = 0; i < 100; i++) {
        char peer[32];
        snprintf(peer, sizeof peer, "203.0.113.%d:1", i);
        assert_true(relay_cancel_limiter_take(l, peer, 0));
        assert_true(relay_cancel_limiter_size(l) <= 4);
    }
    /* 198.51.100.7 was recycled: it starts with a full bucket again */
    assert_true(relay_cancel_limiter_take(l, "198.51.100.7:5", 0));
    relay_cancel_limiter_free(l);
    relay_cancel_limiter_free(NULL);
    assert_true(relay_cancel_len_ok(16));
    assert_true(relay_cancel_len_ok(268));
    assert_false(relay_cancel_len_ok(15));
    assert_false(relay_cancel_len_ok(269));
}

static void test_limiter_networks(void **state)
{
    /* one party's many addresses share one budget: IPv4 /24, IPv6 /48 */
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(16, 10, 2);

    relay_cancel_limiter_set_prefix(l, 24, 48);
    assert_true(relay_cancel_limiter_take(l, "203.0.113.1:1", 0));
    assert_true(relay_cancel_limiter_take(l, "203.0.113.2:1", 0));
    assert_false(relay_cancel_limiter_take(l, "203.0.113.250:1", 0));
    assert_true(relay_cancel_limiter_take(l, "203.0.114.1:1", 0));
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:2::1]:5", 0));
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:3::1]:5", 0));
    assert_false(relay_cancel_limiter_take(l, "[2001:db8:1:ffff::9]:5", 0));
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:2::1]:5", 0));
    assert_int_equal(relay_cancel_limiter_size(l), 4);
    relay_cancel_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_frame_example),
        cmocka_unit_test(test_cancel_frame_key_sizes),
        cmocka_unit_test(test_cancel_frame_decode_rejects),
        cmocka_unit_test(test_filter_notes_v30_key),
        cmocka_unit_test(test_filter_notes_long_keys),
        cmocka_unit_test(test_filter_ignores_odd_keys),
        cmocka_unit_test(test_filter_many_sessions),
        cmocka_unit_test(test_bescan_events),
        cmocka_unit_test(test_keytab_watch),
        cmocka_unit_test(test_limiter_bucket),
        cmocka_unit_test(test_limiter_sources),
        cmocka_unit_test(test_limiter_networks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
