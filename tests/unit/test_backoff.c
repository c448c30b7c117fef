/* Unit tests: the agent's reconnect backoff (full jitter, capped, first retry small). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent/links.h"

static void first_retry_is_within_base(void **state)
{
    (void)state;
    for (uint64_t rnd = 0; rnd < 100000; rnd += 7919)
        assert_true(agent_backoff_ms(100, 30000, 0, rnd) <= 100);
}

static void ceiling_doubles_then_caps(void **state)
{
    (void)state;
    /* with rnd = UINT64_MAX - k the result approaches the ceiling; check the exact ceiling */
    assert_int_equal(agent_backoff_ms(100, 30000, 0, 100), 100);
    assert_int_equal(agent_backoff_ms(100, 30000, 1, 200), 200);
    assert_int_equal(agent_backoff_ms(100, 30000, 3, 800), 800);
    assert_int_equal(agent_backoff_ms(100, 30000, 9, 30000), 30000);
    assert_int_equal(agent_backoff_ms(100, 30000, 63, 30000), 30000);
    for (uint32_t attempt = 0; attempt < 64; attempt++)
        assert_true(agent_backoff_ms(100, 30000, attempt, UINT64_MAX) <= 30000);
}

static void jitter_spreads(void **state)
{
    (void)state;
    /* full jitter: values below half the ceiling occur too */
    int low = 0;
    for (uint64_t rnd = 1; rnd < 1000; rnd++)
        if (agent_backoff_ms(100, 30000, 5, rnd * 2654435761u) < 1600)
            low++;
    assert_true(low > 200);
}

static void zero_base_is_zero(void **state)
{
    (void)state;
    assert_int_equal(agent_backoff_ms(0, 30000, 5, 12345), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_retry_is_within_base),
        cmocka_unit_test(ceiling_doubles_then_caps),
        cmocka_unit_test(jitter_spreads),
        cmocka_unit_test(zero_base_is_zero),
    };
    return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
