/* Unit tests: the Prometheus text format writer (families, label escaping, histograms). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "common/metrics.h"

static void escaping(void **state)
{
    (void)state;
    char out[64];

    assert_int_equal(metrics_escape_label("plain", out, sizeof(out)), 5);
    assert_string_equal(out, "plain");
    assert_int_equal(metrics_escape_label("a\\b\"c\nd", out, sizeof(out)), 10);
    assert_string_equal(out, "a\\\\b\\\"c\\nd");
    /* truncated whole escapes only, always terminated */
    assert_int_equal(metrics_escape_label("\"\"\"", out, 4), 6);
    assert_string_equal(out, "\\\"");
    assert_int_equal(metrics_escape_label("x", out, 0), 1);
}

static void samples_and_families(void **state)
{
    (void)state;
    struct metrics_buf b;
    const char *labels[] = {"route", "we\"ird\\\nname", "direction", "to_server", NULL};

    metrics_buf_init(&b);
    metrics_family(&b, "pgburrow_x_total", "counter", "Help with a \\ and a\nnewline.");
    metrics_u64(&b, "pgburrow_x_total", labels, 18446744073709551615ull);
    metrics_u64(&b, "pgburrow_y", NULL, 0);
    metrics_double(&b, "pgburrow_z", NULL, 1.5);
    metrics_double(&b, "pgburrow_z", NULL, 0.028); /* the shortest form that reads back */
    metrics_double(&b, "pgburrow_z", NULL, INFINITY);
    metrics_double(&b, "pgburrow_z", NULL, NAN);
    assert_false(b.failed);
    assert_string_equal(b.data, "# HELP pgburrow_x_total Help with a \\\\ and a\\nnewline.\n"
                                "# TYPE pgburrow_x_total counter\n"
                                "pgburrow_x_total{route=\"we\\\"ird\\\\\\nname\",direction="
                                "\"to_server\"} 18446744073709551615\n"
                                "pgburrow_y 0\n"
                                "pgburrow_z 1.5\n"
                                "pgburrow_z 0.028\n"
                                "pgburrow_z +Inf\n"
                                "pgburrow_z NaN\n");
    metrics_buf_free(&b);
    assert_null(b.data);
    metrics_buf_free(NULL);
}

static void grows(void **state)
{
    (void)state;
    struct metrics_buf b;
    const char *labels[] = {"route", "r", NULL};

    metrics_buf_init(&b);
    for (int i = 0; i < 10000; i++)
        metrics_u64(&b, "pgburrow_sessions_total", labels, (uint64_t)i);
    assert_false(b.failed);
    assert_int_equal(strlen(b.data), b.len);
    assert_true(b.len > 10000 * 30);
    metrics_buf_free(&b);
}

static void histogram(void **state)
{
    (void)state;
    static const double bounds[] = {0.01, 0.1, 1};
    struct metrics_histogram h;
    struct metrics_buf b;
    const char *labels[] = {"route", "db1", NULL};

    metrics_histogram_init(&h, bounds, 3);
    metrics_histogram_observe(&h, 0.005);
    metrics_histogram_observe(&h, 0.01); /* le is inclusive */
    metrics_histogram_observe(&h, 0.5);
    metrics_histogram_observe(&h, 7);
    metrics_buf_init(&b);
    metrics_histogram_write(&b, "pgburrow_setup_seconds", labels, &h);
    assert_false(b.failed);
    assert_string_equal(b.data, "pgburrow_setup_seconds_bucket{route=\"db1\",le=\"0.01\"} 2\n"
                                "pgburrow_setup_seconds_bucket{route=\"db1\",le=\"0.1\"} 2\n"
                                "pgburrow_setup_seconds_bucket{route=\"db1\",le=\"1\"} 3\n"
                                "pgburrow_setup_seconds_bucket{route=\"db1\",le=\"+Inf\"} 4\n"
                                "pgburrow_setup_seconds_sum{route=\"db1\"} 7.515\n"
                                "pgburrow_setup_seconds_count{route=\"db1\"} 4\n");
    metrics_buf_free(&b);
    metrics_buf_init(&b);
    metrics_histogram_write(&b, "h", NULL, &h);
    assert_non_null(strstr(b.data, "h_bucket{le=\"+Inf\"} 4\n"));
    metrics_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escaping),
        cmocka_unit_test(samples_and_families),
        cmocka_unit_test(grows),
        cmocka_unit_test(histogram),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
