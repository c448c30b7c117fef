/*
 * cidr — parsing and matching of address ranges (see cidr.h).
 *
 * Addresses are parsed with inet_pton() only (no name lookups). IPv4 is folded into the
 * IPv4-mapped IPv6 space so that one comparison serves both families.
 */
#include "common/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define CIDR_TEXT_MAX 64 /* the longest IPv6 text is 45 bytes, plus "/128" */

/* A bare address (no brackets, no port, no prefix); *v4 tells which family it was. */
static int cidr_pton(const char *s, uint8_t out[16], bool *v4)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (inet_pton(AF_INET, s, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return 0;
    }
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        memcpy(out, &a6, 16);
        *v4 = false;
        return 0;
    }
    return -EINVAL;
}

int cidr_parse(const char *s, struct cidr *out, char *err, size_t cap)
{
    char text[CIDR_TEXT_MAX];
    const char *slash;
    unsigned long prefix;
    uint8_t addr[16];
    bool v4 = false;
    char *end;
    unsigned max;

    if (strlen(s) >= sizeof(text)) {
        snprintf(err, cap, "invalid address range \"%.80s\": too long", s);
        return -EINVAL;
    }
    slash = strchr(s, '/');
    memcpy(text, s, slash ? (size_t)(slash - s) : strlen(s));
    text[slash ? (size_t)(slash - s) : strlen(s)] = '\0';
    if (cidr_pton(text, addr, &v4) < 0) {
        snprintf(err, cap,
                 "invalid address range \"%s\": expected an IPv4 or IPv6 address, optionally "
                 "with /prefix (e.g. 10.0.0.0/8, 2001:db8::/32)",
                 s);
        return -EINVAL;
    }
    max = v4 ? 32 : 128;
    prefix = max;
    if (slash) {
        errno = 0;
        prefix = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || errno || prefix > max) {
            snprintf(err, cap, "invalid address range \"%s\": prefix length must be 0 to %u", s,
                     max);
            return -EINVAL;
        }
    }
    out->bits = (uint8_t)(v4 ? 96 + prefix : prefix);
    memcpy(out->addr, addr, 16);
    for (unsigned i = out->bits; i < 128; i++) {
        if (addr[i / 8] & (0x80u >> (i % 8))) {
            snprintf(err, cap,
                     "invalid address range \"%s\": bits are set after the /%lu prefix (write the "
                     "network address, or a single address without /prefix)",
                     s, prefix);
            return -EINVAL;
        }
    }
    return 0;
}

int cidr_addr_parse(const char *s, uint8_t out[16])
{
    char text[CIDR_TEXT_MAX];
    const char *colon, *close;
    size_t n;
    bool v4;

    if (s[0] == '[') {
        /* "[v6]:port" or "[v6]" */
        close = strchr(s, ']');
        if (!close || (close[1] != '\0' && close[1] != ':'))
            return -EINVAL;
        s++;
        n = (size_t)(close - s);
    } else if ((colon = strchr(s, ':')) && !strchr(colon + 1, ':')) {
        n = (size_t)(colon - s); /* "v4:port": one colon only */
    } else {
        n = strlen(s);
    }
    if (n == 0 || n >= sizeof(text))
        return -EINVAL;
    memcpy(text, s, n);
    text[n] = '\0';
    return cidr_pton(text, out, &v4);
}

bool cidr_match(const struct cidr *c, const uint8_t addr[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;

    if (memcmp(c->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

void cidr_source_key(const char *peer, unsigned v4_bits, unsigned v6_bits, uint8_t key[16])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned bits;

    if (cidr_addr_parse(peer, key) < 0) {
        memset(key, 0, 16);
        return;
    }
    if (memcmp(key, v4mapped, 12) == 0)
        bits = 96 + (v4_bits < 32 ? v4_bits : 32);
    else
        bits = v6_bits < 128 ? v6_bits : 128;
    for (unsigned i = 0; i < 16; i++) {
        unsigned have = bits > 8 * i ? bits - 8 * i : 0;
        if (have < 8)
            key[i] &= (uint8_t)(0xff00u >> have);
    }
}

static int cidr_list_add(void *ctx, const char *item, char *err, size_t cap)
{
    struct cidr_list *l = ctx;
    struct cidr c, *v;
    int rc = cidr_parse(item, &c, err, cap);

    if (rc < 0)
        return rc;
    v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    l->v = v;
    l->v[l->n++] = c;
    return 0;
}

int cidr_list_parse(const char *s, struct cidr_list *out, char *err, size_t cap)
{
    struct cidr_list l = {0, NULL};
    int rc = config_parse_list(s, cidr_list_add, &l, err, cap);

    if (rc < 0) {
        free(l.v);
        return rc;
    }
    cidr_list_free(out);
    *out = l;
    return 0;
}

bool cidr_list_match(const struct cidr_list *l, const uint8_t addr[16])
{
    for (size_t i = 0; i < l->n; i++) {
        if (cidr_match(&l->v[i], addr))
            return true;
    }
    return false;
}

void cidr_list_free(struct cidr_list *l)
{
    if (!l)
        return;
    free(l->v);
    l->v = NULL;
    l->n = 0;
}
