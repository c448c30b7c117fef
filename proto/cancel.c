/*
 * cancel — the fake backend pid scheme that lets any relay route a CancelRequest with no
 * shared state: the agent that rewrote BackendKeyData put a hash of its own name into the pid
 * it handed out, and the relay reads it back (PROTOCOL.md 4.5). Pure code.
 *
 *   bit  31      30 ............ 16   15 ............ 0
 *        0       name hash (15 bits)  random (16 bits)
 *
 * The sign bit stays clear because clients read the pid as a signed int32 and some print or
 * compare it as a positive number.
 */
#include "proto/proto.h"

#include <string.h>

uint16_t proto_cancel_name_hash(const char *agent_name)
{
    uint32_t h = 2166136261u; /* FNV-1a 32-bit offset basis */
    for (const unsigned char *p = (const unsigned char *)agent_name; *p; p++) {
        h ^= *p;
        h *= 16777619u; /* FNV prime */
    }
    /* xor-fold to 15 bits, as the FNV authors recommend for sizes that are not a power of 2 */
    return (uint16_t)((h ^ (h >> 15)) & 0x7fff);
}

uint16_t proto_cancel_pid_hash(uint32_t pid)
{
    return (uint16_t)((pid >> 16) & 0x7fff);
}

uint32_t proto_cancel_fake_pid(uint16_t name_hash, uint16_t rnd)
{
    uint32_t pid = (uint32_t)(name_hash & 0x7fff) << 16 | rnd;
    /* pid 0 means "no backend" to some clients; 1 keeps the same name hash */
    return pid ? pid : 1;
}
