/*
 * pgwire — the few pieces of the PostgreSQL wire protocol the relay must understand:
 * classifying the first bytes of a connection, parsing a StartupMessage, building an
 * ErrorResponse. Pure code: no I/O, no allocation; borrows its inputs.
 */
#ifndef PGB_PGWIRE_H
#define PGB_PGWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PGWIRE_CANCEL_REQUEST 80877102u
#define PGWIRE_SSL_REQUEST 80877103u
#define PGWIRE_GSSENC_REQUEST 80877104u
#define PGWIRE_PROTO_3_0 0x00030000u
#define PGWIRE_STARTUP_MAX 10000  /* bytes, including the length word (PostgreSQL: 4 more) */
#define PGWIRE_TLS_HANDSHAKE 0x16 /* first byte of a TLS record carrying a ClientHello */

enum pgwire_kind {
    PGWIRE_NEED_MORE = 0, /* fewer than 8 bytes (and the first byte is not 0x16) */
    PGWIRE_SSL,           /* SSLRequest */
    PGWIRE_GSSENC,        /* GSSENCRequest */
    PGWIRE_CANCEL,        /* CancelRequest (length 16, or longer for protocol 3.2 keys) */
    PGWIRE_STARTUP,       /* a plaintext StartupMessage (protocol major 3) */
    PGWIRE_TLS_HELLO,     /* first byte 0x16: direct TLS (sslnegotiation=direct) */
    PGWIRE_INVALID,       /* anything else */
};
/* Look at the first bytes of a new connection (buf may hold more than 8). */
enum pgwire_kind pgwire_classify(const uint8_t *buf, size_t len);

/* Length word of a startup-class packet; 0 if len < 4. */
uint32_t pgwire_packet_len(const uint8_t *buf, size_t len);

#define PGWIRE_MAX_PARAMS 64
struct pgwire_startup {
    uint32_t protocol;    /* e.g. 0x00030000 */
    const char *user;     /* NULL when absent (an error for the caller) */
    const char *database; /* NULL when absent (PostgreSQL then uses user) */
    const char *options;
    const char *application_name;
    uint32_t nparams;
    const char *names[PGWIRE_MAX_PARAMS]; /* all parameters, in order; point into the packet */
    const char *values[PGWIRE_MAX_PARAMS];
};
/*
 * Parse a complete StartupMessage pkt[len] (len == its length word). Checks: 8 <= len <=
 * PGWIRE_STARTUP_MAX, protocol major 3 and minor <= 2, name/value pairs NUL-terminated and
 * followed by one final NUL, names non-empty, at most PGWIRE_MAX_PARAMS, "user" present.
 * Pointers borrow pkt. Returns 0, or -EINVAL/-E2BIG with a human reason in err[cap].
 */
int pgwire_startup_parse(const uint8_t *pkt, size_t len, struct pgwire_startup *out, char *err,
                         size_t cap);

/*
 * Rebuild the StartupMessage parsed into su with its "options" parameter set to options, or
 * dropped when options is NULL or empty (earlier duplicates, which the server ignores, are
 * dropped too). The order of the other parameters is kept. Writes out[cap]; returns the new
 * length or -ENOSPC.
 */
int pgwire_startup_with_options(const struct pgwire_startup *su, const char *options, uint8_t *out,
                                size_t cap);

/*
 * A read-only scanner of the first messages a server sends on a session (type byte, int32
 * length, body), fed in whatever pieces the bytes arrive. It notes AuthenticationOk,
 * BackendKeyData and ErrorResponse and stops at the first ReadyForQuery, after which no
 * message carries a key:
 *
 *   HEADER (5 bytes) --'K'--> KEY BODY (copied)  --complete--> key (pid, key) known
 *      ^    |  \--'R' len 8--> AUTH BODY         --int32 0---> auth_ok
 *      |    |   \--'E'-------> ERROR BODY (first bytes) -----> err_code, err_msg
 *      |    |    \--other----> SKIP BODY
 *      +----+-------------------+
 *      'Z' (ReadyForQuery), or a length PostgreSQL never sends: done
 *
 * A BackendKeyData whose key is not PGWIRE_KEY_MIN..PGWIRE_KEY_MAX bytes (protocol 3.0: 4;
 * 3.2: up to 256) is not taken; have_key stays false. Nothing is allocated; the key is
 * secret: wipe the scanner (OPENSSL_cleanse) when done with it.
 */
#define PGWIRE_KEY_MIN 4
#define PGWIRE_KEY_MAX 256
struct pgwire_bescan {
    /* results */
    bool done;         /* ReadyForQuery seen or the stream is not PostgreSQL's: feed no more */
    bool auth_ok;      /* AuthenticationOk seen */
    bool have_key;     /* a complete BackendKeyData: pid, key[key_len] */
    char err_code[6];  /* of the last ErrorResponse: SQLSTATE ("" when none) */
    char err_msg[128]; /* ... and its message, cut (raw bytes: escape before logging) */
    uint32_t pid;
    uint32_t key_len;
    uint8_t key[PGWIRE_KEY_MAX];
    /* parser */
    uint8_t hdr[5];
    uint8_t hdr_have;
    uint32_t body_len, body_off;
    uint8_t body[4 + PGWIRE_KEY_MAX]; /* of 'K' and 'R'; the first bytes of 'E' */
};
/* Zero s: ready for a session's first byte. */
void pgwire_bescan_init(struct pgwire_bescan *s);
/* Scan the next len bytes. Returns PGWIRE_BESCAN_* bits for what this piece completed
 * (a key, AuthenticationOk, an ErrorResponse, the end); 0 when nothing. */
#define PGWIRE_BESCAN_KEY 1u
#define PGWIRE_BESCAN_AUTH_OK 2u
#define PGWIRE_BESCAN_DONE 4u
#define PGWIRE_BESCAN_ERROR 8u
unsigned pgwire_bescan_feed(struct pgwire_bescan *s, const uint8_t *data, size_t len);

/*
 * Build an ErrorResponse ('E') with fields S (severity), V (same, non-localised), C (sqlstate),
 * M (message) into out[cap]. Returns the byte count, or -ENOSPC.
 */
int pgwire_error_response(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                          const char *message);

#endif
