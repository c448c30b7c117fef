/* Unit tests for common/proxyproto: PROXY protocol v1 and v2 headers, whole and in pieces. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "common/proxyproto.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: sig, ver_cmd, fam, then body[blen] (length field = blen). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

/* Feed in[len] whole; expect DONE with header_len hdr, and the source formatted as want (NULL:
 * no address). */
static struct proxyproto feed_whole(const uint8_t *in, size_t len, enum proxyproto_status want)
{
    struct proxyproto p;
    size_t used = 0;

    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, in, len, &used), want);
    if (want == PROXYPROTO_DONE)
        assert_int_equal(used, p.res.header_len);
    if (want == PROXYPROTO_NEED_MORE)
        assert_int_equal(used, len);
    return p;
}

static void expect_source(const struct proxyproto *p, const char *want)
{
    char s[PROXYPROTO_ADDR_STR_MAX];

    if (!want) {
        assert_false(p->res.has_addr);
        assert_int_equal(proxyproto_format_source(&p->res, s, sizeof(s)), -EINVAL);
        return;
    }
    assert_true(p->res.has_addr);
    assert_int_equal(proxyproto_format_source(&p->res, s, sizeof(s)), 0);
    assert_string_equal(s, want);
}

/* Every split of in[len] into two pieces, and byte by byte, gives the same result as whole,
 * and bytes after the header are never consumed. */
static void check_splits(const uint8_t *in, size_t len)
{
    struct proxyproto whole, p;
    uint8_t buf[4096];
    size_t used, hdr;
    enum proxyproto_status st;

    assert_true(len + 5 <= sizeof(buf));
    memcpy(buf, in, len);
    memcpy(buf + len, "\x00\x00\x00\x08X", 5); /* the client's first bytes */
    proxyproto_init(&whole);
    st = proxyproto_feed(&whole, buf, len + 5, &used);
    hdr = st == PROXYPROTO_DONE ? used : 0;
    if (st == PROXYPROTO_DONE)
        assert_int_equal(used, len);
    for (size_t cut = 0; cut <= len + 5; cut++) {
        enum proxyproto_status st1;
        size_t u1, u2;

        proxyproto_init(&p);
        st1 = proxyproto_feed(&p, buf, cut, &u1);
        if (st1 == PROXYPROTO_NEED_MORE) {
            assert_int_equal(u1, cut);
            st1 = proxyproto_feed(&p, buf + cut, len + 5 - cut, &u2);
            u1 += u2;
        }
        assert_int_equal(st1, st);
        if (st == PROXYPROTO_DONE) {
            assert_int_equal(u1, hdr);
            assert_memory_equal(&p.res, &whole.res, sizeof(p.res));
        }
    }
    proxyproto_init(&p);
    st = PROXYPROTO_NEED_MORE;
    for (size_t i = 0; i < len + 5 && st == PROXYPROTO_NEED_MORE; i++) {
        st = proxyproto_feed(&p, buf + i, 1, &used);
        if (st == PROXYPROTO_DONE)
            assert_int_equal(i + 1, hdr);
    }
    assert_int_equal(st, whole.status);
}

static void v1_ok(const char *line, const char *source)
{
    struct proxyproto p = feed_whole((const uint8_t *)line, strlen(line), PROXYPROTO_DONE);

    assert_int_equal(p.res.version, 1);
    assert_int_equal(p.res.header_len, strlen(line));
    expect_source(&p, source);
    check_splits((const uint8_t *)line, strlen(line));
}

static void v1_bad(const char *line)
{
    struct proxyproto p = feed_whole((const uint8_t *)line, strlen(line), PROXYPROTO_ERROR);

    assert_true(p.err[0] != '\0');
    check_splits((const uint8_t *)line, strlen(line));
}

