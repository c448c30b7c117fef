/* Unit tests: pending slots per source, the victim to shed, handshake and log buckets
 * (relay/preauth). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "relay/preauth.h"

static const struct preauth_limits lim = {
    .max_pending = 100, .max_pending_per_source = 3, .handshake_rate = 10, .handshake_burst = 2};

static void per_source_cap_and_release(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    struct preauth_slot s[5];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < 3; i++)
        assert_int_equal(preauth_hold(p, &s[i], "10.0.0.1:1", &lim, (uint64_t)i), 0);
    assert_int_equal(preauth_hold(p, &s[3], "10.0.0.1:2", &lim, 3), -EBUSY);
    assert_false(preauth_held(&s[3]));
    assert_int_equal(preauth_hold(p, &s[4], "10.0.0.2:1", &lim, 4), 0);
    assert_int_equal(preauth_pending(p), 4);
    assert_int_equal(preauth_source_pending(&s[0]), 3);
    preauth_release(p, &s[1]);
    preauth_release(p, &s[1]); /* idempotent */
    assert_int_equal(preauth_pending(p), 3);
    assert_int_equal(preauth_hold(p, &s[3], "10.0.0.1:2", &lim, 5), 0);
    for (int i = 0; i < 5; i++)
        preauth_release(p, &s[i]);
    assert_int_equal(preauth_pending(p), 0);
    preauth_free(p);
}

static void victim_is_oldest_of_heaviest(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    struct preauth_slot a1, a2, b1, c1;
    memset(&a1, 0, sizeof(a1));
    b1 = c1 = a2 = a1;
    assert_int_equal(preauth_hold(p, &b1, "10.0.0.2:1", &lim, 1), 0);
    assert_int_equal(preauth_hold(p, &a1, "10.0.0.1:1", &lim, 2), 0);
    assert_int_equal(preauth_hold(p, &c1, "10.0.0.3:1", &lim, 3), 0);
    /* all tied at one: the oldest of all */
    assert_ptr_equal(preauth_victim(p), &b1);
    assert_int_equal(preauth_hold(p, &a2, "10.0.0.1:2", &lim, 4), 0);
    assert_ptr_equal(preauth_victim(p), &a1);
    preauth_release(p, &a1);
    assert_ptr_equal(preauth_victim(p), &b1); /* ties again; b1 is the oldest */
    preauth_release(p, &a2);
    preauth_release(p, &b1);
    preauth_release(p, &c1);
    assert_null(preauth_victim(p));
    preauth_free(p);
}

static void deadlines(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    struct preauth_slot s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(preauth_hold(p, &s, "10.0.0.1:1", &lim, 0), 0);
    assert_null(preauth_expired(p, 1000));
    s.deadline_ms = 500;
    assert_null(preauth_expired(p, 499));
    assert_ptr_equal(preauth_expired(p, 500), &s);
    preauth_release(p, &s);
    preauth_free(p);
}

static void handshake_bucket(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    struct preauth_slot s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(preauth_hold(p, &s, "10.0.0.1:1", &lim, 0), 0);
    assert_true(preauth_take_handshake(p, &s, &lim, 0));
    assert_true(preauth_take_handshake(p, &s, &lim, 0));
    assert_false(preauth_take_handshake(p, &s, &lim, 0)); /* burst 2 */
    assert_false(preauth_take_handshake(p, &s, &lim, 99));
    assert_true(preauth_take_handshake(p, &s, &lim, 100)); /* 10/s: one per 100 ms */
    preauth_release(p, &s);
    preauth_free(p);
}

static void log_gate(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    uint64_t suppressed = 99;
    int logged = 0;
    for (int i = 0; i < 100; i++)
        logged += preauth_log_ok(p, "10.0.0.1:1", PREAUTH_TLS, 0, &suppressed);
    assert_int_equal(logged, PREAUTH_LOG_BURST);
    /* another reason of the same source is counted apart */
    assert_true(preauth_log_ok(p, "10.0.0.1:1", PREAUTH_SHED, 0, &suppressed));
    assert_true(preauth_log_ok(p, "10.0.0.1:1", PREAUTH_TLS, 1000, &suppressed));
    assert_int_equal(suppressed, 100 - PREAUTH_LOG_BURST);
    /* relay-wide: many sources, bounded */
    logged = 0;
    for (int i = 0; i < 1000; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "10.1.%d.%d:1", i / 250, i % 250);
        logged += preauth_log_ok(p, peer, PREAUTH_TLS, 2000, &suppressed);
    }
    assert_true(logged <= PREAUTH_LOG_GLOBAL_BURST);
    assert_true(preauth_log_dropped(p) >= 1000 - PREAUTH_LOG_GLOBAL_BURST);
    assert_int_equal(preauth_log_dropped(p), 0);
    preauth_free(p);
}

static void idle_sources_bounded(void **state)
{
    (void)state;
    struct preauth *p = preauth_new();
    struct preauth_slot s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(preauth_hold(p, &s, "192.168.0.1:1", &lim, 0), 0);
    for (int i = 0; i < PREAUTH_IDLE_SOURCES * 3; i++) {
        char peer[32];
        uint64_t sup;
        snprintf(peer, sizeof(peer), "10.%d.%d.%d:1", i >> 16, (i >> 8) & 255, i & 255);
        preauth_log_ok(p, peer, PREAUTH_TLS, 0, &sup);
    }
    /* the busy source was never evicted */
    assert_int_equal(preauth_source_pending(&s), 1);
    preauth_release(p, &s);
    preauth_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(per_source_cap_and_release),
        cmocka_unit_test(victim_is_oldest_of_heaviest),
        cmocka_unit_test(deadlines),
        cmocka_unit_test(handshake_bucket),
        cmocka_unit_test(log_gate),
        cmocka_unit_test(idle_sources_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
