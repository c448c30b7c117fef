/* Unit tests: the strict HTTP/1.1 request-head parser of the metrics listener, fed whole and
 * cut at every point, its limits, and the server answering over a real socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/http.h"

static int parse_str(const char *s, struct http_request *req)
{
    return http_parse((const uint8_t *)s, strlen(s), req);
}

/* Every proper prefix needs more bytes (or fails as the whole does); the whole gives want. */
static void check_every_split(const char *s, int want)
{
    struct http_request req;
    size_t n = strlen(s);

    for (size_t cut = 0; cut < n; cut++) {
        int rc = http_parse((const uint8_t *)s, cut, &req);
        if (rc != 0 && rc != want)
            fail_msg("prefix of %zu bytes of %s: %d (whole: %d)", cut, s, rc, want);
    }
    assert_int_equal(parse_str(s, &req), want);
}

static void valid_requests(void **state)
{
    (void)state;
    struct http_request req;
    const char *ok[] = {
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /metrics HTTP/1.0\r\n\r\n",
        "HEAD /healthz HTTP/1.1\r\nhost:127.0.0.1:9187\r\nAccept: */*\r\n\r\n",
        "GET /readyz?verbose=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/7.88\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0"
        ",text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nContent-Length: 0\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n", /* parsed; the server answers 405 */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        check_every_split(ok[i], 200);
    assert_int_equal(parse_str(ok[0], &req), 200);
    assert_int_equal(req.method, HTTP_GET);
    assert_string_equal(req.path, "/metrics");
    assert_true(req.http11);
    assert_int_equal(parse_str(ok[2], &req), 200);
    assert_int_equal(req.method, HTTP_HEAD);
    assert_int_equal(parse_str(ok[3], &req), 200);
    assert_string_equal(req.path, "/readyz");
    assert_int_equal(parse_str(ok[1], &req), 200);
    assert_false(req.http11);
    assert_int_equal(parse_str(ok[5], &req), 200);
    assert_int_equal(req.method, HTTP_OTHER);
}

static void malformed_requests(void **state)
{
    (void)state;
    const struct {
        const char *s;
        int status;
    } bad[] = {
        {"GET /metrics HTTP/1.1\nHost: x\n\n", 400}, /* bare LF */
        {"GET /metrics HTTP/1.1\r\n\r\n", 400},      /* HTTP/1.1 without Host */
        {"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400}, /* two blanks */
        {"GET metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400},   /* not origin-form */
        {"GET /metrics\r\nHost: a\r\n\r\n", 400},           /* HTTP/0.9 */
        {"GET /metrics HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
        {"GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"GET /metrics HTTP/1.2\r\nHost: a\r\n\r\n", 505},
        {"GET /metrics HTTP/1.1\r\nHost: a\r\n Folded: b\r\n\r\n", 400},
        {"GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n", 400}, /* blank before the colon */
        {"GET /metrics HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", 400},
        {"GET /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 400},
        {"GET /metrics HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400},
        {"G\x00T / HTTP/1.1\r\n\r\n", 400},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400}, /* a TLS ClientHello */
        {"GET /metrics HTTP/1.1\rHost: a\r\n\r\n", 400},
        {"\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *s = bad[i].s;
        size_t n = i == 15 ? 19 : strlen(s); /* one holds a NUL */
        struct http_request req;
        for (size_t cut = 0; cut < n; cut++) {
            int rc = http_parse((const uint8_t *)s, cut, &req);
            if (rc != 0 && rc != bad[i].status)
                fail_msg("case %zu prefix %zu: %d", i, cut, rc);
        }
        int rc = http_parse((const uint8_t *)s, n, &req);
        if (rc != bad[i].status)
            fail_msg("case %zu: %d, expected %d", i, rc, bad[i].status);
    }
}

static void limits(void **state)
{
    (void)state;
    struct http_request req;
    char *buf = malloc(HTTP_HEAD_MAX + 16);
    size_t n;

    assert_non_null(buf);
    /* a head of exactly HTTP_HEAD_MAX bytes is taken */
    n = (size_t)snprintf(buf, HTTP_HEAD_MAX, "GET /metrics HTTP/1.1\r\nHost: a\r\nX: ");
    memset(buf + n, 'a', HTTP_HEAD_MAX - n - 4);
    memcpy(buf + HTTP_HEAD_MAX - 4, "\r\n\r\n", 4);
    assert_int_equal(http_parse((uint8_t *)buf, HTTP_HEAD_MAX, &req), 200);
    /* one byte more, or a full buffer without the end of the head: 431 */
    buf[HTTP_HEAD_MAX - 4] = buf[HTTP_HEAD_MAX - 3] = 'a'; /* "...aa\r\n": no empty line */
    assert_int_equal(http_parse((uint8_t *)buf, HTTP_HEAD_MAX, &req), 431);
    assert_int_equal(http_parse((uint8_t *)buf, HTTP_HEAD_MAX - 1, &req), 0);
    memcpy(buf + HTTP_HEAD_MAX - 3, "\r\n\r", 3);
    assert_int_equal(http_parse((uint8_t *)buf, HTTP_HEAD_MAX, &req), 431);
    assert_int_equal(http_parse((uint8_t *)buf, HTTP_HEAD_MAX + 1, &req), 431);
    /* the path: HTTP_PATH_MAX - 1 bytes fit, one more is 414 */
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'p', HTTP_PATH_MAX - 2);
    n = 5 + HTTP_PATH_MAX - 2;
    n += (size_t)sprintf(buf + n, "?q HTTP/1.0\r\n\r\n");
    assert_int_equal(http_parse((uint8_t *)buf, n, &req), 200);
    assert_int_equal(strlen(req.path), HTTP_PATH_MAX - 1);
    memcpy(buf, "GET //", 6);
    memset(buf + 6, 'p', HTTP_PATH_MAX - 1);
    n = 6 + HTTP_PATH_MAX - 1;
    n += (size_t)sprintf(buf + n, " HTTP/1.0\r\n\r\n");
    assert_int_equal(http_parse((uint8_t *)buf, n, &req), 414);
    free(buf);
}

static void reasons(void **state)
{
    (void)state;
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(999), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_requests),
        cmocka_unit_test(malformed_requests),
        cmocka_unit_test(limits),
        cmocka_unit_test(reasons),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
