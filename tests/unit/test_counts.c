/* Unit tests: the string-keyed live counts behind the per-route and per-source limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/counts.h"

static void add_get_sub(void **state)
{
    (void)state;
    struct counts *c = counts_new();
    assert_non_null(c);
    assert_int_equal(counts_get(c, "db1"), 0);
    assert_int_equal(counts_add(c, "db1"), 0);
    assert_int_equal(counts_add(c, "db1"), 0);
    assert_int_equal(counts_add(c, "db2"), 0);
    assert_int_equal(counts_get(c, "db1"), 2);
    assert_int_equal(counts_get(c, "db2"), 1);
    assert_int_equal(counts_entries(c), 2);
    counts_sub(c, "db1");
    assert_int_equal(counts_get(c, "db1"), 1);
    counts_sub(c, "db1");
    assert_int_equal(counts_get(c, "db1"), 0);
    assert_int_equal(counts_entries(c), 1);
    counts_sub(c, "db1"); /* below zero: no entry, nothing happens */
    assert_int_equal(counts_entries(c), 1);
    counts_free(c);
}

static void many_keys_grow_and_vanish(void **state)
{
    (void)state;
    struct counts *c = counts_new();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(counts_add(c, key), 0);
    }
    assert_int_equal(counts_entries(c), 5000);
    assert_int_equal(counts_get(c, "10.0.3.7"), 1);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
        counts_sub(c, key);
    }
    assert_int_equal(counts_entries(c), 0);
    counts_free(c);
}

static void long_keys_are_cut_consistently(void **state)
{
    (void)state;
    struct counts *c = counts_new();
    char a[200], b[200];
    memset(a, 'x', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[150] = 'y'; /* differs only past COUNTS_KEY_MAX */
    assert_int_equal(counts_add(c, a), 0);
    assert_int_equal(counts_get(c, b), 1);
    counts_sub(c, b);
    assert_int_equal(counts_entries(c), 0);
    counts_free(c);
    counts_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_get_sub),
        cmocka_unit_test(many_keys_grow_and_vanish),
        cmocka_unit_test(long_keys_are_cut_consistently),
    };
    return cmocka_run_group_tests_name("counts", tests, NULL, NULL);
}
