/*
 * Unit tests for proto/: header rules, every limit (exact limit accepted, one past rejected),
 * encode -> reader -> decode round trips of every frame kind at every split, and hostile
 * msgpack that would make an unguarded msgpack-c allocate gigabytes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sqlstate.h"
#include "proto/proto.h"

/* ---- helpers ----------------------------------------------------------------------------- */

#define MAX_SEEN 64

/* What the reader handed to the callbacks. */
struct seen {
    int nframes;
    struct proto_hdr hdr[MAX_SEEN];
    uint8_t *body[MAX_SEEN]; /* copies of on_frame bodies */
    uint8_t data[4 * PROTO_MAX_DATA];
    size_t data_len;
    uint32_t data_stream;
    int ndata_calls;
    const uint8_t *fed_lo, *fed_hi; /* the chunk being fed: on_data must point inside it */
    int stop_at_frame;              /* on_frame returns -42 for this frame index (or -1) */
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    s->stop_at_frame = -1;
}

static void seen_free(struct seen *s)
{
    for (int i = 0; i < s->nframes; i++)
        free(s->body[i]);
}

static int on_data(void *ctx, uint32_t stream, const uint8_t *data, size_t len)
{
    struct seen *s = ctx;
    assert_true(len > 0);
    assert_true(data >= s->fed_lo && data + len <= s->fed_hi); /* in place, never copied */
    assert_true(s->data_len + len <= sizeof s->data);
    memcpy(s->data + s->data_len, data, len);
    s->data_len += len;
    s->data_stream = stream;
    s->ndata_calls++;
    return 0;
}

static int on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    struct seen *s = ctx;
    assert_true(s->nframes < MAX_SEEN);
    int idx = s->nframes++;
    s->hdr[idx] = *h;
    s->body[idx] = malloc(h->length + 1);
    assert_non_null(s->body[idx]);
    memcpy(s->body[idx], body, h->length);
    return idx == s->stop_at_frame ? -42 : 0;
}

static const struct proto_reader_ops ops = {.on_data = on_data, .on_frame = on_frame};

/* Feed buf in chunks of `step` bytes (0 = whole). */
static int feed_steps(struct proto_reader *r, struct seen *s, const uint8_t *buf, size_t len,
                      size_t step)
{
    size_t off = 0;
    if (step == 0)
        step = len;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        s->fed_lo = buf + off;
        s->fed_hi = buf + off + n;
        int rc = proto_reader_feed(r, buf + off, n, &ops, s);
        if (rc != 0)
            return rc;
        off += n;
    }
    return 0;
}

/* A header with arbitrary (possibly invalid) fields. */
static void raw_hdr(uint8_t *out, uint8_t ver, uint8_t type, uint16_t flags, uint32_t stream,
                    uint32_t length)
{
    struct proto_hdr h = {.type = type, .flags = flags, .stream_id = stream, .length = length};
    proto_hdr_encode(out, &h);
    out[0] = ver;
}

static int hdr_check(uint8_t type, uint16_t flags, uint32_t stream, uint32_t length)
{
    uint8_t b[PROTO_HDR_SIZE];
    struct proto_hdr h;
    raw_hdr(b, PROTO_WIRE_VERSION, type, flags, stream, length);
    return proto_hdr_decode(b, &h);
}

/* msgpack test builder (tests may allocate; the module may not). */
struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void mp_init(struct mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(struct mp *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

static void mp_strn(struct mp *m, char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    msgpack_pack_str_with_body(&m->pk, s, n);
    free(s);
}

static const uint8_t *mp_buf(struct mp *m)
{
    return (const uint8_t *)m->sb.data;
}

static void mp_free(struct mp *m)
{
    msgpack_sbuffer_destroy(&m->sb);
}

static void fill_hello(struct proto_hello *h, uint32_t nroutes)
{
    memset(h, 0, sizeof *h);
    h->ver_major = 1;
    h->ver_minor = 0;
    strcpy(h->software, "pgburrow-agent 0.1.0");
    h->nroutes = nroutes; /* may exceed the array to test the encoder; only it is filled */
    for (uint32_t i = 0; i < nroutes && i < PROTO_MAX_ROUTES; i++)
        snprintf(h->routes[i], PROTO_NAME_MAX, "route-%u", i);
}

static void fill_welcome(struct proto_welcome *w)
{
    memset(w, 0, sizeof *w);
    w->ver_major = 1;
    w->ver_minor = 0;
    strcpy(w->relay_id, "relay-a");
    w->naccepted = 2;
    strcpy(w->accepted[0], "db1");
    strcpy(w->accepted[1], "db.2");
    w->nrefused = 1;
    strcpy(w->refused[0], "secret_db");
    w->ping_interval_ms = 1000;
    w->idle_timeout_ms = 4000;
    w->initial_window = PROTO_INITIAL_WINDOW;
    w->max_streams = 10000;
}

static void fill_open(struct proto_open *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->route, "db1");
    strcpy(o->session_id, "5f0c2a9e1b7d4c33");
    strcpy(o->client_addr, "192.0.2.7:51234");
    strcpy(o->user, "alice");
    strcpy(o->database, "sales");
    strcpy(o->application_name, "psql");
}

/* ---- header ------------------------------------------------------------------------------ */

static void test_hdr_roundtrip(void **state)
{
    uint8_t b[PROTO_HDR_SIZE];
    struct proto_hdr in = {.type = PROTO_DATA, .flags = 0, .stream_id = 0x01020304, .length = 77};
    struct proto_hdr out;
    const uint8_t want[] = {1, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 77};

    proto_hdr_encode(b, &in);
    assert_memory_equal(b, want, sizeof want);
    assert_int_equal(proto_hdr_decode(b, &out), PROTO_OK);
    assert_int_equal(out.type, PROTO_DATA);
    assert_int_equal(out.stream_id, 0x01020304);
    assert_int_equal(out.length, 77);
}

static void test_hdr_version_type_flags(void **state)
{
    uint8_t b[PROTO_HDR_SIZE];
    struct proto_hdr h;

    raw_hdr(b, 0, PROTO_PING, 0, 0, 8);
    assert_int_equal(proto_hdr_decode(b, &h), PROTO_E_VERSION);
    raw_hdr(b, 2, PROTO_PING, 0, 0, 8);
    assert_int_equal(proto_hdr_decode(b, &h), PROTO_E_VERSION);
    assert_int_equal(hdr_check(PROTO_TYPE_MAX + 1, 0, 0, 8), PROTO_E_TYPE);
    assert_int_equal(hdr_check(0xff, 0, 1, 1), PROTO_E_TYPE);
    assert_int_equal(hdr_check(PROTO_PING, 0x0001, 0, 8), PROTO_E_FLAGS);
    assert_int_equal(hdr_check(PROTO_DATA, 0x8000, 1, 1), PROTO_E_FLAGS);
}

static void test_hdr_stream_rule(void **state)
{
    /* A body length valid for each type, so only the stream id decides. */
    static const uint32_t ok_len[] = {
        [PROTO_DATA] = 1,      [PROTO_WINDOW] = 4, [PROTO_OPEN] = 1,    [PROTO_OPEN_OK] = 1,
        [PROTO_OPEN_FAIL] = 1, [PROTO_CLOSE] = 0,  [PROTO_RESET] = 1,   [PROTO_PING] = 8,
        [PROTO_PONG] = 8,      [PROTO_HELLO] = 1,  [PROTO_WELCOME] = 1, [PROTO_GOAWAY] = 1,
        [PROTO_CANCEL] = 1,
    };
    for (uint8_t t = 0; t <= PROTO_TYPE_MAX; t++) {
        bool needs_stream = t <= PROTO_RESET;
        assert_int_equal(hdr_check(t, 0, 0, ok_len[t]), needs_stream ? PROTO_E_STREAM : PROTO_OK);
        assert_int_equal(hdr_check(t, 0, 7, ok_len[t]), needs_stream ? PROTO_OK : PROTO_E_STREAM);
        assert_int_equal(hdr_check(t, 0, UINT32_MAX, ok_len[t]),
                         needs_stream ? PROTO_OK : PROTO_E_STREAM);
    }
}

static void test_hdr_length_limits(void **state)
{
    assert_int_equal(hdr_check(PROTO_DATA, 0, 1, 0), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_DATA, 0, 1, 1), PROTO_OK);
    assert_int_equal(hdr_check(PROTO_DATA, 0, 1, PROTO_MAX_DATA), PROTO_OK);
    assert_int_equal(hdr_check(PROTO_DATA, 0, 1, PROTO_MAX_DATA + 1), PROTO_E_TOO_BIG);
    assert_int_equal(hdr_check(PROTO_DATA, 0, 1, UINT32_MAX), PROTO_E_TOO_BIG);
    for (uint8_t t = PROTO_OPEN; t <= PROTO_GOAWAY; t++) {
        uint32_t stream = t <= PROTO_RESET ? 1 : 0;
        if (t == PROTO_CLOSE || t == PROTO_PING || t == PROTO_PONG)
            continue;
        assert_int_equal(hdr_check(t, 0, stream, PROTO_MAX_CONTROL), PROTO_OK);
        assert_int_equal(hdr_check(t, 0, stream, PROTO_MAX_CONTROL + 1), PROTO_E_TOO_BIG);
        assert_int_equal(hdr_check(t, 0, stream, UINT32_MAX), PROTO_E_TOO_BIG);
        assert_int_equal(hdr_check(t, 0, stream, 0), PROTO_E_BODY);
    }
    assert_int_equal(hdr_check(PROTO_WINDOW, 0, 1, 3), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_WINDOW, 0, 1, 5), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_WINDOW, 0, 1, 0), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_PING, 0, 0, 7), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_PONG, 0, 0, 9), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_PING, 0, 0, UINT32_MAX), PROTO_E_BODY);
    assert_int_equal(hdr_check(PROTO_CLOSE, 0, 1, 1), PROTO_E_BODY);
}

