/* Unit tests: relay/audit, the statement parser and the JSON lines it writes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "relay/audit.h"
#include "relay/relay_config.h"

struct fixture {
    char path[64];
    struct audit *a;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    snprintf(f->path, sizeof(f->path), "/tmp/pgburrow-audit-XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    close(fd);
    f->a = audit_new();
    assert_non_null(f->a);
    assert_int_equal(audit_configure(f->a, f->path, true, 16, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    audit_free(f->a);
    unlink(f->path);
    free(f);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    static char buf[1 << 16];
    size_t n = fp ? fread(buf, 1, sizeof(buf) - 1, fp) : 0;
    if (fp)
        fclose(fp);
    buf[n] = '\0';
    return buf;
}

static void msg(uint8_t **p, char type, const void *body, size_t n)
{
    uint32_t len = (uint32_t)n + 4;
    *(*p)++ = (uint8_t)type;
    *(*p)++ = (uint8_t)(len >> 24);
    *(*p)++ = (uint8_t)(len >> 16);
    *(*p)++ = (uint8_t)(len >> 8);
    *(*p)++ = (uint8_t)len;
    memcpy(*p, body, n);
    *p += n;
}

/* A client stream: Q, Parse (named), Bind, Sync, a long Q, an empty-text Parse. */
static size_t stream(uint8_t *buf)
{
    uint8_t *p = buf;
    msg(&p, 'Q', "select 1", 9);
    msg(&p, 'P', "s1\0select $1\0\0\0", 15);
    msg(&p, 'B', "\0s1\0\0\0\0\0\0\0", 10);
    msg(&p, 'S', "", 0);
    msg(&p, 'Q', "select '0123456789abcdefghij'", 30);
    msg(&p, 'P', "\0\0\0\0", 4);
    return (size_t)(p - buf);
}

static const char *const want_texts[] = {
    "\"kind\":\"query\",\"text\":\"select 1\",\"truncated\":false",
    "\"kind\":\"parse\",\"text\":\"select $1\",\"truncated\":false",
    "\"kind\":\"query\",\"text\":\"select '01234567\",\"truncated\":true",
    "\"kind\":\"parse\",\"text\":\"\",\"truncated\":false",
};

static void check_lines(const char *text)
{
    const char *p = text;
    int lines = 0;
    for (size_t i = 0; i < sizeof(want_texts) / sizeof(want_texts[0]); i++) {
        const char *hit = strstr(p, want_texts[i]);
        assert_non_null(hit);
        p = hit + 1;
    }
    for (const char *q = text; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 4);
}

static void statements_whole(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[512];
    size_t n = stream(buf);
    struct audit_stmt *st = audit_stmt_new(f->a, "relay1", "abcd", "db1", "alice");
    assert_non_null(st);
    audit_stmt_authenticated(st);
    assert_true(audit_stmt_filter(st, buf, n));
    audit_stmt_free(st);
    const char *text = slurp(f->path);
    check_lines(text);
    assert_non_null(strstr(text, "\"event\":\"statement\",\"relay\":\"relay1\",\"sid\":\"abcd\","
                                 "\"route\":\"db1\",\"user\":\"alice\""));
}

static void statements_split_everywhere(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[512], copy[512];
    size_t n = stream(buf);
    char err[256];
    /* every split point into two pieces, then one byte at a time */
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(truncate(f->path, 0), 0);
        assert_int_equal(audit_reopen(f->a, err, sizeof(err)), 0);
        struct audit_stmt *st = audit_stmt_new(f->a, "r", "s", "db1", "u");
        audit_stmt_authenticated(st);
        memcpy(copy, buf, n);
        assert_true(audit_stmt_filter(st, copy, cut));
        assert_true(audit_stmt_filter(st, copy + cut, n - cut));
        assert_memory_equal(copy, buf, n); /* the filter never changes the bytes */
        audit_stmt_free(st);
        check_lines(slurp(f->path));
    }
    assert_int_equal(truncate(f->path, 0), 0);
    assert_int_equal(audit_reopen(f->a, err, sizeof(err)), 0);
    struct audit_stmt *st = audit_stmt_new(f->a, "r", "s", "db1", "u");
    audit_stmt_authenticated(st);
    for (size_t i = 0; i < n; i++)
        assert_true(audit_stmt_filter(st, buf + i, 1));
    audit_stmt_free(st);
    check_lines(slurp(f->path));
}

