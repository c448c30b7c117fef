/*
 * json.c — one-line JSON objects into a caller's buffer (see json.h).
 *
 * Each member is written tentatively: on overflow the length goes back to where the member
 * started, so the buffer always holds a well-formed prefix.
 */
#include "common/json.h"
#include "common/escape.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* "}\n" + NUL */
#define JSON_TAIL 3

void json_begin(struct json_writer *w, char *buf, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = cap > JSON_TAIL ? cap - JSON_TAIL : 0;
    w->first[0] = true;
    if (w->cap < 1) {
        w->overflow = true;
        return;
    }
    w->buf[w->len++] = '{';
}

static bool put(struct json_writer *w, const char *s, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return false;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return true;
}

size_t json_escaped_len(const char *v, size_t n)
{
    return escape(NULL, v, n, ESCAPE_JSON);
}

/* Separator and "key": for the next member; false on overflow. */
static bool member(struct json_writer *w, const char *key)
{
    if (w->overflow)
        return false;
    if (!w->first[w->depth] && !put(w, ",", 1))
        return false;
    w->first[w->depth] = false;
    if (!key)
        return true;
    size_t kn = strlen(key), need = json_escaped_len(key, kn) + 3;
    if (need > w->cap - w->len) {
        w->overflow = true;
        return false;
    }
    w->buf[w->len++] = '"';
    w->len += escape(w->buf + w->len, key, kn, ESCAPE_JSON);
    w->buf[w->len++] = '"';
    w->buf[w->len++] = ':';
    return true;
}

/* Run a member write; on overflow restore the state from before it. */
#define MEMBER_BEGIN(w)                                                                            \
    size_t saved_len = (w)->len;                                                                   \
    bool saved_first = (w)->first[(w)->depth]
#define MEMBER_FAILED(w)                                                                           \
    do {                                                                                           \
        (w)->len = saved_len;                                                                      \
        (w)->first[(w)->depth] = saved_first;                                                      \
        (w)->overflow = true;                                                                      \
    } while (0)

void json_strn(struct json_writer *w, const char *key, const char *v, size_t n)
{
    if (w->overflow)
        return;
    MEMBER_BEGIN(w);
    if (!member(w, key))
        goto fail;
    if (!v) {
        if (!put(w, "null", 4))
            goto fail;
        return;
    }
    size_t need = json_escaped_len(v, n) + 2;
    if (need > w->cap - w->len)
        goto fail;
    w->buf[w->len++] = '"';
    w->len += escape(w->buf + w->len, v, n, ESCAPE_JSON);
    w->buf[w->len++] = '"';
    return;
fail:
    MEMBER_FAILED(w);
}

void json_str(struct json_writer *w, const char *key, const char *v)
{
    json_strn(w, key, v, v ? strlen(v) : 0);
}

static void raw_member(struct json_writer *w, const char *key, const char *text)
{
    if (w->overflow)
        return;
    MEMBER_BEGIN(w);
    if (!member(w, key) || !put(w, text, strlen(text)))
        MEMBER_FAILED(w);
}

void json_u64(struct json_writer *w, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    raw_member(w, key, num);
}

void json_bool(struct json_writer *w, const char *key, bool v)
{
    raw_member(w, key, v ? "true" : "false");
}

void json_null(struct json_writer *w, const char *key)
{
    raw_member(w, key, "null");
}

void json_array_begin(struct json_writer *w, const char *key)
{
    if (w->overflow)
        return;
    if (w->depth + 1 >= JSON_MAX_DEPTH) {
        w->overflow = true;
        return;
    }
    raw_member(w, key, "[");
    if (w->overflow)
        return;
    w->first[++w->depth] = true;
}

void json_array_end(struct json_writer *w)
{
    if (w->overflow)
        return;
    if (w->depth == 0) {
        w->overflow = true;
        return;
    }
    w->depth--;
    put(w, "]", 1);
}

int json_end(struct json_writer *w)
{
    if (w->overflow || w->depth != 0)
        return -ENOSPC;
    /* the tail was kept aside in json_begin */
    memcpy(w->buf + w->len, "}\n", 3);
    w->len += 2;
    return (int)w->len;
}
