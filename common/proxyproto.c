/*
 * proxyproto.c — PROXY protocol v1/v2 header reader (proxyproto.h).
 *
 * Bytes are taken one at a time until the header is known to be complete, so that nothing past
 * it is ever consumed: v1 ends at its LF, v2 at 16 + its length field. A v1 line is kept whole
 * (at most 107 bytes) and parsed at its LF; a v2 header keeps its 16 fixed bytes and the first
 * bytes of its address block, and counts the rest (TLVs) without keeping them.
 */
#include "common/proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN 6

enum v2_cmd { V2_LOCAL = 0, V2_PROXY = 1 };
enum v2_fam { V2_UNSPEC = 0, V2_INET = 1, V2_INET6 = 2, V2_UNIX = 3 };
enum v2_transport { V2_T_UNSPEC = 0, V2_T_STREAM = 1, V2_T_DGRAM = 2 };

_Static_assert(sizeof(((struct proxyproto *)0)->buf) >= PROXYPROTO_V1_MAX, "v1 line fits");

static enum proxyproto_status fail(struct proxyproto *p, const char *reason)
{
    snprintf(p->err, sizeof(p->err), "%s", reason);
    p->status = PROXYPROTO_ERROR;
    return p->status;
}

void proxyproto_init(struct proxyproto *p)
{
    memset(p, 0, sizeof(*p));
    p->status = PROXYPROTO_NEED_MORE;
}

bool proxyproto_looks_like_header(const uint8_t *data, size_t len)
{
    if (len < V1_PREFIX_LEN)
        return false;
    if (memcmp(data, v1_prefix, V1_PREFIX_LEN) == 0)
        return true;
    return memcmp(data, v2_sig, len < sizeof(v2_sig) ? len : sizeof(v2_sig)) == 0;
}

/* ---- version 1 -------------------------------------------------------------------------- */