static void test_v1(void **state)
{
    v1_ok("PROXY TCP4 192.0.2.7 198.51.100.1 56324 5432\r\n", "192.0.2.7:56324");
    v1_ok("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "255.255.255.255:65535");
    v1_ok("PROXY TCP4 10.0.0.1 10.0.0.2 0 0\r\n", "10.0.0.1:0");
    v1_ok("PROXY TCP6 2001:db8::1 2001:db8::2 4000 5432\r\n", "[2001:db8::1]:4000");
    v1_ok("PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n", "[::ffff:10.1.2.3]:1");
    v1_ok("PROXY UNKNOWN\r\n", NULL);
    v1_ok("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", NULL);

    /* the longest line the spec allows: 107 bytes */
    const char *longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(longest), PROXYPROTO_V1_MAX);
    v1_ok(longest, NULL);
    v1_ok("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
          "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

static void test_v1_bad(void **state)
{
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 56324 5432\n");    /* LF alone */
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 56324 5432\rX\n"); /* CR alone */
    v1_bad("PROXY TCP5 192.0.2.7 198.51.100.1 56324 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 56324 5432 1\r\n");
    v1_bad("PROXY TCP4 192.0.2.7  198.51.100.1 56324 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 56324 5432 \r\n");
    v1_bad("PROXY TCP4 192.0.2.256 198.51.100.1 56324 5432\r\n");
    v1_bad("PROXY TCP4 2001:db8::1 198.51.100.1 56324 5432\r\n"); /* family mismatch */
    v1_bad("PROXY TCP6 192.0.2.7 2001:db8::1 56324 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 65536 5432\r\n"); /* port out of range */
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 99999 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 123456 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 056 5432\r\n"); /* leading zero */
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1 -1 5432\r\n");
    v1_bad("PROXY TCP4 192.0.2.7 198.51.100.1  5432\r\n");
    v1_bad("PROXY\r\n");
    v1_bad("PROXY \r\n");
    v1_bad("PROXX TCP4 192.0.2.7 198.51.100.1 1 2\r\n");
    v1_bad("proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n");
    v1_bad("GET / HTTP/1.0\r\n");

    /* 107 bytes without CRLF: refused at the 107th, nothing more read */
    char line[200];
    memset(line, 'A', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    struct proxyproto p;
    size_t used;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, (const uint8_t *)line, sizeof(line), &used),
                     PROXYPROTO_ERROR);
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, (const uint8_t *)line, PROXYPROTO_V1_MAX - 1, &used),
                     PROXYPROTO_NEED_MORE);
    assert_int_equal(proxyproto_feed(&p, (const uint8_t *)line, 1, &used), PROXYPROTO_ERROR);
    /* a NUL inside the line */
    const uint8_t nul[] = "PROXY UNKNOWN a\0b\r\n";
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, nul, sizeof(nul) - 1, &used), PROXYPROTO_ERROR);
}

static void test_v2_inet(void **state)
{
    uint8_t hdr[64];
    const uint8_t body[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xDC, 0x04, 0x15, 0x38};
    size_t n = v2(hdr, 0x21, 0x11, body, sizeof(body));
    struct proxyproto p = feed_whole(hdr, n, PROXYPROTO_DONE);

    assert_int_equal(p.res.version, 2);
    assert_false(p.res.local);
    assert_int_equal(p.res.family, AF_INET);
    assert_int_equal(p.res.header_len, 28);
    assert_int_equal(p.res.dst_port, 5432);
    expect_source(&p, "192.0.2.7:56324");
    check_splits(hdr, n);
}

static void test_v2_inet6(void **state)
{
    uint8_t hdr[128], body[36];
    memset(body, 0, sizeof(body));
    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "2001:db8::1", body + 16);
    body[32] = 0xFF;
    body[33] = 0xFF;
    body[35] = 1;
    size_t n = v2(hdr, 0x21, 0x21, body, sizeof(body));
    struct proxyproto p = feed_whole(hdr, n, PROXYPROTO_DONE);

    assert_int_equal(p.res.family, AF_INET6);
    assert_int_equal(p.res.dst_port, 1);
    expect_source(&p, "[2001:db8::7]:65535");
    check_splits(hdr, n);
}

