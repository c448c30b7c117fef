/*
 * escape.c — see escape.h. One pass, byte by byte, with a UTF-8 validator that refuses
 * overlong forms, surrogates and code points above U+10FFFF.
 */
#include "common/escape.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const char hex[] = "0123456789abcdef";

/* Length of the valid UTF-8 sequence at s[0] (n bytes available) and its code point, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp_out)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80) {
        *cp_out = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *cp_out = cp;
    return len;
}

/* Code points that end a line or reorder text in some viewer: C1 controls (U+0085 is NEL),
 * the line and paragraph separators, and the bidi embeddings, overrides and isolates. */
static bool is_invisible_break(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Appends the k bytes of s to out at o (when out is set); returns k. */
static size_t put(char *out, size_t o, const char *s, size_t k)
{
    if (out)
        memcpy(out + o, s, k);
    return k;
}

static size_t put_hex4(char *out, size_t o, const char *prefix, size_t plen, uint32_t cp,
                       const char *suffix)
{
    char b[16];
    size_t n = 0;
    memcpy(b, prefix, plen);
    n = plen;
    b[n++] = hex[(cp >> 12) & 15];
    b[n++] = hex[(cp >> 8) & 15];
    b[n++] = hex[(cp >> 4) & 15];
    b[n++] = hex[cp & 15];
    for (; *suffix; suffix++)
        b[n++] = *suffix;
    return put(out, o, b, n);
}

static size_t escape_control(char *out, size_t o, unsigned char c, enum escape_style style)
{
    static const char short_esc[] = {
        ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
    char b[4] = {'\\', 0, 0, 0};
    bool text = style == ESCAPE_TEXT;

    if (c < sizeof(short_esc) && short_esc[c] && (!text || c == '\n' || c == '\r' || c == '\t')) {
        b[1] = short_esc[c];
        return put(out, o, b, 2);
    }
    if (text) {
        b[1] = 'x';
        b[2] = hex[c >> 4];
        b[3] = hex[c & 15];
        return put(out, o, b, 4);
    }
    return put_hex4(out, o, "\\u", 2, c, "");
}

size_t escape(char *out, const char *v, size_t n, enum escape_style style)
{
    const unsigned char *s = (const unsigned char *)v;
    size_t o = 0, i = 0;

    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t k;

        if (c == '\\' || (c == '"' && style == ESCAPE_JSON)) {
            char b[2] = {'\\', (char)c};
            o += put(out, o, b, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            o += escape_control(out, o, c, style);
            i++;
        } else if ((k = utf8_seq(s + i, n - i, &cp)) > 0) {
            if (!is_invisible_break(cp))
                o += put(out, o, (const char *)s + i, k);
            else if (style == ESCAPE_JSON)
                o += put_hex4(out, o, "\\u", 2, cp, "");
            else
                o += put_hex4(out, o, "\\u{", 3, cp, "}");
            i += k;
        } else if (style == ESCAPE_JSON) {
            o += put(out, o, "\\ufffd", 6); /* one replacement character per bad byte */
            i++;
        } else {
            o += escape_control(out, o, c, ESCAPE_TEXT); /* \xNN keeps the byte's value */
            i++;
        }
    }
    return o;
}

char *escape_str(char *buf, size_t cap, const char *s, enum escape_style style)
{
    size_t o = 0, n = strlen(s), i = 0;
    char one[ESCAPE_MAX_RATIO * 4];

    /* escape piece by piece (a UTF-8 sequence is at most 4 bytes), so that the cut is clean */
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (k == 0)
            k = 1;
        size_t m = escape(one, s + i, k, style);
        if (o + m + 1 > cap)
            break;
        memcpy(buf + o, one, m);
        o += m;
        i += k;
    }
    buf[o] = '\0';
    return buf;
}
