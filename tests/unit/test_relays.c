/* Unit tests: the agent's relay-name helpers (addresses from getaddrinfo, set difference). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "agent/relays.h"

typedef char addr_t[AGENT_ADDR_STRLEN];

static void set(addr_t *out, size_t i, const char *s)
{
    snprintf(out[i], AGENT_ADDR_STRLEN, "%s", s);
}

static void diff_adds_and_removes(void **state)
{
    (void)state;
    addr_t cur[3], next[3];
    bool kept[3], fresh[3];
    set(cur, 0, "10.0.0.1");
    set(cur, 1, "10.0.0.2");
    set(cur, 2, "10.0.0.3");
    set(next, 0, "10.0.0.2");
    set(next, 1, "10.0.0.4");
    set(next, 2, "10.0.0.1");
    agent_addrs_diff((const addr_t *)cur, 3, (const addr_t *)next, 3, kept, fresh);
    assert_true(kept[0]);
    assert_true(kept[1]);
    assert_false(kept[2]); /* 10.0.0.3 is gone */
    assert_false(fresh[0]);
    assert_true(fresh[1]); /* 10.0.0.4 is new */
    assert_false(fresh[2]);
}

static void diff_from_and_to_empty(void **state)
{
    (void)state;
    addr_t a[2];
    bool kept[2] = {true, true}, fresh[2] = {false, false};
    set(a, 0, "::1");
    set(a, 1, "127.0.0.1");
    agent_addrs_diff(NULL, 0, (const addr_t *)a, 2, kept, fresh);
    assert_true(fresh[0] && fresh[1]);
    agent_addrs_diff((const addr_t *)a, 2, NULL, 0, kept, fresh);
    assert_false(kept[0] || kept[1]);
}

static void diff_identical_sets(void **state)
{
    (void)state;
    addr_t a[2], b[2];
    bool kept[2], fresh[2];
    set(a, 0, "127.0.0.1");
    set(a, 1, "::1");
    set(b, 0, "::1");
    set(b, 1, "127.0.0.1");
    agent_addrs_diff((const addr_t *)a, 2, (const addr_t *)b, 2, kept, fresh);
    assert_true(kept[0] && kept[1]);
    assert_false(fresh[0] || fresh[1]);
}

/* getaddrinfo lists an address once per socket type and may repeat it: one link each. */
static void addrinfo_dedups_sorts_and_caps(void **state)
{
    (void)state;
    struct sockaddr_in v4[3] = {0};
    struct sockaddr_in6 v6 = {0};
    struct addrinfo ai[5] = {0};
    const char *ips[3] = {"10.0.0.9", "10.0.0.1", "10.0.0.9"};
    for (int i = 0; i < 3; i++) {
        v4[i].sin_family = AF_INET;
        inet_pton(AF_INET, ips[i], &v4[i].sin_addr);
        ai[i].ai_family = AF_INET;
        ai[i].ai_addr = (struct sockaddr *)&v4[i];
        ai[i].ai_addrlen = sizeof(v4[i]);
    }
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::1", &v6.sin6_addr);
    ai[3].ai_family = AF_INET6;
    ai[3].ai_addr = (struct sockaddr *)&v6;
    ai[4].ai_family = AF_UNIX; /* ignored */
    for (int i = 0; i < 4; i++)
        ai[i].ai_next = &ai[i + 1];

    addr_t out[4];
    bool truncated = true;
    size_t n = agent_addrs_from_addrinfo(ai, out, 4, &truncated);
    assert_int_equal(n, 3);
    assert_false(truncated);
    assert_string_equal(out[0], "10.0.0.1");
    assert_string_equal(out[1], "10.0.0.9");
    assert_string_equal(out[2], "::1");

    n = agent_addrs_from_addrinfo(ai, out, 2, &truncated);
    assert_int_equal(n, 2);
    assert_true(truncated);

    char buf[64];
    agent_addrs_join((const addr_t *)out, 2, buf, sizeof(buf));
    assert_string_equal(buf, "10.0.0.1, 10.0.0.9");
    agent_addrs_join((const addr_t *)out, 2, buf, 8); /* truncated, still terminated */
    assert_int_equal(strlen(buf), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diff_adds_and_removes),
        cmocka_unit_test(diff_from_and_to_empty),
        cmocka_unit_test(diff_identical_sets),
        cmocka_unit_test(addrinfo_dedups_sorts_and_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
