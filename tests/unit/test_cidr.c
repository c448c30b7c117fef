/* Unit tests for common/cidr: parsing ranges and addresses, matching across families. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/cidr.h"

static bool in(const char *range, const char *addr)
{
    struct cidr c;
    uint8_t a[16];
    char err[PGB_ERR_MAX];

    assert_int_equal(cidr_parse(range, &c, err, sizeof(err)), 0);
    assert_int_equal(cidr_addr_parse(addr, a), 0);
    return cidr_match(&c, a);
}

static void test_ipv4(void **state)
{
    assert_true(in("10.0.0.0/8", "10.1.2.3"));
    assert_true(in("10.0.0.0/8", "10.255.255.255"));
    assert_false(in("10.0.0.0/8", "11.0.0.0"));
    assert_false(in("10.0.0.0/8", "127.0.0.1"));
    assert_true(in("192.168.1.7", "192.168.1.7"));
    assert_false(in("192.168.1.7", "192.168.1.8"));
    assert_true(in("0.0.0.0/0", "203.0.113.9"));
    assert_true(in("172.16.0.0/12", "172.31.255.1"));
    assert_false(in("172.16.0.0/12", "172.32.0.1"));
    assert_true(in("198.51.100.128/25", "198.51.100.200"));
    assert_false(in("198.51.100.128/25", "198.51.100.127"));
}

static void test_ipv6(void **state)
{
    assert_true(in("::1", "::1"));
    assert_false(in("::1", "::2"));
    assert_true(in("2001:db8::/32", "2001:db8:1::5"));
    assert_false(in("2001:db8::/32", "2001:db9::5"));
    assert_true(in("fe80::/10", "febf::1"));
    assert_false(in("fe80::/10", "fec0::1"));
    assert_true(in("::/0", "2001:db8::1"));
}

static void test_mapped(void **state)
{
    /* a client on a dual-stack socket shows up as ::ffff:a.b.c.d */
    assert_true(in("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_false(in("10.0.0.0/8", "::ffff:11.1.2.3"));
    assert_true(in("127.0.0.1", "[::ffff:127.0.0.1]:5432"));
    assert_true(in("::ffff:10.0.0.0/104", "10.9.9.9"));
    /* IPv4 ranges never match IPv6 addresses outside the mapped block */
    assert_false(in("0.0.0.0/0", "::1"));
    assert_false(in("0.0.0.0/0", "2001:db8::1"));
    /* an IPv6 range that covers the mapped block covers IPv4 */
    assert_true(in("::/0", "10.1.2.3"));
}

static void test_addr_with_port(void **state)
{
    uint8_t a[16], b[16];

    assert_int_equal(cidr_addr_parse("127.0.0.1:5432", a), 0);
    assert_int_equal(cidr_addr_parse("127.0.0.1", b), 0);
    assert_memory_equal(a, b, 16);
    assert_int_equal(cidr_addr_parse("[::1]:5432", a), 0);
    assert_int_equal(cidr_addr_parse("::1", b), 0);
    assert_memory_equal(a, b, 16);
    assert_int_equal(cidr_addr_parse("[::1]", a), 0);
    assert_int_equal(cidr_addr_parse("unix", a), -EINVAL);
    assert_int_equal(cidr_addr_parse("", a), -EINVAL);
    assert_int_equal(cidr_addr_parse("[::1", a), -EINVAL);
    assert_int_equal(cidr_addr_parse("[::1]x", a), -EINVAL);
    assert_int_equal(cidr_addr_parse("localhost:5432", a), -EINVAL);
}

static void test_parse_errors(void **state)
{
    struct cidr c;
    char err[PGB_ERR_MAX];
    const char *bad[] = {"",
                         "10.0.0.0/33",
                         "::/129",
                         "10.0.0.0/",
                         "10.0.0.0/-1",
                         "10.0.0/8",
                         "example.com",
                         "10.0.0.0/8x",
                         "10.1.2.3/8",
                         "2001:db8::1/32",
                         "10.0.0.0/ 8",
                         "1.2.3.4/+8",
                         NULL};

    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        assert_int_equal(cidr_parse(bad[i], &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "invalid address range"));
    }
    assert_int_equal(cidr_parse("10.1.2.3/8", &c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "bits are set after the /8 prefix"));
    assert_int_equal(cidr_parse("10.0.0.0/8", &c, err, sizeof(err)), 0);
    assert_int_equal(c.bits, 104);
    assert_int_equal(cidr_parse("0.0.0.0/0", &c, err, sizeof(err)), 0);
    assert_int_equal(c.bits, 96);
}

