/*
 * control — msgpack control bodies (HELLO, WELCOME, OPEN, OPEN_OK, OPEN_FAIL, RESET, GOAWAY,
 * CANCEL).
 *
 * Each message is described once, by a table of fields (key, kind, required, limits, where
 * the value lives in the C struct). The same table drives the encoder and the decoder, so
 * the two cannot drift apart, and the encoder refuses to emit anything the decoder (ours or
 * a peer's) would reject.
 *
 * Encoding goes through msgpack_packer with a writer over the caller's fixed buffer: no
 * allocation. Decoding runs proto_msgpack_validate first (so every count msgpack-c will trust
 * is bounded by the body length), then msgpack_unpack_next; its zone lives only for the
 * duration of one decode, and decoded strings are copied into the struct before it is freed.
 */
#include "proto/proto.h"

#include <errno.h>
#include <msgpack.h>
#include <string.h>

enum field_kind {
    FIELD_STR,   /* char[cap]: min..cap-1 bytes, no NUL */
    FIELD_NAME,  /* char[PROTO_NAME_MAX]: proto_name_valid */
    FIELD_CODE,  /* char[8]: exactly 5 of [0-9A-Z], SQLSTATE style */
    FIELD_U16,   /* uint16_t in min..max */
    FIELD_U32,   /* uint32_t in min..max */
    FIELD_NAMES, /* char[PROTO_MAX_ROUTES][PROTO_NAME_MAX] + count in min..max, distinct */
    FIELD_BIN,   /* uint8_t[cap] + length (*count) in min..cap */
};

struct field {
    const char *key;
    enum field_kind kind;
    bool required;
    void *val;
    size_t cap;      /* FIELD_STR: size of the array, NUL included; FIELD_BIN: max length */
    uint32_t min;    /* FIELD_STR, FIELD_BIN: length; ints: value; FIELD_NAMES: entries */
    uint32_t max;    /* ints: value; FIELD_NAMES: entries */
    uint32_t *count; /* FIELD_NAMES: entries; FIELD_BIN: length */
};

#define MAX_FIELDS 16 /* per message; also bounds the `seen` bit mask */

/* clang-format off */
#define F_STR(k, req, arr, minlen) {k, FIELD_STR, req, (arr), sizeof(arr), minlen, 0, NULL}
#define F_NAME(k, req, arr)        {k, FIELD_NAME, req, (arr), PROTO_NAME_MAX, 1, 0, NULL}
#define F_CODE(k, arr)             {k, FIELD_CODE, true, (arr), sizeof(arr), 5, 0, NULL}
#define F_U16(k, p)                {k, FIELD_U16, true, (p), 0, 0, UINT16_MAX, NULL}
#define F_U32(k, p, lo, hi)        {k, FIELD_U32, true, (p), 0, lo, hi, NULL}
#define F_NAMES(k, req, arr, n, lo) {k, FIELD_NAMES, req, (arr), 0, lo, PROTO_MAX_ROUTES, (n)}
#define F_BIN(k, arr, n, minlen)   {k, FIELD_BIN, true, (arr), sizeof(arr), minlen, 0, (n)}
/* clang-format on */

/* Copy a message's table into f[MAX_FIELDS] and return its number of fields. */
#define RETURN_TABLE(f, t)                                                                         \
    do {                                                                                           \
        _Static_assert(sizeof(t) / sizeof((t)[0]) <= MAX_FIELDS, "raise MAX_FIELDS");              \
        memcpy((f), (t), sizeof(t));                                                               \
        return sizeof(t) / sizeof((t)[0]);                                                         \
    } while (0)

/* ---- message tables -------------------------------------------------------------------- */
/* The encoders pass their const struct through a cast: encoding only reads through `val`. */

static size_t hello_fields(struct field *f, struct proto_hello *m)
{
    const struct field t[] = {
        F_U16("vmaj", &m->ver_major),
        F_U16("vmin", &m->ver_minor),
        F_STR("sw", false, m->software, 0),
        F_NAMES("routes", true, m->routes, &m->nroutes, 1),
    };
    RETURN_TABLE(f, t);
}

static size_t welcome_fields(struct field *f, struct proto_welcome *m)
{
    const struct field t[] = {
        F_U16("vmaj", &m->ver_major),
        F_U16("vmin", &m->ver_minor),
        F_NAME("relay", false, m->relay_id),
        F_NAMES("accepted", true, m->accepted, &m->naccepted, 0),
        F_NAMES("refused", false, m->refused, &m->nrefused, 0),
        F_U32("ping_ms", &m->ping_interval_ms, 1, UINT32_MAX),
        F_U32("idle_ms", &m->idle_timeout_ms, 1, UINT32_MAX),
        F_U32("window", &m->initial_window, 1, PROTO_MAX_WINDOW),
        F_U32("max_streams", &m->max_streams, 1, UINT32_MAX),
    };
    RETURN_TABLE(f, t);
}

