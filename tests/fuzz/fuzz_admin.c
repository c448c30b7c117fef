/*
 * libFuzzer harness for relay/admin_wire: the admin console's command parser and its readers
 * of extended-protocol messages, fed the same bytes; what they hand back must point into the
 * input, and a parsed command must build its result messages within the output's bound.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/admin_wire.h"

/* A string a reader returned: inside the body, NUL-terminated there. */
static void check_in(const uint8_t *body, size_t len, const char *s)
{
    if ((const uint8_t *)s < body || (const uint8_t *)s >= body + len ||
        !memchr(s, '\0', len - (size_t)((const uint8_t *)s - body)))
        abort();
}

static void check_cmd(const uint8_t *data, size_t size)
{
    struct admin_cmd cmd;
    const char *sqlstate = NULL;
    char err[512];
    size_t ncols;

    if (admin_cmd_parse((const char *)data, size, &cmd, &sqlstate, err, sizeof(err)) < 0) {
        if (!sqlstate || strlen(sqlstate) != 5 || !memchr(err, '\0', sizeof(err)))
            abort();
        return;
    }
    if (strlen(cmd.arg) >= ADMIN_ARG_MAX)
        abort();
    for (const char *p = cmd.arg; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            abort();
    const struct admin_col *cols = admin_cmd_columns(cmd.kind, &ncols);
    if (ncols > ADMIN_MAX_COLS || (ncols && !cols))
        abort();
    struct admin_out o;
    struct admin_val vals[ADMIN_MAX_COLS];
    int16_t formats[ADMIN_MAX_COLS] = {0};
    for (size_t i = 0; i < ncols; i++) {
        vals[i].s = i % 3 ? cmd.arg : NULL;
        vals[i].i = (int64_t)size - (int64_t)i;
        formats[i] = (int16_t)(i & 1);
    }
    admin_out_init(&o, 1024);
    admin_put_row_description(&o, cols, ncols, formats, ncols);
    admin_put_data_row(&o, cols, vals, ncols, formats, ncols);
    admin_put_error(&o, "ERROR", "42601", err);
    if (o.len > o.max)
        abort();
    admin_out_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct admin_parse p;
    struct admin_bind b;
    const char *s, *name;
    char kind;

    check_cmd(data, size);
    if (admin_read_query(data, size, &s) == 0)
        check_in(data, size, s);
    if (admin_read_parse(data, size, &p) == 0) {
        check_in(data, size, p.name);
        check_in(data, size, p.query);
    }
    if (admin_read_bind(data, size, &b) == 0) {
        check_in(data, size, b.portal);
        check_in(data, size, b.stmt);
        if (b.nformats > ADMIN_MAX_COLS)
            abort();
        for (uint16_t i = 0; i < b.nformats; i++)
            if (b.formats[i] != 0 && b.formats[i] != 1)
                abort();
    }
    if (admin_read_target(data, size, &kind, &name) == 0) {
        check_in(data, size, name);
        if (kind != 'S' && kind != 'P')
            abort();
    }
    if (admin_read_execute(data, size, &name) == 0)
        check_in(data, size, name);
    return 0;
}
