/*
 * test_cancel — cancel routing: the CANCEL frame, the fake pid scheme, the agent's
 * BackendKeyData rewriting filter and key map, and the relay's per-source rate limiter.
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
#include "proto/proto.h"
#include "relay/cancel.h"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
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

/* ---- fake pids ------------------------------------------------------------------------- */

static void test_fake_pid(void **state)
{
    /* FNV-1a 32 xor-folded to 15 bits; values also in PROTOCOL.md */
    assert_int_equal(proto_cancel_name_hash("agent-a"), 0x7ab8);
    assert_int_equal(proto_cancel_name_hash("agent-b"), 0x4c61);
    assert_int_equal(proto_cancel_name_hash("demo-agent"), 0x260d);
    for (uint32_t h = 0; h < 0x8000; h += 0x1111) {
        for (uint32_t r = 0; r < 0x10000; r += 0x3333) {
            uint32_t pid = proto_cancel_fake_pid((uint16_t)h, (uint16_t)r);
            assert_true(pid != 0);
            assert_true(pid < 0x80000000u); /* positive as an int32 */
            assert_int_equal(proto_cancel_pid_hash(pid), h);
        }
    }
    assert_int_equal(proto_cancel_fake_pid(0, 0), 1);
    assert_int_equal(proto_cancel_pid_hash(0xffffffffu), 0x7fff);
}

/* ---- the agent's filter ---------------------------------------------------------------- */

/* A server's startup reply: AuthenticationOk, ParameterStatus, BackendKeyData(pid, key),
 * ReadyForQuery, then a query result that must pass untouched. */
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

/* Feed buf through the filter in pieces of `piece` bytes, as the tunnel would. */
static void feed(struct cancel_key_watch *w, uint8_t *buf, size_t len, size_t piece)
{
    bool on = true;
    for (size_t off = 0; off < len && on; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        on = cancel_key_filter(w, buf + off, n);
    }
    assert_false(on); /* stopped at ReadyForQuery */
}

static void check_rewrite(size_t key_len)
{
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, "agent-a", 1000);
    uint8_t key[PROTO_CANCEL_KEY_MAX], orig[600], buf[600];
    const uint32_t real_pid = 4242;
    const size_t kpos = 9 + 15; /* offset of 'K' in server_reply */

    assert_non_null(m);
    for (size_t i = 0; i < key_len; i++)
        key[i] = (uint8_t)(0xa0 + i);
    size_t len = server_reply(orig, real_pid, key, key_len);
    for (size_t piece = 1; piece <= len; piece++) {
        struct cancel_key_watch *w =
            cancel_key_watch_new(m, true, "/tmp/.s.PGSQL.5432", NULL, "a", "sid");
        assert_non_null(w);
        memcpy(buf, orig, len);
        feed(w, buf, len, piece);
        /* same length, same bytes except the pid and the key */
        assert_memory_equal(buf, orig, kpos + 5);
        assert_memory_equal(buf + kpos + 9 + key_len, orig + kpos + 9 + key_len,
                            len - (kpos + 9 + key_len));
        uint32_t fake = get_be32(buf + kpos + 5);
        assert_int_not_equal(fake, real_pid);
        assert_int_equal(proto_cancel_pid_hash(fake), proto_cancel_name_hash("agent-a"));
        assert_true(memcmp(buf + kpos + 9, key, key_len) != 0);
        assert_int_equal(cancel_key_map_size(m), 1);
        uint32_t got = 0;
        assert_true(cancel_key_lookup(m, fake, buf + kpos + 9, key_len, &got));
        assert_int_equal(got, real_pid);
        /* the real key, a wrong key, or a wrong length is unknown */
        assert_false(cancel_key_lookup(m, real_pid, key, key_len, NULL));
        buf[kpos + 9] ^= 1;
        assert_false(cancel_key_lookup(m, fake, buf + kpos + 9, key_len, NULL));
        buf[kpos + 9] ^= 1;
        assert_false(cancel_key_lookup(m, fake, buf + kpos + 9, key_len - 1, NULL));
        cancel_key_watch_free(w);
        assert_int_equal(cancel_key_map_size(m), 0);
        assert_false(cancel_key_lookup(m, fake, buf + kpos + 9, key_len, NULL));
    }
    cancel_key_map_free(m);
}

static void test_filter_rewrites_v30_key(void **state)
{
    check_rewrite(4);
}

static void test_filter_rewrites_long_keys(void **state)
{
    check_rewrite(32); /* PostgreSQL 18 */
    check_rewrite(PROTO_CANCEL_KEY_MAX);
}

static void test_filter_zeroes_odd_keys(void **state)
{
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, "agent-a", 1000);
    uint8_t buf[600];
    static const uint8_t key[3] = {7, 7, 7};
    const size_t kpos = 9 + 15;

    size_t len = server_reply(buf, 777, key, sizeof key);
    struct cancel_key_watch *w = cancel_key_watch_new(m, true, "/x", NULL, "a", "sid");
    feed(w, buf, len, 5);
    static const uint8_t zero[7] = {0};
    assert_memory_equal(buf + kpos + 5, zero, sizeof zero);
    assert_int_equal(cancel_key_map_size(m), 0);
    cancel_key_watch_free(w);
    cancel_key_map_free(m);
}

