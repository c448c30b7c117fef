/*
 * cidr — address ranges for the relay's allowlists (`allow = 10.0.0.0/8, ::1, ...`).
 *
 * Every address is kept as 16 bytes: an IPv4 address a.b.c.d as its IPv4-mapped IPv6 form
 * ::ffff:a.b.c.d, and an IPv4 range /n as the mapped range /(96 + n). So 10.0.0.0/8 matches
 * 10.1.2.3 whether the client arrived over IPv4 or as ::ffff:10.1.2.3 on a dual-stack socket,
 * and an IPv6 range that covers ::ffff:0:0/96 (such as ::/0) covers every IPv4 client too.
 * Pure code, no I/O; a cidr_list owns its array (cidr_list_free releases it).
 */
#ifndef PGB_CIDR_H
#define PGB_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/err.h"

struct cidr {
    uint8_t addr[16]; /* network address, host bits zero */
    uint8_t bits;     /* prefix length in the 128-bit space */
};

struct cidr_list {
    size_t n;
    struct cidr *v;
};

/* "10.0.0.0/8", "192.168.1.7" (= /32), "2001:db8::/32", "::1" (= /128), "::ffff:10.0.0.0/104".
 * A range with host bits set ("10.1.2.3/8") is refused: it is almost always a typo.
 * Returns 0 or -EINVAL with a reason in err (cap bytes). */
int cidr_parse(const char *s, struct cidr *out, char *err, size_t cap);

/* An address alone: "10.1.2.3", "::1", also as conn_peer_addr() prints it with a port:
 * "10.1.2.3:5432", "[::1]:5432". Returns 0 or -EINVAL. */
int cidr_addr_parse(const char *s, uint8_t out[16]);

bool cidr_match(const struct cidr *c, const uint8_t addr[16]);

/* The source of peer (an address as cidr_addr_parse takes it) for per-source limits: its
 * first v4_bits bits (IPv4, also as ::ffff:a.b.c.d; at most 32) or v6_bits bits (IPv6; at most
 * 128), the rest zero, as 16 bytes. An IPv4 address is /32, an IPv6 host usually owns a /64.
 * Anything unparsable is the all-zero source, so that it is limited too. */
void cidr_source_key(const char *peer, unsigned v4_bits, unsigned v6_bits, uint8_t key[16]);

/* "a, b, c" (config_parse_list syntax). Replaces *out only on success. */
int cidr_list_parse(const char *s, struct cidr_list *out, char *err, size_t cap);
/* An empty list (n == 0) means "not configured" to callers; it matches nothing here. */
bool cidr_list_match(const struct cidr_list *l, const uint8_t addr[16]);
void cidr_list_free(struct cidr_list *l);

#endif
