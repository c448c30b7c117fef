/*
 * preauth.c — pending slots, handshake and log buckets per source (preauth.h).
 *
 * Sources live in a hash table (chains, a per-table random seed so that nobody can aim many
 * sources at one chain) and on one of two lists: busy (holding slots) or idle (LRU, head =
 * most recently seen). Buckets count thousandths of a token, so that refilling needs no
 * floating point.
 */
#include "relay/preauth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <uv.h>

#include "common/cidr.h"

#define MILLI 1000u
#define INITIAL_BUCKETS 64

struct bucket {
    uint64_t mtokens;
    uint64_t refill_ms;
    bool started;
};

struct preauth_source {
    uint8_t key[16];
    struct preauth_source *hnext;
    struct preauth_source *prev, *next; /* busy list or idle list */
    struct preauth_slot *oldest, *newest;
    uint32_t pending;
    struct bucket handshakes;
    struct bucket log[PREAUTH_REASONS];
    uint64_t suppressed[PREAUTH_REASONS];
};

struct preauth {
    uint64_t seed;
    uint32_t nbuckets; /* a power of 2 */
    size_t nsources, nidle, pending;
    struct preauth_source **buckets;
    struct preauth_source *busy;
    struct preauth_source *idle_head, *idle_tail;
    struct bucket log_global;
    uint64_t log_dropped;
};

struct preauth *preauth_new(void)
{
    struct preauth *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->nbuckets = INITIAL_BUCKETS;
    p->buckets = calloc(p->nbuckets, sizeof(*p->buckets));
    if (!p->buckets) {
        free(p);
        return NULL;
    }
    if (RAND_bytes((unsigned char *)&p->seed, sizeof(p->seed)) != 1)
        p->seed = uv_hrtime();
    return p;
}

void preauth_free(struct preauth *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->nbuckets; i++) {
        struct preauth_source *s = p->buckets[i];
        while (s) {
            struct preauth_source *next = s->hnext;
            free(s);
            s = next;
        }
    }
    free(p->buckets);
    free(p);
}

