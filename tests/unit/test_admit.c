/* Unit tests: relay/admit, a listener whose connection could not be taken goes on accepting.
 *
 * libuv hands a listener's connection callback one connection to accept; a callback that
 * returns without accepting leaves the listener stopped for good. Here every connection is
 * refused as if the relay were out of memory (relay_admit_drop_unaccepted), many arriving in
 * one loop turn so that the spare handle is still closing when the next one comes: every
 * client must still be accepted and see its connection closed, and nothing may leak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "relay/admit.h"
#include "relay/relay.h"

#define CLIENTS 24

struct client {
    uv_tcp_t tcp;
    uv_connect_t req;
    bool ended; /* EOF or reset: the relay closed it */
    int *nended;
};

static int refused;

static void on_connection(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    refused++;
    relay_admit_drop_unaccepted(server->data, server, "client");
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char scratch[64];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    (void)buf;
    assert_true(n <= 0); /* the relay never writes */
    if (n < 0 && !c->ended) {
        c->ended = true;
        (*c->nended)++;
        uv_close((uv_handle_t *)s, NULL);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) { /* refused by a backlog overflow: not what this test is about */
        fail_msg("connect: %s", uv_strerror(status));
        return;
    }
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read), 0);
}

static void on_deadline(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void listener_goes_on_after_refusals(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct relay r;
    struct client clients[CLIENTS];
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound), nended = 0;
    uv_timer_t deadline;

    memset(&r, 0, sizeof(r));
    memset(clients, 0, sizeof(clients));
    assert_int_equal(uv_loop_init(&loop), 0);
    r.loop = &loop;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_init(&loop, &r.client_listener), 0);
    r.client_listener.data = &r;
    assert_int_equal(uv_tcp_bind(&r.client_listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r.client_listener, 128, on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&r.client_listener, (struct sockaddr *)&bound, &len), 0);

    for (int i = 0; i < CLIENTS; i++) {
        struct client *c = &clients[i];
        c->nended = &nended;
        assert_int_equal(uv_tcp_init(&loop, &c->tcp), 0);
        c->tcp.data = c->req.data = c;
        assert_int_equal(
            uv_tcp_connect(&c->req, &c->tcp, (const struct sockaddr *)&bound, on_connect), 0);
    }
    /* bounded by time, not by a count of loop turns: a loaded machine is slower, not wrong */
    uv_timer_init(&loop, &deadline);
    uv_timer_start(&deadline, on_deadline, 10000, 0);
    while (nended < CLIENTS && uv_timer_get_due_in(&deadline) > 0 &&
           uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    assert_int_equal(refused, CLIENTS);
    assert_int_equal(nended, CLIENTS);

    uv_close((uv_handle_t *)&deadline, NULL);
    uv_close((uv_handle_t *)&r.client_listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.open_handles, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listener_goes_on_after_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
