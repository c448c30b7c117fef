/*
 * libFuzzer harness for common/tls_guard: the first bytes a TLS client sends, fed whole and in
 * pieces (split points from the input's first byte); both ways must agree, and an accepted
 * stream never holds a record or handshake message above its limit.
 */
#include <stdint.h>
#include <stdlib.h>

#include "common/tls_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tls_guard whole, split;
    char msg[128];
    size_t step, i;
    int a, b = TLS_GUARD_OK;

    if (size < 2)
        return 0;
    step = (size_t)data[0] % 17 + 1;
    tls_guard_init(&whole);
    tls_guard_init(&split);
    whole.tls13 = split.tls13 = data[1] & 1;
    data += 2;
    size -= 2;
    a = tls_guard_feed(&whole, data, size);
    for (i = 0; i < size && b == TLS_GUARD_OK; i += step)
        b = tls_guard_feed(&split, data + i, size - i < step ? size - i : step);
    if (a != b)
        abort();
    if (a == TLS_GUARD_OK && whole.rec_have == 5 && whole.rec_left > TLS_GUARD_RECORD_MAX)
        abort();
    if (a == TLS_GUARD_OK && whole.msg_left > TLS_GUARD_CERT_MAX)
        abort();
    tls_guard_strerror(&whole, msg, sizeof(msg));
    return 0;
}