static void test_list(void **state)
{
    struct cidr_list l = {0, NULL};
    char err[PGB_ERR_MAX];
    uint8_t a[16];

    assert_int_equal(cidr_list_parse("10.0.0.0/8, ::1 ,192.168.0.0/16", &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(cidr_addr_parse("192.168.4.4", a), 0);
    assert_true(cidr_list_match(&l, a));
    assert_int_equal(cidr_addr_parse("::1", a), 0);
    assert_true(cidr_list_match(&l, a));
    assert_int_equal(cidr_addr_parse("127.0.0.1", a), 0);
    assert_false(cidr_list_match(&l, a));
    /* a bad list leaves the old one in place */
    assert_int_equal(cidr_list_parse("10.0.0.0/8, bogus", &l, err, sizeof(err)), -EINVAL);
    assert_int_equal(l.n, 3);
    assert_int_equal(cidr_list_parse("10.0.0.0/8,,::1", &l, err, sizeof(err)), -EINVAL);
    assert_int_equal(cidr_list_parse("127.0.0.0/8", &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 1);
    assert_true(cidr_list_match(&l, a));
    cidr_list_free(&l);
    assert_int_equal(l.n, 0);
    assert_false(cidr_list_match(&l, a));
    cidr_list_free(&l);
    cidr_list_free(NULL);
}

/* The sources of per-source limits (relay/preauth: /32 and /64; relay/cancel: also /24, /48). */
static void test_source_key(void **state)
{
    uint8_t a[16], b[16], zero[16] = {0};

    cidr_source_key("10.0.0.1:5555", 32, 64, a);
    cidr_source_key("10.0.0.1:6666", 32, 64, b);
    assert_memory_equal(a, b, 16);
    cidr_source_key("[::ffff:10.0.0.1]:1", 32, 64, b);
    assert_memory_equal(a, b, 16); /* a dual-stack listener's IPv4 client */
    cidr_source_key("10.0.0.2:1", 32, 64, b);
    assert_memory_not_equal(a, b, 16);
    cidr_source_key("10.0.0.2:1", 24, 48, b);
    cidr_source_key("10.0.0.250:1", 24, 48, a);
    assert_memory_equal(a, b, 16); /* one /24 */
    cidr_source_key("10.0.1.2:1", 24, 48, a);
    assert_memory_not_equal(a, b, 16);

    cidr_source_key("[2001:db8:1:2:aaaa::1]:1", 32, 64, a);
    cidr_source_key("[2001:db8:1:2:bbbb::9]:2", 32, 64, b);
    assert_memory_equal(a, b, 16); /* one /64 */
    cidr_source_key("[2001:db8:1:3::1]:1", 32, 64, b);
    assert_memory_not_equal(a, b, 16);
    cidr_source_key("[2001:db8:1:ffff::1]:1", 32, 48, a);
    cidr_source_key("[2001:db8:1:3::1]:1", 32, 48, b);
    assert_memory_equal(a, b, 16); /* one /48 */
    static const uint8_t v6_64[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2};
    cidr_source_key("[2001:db8:1:2:aaaa::1]:1", 32, 64, a);
    assert_memory_equal(a, v6_64, 16);

    /* unparsable: one all-zero source */
    cidr_source_key("unix", 32, 64, a);
    assert_memory_equal(a, zero, 16);
    cidr_source_key("[2001:db8::1:1", 32, 64, a);
    assert_memory_equal(a, zero, 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),         cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_mapped),       cmocka_unit_test(test_addr_with_port),
        cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_list),
        cmocka_unit_test(test_source_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
