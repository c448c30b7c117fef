/*
 * frame — the 12-byte header, the fixed binary bodies (WINDOW, PING/PONG, CLOSE, DATA) and the
 * incremental frame reader. Control (msgpack) bodies live in control.c.
 *
 * Reader state machine (one frame at a time):
 *
 *        +--------------------+   12 bytes, proto_hdr_decode ok    +--------------------+
 *   ---> | HEADER             | ---------------------------------> | BODY               |
 *        | hdr_have < 12      | <--------------------------------- | body_have < length |
 *        +--------------------+   body complete (or length 0):     +--------------------+
 *              |                  DATA: last on_data piece               |
 *              | bad header       other: on_frame(hdr, body)             | callback < 0
 *              v                                                         v
 *        +------------------------------------------------------------------------+
 *        | DEAD: r->err != 0, every feed returns r->err without calling back      |
 *        +------------------------------------------------------------------------+
 *
 * The header is validated before a single body byte is buffered, so a hostile length can
 * never make the reader wait for (or store) more than PROTO_MAX_CONTROL bytes; DATA bodies
 * are never stored at all.
 */
#include "proto/proto.h"

#include <assert.h>
#include <string.h>

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

const char *proto_strerror(int err)
{
    switch (err) {
    case PROTO_OK:
        return "ok";
    case PROTO_E_VERSION:
        return "unsupported frame version";
    case PROTO_E_TYPE:
        return "unknown frame type";
    case PROTO_E_TOO_BIG:
        return "frame length over the limit";
    case PROTO_E_STREAM:
        return "invalid stream id for frame type";
    case PROTO_E_FLAGS:
        return "reserved flags set";
    case PROTO_E_BODY:
        return "invalid frame body size";
    case PROTO_E_MSGPACK:
        return "malformed or unbounded msgpack body";
    case PROTO_E_FIELD:
        return "missing or invalid field in frame body";
    case PROTO_E_NOSPACE:
        return "output buffer too small";
    default:
        return err < 0 && err > PROTO_E_VERSION ? strerror(-err) : "unknown error";
    }
}

bool proto_is_violation(int err)
{
    return err <= PROTO_E_VERSION && err >= PROTO_E_NOSPACE;
}

const char *proto_type_name(uint8_t type)
{
    static const char *const names[] = {
        [PROTO_DATA] = "DATA",       [PROTO_WINDOW] = "WINDOW",       [PROTO_OPEN] = "OPEN",
        [PROTO_OPEN_OK] = "OPEN_OK", [PROTO_OPEN_FAIL] = "OPEN_FAIL", [PROTO_CLOSE] = "CLOSE",
        [PROTO_RESET] = "RESET",     [PROTO_PING] = "PING",           [PROTO_PONG] = "PONG",
        [PROTO_HELLO] = "HELLO",     [PROTO_WELCOME] = "WELCOME",     [PROTO_GOAWAY] = "GOAWAY",
        [PROTO_CANCEL] = "CANCEL",
    };
    return type <= PROTO_TYPE_MAX ? names[type] : "?";
}

/* ---- header ---------------------------------------------------------------------------- */

void proto_hdr_encode(uint8_t *out, const struct proto_hdr *h)
{
    out[0] = PROTO_WIRE_VERSION;
    out[1] = h->type;
    put_be16(out + 2, h->flags);
    put_be32(out + 4, h->stream_id);
    put_be32(out + 8, h->length);
}

static bool type_has_stream(uint8_t type)
{
    return type <= PROTO_RESET;
}

int proto_hdr_decode(const uint8_t *in, struct proto_hdr *out)
{
    out->type = in[1];
    out->flags = get_be16(in + 2);
    out->stream_id = get_be32(in + 4);
    out->length = get_be32(in + 8);

    if (in[0] != PROTO_WIRE_VERSION)
        return PROTO_E_VERSION;
    if (out->type > PROTO_TYPE_MAX)
        return PROTO_E_TYPE;
    if (out->flags != 0)
        return PROTO_E_FLAGS;
    if (type_has_stream(out->type) != (out->stream_id != 0))
        return PROTO_E_STREAM;

    switch (out->type) {
    case PROTO_DATA:
        if (out->length > PROTO_MAX_DATA)
            return PROTO_E_TOO_BIG;
        return out->length == 0 ? PROTO_E_BODY : PROTO_OK;
    case PROTO_WINDOW:
        return out->length == 4 ? PROTO_OK : PROTO_E_BODY;
    case PROTO_PING:
    case PROTO_PONG:
        return out->length == 8 ? PROTO_OK : PROTO_E_BODY;
    case PROTO_CLOSE:
        return out->length == 0 ? PROTO_OK : PROTO_E_BODY;
    default: /* msgpack bodies: at least one byte (an empty map is 0x80) */
        if (out->length > PROTO_MAX_CONTROL)
            return PROTO_E_TOO_BIG;
        return out->length == 0 ? PROTO_E_BODY : PROTO_OK;
    }
}

