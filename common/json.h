/*
 * json — a small writer for one-line JSON objects (the audit log).
 *
 * Appends members to a buffer the caller provides; never allocates. Strings are escaped so
 * that every line is valid JSON whatever the input (escape.h, ESCAPE_JSON: bytes that are not
 * valid UTF-8 become U+FFFD). The worst case is ESCAPE_MAX_RATIO (6) output bytes per input
 * byte. A member that does not fit is left out
 * whole and the writer remembers it overflowed (json_end then fails): a cut line is never
 * written. Borrows the buffer for the writer's life.
 *
 *   struct json_writer w;
 *   json_begin(&w, buf, sizeof(buf));         {
 *   json_str(&w, "event", "session_start");    "event":"session_start"
 *   json_u64(&w, "bytes_in", 42);              ,"bytes_in":42
 *   json_array_begin(&w, "routes"); json_str(&w, NULL, "a"); json_array_end(&w);
 *   n = json_end(&w);                          }\n  -> length, or -ENOSPC
 */
#ifndef PGB_JSON_H
#define PGB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 8

struct json_writer {
    char *buf;
    size_t cap; /* usable bytes (room for the closing "}\n" and NUL is kept aside) */
    size_t len;
    int depth;
    bool first[JSON_MAX_DEPTH]; /* no member written yet at this depth */
    bool overflow;
};

/* Start an object in buf[cap] (cap >= 16). */
void json_begin(struct json_writer *w, char *buf, size_t cap);
/* Members: key is NULL inside an array. A NULL string value is written as null. */
void json_str(struct json_writer *w, const char *key, const char *v);
void json_strn(struct json_writer *w, const char *key, const char *v, size_t n);
void json_u64(struct json_writer *w, const char *key, uint64_t v);
void json_bool(struct json_writer *w, const char *key, bool v);
void json_null(struct json_writer *w, const char *key);
void json_array_begin(struct json_writer *w, const char *key);
void json_array_end(struct json_writer *w);
/* Close the object and add "\n" (NUL-terminated too). Returns the line length, or -ENOSPC when
 * some member did not fit or nesting is unbalanced (the line must then not be written). */
int json_end(struct json_writer *w);

/* Escaped length of v[n] as a JSON string body (no quotes): to size buffers. */
size_t json_escaped_len(const char *v, size_t n);

#endif
