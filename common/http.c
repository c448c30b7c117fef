/*
 * http — strict request-head parser and a one-request-per-connection server (see http.h).
 *
 * A connection's life:
 *
 *   accepted --head complete--> answered --written--> shut down (FIN) --peer EOF--> closed
 *       |  \--bad head, 431--/                             \--HTTP_WRITE_TIMEOUT_MS--/
 *       \--HTTP_HEAD_TIMEOUT_MS: 408 --/
 *
 * After answering, whatever the peer still sends is read and dropped until it closes, so that
 * the kernel does not answer unread bytes with a reset that could destroy the answer in
 * flight; the write timeout bounds that wait.
 */
#include "common/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/conn.h"
#include "common/log.h"

/* ---- parser ----------------------------------------------------------------------------- */

/* RFC 9110 tchar. */
static bool is_tchar(uint8_t ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* A byte that may appear in a line: visible, blank, or obs-text. */
static bool is_line_char(uint8_t ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static int parse_request_line(const uint8_t *p, size_t n, struct http_request *req)
{
    size_t i = 0, m, t;

    while (i < n && is_tchar(p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return 400;
    m = i;
    if (m == 3 && memcmp(p, "GET", 3) == 0)
        req->method = HTTP_GET;
    else if (m == 4 && memcmp(p, "HEAD", 4) == 0)
        req->method = HTTP_HEAD;
    else
        req->method = HTTP_OTHER;
    t = ++i;
    while (i < n && p[i] > 0x20 && p[i] < 0x7f)
        i++;
    if (i == t || i >= n || p[i] != ' ' || p[t] != '/')
        return 400;
    size_t plen = 0;
    while (t + plen < i && p[t + plen] != '?')
        plen++;
    if (plen >= HTTP_PATH_MAX)
        return 414;
    memcpy(req->path, p + t, plen);
    req->path[plen] = '\0';
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return 400;
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return 505;
    req->http11 = p[i + 7] == '1';
    return 200;
}

static bool value_is(const uint8_t *v, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp((const char *)v, want, n) == 0;
}

/* One header line (without CRLF); counts Host headers. */
static int parse_header(const uint8_t *p, size_t n, unsigned *hosts)
{
    size_t i = 0, v, e;

    while (i < n && is_tchar(p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return 400;
    v = i + 1;
    while (v < n && (p[v] == ' ' || p[v] == '\t'))
        v++;
    e = n;
    while (e > v && (p[e - 1] == ' ' || p[e - 1] == '\t'))
        e--;
    if (value_is(p, i, "host"))
        (*hosts)++;
    else if (value_is(p, i, "transfer-encoding"))
        return 400;
    else if (value_is(p, i, "content-length") && !value_is(p + v, e - v, "0"))
        return 400;
    return 200;
}

int http_parse(const uint8_t *buf, size_t len, struct http_request *req)
{
    size_t pos = 0;
    unsigned hosts = 0;
    bool first = true;

    if (len > HTTP_HEAD_MAX)
        return 431;
    memset(req, 0, sizeof(*req));
    for (;;) {
        size_t end = pos;
        int rc;

        while (end < len && is_line_char(buf[end]))
            end++;
        if (end == len)
            return len == HTTP_HEAD_MAX ? 431 : 0;
        if (buf[end] != '\r')
            return 400; /* a control byte, or a bare LF */
        if (end + 1 == len)
            return len == HTTP_HEAD_MAX ? 431 : 0;
        if (buf[end + 1] != '\n')
            return 400;
        if (first) {
            rc = parse_request_line(buf + pos, end - pos, req);
            first = false;
        } else if (end == pos) {
            break; /* the empty line: end of the head */
        } else if (buf[pos] == ' ' || buf[pos] == '\t') {
            rc = 400; /* obsolete line folding */
        } else {
            rc = parse_header(buf + pos, end - pos, &hosts);
        }
        if (rc != 200)
            return rc;
        pos = end + 2;
    }
    if (req->http11 && hosts != 1)
        return 400;
    if (hosts > 1)
        return 400;
    return 200;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---- server ----------------------------------------------------------------------------- */

enum http_conn_state { HTTP_READING, HTTP_WRITING, HTTP_LINGERING, HTTP_CLOSING };

struct http_conn {
    struct http_server *s;
    struct http_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    enum http_conn_state state;
    int open_handles; /* freed when both are closed */
    char *out;        /* the answer being written */
    size_t out_len;
    size_t len; /* head bytes read */
    uint8_t head[HTTP_HEAD_MAX];
    char drop[512]; /* what the peer sends after the head, read and dropped */
};

static void conn_handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->s->nconns--;
    free(c->out);
    free(c);
}

static void http_on_timeout(uv_timer_t *t);

static void http_conn_close(struct http_conn *c)
{
    if (c->state == HTTP_CLOSING)
        return;
    c->state = HTTP_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_read_drop(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void alloc_drop(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    *buf = uv_buf_init(c->drop, sizeof(c->drop));
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;

    if (status < 0 || c->state != HTTP_LINGERING)
        http_conn_close(c);
}

static void on_written(uv_write_t *req, int status)
{
    struct http_conn *c = req->data;

    free(c->out);
    c->out = NULL;
    if (c->state != HTTP_WRITING)
        return;
    if (status < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_drop, on_read_drop) < 0) {
        http_conn_close(c);
        return;
    }
    c->state = HTTP_LINGERING;
}

/* Write the answer (takes body) and stop reading the head. */
static void answer(struct http_conn *c, int status, const char *ctype, char *body, size_t n,
                   bool head_only)
{
    char hdr[256];
    int h;

    uv_read_stop((uv_stream_t *)&c->tcp);
    if (!body) {
        /* errors carry their reason as a short text body */
        const char *r = http_reason(status);
        ctype = "text/plain; charset=utf-8";
        n = strlen(r) + 1;
        if ((body = malloc(n + 1)))
            snprintf(body, n + 1, "%s\n", r);
        else
            n = 0;
    }
    h = snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                 "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                 status, http_reason(status), ctype, n,
                 status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (head_only)
        n = 0;
    c->out_len = (size_t)h + n;
    c->out = malloc(c->out_len);
    if (!c->out) {
        free(body);
        http_conn_close(c);
        return;
    }
    memcpy(c->out, hdr, (size_t)h);
    if (n)
        memcpy(c->out + h, body, n);
    free(body);
    c->state = HTTP_WRITING;
    uv_timer_start(&c->timer, http_on_timeout, HTTP_WRITE_TIMEOUT_MS, 0);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
        http_conn_close(c);
}

static void http_on_timeout(uv_timer_t *t)
{
    struct http_conn *c = t->data;

    if (c->state == HTTP_READING)
        answer(c, 408, NULL, NULL, 0, false);
    else
        http_conn_close(c);
}

static void on_read_drop(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct http_conn *c = st->data;

    if (n < 0)
        http_conn_close(c); /* the peer closed (or failed): done */
}

static void alloc_head(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    *buf = uv_buf_init((char *)c->head + c->len, (unsigned)(HTTP_HEAD_MAX - c->len));
}

static void on_read_head(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct http_conn *c = st->data;
    struct http_request req;
    char *body = NULL;
    size_t blen = 0;
    const char *ctype = NULL;
    int status;

    if (n < 0) {
        http_conn_close(c); /* EOF before a whole head: nobody to answer */
        return;
    }
    c->len += (size_t)n;
    status = http_parse(c->head, c->len, &req);
    if (status == 0)
        return;
    if (status == 200)
        status = c->s->handle(c->s->ctx, &req, &body, &blen, &ctype);
    answer(c, status, ctype, body, blen, status == 200 && req.method == HTTP_HEAD);
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct http_server *s = server->data;
    struct http_conn *c;

    if (status < 0)
        return;
    if (s->nconns >= HTTP_MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
        uv_tcp_t *extra = malloc(sizeof(*extra));
        s->refused++;
        if (!extra)
            return; /* stays in the backlog until a connection ends */
        uv_tcp_init(s->loop, extra);
        if (uv_accept(server, (uv_stream_t *)extra) == 0)
            uv_tcp_close_reset(extra, free_handle);
        else
            uv_close((uv_handle_t *)extra, free_handle);
        return;
    }
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c->wreq.data = c->sreq.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_head, on_read_head) < 0) {
        http_conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, http_on_timeout, HTTP_HEAD_TIMEOUT_MS, 0);
}

int http_server_start(struct http_server *s, uv_loop_t *loop, const char *hostport,
                      http_handler handle, void *ctx, char *err, size_t cap)
{
    struct sockaddr_storage ss;
    int rc;

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->handle = handle;
    s->ctx = ctx;
    if ((rc = conn_resolve_listen(loop, hostport, &ss, err, cap)) < 0)
        return rc;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
    if (rc < 0) {
        snprintf(err, cap, "cannot listen on %s: %s", hostport, uv_strerror(rc));
        return rc;
    }
    return 0;
}

void http_server_close(struct http_server *s)
{
    if (s->listening) {
        s->listening = false;
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    for (struct http_conn *c = s->conns; c; c = c->next)
        http_conn_close(c);
}