/* ---- fixed bodies ---------------------------------------------------------------------- */

static void fixed_hdr(uint8_t *out, uint8_t type, uint32_t stream, uint32_t length)
{
    struct proto_hdr h = {.type = type, .flags = 0, .stream_id = stream, .length = length};
    proto_hdr_encode(out, &h);
}

void proto_encode_data_hdr(uint8_t *out, uint32_t stream, uint32_t length)
{
    /* The caller frames its own payload; these are its bugs, not peer input. */
    assert(stream != 0 && length >= 1 && length <= PROTO_MAX_DATA);
    fixed_hdr(out, PROTO_DATA, stream, length);
}

int proto_encode_window(uint8_t *out, size_t cap, uint32_t stream, uint32_t increment)
{
    if (stream == 0)
        return PROTO_E_STREAM;
    if (increment == 0)
        return PROTO_E_BODY;
    if (cap < PROTO_HDR_SIZE + 4)
        return PROTO_E_NOSPACE;
    fixed_hdr(out, PROTO_WINDOW, stream, 4);
    put_be32(out + PROTO_HDR_SIZE, increment);
    return PROTO_HDR_SIZE + 4;
}

int proto_encode_ping(uint8_t *out, size_t cap, uint8_t type, uint64_t opaque)
{
    if (type != PROTO_PING && type != PROTO_PONG)
        return PROTO_E_TYPE;
    if (cap < PROTO_HDR_SIZE + 8)
        return PROTO_E_NOSPACE;
    fixed_hdr(out, type, 0, 8);
    put_be32(out + PROTO_HDR_SIZE, (uint32_t)(opaque >> 32));
    put_be32(out + PROTO_HDR_SIZE + 4, (uint32_t)opaque);
    return PROTO_HDR_SIZE + 8;
}

int proto_encode_close(uint8_t *out, size_t cap, uint32_t stream)
{
    if (stream == 0)
        return PROTO_E_STREAM;
    if (cap < PROTO_HDR_SIZE)
        return PROTO_E_NOSPACE;
    fixed_hdr(out, PROTO_CLOSE, stream, 0);
    return PROTO_HDR_SIZE;
}

int proto_decode_window(const uint8_t *body, size_t len, uint32_t *increment)
{
    if (len != 4)
        return PROTO_E_BODY;
    *increment = get_be32(body);
    return *increment == 0 ? PROTO_E_BODY : PROTO_OK;
}

int proto_decode_ping(const uint8_t *body, size_t len, uint64_t *opaque)
{
    if (len != 8)
        return PROTO_E_BODY;
    *opaque = (uint64_t)get_be32(body) << 32 | get_be32(body + 4);
    return PROTO_OK;
}

/* ---- reader ---------------------------------------------------------------------------- */

void proto_reader_init(struct proto_reader *r)
{
    r->err = 0;
    r->hdr_have = 0;
    r->body_have = 0;
    memset(&r->hdr, 0, sizeof r->hdr);
}

/* Callbacks may return any positive value too; only a negative one stops the reader. */
static int callback_result(int rc)
{
    return rc < 0 ? rc : 0;
}

int proto_reader_feed(struct proto_reader *r, const uint8_t *data, size_t len,
                      const struct proto_reader_ops *ops, void *ctx)
{
    size_t off = 0;
    int rc = r->err;

    if (rc != 0)
        return rc;
    while (off < len) {
        if (r->hdr_have < PROTO_HDR_SIZE) {
            size_t n = PROTO_HDR_SIZE - r->hdr_have;
            if (n > len - off)
                n = len - off;
            memcpy(r->hdr_buf + r->hdr_have, data + off, n);
            r->hdr_have += n;
            off += n;
            if (r->hdr_have < PROTO_HDR_SIZE)
                break;
            rc = proto_hdr_decode(r->hdr_buf, &r->hdr);
            if (rc != 0)
                goto out;
            r->body_have = 0;
            if (r->hdr.length == 0) {
                /* Only CLOSE gets here; deliver it now, not when the next byte arrives. */
                r->hdr_have = 0;
                rc = callback_result(ops->on_frame(ctx, &r->hdr, r->body));
                if (rc != 0)
                    goto out;
            }
            continue;
        }

        size_t n = r->hdr.length - r->body_have;
        if (n > len - off)
            n = len - off;
        r->body_have += n;
        bool done = r->body_have == r->hdr.length;
        if (done)
            r->hdr_have = 0; /* the next byte starts a new header */
        if (r->hdr.type == PROTO_DATA) {
            rc = callback_result(ops->on_data(ctx, r->hdr.stream_id, data + off, n));
        } else {
            /* hdr_decode bounded length by PROTO_MAX_CONTROL == sizeof r->body */
            memcpy(r->body + r->body_have - n, data + off, n);
            if (done)
                rc = callback_result(ops->on_frame(ctx, &r->hdr, r->body));
        }
        off += n;
        if (rc != 0)
            goto out;
    }
    rc = 0;
out:
    r->err = rc;
    return rc;
}