static size_t open_fields(struct field *f, struct proto_open *m)
{
    const struct field t[] = {
        F_NAME("route", true, m->route),         F_STR("sid", true, m->session_id, 1),
        F_STR("addr", false, m->client_addr, 0), F_STR("user", false, m->user, 0),
        F_STR("db", false, m->database, 0),      F_STR("app", false, m->application_name, 0),
    };
    RETURN_TABLE(f, t);
}

static size_t error_fields(struct field *f, struct proto_error *m)
{
    const struct field t[] = {
        F_CODE("code", m->code),
        F_STR("msg", true, m->message, 0),
    };
    RETURN_TABLE(f, t);
}

static size_t goaway_fields(struct field *f, struct proto_goaway *m)
{
    const struct field t[] = {
        F_U32("last", &m->last_stream_id, 0, UINT32_MAX),
        F_CODE("code", m->code),
        F_STR("msg", false, m->message, 0),
    };
    RETURN_TABLE(f, t);
}

static size_t cancel_fields(struct field *f, struct proto_cancel *m)
{
    const struct field t[] = {
        F_U32("pid", &m->pid, 0, UINT32_MAX),
        F_BIN("key", m->key, &m->key_len, PROTO_CANCEL_KEY_MIN),
    };
    RETURN_TABLE(f, t);
}

/* ---- checks shared by encoder and decoder ---------------------------------------------- */

/* Route and agent names: 1..PROTO_NAME_MAX-1 bytes of [A-Za-z0-9_.-]. */
static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= PROTO_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool proto_name_valid(const char *s)
{
    return s && name_ok(s, strnlen(s, PROTO_NAME_MAX));
}

/* Check the bytes s[n] (not NUL-terminated) of a string-kind field. */
static bool str_ok(const struct field *f, const char *s, size_t n)
{
    if (n > 0 && memchr(s, '\0', n))
        return false;
    switch (f->kind) {
    case FIELD_STR:
        return n >= f->min && n < f->cap;
    case FIELD_NAME:
        return name_ok(s, n);
    case FIELD_CODE:
        if (n != 5)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
                return false;
        }
        return true;
    default:
        return false;
    }
}

static bool names_distinct(char (*names)[PROTO_NAME_MAX], uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0)
                return false;
        }
    }
    return true;
}

/* ---- encoder --------------------------------------------------------------------------- */

struct fixed_out {
    uint8_t *p;
    size_t cap;
    size_t len;
};

static int fixed_out_write(void *data, const char *buf, size_t len)
{
    struct fixed_out *o = data;
    if (len > o->cap - o->len)
        return -1;
    memcpy(o->p + o->len, buf, len);
    o->len += len;
    return 0;
}

static bool field_is_string(const struct field *f)
{
    return f->kind == FIELD_STR || f->kind == FIELD_NAME || f->kind == FIELD_CODE;
}

/* Optional strings left empty are not sent (an empty name would not even be valid). */
static bool field_omitted(const struct field *f)
{
    return !f->required && field_is_string(f) && ((const char *)f->val)[0] == '\0';
}

static int field_check(const struct field *f)
{
    if (field_is_string(f)) {
        size_t n = strnlen(f->val, f->cap); /* n == cap: the array holds no NUL */
        return n < f->cap && str_ok(f, f->val, n) ? 0 : PROTO_E_FIELD;
    }
    if (f->kind == FIELD_U16) {
        uint16_t v = *(const uint16_t *)f->val;
        return v >= f->min && v <= f->max ? 0 : PROTO_E_FIELD;
    }
    if (f->kind == FIELD_U32) {
        uint32_t v = *(const uint32_t *)f->val;
        return v >= f->min && v <= f->max ? 0 : PROTO_E_FIELD;
    }
    if (f->kind == FIELD_BIN)
        return *f->count >= f->min && *f->count <= f->cap ? 0 : PROTO_E_FIELD;
    char(*names)[PROTO_NAME_MAX] = f->val;
    if (*f->count < f->min || *f->count > f->max)
        return PROTO_E_FIELD;
    for (uint32_t i = 0; i < *f->count; i++) {
        struct field one = {.kind = FIELD_NAME, .val = names[i], .cap = PROTO_NAME_MAX};
        if (field_check(&one) != 0)
            return PROTO_E_FIELD;
    }
    return names_distinct(names, *f->count) ? 0 : PROTO_E_FIELD;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    int rc = msgpack_pack_str(pk, n);
    return rc != 0 ? rc : msgpack_pack_str_body(pk, s, n);
}

