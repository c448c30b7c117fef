/*
 * pgwire — first-bytes classification, StartupMessage parsing, ErrorResponse building.
 *
 * The checks follow PostgreSQL's own ProcessStartupPacket (src/backend/tcop/backend_startup.c)
 * so that the relay accepts exactly what the server would, and reads the parameters the
 * server will read: duplicate parameters are not an error, the last one wins (as in
 * PostgreSQL, which keeps overwriting). The one deliberate difference is that a protocol
 * minor version above 2 is refused instead of negotiated down.
 */
#include "common/pgwire.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "proto/proto.h"

/* CancelRequest: length, code, pid, then a key of 4 bytes (protocol 3.0) up to 256 bytes
 * (protocol 3.2). PostgreSQL accepts keys of 1..256 bytes; keys shorter than 4 bytes were
 * never issued by any server, so they are refused here. */
#define PGWIRE_CANCEL_MIN (12 + 4)
#define PGWIRE_CANCEL_MAX (12 + 256)
#define PGWIRE_PROTO_MINOR_MAX 2 /* protocol 3.2 (PostgreSQL 18) */

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t pgwire_packet_len(const uint8_t *buf, size_t len)
{
    if (len < 4)
        return 0;
    return get_be32(buf);
}

enum pgwire_kind pgwire_classify(const uint8_t *buf, size_t len)
{
    if (len >= 1 && buf[0] == PGWIRE_TLS_HANDSHAKE)
        return PGWIRE_TLS_HELLO;
    if (len < 8)
        return PGWIRE_NEED_MORE;

    uint32_t plen = get_be32(buf);
    uint32_t code = get_be32(buf + 4);
    if (plen < 8 || plen > PGWIRE_STARTUP_MAX)
        return PGWIRE_INVALID;
    switch (code) {
    case PGWIRE_SSL_REQUEST:
        return plen == 8 ? PGWIRE_SSL : PGWIRE_INVALID;
    case PGWIRE_GSSENC_REQUEST:
        return plen == 8 ? PGWIRE_GSSENC : PGWIRE_INVALID;
    case PGWIRE_CANCEL_REQUEST:
        return plen >= PGWIRE_CANCEL_MIN && plen <= PGWIRE_CANCEL_MAX ? PGWIRE_CANCEL
                                                                      : PGWIRE_INVALID;
    default:
        return code >> 16 == 3 ? PGWIRE_STARTUP : PGWIRE_INVALID;
    }
}

/* Length of the NUL-terminated string at p, or -1 if no NUL comes before end. */
static long cstr_len(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *nul = memchr(p, '\0', (size_t)(end - p));
    return nul ? (long)(nul - p) : -1;
}

int pgwire_startup_parse(const uint8_t *pkt, size_t len, struct pgwire_startup *out, char *err,
                         size_t cap)
{
    int rc = -EINVAL;

    memset(out, 0, sizeof(*out));
    if (len < 8 || len > PGWIRE_STARTUP_MAX) {
        snprintf(err, cap, "invalid startup packet length");
        goto out;
    }
    if (get_be32(pkt) != len) {
        snprintf(err, cap, "invalid startup packet length");
        goto out;
    }
    out->protocol = get_be32(pkt + 4);
    if (out->protocol >> 16 != 3 || (out->protocol & 0xffff) > PGWIRE_PROTO_MINOR_MAX) {
        snprintf(err, cap, "unsupported frontend protocol %u.%u: pgburrow supports 3.0 to 3.%d",
                 out->protocol >> 16, out->protocol & 0xffff, PGWIRE_PROTO_MINOR_MAX);
        goto out;
    }

    const uint8_t *p = pkt + 8;
    const uint8_t *end = pkt + len;
    for (;;) {
        if (p == end) {
            snprintf(err, cap, "invalid startup packet layout: expected terminator as last byte");
            goto out;
        }
        if (*p == '\0')
            break; /* the terminator: an empty name cannot exist, it ends the list */
        long nlen = cstr_len(p, end);
        if (nlen < 0) {
            snprintf(err, cap, "invalid startup packet layout: unterminated parameter name");
            goto out;
        }
        const char *name = (const char *)p;
        p += nlen + 1;
        long vlen = p < end ? cstr_len(p, end) : -1;
        if (vlen < 0) {
            snprintf(err, cap, "invalid startup packet layout: missing or unterminated value");
            goto out;
        }
        const char *value = (const char *)p;
        p += vlen + 1;
        if (out->nparams == PGWIRE_MAX_PARAMS) {
            snprintf(err, cap, "too many startup parameters (max %d)", PGWIRE_MAX_PARAMS);
            rc = -E2BIG;
            goto out;
        }
        out->names[out->nparams] = name;
        out->values[out->nparams] = value;
        out->nparams++;
        if (strcmp(name, "user") == 0)
            out->user = value;
        else if (strcmp(name, "database") == 0)
            out->database = value;
        else if (strcmp(name, "options") == 0)
            out->options = value;
        else if (strcmp(name, "application_name") == 0)
            out->application_name = value;
    }
    if (p + 1 != end) {
        snprintf(err, cap, "invalid startup packet layout: expected terminator as last byte");
        goto out;
    }
    if (!out->user || out->user[0] == '\0') {
        snprintf(err, cap, "no PostgreSQL user name specified in startup packet");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        /* Never hand back pointers from a packet that was refused. */
        uint32_t protocol = out->protocol;
        memset(out, 0, sizeof(*out));
        out->protocol = protocol;
    }
    return rc;
}

