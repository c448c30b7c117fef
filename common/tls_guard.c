/*
 * tls_guard.c — record and handshake message size checks before OpenSSL sees the bytes
 * (tls_guard.h).
 *
 *   RECORD HEADER (5 bytes: type, version, length) --checked--> BODY (length bytes) --> ...
 *   Bodies of plaintext handshake records carry handshake messages, which may span records:
 *   MESSAGE HEADER (4 bytes: type, 24-bit length) --checked--> MESSAGE BODY --> ...
 *   After the client's change_cipher_spec in TLS 1.2, handshake records are encrypted: only
 *   their record headers are checked from then on.
 */
#include "common/tls_guard.h"

#include <stdio.h>
#include <string.h>

#define REC_CHANGE_CIPHER_SPEC 20
#define REC_ALERT 21
#define REC_HANDSHAKE 22
#define REC_APPLICATION_DATA 23
#define HS_CLIENT_HELLO 1
#define HS_CERTIFICATE 11

void tls_guard_init(struct tls_guard *g)
{
    memset(g, 0, sizeof(*g));
}

static int guard_fail(struct tls_guard *g, int err)
{
    g->error = err;
    return err;
}

static uint32_t rec_len(const struct tls_guard *g)
{
    return ((uint32_t)g->rec[3] << 8) | g->rec[4];
}

static uint32_t msg_len(const struct tls_guard *g)
{
    return ((uint32_t)g->msg[1] << 16) | ((uint32_t)g->msg[2] << 8) | g->msg[3];
}

static int check_record(struct tls_guard *g)
{
    uint8_t type = g->rec[0];
    uint32_t len = rec_len(g);

    if (type != REC_CHANGE_CIPHER_SPEC && type != REC_ALERT && type != REC_HANDSHAKE &&
        type != REC_APPLICATION_DATA)
        return guard_fail(g, TLS_GUARD_BAD_TYPE);
    if (g->records == 0 && type != REC_HANDSHAKE)
        return guard_fail(g, TLS_GUARD_BAD_TYPE);
    if (g->rec[1] != 3)
        return guard_fail(g, TLS_GUARD_BAD_VERSION);
    if (len == 0 || len > TLS_GUARD_RECORD_MAX)
        return guard_fail(g, TLS_GUARD_BAD_LENGTH);
    if (type == REC_CHANGE_CIPHER_SPEC)
        g->ccs_seen = true;
    g->records++;
    g->rec_left = len;
    return TLS_GUARD_OK;
}

static int check_message(struct tls_guard *g)
{
    uint8_t type = g->msg[0];
    uint32_t len = msg_len(g),
             max = type == HS_CERTIFICATE ? TLS_GUARD_CERT_MAX : TLS_GUARD_MSG_MAX;

    if (g->messages == 0 && type != HS_CLIENT_HELLO)
        return guard_fail(g, TLS_GUARD_NOT_HELLO);
    if (len > max)
        return guard_fail(g, TLS_GUARD_BIG_MESSAGE);
    g->messages++;
    g->msg_left = len;
    return TLS_GUARD_OK;
}

/* Handshake bytes p[n] of a plaintext handshake record. */
static int feed_messages(struct tls_guard *g, const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        if (g->msg_have < sizeof(g->msg)) {
            g->msg[g->msg_have++] = p[i++];
            if (g->msg_have == sizeof(g->msg) && check_message(g) < 0)
                return g->error;
            if (g->msg_have == sizeof(g->msg) && g->msg_left == 0)
                g->msg_have = 0;
            continue;
        }
        size_t take = n - i < g->msg_left ? n - i : g->msg_left;
        i += take;
        g->msg_left -= (uint32_t)take;
        if (g->msg_left == 0)
            g->msg_have = 0;
    }
    return TLS_GUARD_OK;
}

int tls_guard_feed(struct tls_guard *g, const uint8_t *p, size_t n)
{
    size_t i = 0;

    if (g->error)
        return g->error;
    while (i < n) {
        if (g->rec_have < sizeof(g->rec)) {
            g->rec[g->rec_have++] = p[i++];
            if (g->rec_have == sizeof(g->rec) && check_record(g) < 0)
                return g->error;
            continue;
        }
        size_t take = n - i < g->rec_left ? n - i : g->rec_left;
        if (g->rec[0] == REC_HANDSHAKE && (g->tls13 || !g->ccs_seen) &&
            feed_messages(g, p + i, take) < 0)
            return g->error;
        i += take;
        g->rec_left -= (uint32_t)take;
        if (g->rec_left == 0)
            g->rec_have = 0;
    }
    return TLS_GUARD_OK;
}

const char *tls_guard_strerror(const struct tls_guard *g, char *buf, size_t cap)
{
    switch (g->error) {
    case TLS_GUARD_OK:
        snprintf(buf, cap, "no error");
        break;
    case TLS_GUARD_BAD_TYPE:
        snprintf(buf, cap, "not a TLS handshake (record type %u)", g->rec[0]);
        break;
    case TLS_GUARD_BAD_VERSION:
        snprintf(buf, cap, "not a TLS record (version %u.%u)", g->rec[1], g->rec[2]);
        break;
    case TLS_GUARD_BAD_LENGTH:
        snprintf(buf, cap, "TLS record of %u bytes (max %u)", rec_len(g), TLS_GUARD_RECORD_MAX);
        break;
    case TLS_GUARD_NOT_HELLO:
        snprintf(buf, cap, "first handshake message is not a ClientHello (type %u)", g->msg[0]);
        break;
    case TLS_GUARD_BIG_MESSAGE:
        snprintf(buf, cap, "%s of %u bytes (max %u)",
                 g->msg[0] == HS_CLIENT_HELLO  ? "ClientHello"
                 : g->msg[0] == HS_CERTIFICATE ? "client Certificate"
                                               : "handshake message",
                 msg_len(g), g->msg[0] == HS_CERTIFICATE ? TLS_GUARD_CERT_MAX : TLS_GUARD_MSG_MAX);
        break;
    default:
        snprintf(buf, cap, "refused");
        break;
    }
    return buf;
}
