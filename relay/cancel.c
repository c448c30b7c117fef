/*
 * cancel.c — rate-limit and forward clients' CancelRequests (see cancel.h).
 *
 * The limiter is a fixed table allocated once: entries[sources], hash buckets chained by
 * index, and an LRU list through the same entries. Lookups hash the source with a per-table
 * random seed, so that nobody can aim many sources at one chain. Tokens are counted in
 * thousandths so that refilling at `rate` per second needs no floating point.
 *
 * A session's watch (keytab_entry, first member) sits in r->cancel_keys from its
 * BackendKeyData until the session ends.
 */
#include "relay/cancel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <uv.h>

#include "common/cidr.h"
#include "common/keytab.h"
#include "common/log.h"
#include "common/tunnel.h"
#include "common/pgwire.h"
#include "relay/admit.h"
#include "relay/relay.h"
#include "relay/tunnels.h"

#define NONE UINT32_MAX
#define MILLI 1000u

struct limiter_entry {
    uint8_t src[16];
    uint64_t mtokens; /* thousandths of a token */
    uint64_t refill_ms;
    uint32_t hnext;      /* bucket chain */
    uint32_t prev, next; /* LRU: head = most recently seen */
};

struct relay_cancel_limiter {
    size_t cap, n;
    uint32_t nbuckets; /* a power of 2 */
    uint32_t rate, burst;
    unsigned v4_prefix, v6_prefix; /* bits of an address that make a source */
    uint32_t lru_head, lru_tail;
    uint64_t seed;
    uint32_t *buckets;
    struct limiter_entry *e;
};

struct relay_cancel_limiter *relay_cancel_limiter_new(size_t sources, uint32_t rate, uint32_t burst)
{
    struct relay_cancel_limiter *l = calloc(1, sizeof(*l));
    if (!l || sources == 0 || sources >= NONE)
        goto fail;
    l->cap = sources;
    l->nbuckets = 1;
    while (l->nbuckets < sources)
        l->nbuckets *= 2;
    l->buckets = malloc(l->nbuckets * sizeof(*l->buckets));
    l->e = calloc(sources, sizeof(*l->e));
    if (!l->buckets || !l->e)
        goto fail;
    for (uint32_t i = 0; i < l->nbuckets; i++)
        l->buckets[i] = NONE;
    l->lru_head = l->lru_tail = NONE;
    l->rate = rate;
    l->burst = burst;
    l->v4_prefix = 32;
    l->v6_prefix = 64;
    if (RAND_bytes((unsigned char *)&l->seed, sizeof(l->seed)) != 1)
        l->seed = uv_hrtime();
    return l;
fail:
    relay_cancel_limiter_free(l);
    return NULL;
}

void relay_cancel_limiter_free(struct relay_cancel_limiter *l)
{
    if (!l)
        return;
    free(l->buckets);
    free(l->e);
    free(l);
}

size_t relay_cancel_limiter_size(const struct relay_cancel_limiter *l)
{
    return l->n;
}

void relay_cancel_limiter_set_prefix(struct relay_cancel_limiter *l, unsigned v4_prefix,
                                     unsigned v6_prefix)
{
    l->v4_prefix = v4_prefix <= 32 ? v4_prefix : 32;
    l->v6_prefix = v6_prefix <= 64 ? v6_prefix : 64;
}

static uint32_t source_bucket(const struct relay_cancel_limiter *l, const uint8_t src[16])
{
    uint64_t h = 14695981039346656037ull ^ l->seed; /* FNV-1a 64, keyed by the seed */
    for (int i = 0; i < 16; i++) {
        h ^= src[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32)) & (l->nbuckets - 1);
}

static void lru_unlink(struct relay_cancel_limiter *l, uint32_t i)
{
    struct limiter_entry *e = &l->e[i];
    if (e->prev != NONE)
        l->e[e->prev].next = e->next;
    else
        l->lru_head = e->next;
    if (e->next != NONE)
        l->e[e->next].prev = e->prev;
    else
        l->lru_tail = e->prev;
}

static void lru_push_head(struct relay_cancel_limiter *l, uint32_t i)
{
    struct limiter_entry *e = &l->e[i];
    e->prev = NONE;
    e->next = l->lru_head;
    if (l->lru_head != NONE)
        l->e[l->lru_head].prev = i;
    l->lru_head = i;
    if (l->lru_tail == NONE)
        l->lru_tail = i;
}

