/*
 * libFuzzer harness: the cancel-key path. The input is split into a server-to-client byte
 * stream fed in pieces to the agent's filter (cancel_key_filter, which reads BackendKeyData
 * with pgwire_bescan), and the rest decoded as a CANCEL frame body (proto_decode_cancel) and
 * looked up in the map. Checks: the scanner's view agrees with a whole-buffer parse (a stream
 * that opens with one protocol-3.0 BackendKeyData has exactly that key in the map), the map
 * entry dies with the session, nothing leaks or crashes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/cancel_key.h"
#include "common/log.h"
#include "common/pgwire.h"
#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uv_loop_t loop;
    static struct cancel_key_map *map;
    if (!map) {
        log_configure(LOG_ERROR, LOG_TEXT, "fuzz");
        uv_loop_init(&loop);
        map = cancel_key_map_new(&loop, NULL, 1000);
        if (!map)
            abort();
    }
    if (size < 2)
        return 0;
    size_t split = data[0] % 8 + 1; /* piece size for the stream */
    size_t stream_len = data[1] < size - 2 ? data[1] * (size - 2) / 256 : size - 2;
    const uint8_t *stream = data + 2, *rest = data + 2 + stream_len;
    size_t rest_len = size - 2 - stream_len;

    struct cancel_key_watch *w =
        cancel_key_watch_new(map, true, "/tmp/.s.PGSQL.5432", NULL, "fuzz", "0000");
    if (!w)
        return 0;
    struct pgwire_bescan whole;
    pgwire_bescan_init(&whole);
    unsigned ev_whole = pgwire_bescan_feed(&whole, stream, stream_len);
    bool filtering = true;
    size_t off = 0;
    for (; off < stream_len && filtering; off += split) {
        size_t n = stream_len - off < split ? stream_len - off : split;
        filtering = cancel_key_filter(w, stream + off, n);
    }
    /* the filter stops exactly when the scan is done (ReadyForQuery or a bad length) */
    if (!filtering != whole.done)
        abort();
    if (whole.have_key != (cancel_key_map_size(map) == 1))
        abort();
    if (whole.have_key && !cancel_key_lookup(map, whole.pid, whole.key, whole.key_len))
        abort();
    if (whole.have_key && !(ev_whole & PGWIRE_BESCAN_KEY))
        abort();
    /* a stream that opens with a whole protocol-3.0 BackendKeyData and no other 'K' */
    if (stream_len >= 13 && stream[0] == 'K' && stream[1] == 0 && stream[2] == 0 &&
        stream[3] == 0 && stream[4] == 12 && memchr(stream + 13, 'K', stream_len - 13) == NULL) {
        uint32_t pid = (uint32_t)stream[5] << 24 | (uint32_t)stream[6] << 16 |
                       (uint32_t)stream[7] << 8 | stream[8];
        if (!cancel_key_lookup(map, pid, stream + 9, 4))
            abort();
    }
    struct proto_cancel c;
    if (proto_decode_cancel(rest, rest_len, &c) == 0)
        (void)cancel_key_lookup(map, c.pid, c.key, c.key_len);
    cancel_key_watch_free(w);
    if (cancel_key_map_size(map) != 0)
        abort(); /* the watch's entry must die with it */
    return 0;
}
