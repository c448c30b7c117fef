/* Unit tests: per-route counters follow the configured routes; an entry in use survives its
 * route's removal until it is idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/route_stats.h"

static void follows_the_configuration(void **state)
{
    (void)state;
    struct route_stats_table t = {0};
    const char *first[] = {"a", "b"};
    const char *second[] = {"a", "c"};
    struct route_stats *a, *b;

    route_stats_sync(&t, first, 2);
    assert_int_equal(t.n, 2);
    a = route_stats_find(&t, "a");
    b = route_stats_find(&t, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(route_stats_find(&t, "c"));
    a->total = 5;
    b->active = 1; /* a session of b still runs */

    route_stats_sync(&t, second, 2);
    assert_int_equal(t.n, 3);
    assert_ptr_equal(route_stats_find(&t, "a"), a); /* kept, with its counts */
    assert_int_equal(a->total, 5);
    assert_ptr_equal(route_stats_find(&t, "b"), b); /* removed but in use */
    assert_non_null(route_stats_find(&t, "c"));

    b->active = 0;
    b->live_to_client = 7;
    route_stats_live_reset(&t);
    assert_int_equal(b->live_to_client, 0);
    route_stats_sync(&t, second, 2); /* idle now: gone */
    assert_int_equal(t.n, 2);
    assert_null(route_stats_find(&t, "b"));

    route_stats_sync(&t, NULL, 0);
    assert_int_equal(t.n, 0);
    route_stats_free(&t);
    route_stats_free(&t);
}

static void long_names_are_not_counted(void **state)
{
    (void)state;
    struct route_stats_table t = {0};
    char name[PROTO_NAME_MAX + 8];
    const char *names[] = {name};

    memset(name, 'r', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    route_stats_sync(&t, names, 1);
    assert_int_equal(t.n, 0);
    route_stats_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(follows_the_configuration),
        cmocka_unit_test(long_names_are_not_counted),
    };
    return cmocka_run_group_tests_name("route_stats", tests, NULL, NULL);
}
