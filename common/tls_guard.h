/*
 * tls_guard — checks the ciphertext a TLS client sends before the handshake is done, before
 * OpenSSL buffers any of it.
 *
 * OpenSSL sizes its buffers from the lengths the peer announces: a record header announcing a
 * large record, or a ClientHello header announcing a 128 KiB message, makes it allocate (and
 * zero) the whole buffer at once, 9 bytes in. The server side of a conn passes every byte
 * OpenSSL is about to read during the handshake through tls_guard_feed, and refuses the
 * connection when a record or a handshake message is larger than it may be:
 *
 *   - every record: content type change_cipher_spec, alert, handshake or application_data
 *     (TLS 1.3 sends the client's second flight as application_data), version major 3, length
 *     1..TLS_GUARD_RECORD_MAX; the first record is a handshake record;
 *   - every plaintext handshake message (all of them in TLS 1.3, those before the client's
 *     change_cipher_spec in TLS 1.2): a ClientHello first, ClientHellos (a second one follows a
 *     HelloRetryRequest) and every other message at most TLS_GUARD_MSG_MAX bytes, a client
 *     Certificate at most TLS_GUARD_CERT_MAX bytes.
 *
 * Pure code: no allocation, no I/O. The state is a few bytes kept in the conn; the input may be
 * split anywhere.
 */
#ifndef PGB_TLS_GUARD_H
#define PGB_TLS_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_GUARD_RECORD_MAX (16384 + 2048) /* TLSCiphertext limit of RFC 5246 */
#define TLS_GUARD_MSG_MAX (16384 - 4)       /* a ClientHello: one record's plaintext */
#define TLS_GUARD_CERT_MAX (32 * 1024)      /* a client certificate chain (tls.c max_cert_list) */

enum tls_guard_error {
    TLS_GUARD_OK = 0,
    TLS_GUARD_BAD_TYPE = -1,    /* not a TLS record type, or not a handshake first */
    TLS_GUARD_BAD_VERSION = -2, /* record version major is not 3 */
    TLS_GUARD_BAD_LENGTH = -3,  /* record length 0 or above TLS_GUARD_RECORD_MAX */
    TLS_GUARD_NOT_HELLO = -4,   /* the first handshake message is not a ClientHello */
    TLS_GUARD_BIG_MESSAGE = -5, /* a handshake message above its limit */
};

struct tls_guard {
    uint8_t rec[5];    /* the record header being read */
    uint8_t rec_have;  /* bytes of rec read (5: inside a record's body) */
    uint8_t msg[4];    /* the handshake message header being read */
    uint8_t msg_have;  /* bytes of msg read (4: inside a message's body) */
    uint32_t rec_left; /* bytes of the current record's body still to come */
    uint32_t msg_left; /* bytes of the current handshake message's body still to come */
    uint32_t records;  /* records whose header was read */
    uint32_t messages; /* handshake messages whose header was read */
    bool ccs_seen;     /* the client sent change_cipher_spec */
    bool tls13;        /* set by the owner once TLS 1.3 is negotiated: no encrypted 0x16 */
    int error;         /* sticky: once refused, always refused */
};

void tls_guard_init(struct tls_guard *g);
/* Check p[n], the next bytes from the client. Returns TLS_GUARD_OK or a negative
 * enum tls_guard_error (sticky). */
int tls_guard_feed(struct tls_guard *g, const uint8_t *p, size_t n);
/* A sentence for the error: "ClientHello of 131072 bytes (max 16380)". Returns buf. */
const char *tls_guard_strerror(const struct tls_guard *g, char *buf, size_t cap);

#endif
