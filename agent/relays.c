/*
 * relays.c — relay entries: resolving relay names into one link per address (see relays.h).
 *
 * Each entry of a name runs:
 *
 *   RESOLVE --addresses--> diff against the links it holds: add new, retire gone --+
 *      ^                                                                           |
 *      +---- resolve_interval (or ~1 s after one of its links failed) ------------+
 *      +---- failure: backoff with jitter; the links it holds are kept -----------+
 *
 * A failed resolution never closes a tunnel: DNS hiccups must not cut running sessions. Only an
 * answer that no longer lists an address retires that address's link.
 */
#include "agent/relays.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/agent.h"
#include "agent/links.h"
#include "common/log.h"

/* Links that fail make their name be resolved again, but not more often than this. */
#define RERESOLVE_MIN_MS 1000

struct agent_relay {
    struct agent *a;
    struct agent_relay *next;     /* a->relays */
    struct agent_relay_addr addr; /* as configured (a copy: a reload replaces the config) */
    char label[300];              /* host:port for logs */
    bool literal;                 /* an IP literal: one link, nothing to resolve */
    bool removed;                 /* a reload dropped it: freed once its handles are done */
    bool gai_busy;
    bool timer_closed;
    bool resolved;    /* had an answer once (logs) */
    uv_timer_t timer; /* next resolution */
    uv_getaddrinfo_t gai;
    uint64_t last_resolve_ms;
    uint32_t attempt; /* failed resolutions in a row */
    size_t n;         /* links held: the literal's one, or one per address */
    char ips[AGENT_RELAY_MAX_ADDRS][AGENT_ADDR_STRLEN];
    struct agent_link *links[AGENT_RELAY_MAX_ADDRS];
};

static void relay_resolve(struct agent_relay *r);

/* ---- pure helpers -------------------------------------------------------------------- */

static int addr_cmp(const void *x, const void *y)
{
    return strcmp(x, y);
}

size_t agent_addrs_from_addrinfo(const struct addrinfo *res, char (*out)[AGENT_ADDR_STRLEN],
                                 size_t cap, bool *truncated)
{
    size_t n = 0;
    *truncated = false;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[AGENT_ADDR_STRLEN];
        const void *src;
        if (ai->ai_family == AF_INET && ai->ai_addr)
            src = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6 && ai->ai_addr)
            src = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (!inet_ntop(ai->ai_family, src, ip, sizeof(ip)))
            continue;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(out[i], ip) == 0;
        if (dup)
            continue;
        if (n == cap) {
            *truncated = true;
            continue;
        }
        memcpy(out[n++], ip, sizeof(ip));
    }
    qsort(out, n, sizeof(*out), addr_cmp);
    return n;
}

void agent_addrs_diff(const char (*cur)[AGENT_ADDR_STRLEN], size_t ncur,
                      const char (*next)[AGENT_ADDR_STRLEN], size_t nnext, bool *cur_kept,
                      bool *next_new)
{
    for (size_t i = 0; i < ncur; i++)
        cur_kept[i] = false;
    for (size_t j = 0; j < nnext; j++) {
        next_new[j] = true;
        for (size_t i = 0; i < ncur; i++) {
            if (strcmp(cur[i], next[j]) == 0) {
                cur_kept[i] = true;
                next_new[j] = false;
            }
        }
    }
}

