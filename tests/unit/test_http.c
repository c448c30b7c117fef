/* Unit tests: the strict HTTP/1.1 request-head parser of the metrics listener, fed whole and
 * cut at every point, its limits, and the server answering over a real socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* ---- the server on a real loop: answer, close, no handle left behind ------------------- */

struct client {
    struct http_server *server;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *send;
    size_t send_len;
    char got[8192];
    size_t got_len;
    int handled;
};

static int handler(void *ctx, const struct http_request *req, char **body, size_t *len,
                   const char **content_type)
{
    struct client *c = ctx;
    c->handled++;
    if (strcmp(req->path, "/hello") != 0)
        return 404;
    *body = strdup("hi\n");
    *len = 3;
    *content_type = "text/plain";
    return 200;
}

static void client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    http_server_close(c->server);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    *buf = uv_buf_init(c->got + c->got_len, (unsigned)(sizeof(c->got) - 1 - c->got_len));
}

static void client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = st->data;
    if (n > 0) {
        c->got_len += (size_t)n;
        c->got[c->got_len] = '\0';
    } else if (n < 0) {
        uv_close((uv_handle_t *)&c->tcp, client_closed);
    }
}

static void client_written(uv_write_t *req, int status)
{
    assert_int_equal(status, 0);
}

static void client_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)c->send_len);

    assert_int_equal(status, 0);
    assert_int_equal(uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_written), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
}

/* A port that was free a moment ago on 127.0.0.1. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Send request to a fresh server on its own loop; the answer ends up in c->got. */
static void exchange(struct client *c, const char *request, size_t len)
{
    struct http_server server;
    struct sockaddr_in addr;
    char hostport[32], err[256];
    uv_loop_t loop;
    int port = free_port();

    memset(c, 0, sizeof(*c));
    c->server = &server;
    c->send = request;
    c->send_len = len;
    assert_int_equal(uv_loop_init(&loop), 0);
    snprintf(hostport, sizeof(hostport), "127.0.0.1:%d", port);
    assert_int_equal(http_server_start(&server, &loop, hostport, handler, c, err, sizeof(err)), 0);
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c->creq.data = c;
    uv_ip4_addr("127.0.0.1", port, &addr);
    assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, client_connected),
                     0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(server.nconns, 0);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
}

static void server_answers_once_and_closes(void **state)
{
    (void)state;
    struct client c;
    static const char ok[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";

    exchange(&c, ok, strlen(ok));
    assert_int_equal(c.handled, 1);
    assert_string_equal(c.got,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n\r\nhi\n");

    static const char head[] = "HEAD /hello HTTP/1.0\r\n\r\n";
    exchange(&c, head, strlen(head));
    assert_non_null(strstr(c.got, "Content-Length: 3\r\n"));
    assert_int_equal(strlen(strstr(c.got, "\r\n\r\n")), 4); /* no body */

    static const char other[] = "GET /other HTTP/1.0\r\n\r\n";
    exchange(&c, other, strlen(other));
    assert_non_null(strstr(c.got, "HTTP/1.1 404 Not Found\r\n"));
}

static void server_refuses_bad_heads_without_the_handler(void **state)
{
    (void)state;
    struct client c;
    static const char start[] = "GET /hello HTTP/1.1\r\nHost: t\r\nX: ";
    char *big = malloc(HTTP_HEAD_MAX * 2);

    assert_non_null(big);
    memcpy(big, start, strlen(start));
    memset(big + strlen(start), 'x', HTTP_HEAD_MAX * 2 - strlen(start));
    exchange(&c, big, HTTP_HEAD_MAX * 2); /* more than the head bound, unread: still answered */
    assert_int_equal(c.handled, 0);
    assert_non_null(strstr(c.got, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    free(big);

    static const char garbage[] = "\x16\x03\x01\x00\x10garbage\r\n";
    exchange(&c, garbage, sizeof(garbage) - 1);
    assert_int_equal(c.handled, 0);
    assert_non_null(strstr(c.got, "HTTP/1.1 400 Bad Request\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_requests),
        cmocka_unit_test(malformed_requests),
        cmocka_unit_test(limits),
        cmocka_unit_test(reasons),
        cmocka_unit_test(server_answers_once_and_closes),
        cmocka_unit_test(server_refuses_bad_heads_without_the_handler),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
