/*
 * http — a tiny, strict HTTP/1.1 responder for the metrics and health endpoints: one request
 * per connection, no body read, answered with Connection: close.
 *
 * The parser (http_parse) is pure and re-reads the whole head each time more bytes arrive
 * (the head is at most HTTP_HEAD_MAX bytes). The server (struct http_server) listens on the
 * daemon's loop and bounds everything a peer can make it hold:
 *   - HTTP_HEAD_MAX bytes of request head (more: 431);
 *   - HTTP_HEAD_TIMEOUT_MS from accept to a complete head (then 408);
 *   - HTTP_MAX_CONNS connections at once (more are accepted and closed at once);
 *   - HTTP_WRITE_TIMEOUT_MS for the answer to be taken and the peer to close (then closed).
 * The server owns its connections and frees each in its last close callback; it borrows the
 * handler and its context. Its struct must outlive the loop run that follows http_server_close.
 */
#ifndef PGB_HTTP_H
#define PGB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define HTTP_HEAD_MAX 4096
#define HTTP_PATH_MAX 256 /* longer targets: 414 */
#define HTTP_HEAD_TIMEOUT_MS 5000
#define HTTP_WRITE_TIMEOUT_MS 10000
#define HTTP_MAX_CONNS 16

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER };

struct http_request {
    enum http_method method;
    char path[HTTP_PATH_MAX]; /* the target up to '?' */
    bool http11;              /* HTTP/1.1 (else 1.0) */
};

/* Parse the request head in buf[len]. Returns 0 when more bytes are needed, 200 when the
 * head is complete and valid (req filled), or the error status to answer: 400 (malformed),
 * 414 (target too long), 431 (head over HTTP_HEAD_MAX), 505 (not HTTP/1.0 or 1.1).
 * Strict: lines end in CRLF; no folded headers; a header name is a token; HTTP/1.1 needs one
 * Host; a request body (Content-Length other than 0, Transfer-Encoding) is refused (400). */
int http_parse(const uint8_t *buf, size_t len, struct http_request *req);

/* The reason phrase of a status ("Not Found"), "Unknown" for others. */
const char *http_reason(int status);

/* Answer a valid request: return the status and set *body (malloc'ed; the server frees it;
 * NULL for none), *len and *content_type (a constant). */
typedef int (*http_handler)(void *ctx, const struct http_request *req, char **body, size_t *len,
                            const char **content_type);

struct http_conn;

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening; /* listener open */
    struct http_conn *conns;
    size_t nconns;
    uint64_t refused; /* connections closed at once: HTTP_MAX_CONNS reached */
    http_handler handle;
    void *ctx;
};

/* Listen on hostport ("host:port", "[v6]:port", "*:port"). 0, or negative with err[cap]. */
int http_server_start(struct http_server *s, uv_loop_t *loop, const char *hostport,
                      http_handler handle, void *ctx, char *err, size_t cap);
/* Close the listener and every connection (their close callbacks follow from the loop). */
void http_server_close(struct http_server *s);

#endif
