/*
 * fuzz_frame — the incremental frame reader on arbitrary byte streams.
 *
 * Input: byte 0 seeds the chunking, the rest is the stream. The stream is fed once whole and
 * once in pseudo-random chunks (1..64 bytes, sometimes empty); both runs must report the same
 * frames, the same DATA bytes and the same final result, whatever the split. Every control
 * body the reader yields is run through its decoder, and every on_data piece is checked to
 * lie inside the chunk being fed (delivered in place) and never to be empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct run {
    uint64_t hash; /* FNV-1a over every event, byte by byte, so splits do not matter */
    uint64_t data_bytes;
    uint32_t frames;
    uint32_t data_stream;
    const uint8_t *lo, *hi;
};

static void mix(struct run *r, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        r->hash = (r->hash ^ b[i]) * 0x100000001b3ULL;
}

static int on_data(void *ctx, uint32_t stream, const uint8_t *data, size_t len)
{
    struct run *r = ctx;
    CHECK(len > 0 && len <= PROTO_MAX_DATA && stream != 0);
    CHECK(data >= r->lo && data + len <= r->hi);
    for (size_t i = 0; i < len; i++) { /* per byte: piece boundaries differ between runs */
        mix(r, &stream, sizeof stream);
        mix(r, data + i, 1);
    }
    r->data_bytes += len;
    return 0;
}

static int on_frame(void *ctx, const struct proto_hdr *h, const uint8_t *body)
{
    static struct proto_hello hello;
    static struct proto_welcome welcome;
    static struct proto_open open;
    struct proto_error err;
    struct proto_goaway ga;
    struct run *r = ctx;
    uint32_t inc;
    uint64_t opaque;
    struct proto_cancel cancel;
    int rc = PROTO_OK;

    CHECK(h->type != PROTO_DATA && h->length <= PROTO_MAX_CONTROL);
    r->frames++;
    mix(r, h, sizeof *h);
    mix(r, body, h->length);
    switch (h->type) {
    case PROTO_HELLO:
        rc = proto_decode_hello(body, h->length, &hello);
        break;
    case PROTO_WELCOME:
        rc = proto_decode_welcome(body, h->length, &welcome);
        break;
    case PROTO_OPEN:
        rc = proto_decode_open(body, h->length, &open);
        break;
    case PROTO_OPEN_OK:
        rc = proto_decode_open_ok(body, h->length);
        break;
    case PROTO_OPEN_FAIL:
    case PROTO_RESET:
        rc = proto_decode_error(body, h->length, &err);
        break;
    case PROTO_GOAWAY:
        rc = proto_decode_goaway(body, h->length, &ga);
        break;
    case PROTO_WINDOW:
        rc = proto_decode_window(body, h->length, &inc);
        break;
    case PROTO_PING:
    case PROTO_PONG:
        CHECK(proto_decode_ping(body, h->length, &opaque) == PROTO_OK);
        break;
    case PROTO_CLOSE:
        CHECK(h->length == 0);
        break;
    case PROTO_CANCEL:
        rc = proto_decode_cancel(body, h->length, &cancel);
        break;
    default:
        abort(); /* proto_hdr_decode let an unknown type through */
    }
    CHECK(rc == PROTO_OK || (rc <= PROTO_E_VERSION && rc >= PROTO_E_NOSPACE));
    mix(r, &rc, sizeof rc);
    return 0;
}

static const struct proto_reader_ops ops = {.on_data = on_data, .on_frame = on_frame};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct proto_reader reader;
    struct run whole = {.hash = 0xcbf29ce484222325ULL}, split = whole;
    int rc_whole, rc_split = 0;

    if (size == 0)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 1;
    data++;
    size--;

    proto_reader_init(&reader);
    whole.lo = data;
    whole.hi = data + size;
    rc_whole = proto_reader_feed(&reader, data, size, &ops, &whole);

    proto_reader_init(&reader);
    size_t off = 0;
    while (off < size) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        size_t n = seed % 65; /* 0 is allowed: an empty feed must be harmless */
        if (n > size - off)
            n = size - off;
        split.lo = data + off;
        split.hi = data + off + n;
        rc_split = proto_reader_feed(&reader, data + off, n, &ops, &split);
        off += n;
        if (rc_split != 0)
            break;
    }
    CHECK(rc_whole == rc_split);
    CHECK(whole.hash == split.hash && whole.frames == split.frames);
    CHECK(whole.data_bytes == split.data_bytes);
    if (rc_whole != 0) {
        /* dead reader: same error again, no callbacks */
        uint32_t frames = split.frames;
        CHECK(proto_reader_feed(&reader, data, size, &ops, &split) == rc_whole);
        CHECK(split.frames == frames);
    }
    return 0;
}