/* ---- fixed bodies ------------------------------------------------------------------------ */

static void test_window(void **state)
{
    uint8_t b[64];
    uint32_t inc = 0;
    const uint8_t want[] = {1, PROTO_WINDOW, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4, 0, 4, 0, 0};

    assert_int_equal(proto_encode_window(b, sizeof b, 9, 0x40000), 16);
    assert_memory_equal(b, want, sizeof want);
    assert_int_equal(proto_decode_window(b + PROTO_HDR_SIZE, 4, &inc), PROTO_OK);
    assert_int_equal(inc, 0x40000);
    const uint8_t zero[4] = {0, 0, 0, 0};
    assert_int_equal(proto_decode_window(zero, 4, &inc), PROTO_E_BODY);
    assert_int_equal(proto_decode_window(zero, 3, &inc), PROTO_E_BODY);
    const uint8_t max[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(proto_decode_window(max, 4, &inc), PROTO_OK);
    assert_int_equal(inc, UINT32_MAX);
    assert_int_equal(proto_encode_window(b, sizeof b, 9, 0), PROTO_E_BODY);
    assert_int_equal(proto_encode_window(b, sizeof b, 0, 1), PROTO_E_STREAM);
    assert_int_equal(proto_encode_window(b, 15, 9, 1), PROTO_E_NOSPACE);
}

static void test_ping_close(void **state)
{
    uint8_t b[64];
    uint64_t v = 0;

    assert_int_equal(proto_encode_ping(b, sizeof b, PROTO_PING, 0x0102030405060708ULL), 20);
    assert_int_equal(b[1], PROTO_PING);
    assert_int_equal(b[PROTO_HDR_SIZE], 0x01);
    assert_int_equal(b[PROTO_HDR_SIZE + 7], 0x08);
    assert_int_equal(proto_decode_ping(b + PROTO_HDR_SIZE, 8, &v), PROTO_OK);
    assert_true(v == 0x0102030405060708ULL);
    assert_int_equal(proto_decode_ping(b + PROTO_HDR_SIZE, 7, &v), PROTO_E_BODY);
    assert_int_equal(proto_decode_ping(b + PROTO_HDR_SIZE, 9, &v), PROTO_E_BODY);
    assert_int_equal(proto_encode_ping(b, sizeof b, PROTO_PONG, UINT64_MAX), 20);
    assert_int_equal(b[1], PROTO_PONG);
    assert_int_equal(proto_encode_ping(b, sizeof b, PROTO_DATA, 1), PROTO_E_TYPE);
    assert_int_equal(proto_encode_ping(b, 19, PROTO_PING, 1), PROTO_E_NOSPACE);
    assert_int_equal(proto_encode_close(b, sizeof b, 3), PROTO_HDR_SIZE);
    assert_int_equal(proto_encode_close(b, sizeof b, 0), PROTO_E_STREAM);
    assert_int_equal(proto_encode_close(b, PROTO_HDR_SIZE - 1, 3), PROTO_E_NOSPACE);
}

/* ---- round trip through the reader -------------------------------------------------------- */

static size_t build_all_frames(uint8_t *buf, size_t cap, uint8_t *payload, size_t payload_len)
{
    struct proto_hello hello;
    struct proto_welcome welcome;
    struct proto_open open;
    struct proto_error fail = {.code = "08006", .message = "connection refused"};
    struct proto_error reset = {.code = "57P01", .message = ""};
    struct proto_goaway ga = {.last_stream_id = 41, .code = "00000", .message = "draining"};
    size_t off = 0;
    int n;

    fill_hello(&hello, PROTO_MAX_ROUTES);
    fill_welcome(&welcome);
    fill_open(&open);
#define PUT(expr)                                                                                  \
    do {                                                                                           \
        n = (expr);                                                                                \
        assert_true(n > 0);                                                                        \
        off += (size_t)n;                                                                          \
    } while (0)
    PUT(proto_encode_hello(buf + off, cap - off, &hello));
    PUT(proto_encode_welcome(buf + off, cap - off, &welcome));
    PUT(proto_encode_open(buf + off, cap - off, 1, &open));
    PUT(proto_encode_open_ok(buf + off, cap - off, 1));
    PUT(proto_encode_window(buf + off, cap - off, 1, 12345));
    proto_encode_data_hdr(buf + off, 1, (uint32_t)payload_len);
    off += PROTO_HDR_SIZE;
    memcpy(buf + off, payload, payload_len);
    off += payload_len;
    proto_encode_data_hdr(buf + off, 1, 1);
    off += PROTO_HDR_SIZE;
    buf[off++] = 'Q';
    PUT(proto_encode_ping(buf + off, cap - off, PROTO_PING, 77));
    PUT(proto_encode_ping(buf + off, cap - off, PROTO_PONG, 77));
    PUT(proto_encode_close(buf + off, cap - off, 1));
    PUT(proto_encode_error(buf + off, cap - off, PROTO_OPEN_FAIL, 3, &fail));
    PUT(proto_encode_error(buf + off, cap - off, PROTO_RESET, 5, &reset));
    PUT(proto_encode_goaway(buf + off, cap - off, &ga));
#undef PUT
    return off;
}

static void check_all_frames(struct seen *s, const uint8_t *payload, size_t payload_len)
{
    static const uint8_t types[] = {PROTO_HELLO,     PROTO_WELCOME, PROTO_OPEN,  PROTO_OPEN_OK,
                                    PROTO_WINDOW,    PROTO_PING,    PROTO_PONG,  PROTO_CLOSE,
                                    PROTO_OPEN_FAIL, PROTO_RESET,   PROTO_GOAWAY};
    struct proto_hello hello, want_hello;
    struct proto_welcome welcome, want_welcome;
    struct proto_open open, want_open;
    struct proto_error err;
    struct proto_goaway ga;
    uint32_t inc;
    uint64_t opaque;

    assert_int_equal(s->nframes, (int)sizeof types);
    for (int i = 0; i < s->nframes; i++)
        assert_int_equal(s->hdr[i].type, types[i]);
    assert_int_equal(s->data_len, payload_len + 1);
    assert_memory_equal(s->data, payload, payload_len);
    assert_int_equal(s->data[payload_len], 'Q');
    assert_int_equal(s->data_stream, 1);

    fill_hello(&want_hello, PROTO_MAX_ROUTES);
    assert_int_equal(proto_decode_hello(s->body[0], s->hdr[0].length, &hello), PROTO_OK);
    assert_memory_equal(&hello, &want_hello, sizeof hello);
    fill_welcome(&want_welcome);
    assert_int_equal(proto_decode_welcome(s->body[1], s->hdr[1].length, &welcome), PROTO_OK);
    assert_memory_equal(&welcome, &want_welcome, sizeof welcome);
    fill_open(&want_open);
    assert_int_equal(s->hdr[2].stream_id, 1);
    assert_int_equal(proto_decode_open(s->body[2], s->hdr[2].length, &open), PROTO_OK);
    assert_memory_equal(&open, &want_open, sizeof open);
    assert_int_equal(s->hdr[3].length, 1);
    assert_int_equal(s->body[3][0], 0x80);
    assert_int_equal(proto_decode_open_ok(s->body[3], s->hdr[3].length), PROTO_OK);
    assert_int_equal(proto_decode_window(s->body[4], s->hdr[4].length, &inc), PROTO_OK);
    assert_int_equal(inc, 12345);
    assert_int_equal(proto_decode_ping(s->body[5], s->hdr[5].length, &opaque), PROTO_OK);
    assert_int_equal(opaque, 77);
    assert_int_equal(proto_decode_ping(s->body[6], s->hdr[6].length, &opaque), PROTO_OK);
    assert_int_equal(opaque, 77);
    assert_int_equal(s->hdr[7].length, 0);
    assert_int_equal(s->hdr[7].stream_id, 1);
    assert_int_equal(proto_decode_error(s->body[8], s->hdr[8].length, &err), PROTO_OK);
    assert_int_equal(s->hdr[8].stream_id, 3);
    assert_string_equal(err.code, "08006");
    assert_string_equal(err.message, "connection refused");
    assert_int_equal(proto_decode_error(s->body[9], s->hdr[9].length, &err), PROTO_OK);
    assert_string_equal(err.code, "57P01");
    assert_string_equal(err.message, "");
    assert_int_equal(proto_decode_goaway(s->body[10], s->hdr[10].length, &ga), PROTO_OK);
    assert_int_equal(ga.last_stream_id, 41);
    assert_string_equal(ga.code, "00000");
    assert_string_equal(ga.message, "draining");
}

static void test_roundtrip_all_kinds(void **state)
{
    static uint8_t buf[64 * 1024];
    static uint8_t payload[PROTO_MAX_DATA];
    static struct seen s;
    static const size_t steps[] = {0, 1, 2, 7, 12, 13, 4096, 16397};

    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    size_t len = build_all_frames(buf, sizeof buf, payload, sizeof payload);

    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        struct proto_reader r;
        proto_reader_init(&r);
        seen_init(&s);
        assert_int_equal(feed_steps(&r, &s, buf, len, steps[k]), 0);
        check_all_frames(&s, payload, sizeof payload);
        if (steps[k] == 0)
            assert_int_equal(s.ndata_calls, 2); /* whole frames: one piece each */
        if (steps[k] == 1)
            assert_int_equal(s.ndata_calls, PROTO_MAX_DATA + 1);
        seen_free(&s);
    }
}

