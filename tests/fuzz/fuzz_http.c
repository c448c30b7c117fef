/*
 * libFuzzer harness for common/http's request-head parser (the metrics listener) and the
 * Prometheus label escaper. The parser re-reads the whole head as bytes arrive, so every
 * prefix must either ask for more (0) or fail with the status the whole input gets; a
 * complete head gets 200 with a NUL-terminated path shorter than HTTP_PATH_MAX, or one of
 * the documented error statuses. The escaped label value must read back as the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/metrics.h"

static void check_status(int st)
{
    if (st != 0 && st != 200 && st != 400 && st != 414 && st != 431 && st != 505)
        abort();
}

/* Undo the escaping of label values; returns the length, or aborts on a stray escape. */
static size_t unescape(const char *e, char *out)
{
    size_t n = 0;

    for (; *e; e++) {
        if (*e != '\\') {
            if (*e == '"' || *e == '\n')
                abort(); /* must have been escaped */
            out[n++] = *e;
            continue;
        }
        e++;
        if (*e == 'n')
            out[n++] = '\n';
        else if (*e == '\\' || *e == '"')
            out[n++] = *e;
        else
            abort();
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_request req, req2;
    size_t n = size > HTTP_HEAD_MAX + 8 ? HTTP_HEAD_MAX + 8 : size;
    int whole = http_parse(data, n, &req);

    check_status(whole);
    if (whole == 200) {
        size_t len = strnlen(req.path, sizeof(req.path));
        if (len >= sizeof(req.path) || req.path[0] != '/' || req.method > HTTP_OTHER)
            abort();
    }
    /* every prefix (of a long input: 64 spread over it and the last 16): more needed, or the
     * same verdict as the whole */
    size_t step = n <= 512 ? 1 : n / 64;
    for (size_t cut = 0; cut < n; cut += (cut + 16 >= n ? 1 : step)) {
        int st = http_parse(data, cut, &req2);
        check_status(st);
        if (st != 0 && st != whole)
            abort();
        if (st == 200 && (req2.method != req.method || strcmp(req2.path, req.path) != 0))
            abort();
    }

    /* the escaper, on the input as a C string */
    char *v = malloc(size + 1), *e = malloc(2 * size + 1), *back = malloc(size + 1);
    if (!v || !e || !back)
        abort();
    memcpy(v, data, size);
    v[size] = '\0';
    size_t need = metrics_escape_label(v, e, 2 * size + 1);
    if (need != strlen(e) || unescape(e, back) != strlen(v) || memcmp(back, v, strlen(v)) != 0)
        abort();
    free(v);
    free(e);
    free(back);
    return 0;
}
