/* Unit tests: common/escape (the one escaper of peer-chosen strings) and common/log (escaped
 * lines, log_file_open's refusals). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/escape.h"
#include "common/log.h"

static const char *esc(const char *s, size_t n, enum escape_style style)
{
    static char buf[512];
    size_t len = escape(buf, s, n, style);
    assert_true(len < sizeof(buf));
    assert_int_equal(len, escape(NULL, s, n, style));
    assert_true(len <= ESCAPE_MAX_RATIO * n);
    buf[len] = '\0';
    return buf;
}

static void text_style(void **state)
{
    (void)state;
    /* a forged line: the newline and carriage return cannot start one */
    assert_string_equal(esc("bob\n2026-12-01T00:00:00.000Z INFO  session start", 48, ESCAPE_TEXT),
                        "bob\\n2026-12-01T00:00:00.000Z INFO  session start");
    assert_string_equal(esc("a\r\tb\\c\"d", 8, ESCAPE_TEXT), "a\\r\\tb\\\\c\"d");
    /* other controls, DEL, NUL and invalid UTF-8 keep their byte values */
    assert_string_equal(esc("\x01\x7f\0\xff\xc0\xaf", 6, ESCAPE_TEXT),
                        "\\x01\\x7f\\x00\\xff\\xc0\\xaf");
    /* valid UTF-8 stays; NEL, LINE SEPARATOR and a bidi override do not */
    assert_string_equal(esc("\xc3\xa9\xf0\x9f\x98\x80", 6, ESCAPE_TEXT),
                        "\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(esc("a\xc2\x85z\xe2\x80\xa8\xe2\x80\xae", 10, ESCAPE_TEXT),
                        "a\\u{0085}z\\u{2028}\\u{202e}");
}

static void json_style(void **state)
{
    (void)state;
    assert_string_equal(esc("a\"\\\n\x01\x80", 6, ESCAPE_JSON), "a\\\"\\\\\\n\\u0001\\ufffd");
    assert_string_equal(esc("\xe2\x80\xa9\xc2\x9b", 5, ESCAPE_JSON), "\\u2029\\u009b");
}

static void escape_str_cuts_cleanly(void **state)
{
    char buf[8];
    (void)state;
    /* "ab\n" needs 4 bytes + NUL; "\x01" 4 more: cut before an escape that does not fit */
    assert_string_equal(escape_str(buf, sizeof(buf), "ab\n\x01", ESCAPE_TEXT), "ab\\n");
    assert_string_equal(escape_str(buf, 1, "abc", ESCAPE_TEXT), "");
    /* a UTF-8 character is never split */
    assert_string_equal(escape_str(buf, 4, "a\xe2\x9c\x93", ESCAPE_TEXT), "a");
}

static void worst_case_ratio(void **state)
{
    (void)state;
    /* every byte value, alone and after a lead byte: never more than the documented ratio */
    for (int b = 0; b < 256; b++) {
        for (int lead = 0; lead < 256; lead += 17) {
            char s[2] = {(char)lead, (char)b};
            for (int st = ESCAPE_JSON; st <= ESCAPE_TEXT; st++) {
                size_t n = escape(NULL, s, 2, (enum escape_style)st);
                assert_true(n <= 2 * ESCAPE_MAX_RATIO);
            }
        }
    }
}

/* ---- log lines and log files -------------------------------------------------------------- */

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/pgb-test-log-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static size_t read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

static void lines_are_escaped(void **state)
{
    char path[128], buf[2048];
    (void)state;
    snprintf(path, sizeof(path), "%s/text.log", dir);
    log_configure(LOG_INFO, LOG_TEXT, "test");
    assert_int_equal(log_open(path), 0);
    log_info("session start user=%s sni=%s", "x\n2026-12-01T00:00:00.000Z INFO  forged", "a\r");
    assert_int_equal(log_open(NULL), 0);
    read_all(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "user=x\\n2026-12-01T00:00:00.000Z INFO  forged sni=a\\r\n"));
    assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1); /* one line */

    snprintf(path, sizeof(path), "%s/json.log", dir);
    log_configure(LOG_INFO, LOG_JSON, "test");
    assert_int_equal(log_open(path), 0);
    log_info("user=%s", "\"}\xff\n");
    assert_int_equal(log_open(NULL), 0);
    log_configure(LOG_INFO, LOG_TEXT, "test");
    read_all(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"msg\":\"user=\\\"}\\ufffd\\n\"}\n"));
}

static void file_open_refusals(void **state)
{
    char path[128], other[128], err[256];
    struct stat st;
    int fd;
    (void)state;

    /* a new file gets the mode asked for, whatever the umask */
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    fd = log_file_open(path, 0600, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    close(fd);
    /* an existing file with a looser mode is narrowed */
    assert_int_equal(chmod(path, 0666), 0);
    fd = log_file_open(path, 0640, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    close(fd);

    /* a symbolic link is refused, even to a file we own */
    snprintf(other, sizeof(other), "%s/link", dir);
    assert_int_equal(symlink(path, other), 0);
    assert_int_equal(log_file_open(other, 0600, err, sizeof(err)), -ELOOP);
    assert_non_null(strstr(err, "symbolic link"));

    /* a file with a second hard link is refused */
    snprintf(other, sizeof(other), "%s/hard", dir);
    assert_int_equal(link(path, other), 0);
    assert_true(log_file_open(path, 0600, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "hard links"));
    unlink(other);

    /* not a regular file */
    snprintf(other, sizeof(other), "%s/fifo", dir);
    assert_int_equal(mkfifo(other, 0600), 0);
    assert_true(log_file_open(other, 0600, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "not a regular file"));

    /* another user's file (as root: give it away first) */
    if (geteuid() == 0) {
        snprintf(other, sizeof(other), "%s/foreign", dir);
        fd = log_file_open(other, 0600, err, sizeof(err));
        assert_true(fd >= 0);
        assert_int_equal(fchown(fd, 4242, 4242), 0);
        close(fd);
        assert_true(log_file_open(other, 0600, err, sizeof(err)) < 0);
        assert_non_null(strstr(err, "owned by uid 4242"));
        /* ... unless it is the service user's, and a new file is given to that user */
        log_set_file_owner(4242, 4242);
        fd = log_file_open(other, 0600, err, sizeof(err));
        assert_true(fd >= 0);
        close(fd);
        snprintf(other, sizeof(other), "%s/new-for-service", dir);
        fd = log_file_open(other, 0600, err, sizeof(err));
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(st.st_uid, 4242);
        close(fd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_style),
        cmocka_unit_test(json_style),
        cmocka_unit_test(escape_str_cuts_cleanly),
        cmocka_unit_test(worst_case_ratio),
        cmocka_unit_test(lines_are_escaped),
        cmocka_unit_test(file_open_refusals),
    };
    return cmocka_run_group_tests_name("log", tests, make_dir, remove_dir);
}