static void bad_length_stops_filtering(void **state)
{
    struct fixture *f = *state;
    uint8_t bad[] = {'Q', 0, 0, 0, 3, 'x'};
    struct audit_stmt *st = audit_stmt_new(f->a, "r", "s", "db1", "u");
    assert_false(audit_stmt_filter(st, bad, sizeof(bad)));
    audit_stmt_free(st);
    assert_string_equal(slurp(f->path), "");
}

static void off_means_nothing(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct audit_session s = {.sid = "x", .client = "[::1]:5432"};
    assert_int_equal(audit_configure(f->a, "", false, 16, err, sizeof(err)), 0);
    assert_false(audit_enabled(f->a));
    assert_null(audit_stmt_new(f->a, "r", "s", "db1", "u"));
    audit_session(f->a, "session_start", &s);
    assert_string_equal(slurp(f->path), "");
    /* on again, statements off: sessions are written, no statement filter */
    assert_int_equal(audit_configure(f->a, f->path, false, 16, err, sizeof(err)), 0);
    assert_null(audit_stmt_new(f->a, "r", "s", "db1", "u"));
    audit_session(f->a, "session_start", &s);
    assert_non_null(strstr(slurp(f->path), "\"client_addr\":\"::1\",\"client_port\":5432"));
}

static void session_end_and_refused(void **state)
{
    struct fixture *f = *state;
    struct audit_session s = {.relay = "r1",
                              .sid = "00ff",
                              .route = "db1",
                              .client = "10.0.0.1:40000",
                              .user = "bob",
                              .authenticated = true,
                              .bytes_in = 10,
                              .bytes_out = 20,
                              .duration_ms = 5,
                              .reason = "closed"};
    audit_session(f->a, "session_end", &s);
    audit_refused(f->a, "r1", "10.0.0.2:1", "28000", "TLS is required");
    audit_tunnel(f->a, "tunnel_up", "r1", "agent-a", "10.0.0.3:2", "a,b", NULL);
    const char *text = slurp(f->path);
    assert_non_null(strstr(text, "\"event\":\"session_end\",\"relay\":\"r1\",\"sid\":\"00ff\","
                                 "\"route\":\"db1\",\"client_addr\":\"10.0.0.1\","
                                 "\"client_port\":40000,\"sni\":null,\"user\":\"bob\","
                                 "\"authenticated\":true"));
    assert_non_null(strstr(text, "\"bytes_in\":10,\"bytes_out\":20,\"duration_ms\":5,"
                                 "\"reason\":\"closed\"}\n"));
    assert_non_null(strstr(text, "\"event\":\"refused\",\"relay\":\"r1\",\"client_addr\":"
                                 "\"10.0.0.2\",\"client_port\":1,\"sqlstate\":\"28000\""));
    assert_non_null(strstr(text, "\"routes\":[\"a\",\"b\"],\"reason\":null}\n"));
}

/* Statements before PostgreSQL's AuthenticationOk are held, written only once it comes, and
 * dropped when it never does; the claimed user is never written as user. */
static void nothing_unauthenticated_is_a_users_act(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[512];
    size_t n = stream(buf);
    char err[256];

    struct audit_stmt *st = audit_stmt_new(f->a, "r", "s", "db1", "alice");
    assert_true(audit_stmt_filter(st, buf, n));
    assert_string_equal(slurp(f->path), ""); /* held */
    audit_stmt_free(st);                     /* authentication failed: dropped */
    assert_string_equal(slurp(f->path), "");

    st = audit_stmt_new(f->a, "r", "s", "db1", "alice");
    assert_true(audit_stmt_filter(st, buf, n));
    audit_stmt_authenticated(st);
    check_lines(slurp(f->path)); /* all four, in order, after AuthenticationOk */
    audit_stmt_free(st);

    /* a flood of pipelined statements before authentication: bounded, then counted */
    assert_int_equal(truncate(f->path, 0), 0);
    assert_int_equal(audit_reopen(f->a, err, sizeof(err)), 0);
    st = audit_stmt_new(f->a, "r", "s", "db1", "alice");
    for (int i = 0; i < 1000; i++)
        assert_true(audit_stmt_filter(st, buf, n));
    assert_string_equal(slurp(f->path), "");
    audit_stmt_authenticated(st);
    audit_stmt_free(st);
    const char *text = slurp(f->path);
    size_t lines = 0;
    for (const char *q = text; *q; q++)
        lines += *q == '\n';
    assert_true(lines > 4 && lines < 4000);
    assert_non_null(strstr(text, "\"event\":\"statements_omitted\""));

    struct audit_session s = {.relay = "r1", .sid = "1", .user = "mallory", .reason = "x"};
    audit_session(f->a, "session_start", &s);
    s.sqlstate = "28P01";
    audit_session(f->a, "auth_failed", &s);
    text = slurp(f->path);
    assert_non_null(strstr(text, "\"claimed_user\":\"mallory\",\"authenticated\":false"));
    assert_null(strstr(text, "\"user\":\"mallory\""));
    assert_non_null(strstr(text, "\"event\":\"auth_failed\""));
    assert_non_null(strstr(text, "\"sqlstate\":\"28P01\""));
}

