/*
 * proto — the pgburrow tunnel protocol: frame header, control bodies, limits.
 *
 * Pure code: no sockets, no libuv, no allocation on the DATA path. The wire format is
 * specified in proto/PROTOCOL.md; this header is its C face.
 *
 * Every frame is a 12-byte header followed by `length` body bytes:
 *
 *   0      1      2      3      4              8              12
 *   +------+------+------+------+--------------+--------------+-------------
 *   | ver  | type | flags       | stream id    | length       | body ...
 *   +------+------+------+------+--------------+--------------+-------------
 *   ver = 1; flags, stream id and length are big-endian.
 *
 * DATA bodies are raw bytes. WINDOW, PING and PONG bodies are fixed binary fields.
 * Every other body is one msgpack map with string keys (unknown keys are ignored, so fields
 * can be added compatibly). Lengths are checked against the limits before any byte of the
 * body is buffered, and msgpack bodies are validated (counts never exceed the bytes left,
 * bounded nesting) before msgpack-c sees them.
 *
 * Ownership: decoders borrow the input buffer; decoded strings point into a caller-provided
 * scratch area or are copied into fixed-size fields of the output struct (stated per type).
 */
#ifndef PGB_PROTO_H
#define PGB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_WIRE_VERSION 1 /* header byte 0 */
#define PROTO_VERSION_MAJOR 1
#define PROTO_VERSION_MINOR 0
#define PROTO_ALPN "pgburrow/1"

#define PROTO_HDR_SIZE 12

/* Hard limits (documented in PROTOCOL.md; a peer exceeding them is a protocol error). */
#define PROTO_MAX_DATA 16384                /* max DATA body (16 KiB; +12 header bytes) */
#define PROTO_MAX_CONTROL 8192              /* max msgpack control body */
#define PROTO_MAX_FRAME PROTO_MAX_DATA      /* max body of any frame */
#define PROTO_MAX_STR 1024                  /* max msgpack string in a control body */
#define PROTO_MAX_ARRAY 64                  /* max msgpack array/map entries */
#define PROTO_MAX_DEPTH 4                   /* max msgpack nesting */
#define PROTO_MAX_ROUTES 32                 /* routes an agent may offer in HELLO */
#define PROTO_NAME_MAX 64                   /* route / agent names: [A-Za-z0-9_.-], 1..63 bytes */
#define PROTO_INITIAL_WINDOW (256 * 1024)   /* per-stream credit each way at OPEN */
#define PROTO_MAX_WINDOW (16 * 1024 * 1024) /* a window may never exceed this */

enum proto_type {
    PROTO_DATA = 0x00,      /* stream != 0, raw bytes */
    PROTO_WINDOW = 0x01,    /* stream != 0, u32 increment */
    PROTO_OPEN = 0x02,      /* relay->agent, stream != 0, msgpack struct proto_open */
    PROTO_OPEN_OK = 0x03,   /* agent->relay, stream != 0, empty map */
    PROTO_OPEN_FAIL = 0x04, /* agent->relay, stream != 0, msgpack struct proto_error */
    PROTO_CLOSE = 0x05,     /* stream != 0, empty body: sender will send no more DATA */
    PROTO_RESET = 0x06,     /* stream != 0, msgpack struct proto_error: stream aborted */
    PROTO_PING = 0x07,      /* stream 0, 8 opaque bytes */
    PROTO_PONG = 0x08,      /* stream 0, the 8 bytes of the PING */
    PROTO_HELLO = 0x09,     /* agent->relay, stream 0, msgpack struct proto_hello */
    PROTO_WELCOME = 0x0a,   /* relay->agent, stream 0, msgpack struct proto_welcome */
    PROTO_GOAWAY = 0x0b,    /* stream 0, msgpack struct proto_goaway */
    PROTO_CANCEL = 0x0c,    /* relay->agent, stream 0, msgpack struct proto_cancel */
    PROTO_TYPE_MAX = PROTO_CANCEL
};

/* Error codes returned by this module (negative). */
enum proto_err {
    PROTO_OK = 0,
    PROTO_E_VERSION = -1001, /* header version byte is not PROTO_WIRE_VERSION */
    PROTO_E_TYPE = -1002,    /* unknown frame type */
    PROTO_E_TOO_BIG = -1003, /* length over the limit for that type */
    PROTO_E_STREAM = -1004,  /* stream id 0 where one is required, or vice versa */
    PROTO_E_FLAGS = -1005,   /* reserved flags set */
    PROTO_E_BODY = -1006,    /* fixed body has the wrong size */
    PROTO_E_MSGPACK = -1007, /* control body is not one well-formed, bounded msgpack map */
    PROTO_E_FIELD = -1008,   /* a required field is missing or has the wrong type/size */
    PROTO_E_NOSPACE = -1009, /* encoder: output buffer too small */
};
/* The sentence for a PROTO_E_* code, or for a negative errno (decoders return -ENOMEM when
 * msgpack-c could not allocate: not the peer's fault). */