static uint32_t hash_of(const struct preauth *p, const uint8_t key[16])
{
    uint64_t h = 14695981039346656037ull ^ p->seed; /* FNV-1a 64, keyed by the seed */
    for (int i = 0; i < 16; i++) {
        h ^= key[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* ---- lists ------------------------------------------------------------------------------- */

static void list_unlink(struct preauth *p, struct preauth_source *s)
{
    struct preauth_source **head = s->pending ? &p->busy : &p->idle_head;
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else if (!s->pending)
        p->idle_tail = s->prev;
    if (!s->pending)
        p->nidle--;
    s->prev = s->next = NULL;
}

static void list_push(struct preauth *p, struct preauth_source *s)
{
    struct preauth_source **head = s->pending ? &p->busy : &p->idle_head;
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    else if (!s->pending)
        p->idle_tail = s;
    *head = s;
    if (!s->pending)
        p->nidle++;
}

static void table_unlink(struct preauth *p, struct preauth_source *s)
{
    for (struct preauth_source **pp = &p->buckets[hash_of(p, s->key) & (p->nbuckets - 1)]; *pp;
         pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            p->nsources--;
            return;
        }
    }
}

static void table_grow(struct preauth *p)
{
    uint32_t n = p->nbuckets * 2;
    struct preauth_source **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (uint32_t i = 0; i < p->nbuckets; i++) {
        struct preauth_source *s = p->buckets[i];
        while (s) {
            struct preauth_source *next = s->hnext;
            uint32_t k = hash_of(p, s->key) & (n - 1);
            s->hnext = b[k];
            b[k] = s;
            s = next;
        }
    }
    free(p->buckets);
    p->buckets = b;
    p->nbuckets = n;
}

/* The source of peer, created when new; NULL on ENOMEM. Touches it (most recently seen). */
static struct preauth_source *source_get(struct preauth *p, const char *peer)
{
    uint8_t key[16];
    struct preauth_source *s;

    cidr_source_key(peer, PREAUTH_SOURCE_V4_BITS, PREAUTH_SOURCE_V6_BITS, key);
    for (s = p->buckets[hash_of(p, key) & (p->nbuckets - 1)]; s; s = s->hnext) {
        if (memcmp(s->key, key, 16) == 0) {
            if (!s->pending) {
                list_unlink(p, s);
                list_push(p, s);
            }
            return s;
        }
    }
    while (p->nidle >= PREAUTH_IDLE_SOURCES && p->idle_tail) {
        struct preauth_source *old = p->idle_tail;
        list_unlink(p, old);
        table_unlink(p, old);
        free(old);
    }
    if (!(s = calloc(1, sizeof(*s))))
        return NULL;
    memcpy(s->key, key, 16);
    if (p->nsources >= (size_t)p->nbuckets * 2)
        table_grow(p);
    uint32_t b = hash_of(p, key) & (p->nbuckets - 1);
    s->hnext = p->buckets[b];
    p->buckets[b] = s;
    p->nsources++;
    list_push(p, s);
    return s;
}

/* ---- buckets ----------------------------------------------------------------------------- */

static bool bucket_take(struct bucket *b, uint64_t rate, uint64_t burst, uint64_t now_ms)
{
    uint64_t full = burst * MILLI;

    if (!b->started) {
        b->started = true;
        b->mtokens = full;
        b->refill_ms = now_ms;
    }
    if (now_ms > b->refill_ms) {
        /* rate tokens per second = rate milli-tokens per millisecond */
        uint64_t add = (now_ms - b->refill_ms) * rate;
        b->mtokens = b->mtokens >= full || add >= full - b->mtokens ? full : b->mtokens + add;
        b->refill_ms = now_ms;
    }
    if (b->mtokens < MILLI)
        return false;
    b->mtokens -= MILLI;
    return true;
}

/* ---- slots ------------------------------------------------------------------------------- */

int preauth_hold(struct preauth *p, struct preauth_slot *slot, const char *peer,
                 const struct preauth_limits *lim, uint64_t now_ms)
{
    struct preauth_source *s = source_get(p, peer);

    if (!s)
        return -ENOMEM;
    if (lim->max_pending_per_source && s->pending >= lim->max_pending_per_source)
        return -EBUSY;
    if (s->pending == 0) {
        list_unlink(p, s);
        s->pending = 1;
        list_push(p, s);
    } else {
        s->pending++;
    }
    slot->src = s;
    slot->since_ms = now_ms;
    slot->next = NULL;
    slot->prev = s->newest;
    if (s->newest)
        s->newest->next = slot;
    else
        s->oldest = slot;
    s->newest = slot;
    p->pending++;
    return 0;
}

void preauth_release(struct preauth *p, struct preauth_slot *slot)
{
    struct preauth_source *s = slot->src;

    if (!s)
        return;
    if (slot->prev)
        slot->prev->next = slot->next;
    else
        s->oldest = slot->next;
    if (slot->next)
        slot->next->prev = slot->prev;
    else
        s->newest = slot->prev;
    slot->src = NULL;
    slot->prev = slot->next = NULL;
    p->pending--;
    if (s->pending == 1) {
        list_unlink(p, s);
        s->pending = 0;
        list_push(p, s);
        while (p->nidle > PREAUTH_IDLE_SOURCES && p->idle_tail != s) {
            struct preauth_source *old = p->idle_tail;
            list_unlink(p, old);
            table_unlink(p, old);
            free(old);
        }
    } else {
        s->pending--;
    }
}

bool preauth_held(const struct preauth_slot *s)
{
    return s->src != NULL;
}

size_t preauth_pending(const struct preauth *p)
{
    return p->pending;
}

uint32_t preauth_source_pending(const struct preauth_slot *s)
{
    return s->src ? s->src->pending : 0;
}

struct preauth_slot *preauth_victim(const struct preauth *p)
{
    const struct preauth_source *best = NULL;

    for (const struct preauth_source *s = p->busy; s; s = s->next) {
        if (!best || s->pending > best->pending ||
            (s->pending == best->pending && s->oldest->since_ms < best->oldest->since_ms))
            best = s;
    }
    return best ? best->oldest : NULL;
}

struct preauth_slot *preauth_expired(const struct preauth *p, uint64_t now_ms)
{
    for (const struct preauth_source *s = p->busy; s; s = s->next) {
        for (struct preauth_slot *slot = s->oldest; slot; slot = slot->next) {
            if (slot->deadline_ms && slot->deadline_ms <= now_ms)
                return slot;
        }
    }
    return NULL;
}

bool preauth_take_handshake(struct preauth *p, struct preauth_slot *slot,
                            const struct preauth_limits *lim, uint64_t now_ms)
{
    (void)p;
    if (!slot->src || lim->handshake_rate == 0)
        return true;
    return bucket_take(&slot->src->handshakes, lim->handshake_rate, lim->handshake_burst, now_ms);
}

/* ---- refusal logs ------------------------------------------------------------------------ */

bool preauth_log_ok(struct preauth *p, const char *peer, enum preauth_reason why, uint64_t now_ms,
                    uint64_t *suppressed)
{
    struct preauth_source *s = source_get(p, peer);

    *suppressed = 0;
    if (s && !bucket_take(&s->log[why], PREAUTH_LOG_RATE, PREAUTH_LOG_BURST, now_ms)) {
        s->suppressed[why]++;
        return false;
    }
    if (!bucket_take(&p->log_global, PREAUTH_LOG_GLOBAL_RATE, PREAUTH_LOG_GLOBAL_BURST, now_ms)) {
        p->log_dropped++;
        return false;
    }
    if (s) {
        *suppressed = s->suppressed[why];
        s->suppressed[why] = 0;
    }
    return true;
}

uint64_t preauth_log_dropped(struct preauth *p)
{
    uint64_t n = p->log_dropped;
    p->log_dropped = 0;
    return n;
}