/* Fields full of bytes that escape to 6 (a hostile application_name...): never dropped. */
static void long_odd_fields_still_written(void **state)
{
    struct fixture *f = *state;
    char odd[256];
    memset(odd, '\x01', sizeof(odd) - 1);
    odd[sizeof(odd) - 1] = '\0';
    struct audit_session s = {.relay = "r1",
                              .sid = "00ff",
                              .route = odd,
                              .client = odd,
                              .sni = odd,
                              .user = odd,
                              .database = odd,
                              .application_name = odd,
                              .cert_subject = odd,
                              .cert_serial = odd,
                              .agent = odd,
                              .tls_version = odd,
                              .tls_cipher = odd,
                              .reason = odd};
    audit_session(f->a, "session_end", &s);
    audit_refused(f->a, "r1", odd, odd, odd);
    const char *text = slurp(f->path);
    assert_int_equal(strlen(text) > 12 * 255 * 6, true);
    assert_non_null(strstr(text, "\"event\":\"session_end\""));
    assert_non_null(strstr(text, "\"event\":\"refused\""));
}

static void check_path(void **state)
{
    char err[256];
    (void)state;
    assert_int_equal(audit_check_path(NULL, err, sizeof(err)), 0);
    assert_int_equal(audit_check_path("stdout", err, sizeof(err)), 0);
    assert_true(audit_check_path("/nonexistent-dir/x.log", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent-dir"));
}

static void config_keys(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX];
    (void)state;
    relay_config_init(&c);
    assert_null(c.audit_log);
    assert_false(c.audit_statements);
    assert_int_equal(c.audit_statement_max, 1024);
    assert_int_equal(
        relay_config_handle(&c, "relay", "audit_log", "/var/log/a.jsonl", err, sizeof(err)), 0);
    assert_string_equal(c.audit_log, "/var/log/a.jsonl");
    assert_int_equal(relay_config_handle(&c, "relay", "audit_log", "", err, sizeof(err)), 0);
    assert_null(c.audit_log);
    assert_int_equal(relay_config_handle(&c, "relay", "audit_statements", "on", err, sizeof(err)),
                     0);
    assert_true(c.audit_statements);
    assert_int_equal(
        relay_config_handle(&c, "relay", "audit_statement_max", "4k", err, sizeof(err)), 0);
    assert_int_equal(c.audit_statement_max, 4096);
    assert_int_equal(
        relay_config_handle(&c, "relay", "audit_statement_max", "1M", err, sizeof(err)), 0);
    assert_int_equal(c.audit_statement_max, 1024 * 1024);
    assert_true(relay_config_handle(&c, "relay", "audit_statement_max", "0", err, sizeof(err)) < 0);
    assert_true(relay_config_handle(&c, "relay", "audit_statement_max", "2M", err, sizeof(err)) <
                0);
    assert_int_equal(c.audit_statement_max, 1024 * 1024);
    assert_true(relay_config_handle(&c, "relay", "audit_statements", "maybe", err, sizeof(err)) <
                0);
    relay_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(statements_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(statements_split_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_length_stops_filtering, setup, teardown),
        cmocka_unit_test_setup_teardown(off_means_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(session_end_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(nothing_unauthenticated_is_a_users_act, setup, teardown),
        cmocka_unit_test_setup_teardown(long_odd_fields_still_written, setup, teardown),
        cmocka_unit_test(check_path),
        cmocka_unit_test(config_keys),
    };
    return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
