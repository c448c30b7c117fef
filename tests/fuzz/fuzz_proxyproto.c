/*
 * libFuzzer harness for common/proxyproto: the first bytes of a connection from a trusted load
 * balancer. The input is fed whole, then split at a point chosen by its first byte, then byte by
 * byte: all three must agree on the status, the header length and the result; a header never
 * claims bytes past itself or past its bounds, and a result's source always formats.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/proxyproto.h"

static enum proxyproto_status feed_split(struct proxyproto *p, const uint8_t *data, size_t size,
                                         size_t cut, size_t *used)
{
    enum proxyproto_status st;
    size_t u2 = 0;

    proxyproto_init(p);
    st = proxyproto_feed(p, data, cut, used);
    if (st != PROXYPROTO_NEED_MORE)
        return st;
    if (*used != cut)
        abort();
    st = proxyproto_feed(p, data + cut, size - cut, &u2);
    *used += u2;
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto whole, split, bytes;
    enum proxyproto_status st, st2, st3 = PROXYPROTO_NEED_MORE;
    size_t used = 0, used2 = 0, used3 = 0, cut;
    char s[PROXYPROTO_ADDR_STR_MAX];

    proxyproto_init(&whole);
    st = proxyproto_feed(&whole, data, size, &used);
    if (used > size)
        abort();
    if (st == PROXYPROTO_NEED_MORE && used != size)
        abort();
    if (st == PROXYPROTO_ERROR && whole.err[0] == '\0')
        abort();
    if (st == PROXYPROTO_DONE) {
        const struct proxyproto_result *r = &whole.res;
        if (used != r->header_len || (r->version != 1 && r->version != 2))
            abort();
        if (r->version == 1 && used > PROXYPROTO_V1_MAX)
            abort();
        if (r->version == 2 && used > PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN)
            abort();
        if (r->has_addr != (r->family == AF_INET || r->family == AF_INET6))
            abort();
        if (r->has_addr && proxyproto_format_source(r, s, sizeof(s)) != 0)
            abort();
        if (!proxyproto_looks_like_header(data, size))
            abort();
    }
    /* never more than the bounds without an answer */
    if (st == PROXYPROTO_NEED_MORE && size > PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN)
        abort();

    cut = size ? data[0] % (size + 1) : 0;
    st2 = feed_split(&split, data, size, cut, &used2);
    if (st2 != st || (st == PROXYPROTO_DONE &&
                      (used2 != used || memcmp(&split.res, &whole.res, sizeof(whole.res)) != 0)))
        abort();

    proxyproto_init(&bytes);
    for (size_t i = 0; i < size && st3 == PROXYPROTO_NEED_MORE; i++) {
        size_t u;
        st3 = proxyproto_feed(&bytes, data + i, 1, &u);
        used3 += u;
    }
    if (st3 != st || (st == PROXYPROTO_DONE &&
                      (used3 != used || memcmp(&bytes.res, &whole.res, sizeof(whole.res)) != 0)))
        abort();
    return 0;
}
