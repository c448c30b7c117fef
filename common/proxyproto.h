/*
 * proxyproto — the PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that
 * a load balancer sends before its client's first byte, read incrementally.
 *
 * Fed in pieces of any size; proxyproto_feed never reads past the header, so whatever follows
 * it in the same piece is the client's own first bytes, left to the caller. Bounded: a version
 * 1 line is at most PROXYPROTO_V1_MAX bytes (CRLF included); a version 2 header is 16 bytes
 * plus at most PROXYPROTO_V2_MAX_LEN bytes of addresses and TLVs. TLVs are skipped, not kept:
 * the state holds at most the 16-byte header and the largest address block (UNIX, 216 bytes).
 *
 * What a complete header yields (struct proxyproto_result):
 *   - v1 "PROXY TCP4|TCP6 src dst sport dport": the client's address and port;
 *   - v1 "PROXY UNKNOWN ...": no address (the rest of the line is ignored, as the spec says);
 *   - v2 PROXY over INET/INET6 STREAM: the client's address and port;
 *   - v2 LOCAL (a balancer's own connection, e.g. its health check), v2 PROXY with family
 *     UNSPEC or UNIX: no address. The receiver then keeps the connection's own endpoints.
 * Anything else is an error with a reason: a bad signature, version, command, family or
 * transport (v2 DGRAM is refused: this is a stream), an oversized header, a v1 line without
 * CRLF, an address or port that does not parse or does not fit its family.
 *
 * Pure code: no I/O, no allocation. A struct proxyproto is a value; init it before the first
 * feed.
 */
#ifndef PGB_PROXYPROTO_H
#define PGB_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXYPROTO_V1_MAX 107      /* "PROXY TCP6 " + two full IPv6 addresses + ports + CRLF */
#define PROXYPROTO_V2_HDR 16       /* signature (12), version/command, family/transport, len */
#define PROXYPROTO_V2_MAX_LEN 2048 /* addresses + TLVs; cloud balancers' TLVs fit well within */
#define PROXYPROTO_V2_ADDR_MAX 216 /* the UNIX address block, the largest */
#define PROXYPROTO_ERR_MAX 96
/* enough for "[" IPv6 "]:" port */
#define PROXYPROTO_ADDR_STR_MAX 56

enum proxyproto_status {
    PROXYPROTO_ERROR = -1,    /* reason in p->err; feeding more changes nothing */
    PROXYPROTO_NEED_MORE = 0, /* every byte given was part of the header */
    PROXYPROTO_DONE = 1,      /* the header is complete: p->res */
};

struct proxyproto_result {
    int version;     /* 1 or 2 */
    bool has_addr;   /* false: LOCAL, UNKNOWN, UNSPEC or UNIX; keep the connection's address */
    bool local;      /* v2 LOCAL command (a balancer's own connection) */
    int family;      /* AF_INET or AF_INET6 when has_addr, else AF_UNSPEC */
    uint8_t src[16]; /* network order: 4 bytes (AF_INET) or 16 (AF_INET6) */
    uint8_t dst[16];
    uint16_t src_port, dst_port;
    size_t header_len; /* bytes of the whole header */
};

struct proxyproto {
    int version; /* 0 until the first byte says which */
    enum proxyproto_status status;
    size_t seen;                                             /* header bytes consumed so far */
    size_t v2_len;                                           /* v2: the length field */
    uint8_t buf[PROXYPROTO_V2_HDR + PROXYPROTO_V2_ADDR_MAX]; /* >= PROXYPROTO_V1_MAX */
    struct proxyproto_result res;
    char err[PROXYPROTO_ERR_MAX];
};

void proxyproto_init(struct proxyproto *p);

/* Feed the next len bytes. Sets *used to how many of them belong to the header (all of them
 * on NEED_MORE; on DONE the rest is the client's). Once DONE or ERROR, returns that again. */
enum proxyproto_status proxyproto_feed(struct proxyproto *p, const uint8_t *data, size_t len,
                                       size_t *used);

/* Do data[len] begin like a PROXY header ("PROXY " or the v2 signature)? Looks at the first
 * min(len, 12) bytes; false for fewer than 6. For refusing headers from untrusted peers. */
bool proxyproto_looks_like_header(const uint8_t *data, size_t len);

/* The client's address as "a.b.c.d:port" or "[v6]:port" into out[cap]. -EINVAL when the result
 * has no address, -ENOSPC when cap is too small; else 0. */
int proxyproto_format_source(const struct proxyproto_result *res, char *out, size_t cap);

#endif
