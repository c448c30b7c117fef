/*
 * msgpack_check — a bounds walk over raw msgpack bytes before msgpack-c sees them.
 *
 * msgpack-c trusts the counts it reads: a 5-byte array32 header makes it allocate room for
 * four billion objects. This walker touches every byte once, allocates nothing, and rejects
 * any count that the remaining bytes cannot possibly hold (every element takes at least one
 * byte, every map entry two), so msgpack-c is only ever handed bodies whose allocations are
 * bounded by their length. Recursion depth is bounded by PROTO_MAX_DEPTH.
 */
#include "proto/proto.h"

#include <stdbool.h>

struct walk {
    const uint8_t *p;
    size_t len;
    size_t off;
};

static size_t walk_left(const struct walk *w)
{
    return w->len - w->off;
}

/* Read an n-byte big-endian unsigned value (n <= 4), or fail if fewer bytes are left. */
static bool walk_uint(struct walk *w, size_t n, uint32_t *v)
{
    if (walk_left(w) < n)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v << 8 | w->p[w->off + i];
    w->off += n;
    return true;
}

static bool walk_skip(struct walk *w, size_t n)
{
    if (walk_left(w) < n)
        return false;
    w->off += n;
    return true;
}

static bool is_str_marker(uint8_t b)
{
    return (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb);
}

static bool walk_object(struct walk *w, int depth);

static bool walk_string(struct walk *w, uint32_t n)
{
    return n <= PROTO_MAX_STR && walk_skip(w, n);
}

static bool walk_array(struct walk *w, uint32_t n, int depth)
{
    if (depth >= PROTO_MAX_DEPTH || n > PROTO_MAX_ARRAY || n > walk_left(w))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!walk_object(w, depth + 1))
            return false;
    }
    return true;
}

static bool walk_map(struct walk *w, uint32_t n, int depth)
{
    if (depth >= PROTO_MAX_DEPTH || n > PROTO_MAX_ARRAY || n > walk_left(w) / 2)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        /* Keys are strings everywhere, so decoders can compare them without a type switch. */
        if (walk_left(w) == 0 || !is_str_marker(w->p[w->off]))
            return false;
        if (!walk_object(w, depth + 1) || !walk_object(w, depth + 1))
            return false;
    }
    return true;
}

/* depth = number of containers enclosing this object (0 for the top level). */
static bool walk_object(struct walk *w, int depth)
{
    uint32_t n;

    if (walk_left(w) == 0)
        return false;
    uint8_t b = w->p[w->off++];

    if (b <= 0x7f || b >= 0xe0) /* positive / negative fixint */
        return true;
    if (b <= 0x8f)
        return walk_map(w, b & 0x0f, depth);
    if (b <= 0x9f)
        return walk_array(w, b & 0x0f, depth);
    if (b <= 0xbf)
        return walk_string(w, b & 0x1f);

    switch (b) {
    case 0xc0: /* nil */
    case 0xc2: /* false */
    case 0xc3: /* true */
        return true;
    case 0xc4: /* bin 8/16/32: same bounds as strings */
    case 0xd9: /* str 8/16/32 */
        return walk_uint(w, 1, &n) && walk_string(w, n);
    case 0xc5:
    case 0xda:
        return walk_uint(w, 2, &n) && walk_string(w, n);
    case 0xc6:
    case 0xdb:
        return walk_uint(w, 4, &n) && walk_string(w, n);
    case 0xca: /* float 32 */
        return walk_skip(w, 4);
    case 0xcb: /* float 64 */
        return walk_skip(w, 8);
    case 0xcc: /* uint 8/16/32/64, int 8/16/32/64 */
    case 0xd0:
        return walk_skip(w, 1);
    case 0xcd:
    case 0xd1:
        return walk_skip(w, 2);
    case 0xce:
    case 0xd2:
        return walk_skip(w, 4);
    case 0xcf:
    case 0xd3:
        return walk_skip(w, 8);
    case 0xdc:
        return walk_uint(w, 2, &n) && walk_array(w, n, depth);
    case 0xdd:
        return walk_uint(w, 4, &n) && walk_array(w, n, depth);
    case 0xde:
        return walk_uint(w, 2, &n) && walk_map(w, n, depth);
    case 0xdf:
        return walk_uint(w, 4, &n) && walk_map(w, n, depth);
    default: /* 0xc1 (never used), ext 8/16/32 (0xc7-0xc9), fixext (0xd4-0xd8) */
        return false;
    }
}

int proto_msgpack_validate(const uint8_t *buf, size_t len)
{
    struct walk w = {.p = buf, .len = len, .off = 0};

    if (len == 0 || len > PROTO_MAX_CONTROL || !buf)
        return PROTO_E_MSGPACK;
    uint8_t b = buf[0];
    if (!((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf))
        return PROTO_E_MSGPACK;
    if (!walk_object(&w, 0) || w.off != len)
        return PROTO_E_MSGPACK;
    return PROTO_OK;
}