/* TLVs after the addresses (HAProxy's unique id, AWS's VPC endpoint id ...) are skipped. */
static void test_v2_tlvs(void **state)
{
    uint8_t hdr[PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN], body[PROXYPROTO_V2_MAX_LEN];
    memset(body, 0xAB, sizeof(body));
    const uint8_t a[12] = {10, 1, 2, 3, 10, 9, 9, 9, 0x30, 0x39, 0x15, 0x38};
    memcpy(body, a, sizeof(a));
    body[12] = 0x04; /* PP2_TYPE_NOOP */
    body[13] = 0;
    body[14] = 3;

    size_t n = v2(hdr, 0x21, 0x11, body, 20);
    struct proxyproto p = feed_whole(hdr, n, PROXYPROTO_DONE);
    expect_source(&p, "10.1.2.3:12345");
    check_splits(hdr, n);

    /* the largest accepted */
    n = v2(hdr, 0x21, 0x11, body, PROXYPROTO_V2_MAX_LEN);
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    assert_int_equal(p.res.header_len, PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN);
    expect_source(&p, "10.1.2.3:12345");
}

static void test_v2_no_address(void **state)
{
    uint8_t hdr[400], body[300];
    struct proxyproto p;
    size_t n;

    memset(body, 7, sizeof(body));
    /* LOCAL: a health check; whatever its family says is ignored */
    n = v2(hdr, 0x20, 0x00, NULL, 0);
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    assert_true(p.res.local);
    assert_int_equal(p.res.header_len, 16);
    expect_source(&p, NULL);
    check_splits(hdr, n);
    n = v2(hdr, 0x20, 0x11, body, 12);
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    assert_true(p.res.local);
    expect_source(&p, NULL);
    n = v2(hdr, 0x20, 0xFF, body, 5); /* LOCAL: family and length not checked */
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    expect_source(&p, NULL);
    check_splits(hdr, n);
    /* PROXY over UNSPEC */
    n = v2(hdr, 0x21, 0x00, NULL, 0);
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    assert_false(p.res.local);
    expect_source(&p, NULL);
    /* PROXY over UNIX stream: no IP address */
    n = v2(hdr, 0x21, 0x31, body, 216);
    p = feed_whole(hdr, n, PROXYPROTO_DONE);
    expect_source(&p, NULL);
    check_splits(hdr, n);
}

static void v2_bad(uint8_t ver_cmd, uint8_t fam, size_t blen)
{
    uint8_t hdr[PROXYPROTO_V2_HDR + 300], body[300];

    memset(body, 1, sizeof(body));
    assert_true(blen <= sizeof(body));
    size_t n = v2(hdr, ver_cmd, fam, body, blen);
    struct proxyproto p = feed_whole(hdr, n, PROXYPROTO_ERROR);
    assert_true(p.err[0] != '\0');
    check_splits(hdr, n);
}

