/* Unit tests for relay/admin_wire: the admin console's command parser, the backend messages it
 * builds and the extended-protocol messages it reads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "relay/admin_wire.h"

static int parse(const char *text, struct admin_cmd *cmd, const char **sqlstate)
{
    char err[256];

    return admin_cmd_parse(text, strlen(text), cmd, sqlstate, err, sizeof(err));
}

static void test_parse_commands(void **state)
{
    struct admin_cmd cmd;
    const char *sqlstate;

    assert_int_equal(parse("SHOW SESSIONS", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_SESSIONS);
    assert_int_equal(parse("  show\tRoutes ;  ", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_ROUTES);
    assert_int_equal(parse("show agents;", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_AGENTS);
    assert_int_equal(parse("SHOW TUNNELS", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_TUNNELS);
    assert_int_equal(parse("SHOW STATS", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_STATS);
    assert_int_equal(parse("SHOW CONFIG", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_CONFIG);
    assert_int_equal(parse("SHOW VERSION", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SHOW_VERSION);
    assert_int_equal(parse("reload", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_RELOAD);
    assert_int_equal(parse("DRAIN AGENT db1-agent.a_2", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_DRAIN_AGENT);
    assert_string_equal(cmd.arg, "db1-agent.a_2");
    assert_int_equal(parse("kill session 0123456789abcdef;", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_KILL_SESSION);
    assert_string_equal(cmd.arg, "0123456789abcdef");
    /* drivers' SETs are accepted whatever they say; an empty query is one */
    assert_int_equal(parse("SET extra_float_digits = 3", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SET);
    assert_int_equal(parse("set application_name = 'PostgreSQL JDBC Driver'", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_SET);
    assert_int_equal(parse(" ; ", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_EMPTY);
    assert_int_equal(parse("", &cmd, &sqlstate), 0);
    assert_int_equal(cmd.kind, ADMIN_EMPTY);
    /* the text ends at a NUL, as a Query message's does */
    assert_int_equal(admin_cmd_parse("RELOAD\0junk", 11, &cmd, &sqlstate, NULL, 0), 0);
    assert_int_equal(cmd.kind, ADMIN_RELOAD);
}

static void test_parse_errors(void **state)
{
    struct admin_cmd cmd;
    const char *sqlstate;
    char err[256], big[2048];

    assert_int_equal(admin_cmd_parse("SELECT 1", 8, &cmd, &sqlstate, err, sizeof(err)), -EINVAL);
    assert_string_equal(sqlstate, "42601");
    assert_non_null(strstr(err, "syntax error at or near \"SELECT\""));
    assert_int_equal(parse("SHOW nothing", &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42704");
    assert_int_equal(parse("SHOW", &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42601");
    assert_int_equal(parse("SHOW SESSIONS extra", &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42601");
    assert_int_equal(parse("SHOW SESSIONS; SHOW STATS", &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42601");
    assert_int_equal(parse("SET a = 1; SELECT 1", &cmd, &sqlstate), -EINVAL);
    assert_int_equal(parse("RELOAD now", &cmd, &sqlstate), -EINVAL);
    assert_int_equal(parse("DRAIN AGENT", &cmd, &sqlstate), -EINVAL);
    assert_int_equal(parse("DRAIN agents x", &cmd, &sqlstate), -EINVAL);
    assert_int_equal(parse("KILL SESSION a b c d e f", &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42601");
    assert_int_equal(parse("KILL SESSION a\x01"
                           "b",
                           &cmd, &sqlstate),
                     -EINVAL);
    memset(big, 'x', 100);
    memcpy(big, "DRAIN AGENT ", 12);
    big[100] = '\0';
    assert_int_equal(parse(big, &cmd, &sqlstate), -EINVAL);
    assert_string_equal(sqlstate, "42704"); /* a name longer than any agent's */
    memset(big, ' ', sizeof(big));
    memcpy(big, "SHOW STATS", 10);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(parse(big, &cmd, &sqlstate), -EINVAL); /* longer than ADMIN_CMD_TEXT_MAX */
}

static void test_columns_and_tags(void **state)
{
    size_t n;
    const struct admin_col *c = admin_cmd_columns(ADMIN_SHOW_SESSIONS, &n);

    assert_int_equal(n, 15);
    assert_string_equal(c[0].name, "sid");
    assert_int_equal(c[13].type, ADMIN_INT8);
    assert_true(n <= ADMIN_MAX_COLS);
    c = admin_cmd_columns(ADMIN_SHOW_STATS, &n);
    assert_int_equal(n, 2);
    assert_null(admin_cmd_columns(ADMIN_RELOAD, &n));
    assert_int_equal(n, 0);
    assert_string_equal(admin_cmd_tag(ADMIN_SHOW_ROUTES), "SHOW");
    assert_string_equal(admin_cmd_tag(ADMIN_RELOAD), "RELOAD");
    assert_string_equal(admin_cmd_tag(ADMIN_DRAIN_AGENT), "DRAIN");
    assert_string_equal(admin_cmd_tag(ADMIN_KILL_SESSION), "KILL");
    assert_string_equal(admin_cmd_tag(ADMIN_SET), "SET");
    assert_null(admin_cmd_tag(ADMIN_EMPTY));
}

static void test_messages(void **state)
{
    struct admin_out o;
    static const struct admin_col cols[] = {{"name", ADMIN_TEXT}, {"n", ADMIN_INT8}};
    struct admin_val v[] = {{.s = "ab"}, {.i = 258}};
    struct admin_val nul[] = {{.s = NULL}, {.i = -1}};
    int16_t binary = 1;

    admin_out_init(&o, 4096);
    admin_put_ready(&o);
    assert_int_equal(o.len, 6);
    assert_memory_equal(o.p, "Z\0\0\0\5I", 6);
    admin_out_reset(&o);
    admin_put_command_complete(&o, "SHOW 2");
    assert_memory_equal(o.p, "C\0\0\0\13SHOW 2\0", 12);
    admin_out_reset(&o);
    admin_put_data_row(&o, cols, v, 2, NULL, 0);
    assert_int_equal(o.len, 1 + 4 + 2 + 4 + 2 + 4 + 3);
    assert_memory_equal(o.p,
                        "D\0\0\0\23\0\2\0\0\0\2ab\0\0\0\3"
                        "258",
                        o.len);
    admin_out_reset(&o);
    admin_put_data_row(&o, cols, v, 2, &binary, 1); /* int8 as 8 bytes, text as its bytes */
    assert_memory_equal(o.p, "D\0\0\0\30\0\2\0\0\0\2ab\0\0\0\10\0\0\0\0\0\0\1\2", o.len);
    admin_out_reset(&o);
    admin_put_data_row(&o, cols, nul, 2, NULL, 0);
    assert_memory_equal(o.p, "D\0\0\0\20\0\2\377\377\377\377\0\0\0\2-1", o.len);
    admin_out_reset(&o);
    admin_put_row_description(&o, cols, 2, NULL, 0);
    /* name, table oid, attnum, type oid (25 text, 20 int8), typlen, typmod -1, format */
    assert_memory_equal(o.p,
                        "T\0\0\0\61\0\2"
                        "name\0\0\0\0\0\0\0\0\0\0\31\377\377\377\377\377\377\0\0"
                        "n\0\0\0\0\0\0\0\0\0\0\24\0\10\377\377\377\377\0\0",
                        o.len);
    admin_out_reset(&o);
    admin_put_error(&o, "ERROR", "42601", "bad");
    assert_memory_equal(o.p, "E\0\0\0\37SERROR\0VERROR\0C42601\0Mbad\0\0", o.len);
    admin_out_free(&o);
}

static void test_out_bounded(void **state)
{
    struct admin_out o;
    char big[300];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    admin_out_init(&o, 256);
    admin_put_ready(&o);
    assert_false(o.failed);
    admin_put_command_complete(&o, big);
    assert_true(o.failed); /* past max: the buffer says so instead of growing */
    admin_out_reset(&o);
    assert_false(o.failed);
    assert_int_equal(o.len, 0);
    admin_out_free(&o);
}

static void test_read_frontend(void **state)
{
    static const uint8_t parse_msg[] = "S_1\0SHOW STATS\0\0\0";
    static const uint8_t bind_msg[] = "P\0S_1\0\0\0\0\0\0\2\0\1\0\0";
    static const uint8_t bind_params[] = "\0\0\0\0\0\1\0\0\0\1x\0\0";
    static const uint8_t bind_bad_format[] = "\0\0\0\0\0\0\0\1\0\2";
    struct admin_parse p;
    struct admin_bind b;
    const char *name;
    char kind;

    assert_int_equal(admin_read_parse(parse_msg, sizeof(parse_msg) - 1, &p), 0);
    assert_string_equal(p.name, "S_1");
    assert_string_equal(p.query, "SHOW STATS");
    assert_int_equal(p.ntypes, 0);
    assert_int_equal(admin_read_parse(parse_msg, 5, &p), -EINVAL);
    assert_int_equal(admin_read_bind(bind_msg, sizeof(bind_msg) - 1, &b), 0);
    assert_string_equal(b.portal, "P");
    assert_string_equal(b.stmt, "S_1");
    assert_int_equal(b.nparams, 0);
    assert_int_equal(b.nformats, 2);
    assert_int_equal(b.formats[0], 1);
    assert_int_equal(b.formats[1], 0);
    assert_int_equal(admin_read_bind(bind_params, sizeof(bind_params) - 1, &b), 0);
    assert_int_equal(b.nparams, 1);
    assert_int_equal(admin_read_bind(bind_bad_format, sizeof(bind_bad_format) - 1, &b), -EINVAL);
    assert_int_equal(admin_read_bind(bind_msg, 6, &b), -EINVAL);
    assert_int_equal(admin_read_target((const uint8_t *)"Sname", 6, &kind, &name), 0);
    assert_int_equal(kind, 'S');
    assert_string_equal(name, "name");
    assert_int_equal(admin_read_target((const uint8_t *)"X\0", 2, &kind, &name), -EINVAL);
    assert_int_equal(admin_read_execute((const uint8_t *)"\0\0\0\0\0", 5, &name), 0);
    assert_string_equal(name, "");
    assert_int_equal(admin_read_execute((const uint8_t *)"\0\0\0", 3, &name), -EINVAL);
    /* a message with an empty body comes without a buffer */
    assert_int_equal(admin_read_query(NULL, 0, &name), -EINVAL);
    assert_int_equal(admin_read_parse(NULL, 0, &p), -EINVAL);
    assert_int_equal(admin_read_bind(NULL, 0, &b), -EINVAL);
    assert_int_equal(admin_read_execute(NULL, 0, &name), -EINVAL);
    assert_int_equal(admin_read_target(NULL, 0, &kind, &name), -EINVAL);
    assert_int_equal(admin_read_query((const uint8_t *)"SHOW", 4, &name), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_commands),   cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_columns_and_tags), cmocka_unit_test(test_messages),
        cmocka_unit_test(test_out_bounded),      cmocka_unit_test(test_read_frontend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