static int pack_field(msgpack_packer *pk, const struct field *f)
{
    int rc = pack_str(pk, f->key);
    if (rc != 0)
        return rc;
    switch (f->kind) {
    case FIELD_U16:
        return msgpack_pack_uint16(pk, *(const uint16_t *)f->val);
    case FIELD_U32:
        return msgpack_pack_uint32(pk, *(const uint32_t *)f->val);
    case FIELD_NAMES: {
        char(*names)[PROTO_NAME_MAX] = f->val;
        rc = msgpack_pack_array(pk, *f->count);
        for (uint32_t i = 0; rc == 0 && i < *f->count; i++)
            rc = pack_str(pk, names[i]);
        return rc;
    }
    case FIELD_BIN:
        rc = msgpack_pack_bin(pk, *f->count);
        return rc != 0 ? rc : msgpack_pack_bin_body(pk, f->val, *f->count);
    default:
        return pack_str(pk, f->val);
    }
}

static int encode_fields(uint8_t *out, size_t cap, uint8_t type, uint32_t stream,
                         const struct field *f, size_t nf)
{
    struct fixed_out o = {.p = out + PROTO_HDR_SIZE, .cap = 0, .len = 0};
    msgpack_packer pk;
    size_t nsent = 0;
    int rc = 0;

    for (size_t i = 0; i < nf; i++) {
        if (field_omitted(&f[i]))
            continue;
        rc = field_check(&f[i]);
        if (rc != 0)
            return rc;
        nsent++;
    }
    if (cap < PROTO_HDR_SIZE)
        return PROTO_E_NOSPACE;
    /* Never emit a body the peer must reject, however large the caller's buffer. */
    o.cap = cap - PROTO_HDR_SIZE < PROTO_MAX_CONTROL ? cap - PROTO_HDR_SIZE : PROTO_MAX_CONTROL;
    msgpack_packer_init(&pk, &o, fixed_out_write);
    rc = msgpack_pack_map(&pk, nsent);
    for (size_t i = 0; rc == 0 && i < nf; i++) {
        if (!field_omitted(&f[i]))
            rc = pack_field(&pk, &f[i]);
    }
    if (rc != 0)
        return o.cap < PROTO_MAX_CONTROL ? PROTO_E_NOSPACE : PROTO_E_TOO_BIG;

    struct proto_hdr h = {.type = type, .stream_id = stream, .length = (uint32_t)o.len};
    proto_hdr_encode(out, &h);
    return (int)(PROTO_HDR_SIZE + o.len);
}

int proto_encode_hello(uint8_t *out, size_t cap, const struct proto_hello *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = hello_fields(f, (struct proto_hello *)m);
    return encode_fields(out, cap, PROTO_HELLO, 0, f, nf);
}

int proto_encode_welcome(uint8_t *out, size_t cap, const struct proto_welcome *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = welcome_fields(f, (struct proto_welcome *)m);
    return encode_fields(out, cap, PROTO_WELCOME, 0, f, nf);
}

int proto_encode_open(uint8_t *out, size_t cap, uint32_t stream, const struct proto_open *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = open_fields(f, (struct proto_open *)m);
    if (stream == 0)
        return PROTO_E_STREAM;
    return encode_fields(out, cap, PROTO_OPEN, stream, f, nf);
}

int proto_encode_open_ok(uint8_t *out, size_t cap, uint32_t stream)
{
    if (stream == 0)
        return PROTO_E_STREAM;
    return encode_fields(out, cap, PROTO_OPEN_OK, stream, NULL, 0);
}

int proto_encode_error(uint8_t *out, size_t cap, uint8_t type, uint32_t stream,
                       const struct proto_error *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = error_fields(f, (struct proto_error *)m);
    if (type != PROTO_OPEN_FAIL && type != PROTO_RESET)
        return PROTO_E_TYPE;
    if (stream == 0)
        return PROTO_E_STREAM;
    return encode_fields(out, cap, type, stream, f, nf);
}

int proto_encode_goaway(uint8_t *out, size_t cap, const struct proto_goaway *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = goaway_fields(f, (struct proto_goaway *)m);
    return encode_fields(out, cap, PROTO_GOAWAY, 0, f, nf);
}