static void bucket_unlink(struct relay_cancel_limiter *l, uint32_t i)
{
    for (uint32_t *p = &l->buckets[source_bucket(l, l->e[i].src)]; *p != NONE;
         p = &l->e[*p].hnext) {
        if (*p == i) {
            *p = l->e[i].hnext;
            return;
        }
    }
}

/* The entry of src, creating it (full bucket) or recycling the least recently seen one. */
static struct limiter_entry *limiter_entry(struct relay_cancel_limiter *l, const uint8_t src[16],
                                           uint64_t now_ms)
{
    uint32_t b = source_bucket(l, src), i;

    for (i = l->buckets[b]; i != NONE; i = l->e[i].hnext) {
        if (memcmp(l->e[i].src, src, 16) == 0) {
            lru_unlink(l, i);
            lru_push_head(l, i);
            return &l->e[i];
        }
    }
    if (l->n < l->cap) {
        i = (uint32_t)l->n++;
    } else {
        i = l->lru_tail;
        lru_unlink(l, i);
        bucket_unlink(l, i);
    }
    struct limiter_entry *e = &l->e[i];
    memset(e, 0, sizeof(*e));
    memcpy(e->src, src, 16);
    e->mtokens = (uint64_t)l->burst * MILLI;
    e->refill_ms = now_ms;
    e->hnext = l->buckets[b];
    l->buckets[b] = i;
    lru_push_head(l, i);
    return e;
}

bool relay_cancel_limiter_take(struct relay_cancel_limiter *l, const char *peer, uint64_t now_ms)
{
    uint8_t src[16];
    cidr_source_key(peer, l->v4_prefix, l->v6_prefix, src);
    struct limiter_entry *e = limiter_entry(l, src, now_ms);
    uint64_t full = (uint64_t)l->burst * MILLI;

    if (now_ms > e->refill_ms) {
        /* rate tokens per second = rate milli-tokens per millisecond */
        uint64_t add = (now_ms - e->refill_ms) * l->rate;
        e->mtokens = add >= full - e->mtokens ? full : e->mtokens + add;
        e->refill_ms = now_ms;
    }
    if (e->mtokens < MILLI)
        return false;
    e->mtokens -= MILLI;
    return true;
}

bool relay_cancel_len_ok(uint32_t len)
{
    return len >= RELAY_CANCEL_PKT_MIN && len <= RELAY_CANCEL_PKT_MAX;
}

/* ---- session keys ---------------------------------------------------------------------- */

struct relay_cancel_watch {
    struct keytab_entry e; /* first: r->cancel_keys' entries are relay_cancel_watches */
    struct tunnel_stream *s;
    char sid[24];
    char agent[PROTO_NAME_MAX];
};

struct relay_cancel_watch *relay_cancel_watch_new(struct relay *r, struct tunnel_stream *s,
                                                  const char *sid, const char *agent)
{
    struct relay_cancel_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    keytab_entry_init(&w->e, &r->cancel_keys);
    w->s = s;
    snprintf(w->sid, sizeof(w->sid), "%s", sid);
    snprintf(w->agent, sizeof(w->agent), "%s", agent);
    return w;
}

void relay_cancel_watch_follow(struct relay_cancel_watch *w, const struct pgwire_bescan *scan,
                               unsigned ev)
{
    keytab_entry_follow(&w->e, scan, ev);
}

void relay_cancel_watch_free(struct relay_cancel_watch *w)
{
    if (!w)
        return;
    keytab_entry_fini(&w->e);
    free(w);
}

/* ---- forwarding ------------------------------------------------------------------------ */

struct forward {
    const uint8_t *frame;
    size_t frame_len;
    unsigned nsent;
};

static void forward_to(void *ctx, struct tunnel *t, const char *agent)
{
    struct forward *f = ctx;
    (void)agent;
    if (tunnel_send(t, f->frame, f->frame_len) == 0)
        f->nsent++;
}

