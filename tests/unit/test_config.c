/* Unit tests for common/config, relay/relay_config and agent/agent_config. */
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
#include <openssl/ssl.h>

#include "agent/agent_config.h"
#include "common/config.h"
#include "relay/relay_config.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* Write text to a new temporary file; returns its path (static buffer per slot). */
static const char *write_ini(int slot, const char *text)
{
    static char paths[4][64];
    char *p = paths[slot];
    snprintf(p, sizeof(paths[slot]), "/tmp/pgburrow-test-XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
    return p;
}

static void expect_err(const char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void expect_err(const char *err, const char *fmt, ...)
{
    char want[PGB_ERR_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    assert_string_equal(err, want);
}

#define RELAY_TLS                                                                                  \
    "tls_cert = /etc/pgburrow/relay.crt\n"                                                         \
    "tls_key = /etc/pgburrow/relay.key\n"                                                          \
    "agent_ca = /etc/pgburrow/ca.crt\n"

#define AGENT_TLS                                                                                  \
    "ca = /etc/pgburrow/ca.crt\n"                                                                  \
    "cert = /etc/pgburrow/agent.crt\n"                                                             \
    "key = /etc/pgburrow/agent.key\n"

/* Build a relay config from text (and flags); returns rc, config in *c, message in err. */
static int relay_from(struct relay_config *c, const char *text, int nflags, char **flags, char *err,
                      size_t cap, const char **path)
{
    const char *p = write_ini(0, text);
    relay_config_init(c);
    int rc = relay_config_build(c, p, nflags, flags, err, cap);
    if (path)
        *path = p;
    else
        unlink(p);
    return rc;
}

static int agent_from(struct agent_config *c, const char *text, int nflags, char **flags, char *err,
                      size_t cap, const char **path)
{
    const char *p = write_ini(0, text);
    agent_config_init(c);
    int rc = agent_config_build(c, p, nflags, flags, err, cap);
    if (path)
        *path = p;
    else
        unlink(p);
    return rc;
}

/* ---- value parsers ------------------------------------------------------------------------ */

static void test_parse_bool(void **state)
{
    static const char *const yes[] = {"on", "true", "yes", "1", "ON", "True"};
    static const char *const no[] = {"off", "false", "no", "0", "OFF", "No"};
    char err[PGB_ERR_MAX];
    bool b;
    for (size_t i = 0; i < 6; i++) {
        b = false;
        assert_int_equal(config_parse_bool(yes[i], &b, err, sizeof(err)), 0);
        assert_true(b);
        b = true;
        assert_int_equal(config_parse_bool(no[i], &b, err, sizeof(err)), 0);
        assert_false(b);
    }
    assert_int_equal(config_parse_bool("maybe", &b, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected a boolean (on/off, true/false, yes/no, 1/0), got \"maybe\"");
    assert_int_equal(config_parse_bool("", &b, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_bool("2", &b, err, sizeof(err)), -EINVAL);
}

static void test_parse_uint(void **state)
{
    char err[PGB_ERR_MAX];
    uint64_t v = 7;
    assert_int_equal(config_parse_uint("0", 0, 10, &v, err, sizeof(err)), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_uint("10", 0, 10, &v, err, sizeof(err)), 0);
    assert_int_equal(v, 10);
    assert_int_equal(config_parse_uint("18446744073709551615", 0, UINT64_MAX, &v, err, sizeof(err)),
                     0);
    assert_true(v == UINT64_MAX);
    v = 7;
    assert_int_equal(config_parse_uint("11", 0, 10, &v, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected an integer from 0 to 10, got \"11\"");
    assert_int_equal(config_parse_uint("0", 1, 10, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint("-1", 0, 10, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint("1x", 0, 10, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint("", 0, 10, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint(" 1", 0, 10, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint("0x10", 0, 100, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_uint("18446744073709551616", 0, UINT64_MAX, &v, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(v, 7); /* untouched on error */
}

static void test_parse_duration(void **state)
{
    static const struct {
        const char *in;
        uint64_t ms;
    } good[] = {{"250ms", 250}, {"5s", 5000},    {"5", 5000},
                {"2m", 120000}, {"1h", 3600000}, {"0", 0},
                {"0ms", 0},     {"007s", 7000},  {"18446744073709551615ms", UINT64_MAX}};
    static const char *const bad[] = {
        "-5s", "5 s", "5sec", "1.5s", "", "s", "5S", "5ms ", "+5", "1d", "99999999999999999999"};
    char err[PGB_ERR_MAX];
    uint64_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(config_parse_duration_ms(good[i].in, &v, err, sizeof(err)), 0);
        assert_true(v == good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(config_parse_duration_ms(bad[i], &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_duration_ms("5sec", &v, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected a duration such as 250ms, 5s, 2m or 1h, got \"5sec\"");
    /* Fits in u64 as a number, overflows once scaled. */
    assert_int_equal(config_parse_duration_ms("18446744073709551615s", &v, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "duration too large: \"18446744073709551615s\"");
    assert_int_equal(config_parse_duration_ms("5124095576030432h", &v, err, sizeof(err)), -EINVAL);
}

static void test_parse_size(void **state)
{
    char err[PGB_ERR_MAX];
    uint64_t v;
    assert_int_equal(config_parse_size("4096", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(config_parse_size("64k", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("64K", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("16M", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 16u << 20);
    assert_int_equal(config_parse_size("1G", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 1u << 30);
    assert_int_equal(config_parse_size("1T", &v, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected a size such as 4096, 64k, 16M or 1G, got \"1T\"");
    assert_int_equal(config_parse_size("-1", &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_size("k", &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_size("1.5M", &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_size("64 k", &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_parse_size("17179869184G", &v, err, sizeof(err)), -EINVAL); /* 2^64 */
    assert_string_equal(err, "size too large: \"17179869184G\"");
}

static void test_parse_hostport(void **state)
{
    static const struct {
        const char *in, *host;
        uint16_t port;
    } good[] = {{"[::1]:5432", "::1", 5432},
                {"127.0.0.1:5432", "127.0.0.1", 5432},
                {"*:5432", "*", 5432},
                {"localhost:5432", "localhost", 5432},
                {"db-1.example.com:1", "db-1.example.com", 1},
                {"[2001:db8::7]:65535", "2001:db8::7", 65535}};
    static const char *const bad[] = {
        "::1:5432", "[::1]5432", "[]:1",   "[zz]:1",  "host:0", "host:65536", "host:",  ":5432",
        "host:12a", "ho st:1",   "[::1]:", "host:-1", "a/b:1",  "**:1",       "[::1:1", ""};
    char err[PGB_ERR_MAX], host[256];
    uint16_t port;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(config_parse_hostport(good[i].in, host, &port, err, sizeof(err)), 0);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(host, "unchanged");
        assert_int_equal(config_parse_hostport(bad[i], host, &port, err, sizeof(err)), -EINVAL);
        assert_string_equal(host, "unchanged");
        assert_non_null(strstr(err, "expected host:port"));
    }
    assert_int_equal(config_parse_hostport("7443", host, &port, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected host:port, got \"7443\"");
    /* A host name longer than DNS allows. */
    char longhost[300];
    memset(longhost, 'a', 254);
    strcpy(longhost + 254, ":1");
    assert_int_equal(config_parse_hostport(longhost, host, &port, err, sizeof(err)), -EINVAL);
    /* Values are echoed printable and bounded. */
    assert_int_equal(config_parse_hostport("a\"b\x01", host, &port, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "expected host:port, got \"a\\\"b\\x01\"");
}

struct items {
    int n;
    char item[8][16];
};

static int collect(void *ctx, const char *item, char *err, size_t cap)
{
    struct items *it = ctx;
    if (strcmp(item, "bad") == 0) {
        snprintf(err, cap, "bad item");
        return -EINVAL;
    }
    snprintf(it->item[it->n++], sizeof(it->item[0]), "%s", item);
    return 0;
}

static void test_parse_list(void **state)
{
    char err[PGB_ERR_MAX];
    struct items it = {0};
    assert_int_equal(config_parse_list("a, b ,c", collect, &it, err, sizeof(err)), 0);
    assert_int_equal(it.n, 3);
    assert_string_equal(it.item[0], "a");
    assert_string_equal(it.item[1], "b");
    assert_string_equal(it.item[2], "c");
    memset(&it, 0, sizeof(it));
    assert_int_equal(config_parse_list(" \tone\t ", collect, &it, err, sizeof(err)), 0);
    assert_int_equal(it.n, 1);
    assert_string_equal(it.item[0], "one");
    static const char *const bad[] = {"a,,b", "a,", ",a", "", " , ", "a, ,b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&it, 0, sizeof(it));
        assert_int_equal(config_parse_list(bad[i], collect, &it, err, sizeof(err)), -EINVAL);
    }
    assert_int_equal(config_parse_list("a,,b", collect, &it, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "empty item in list \"a,,b\"");
    memset(&it, 0, sizeof(it));
    assert_int_equal(config_parse_list("a, bad, c", collect, &it, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "bad item");
    assert_int_equal(it.n, 1); /* stops at the first failing item */
}

static void test_set_str(void **state)
{
    char *s = NULL;
    assert_int_equal(config_set_str(&s, "one"), 0);
    assert_string_equal(s, "one");
    assert_int_equal(config_set_str(&s, "two"), 0); /* the old copy is freed (ASan checks) */
    assert_string_equal(s, "two");
    free(s);
}

/* ---- files and flags with a generic handler ------------------------------------------------ */

struct probe {
    bool flag;
    uint64_t size;
    char *name;
    int sections;
};

/* [t] flag (bool), size (size), name (string); sections "t" and "t X". */
static int probe_handle(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t cap)
{
    struct probe *p = ctx;
    if (strcmp(section, "t") != 0 && strncmp(section, "t ", 2) != 0)
        return -ENOENT;
    if (!key) {
        p->sections++;
        return 0;
    }
    if (strcmp(key, "flag") == 0)
        return config_parse_bool(value, &p->flag, err, cap);
    if (strcmp(key, "size") == 0)
        return config_parse_size(value, &p->size, err, cap);
    if (strcmp(key, "name") == 0)
        return config_set_str(&p->name, value);
    return -ENOENT;
}

static int probe_load(struct probe *p, const char *text, char *err, size_t cap, const char **path)
{
    memset(p, 0, sizeof(*p));
    *path = write_ini(1, text);
    return config_load(*path, probe_handle, p, err, cap);
}

static void test_load_syntax(void **state)
{
    char err[PGB_ERR_MAX];
    struct probe p;
    const char *path;

    /* Comments, blank lines, indentation, CRLF, inline comments, a BOM, "key: value". */
    assert_int_equal(probe_load(&p,
                                "\xEF\xBB\xBF; comment\r\n"
                                "# another\n"
                                "\n"
                                "  [ t ]  ; the section\r\n"
                                "   flag = yes ; inline comment\r\n"
                                "size: 64k\n"
                                "name = a;b\n",
                                err, sizeof(err), &path),
                     0);
    assert_true(p.flag);
    assert_int_equal(p.size, 65536);
    assert_string_equal(p.name, "a;b");
    assert_int_equal(p.sections, 1);
    free(p.name);
    unlink(path);

    assert_int_equal(probe_load(&p, "[t]\nflag = on\njunk line\n", err, sizeof(err), &path),
                     -EINVAL);
    expect_err(err, "%s:3: syntax error: expected \"[section]\" or \"key = value\"", path);
    unlink(path);
    /* An indented line is not a continuation of the previous value. */
    assert_int_equal(probe_load(&p, "[t]\nname = a\n    b\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:3: syntax error: expected \"[section]\" or \"key = value\"", path);
    free(p.name);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t\nflag = on\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:1: syntax error: expected \"[section]\"", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t] flag = on\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:1: syntax error: unexpected text after \"]\"", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[ ]\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:1: syntax error: empty section name", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t]\n= on\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:2: syntax error: expected \"key = value\"", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "flag = on\n[t]\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:1: flag: key outside any [section]", path);
    unlink(path);
}

static void test_load_errors_name_line(void **state)
{
    char err[PGB_ERR_MAX];
    struct probe p;
    const char *path;

    assert_int_equal(probe_load(&p, "[t]\n\nflag = maybe\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err,
               "%s:3: [t] flag: expected a boolean (on/off, true/false, yes/no, 1/0), got "
               "\"maybe\"",
               path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t]\nsize = 12X\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:2: [t] size: expected a size such as 4096, 64k, 16M or 1G, got \"12X\"",
               path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t]\nflag = on\nflg = on\n", err, sizeof(err), &path),
                     -ENOENT);
    expect_err(err, "%s:3: [t] flg: unknown key", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t]\n[u]\nflag = on\n", err, sizeof(err), &path), -ENOENT);
    expect_err(err, "%s:2: [u]: unknown section", path);
    unlink(path);
    assert_int_equal(
        probe_load(&p, "[t]\nflag = on\nsize = 1\nflag = off\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:4: [t] flag: duplicate key (first set on line 2)", path);
    unlink(path);
    assert_int_equal(probe_load(&p, "[t x]\n[t]\n[t  x]\n", err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:3: [t x]: duplicate section (first on line 1)", path);
    unlink(path);
    /* The first error wins; nothing after it is applied. */
    assert_int_equal(probe_load(&p, "[t]\nflag = bad\nsize = 1\n", err, sizeof(err), &path),
                     -EINVAL);
    assert_int_equal(p.size, 0);
    unlink(path);
    /* The same key in two sections is fine. */
    assert_int_equal(
        probe_load(&p, "[t a]\nflag = on\n[t b]\nflag = off\n", err, sizeof(err), &path), 0);
    assert_int_equal(p.sections, 2);
    unlink(path);
}

static void test_load_limits(void **state)
{
    char err[PGB_ERR_MAX];
    char text[8192];
    struct probe p;
    const char *path;

    /* Values and comments are not limited by libinih's 200-byte line buffer. */
    int n = snprintf(text, sizeof(text), "; %0*d\n[t]\nname = ", 1000, 0);
    memset(text + n, 'v', 3000);
    strcpy(text + n + 3000, " ; comment\n");
    assert_int_equal(probe_load(&p, text, err, sizeof(err), &path), 0);
    assert_int_equal(strlen(p.name), 3000);
    assert_int_equal(strspn(p.name, "v"), 3000);
    free(p.name);
    unlink(path);
    /* Longer lines are refused by line, and nothing of them is applied. */
    n = snprintf(text, sizeof(text), "[t]\nname = ");
    memset(text + n, 'v', 5000);
    strcpy(text + n + 5000, "\nflag = x\n");
    assert_int_equal(probe_load(&p, text, err, sizeof(err), &path), -EINVAL);
    assert_null(p.name);
    expect_err(err, "%s:2: line too long (max 4095 bytes)", path);
    unlink(path);
    /* Keys are short. */
    n = snprintf(text, sizeof(text), "[t]\n%0*d = 1\n", 64, 0);
    assert_int_equal(probe_load(&p, text, err, sizeof(err), &path), -EINVAL);
    expect_err(err, "%s:2: key too long (max 63 bytes)", path);
    unlink(path);
    /* NUL bytes are refused, not silently cut. */
    path = write_ini(1, "[t]\nname = ab");
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputc('\0', f);
    fputs("cd\n", f);
    fclose(f);
    memset(&p, 0, sizeof(p));
    assert_int_equal(config_load(path, probe_handle, &p, err, sizeof(err)), -EINVAL);
    expect_err(err, "%s:2: NUL byte in line", path);
    unlink(path);
    /* A missing file names its path. */
    assert_int_equal(config_load("/nonexistent/relay.ini", probe_handle, &p, err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err, "/nonexistent/relay.ini: cannot open: No such file or directory");
    /* A directory cannot be read. */
    assert_true(config_load("/tmp", probe_handle, &p, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/tmp: cannot read"));
}

static void test_load_long_section_name(void **state)
{
    /* inih keeps only 49 bytes of a section name; ours keeps the whole of it. */
    char err[PGB_ERR_MAX];
    char text[512];
    struct relay_config c;
    char name[PROTO_NAME_MAX];
    memset(name, 'r', PROTO_NAME_MAX - 1);
    name[PROTO_NAME_MAX - 1] = '\0';
    snprintf(text, sizeof(text),
             "[relay]\n" RELAY_TLS "default_route = %s\n[route %s]\nagents = a\n", name, name);
    assert_int_equal(relay_from(&c, text, 0, NULL, err, sizeof(err), NULL), 0);
    assert_int_equal(c.nroutes, 1);
    assert_string_equal(c.routes[0].name, name);
    relay_config_free(&c);
}

static void test_flags(void **state)
{
    char err[PGB_ERR_MAX];
    struct probe p = {0};

    assert_int_equal(config_apply_flag("--t.flag=yes", probe_handle, &p, err, sizeof(err)), 0);
    assert_true(p.flag);
    assert_int_equal(p.sections, 1);
    assert_int_equal(config_apply_flag("--t.x.y.size=2k", probe_handle, &p, err, sizeof(err)), 0);
    assert_int_equal(p.size, 2048);
    assert_int_equal(config_apply_flag("--t.name=a=b", probe_handle, &p, err, sizeof(err)), 0);
    assert_string_equal(p.name, "a=b");
    free(p.name);

    static const char *const bad[] = {"t.flag=yes", "--t=1",       "--t.flag",
                                      "--.flag=1",  "--t.=1",      "--t..flag=1",
                                      "-t.flag=1",  "--t .flag=1", "--t. flag=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(config_apply_flag(bad[i], probe_handle, &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_apply_flag("--t.flag", probe_handle, &p, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "command line: \"--t.flag\": expected --section.key=value");
    assert_int_equal(config_apply_flag("--t.flag=2", probe_handle, &p, err, sizeof(err)), -EINVAL);
    assert_string_equal(
        err,
        "command line: [t] flag: expected a boolean (on/off, true/false, yes/no, 1/0), got \"2\"");
    assert_int_equal(config_apply_flag("--t.flg=1", probe_handle, &p, err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "command line: [t] flg: unknown key");
    assert_int_equal(config_apply_flag("--u.flag=1", probe_handle, &p, err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "command line: [u]: unknown section");
}

/* ---- relay ------------------------------------------------------------------------------- */

static const char relay_good[] = "; pgburrow relay\n"
                                 "[relay]\n"
                                 "name = relay-1\n"
                                 "listen = 0.0.0.0:6432\n"
                                 "tunnel_listen = [::]:7443\n"
                                 "default_route = demo\n" RELAY_TLS "tls_min_version = TLSv1.3\n"
                                 "tunnel_cert = /etc/pgburrow/tunnel.crt\n"
                                 "tunnel_key = /etc/pgburrow/tunnel.key\n"
                                 "startup_timeout = 3s\n"
                                 "ping_interval = 500ms\n"
                                 "dead_timeout = 2s\n"
                                 "max_sessions = 500\n"
                                 "max_streams_per_tunnel = 200\n"
                                 "max_pending = 64\n"
                                 "max_pending_per_source = 0\n"
                                 "handshake_rate = 0\n"
                                 "handshake_burst = 5\n"
                                 "hello_timeout = 2s\n"
                                 "log_level = debug\n"
                                 "log_format = json\n"
                                 "log_file = /var/log/pgburrow/relay.log\n"
                                 "\n"
                                 "[route demo]\n"
                                 "agents = demo-agent, backup.agent\n"
                                 "[route shop]\n"
                                 "agents = shop_1\n";

static void test_relay_defaults(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX];

    relay_config_init(&c);
    assert_non_null(c.name);
    assert_string_equal(c.listen, "*:5432");
    assert_string_equal(c.tunnel_listen, "*:7443");
    assert_null(c.default_route);
    assert_int_equal(c.tls_min_version, TLS1_2_VERSION);
    assert_int_equal(c.startup_timeout_ms, 10000);
    assert_int_equal(c.ping_interval_ms, 1000);
    assert_int_equal(c.dead_timeout_ms, 4000);
    assert_int_equal(c.max_sessions, 10000);
    assert_int_equal(c.max_streams, 10000);
    assert_int_equal(c.max_pending, 256);
    assert_int_equal(c.max_pending_per_source, 128);
    assert_int_equal(c.handshake_rate, 100);
    assert_int_equal(c.handshake_burst, 200);
    assert_int_equal(c.hello_timeout_ms, 5000);
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.log_format, "text");
    assert_null(c.log_file);
    relay_config_free(&c);
    relay_config_free(&c); /* twice is safe */
    relay_config_free(NULL);

    assert_int_equal(relay_from(&c, "[relay]\n" RELAY_TLS "[route r]\nagents = a\n", 0, NULL, err,
                                sizeof(err), NULL),
                     0);
    assert_string_equal(c.listen, "*:5432");
    assert_null(c.tunnel_cert);
    assert_int_equal(c.tls_min_version, TLS1_2_VERSION);
    relay_config_free(&c);
}

static void test_relay_good(void **state)
{
    struct relay_config c;
    char err[PGB_ERR_MAX] = "";

    assert_int_equal(relay_from(&c, relay_good, 0, NULL, err, sizeof(err), NULL), 0);
    assert_string_equal(c.name, "relay-1");
    assert_string_equal(c.listen, "0.0.0.0:6432");
    assert_string_equal(c.tunnel_listen, "[::]:7443");
    assert_string_equal(c.default_route, "demo");
    assert_string_equal(c.tls_cert, "/etc/pgburrow/relay.crt");
    assert_string_equal(c.tls_key, "/etc/pgburrow/relay.key");
    assert_string_equal(c.agent_ca, "/etc/pgburrow/ca.crt");
    assert_string_equal(c.tunnel_cert, "/etc/pgburrow/tunnel.crt");
    assert_string_equal(c.tunnel_key, "/etc/pgburrow/tunnel.key");
    assert_int_equal(c.tls_min_version, TLS1_3_VERSION);
    assert_int_equal(c.startup_timeout_ms, 3000);
    assert_int_equal(c.ping_interval_ms, 500);
    assert_int_equal(c.dead_timeout_ms, 2000);
    assert_int_equal(c.max_sessions, 500);
    assert_int_equal(c.max_streams, 200);
    assert_int_equal(c.max_pending, 64);
    assert_int_equal(c.max_pending_per_source, 0); /* 0: no per-source limit */
    assert_int_equal(c.handshake_rate, 0);         /* 0: no rate limit */
    assert_int_equal(c.handshake_burst, 5);
    assert_int_equal(c.hello_timeout_ms, 2000);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.log_format, "json");
    assert_string_equal(c.log_file, "/var/log/pgburrow/relay.log");
    assert_int_equal(c.nroutes, 2);

    const struct relay_route *demo = relay_config_route(&c, "demo");
    assert_non_null(demo);
    assert_int_equal(demo->nagents, 2);
    assert_true(relay_route_allows(demo, "demo-agent"));
    assert_true(relay_route_allows(demo, "backup.agent"));
    assert_false(relay_route_allows(demo, "shop_1"));
    assert_false(relay_route_allows(demo, "demo"));
    assert_false(relay_route_allows(NULL, "demo-agent"));
    const struct relay_route *shop = relay_config_route(&c, "shop");
    assert_non_null(shop);
    assert_true(relay_route_allows(shop, "shop_1"));
    assert_false(relay_route_allows(shop, "demo-agent"));
    assert_null(relay_config_route(&c, "nope"));
    relay_config_free(&c);
}

static void test_relay_value_errors(void **state)
{
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"tunnel_listen = 7443", "[relay] tunnel_listen: expected host:port, got \"7443\""},
        {"listn = *:1", "[relay] listn: unknown key"},
        {"startup_timeout = 10 s",
         "[relay] startup_timeout: expected a duration such as 250ms, 5s, 2m or 1h, got \"10 s\""},
        {"ping_interval = 0", "[relay] ping_interval: must be from 1ms to 24h, got \"0\""},
        {"dead_timeout = 25h", "[relay] dead_timeout: must be from 1ms to 24h, got \"25h\""},
        {"max_sessions = 0",
         "[relay] max_sessions: expected an integer from 1 to 1000000, got \"0\""},
        {"max_pending = 0",
         "[relay] max_pending: expected an integer from 1 to 1000000, got \"0\""},
        {"max_pending_per_source = 1000001",
         "[relay] max_pending_per_source: expected an integer from 0 to 1000000, got "
         "\"1000001\""},
        {"handshake_rate = -1",
         "[relay] handshake_rate: expected an integer from 0 to 1000000, got \"-1\""},
        {"handshake_burst = 0",
         "[relay] handshake_burst: expected an integer from 1 to 1000000, got \"0\""},
        {"hello_timeout = 0", "[relay] hello_timeout: must be from 1ms to 24h, got \"0\""},
        {"stream_window = 8k", "[relay] stream_window: must be from 16k to 16M, got \"8k\""},
        {"tls_min_version = TLSv1.1",
         "[relay] tls_min_version: TLSv1.1 is not allowed (obsolete, RFC 8996): use TLSv1.2 or "
         "TLSv1.3"},
        {"tls_min_version = TLSv1",
         "[relay] tls_min_version: TLSv1 is not allowed (obsolete, RFC 8996): use TLSv1.2 or "
         "TLSv1.3"},
        {"tls_min_version = SSLv3",
         "[relay] tls_min_version: expected TLSv1.2 or TLSv1.3, got \"SSLv3\""},
        {"log_level = loud",
         "[relay] log_level: expected debug, info, warn or error, got \"loud\""},
        {"log_format = xml", "[relay] log_format: expected text or json, got \"xml\""},
        {"name = my relay",
         "[relay] name: expected a name of 1 to 63 characters A-Z a-z 0-9 _ . -, got \"my "
         "relay\""},
        {"default_route = a/b",
         "[relay] default_route: expected a name of 1 to 63 characters A-Z a-z 0-9 _ . -, got "
         "\"a/b\""},
    };
    char text[1024], err[PGB_ERR_MAX];
    struct relay_config c;
    const char *path;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* The bad line is line 5: after "[relay]" and the three TLS lines. */
        snprintf(text, sizeof(text), "[relay]\n" RELAY_TLS "%s\n[route r]\nagents = a\n",
                 cases[i].line);
        assert_true(relay_from(&c, text, 0, NULL, err, sizeof(err), &path) < 0);
        expect_err(err, "%s:5: %s", path, cases[i].why);
        unlink(path);
        relay_config_free(&c);
    }
}

static void test_relay_route_errors(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"[route demo]\nagents = a\n[route demo]\nagents = b\n",
         "7: [route demo]: duplicate section (first on line 5)"},
        {"[route bad/name]\nagents = a\n",
         "5: [route bad/name]: invalid route name: expected 1 to 63 of A-Z a-z 0-9 _ . -"},
        {"[route]\nagents = a\n", "5: [route]: a route section needs a name: [route NAME]"},
        {"[route a b]\nagents = a\n",
         "5: [route a b]: invalid route name: expected 1 to 63 of A-Z a-z 0-9 _ . -"},
        {"[route r]\nagents = a, b@d\n",
         "6: [route r] agents: invalid agent name \"b@d\": expected 1 to 63 of A-Z a-z 0-9 _ . -"},
        {"[route r]\nagents = a, b, a\n", "6: [route r] agents: agent \"a\" listed twice"},
        {"[route r]\nagents = a,,b\n", "6: [route r] agents: empty item in list \"a,,b\""},
        {"[route r]\nhost = x\n", "6: [route r] host: unknown key"},
        {"[routes r]\n", "5: [routes r]: unknown section"},
    };
    char text[1024], err[PGB_ERR_MAX];
    struct relay_config c;
    const char *path;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "[relay]\n" RELAY_TLS "%s", cases[i].text);
        assert_true(relay_from(&c, text, 0, NULL, err, sizeof(err), &path) < 0);
        expect_err(err, "%s:%s", path, cases[i].why);
        unlink(path);
        relay_config_free(&c);
    }

    /* 64 agents fit, 65 do not. */
    char list[64 * 8 + 16];
    size_t n = 0;
    for (int i = 0; i < RELAY_MAX_ROUTE_AGENTS; i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%sa%d", i ? "," : "", i);
    snprintf(text, sizeof(text), "[relay]\n" RELAY_TLS "[route r]\nagents = %s\n", list);
    assert_int_equal(relay_from(&c, text, 0, NULL, err, sizeof(err), NULL), 0);
    assert_int_equal(c.routes[0].nagents, RELAY_MAX_ROUTE_AGENTS);
    relay_config_free(&c);
    char flag[600];
    snprintf(flag, sizeof(flag), "--route.r.agents=%s,one-more", list);
    char *flags[] = {flag};
    assert_int_equal(relay_from(&c, "[relay]\n" RELAY_TLS "[route r]\nagents = x\n", 1, flags, err,
                                sizeof(err), NULL),
                     -EINVAL);
    assert_string_equal(err, "command line: [route r] agents: too many agents (max 64)");
    /* A failed list leaves the previous value intact. */
    assert_int_equal(c.routes[0].nagents, 1);
    assert_string_equal(c.routes[0].agents[0], "x");
    relay_config_free(&c);
}

static void test_relay_check(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"[relay]\ntls_key = k\nagent_ca = ca\n[route r]\nagents = a\n",
         "[relay] tls_cert: required key is missing"},
        {"[relay]\ntls_cert = c\nagent_ca = ca\n[route r]\nagents = a\n",
         "[relay] tls_key: required key is missing"},
        {"[relay]\ntls_cert = c\ntls_key = k\n[route r]\nagents = a\n",
         "[relay] agent_ca: required key is missing"},
        {"[relay]\n" RELAY_TLS "tls_cert =\n[route r]\nagents = a\n",
         NULL}, /* duplicate key: reported by the loader instead */
        {"[relay]\n" RELAY_TLS, "no route: define at least one [route NAME] section"},
        {"[relay]\n" RELAY_TLS "default_route = nowhere\n[route r]\nagents = a\n",
         "[relay] default_route: route \"nowhere\" is not defined (no [route nowhere] section)"},
        {"[relay]\n" RELAY_TLS "ping_interval = 4s\n[route r]\nagents = a\n",
         "[relay] dead_timeout (4000ms) must be greater than ping_interval (4000ms)"},
        {"[relay]\n" RELAY_TLS "[route r]\n", "[route r] agents: required key is missing"},
        {"[relay]\n" RELAY_TLS "tunnel_cert = t.crt\n[route r]\nagents = a\n",
         "[relay] tunnel_cert and tunnel_key must be set together (or both left out)"},
    };
    char err[PGB_ERR_MAX];
    struct relay_config c;
    const char *path;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_true(relay_from(&c, cases[i].text, 0, NULL, err, sizeof(err), &path) < 0);
        if (cases[i].why)
            expect_err(err, "%s: %s", path, cases[i].why);
        else
            assert_non_null(strstr(err, "duplicate key"));
        unlink(path);
        relay_config_free(&c);
    }

    /* Without a file, flags alone can make a whole config; check errors carry no path. */
    char *flags[] = {"--relay.tls_cert=c", "--relay.tls_key=k", "--relay.agent_ca=ca",
                     "--route.r.agents=a"};
    relay_config_init(&c);
    assert_int_equal(relay_config_build(&c, NULL, 3, flags, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "no route: define at least one [route NAME] section");
    relay_config_free(&c);
    relay_config_init(&c);
    assert_int_equal(relay_config_build(&c, NULL, 4, flags, err, sizeof(err)), 0);
    assert_true(relay_route_allows(relay_config_route(&c, "r"), "a"));
    relay_config_free(&c);
}

static void test_relay_admin_keys(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"[relay]\n" RELAY_TLS "admin_users = alice\n[route r]\nagents = a\n",
         "[relay] admin_ca: required when admin_users is set"},
        {"[relay]\n" RELAY_TLS "admin_ca = ca\n[route r]\nagents = a\n",
         "[relay] admin_ca/admin_crl are set but admin_users is empty: list the admins' "
         "certificate CNs in admin_users (or remove them)"},
        {"[relay]\n" RELAY_TLS "admin_users = alice\nadmin_ca = ca\n[route pgburrow]\nagents = "
         "a\n",
         "[route pgburrow]: a route may not be named \"pgburrow\" while the admin console is on "
         "(admin_users): rename the route"},
    };
    char err[PGB_ERR_MAX];
    struct relay_config c;
    const char *path;

    assert_int_equal(relay_from(&c,
                                "[relay]\n" RELAY_TLS "admin_users = alice, Bob Admin\n"
                                "admin_ca = /etc/pgburrow/admins.crt\n"
                                "admin_crl = /etc/pgburrow/admins.crl\n[route r]\nagents = a\n",
                                0, NULL, err, sizeof(err), &path),
                     0);
    assert_int_equal(c.nadmin_users, 2);
    assert_string_equal(c.admin_users[0], "alice");
    assert_string_equal(c.admin_users[1], "Bob Admin");
    assert_string_equal(c.admin_ca, "/etc/pgburrow/admins.crt");
    assert_string_equal(c.admin_crl, "/etc/pgburrow/admins.crl");
    unlink(path);
    relay_config_free(&c);
    /* off by default; a route may then be called pgburrow */
    assert_int_equal(relay_from(&c, "[relay]\n" RELAY_TLS "[route pgburrow]\nagents = a\n", 0, NULL,
                                err, sizeof(err), &path),
                     0);
    assert_int_equal(c.nadmin_users, 0);
    unlink(path);
    relay_config_free(&c);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_true(relay_from(&c, cases[i].text, 0, NULL, err, sizeof(err), &path) < 0);
        expect_err(err, "%s: %s", path, cases[i].why);
        unlink(path);
        relay_config_free(&c);
    }
    assert_true(relay_from(&c, "[relay]\nadmin_users = alice, alice\n", 0, NULL, err, sizeof(err),
                           &path) < 0);
    assert_non_null(strstr(err, "CN \"alice\" listed twice"));
    unlink(path);
    relay_config_free(&c);
}

static void test_relay_flags_override(void **state)
{
    char err[PGB_ERR_MAX];
    struct relay_config c;
    char *flags[] = {"--relay.listen=127.0.0.1:6432",
                     "--relay.log_level=warn",
                     "--route.demo.agents=a,b",
                     "--route.new.agents=c",
                     "--route.db.prod.agents=d",
                     "--relay.default_route=new",
                     "--relay.log_file="};

    assert_int_equal(relay_from(&c, relay_good, 7, flags, err, sizeof(err), NULL), 0);
    assert_string_equal(c.listen, "127.0.0.1:6432");
    assert_string_equal(c.log_level, "warn");
    assert_string_equal(c.default_route, "new");
    assert_null(c.log_file); /* empty value: back to the default (stderr) */
    assert_int_equal(c.nroutes, 4);
    const struct relay_route *demo = relay_config_route(&c, "demo");
    assert_int_equal(demo->nagents, 2);
    assert_true(relay_route_allows(demo, "a"));
    assert_false(relay_route_allows(demo, "demo-agent")); /* the list is replaced */
    assert_true(relay_route_allows(relay_config_route(&c, "new"), "c"));
    assert_true(relay_route_allows(relay_config_route(&c, "db.prod"), "d"));
    assert_string_equal(c.tunnel_listen, "[::]:7443"); /* untouched by flags */
    relay_config_free(&c);

    char *bad[] = {"--relay.listen=7443"};
    assert_int_equal(relay_from(&c, relay_good, 1, bad, err, sizeof(err), NULL), -EINVAL);
    assert_string_equal(err, "command line: [relay] listen: expected host:port, got \"7443\"");
    relay_config_free(&c);
    char *unknown[] = {"--relay.listn=*:1"};
    assert_int_equal(relay_from(&c, relay_good, 1, unknown, err, sizeof(err), NULL), -ENOENT);
    assert_string_equal(err, "command line: [relay] listn: unknown key");
    relay_config_free(&c);
    char *badroute[] = {"--route.a/b.agents=x"};
    assert_int_equal(relay_from(&c, relay_good, 1, badroute, err, sizeof(err), NULL), -EINVAL);
    assert_string_equal(
        err,
        "command line: [route a/b]: invalid route name: expected 1 to 63 of A-Z a-z 0-9 _ . -");
    relay_config_free(&c);
}

static void test_relay_missing_file(void **state)
{
    char err[PGB_ERR_MAX];
    struct relay_config c;
    relay_config_init(&c);
    assert_int_equal(relay_config_build(&c, "/nonexistent/relay.ini", 0, NULL, err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err, "/nonexistent/relay.ini: cannot open: No such file or directory");
    relay_config_free(&c);
}

/* The sample configurations (run from the top of the tree, as make unit does) parse, and the
 * limits they set are the defaults they say they are. */
static void test_sample_configs(void **state)
{
    char err[PGB_ERR_MAX] = "";
    struct relay_config r, rd;
    struct agent_config a, ad;

    relay_config_init(&r);
    relay_config_init(&rd);
    assert_int_equal(relay_config_build(&r, "deploy/relay.ini", 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(r.startup_timeout_ms, rd.startup_timeout_ms);
    assert_int_equal(r.drain_timeout_ms, rd.drain_timeout_ms);
    assert_int_equal(r.ping_interval_ms, rd.ping_interval_ms);
    assert_int_equal(r.dead_timeout_ms, rd.dead_timeout_ms);
    assert_int_equal(r.max_sessions, rd.max_sessions);
    assert_int_equal(r.max_streams, rd.max_streams);
    assert_int_equal(r.stream_window, rd.stream_window);
    assert_int_equal(r.max_sessions_per_source, rd.max_sessions_per_source);
    assert_int_equal(r.max_tunnels_per_agent, rd.max_tunnels_per_agent);
    assert_int_equal(r.max_pending, rd.max_pending);
    assert_int_equal(r.max_pending_per_source, rd.max_pending_per_source);
    assert_int_equal(r.handshake_rate, rd.handshake_rate);
    assert_int_equal(r.handshake_burst, rd.handshake_burst);
    assert_int_equal(r.hello_timeout_ms, rd.hello_timeout_ms);
    relay_config_free(&r);
    relay_config_free(&rd);

    agent_config_init(&a);
    agent_config_init(&ad);
    assert_int_equal(agent_config_build(&a, "deploy/agent.ini", 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(a.reconnect_min_ms, ad.reconnect_min_ms);
    assert_int_equal(a.reconnect_max_ms, ad.reconnect_max_ms);
    assert_int_equal(a.connect_timeout_ms, ad.connect_timeout_ms);
    assert_int_equal(a.resolve_interval_ms, ad.resolve_interval_ms);
    assert_int_equal(a.drain_timeout_ms, ad.drain_timeout_ms);
    assert_int_equal(a.ping_interval_ms, ad.ping_interval_ms);
    assert_int_equal(a.dead_timeout_ms, ad.dead_timeout_ms);
    assert_int_equal(a.max_streams, ad.max_streams);
    assert_int_equal(a.max_stream_window, ad.max_stream_window);
    agent_config_free(&a);
    agent_config_free(&ad);
}

/* ---- agent ------------------------------------------------------------------------------- */

static const char agent_good[] =
    "[agent]\n"
    "relay = relay1.example.com:7443, [::1]:7443 ,10.0.0.1:7000\n"
    "relay_server_name = relay.example.com\n" AGENT_TLS "reconnect_min = 50ms\n"
    "reconnect_max = 1m\n"
    "connect_timeout = 2s\n"
    "ping_interval = 2s\n"
    "dead_timeout = 10s\n"
    "max_streams_per_tunnel = 50\n"
    "max_stream_window = 64k\n"
    "log_level = warn\n"
    "log_format = json\n"
    "log_file = /tmp/agent.log\n"
    "[route demo]\n"
    "[route tcp]\n"
    "host = db.internal\n"
    "port = 5433\n"
    "[route sock]\n"
    "host = /run/postgresql\n";

static void test_agent_defaults(void **state)
{
    struct agent_config c;
    agent_config_init(&c);
    assert_int_equal(c.nrelays, 0);
    assert_int_equal(c.reconnect_min_ms, 100);
    assert_int_equal(c.reconnect_max_ms, 30000);
    assert_int_equal(c.connect_timeout_ms, 5000);
    assert_int_equal(c.ping_interval_ms, 1000);
    assert_int_equal(c.dead_timeout_ms, 4000);
    assert_int_equal(c.max_streams, 1000);
    assert_int_equal(c.max_stream_window, 1024 * 1024);
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.log_format, "text");
    assert_null(c.relay_server_name);
    agent_config_free(&c);
    agent_config_free(&c);
    agent_config_free(NULL);
}

static void test_agent_good(void **state)
{
    struct agent_config c;
    char err[PGB_ERR_MAX] = "";

    assert_int_equal(agent_from(&c, agent_good, 0, NULL, err, sizeof(err), NULL), 0);
    assert_int_equal(c.nrelays, 3);
    assert_string_equal(c.relays[0].host, "relay1.example.com");
    assert_int_equal(c.relays[0].port, 7443);
    assert_string_equal(c.relays[1].host, "::1");
    assert_int_equal(c.relays[1].port, 7443);
    assert_string_equal(c.relays[2].host, "10.0.0.1");
    assert_int_equal(c.relays[2].port, 7000);
    assert_string_equal(c.relay_server_name, "relay.example.com");
    assert_string_equal(c.ca, "/etc/pgburrow/ca.crt");
    assert_string_equal(c.cert, "/etc/pgburrow/agent.crt");
    assert_string_equal(c.key, "/etc/pgburrow/agent.key");
    assert_int_equal(c.reconnect_min_ms, 50);
    assert_int_equal(c.reconnect_max_ms, 60000);
    assert_int_equal(c.connect_timeout_ms, 2000);
    assert_int_equal(c.ping_interval_ms, 2000);
    assert_int_equal(c.dead_timeout_ms, 10000);
    assert_int_equal(c.max_streams, 50);
    assert_int_equal(c.max_stream_window, 64 * 1024);
    assert_string_equal(c.log_level, "warn");
    assert_string_equal(c.log_format, "json");
    assert_string_equal(c.log_file, "/tmp/agent.log");
    assert_int_equal(c.nroutes, 3);
    /* A route section without keys is a route with the default PostgreSQL address. */
    const struct agent_route *demo = agent_config_route(&c, "demo");
    assert_non_null(demo);
    assert_string_equal(demo->host, "/var/run/postgresql");
    assert_int_equal(demo->port, 5432);
    const struct agent_route *tcp = agent_config_route(&c, "tcp");
    assert_string_equal(tcp->host, "db.internal");
    assert_int_equal(tcp->port, 5433);
    assert_string_equal(agent_config_route(&c, "sock")->host, "/run/postgresql");
    assert_null(agent_config_route(&c, "other"));
    agent_config_free(&c);
}

static void test_agent_errors(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"[agent]\n" AGENT_TLS "[route r]\n", ": [agent] relay: required key is missing"},
        {"[agent]\nrelay = r:1\ncert = c\nkey = k\n[route r]\n",
         ": [agent] ca: required key is missing"},
        {"[agent]\nrelay = r:1\nca = ca\nkey = k\n[route r]\n",
         ": [agent] cert: required key is missing"},
        {"[agent]\nrelay = r:1\nca = ca\ncert = c\n[route r]\n",
         ": [agent] key: required key is missing"},
        {"[agent]\nrelay = r:1\n" AGENT_TLS,
         ": no route: define at least one [route NAME] section"},
        {"[agent]\nrelay = r:1\n" AGENT_TLS "reconnect_min = 2s\nreconnect_max = 1s\n[route r]\n",
         ": [agent] reconnect_min (2000ms) must not exceed reconnect_max (1000ms)"},
        {"[agent]\nrelay = r:1\n" AGENT_TLS "dead_timeout = 1s\n[route r]\n",
         ": [agent] dead_timeout (1000ms) must be greater than ping_interval (1000ms)"},
        {"[agent]\nrelay = *:7443\n",
         ":2: [agent] relay: cannot dial \"*:7443\": name the relay host"},
        {"[agent]\nrelay = r:1,\n", ":2: [agent] relay: empty item in list \"r:1,\""},
        {"[agent]\nrelay = 7443\n", ":2: [agent] relay: expected host:port, got \"7443\""},
        {"[agent]\nconnect_timeout = soon\n",
         ":2: [agent] connect_timeout: expected a duration such as 250ms, 5s, 2m or 1h, got "
         "\"soon\""},
        {"[agent]\nagents = x\n", ":2: [agent] agents: unknown key"},
        {"[agent]\nmax_streams_per_tunnel = 0\n",
         ":2: [agent] max_streams_per_tunnel: expected an integer from 1 to 100000, got \"0\""},
        {"[agent]\nmax_stream_window = 8k\n",
         ":2: [agent] max_stream_window: must be from 16k to 16M, got \"8k\""},
        {"[agent]\nmax_stream_window = 17M\n",
         ":2: [agent] max_stream_window: must be from 16k to 16M, got \"17M\""},
        {"[relay]\n", ":1: [relay]: unknown section"},
        {"[route r]\nhost = var/run\n",
         ":2: [route r] host: expected an absolute socket directory, a host name or an IP "
         "address, got \"var/run\""},
        {"[route r]\nhost =\n",
         ":2: [route r] host: expected an absolute socket directory, a host name or an IP "
         "address, got \"\""},
        {"[route r]\nport = 0\n",
         ":2: [route r] port: expected an integer from 1 to 65535, got \"0\""},
        {"[route r]\nagents = a\n", ":2: [route r] agents: unknown key"},
    };
    char err[PGB_ERR_MAX];
    struct agent_config c;
    const char *path;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_true(agent_from(&c, cases[i].text, 0, NULL, err, sizeof(err), &path) < 0);
        expect_err(err, "%s%s", path, cases[i].why);
        unlink(path);
        agent_config_free(&c);
    }

    /* 64 relays fit, 65 do not. */
    char list[64 * 12 + 16], text[1200];
    size_t n = 0;
    for (int i = 0; i < AGENT_MAX_RELAYS; i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%sr%d:1", i ? "," : "", i);
    char flag[1000];
    snprintf(flag, sizeof(flag), "--agent.relay=%s", list);
    char *flags[] = {flag};
    snprintf(text, sizeof(text), "[agent]\nrelay = r:1\n" AGENT_TLS "[route r]\n");
    assert_int_equal(agent_from(&c, text, 1, flags, err, sizeof(err), NULL), 0);
    assert_int_equal(c.nrelays, AGENT_MAX_RELAYS);
    agent_config_free(&c);
    snprintf(flag, sizeof(flag), "--agent.relay=%s,x:1", list);
    assert_int_equal(agent_from(&c, text, 1, flags, err, sizeof(err), NULL), -EINVAL);
    assert_string_equal(err, "command line: [agent] relay: too many relays (max 64)");
    assert_int_equal(c.nrelays, 1); /* a failed list leaves the previous value intact */
    agent_config_free(&c);
}

static void test_agent_flags(void **state)
{
    char err[PGB_ERR_MAX];
    struct agent_config c;
    char *flags[] = {"--agent.relay=other:9000", "--route.demo.port=6000",
                     "--route.extra.host=10.1.2.3", "--agent.reconnect_max=2m"};

    assert_int_equal(agent_from(&c, agent_good, 4, flags, err, sizeof(err), NULL), 0);
    assert_int_equal(c.nrelays, 1);
    assert_string_equal(c.relays[0].host, "other");
    assert_int_equal(c.relays[0].port, 9000);
    assert_int_equal(agent_config_route(&c, "demo")->port, 6000);
    assert_string_equal(agent_config_route(&c, "demo")->host, "/var/run/postgresql");
    const struct agent_route *extra = agent_config_route(&c, "extra");
    assert_non_null(extra);
    assert_string_equal(extra->host, "10.1.2.3");
    assert_int_equal(extra->port, 5432);
    assert_int_equal(c.reconnect_max_ms, 120000);
    assert_int_equal(c.nroutes, 4);
    agent_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_uint),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_parse_list),
        cmocka_unit_test(test_set_str),
        cmocka_unit_test(test_load_syntax),
        cmocka_unit_test(test_load_errors_name_line),
        cmocka_unit_test(test_load_limits),
        cmocka_unit_test(test_load_long_section_name),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_relay_defaults),
        cmocka_unit_test(test_relay_good),
        cmocka_unit_test(test_relay_value_errors),
        cmocka_unit_test(test_relay_route_errors),
        cmocka_unit_test(test_relay_check),
        cmocka_unit_test(test_relay_admin_keys),
        cmocka_unit_test(test_relay_flags_override),
        cmocka_unit_test(test_relay_missing_file),
        cmocka_unit_test(test_sample_configs),
        cmocka_unit_test(test_agent_defaults),
        cmocka_unit_test(test_agent_good),
        cmocka_unit_test(test_agent_errors),
        cmocka_unit_test(test_agent_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