int proto_encode_cancel(uint8_t *out, size_t cap, const struct proto_cancel *m)
{
    struct field f[MAX_FIELDS];
    size_t nf = cancel_fields(f, (struct proto_cancel *)m);
    return encode_fields(out, cap, PROTO_CANCEL, 0, f, nf);
}

/* ---- decoder --------------------------------------------------------------------------- */

static int decode_string(const struct field *f, const msgpack_object *o, char *dst)
{
    if (o->type != MSGPACK_OBJECT_STR || !str_ok(f, o->via.str.ptr, o->via.str.size))
        return PROTO_E_FIELD;
    if (o->via.str.size > 0)
        memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
    return 0;
}

static int decode_value(const struct field *f, const msgpack_object *o)
{
    switch (f->kind) {
    case FIELD_U16:
    case FIELD_U32:
        /* msgpack-c reports every non-negative integer, whatever its encoding, as POSITIVE */
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < f->min ||
            o->via.u64 > f->max)
            return PROTO_E_FIELD;
        if (f->kind == FIELD_U16)
            *(uint16_t *)f->val = (uint16_t)o->via.u64;
        else
            *(uint32_t *)f->val = (uint32_t)o->via.u64;
        return 0;
    case FIELD_NAMES: {
        char(*names)[PROTO_NAME_MAX] = f->val;
        struct field one = {.kind = FIELD_NAME, .cap = PROTO_NAME_MAX};
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < f->min ||
            o->via.array.size > f->max)
            return PROTO_E_FIELD;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (decode_string(&one, &o->via.array.ptr[i], names[i]) != 0)
                return PROTO_E_FIELD;
        }
        *f->count = o->via.array.size;
        return names_distinct(names, *f->count) ? 0 : PROTO_E_FIELD;
    }
    case FIELD_BIN:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size < f->min || o->via.bin.size > f->cap)
            return PROTO_E_FIELD;
        memcpy(f->val, o->via.bin.ptr, o->via.bin.size);
        *f->count = o->via.bin.size;
        return 0;
    default:
        return decode_string(f, o, f->val);
    }
}

static int decode_fields(const uint8_t *body, size_t len, const struct field *f, size_t nf)
{
    msgpack_unpacked up;
    size_t off = 0;
    uint32_t seen = 0;
    int rc = proto_msgpack_validate(body, len);

    if (rc != 0)
        return rc;
    msgpack_unpacked_init(&up);
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)body, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = -ENOMEM;
        goto out;
    }
    /* The walk already proved all of this; msgpack-c is the second opinion. */
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len || up.data.type != MSGPACK_OBJECT_MAP) {
        rc = PROTO_E_MSGPACK;
        goto out;
    }
    const msgpack_object_map *map = &up.data.via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr[i].key;
        if (key->type != MSGPACK_OBJECT_STR) {
            rc = PROTO_E_MSGPACK;
            goto out;
        }
        for (size_t j = 0; j < nf; j++) {
            if (strlen(f[j].key) != key->via.str.size ||
                memcmp(f[j].key, key->via.str.ptr, key->via.str.size) != 0)
                continue;
            /* A repeated key could be read differently by two implementations. */
            if (seen & (1u << j)) {
                rc = PROTO_E_FIELD;
                goto out;
            }
            seen |= 1u << j;
            rc = decode_value(&f[j], &map->ptr[i].val);
            if (rc != 0)
                goto out;
            break;
        }
    }
    for (size_t j = 0; j < nf; j++) {
        if (f[j].required && !(seen & (1u << j))) {
            rc = PROTO_E_FIELD;
            goto out;
        }
    }
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

int proto_decode_hello(const uint8_t *body, size_t len, struct proto_hello *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, hello_fields(f, m));
}

int proto_decode_welcome(const uint8_t *body, size_t len, struct proto_welcome *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, welcome_fields(f, m));
}

int proto_decode_open(const uint8_t *body, size_t len, struct proto_open *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, open_fields(f, m));
}

int proto_decode_open_ok(const uint8_t *body, size_t len)
{
    return decode_fields(body, len, NULL, 0);
}

int proto_decode_error(const uint8_t *body, size_t len, struct proto_error *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, error_fields(f, m));
}

int proto_decode_goaway(const uint8_t *body, size_t len, struct proto_goaway *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, goaway_fields(f, m));
}

int proto_decode_cancel(const uint8_t *body, size_t len, struct proto_cancel *m)
{
    struct field f[MAX_FIELDS];
    memset(m, 0, sizeof *m);
    return decode_fields(body, len, f, cancel_fields(f, m));
}