static void test_v2_bad(void **state)
{
    v2_bad(0x11, 0x11, 12); /* version 1 in the v2 format */
    v2_bad(0x31, 0x11, 12); /* version 3 */
    v2_bad(0x22, 0x11, 12); /* unknown command */
    v2_bad(0x2F, 0x11, 12);
    v2_bad(0x21, 0x41, 12); /* unknown family */
    v2_bad(0x21, 0x13, 12); /* unknown transport */
    v2_bad(0x21, 0x12, 12); /* INET over DGRAM */
    v2_bad(0x21, 0x02, 0);  /* UNSPEC over DGRAM */
    v2_bad(0x21, 0x10, 12); /* INET, transport UNSPEC */
    v2_bad(0x21, 0x11, 11); /* address block too short */
    v2_bad(0x21, 0x11, 0);
    v2_bad(0x21, 0x21, 35);
    v2_bad(0x21, 0x21, 12);
    v2_bad(0x21, 0x31, 215);

    /* oversized: refused at the 16th byte, before any of the block */
    uint8_t hdr[16];
    struct proxyproto p;
    size_t used;
    v2(hdr, 0x21, 0x11, NULL, 0);
    hdr[14] = (PROXYPROTO_V2_MAX_LEN + 1) >> 8;
    hdr[15] = (PROXYPROTO_V2_MAX_LEN + 1) & 0xFF;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, hdr, 16, &used), PROXYPROTO_ERROR);
    hdr[14] = hdr[15] = 0xFF;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, hdr, 16, &used), PROXYPROTO_ERROR);

    /* bad signature at every position */
    for (size_t i = 0; i < 12; i++) {
        uint8_t h[28];
        const uint8_t body[12] = {0};
        v2(h, 0x21, 0x11, body, 12);
        h[i] ^= 0x40;
        proxyproto_init(&p);
        assert_int_equal(proxyproto_feed(&p, h, sizeof(h), &used), PROXYPROTO_ERROR);
    }
}

static void test_truncated(void **state)
{
    uint8_t hdr[64];
    const uint8_t body[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2};
    size_t n = v2(hdr, 0x21, 0x11, body, sizeof(body));
    const char *line = "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n";

    for (size_t i = 0; i < n; i++)
        feed_whole(hdr, i, PROXYPROTO_NEED_MORE);
    for (size_t i = 0; i < strlen(line); i++)
        feed_whole((const uint8_t *)line, i, PROXYPROTO_NEED_MORE);
}

static void test_done_and_error_stick(void **state)
{
    struct proxyproto p;
    size_t used = 99;
    const uint8_t line[] = "PROXY UNKNOWN\r\nPROXY TCP4";

    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, line, sizeof(line) - 1, &used), PROXYPROTO_DONE);
    assert_int_equal(used, 15);
    assert_int_equal(proxyproto_feed(&p, line, sizeof(line) - 1, &used), PROXYPROTO_DONE);
    assert_int_equal(used, 0);
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, (const uint8_t *)"\x16\x03\x01", 3, &used),
                     PROXYPROTO_ERROR);
    assert_int_equal(proxyproto_feed(&p, line, sizeof(line) - 1, &used), PROXYPROTO_ERROR);
    /* nothing fed: nothing decided */
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, line, 0, &used), PROXYPROTO_NEED_MORE);
    assert_int_equal(used, 0);
}

static void test_looks_like_header(void **state)
{
    const uint8_t ssl[8] = {0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F};

    assert_true(proxyproto_looks_like_header((const uint8_t *)"PROXY TCP4 1", 8));
    assert_true(proxyproto_looks_like_header(sig, 8));
    assert_true(proxyproto_looks_like_header(sig, 12));
    assert_false(proxyproto_looks_like_header(sig, 5));
    assert_false(proxyproto_looks_like_header(ssl, 8));
    assert_false(proxyproto_looks_like_header((const uint8_t *)"PROXYXXX", 8));
}

static void test_format(void **state)
{
    struct proxyproto_result r;
    char s[PROXYPROTO_ADDR_STR_MAX];

    memset(&r, 0, sizeof(r));
    r.has_addr = true;
    r.family = AF_INET6;
    memset(r.src, 0xFF, 16);
    r.src_port = 65535;
    assert_int_equal(proxyproto_format_source(&r, s, sizeof(s)), 0);
    assert_string_equal(s, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    assert_int_equal(proxyproto_format_source(&r, s, 10), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),
        cmocka_unit_test(test_v1_bad),
        cmocka_unit_test(test_v2_inet),
        cmocka_unit_test(test_v2_inet6),
        cmocka_unit_test(test_v2_tlvs),
        cmocka_unit_test(test_v2_no_address),
        cmocka_unit_test(test_v2_bad),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_done_and_error_stick),
        cmocka_unit_test(test_looks_like_header),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
