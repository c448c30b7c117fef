/*
 * escape — the one escaper for strings a peer chose (user names, SNI, application_name,
 * statements...) on their way into a log or audit line. Whatever the input, the output is one
 * line that cannot be mistaken for another line: control bytes, invalid UTF-8 and the
 * characters some viewers treat as line breaks or direction overrides are escaped.
 *
 *   ESCAPE_JSON: a JSON string body (no quotes): \" \\ \n \r \t \b \f, \u00XX for the other
 *                control bytes, \uXXXX for C1 controls, U+2028/2029 and bidi overrides, and
 *                \ufffd for each byte that is not part of valid UTF-8 (RFC 3629).
 *   ESCAPE_TEXT: for text logs: \\ \n \r \t, \xNN for the other control bytes and for each
 *                invalid UTF-8 byte (so the bytes can be told apart), \u{XXXX} for C1
 *                controls, U+2028/2029 and bidi overrides. Everything else as it is.
 *
 * Pure code: no allocation. At most ESCAPE_MAX_RATIO output bytes per input byte.
 */
#ifndef PGB_ESCAPE_H
#define PGB_ESCAPE_H

#include <stddef.h>

#define ESCAPE_MAX_RATIO 6

enum escape_style { ESCAPE_JSON, ESCAPE_TEXT };

/* Write the escaped form of v[n] to out (or only measure it when out is NULL); returns its
 * length. out must hold escape(NULL, ...) bytes (at most ESCAPE_MAX_RATIO * n). */
size_t escape(char *out, const char *v, size_t n, enum escape_style style);
/* The escaped form of the NUL-terminated s into buf[cap] (cap >= 1), NUL-terminated, cut
 * before an escape that would not fit whole. Returns buf. */
char *escape_str(char *buf, size_t cap, const char *s, enum escape_style style);

#endif