static void test_filter_many_sessions(void **state)
{
    /* the map grows; every session's key stays findable; entries die with their session */
    enum { N = 300 };
    struct cancel_key_map *m = cancel_key_map_new(uv_default_loop(), NULL, "agent-b", 1000);
    struct cancel_key_watch *w[N];
    static uint8_t bufs[N][64];
    const size_t kpos = 9 + 15;
    static const uint8_t key[4] = {1, 2, 3, 4};

    for (int i = 0; i < N; i++) {
        size_t len = server_reply(bufs[i], 1000 + (uint32_t)i, key, sizeof key);
        w[i] = cancel_key_watch_new(m, false, "db:5432", "127.0.0.1:5432", "b", "sid");
        assert_non_null(w[i]);
        feed(w[i], bufs[i], len, len);
    }
    assert_int_equal(cancel_key_map_size(m), N);
    for (int i = 0; i < N; i++) {
        uint32_t got;
        assert_true(
            cancel_key_lookup(m, get_be32(bufs[i] + kpos + 5), bufs[i] + kpos + 9, 4, &got));
        assert_int_equal(got, 1000 + (uint32_t)i);
    }
    for (int i = 0; i < N; i += 2)
        cancel_key_watch_free(w[i]);
    assert_int_equal(cancel_key_map_size(m), N / 2);
    for (int i = 1; i < N; i += 2) {
        assert_true(
            cancel_key_lookup(m, get_be32(bufs[i] + kpos + 5), bufs[i] + kpos + 9, 4, NULL));
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

/* ---- the relay's rate limiter ---------------------------------------------------------- */

static void test_limiter_bucket(void **state)
{
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(16, 10, 20);
    bool log_drop;
    uint32_t sup;

    assert_non_null(l);
    for (int i = 0; i < 20; i++)
        assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1000", 5000, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1001", 5000, &log_drop, &sup));
    assert_true(log_drop);
    assert_int_equal(sup, 0);
    for (int i = 0; i < 5; i++) {
        assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1002", 5010, &log_drop, &sup));
        assert_false(log_drop);
    }
    /* another source is not affected */
    assert_true(relay_cancel_limiter_take(l, "192.0.2.2:1000", 5010, &log_drop, &sup));
    /* 10 per second: one token after 100 ms */
    assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1003", 5100, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1003", 5100, &log_drop, &sup));
    assert_false(log_drop);
    /* a long pause refills to the burst, not beyond */
    for (int i = 0; i < 20; i++)
        assert_true(relay_cancel_limiter_take(l, "192.0.2.1:1", 100000, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "192.0.2.1:1", 100000, &log_drop, &sup));
    assert_true(log_drop);
    relay_cancel_limiter_free(l);
}

static void test_limiter_suppressed_count(void **state)
{
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(16, 1, 1);
    bool log_drop;
    uint32_t sup;

    assert_true(relay_cancel_limiter_take(l, "10.0.0.1:1", 0, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "10.0.0.1:1", 0, &log_drop, &sup));
    assert_true(log_drop);
    for (int i = 0; i < 7; i++)
        assert_false(relay_cancel_limiter_take(l, "10.0.0.1:1", 1, &log_drop, &sup));
    /* a second later: one new token, then the next drop is logged with the count */
    assert_true(relay_cancel_limiter_take(l, "10.0.0.1:1", RELAY_CANCEL_LOG_MS, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "10.0.0.1:1", RELAY_CANCEL_LOG_MS, &log_drop, &sup));
    assert_true(log_drop);
    assert_int_equal(sup, 7);
    relay_cancel_limiter_free(l);
}

static void test_limiter_sources(void **state)
{
    struct relay_cancel_limiter *l = relay_cancel_limiter_new(4, 10, 1);
    bool log_drop;
    uint32_t sup;

    /* one IPv6 /64 is one source; IPv4-mapped IPv6 is its IPv4 address */
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:2::1]:5", 0, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "[2001:db8:1:2:ffff::9]:6", 0, &log_drop, &sup));
    assert_true(relay_cancel_limiter_take(l, "[2001:db8:1:3::1]:5", 0, &log_drop, &sup));
    assert_true(relay_cancel_limiter_take(l, "198.51.100.7:5", 0, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "[::ffff:198.51.100.7]:9", 0, &log_drop, &sup));
    assert_int_equal(relay_cancel_limiter_size(l), 3);
    /* unparsable addresses share one source, and are limited too */
    assert_true(relay_cancel_limiter_take(l, "unix", 0, &log_drop, &sup));
    assert_false(relay_cancel_limiter_take(l, "garbage", 0, &log_drop, &sup));
    assert_int_equal(relay_cancel_limiter_size(l), 4);
    /* the table is bounded: a new source recycles the least recently seen one */
    for (int i = 0; i < 100; i++) {
        char peer[32];
        snprintf(peer, sizeof peer, "203.0.113.%d:1", i);
        assert_true(relay_cancel_limiter_take(l, peer, 0, &log_drop, &sup));
        assert_true(relay_cancel_limiter_size(l) <= 4);
    }
    /* 198.51.100.7 was recycled: it starts with a full bucket again */
    assert_true(relay_cancel_limiter_take(l, "198.51.100.7:5", 0, &log_drop, &sup));
    relay_cancel_limiter_free(l);
    relay_cancel_limiter_free(NULL);
    assert_true(relay_cancel_len_ok(16));
    assert_true(relay_cancel_len_ok(268));
    assert_false(relay_cancel_len_ok(15));
    assert_false(relay_cancel_len_ok(269));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_frame_example),
        cmocka_unit_test(test_cancel_frame_key_sizes),
        cmocka_unit_test(test_cancel_frame_decode_rejects),
        cmocka_unit_test(test_fake_pid),
        cmocka_unit_test(test_filter_rewrites_v30_key),
        cmocka_unit_test(test_filter_rewrites_long_keys),
        cmocka_unit_test(test_filter_zeroes_odd_keys),
        cmocka_unit_test(test_filter_many_sessions),
        cmocka_unit_test(test_limiter_bucket),
        cmocka_unit_test(test_limiter_suppressed_count),
        cmocka_unit_test(test_limiter_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
