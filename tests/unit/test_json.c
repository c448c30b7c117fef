/* Unit tests: common/json, the one-line JSON writer of the audit log. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/json.h"

static void members_and_arrays(void **state)
{
    char buf[256];
    struct json_writer w;
    (void)state;
    json_begin(&w, buf, sizeof(buf));
    json_str(&w, "event", "tunnel_up");
    json_u64(&w, "n", 18446744073709551615ull);
    json_bool(&w, "t", true);
    json_null(&w, "z");
    json_str(&w, "s", NULL);
    json_array_begin(&w, "routes");
    json_str(&w, NULL, "a");
    json_strn(&w, NULL, "bc", 1);
    json_array_end(&w);
    json_array_begin(&w, "empty");
    json_array_end(&w);
    int n = json_end(&w);
    const char *want = "{\"event\":\"tunnel_up\",\"n\":18446744073709551615,\"t\":true,"
                       "\"z\":null,\"s\":null,\"routes\":[\"a\",\"b\"],\"empty\":[]}\n";
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);
}

static void escaping(void **state)
{
    char buf[256];
    struct json_writer w;
    (void)state;
    json_begin(&w, buf, sizeof(buf));
    /* quote, backslash, control characters, DEL, valid UTF-8 (2, 3 and 4 bytes) */
    json_str(&w, "k\"", "a\"b\\c\n\t\x01\x7f \xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80");
    assert_true(json_end(&w) > 0);
    assert_string_equal(buf, "{\"k\\\"\":\"a\\\"b\\\\c\\n\\t\\u0001\\u007f "
                             "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80\"}\n");
}

static void invalid_utf8_is_replaced(void **state)
{
    char buf[256];
    struct json_writer w;
    (void)state;
    json_begin(&w, buf, sizeof(buf));
    /* lone continuation, overlong '/', surrogate U+D800, > U+10FFFF, truncated sequence */
    json_strn(&w, "t", "\x80|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x9c", 16);
    assert_true(json_end(&w) > 0);
    assert_string_equal(buf, "{\"t\":\"\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
                             "\\ufffd\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd\"}\n");
    /* NUL bytes inside a counted string are escaped, not cut */
    json_begin(&w, buf, sizeof(buf));
    json_strn(&w, "t", "a\0b", 3);
    assert_true(json_end(&w) > 0);
    assert_string_equal(buf, "{\"t\":\"a\\u0000b\"}\n");
    assert_int_equal(json_escaped_len("\x80", 1), 6);
}

static void overflow_never_writes_a_cut_line(void **state)
{
    char buf[32];
    struct json_writer w;
    (void)state;
    json_begin(&w, buf, sizeof(buf));
    json_str(&w, "a", "1");
    json_str(&w, "long", "this does not fit in thirty-two bytes");
    assert_true(w.overflow);
    assert_int_equal(json_end(&w), -ENOSPC);
    /* what is in the buffer is still the well-formed prefix */
    assert_int_equal(w.len, strlen("{\"a\":\"1\""));
    /* every size from tiny up: either a complete line or -ENOSPC */
    for (size_t cap = 0; cap <= sizeof(buf); cap++) {
        json_begin(&w, buf, cap);
        json_str(&w, "k", "value");
        int n = json_end(&w);
        if (n > 0)
            assert_string_equal(buf, "{\"k\":\"value\"}\n");
        else
            assert_int_equal(n, -ENOSPC);
    }
}

static void unbalanced_arrays_fail(void **state)
{
    char buf[64];
    struct json_writer w;
    (void)state;
    json_begin(&w, buf, sizeof(buf));
    json_array_begin(&w, "a");
    assert_int_equal(json_end(&w), -ENOSPC);
    json_begin(&w, buf, sizeof(buf));
    json_array_end(&w);
    assert_int_equal(json_end(&w), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(members_and_arrays),
        cmocka_unit_test(escaping),
        cmocka_unit_test(invalid_utf8_is_replaced),
        cmocka_unit_test(overflow_never_writes_a_cut_line),
        cmocka_unit_test(unbalanced_arrays_fail),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