/* A decimal port: 1 to 5 digits, no leading zero (but "0"), at most 65535. */
static bool v1_port(const char *s, uint16_t *out)
{
    size_t n = strlen(s);
    unsigned long v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* The next field of line (split at single spaces, in place): NULL at the end. An empty field
 * (two spaces in a row, a trailing space) is returned as "" so that the caller refuses it. */
static char *v1_field(char **line)
{
    char *start = *line, *sp;

    if (!start)
        return NULL;
    sp = strchr(start, ' ');
    if (sp) {
        *sp = '\0';
        *line = sp + 1;
    } else {
        *line = NULL;
    }
    return start;
}

/* buf[0..n) is "PROXY ...\r\n" (the prefix and CRLF already checked). */
static enum proxyproto_status v1_parse(struct proxyproto *p, size_t n)
{
    char line[PROXYPROTO_V1_MAX];
    char *rest = line, *proto, *src, *dst, *sport, *dport;
    struct proxyproto_result *res = &p->res;
    int af;

    memcpy(line, p->buf, n - 2);
    line[n - 2] = '\0';
    if (memchr(line, '\0', n - 2))
        return fail(p, "v1: NUL byte in the header");
    rest = line + V1_PREFIX_LEN;
    proto = v1_field(&rest);
    res->version = 1;
    res->header_len = n;
    if (strcmp(proto, "UNKNOWN") == 0) {
        /* "the receiver must ignore anything presented before the CRLF is found" */
        res->family = AF_UNSPEC;
        return p->status = PROXYPROTO_DONE;
    }
    if (strcmp(proto, "TCP4") == 0)
        af = AF_INET;
    else if (strcmp(proto, "TCP6") == 0)
        af = AF_INET6;
    else
        return fail(p, "v1: unknown protocol (expected TCP4, TCP6 or UNKNOWN)");
    src = v1_field(&rest);
    dst = v1_field(&rest);
    sport = v1_field(&rest);
    dport = v1_field(&rest);
    if (!src || !dst || !sport || !dport || rest)
        return fail(p, "v1: expected source, destination, source port, destination port");
    if (inet_pton(af, src, res->src) != 1 || inet_pton(af, dst, res->dst) != 1)
        return fail(p, af == AF_INET ? "v1: invalid TCP4 address" : "v1: invalid TCP6 address");
    if (!v1_port(sport, &res->src_port) || !v1_port(dport, &res->dst_port))
        return fail(p, "v1: invalid port");
    res->family = af;
    res->has_addr = true;
    return p->status = PROXYPROTO_DONE;
}

static enum proxyproto_status v1_byte(struct proxyproto *p, uint8_t b)
{
    size_t i = p->seen;

    if (i < V1_PREFIX_LEN && b != (uint8_t)v1_prefix[i])
        return fail(p, "v1: bad signature (expected \"PROXY \")");
    if (i > 0 && p->buf[i - 1] == '\r' && b != '\n')
        return fail(p, "v1: CR not followed by LF");
    p->buf[p->seen++] = b;
    if (b == '\n') {
        if (i == 0 || p->buf[i - 1] != '\r')
            return fail(p, "v1: line ends without CRLF");
        return v1_parse(p, p->seen);
    }
    if (p->seen == PROXYPROTO_V1_MAX)
        return fail(p, "v1: no CRLF within 107 bytes");
    return PROXYPROTO_NEED_MORE;
}

/* ---- version 2 -------------------------------------------------------------------------- */

/* The 16 fixed bytes are in: check them before any of the address block is read. */
static enum proxyproto_status v2_fixed(struct proxyproto *p)
{
    uint8_t ver = p->buf[12] >> 4, cmd = p->buf[12] & 0x0F;
    uint8_t fam = p->buf[13] >> 4, transport = p->buf[13] & 0x0F;
    size_t need = 0;

    p->v2_len = (size_t)p->buf[14] << 8 | p->buf[15];
    if (ver != 2)
        return fail(p, "v2: unsupported version");
    if (cmd != V2_LOCAL && cmd != V2_PROXY)
        return fail(p, "v2: unknown command");
    if (p->v2_len > PROXYPROTO_V2_MAX_LEN)
        return fail(p, "v2: header too long");
    p->res.version = 2;
    p->res.local = cmd == V2_LOCAL;
    p->res.family = AF_UNSPEC;
    if (cmd == V2_LOCAL)
        return PROXYPROTO_NEED_MORE; /* the address block is ignored, whatever it says */
    if (fam > V2_UNIX)
        return fail(p, "v2: unknown address family");
    if (transport > V2_T_DGRAM)
        return fail(p, "v2: unknown transport protocol");
    if (transport == V2_T_DGRAM)
        return fail(p, "v2: datagram transport on a stream connection");
    if (fam != V2_UNSPEC && transport != V2_T_STREAM)
        return fail(p, "v2: address without a stream transport");
    if (fam == V2_INET)
        need = 12;
    else if (fam == V2_INET6)
        need = 36;
    else if (fam == V2_UNIX)
        need = 216;
    if (p->v2_len < need)
        return fail(p, "v2: address block shorter than its family needs");
    return PROXYPROTO_NEED_MORE;
}

/* The whole header is in: the address block is at buf + 16 (as much of it as was kept). */
static enum proxyproto_status v2_done(struct proxyproto *p)
{
    struct proxyproto_result *res = &p->res;
    const uint8_t *a = p->buf + PROXYPROTO_V2_HDR;
    uint8_t fam = p->buf[13] >> 4;

    res->header_len = PROXYPROTO_V2_HDR + p->v2_len;
    if (res->local)
        return p->status = PROXYPROTO_DONE;
    if (fam == V2_INET) {
        memcpy(res->src, a, 4);
        memcpy(res->dst, a + 4, 4);
        res->src_port = (uint16_t)(a[8] << 8 | a[9]);
        res->dst_port = (uint16_t)(a[10] << 8 | a[11]);
        res->family = AF_INET;
        res->has_addr = true;
    } else if (fam == V2_INET6) {
        memcpy(res->src, a, 16);
        memcpy(res->dst, a + 16, 16);
        res->src_port = (uint16_t)(a[32] << 8 | a[33]);
        res->dst_port = (uint16_t)(a[34] << 8 | a[35]);
        res->family = AF_INET6;
        res->has_addr = true;
    }
    /* UNSPEC, UNIX: no address the relay can use; the connection's own applies */
    return p->status = PROXYPROTO_DONE;
}

static enum proxyproto_status v2_byte(struct proxyproto *p, uint8_t b)
{
    size_t i = p->seen;

    if (i < sizeof(v2_sig) && b != v2_sig[i])
        return fail(p, "v2: bad signature");
    if (i < sizeof(p->buf))
        p->buf[i] = b;
    p->seen++;
    if (p->seen == PROXYPROTO_V2_HDR) {
        enum proxyproto_status st = v2_fixed(p);
        if (st != PROXYPROTO_NEED_MORE)
            return st;
    }
    if (p->seen >= PROXYPROTO_V2_HDR && p->seen == PROXYPROTO_V2_HDR + p->v2_len)
        return v2_done(p);
    return PROXYPROTO_NEED_MORE;
}

/* ---- both -------------------------------------------------------------------------------- */

enum proxyproto_status proxyproto_feed(struct proxyproto *p, const uint8_t *data, size_t len,
                                       size_t *used)
{
    size_t i = 0;

    *used = 0;
    if (p->status != PROXYPROTO_NEED_MORE)
        return p->status;
    while (i < len) {
        uint8_t b = data[i++];
        enum proxyproto_status st;

        if (p->version == 0) {
            if (b == (uint8_t)v1_prefix[0])
                p->version = 1;
            else if (b == v2_sig[0])
                p->version = 2;
            else
                return fail(p, "not a PROXY protocol header");
        }
        st = p->version == 1 ? v1_byte(p, b) : v2_byte(p, b);
        if (st != PROXYPROTO_NEED_MORE) {
            *used = i;
            return st;
        }
    }
    *used = len;
    return PROXYPROTO_NEED_MORE;
}

int proxyproto_format_source(const struct proxyproto_result *res, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;

    if (!res->has_addr || !inet_ntop(res->family, res->src, ip, sizeof(ip)))
        return -EINVAL;
    if (res->family == AF_INET6)
        n = snprintf(out, cap, "[%s]:%u", ip, (unsigned)res->src_port);
    else
        n = snprintf(out, cap, "%s:%u", ip, (unsigned)res->src_port);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : 0;
}
