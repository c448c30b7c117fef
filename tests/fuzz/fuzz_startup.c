/*
 * libFuzzer harness for common/pgwire: classify the input as the first bytes of a client
 * connection, parse it as a StartupMessage (as given, and with its length word fixed up so
 * that the parser goes past the length check), and scan its options for a route (relay/routing);
 * also scan the raw input as an options string and build an ErrorResponse from it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pgwire.h"
#include "proto/proto.h"
#include "relay/routing.h"

/* Everything a successful parse hands back must point into the packet. */
static void check_startup(const uint8_t *pkt, size_t len, const struct pgwire_startup *st)
{
    const char *lo = (const char *)pkt, *hi = (const char *)pkt + len;
    char route[PROTO_NAME_MAX];

    if (!st->user || !st->user[0] || st->nparams > PGWIRE_MAX_PARAMS)
        abort();
    for (uint32_t i = 0; i < st->nparams; i++) {
        if (st->names[i] < lo || st->names[i] >= hi || st->values[i] < lo || st->values[i] >= hi)
            abort();
        if (st->names[i][0] == '\0')
            abort();
    }
    if (st->options && routing_options_route(st->options, route, sizeof(route)) == 1 &&
        !proto_name_valid(route))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t pkt[PGWIRE_STARTUP_MAX];
    struct pgwire_startup st;
    char err[PGB_ERR_MAX];
    char route[PROTO_NAME_MAX];

    enum pgwire_kind kind = pgwire_classify(data, size);
    if (kind == PGWIRE_NEED_MORE && size >= 8)
        abort();
    (void)pgwire_packet_len(data, size);

    if (pgwire_startup_parse(data, size, &st, err, sizeof(err)) == 0)
        check_startup(data, size, &st);
    if (size >= 8 && size <= sizeof(pkt)) {
        memcpy(pkt, data, size);
        pkt[0] = (uint8_t)(size >> 24);
        pkt[1] = (uint8_t)(size >> 16);
        pkt[2] = (uint8_t)(size >> 8);
        pkt[3] = (uint8_t)size;
        if (pgwire_startup_parse(pkt, size, &st, err, sizeof(err)) == 0)
            check_startup(pkt, size, &st);
        else if (memchr(err, '\0', sizeof(err)) == NULL)
            abort();
    }

    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int r = routing_options_route(s, route, sizeof(route));
    if (r == 1 && !proto_name_valid(route))
        abort();
    if (r != 0 && r != 1 && r != -EINVAL)
        abort();

    uint8_t out[512];
    int n = pgwire_error_response(out, sizeof(out), "FATAL", "08P01", s);
    if (n > (int)sizeof(out) || (n < 0 && strlen(s) < 400))
        abort();
    free(s);
    return 0;
}
