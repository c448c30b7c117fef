/*
 * fuzz_control — every control-body decoder on arbitrary bytes.
 *
 * Besides "no crash, no leak", it checks three properties:
 *  - the bounds walk and msgpack-c agree: a body proto_msgpack_validate accepts must parse
 *    as one whole map in msgpack-c (proto_decode_open_ok has no fields, so it fails only if
 *    msgpack-c disagrees), and a body it rejects never reaches a decoder's fields;
 *  - whatever a decoder accepts, the matching encoder accepts too (one shared field table;
 *    for OPEN_OK, which has no fields, the encoder's empty map decodes);
 *  - decode(encode(decode(x))) == decode(x).
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

static uint8_t frame[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];

/* Re-decode an encoded frame's body after checking its header. */
static const uint8_t *encoded_body(int n, uint8_t type, size_t *len)
{
    struct proto_hdr h;
    CHECK(n > PROTO_HDR_SIZE);
    CHECK(proto_hdr_decode(frame, &h) == PROTO_OK);
    CHECK(h.type == type && h.length == (uint32_t)n - PROTO_HDR_SIZE);
    *len = h.length;
    return frame + PROTO_HDR_SIZE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct proto_hello hello, hello2;
    static struct proto_welcome welcome, welcome2;
    static struct proto_open open, open2;
    struct proto_error err, err2;
    struct proto_goaway ga, ga2;
    static struct proto_cancel cancel, cancel2;
    const uint8_t *body;
    size_t len;
    int valid = proto_msgpack_validate(data, size);

    CHECK(valid == PROTO_OK || valid == PROTO_E_MSGPACK);
    CHECK(proto_decode_open_ok(data, size) == valid);
    if (valid == PROTO_OK) {
        /* what the tunnel accepts as OPEN_OK, it also sends: the empty map, which decodes */
        int n = proto_encode_open_ok(frame, sizeof frame, 1);
        body = encoded_body(n, PROTO_OPEN_OK, &len);
        CHECK(len == 1 && body[0] == 0x80);
        CHECK(proto_decode_open_ok(body, len) == PROTO_OK);
    }

    int rc = proto_decode_hello(data, size, &hello);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        int n = proto_encode_hello(frame, sizeof frame, &hello);
        body = encoded_body(n, PROTO_HELLO, &len);
        CHECK(proto_decode_hello(body, len, &hello2) == PROTO_OK);
        CHECK(memcmp(&hello, &hello2, sizeof hello) == 0);
    }
    rc = proto_decode_welcome(data, size, &welcome);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        int n = proto_encode_welcome(frame, sizeof frame, &welcome);
        body = encoded_body(n, PROTO_WELCOME, &len);
        CHECK(proto_decode_welcome(body, len, &welcome2) == PROTO_OK);
        CHECK(memcmp(&welcome, &welcome2, sizeof welcome) == 0);
    }
    rc = proto_decode_open(data, size, &open);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        int n = proto_encode_open(frame, sizeof frame, 1, &open);
        body = encoded_body(n, PROTO_OPEN, &len);
        CHECK(proto_decode_open(body, len, &open2) == PROTO_OK);
        CHECK(memcmp(&open, &open2, sizeof open) == 0);
    }
    rc = proto_decode_error(data, size, &err);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        int n = proto_encode_error(frame, sizeof frame, PROTO_RESET, 1, &err);
        body = encoded_body(n, PROTO_RESET, &len);
        CHECK(proto_decode_error(body, len, &err2) == PROTO_OK);
        CHECK(memcmp(&err, &err2, sizeof err) == 0);
    }
    rc = proto_decode_goaway(data, size, &ga);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        int n = proto_encode_goaway(frame, sizeof frame, &ga);
        body = encoded_body(n, PROTO_GOAWAY, &len);
        CHECK(proto_decode_goaway(body, len, &ga2) == PROTO_OK);
        CHECK(memcmp(&ga, &ga2, sizeof ga) == 0);
    }

    rc = proto_decode_cancel(data, size, &cancel);
    CHECK(valid == PROTO_OK || rc == PROTO_E_MSGPACK);
    if (rc == PROTO_OK) {
        CHECK(cancel.key_len >= PROTO_CANCEL_KEY_MIN && cancel.key_len <= PROTO_CANCEL_KEY_MAX);
        int n = proto_encode_cancel(frame, sizeof frame, &cancel);
        body = encoded_body(n, PROTO_CANCEL, &len);
        CHECK(proto_decode_cancel(body, len, &cancel2) == PROTO_OK);
        CHECK(memcmp(&cancel, &cancel2, sizeof cancel) == 0);
    }

    uint32_t inc;
    uint64_t opaque;
    rc = proto_decode_window(data, size, &inc);
    CHECK(rc == (size == 4 && inc != 0 ? PROTO_OK : PROTO_E_BODY));
    rc = proto_decode_ping(data, size, &opaque);
    CHECK(rc == (size == 8 ? PROTO_OK : PROTO_E_BODY));
    return 0;
}
