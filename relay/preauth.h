/*
 * preauth — what the relay lets unauthenticated peers hold, per source and relay-wide.
 *
 * A connection is *pending* from its accept until it is routed (client listener: its session
 * is being opened) or its agent's HELLO is accepted (tunnel listener). Each pending connection
 * holds a slot (struct preauth_slot, embedded in the connection's struct) in the table of its
 * source: an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64). The table
 * answers:
 *
 *   - may this source hold one more pending connection (max_pending_per_source);
 *   - which pending connection to shed when the relay runs short of pending slots or file
 *     descriptors: the oldest one of the source holding the most (ties: the oldest of all),
 *     so that one source never keeps another out;
 *   - may this source start one more TLS handshake now (a token bucket per source);
 *   - may a refusal of this source, for this reason, be logged now (a token bucket per source
 *     and reason, and one for the whole relay): a flood writes a bounded number of lines, and
 *     the next line logged says how many were left out.
 *
 * Sources holding no slot are kept (for their buckets) up to PREAUTH_IDLE_SOURCES, the least
 * recently seen going first. Owns its sources; borrows the slots (a slot must be released
 * before the struct holding it is freed).
 */
#ifndef PGB_RELAY_PREAUTH_H
#define PGB_RELAY_PREAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PREAUTH_IDLE_SOURCES 4096
/* a source: an IPv4 address, an IPv6 /64 (cidr_source_key) */
#define PREAUTH_SOURCE_V4_BITS 32
#define PREAUTH_SOURCE_V6_BITS 64
/* refusal log lines: per source and reason, and for the whole relay (tokens per second, burst) */
#define PREAUTH_LOG_RATE 1
#define PREAUTH_LOG_BURST 10
#define PREAUTH_LOG_GLOBAL_RATE 20
#define PREAUTH_LOG_GLOBAL_BURST 100

struct preauth;
struct preauth_source;

enum preauth_reason {
    PREAUTH_SOURCE_FULL, /* max_pending_per_source */
    PREAUTH_SHED,        /* shed to make room */
    PREAUTH_RATE,        /* handshake_rate */
    PREAUTH_TLS,         /* client TLS handshake failed or refused */
    PREAUTH_TUNNEL,      /* tunnel refused before its HELLO was accepted */
    PREAUTH_TIMEOUT,     /* startup_timeout, hello_timeout */
    PREAUTH_REFUSED,     /* any other refusal (protocol, access, routing...) */
    PREAUTH_CANCEL,      /* a CancelRequest over a rate limit (cancel.h) */
    PREAUTH_REASONS
};

struct preauth_slot {
    struct preauth_source *src;       /* NULL: not held */
    struct preauth_slot *prev, *next; /* the source's slots, oldest first */
    uint64_t since_ms;
    uint64_t deadline_ms; /* set by the owner: shed when passed (0: none) */
    /* set by the owner: close the pending connection now (shed), and release the slot */
    void (*shed)(struct preauth_slot *s, const char *why);
};

struct preauth_limits {
    uint64_t max_pending;            /* relay-wide */
    uint64_t max_pending_per_source; /* 0: no per-source limit */
    uint64_t handshake_rate;         /* TLS handshakes per second per source (0: no limit) */
    uint64_t handshake_burst;
};

struct preauth *preauth_new(void);    /* returns new, NULL on ENOMEM */
void preauth_free(struct preauth *p); /* NULL-tolerant; every slot must be released */

/* Hold slot s (not held) for peer's source. 0, -EBUSY when the source already holds
 * max_pending_per_source slots, -ENOMEM. The relay-wide limit is the caller's: over it, shed
 * preauth_victim(). */
int preauth_hold(struct preauth *p, struct preauth_slot *s, const char *peer,
                 const struct preauth_limits *lim, uint64_t now_ms);
void preauth_release(struct preauth *p, struct preauth_slot *s); /* no-op when not held */
bool preauth_held(const struct preauth_slot *s);
size_t preauth_pending(const struct preauth *p);
uint32_t preauth_source_pending(const struct preauth_slot *s); /* its source's slots */
/* The slot to shed: the oldest slot of the source holding the most (ties: the oldest). */
struct preauth_slot *preauth_victim(const struct preauth *p);

/* A held slot whose deadline_ms has passed at now_ms, or NULL. */
struct preauth_slot *preauth_expired(const struct preauth *p, uint64_t now_ms);

/* Take a TLS handshake token from the bucket of s's source (s held). */
bool preauth_take_handshake(struct preauth *p, struct preauth_slot *s,
                            const struct preauth_limits *lim, uint64_t now_ms);

/* May a refusal of peer for why be logged now? When true, *suppressed is how many were not
 * logged since the last one logged for this source and reason. */
bool preauth_log_ok(struct preauth *p, const char *peer, enum preauth_reason why, uint64_t now_ms,
                    uint64_t *suppressed);
/* Refusals not logged because of the relay-wide log limit since the last call (for a
 * periodic summary line); resets the count. */
uint64_t preauth_log_dropped(struct preauth *p);

#endif