void agent_addrs_join(const char (*addrs)[AGENT_ADDR_STRLEN], size_t n, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < n && len < cap; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", addrs[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

/* ---- entries ------------------------------------------------------------------------- */

static void relay_maybe_free(struct agent_relay *r)
{
    struct agent *a = r->a;
    if (!r->removed || !r->timer_closed || r->gai_busy)
        return;
    for (struct agent_relay **p = &a->relays; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    free(r);
}

static void relay_timer_closed(uv_handle_t *h)
{
    struct agent_relay *r = h->data;
    r->timer_closed = true;
    relay_maybe_free(r);
}

static void relay_timer_fired(uv_timer_t *timer)
{
    relay_resolve(timer->data);
}

static void relay_link_failed(struct agent_relay *r);

/* Retire the links to addresses the name no longer has; dial the new ones. */
static void relay_apply(struct agent_relay *r, char (*next)[AGENT_ADDR_STRLEN], size_t nnext)
{
    struct agent *a = r->a;
    bool kept[AGENT_RELAY_MAX_ADDRS], fresh[AGENT_RELAY_MAX_ADDRS];
    size_t n = 0;

    agent_addrs_diff((const char(*)[AGENT_ADDR_STRLEN])r->ips, r->n,
                     (const char(*)[AGENT_ADDR_STRLEN])next, nnext, kept, fresh);
    for (size_t i = 0; i < r->n; i++) {
        if (kept[i]) {
            if (n != i) {
                memcpy(r->ips[n], r->ips[i], sizeof(r->ips[n]));
                r->links[n] = r->links[i];
            }
            n++;
            continue;
        }
        char why[400];
        snprintf(why, sizeof(why), "address no longer listed for %s", r->addr.host);
        agent_link_retire(r->links[i], why);
    }
    r->n = n;
    for (size_t j = 0; j < nnext && r->n < AGENT_RELAY_MAX_ADDRS; j++) {
        struct agent_relay_addr addr = {.port = r->addr.port};
        char label[300];
        if (!fresh[j])
            continue;
        snprintf(addr.host, sizeof(addr.host), "%s", next[j]);
        snprintf(label, sizeof(label), "%s addr=%s", r->label, next[j]);
        struct agent_link *l = agent_link_add(a, &addr, r->addr.host, label, relay_link_failed, r);
        if (!l)
            continue; /* logged; the next resolution tries again */
        memcpy(r->ips[r->n], next[j], sizeof(r->ips[r->n]));
        r->links[r->n++] = l;
    }
}

static void relay_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct agent_relay *r = req->data;
    struct agent *a = r->a;
    char next[AGENT_RELAY_MAX_ADDRS][AGENT_ADDR_STRLEN];
    size_t nnext = 0;
    bool truncated = false;

    r->gai_busy = false;
    if (status == 0)
        nnext = agent_addrs_from_addrinfo(res, next, AGENT_RELAY_MAX_ADDRS, &truncated);
    uv_freeaddrinfo(res);
    if (r->removed) {
        relay_maybe_free(r);
        return;
    }
    if (a->stopping || a->draining)
        return;
    if (status == 0 && nnext == 0)
        status = UV_EAI_NODATA;
    if (status < 0) {
        uint64_t cap = a->cfg.reconnect_max_ms;
        if (r->n && cap > a->cfg.resolve_interval_ms)
            cap = a->cfg.resolve_interval_ms;
        uint64_t delay = agent_backoff_ms(a->cfg.reconnect_min_ms, cap, r->attempt,
                                          uv_hrtime() * 0x9E3779B97F4A7C15ULL);
        if (r->attempt < 63)
            r->attempt++;
        if (r->n)
            log_warn("cannot resolve %s: %s; keeping the %zu tunnel(s) to its last known "
                     "address(es); retry_in_ms=%llu",
                     r->addr.host, uv_strerror(status), r->n, (unsigned long long)delay);
        else
            log_warn("tunnel failed relay=%s reason=cannot resolve %s: %s retry_in_ms=%llu",
                     r->label, r->addr.host, uv_strerror(status), (unsigned long long)delay);
        uv_timer_start(&r->timer, relay_timer_fired, delay, 0);
        return;
    }
    r->attempt = 0;
    bool changed = !r->resolved || nnext != r->n;
    for (size_t i = 0; i < nnext && !changed; i++)
        changed = strcmp(next[i], r->ips[i]) != 0; /* both sorted */
    if (changed) {
        char list[1024];
        agent_addrs_join((const char(*)[AGENT_ADDR_STRLEN])next, nnext, list, sizeof(list));
        log_info("relay addresses for %s: %s%s", r->addr.host, list,
                 truncated ? " (more ignored: at most 64 per name)" : "");
    }
    r->resolved = true;
    relay_apply(r, next, nnext);
    uv_timer_start(&r->timer, relay_timer_fired, a->cfg.resolve_interval_ms, 0);
}

static void relay_resolve(struct agent_relay *r)
{
    struct agent *a = r->a;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[8];

    if (r->literal || r->removed || r->gai_busy || a->stopping || a->draining)
        return;
    snprintf(port, sizeof(port), "%u", r->addr.port);
    r->gai.data = r;
    r->gai_busy = true;
    r->last_resolve_ms = uv_now(a->loop);
    int rc = uv_getaddrinfo(a->loop, &r->gai, relay_on_resolved, r->addr.host, port, &hints);
    if (rc < 0) {
        r->gai_busy = true; /* relay_on_resolved clears it */
        relay_on_resolved(&r->gai, rc, NULL);
    }
}

/* A link of this entry failed: resolve the name again soon (rate-limited), in case the relay
 * moved to another address (agent_link_failed_fn). NULL-tolerant. */
static void relay_link_failed(struct agent_relay *r)
{
    if (!r || r->literal || r->removed || r->gai_busy || r->a->stopping || r->a->draining)
        return;
    uint64_t now = uv_now(r->a->loop), wait = 0;
    if (now < r->last_resolve_ms + RERESOLVE_MIN_MS)
        wait = r->last_resolve_ms + RERESOLVE_MIN_MS - now;
    if (uv_timer_get_due_in(&r->timer) > wait || !uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, relay_timer_fired, wait, 0);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static struct agent_relay *relay_new(struct agent *a, const struct agent_relay_addr *addr)
{
    struct agent_relay *r = calloc(1, sizeof(*r));
    if (!r) {
        log_error("out of memory: no tunnel to relay %s:%u", addr->host, addr->port);
        return NULL;
    }
    r->a = a;
    r->addr = *addr;
    r->literal = is_ip_literal(addr->host);
    if (strchr(addr->host, ':'))
        snprintf(r->label, sizeof(r->label), "[%s]:%u", addr->host, addr->port);
    else
        snprintf(r->label, sizeof(r->label), "%s:%u", addr->host, addr->port);
    if (r->literal) {
        r->links[0] = agent_link_add(a, addr, addr->host, r->label, relay_link_failed, r);
        if (!r->links[0]) {
            free(r);
            return NULL;
        }
        memcpy(r->ips[0], addr->host, strlen(addr->host) + 1);
        r->n = 1;
    }
    uv_timer_init(a->loop, &r->timer);
    r->timer.data = r;
    r->next = a->relays;
    a->relays = r;
    relay_resolve(r);
    return r;
}

/* A reload dropped the entry: retire its links, stop resolving, free once idle. */
static void relay_retire(struct agent_relay *r)
{
    r->removed = true;
    for (size_t i = 0; i < r->n; i++)
        agent_link_retire(r->links[i], "relay removed from the configuration");
    r->n = 0;
    if (r->gai_busy)
        uv_cancel((uv_req_t *)&r->gai); /* relay_on_resolved still runs, then frees */
    if (!uv_is_closing((uv_handle_t *)&r->timer))
        uv_close((uv_handle_t *)&r->timer, relay_timer_closed);
}

static bool same_addr(const struct agent_relay_addr *x, const struct agent_relay_addr *y)
{
    return x->port == y->port && strcmp(x->host, y->host) == 0;
}

void agent_relays_foreach_up(const struct agent *a, agent_relay_up_fn fn, void *ctx)
{
    for (const struct agent_relay *r = a->relays; r; r = r->next) {
        uint32_t up = 0;
        if (r->removed)
            continue;
        for (size_t i = 0; i < r->n; i++)
            up += agent_link_is_up(r->links[i]);
        fn(ctx, r->label, up);
    }
}

int agent_relays_sync(struct agent *a, bool initial)
{
    int rc = 0;
    if (a->stopping)
        return 0;
    for (struct agent_relay *r = a->relays; r; r = r->next) {
        bool kept = false;
        if (r->removed)
            continue;
        for (size_t i = 0; i < a->cfg.nrelays && !kept; i++)
            kept = same_addr(&a->cfg.relays[i], &r->addr);
        if (!kept)
            relay_retire(r);
    }
    for (size_t i = 0; i < a->cfg.nrelays; i++) {
        const struct agent_relay_addr *addr = &a->cfg.relays[i];
        bool have = false;
        for (struct agent_relay *r = a->relays; r && !have; r = r->next)
            have = !r->removed && same_addr(&r->addr, addr);
        if (have)
            continue;
        if (!relay_new(a, addr))
            rc = -ENOMEM;
        else if (!initial)
            log_info("relay added relay=%s:%u: dialing", addr->host, addr->port);
    }
    return rc;
}

void agent_relays_update(struct agent *a)
{
    agent_relays_sync(a, false);
}

void agent_relays_stop(struct agent *a)
{
    for (struct agent_relay *r = a->relays; r; r = r->next) {
        if (r->gai_busy)
            uv_cancel((uv_req_t *)&r->gai);
        if (!uv_is_closing((uv_handle_t *)&r->timer))
            uv_close((uv_handle_t *)&r->timer, NULL);
    }
}

void agent_relays_free(struct agent *a)
{
    while (a->relays) {
        struct agent_relay *r = a->relays;
        a->relays = r->next;
        free(r);
    }
}