static void test_encoders_nospace(void **state)
{
    static uint8_t buf[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    struct proto_hello hello;
    struct proto_welcome welcome;
    struct proto_open open;
    struct proto_error err = {.code = "08006", .message = "x"};
    struct proto_goaway ga = {.last_stream_id = 0, .code = "00000"};

    fill_hello(&hello, PROTO_MAX_ROUTES);
    fill_welcome(&welcome);
    fill_open(&open);
    int sizes[6];
    sizes[0] = proto_encode_hello(buf, sizeof buf, &hello);
    sizes[1] = proto_encode_welcome(buf, sizeof buf, &welcome);
    sizes[2] = proto_encode_open(buf, sizeof buf, 1, &open);
    sizes[3] = proto_encode_open_ok(buf, sizeof buf, 1);
    sizes[4] = proto_encode_error(buf, sizeof buf, PROTO_RESET, 1, &err);
    sizes[5] = proto_encode_goaway(buf, sizeof buf, &ga);
    for (int i = 0; i < 6; i++) {
        assert_true(sizes[i] > PROTO_HDR_SIZE);
        size_t exact = (size_t)sizes[i];
        int again = -1, shortc = -1, tiny = -1;
        switch (i) {
        case 0:
            again = proto_encode_hello(buf, exact, &hello);
            shortc = proto_encode_hello(buf, exact - 1, &hello);
            tiny = proto_encode_hello(buf, 3, &hello);
            break;
        case 1:
            again = proto_encode_welcome(buf, exact, &welcome);
            shortc = proto_encode_welcome(buf, exact - 1, &welcome);
            tiny = proto_encode_welcome(buf, 0, &welcome);
            break;
        case 2:
            again = proto_encode_open(buf, exact, 1, &open);
            shortc = proto_encode_open(buf, exact - 1, 1, &open);
            tiny = proto_encode_open(buf, PROTO_HDR_SIZE, 1, &open);
            break;
        case 3:
            again = proto_encode_open_ok(buf, exact, 1);
            shortc = proto_encode_open_ok(buf, exact - 1, 1);
            tiny = proto_encode_open_ok(buf, 1, 1);
            break;
        case 4:
            again = proto_encode_error(buf, exact, PROTO_RESET, 1, &err);
            shortc = proto_encode_error(buf, exact - 1, PROTO_RESET, 1, &err);
            tiny = proto_encode_error(buf, 5, PROTO_RESET, 1, &err);
            break;
        case 5:
            again = proto_encode_goaway(buf, exact, &ga);
            shortc = proto_encode_goaway(buf, exact - 1, &ga);
            tiny = proto_encode_goaway(buf, 11, &ga);
            break;
        }
        assert_int_equal(again, sizes[i]);
        assert_int_equal(shortc, PROTO_E_NOSPACE);
        assert_int_equal(tiny, PROTO_E_NOSPACE);
    }
    /* The largest WELCOME the structs can hold still fits one control body. */
    for (uint32_t i = 0; i < PROTO_MAX_ROUTES; i++) {
        memset(welcome.accepted[i], 'a', PROTO_NAME_MAX - 1);
        welcome.accepted[i][PROTO_NAME_MAX - 1] = '\0';
        welcome.accepted[i][0] = (char)('A' + i % 26);
        welcome.accepted[i][1] = (char)('A' + i / 26);
        memcpy(welcome.refused[i], welcome.accepted[i], PROTO_NAME_MAX);
    }
    welcome.naccepted = welcome.nrefused = PROTO_MAX_ROUTES;
    int big = proto_encode_welcome(buf, sizeof buf, &welcome);
    assert_true(big > 2 * PROTO_MAX_ROUTES * (PROTO_NAME_MAX - 1));
    assert_true(big <= PROTO_HDR_SIZE + PROTO_MAX_CONTROL);
}

static void test_encoders_refuse_invalid(void **state)
{
    uint8_t b[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    struct proto_hello hello;
    struct proto_open open;
    struct proto_error err = {.code = "08006", .message = "m"};
    struct proto_goaway ga = {.code = "0000", .message = ""};
    struct proto_welcome w;

    fill_hello(&hello, 0);
    assert_int_equal(proto_encode_hello(b, sizeof b, &hello), PROTO_E_FIELD);
    fill_hello(&hello, PROTO_MAX_ROUTES + 1);
    assert_int_equal(proto_encode_hello(b, sizeof b, &hello), PROTO_E_FIELD);
    fill_hello(&hello, 2);
    strcpy(hello.routes[1], "bad name");
    assert_int_equal(proto_encode_hello(b, sizeof b, &hello), PROTO_E_FIELD);
    strcpy(hello.routes[1], hello.routes[0]);
    assert_int_equal(proto_encode_hello(b, sizeof b, &hello), PROTO_E_FIELD);
    fill_hello(&hello, 1);
    memset(hello.software, 'x', sizeof hello.software); /* not NUL-terminated */
    assert_int_equal(proto_encode_hello(b, sizeof b, &hello), PROTO_E_FIELD);

    fill_open(&open);
    assert_int_equal(proto_encode_open(b, sizeof b, 0, &open), PROTO_E_STREAM);
    open.session_id[0] = '\0';
    assert_int_equal(proto_encode_open(b, sizeof b, 1, &open), PROTO_E_FIELD);
    fill_open(&open);
    strcpy(open.route, "db/1");
    assert_int_equal(proto_encode_open(b, sizeof b, 1, &open), PROTO_E_FIELD);

    assert_int_equal(proto_encode_error(b, sizeof b, PROTO_GOAWAY, 1, &err), PROTO_E_TYPE);
    assert_int_equal(proto_encode_error(b, sizeof b, PROTO_RESET, 0, &err), PROTO_E_STREAM);
    strcpy(err.code, "08p01");
    assert_int_equal(proto_encode_error(b, sizeof b, PROTO_RESET, 1, &err), PROTO_E_FIELD);
    assert_int_equal(proto_encode_goaway(b, sizeof b, &ga), PROTO_E_FIELD);
    assert_int_equal(proto_encode_open_ok(b, sizeof b, 0), PROTO_E_STREAM);

    fill_welcome(&w);
    w.initial_window = PROTO_MAX_WINDOW + 1;
    assert_int_equal(proto_encode_welcome(b, sizeof b, &w), PROTO_E_FIELD);
    fill_welcome(&w);
    w.relay_id[0] = '\0'; /* optional: omitted, still fine */
    assert_true(proto_encode_welcome(b, sizeof b, &w) > 0);
}

/* ---- control body limits (hand-built msgpack) --------------------------------------------- */

/* HELLO with `nroutes` routes, each a string of `route_len` bytes of 'r' + index. */
static int hello_with(uint32_t nroutes, size_t route_len, uint64_t vmaj)
{
    struct mp m;
    struct proto_hello h;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_str(&m, "vmaj");
    msgpack_pack_uint64(&m.pk, vmaj);
    mp_str(&m, "vmin");
    msgpack_pack_uint8(&m.pk, 0);
    mp_str(&m, "routes");
    msgpack_pack_array(&m.pk, nroutes);
    for (uint32_t i = 0; i < nroutes; i++) {
        char *s = malloc(route_len + 1);
        assert_non_null(s);
        memset(s, 'r', route_len);
        s[0] = (char)('a' + i % 26);
        if (route_len > 1)
            s[1] = (char)('a' + i / 26);
        msgpack_pack_str_with_body(&m.pk, s, route_len);
        free(s);
    }
    int rc = proto_decode_hello(mp_buf(&m), m.sb.size, &h);
    if (rc == 0) {
        assert_int_equal(h.nroutes, nroutes);
        assert_int_equal(strlen(h.routes[nroutes - 1]), route_len);
        assert_int_equal(h.ver_major, vmaj);
    }
    mp_free(&m);
    return rc;
}

static void test_hello_limits(void **state)
{
    assert_int_equal(hello_with(1, 1, 1), PROTO_OK);
    assert_int_equal(hello_with(PROTO_MAX_ROUTES, 8, 1), PROTO_OK);
    assert_int_equal(hello_with(PROTO_MAX_ROUTES + 1, 8, 1), PROTO_E_FIELD);
    assert_int_equal(hello_with(0, 8, 1), PROTO_E_FIELD);
    assert_int_equal(hello_with(1, PROTO_NAME_MAX - 1, 1), PROTO_OK);
    assert_int_equal(hello_with(1, PROTO_NAME_MAX, 1), PROTO_E_FIELD);
    assert_int_equal(hello_with(1, 4, UINT16_MAX), PROTO_OK);
    assert_int_equal(hello_with(1, 4, UINT16_MAX + 1), PROTO_E_FIELD);
    assert_int_equal(hello_with(1, 4, UINT64_MAX), PROTO_E_FIELD);
}

/* Decode a HELLO whose body is a map of 2 required ints plus the given extra pairs. */
static int hello_extra(void (*add)(struct mp *), uint32_t npairs, struct proto_hello *h)
{
    struct mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, npairs);
    add(&m);
    int rc = proto_decode_hello(mp_buf(&m), m.sb.size, h);
    mp_free(&m);
    return rc;
}

static void add_base(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 3);
    mp_str(m, "routes");
    msgpack_pack_array(&m->pk, 1);
    mp_str(m, "db1");
}
static void add_unknown(struct mp *m)
{
    add_base(m);
    mp_str(m, "future");
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "x");
    msgpack_pack_double(&m->pk, 1.5);
    mp_str(m, "nil");
    msgpack_pack_nil(&m->pk);
}
static void add_dup_key(struct mp *m)
{
    add_base(m);
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 2);
}
static void add_neg_vmaj(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_int8(&m->pk, -1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
    mp_str(m, "routes");
    msgpack_pack_array(&m->pk, 1);
    mp_str(m, "db1");
}
static void add_str_vmaj(struct mp *m)
{
    mp_str(m, "vmaj");
    mp_str(m, "1");
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
    mp_str(m, "routes");
    msgpack_pack_array(&m->pk, 1);
    mp_str(m, "db1");
}
static void add_missing_routes(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
}
static void add_sw_63(struct mp *m)
{
    add_base(m);
    mp_str(m, "sw");
    mp_strn(m, 's', PROTO_NAME_MAX - 1);
}
static void add_sw_64(struct mp *m)
{
    add_base(m);
    mp_str(m, "sw");
    mp_strn(m, 's', PROTO_NAME_MAX);
}
static void add_sw_nul(struct mp *m)
{
    add_base(m);
    mp_str(m, "sw");
    msgpack_pack_str_with_body(&m->pk, "a\0b", 3);
}
static void add_sw_bin(struct mp *m)
{
    add_base(m);
    mp_str(m, "sw");
    msgpack_pack_bin_with_body(&m->pk, "ab", 2);
}
static void add_bad_route(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
    mp_str(m, "routes");
    msgpack_pack_array(&m->pk, 2);
    mp_str(m, "db1");
    mp_str(m, "db;drop");
}
static void add_dup_route(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
    mp_str(m, "routes");
    msgpack_pack_array(&m->pk, 2);
    mp_str(m, "db1");
    mp_str(m, "db1");
}
static void add_routes_not_array(struct mp *m)
{
    mp_str(m, "vmaj");
    msgpack_pack_uint32(&m->pk, 1);
    mp_str(m, "vmin");
    msgpack_pack_uint16(&m->pk, 0);
    mp_str(m, "routes");
    mp_str(m, "db1");
}

static void test_hello_fields(void **state)
{
    struct proto_hello h;

    assert_int_equal(hello_extra(add_base, 3, &h), PROTO_OK);
    assert_int_equal(h.ver_minor, 3);
    assert_string_equal(h.routes[0], "db1");
    assert_string_equal(h.software, "");
    assert_int_equal(hello_extra(add_unknown, 5, &h), PROTO_OK);
    assert_int_equal(h.nroutes, 1);
    assert_int_equal(hello_extra(add_dup_key, 4, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_neg_vmaj, 3, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_str_vmaj, 3, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_missing_routes, 2, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_sw_63, 4, &h), PROTO_OK);
    assert_int_equal(strlen(h.software), PROTO_NAME_MAX - 1);
    assert_int_equal(hello_extra(add_sw_64, 4, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_sw_nul, 4, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_sw_bin, 4, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_bad_route, 3, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_dup_route, 3, &h), PROTO_E_FIELD);
    assert_int_equal(hello_extra(add_routes_not_array, 3, &h), PROTO_E_FIELD);
}

static void test_int_encodings(void **state)
{
    /* vmaj as fixint / uint8 / uint16 / uint32 / uint64 / non-negative int8 and int64: all 1. */
    static const uint8_t forms[][10] = {
        {1, 0x01},
        {2, 0xcc, 0x01},
        {3, 0xcd, 0x00, 0x01},
        {5, 0xce, 0, 0, 0, 1},
        {9, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1},
        {2, 0xd0, 0x01},
        {9, 0xd3, 0, 0, 0, 0, 0, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        uint8_t b[64];
        size_t n = 0;
        struct proto_hello h;
        b[n++] = 0x83;
        b[n++] = 0xa4;
        memcpy(b + n, "vmaj", 4);
        n += 4;
        memcpy(b + n, forms[i] + 1, forms[i][0]);
        n += forms[i][0];
        b[n++] = 0xa4;
        memcpy(b + n, "vmin", 4);
        n += 4;
        b[n++] = 0x00;
        b[n++] = 0xa6;
        memcpy(b + n, "routes", 6);
        n += 6;
        b[n++] = 0x91;
        b[n++] = 0xa1;
        b[n++] = 'r';
        assert_int_equal(proto_decode_hello(b, n, &h), PROTO_OK);
        assert_int_equal(h.ver_major, 1);
    }
}

static int open_with(const char *key, char fill, size_t len)
{
    struct mp m;
    struct proto_open o;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_str(&m, "route");
    mp_str(&m, "db1");
    mp_str(&m, "sid");
    mp_str(&m, "abc");
    mp_str(&m, key);
    mp_strn(&m, fill, len);
    int rc = proto_decode_open(mp_buf(&m), m.sb.size, &o);
    mp_free(&m);
    return rc;
}

static void test_open_limits(void **state)
{
    assert_int_equal(open_with("user", 'u', PROTO_META_MAX - 1), PROTO_OK);
    assert_int_equal(open_with("user", 'u', PROTO_META_MAX), PROTO_E_FIELD);
    assert_int_equal(open_with("db", 'd', PROTO_META_MAX), PROTO_E_FIELD);
    assert_int_equal(open_with("app", 'a', PROTO_META_MAX - 1), PROTO_OK);
    assert_int_equal(open_with("addr", '1', 63), PROTO_OK);
    assert_int_equal(open_with("addr", '1', 64), PROTO_E_FIELD);
    assert_int_equal(open_with("user", '\0', 3), PROTO_E_FIELD);
    assert_int_equal(open_with("ignored", 'x', PROTO_MAX_STR), PROTO_OK);
    assert_int_equal(open_with("ignored", 'x', PROTO_MAX_STR + 1), PROTO_E_MSGPACK);

    /* sid: 1..39 bytes; route must be a valid name; both required. */
    struct mp m;
    struct proto_open o;
    static const size_t sid_len[] = {39, 40, 0};
    static const int sid_rc[] = {PROTO_OK, PROTO_E_FIELD, PROTO_E_FIELD};
    for (int i = 0; i < 3; i++) {
        mp_init(&m);
        msgpack_pack_map(&m.pk, 2);
        mp_str(&m, "route");
        mp_str(&m, "db1");
        mp_str(&m, "sid");
        mp_strn(&m, 's', sid_len[i]);
        assert_int_equal(proto_decode_open(mp_buf(&m), m.sb.size, &o), sid_rc[i]);
        mp_free(&m);
    }
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_str(&m, "route");
    mp_str(&m, "db1");
    assert_int_equal(proto_decode_open(mp_buf(&m), m.sb.size, &o), PROTO_E_FIELD);
    mp_free(&m);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_str(&m, "route");
    mp_str(&m, "");
    mp_str(&m, "sid");
    mp_str(&m, "1");
    assert_int_equal(proto_decode_open(mp_buf(&m), m.sb.size, &o), PROTO_E_FIELD);
    mp_free(&m);
}

static int error_with(const char *code, size_t msg_len, bool with_msg)
{
    struct mp m;
    struct proto_error e;
    mp_init(&m);
    msgpack_pack_map(&m.pk, with_msg ? 2 : 1);
    mp_str(&m, "code");
    mp_str(&m, code);
    if (with_msg) {
        mp_str(&m, "msg");
        mp_strn(&m, 'm', msg_len);
    }
    int rc = proto_decode_error(mp_buf(&m), m.sb.size, &e);
    if (rc == 0)
        assert_int_equal(strlen(e.message), msg_len);
    mp_free(&m);
    return rc;
}

static void test_error_goaway_limits(void **state)
{
    assert_int_equal(error_with("08006", 0, true), PROTO_OK);
    assert_int_equal(error_with("08006", PROTO_MSG_MAX - 1, true), PROTO_OK);
    assert_int_equal(error_with("08006", PROTO_MSG_MAX, true), PROTO_E_FIELD);
    assert_int_equal(error_with("08006", 0, false), PROTO_E_FIELD);
    assert_int_equal(error_with("0800", 1, true), PROTO_E_FIELD);
    assert_int_equal(error_with("080060", 1, true), PROTO_E_FIELD);
    assert_int_equal(error_with("08p01", 1, true), PROTO_E_FIELD);

    struct proto_goaway g;
    const uint8_t ok[] = {0x82, 0xa4, 'l', 'a', 's', 't',  0xce, 0xff, 0xff, 0xff, 0xff,
                          0xa4, 'c',  'o', 'd', 'e', 0xa5, '0',  '8',  'P',  '0',  '1'};
    assert_int_equal(proto_decode_goaway(ok, sizeof ok, &g), PROTO_OK);
    assert_int_equal(g.last_stream_id, UINT32_MAX);
    assert_string_equal(g.code, "08P01");
    assert_string_equal(g.message, "");
    const uint8_t big[] = {0x82, 0xa4, 'l',  'a', 's', 't', 0xcf, 0,    0,   0,   1,   0,   0,
                           0,    0,    0xa4, 'c', 'o', 'd', 'e',  0xa5, '0', '8', 'P', '0', '1'};
    assert_int_equal(proto_decode_goaway(big, sizeof big, &g), PROTO_E_FIELD);
    const uint8_t nocode[] = {0x81, 0xa4, 'l', 'a', 's', 't', 0x00};
    assert_int_equal(proto_decode_goaway(nocode, sizeof nocode, &g), PROTO_E_FIELD);
}

static int welcome_window(uint32_t window)
{
    uint8_t b[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    struct proto_welcome w, out;
    fill_welcome(&w);
    int n = proto_encode_welcome(b, sizeof b, &w);
    assert_true(n > 0);
    /* Patch the encoded "window" value (a uint32 0xce after the key) to test the decoder. */
    uint8_t *p = memmem(b, (size_t)n, "\xa6window\xce", 8);
    assert_non_null(p);
    p[8] = (uint8_t)(window >> 24);
    p[9] = (uint8_t)(window >> 16);
    p[10] = (uint8_t)(window >> 8);
    p[11] = (uint8_t)window;
    return proto_decode_welcome(b + PROTO_HDR_SIZE, (size_t)n - PROTO_HDR_SIZE, &out);
}

static void test_welcome_limits(void **state)
{
    assert_int_equal(welcome_window(PROTO_MAX_WINDOW), PROTO_OK);
    assert_int_equal(welcome_window(PROTO_MAX_WINDOW + 1), PROTO_E_FIELD);
    assert_int_equal(welcome_window(0), PROTO_E_FIELD);

    /* refused and relay are optional; accepted may be empty. */
    const uint8_t minimal[] = {
        0x87, 0xa4, 'v',  'm',  'a',  'j',  0x01, 0xa4, 'v',  'm',  'i',  'n',  0x00, 0xa8,
        'a',  'c',  'c',  'e',  'p',  't',  'e',  'd',  0x90, 0xa7, 'p',  'i',  'n',  'g',
        '_',  'm',  's',  0xcd, 0x03, 0xe8, 0xa7, 'i',  'd',  'l',  'e',  '_',  'm',  's',
        0xcd, 0x0f, 0xa0, 0xa6, 'w',  'i',  'n',  'd',  'o',  'w',  0xce, 0x00, 0x04, 0x00,
        0x00, 0xab, 'm',  'a',  'x',  '_',  's',  't',  'r',  'e',  'a',  'm',  's',  0x0a,
    };
    struct proto_welcome w;
    assert_int_equal(proto_decode_welcome(minimal, sizeof minimal, &w), PROTO_OK);
    assert_int_equal(w.naccepted, 0);
    assert_int_equal(w.nrefused, 0);
    assert_int_equal(w.idle_timeout_ms, 4000);
    assert_int_equal(w.initial_window, PROTO_INITIAL_WINDOW);
    assert_int_equal(w.max_streams, 10);
    /* drop the last pair (max_streams): required */
    uint8_t missing[sizeof minimal];
    memcpy(missing, minimal, sizeof minimal);
    missing[0] = 0x86;
    assert_int_equal(proto_decode_welcome(missing, sizeof minimal - 13, &w), PROTO_E_FIELD);
}

/* ---- hostile msgpack ------------------------------------------------------------------- */

static void expect_msgpack_rejected(const uint8_t *b, size_t n)
{
    struct proto_hello h;
    struct proto_welcome w;
    struct proto_open o;
    struct proto_error e;
    struct proto_goaway g;

    assert_int_equal(proto_msgpack_validate(b, n), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_hello(b, n, &h), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_welcome(b, n, &w), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_open(b, n, &o), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_open_ok(b, n), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_error(b, n, &e), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_goaway(b, n, &g), PROTO_E_MSGPACK);
}

#define REJECT(...)                                                                                \
    do {                                                                                           \
        const uint8_t b_[] = {__VA_ARGS__};                                                        \
        expect_msgpack_rejected(b_, sizeof b_);                                                    \
    } while (0)

static void test_msgpack_hostile_counts(void **state)
{
    REJECT(0xdf, 0xff, 0xff, 0xff, 0xff);                  /* map32: 4G entries in 5 bytes */
    REJECT(0xdd, 0xff, 0xff, 0xff, 0xff);                  /* array32 at the top level */
    REJECT(0xde, 0xff, 0xff);                              /* map16: 65535 entries */
    REJECT(0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff); /* nested huge array */
    REJECT(0x81, 0xa1, 'a', 0xdc, 0x00, 0x05, 1, 2, 3, 4); /* 5 entries, 4 bytes left */
    REJECT(0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff); /* str32 of 4 GiB */
    REJECT(0x81, 0xa1, 'a', 0xc6, 0x7f, 0xff, 0xff, 0xff); /* bin32 of 2 GiB */
    REJECT(0x81, 0xa1, 'a', 0xda, 0x00, 0x03, 'x', 'y');   /* str16 one byte short */
    REJECT(0x81, 0xa1, 'a', 0xdf, 0x00, 0x00, 0x00, 0x02, 0xa1, 'k', 1); /* 2 pairs, 3 bytes */
    REJECT(0x82, 0xa1, 'a', 0x01);                                       /* second pair missing */
    REJECT(0x81, 0xa1);                                                  /* truncated key */
    REJECT(0x81, 0xa1, 'a', 0xcd, 0x01);                                 /* truncated uint16 */
    REJECT(0x81, 0xa1, 'a', 0xcb, 0, 0, 0, 0, 0, 0, 0);                  /* truncated float64 */
}

static void test_msgpack_shape(void **state)
{
    struct proto_hello h;

    assert_int_equal(proto_msgpack_validate((const uint8_t *)"", 0), PROTO_E_MSGPACK);
    assert_int_equal(proto_decode_hello(NULL, 0, &h), PROTO_E_MSGPACK);
    REJECT(0x80, 0x80); /* trailing bytes */
    REJECT(0x80, 0x00);
    REJECT(0x90);                              /* array top level */
    REJECT(0xa1, 'x');                         /* string top level */
    REJECT(0x01);                              /* int top level */
    REJECT(0xc0);                              /* nil top level */
    REJECT(0x81, 0x01, 0x02);                  /* integer key */
    REJECT(0x81, 0xc4, 0x01, 'k', 0x02);       /* bin key */
    REJECT(0x81, 0xa1, 'a', 0x81, 0x02, 0x03); /* nested integer key */
    REJECT(0x81, 0xa1, 'a', 0xd4, 0x01, 0x02); /* fixext1 */
    REJECT(0x81, 0xa1, 'a', 0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    REJECT(0x81, 0xa1, 'a', 0xc7, 0x01, 0x05, 0x00);       /* ext8 */
    REJECT(0x81, 0xa1, 'a', 0xc9, 0, 0, 0, 1, 0x05, 0x00); /* ext32 */
    REJECT(0x81, 0xa1, 'a', 0xc1);                         /* never-used byte */

    const uint8_t fine[] = {0x84, 0xa1, 'a', 0xc0, 0xa1, 'b', 0xc3, 0xa1, 'c', 0xca, 0, 0, 0,
                            0,    0xa1, 'd', 0xd3, 0x80, 0,   0,    0,    0,   0,    0, 0};
    assert_int_equal(proto_msgpack_validate(fine, sizeof fine), PROTO_OK);
    assert_int_equal(proto_decode_open_ok(fine, sizeof fine), PROTO_OK);
    const uint8_t empty[] = {0x80};
    assert_int_equal(proto_decode_open_ok(empty, 1), PROTO_OK);
    const uint8_t map16_empty[] = {0xde, 0x00, 0x00};
    assert_int_equal(proto_msgpack_validate(map16_empty, sizeof map16_empty), PROTO_OK);
}

/* {"a": [[[ ... ]]]} with `depth` containers in total, the top-level map included. */
static int nested(int depth)
{
    uint8_t b[32];
    size_t n = 0;
    b[n++] = 0x81;
    b[n++] = 0xa1;
    b[n++] = 'a';
    for (int i = 1; i < depth; i++)
        b[n++] = 0x91;
    b[n - 1] = depth > 1 ? 0x90 : b[n - 1];
    if (depth == 1)
        b[n++] = 0x00;
    return proto_msgpack_validate(b, n);
}

static void test_msgpack_limits(void **state)
{
    assert_int_equal(nested(1), PROTO_OK);
    assert_int_equal(nested(PROTO_MAX_DEPTH), PROTO_OK);
    assert_int_equal(nested(PROTO_MAX_DEPTH + 1), PROTO_E_MSGPACK);
    assert_int_equal(nested(20), PROTO_E_MSGPACK);

    static const uint32_t counts[] = {PROTO_MAX_ARRAY, PROTO_MAX_ARRAY + 1};
    for (int i = 0; i < 2; i++) {
        struct mp m;
        int want = i == 0 ? PROTO_OK : PROTO_E_MSGPACK;
        mp_init(&m); /* array of `count` entries */
        msgpack_pack_map(&m.pk, 1);
        mp_str(&m, "a");
        msgpack_pack_array(&m.pk, counts[i]);
        for (uint32_t j = 0; j < counts[i]; j++)
            msgpack_pack_uint8(&m.pk, 1);
        assert_int_equal(proto_msgpack_validate(mp_buf(&m), m.sb.size), want);
        mp_free(&m);
        mp_init(&m); /* top-level map of `count` pairs */
        msgpack_pack_map(&m.pk, counts[i]);
        for (uint32_t j = 0; j < counts[i]; j++) {
            char k[16];
            snprintf(k, sizeof k, "k%u", j);
            mp_str(&m, k);
            msgpack_pack_true(&m.pk);
        }
        assert_int_equal(proto_msgpack_validate(mp_buf(&m), m.sb.size), want);
        assert_int_equal(proto_decode_open_ok(mp_buf(&m), m.sb.size), want);
        mp_free(&m);
        mp_init(&m); /* string of MAX_STR + i bytes, and a bin of the same size */
        msgpack_pack_map(&m.pk, 2);
        mp_str(&m, "s");
        mp_strn(&m, 'x', PROTO_MAX_STR + (size_t)i);
        mp_str(&m, "b");
        static const uint8_t zeros[PROTO_MAX_STR];
        msgpack_pack_bin_with_body(&m.pk, zeros, sizeof zeros);
        assert_int_equal(proto_msgpack_validate(mp_buf(&m), m.sb.size), want);
        mp_free(&m);
    }
}

/* A map of "kN": str pairs totalling exactly `total` bytes (strings <= PROTO_MAX_STR). */
static int map_of_size(size_t total)
{
    static uint8_t b[PROTO_MAX_CONTROL + 64];
    size_t n = 0, npairs = 0, left;
    /* each pair: fixstr key (3 bytes) + str16 header (3 bytes) + value */
    size_t pairs = (total - 1 + 6 + PROTO_MAX_STR - 1) / (6 + PROTO_MAX_STR);
    assert_true(pairs <= 15 && total < sizeof b);
    b[n++] = (uint8_t)(0x80 | pairs);
    left = total - 1 - 6 * pairs;
    for (npairs = 0; npairs < pairs; npairs++) {
        size_t v = left < PROTO_MAX_STR ? left : PROTO_MAX_STR;
        left -= v;
        b[n++] = 0xa2;
        b[n++] = 'k';
        b[n++] = (uint8_t)('a' + npairs);
        b[n++] = 0xda;
        b[n++] = (uint8_t)(v >> 8);
        b[n++] = (uint8_t)v;
        memset(b + n, 'v', v);
        n += v;
    }
    assert_int_equal(n, total);
    return proto_msgpack_validate(b, n);
}

static void test_msgpack_body_size(void **state)
{
    assert_int_equal(map_of_size(100), PROTO_OK);
    assert_int_equal(map_of_size(PROTO_MAX_CONTROL), PROTO_OK);
    assert_int_equal(map_of_size(PROTO_MAX_CONTROL + 1), PROTO_E_MSGPACK);
}

/* ---- reader behaviour -------------------------------------------------------------------- */

static void test_reader_truncated_waits(void **state)
{
    static struct seen s;
    struct proto_reader r;
    uint8_t b[64];
    int n = proto_encode_ping(b, sizeof b, PROTO_PING, 5);

    proto_reader_init(&r);
    seen_init(&s);
    assert_int_equal(feed_steps(&r, &s, b, PROTO_HDR_SIZE - 1, 0), 0);
    assert_int_equal(s.nframes, 0);
    assert_int_equal(feed_steps(&r, &s, b + PROTO_HDR_SIZE - 1, 1 + 7, 0), 0);
    assert_int_equal(s.nframes, 0); /* header done, body one byte short */
    assert_int_equal(feed_steps(&r, &s, b + n - 1, 1, 0), 0);
    assert_int_equal(s.nframes, 1);
    assert_int_equal(feed_steps(&r, &s, b, 0, 0), 0);
    assert_int_equal(proto_reader_feed(&r, b, 0, &ops, &s), 0);
    assert_int_equal(s.nframes, 1);
    seen_free(&s);

    /* a partial DATA frame delivers what it has, in place */
    uint8_t d[PROTO_HDR_SIZE + 10];
    proto_encode_data_hdr(d, 4, 10);
    memcpy(d + PROTO_HDR_SIZE, "0123456789", 10);
    proto_reader_init(&r);
    seen_init(&s);
    assert_int_equal(feed_steps(&r, &s, d, PROTO_HDR_SIZE, 0), 0);
    assert_int_equal(s.ndata_calls, 0);
    assert_int_equal(feed_steps(&r, &s, d + PROTO_HDR_SIZE, 4, 0), 0);
    assert_int_equal(s.data_len, 4);
    assert_int_equal(s.data_stream, 4);
    assert_int_equal(feed_steps(&r, &s, d + PROTO_HDR_SIZE + 4, 6, 0), 0);
    assert_int_equal(s.data_len, 10);
    assert_memory_equal(s.data, "0123456789", 10);
    seen_free(&s);
}

static void test_reader_close_immediate(void **state)
{
    static struct seen s;
    struct proto_reader r;
    uint8_t b[PROTO_HDR_SIZE];

    proto_encode_close(b, sizeof b, 9);
    proto_reader_init(&r);
    seen_init(&s);
    assert_int_equal(feed_steps(&r, &s, b, sizeof b, 0), 0);
    assert_int_equal(s.nframes, 1); /* not held back until a next byte arrives */
    assert_int_equal(s.hdr[0].type, PROTO_CLOSE);
    assert_int_equal(s.hdr[0].stream_id, 9);
    seen_free(&s);
}

static void test_reader_rejects_before_body(void **state)
{
    static struct seen s;
    struct proto_reader r;
    uint8_t b[PROTO_HDR_SIZE + 4];

    raw_hdr(b, PROTO_WIRE_VERSION, PROTO_HELLO, 0, 0, PROTO_MAX_CONTROL + 1);
    memset(b + PROTO_HDR_SIZE, 0x80, 4);
    proto_reader_init(&r);
    seen_init(&s);
    assert_int_equal(proto_reader_feed(&r, b, sizeof b, &ops, &s), PROTO_E_TOO_BIG);
    assert_int_equal(r.body_have, 0);
    assert_int_equal(s.nframes, 0);
    /* dead: the same error again, no callbacks, even for a valid frame */
    uint8_t ping[20];
    proto_encode_ping(ping, sizeof ping, PROTO_PING, 1);
    assert_int_equal(proto_reader_feed(&r, ping, sizeof ping, &ops, &s), PROTO_E_TOO_BIG);
    assert_int_equal(s.nframes, 0);
    /* init revives it */
    proto_reader_init(&r);
    assert_int_equal(proto_reader_feed(&r, ping, sizeof ping, &ops, &s), 0);
    assert_int_equal(s.nframes, 1);
    seen_free(&s);

    static const struct {
        uint8_t ver, type;
        uint16_t flags;
        uint32_t stream, len;
        int rc;
    } bad[] = {
        {2, PROTO_PING, 0, 0, 8, PROTO_E_VERSION},
        {1, PROTO_TYPE_MAX + 1, 0, 0, 8, PROTO_E_TYPE},
        {1, PROTO_PING, 4, 0, 8, PROTO_E_FLAGS},
        {1, PROTO_DATA, 0, 0, 8, PROTO_E_STREAM},
        {1, PROTO_DATA, 0, 1, PROTO_MAX_DATA + 1, PROTO_E_TOO_BIG},
        {1, PROTO_DATA, 0, 1, 0, PROTO_E_BODY},
        {1, PROTO_WINDOW, 0, 1, 8, PROTO_E_BODY},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t h[PROTO_HDR_SIZE + 8] = {0};
        raw_hdr(h, bad[i].ver, bad[i].type, bad[i].flags, bad[i].stream, bad[i].len);
        proto_reader_init(&r);
        seen_init(&s);
        assert_int_equal(feed_steps(&r, &s, h, sizeof h, 1), bad[i].rc);
        assert_int_equal(s.nframes + s.ndata_calls, 0);
    }
}

static void test_reader_callback_stops(void **state)
{
    static struct seen s;
    struct proto_reader r;
    uint8_t b[80];
    size_t n = 0;

    for (int i = 0; i < 3; i++)
        n += (size_t)proto_encode_ping(b + n, sizeof b - n, PROTO_PING, (uint64_t)i);
    proto_reader_init(&r);
    seen_init(&s);
    s.stop_at_frame = 1;
    s.fed_lo = b;
    s.fed_hi = b + n;
    assert_int_equal(proto_reader_feed(&r, b, n, &ops, &s), -42);
    assert_int_equal(s.nframes, 2); /* the third frame was not delivered */
    assert_int_equal(proto_reader_feed(&r, b, n, &ops, &s), -42);
    assert_int_equal(s.nframes, 2);
    seen_free(&s);
}

static int stop_data(void *ctx, uint32_t stream, const uint8_t *data, size_t len)
{
    (*(int *)ctx)++;
    return -7;
}

static void test_reader_data_stop(void **state)
{
    struct proto_reader r;
    uint8_t b[2 * (PROTO_HDR_SIZE + 3)];
    const struct proto_reader_ops stop_ops = {.on_data = stop_data, .on_frame = NULL};
    int calls = 0;

    proto_encode_data_hdr(b, 1, 3);
    memcpy(b + PROTO_HDR_SIZE, "abc", 3);
    memcpy(b + PROTO_HDR_SIZE + 3, b, PROTO_HDR_SIZE + 3);
    proto_reader_init(&r);
    assert_int_equal(proto_reader_feed(&r, b, sizeof b, &stop_ops, &calls), -7);
    assert_int_equal(calls, 1);
    assert_int_equal(r.err, -7);
}

/* ---- names, strings ---------------------------------------------------------------------- */

static void test_names_and_strings(void **state)
{
    char n63[64], n64[65];
    memset(n63, 'a', 63);
    n63[63] = '\0';
    memset(n64, 'a', 64);
    n64[64] = '\0';

    assert_true(proto_name_valid("db1"));
    assert_true(proto_name_valid("A-z_0.9"));
    assert_true(proto_name_valid(n63));
    assert_false(proto_name_valid(n64));
    assert_false(proto_name_valid(""));
    assert_false(proto_name_valid(NULL));
    assert_false(proto_name_valid("a b"));
    assert_false(proto_name_valid("a/b"));
    assert_false(proto_name_valid("caf\xc3\xa9"));

    assert_string_equal(proto_type_name(PROTO_DATA), "DATA");
    assert_string_equal(proto_type_name(PROTO_OPEN_FAIL), "OPEN_FAIL");
    assert_string_equal(proto_type_name(PROTO_GOAWAY), "GOAWAY");
    assert_string_equal(proto_type_name(PROTO_TYPE_MAX + 1), "?");
    assert_string_equal(proto_type_name(0xff), "?");
    for (int e = PROTO_E_NOSPACE; e <= PROTO_E_VERSION; e++) {
        assert_string_not_equal(proto_strerror(e), "unknown error");
        assert_true(proto_is_violation(e));
    }
    assert_string_equal(proto_strerror(PROTO_E_NOSPACE - 1), "unknown error");
    assert_string_equal(proto_strerror(PROTO_OK), "ok");
    /* a local failure is told apart from the peer's: out of memory is not a violation */
    assert_string_equal(proto_strerror(-ENOMEM), strerror(ENOMEM));
    assert_false(proto_is_violation(-ENOMEM));
    assert_false(proto_is_violation(PROTO_OK));
    assert_string_equal(sqlstate_of_failure(-ENOMEM), SQLSTATE_OUT_OF_MEMORY);
    assert_string_equal(sqlstate_of_failure(PROTO_E_FIELD), SQLSTATE_PROTOCOL_VIOLATION);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_roundtrip),
        cmocka_unit_test(test_hdr_version_type_flags),
        cmocka_unit_test(test_hdr_stream_rule),
        cmocka_unit_test(test_hdr_length_limits),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_ping_close),
        cmocka_unit_test(test_roundtrip_all_kinds),
        cmocka_unit_test(test_encoders_nospace),
        cmocka_unit_test(test_encoders_refuse_invalid),
        cmocka_unit_test(test_hello_limits),
        cmocka_unit_test(test_hello_fields),
        cmocka_unit_test(test_int_encodings),
        cmocka_unit_test(test_open_limits),
        cmocka_unit_test(test_error_goaway_limits),
        cmocka_unit_test(test_welcome_limits),
        cmocka_unit_test(test_msgpack_hostile_counts),
        cmocka_unit_test(test_msgpack_shape),
        cmocka_unit_test(test_msgpack_limits),
        cmocka_unit_test(test_msgpack_body_size),
        cmocka_unit_test(test_reader_truncated_waits),
        cmocka_unit_test(test_reader_close_immediate),
        cmocka_unit_test(test_reader_rejects_before_body),
        cmocka_unit_test(test_reader_callback_stops),
        cmocka_unit_test(test_reader_data_stop),
        cmocka_unit_test(test_names_and_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