/* The three budgets a cancel must fit: its source, its network, the relay (cancel.h). */
static bool cancel_admitted(struct relay *r, const char *peer)
{
    char more[64];

    if (!r->cancel_limiter) {
        r->cancel_limiter =
            relay_cancel_limiter_new(RELAY_CANCEL_SOURCES, RELAY_CANCEL_RATE, RELAY_CANCEL_BURST);
        r->cancel_net = relay_cancel_limiter_new(RELAY_CANCEL_SOURCES, RELAY_CANCEL_NET_RATE,
                                                 RELAY_CANCEL_NET_BURST);
        r->cancel_global =
            relay_cancel_limiter_new(1, RELAY_CANCEL_GLOBAL_RATE, RELAY_CANCEL_GLOBAL_BURST);
        if (!r->cancel_limiter || !r->cancel_net || !r->cancel_global) {
            relay_cancel_limiter_free(r->cancel_limiter);
            relay_cancel_limiter_free(r->cancel_net);
            relay_cancel_limiter_free(r->cancel_global);
            r->cancel_limiter = r->cancel_net = r->cancel_global = NULL;
            log_warn("cancel dropped reason=out of memory client=%s", peer);
            return false;
        }
        relay_cancel_limiter_set_prefix(r->cancel_net, 24, 48);
    }
    const struct {
        struct relay_cancel_limiter *l;
        const char *key; /* NULL: the peer */
        const char *reason;
        uint32_t rate, burst;
    } levels[] = {
        {r->cancel_limiter, NULL, "rate limited", RELAY_CANCEL_RATE, RELAY_CANCEL_BURST},
        /* one network (many addresses of one party) cannot take the relay-wide budget alone */
        {r->cancel_net, NULL, "rate limited for the network (IPv4 /24, IPv6 /48)",
         RELAY_CANCEL_NET_RATE, RELAY_CANCEL_NET_BURST},
        {r->cancel_global, "0.0.0.0:0", "relay-wide rate limit", RELAY_CANCEL_GLOBAL_RATE,
         RELAY_CANCEL_GLOBAL_BURST},
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (relay_cancel_limiter_take(levels[i].l, levels[i].key ? levels[i].key : peer,
                                      uv_now(r->loop)))
            continue;
        if (relay_admit_log_ok(r, peer, PREAUTH_CANCEL, more, sizeof(more)))
            log_warn("cancel dropped reason=%s client=%s limit=%u/s burst=%u%s", levels[i].reason,
                     peer, levels[i].rate, levels[i].burst, more);
        return false;
    }
    return true;
}

void relay_cancel_request(struct relay *r, const char *peer, const uint8_t *pkt, size_t len)
{
    struct proto_cancel c;
    uint8_t frame[PROTO_HDR_SIZE + 32 + PROTO_CANCEL_KEY_MAX];

    if (!cancel_admitted(r, peer)) {
        r->stats.cancel_dropped++;
        return;
    }
    if (len < RELAY_CANCEL_PKT_MIN || len > RELAY_CANCEL_PKT_MAX ||
        pgwire_packet_len(pkt, len) != len) {
        log_info("cancel dropped reason=invalid length %zu client=%s", len, peer);
        r->stats.cancel_dropped++;
        return;
    }
    memset(&c, 0, sizeof(c));
    c.pid = pgwire_packet_len(pkt + 8, 4);
    c.key_len = (uint32_t)(len - 12);
    memcpy(c.key, pkt + 12, c.key_len);
    const struct relay_cancel_watch *w =
        (const struct relay_cancel_watch *)keytab_find(&r->cancel_keys, c.pid, c.key, c.key_len);
    int n = proto_encode_cancel(frame, sizeof(frame), &c);
    OPENSSL_cleanse(&c, sizeof(c));
    if (n < 0) {
        log_warn("cancel dropped reason=%s client=%s", proto_strerror(n), peer);
        r->stats.cancel_dropped++;
        return;
    }
    struct forward f = {.frame = frame, .frame_len = (size_t)n};
    struct tunnel *t = w ? tunnel_stream_tunnel(w->s) : NULL;
    if (t) {
        /* a session of this relay: its own tunnel, and no other agent learns of it */
        forward_to(&f, t, w->agent);
        OPENSSL_cleanse(frame, sizeof(frame));
        if (f.nsent == 0) {
            r->stats.cancel_dropped++;
            log_info("cancel dropped reason=the session's tunnel is closing client=%s", peer);
        } else {
            r->stats.cancel_forwarded++;
            log_msg(LOG_INFO, tunnel_id(t), tunnel_stream_id(w->s),
                    "cancel forwarded sid=%s agent=%s client=%s", w->sid, w->agent, peer);
        }
        return;
    }
    /* a session of another relay (or none): every agent checks, only its owner acts */
    relay_foreach_agent_tunnel(r, forward_to, &f);
    OPENSSL_cleanse(frame, sizeof(frame));
    if (f.nsent == 0) {
        log_info("cancel dropped reason=not a session of this relay, and no agent connected "
                 "client=%s",
                 peer);
        r->stats.cancel_dropped++;
        return;
    }
    r->stats.cancel_forwarded++;
    log_info("cancel forwarded to=every agent (not a session of this relay) tunnels=%u client=%s",
             f.nsent, peer);
}