const char *proto_strerror(int err);
/* True for a PROTO_E_* code: the peer broke the protocol (as opposed to a local -errno). */
bool proto_is_violation(int err);
const char *proto_type_name(uint8_t type); /* "DATA", ... or "?" */

struct proto_hdr {
    uint8_t type;
    uint16_t flags;
    uint32_t stream_id;
    uint32_t length;
};

/* Encode a header into out[PROTO_HDR_SIZE]. */
void proto_hdr_encode(uint8_t *out, const struct proto_hdr *h);
/* Decode and validate a header (version, type, flags == 0, stream id rule, length limit for
 * the type, fixed body sizes; checked in that order). DATA and msgpack bodies must not be
 * empty (PROTO_E_BODY). Needs exactly PROTO_HDR_SIZE bytes. Returns 0 or PROTO_E_*. */
int proto_hdr_decode(const uint8_t *in, struct proto_hdr *out);

/* ---- control bodies ------------------------------------------------------------------ */

/* Strings are NUL-terminated copies in fixed arrays; longer input is PROTO_E_FIELD.
 * Keys, types, ranges and required/optional: PROTOCOL.md section 4. */
struct proto_hello {               /* agent -> relay, first frame on a tunnel */
    uint16_t ver_major, ver_minor; /* keys "vmaj", "vmin" (required) */
    char software[PROTO_NAME_MAX]; /* "sw", e.g. "pgburrow-agent 0.1.0" (optional) */
    uint32_t nroutes;              /* "routes": array of strings (required, 1..MAX) */
    char routes[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
};

struct proto_welcome {             /* relay -> agent, answer to HELLO */
    uint16_t ver_major, ver_minor; /* "vmaj", "vmin": the version both will speak (required) */
    char relay_id[PROTO_NAME_MAX]; /* "relay": relay instance name (optional) */
    uint32_t naccepted;            /* "accepted": routes this agent will be sent (required) */
    char accepted[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    uint32_t nrefused; /* "refused": routes refused (not allowed) (optional) */
    char refused[PROTO_MAX_ROUTES][PROTO_NAME_MAX];
    uint32_t ping_interval_ms; /* "ping_ms" (required, >= 1, as the three below) */
    uint32_t idle_timeout_ms;  /* "idle_ms": no frame for this long = dead */
    uint32_t initial_window;   /* "window": <= PROTO_MAX_WINDOW */
    uint32_t max_streams;      /* "max_streams" */
};

#define PROTO_META_MAX 256
struct proto_open {                        /* relay -> agent: a new session for `route` */
    char route[PROTO_NAME_MAX];            /* "route" (required) */
    char session_id[40];                   /* "sid" (required), relay-chosen, for logs */
    char client_addr[64];                  /* "addr": client ip:port (optional) */
    char user[PROTO_META_MAX];             /* "user" (optional) */
    char database[PROTO_META_MAX];         /* "db" (optional) */
    char application_name[PROTO_META_MAX]; /* "app" (optional) */
};

#define PROTO_MSG_MAX 512
struct proto_error {             /* OPEN_FAIL, RESET */
    char code[8];                /* "code": SQLSTATE-like, e.g. "08006" (required) */
    char message[PROTO_MSG_MAX]; /* "msg" (required, may be empty) */
};

struct proto_goaway {
    uint32_t last_stream_id;     /* "last": streams above this were not processed (required) */
    char code[8];                /* "code": "00000" = drain, else an error (required) */
    char message[PROTO_MSG_MAX]; /* "msg" (optional) */
};

/* A client's CancelRequest, routed to the agent that holds the session. pid and key are the
 * values the client got in BackendKeyData: PostgreSQL's own (PROTOCOL.md 4.5). */
#define PROTO_CANCEL_KEY_MIN 4   /* protocol 3.0 keys are 4 bytes */
#define PROTO_CANCEL_KEY_MAX 256 /* protocol 3.2 allows up to 256 */
struct proto_cancel {
    uint32_t pid;                      /* "pid" (required) */
    uint32_t key_len;                  /* bytes used in key */
    uint8_t key[PROTO_CANCEL_KEY_MAX]; /* "key": bin, 4..256 bytes (required) */
};

/* Encoders write a complete frame (header + body) into out[cap] and return its total size,
 * or PROTO_E_NOSPACE. No allocation. They refuse to emit what a peer's decoder would reject:
 * PROTO_E_FIELD (string not NUL-terminated in its array, invalid name or code, count out of
 * range), PROTO_E_TYPE (type not allowed for that encoder), PROTO_E_STREAM (stream 0 where
 * one is required), PROTO_E_BODY (WINDOW increment 0). A body is never larger than
 * PROTO_MAX_CONTROL (PROTO_E_TOO_BIG; unreachable with these fixed-size structs). */
int proto_encode_hello(uint8_t *out, size_t cap, const struct proto_hello *m);
int proto_encode_welcome(uint8_t *out, size_t cap, const struct proto_welcome *m);
int proto_encode_open(uint8_t *out, size_t cap, uint32_t stream, const struct proto_open *m);
int proto_encode_open_ok(uint8_t *out, size_t cap, uint32_t stream);
int proto_encode_error(uint8_t *out, size_t cap, uint8_t type /* OPEN_FAIL|RESET */,
                       uint32_t stream, const struct proto_error *m);
int proto_encode_goaway(uint8_t *out, size_t cap, const struct proto_goaway *m);
int proto_encode_cancel(uint8_t *out, size_t cap, const struct proto_cancel *m);
int proto_encode_window(uint8_t *out, size_t cap, uint32_t stream, uint32_t increment);
int proto_encode_ping(uint8_t *out, size_t cap, uint8_t type /* PING|PONG */, uint64_t opaque);
int proto_encode_close(uint8_t *out, size_t cap, uint32_t stream);
/* DATA: writes only the header (the payload follows it, uncopied by this module). */
void proto_encode_data_hdr(uint8_t *out, uint32_t stream, uint32_t length);

/* Decoders take a body (hdr.length bytes). Return 0, PROTO_E_* or -ENOMEM (msgpack-c could
 * not allocate its zone). On error *m is zeroed or partly filled, but its strings are always
 * NUL-terminated. Duplicate known keys are PROTO_E_FIELD; unknown keys are ignored. */
int proto_decode_hello(const uint8_t *body, size_t len, struct proto_hello *m);
int proto_decode_welcome(const uint8_t *body, size_t len, struct proto_welcome *m);
int proto_decode_open(const uint8_t *body, size_t len, struct proto_open *m);
int proto_decode_error(const uint8_t *body, size_t len, struct proto_error *m);
int proto_decode_goaway(const uint8_t *body, size_t len, struct proto_goaway *m);
int proto_decode_cancel(const uint8_t *body, size_t len, struct proto_cancel *m);
int proto_decode_open_ok(const uint8_t *body, size_t len); /* a valid map; no known keys */
int proto_decode_window(const uint8_t *body, size_t len, uint32_t *increment); /* > 0 */
int proto_decode_ping(const uint8_t *body, size_t len, uint64_t *opaque);

/* Validate that buf[len] (at most PROTO_MAX_CONTROL bytes) is exactly one msgpack map,
 * every container count <= bytes left,
 * nesting <= PROTO_MAX_DEPTH, strings <= PROTO_MAX_STR, containers <= PROTO_MAX_ARRAY
 * entries, every map key a string, no ext types. Exposed for the fuzzer and tests.
 * Returns 0 or PROTO_E_MSGPACK. */
int proto_msgpack_validate(const uint8_t *buf, size_t len);

/* True if s is a valid route/agent name: 1..PROTO_NAME_MAX-1 of [A-Za-z0-9_.-]. */
bool proto_name_valid(const char *s);

/* ---- incremental frame reader -------------------------------------------------------- */
/*
 * Feeds arbitrary byte chunks (as TLS hands them over) and calls back per frame.
 * DATA bodies are delivered in place, possibly in several pieces (on_data may be called more
 * than once per frame, never with 0 bytes, except for a zero-length DATA frame which is not
 * allowed). Other bodies are collected in the reader's own buffer (PROTO_MAX_CONTROL bytes)
 * and delivered whole to on_frame. The reader owns no heap memory.
 */
struct proto_reader_ops {
    /* Return 0 to continue, negative to stop feeding (the error is returned by feed). */
    int (*on_data)(void *ctx, uint32_t stream, const uint8_t *data, size_t len);
    int (*on_frame)(void *ctx, const struct proto_hdr *h, const uint8_t *body);
};

struct proto_reader {
    int err; /* 0, or the first error; a reader that failed (or was stopped) stays dead */
    uint8_t hdr_buf[PROTO_HDR_SIZE];
    size_t hdr_have;
    struct proto_hdr hdr; /* valid when hdr_have == PROTO_HDR_SIZE */
    size_t body_have;
    uint8_t body[PROTO_MAX_CONTROL];
};

void proto_reader_init(struct proto_reader *r);
/* Returns 0 when all of data was consumed, a PROTO_E_* for a protocol violation (the tunnel
 * must be closed), or the negative value a callback returned. After any non-zero return the
 * reader is dead: the rest of that chunk is dropped and every later feed returns the same
 * error without calling back (proto_reader_init revives it). Callbacks must not feed the same
 * reader; `body` and `h` are valid only during on_frame. */
int proto_reader_feed(struct proto_reader *r, const uint8_t *data, size_t len,
                      const struct proto_reader_ops *ops, void *ctx);

#endif