int pgwire_startup_with_options(const struct pgwire_startup *su, const char *options, uint8_t *out,
                                size_t cap)
{
    size_t n = 8;

    if (cap < 9)
        return -ENOSPC;
    put_be32(out + 4, su->protocol);
    for (uint32_t i = 0; i < su->nparams; i++) {
        const char *name = su->names[i], *value = su->values[i];
        size_t nl, vl;

        if (strcmp(name, "options") == 0) {
            /* the last one is the one the server would use: it takes the new value */
            if (value != su->options || !options || !options[0])
                continue;
            value = options;
        }
        nl = strlen(name) + 1;
        vl = strlen(value) + 1;
        if (n + nl + vl + 1 > cap || n + nl + vl + 1 > PGWIRE_STARTUP_MAX)
            return -ENOSPC;
        memcpy(out + n, name, nl);
        memcpy(out + n + nl, value, vl);
        n += nl + vl;
    }
    out[n++] = '\0';
    put_be32(out, (uint32_t)n);
    return (int)n;
}

int pgwire_error_response(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                          const char *message)
{
    const char codes[4] = {'S', 'V', 'C', 'M'};
    const char *fields[4] = {severity, severity, sqlstate, message};
    size_t lens[4];
    size_t total = 1 + 4 + 1; /* type, length word, final terminator */

    for (int i = 0; i < 4; i++) {
        lens[i] = strlen(fields[i]);
        total += 1 + lens[i] + 1;
    }
    if (total > cap || total > INT_MAX)
        return -ENOSPC;

    uint8_t *p = out;
    *p++ = 'E';
    put_be32(p, (uint32_t)(total - 1));
    p += 4;
    for (int i = 0; i < 4; i++) {
        *p++ = (uint8_t)codes[i];
        memcpy(p, fields[i], lens[i] + 1);
        p += lens[i] + 1;
    }
    *p = '\0';
    return (int)total;
}

/* ---- the server's first messages (read-only) -------------------------------------------- */

void pgwire_bescan_init(struct pgwire_bescan *s)
{
    memset(s, 0, sizeof(*s));
}

/* Is the body of the message whose header is in s->hdr worth copying? */
static bool bescan_keeps(const struct pgwire_bescan *s)
{
    return (s->hdr[0] == 'K' && s->body_len <= sizeof(s->body)) ||
           (s->hdr[0] == 'R' && s->body_len == 4) || s->hdr[0] == 'E';
}

/* The SQLSTATE and message of an ErrorResponse body (fields: type byte, NUL-terminated text;
 * only its first bytes were kept). */
static void bescan_error(struct pgwire_bescan *s)
{
    size_t n = s->body_len < sizeof(s->body) ? s->body_len : sizeof(s->body);
    const uint8_t *p = s->body, *end = s->body + n;

    s->err_code[0] = s->err_msg[0] = '\0';
    while (p < end && *p) {
        uint8_t field = *p++;
        const uint8_t *nul = memchr(p, '\0', (size_t)(end - p));
        size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);
        if (field == 'C' && len < sizeof(s->err_code)) {
            memcpy(s->err_code, p, len);
            s->err_code[len] = '\0';
        } else if (field == 'M') {
            size_t k = len < sizeof(s->err_msg) - 1 ? len : sizeof(s->err_msg) - 1;
            memcpy(s->err_msg, p, k);
            s->err_msg[k] = '\0';
        }
        if (!nul)
            break;
        p = nul + 1;
    }
}

static unsigned bescan_message_end(struct pgwire_bescan *s)
{
    s->hdr_have = 0;
    if (s->hdr[0] == 'R' && s->body_len == 4 && get_be32(s->body) == 0) {
        s->auth_ok = true;
        return PGWIRE_BESCAN_AUTH_OK;
    }
    if (s->hdr[0] == 'E') {
        bescan_error(s);
        return PGWIRE_BESCAN_ERROR;
    }
    if (s->hdr[0] != 'K')
        return 0;
    /* a second BackendKeyData (PostgreSQL sends one) replaces the first */
    s->have_key = false;
    if (s->body_len < 4 + PGWIRE_KEY_MIN || s->body_len > 4 + PGWIRE_KEY_MAX)
        return 0;
    s->pid = get_be32(s->body);
    s->key_len = s->body_len - 4;
    memcpy(s->key, s->body + 4, s->key_len);
    s->have_key = true;
    return PGWIRE_BESCAN_KEY;
}

unsigned pgwire_bescan_feed(struct pgwire_bescan *s, const uint8_t *data, size_t len)
{
    unsigned ev = 0;
    size_t i = 0;

    while (i < len && !s->done) {
        if (s->hdr_have < sizeof(s->hdr)) {
            if (s->hdr_have == 0 && data[i] == 'Z') {
                s->done = true;
                return ev | PGWIRE_BESCAN_DONE;
            }
            s->hdr[s->hdr_have++] = data[i++];
            if (s->hdr_have < sizeof(s->hdr))
                continue;
            uint32_t mlen = get_be32(s->hdr + 1);
            if (mlen < 4) {
                s->done = true; /* not PostgreSQL's protocol; the client will fail on it */
                return ev | PGWIRE_BESCAN_DONE;
            }
            s->body_len = mlen - 4;
            s->body_off = 0;
            if (s->body_len == 0)
                ev |= bescan_message_end(s);
            continue;
        }
        size_t n = s->body_len - s->body_off;
        if (n > len - i)
            n = len - i;
        if (bescan_keeps(s) && s->body_off < sizeof(s->body)) {
            size_t k = n < sizeof(s->body) - s->body_off ? n : sizeof(s->body) - s->body_off;
            memcpy(s->body + s->body_off, data + i, k);
        }
        i += n;
        s->body_off += (uint32_t)n;
        if (s->body_off == s->body_len)
            ev |= bescan_message_end(s);
    }
    return ev;
}
