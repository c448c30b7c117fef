/*
 * links.c — one tunnel to one relay address, dialed and kept up (see links.h).
 *
 *   WAIT --timer--> RESOLVE --> CONNECT --TCP--> TLS --handshake--> HELLO sent --WELCOME--> UP
 *     ^                                                                                   |
 *     +---------- failure anywhere (logged, backoff with full jitter, never gives up) -----+
 *
 * connect_timeout bounds RESOLVE..WELCOME; once UP, keepalive (tunnel.c) detects a dead relay.
 * Each OPEN the relay sends becomes a session (session.h).
 */
#include "agent/links.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/cancel_key.h"
#include "agent/session.h"
#include "common/log.h"
#include "common/sqlstate.h"
#include "common/tls.h"

/* A tunnel drained sooner than this after its WELCOME is replaced after a backoff delay. */
#define LINK_REPLACE_MIN_UP_MS 1000

enum link_state { LINK_WAIT, LINK_RESOLVE, LINK_CONNECT, LINK_HANDSHAKE, LINK_UP };

struct agent_link {
    struct agent *a;
    struct agent_link *next;      /* a->links */
    struct agent_relay_addr addr; /* a copy: a reload replaces the configuration */
    bool removed;  /* retired (a reload dropped the address, or replaced): draining, then freed */
    bool replaced; /* removed: a replacement took over its address (link_replace) */
    bool timer_closed;
    struct agent_relay *owner;   /* the configured entry it serves (relays.c); NULL once retired */
    agent_link_failed_fn failed; /* tells owner that this link failed */
    char server_name[256];       /* checked in the relay certificate: the configured host */
    char retire_why[128];
    char label[300]; /* host:port for logs */
    enum link_state state;
    uv_timer_t timer; /* backoff wait, then connect timeout */
    uv_getaddrinfo_t gai;
    bool gai_busy;
    struct conn *pending; /* TCP connect in progress (before the tunnel owns it) */
    struct tunnel *t;
    uint32_t attempt;
    uint64_t up_at; /* uv_now at WELCOME */
    bool duplicate; /* the relay refused this tunnel: it already has a live one from us */
    char routes[PROTO_MAX_ROUTES * PROTO_NAME_MAX];
};

static void link_schedule(struct agent_link *l, const char *why);
static void link_dial(struct agent_link *l);
static void link_maybe_free(struct agent_link *l);
static void link_timer_closed(uv_handle_t *h);
static void link_timer_fired(uv_timer_t *timer);

uint64_t agent_backoff_ms(uint64_t base_ms, uint64_t cap_ms, uint32_t attempt, uint64_t rnd)
{
    uint64_t ceiling = base_ms;
    for (uint32_t i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return ceiling ? rnd % (ceiling + 1) : 0;
}

static uint64_t agent_rand(struct agent *a)
{
    /* xorshift64*: jitter only, not security */
    uint64_t x = a->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    a->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int link_on_open(struct tunnel *t, uint32_t id, const struct proto_open *m)
{
    struct agent_link *l = tunnel_data(t);
    return agent_session_start(l->a, t, id, m);
}

static void link_on_up(struct tunnel *t)
{
    struct agent_link *l = tunnel_data(t);
    struct agent *a = l->a;
    struct proto_hello h;
    uint8_t buf[PROTO_HDR_SIZE + PROTO_MAX_CONTROL];
    char alpn[32];

    if (!conn_tls_alpn(tunnel_conn(t), alpn, sizeof(alpn)) || strcmp(alpn, PROTO_ALPN) != 0) {
        tunnel_close(t, "relay did not select ALPN " PROTO_ALPN);
        return;
    }
    memset(&h, 0, sizeof(h));
    h.ver_major = PROTO_VERSION_MAJOR;
    h.ver_minor = PROTO_VERSION_MINOR;
    snprintf(h.software, sizeof(h.software), "pgburrow-agent %s", PGB_VERSION);
    for (size_t i = 0; i < a->cfg.nroutes && i < PROTO_MAX_ROUTES; i++)
        snprintf(h.routes[h.nroutes++], PROTO_NAME_MAX, "%s", a->cfg.routes[i].name);
    int n = proto_encode_hello(buf, sizeof(buf), &h);
    if (n < 0 || tunnel_send(t, buf, (size_t)n) < 0)
        tunnel_close(t, "could not send HELLO");
}

/*
 * The relay sent a drain GOAWAY (it is shutting down, or an operator ran DRAIN AGENT, or the
 * tunnel's stream ids ran out): the tunnel takes no new sessions. Its running sessions stay on
 * it under a retired twin link, which closes it once they have ended, and this link dials a
 * replacement at once (PROTOCOL.md section 9) so that the route stays served: by the same relay
 * (it does not count a tunnel it drains against max_tunnels_per_agent), or by another one behind
 * the same name when this one is going away. Without memory for the twin, the tunnel stays on
 * this link and is dialed again once the relay has closed it, as before.
 */
static void link_replace(struct agent_link *l, const char *why)
{
    struct agent *a = l->a;
    struct agent_link *twin;

    if (l->removed || a->stopping || a->draining || l->state != LINK_UP || !l->t)
        return;
    twin = calloc(1, sizeof(*twin));
    if (!twin) {
        log_error("out of memory: no replacement tunnel to relay %s until this one closes",
                  l->label);
        return;
    }
    twin->a = a;
    twin->addr = l->addr;
    twin->removed = true;
    twin->replaced = true;
    twin->state = LINK_UP;
    twin->t = l->t;
    memcpy(twin->server_name, l->server_name, sizeof(twin->server_name));
    memcpy(twin->label, l->label, sizeof(twin->label));
    memcpy(twin->routes, l->routes, sizeof(twin->routes));
    snprintf(twin->retire_why, sizeof(twin->retire_why), "%s", why);
    tunnel_set_data(twin->t, twin);
    uv_timer_init(a->loop, &twin->timer);
    twin->timer.data = twin;
    twin->next = a->links;
    a->links = twin;
    uv_timer_start(&twin->timer, link_timer_fired, 250, 250);
    log_info("tunnel draining relay=%s sessions=%u (%s); dialing a replacement", l->label,
             tunnel_nstreams(twin->t), why);
    l->t = NULL;
    uv_timer_stop(&l->timer);
    if (uv_now(a->loop) - l->up_at < LINK_REPLACE_MIN_UP_MS) {
        /* a relay that drains each tunnel as soon as it is up gets the usual backoff, as one
         * that closes it, not a dial loop */
        link_schedule(l, "relay sent GOAWAY right after WELCOME");
        return;
    }
    l->state = LINK_WAIT;
    link_dial(l);
}

static int link_on_control(struct tunnel *t, const struct proto_hdr *hdr, const uint8_t *body)
{
    struct agent_link *l = tunnel_data(t);
    struct proto_welcome w;
    struct proto_goaway g;
    int rc;

    if (hdr->type == PROTO_WELCOME && l->state == LINK_HANDSHAKE) {
        if ((rc = proto_decode_welcome(body, hdr->length, &w)) < 0)
            return tunnel_fail_decode(t, "WELCOME", rc);
        if (w.ver_major != PROTO_VERSION_MAJOR) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "bad WELCOME");
            return -EPROTO;
        }
        l->routes[0] = '\0';
        for (uint32_t i = 0; i < w.naccepted; i++) {
            if (i)
                strcat(l->routes, ",");
            strcat(l->routes, w.accepted[i]);
        }
        for (uint32_t i = 0; i < w.nrefused; i++)
            log_msg(LOG_WARN, tunnel_id(t), 0,
                    "relay %s refused route %s: this agent's certificate is not allowed to "
                    "serve it",
                    l->label, w.refused[i]);
        if (w.initial_window > l->a->cfg.max_stream_window) {
            /* the window is what this agent may have to queue per session toward PostgreSQL */
            log_msg(LOG_ERROR, tunnel_id(t), 0,
                    "relay %s offers a stream window of %u bytes, above this agent's "
                    "max_stream_window (%llu): refused",
                    l->label, w.initial_window, (unsigned long long)l->a->cfg.max_stream_window);
            tunnel_fail(t, SQLSTATE_CONFIGURATION_LIMIT_EXCEEDED,
                        "stream window %u above the agent's max_stream_window %llu",
                        w.initial_window, (unsigned long long)l->a->cfg.max_stream_window);
            return -EPROTO;
        }
        l->state = LINK_UP;
        l->up_at = uv_now(l->a->loop);
        l->attempt = 0;
        uv_timer_stop(&l->timer);
        if (tunnel_set_initial_window(t, w.initial_window) < 0) {
            tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "WELCOME window %u out of range",
                        w.initial_window);
            return -EPROTO;
        }
        tunnel_start_keepalive(t);
        log_msg(LOG_INFO, tunnel_id(t), 0, "tunnel up relay=%s routes=%s relay_name=%s window=%u",
                l->label, l->routes, w.relay_id, w.initial_window);
        return 0;
    }
    if (hdr->type == PROTO_CANCEL && l->state == LINK_UP)
        return cancel_key_on_frame(l->a->cancel_keys, t, body, hdr->length);
    if (hdr->type == PROTO_GOAWAY) {
        if ((rc = proto_decode_goaway(body, hdr->length, &g)) < 0)
            return tunnel_fail_decode(t, "GOAWAY", rc);
        /* a duplicate tunnel (reached over another address of the same name, e.g. IPv4 and
         * IPv6) is not an error to shout about */
        l->duplicate = sqlstate_goaway_is_duplicate_tunnel(g.code);
        log_msg(sqlstate_goaway_is_drain(g.code) || l->duplicate ? LOG_INFO : LOG_ERROR,
                tunnel_id(t), 0, "relay %s sent GOAWAY code=%s: %s", l->label, g.code, g.message);
        if (sqlstate_goaway_is_drain(g.code))
            link_replace(l, "relay sent GOAWAY");
        return 0;
    }
    tunnel_fail(t, SQLSTATE_PROTOCOL_VIOLATION, "unexpected %s", proto_type_name(hdr->type));
    return -EPROTO;
}

static void link_on_tunnel_done(struct tunnel *t, const char *reason)
{
    struct agent_link *l = tunnel_data(t);
    l->t = NULL;
    if (l->removed) {
        log_info("tunnel closed relay=%s reason=%s (%s%s)", l->label, reason, l->retire_why,
                 l->replaced ? ", replaced" : ": not dialed again");
        if (!uv_is_closing((uv_handle_t *)&l->timer))
            uv_close((uv_handle_t *)&l->timer, link_timer_closed);
        return;
    }
    if (l->a->stopping)
        return;
    link_schedule(l, reason);
}

static const struct tunnel_ops link_tunnel_ops = {
    .on_control = link_on_control,
    .on_open = link_on_open,
    .on_up = link_on_up,
    .on_tunnel_done = link_on_tunnel_done,
};

static void link_conn_on_connect(struct conn *c, int status);
static void link_conn_on_error(struct conn *c, int err, const char *reason);
static void link_conn_on_close(struct conn *c);
static const struct conn_ops link_conn_ops = {
    .on_connect = link_conn_on_connect,
    .on_error = link_conn_on_error,
    .on_close = link_conn_on_close,
};

static void link_conn_on_connect(struct conn *c, int status)
{
    struct agent_link *l = conn_data(c);
    if (!l) { /* its link was removed meanwhile */
        conn_close(c);
        return;
    }
    struct agent *a = l->a;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        l->pending = NULL;
        conn_close(c);
        link_schedule(l, why);
        return;
    }
    l->pending = NULL;
    struct tunnel_limits lim = {
        .ping_interval_ms = (uint32_t)a->cfg.ping_interval_ms,
        .dead_timeout_ms = (uint32_t)a->cfg.dead_timeout_ms,
        .max_streams = (uint32_t)a->cfg.max_streams,
        .initial_window = PROTO_INITIAL_WINDOW,
    };
    l->state = LINK_HANDSHAKE;
    l->t = tunnel_new(a->loop, c, &link_tunnel_ops, &lim, ++a->next_tunnel_id, l);
    if (!l->t) {
        link_schedule(l, "out of memory");
        return;
    }
    const char *sni = a->cfg.relay_server_name ? a->cfg.relay_server_name : l->server_name;
    if (conn_tls_client(c, a->relay_ctx, sni) < 0 || conn_read_start(c) < 0)
        tunnel_close(l->t, "could not start TLS");
}

static void link_conn_on_error(struct conn *c, int err, const char *reason)
{
    struct agent_link *l = conn_data(c);
    char why[256];
    if (!l)
        return;
    snprintf(why, sizeof(why), "%s", reason ? reason : uv_strerror(err));
    if (l->pending == c) {
        l->pending = NULL;
        link_schedule(l, why);
    }
}

static void link_conn_on_close(struct conn *c)
{
    (void)c;
}

static void link_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct agent_link *l = req->data;
    struct agent *a = l->a;
    l->gai_busy = false;
    if (l->removed) {
        uv_freeaddrinfo(res);
        link_maybe_free(l);
        return;
    }
    if (a->stopping || l->state != LINK_RESOLVE) {
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", l->addr.host, uv_strerror(status));
        link_schedule(l, why);
        return;
    }
    l->state = LINK_CONNECT;
    l->pending = conn_new(a->cl, &link_conn_ops, l, false);
    int rc = l->pending ? conn_connect_tcp(l->pending, res->ai_addr) : -ENOMEM;
    uv_freeaddrinfo(res);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
        if (l->pending)
            conn_close(l->pending);
        l->pending = NULL;
        link_schedule(l, why);
    }
}

static void link_timer_fired(uv_timer_t *timer)
{
    struct agent_link *l = timer->data;
    if (l->removed) {
        /* draining: close once the relay's last session on this tunnel has ended */
        if (l->t && tunnel_nstreams(l->t) == 0)
            tunnel_close(l->t, l->retire_why);
        return;
    }
    if (l->state == LINK_WAIT) {
        link_dial(l);
        return;
    }
    /* connect_timeout while dialing */
    char why[96];
    snprintf(why, sizeof(why), "no WELCOME within %llu ms",
             (unsigned long long)l->a->cfg.connect_timeout_ms);
    if (l->t) {
        tunnel_close(l->t, why); /* link_on_tunnel_done reschedules */
    } else if (l->pending) {
        struct conn *c = l->pending;
        l->pending = NULL;
        conn_close(c);
        link_schedule(l, why);
    } else if (l->gai_busy) {
        uv_cancel((uv_req_t *)&l->gai);
        l->state = LINK_WAIT; /* the resolver callback sees the state and stops */
        link_schedule(l, why);
    }
}

static void link_dial(struct agent_link *l)
{
    struct agent *a = l->a;
    char port[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (a->stopping || a->draining)
        return;
    l->state = LINK_RESOLVE;
    uv_timer_start(&l->timer, link_timer_fired, a->cfg.connect_timeout_ms, 0);
    snprintf(port, sizeof(port), "%u", l->addr.port);
    l->gai.data = l;
    l->gai_busy = true;
    int rc = uv_getaddrinfo(a->loop, &l->gai, link_on_resolved, l->addr.host, port, &hints);
    if (rc < 0) {
        char why[160];
        l->gai_busy = false;
        snprintf(why, sizeof(why), "cannot resolve %s: %s", l->addr.host, uv_strerror(rc));
        link_schedule(l, why);
    }
}

static void link_schedule(struct agent_link *l, const char *why)
{
    struct agent *a = l->a;
    if (a->stopping || l->removed)
        return;
    uint64_t delay = agent_backoff_ms(a->cfg.reconnect_min_ms, a->cfg.reconnect_max_ms, l->attempt,
                                      agent_rand(a));
    if (l->attempt < 63)
        l->attempt++;
    if (l->duplicate) {
        /* Refused because this relay already has a live tunnel from us: the same relay behind
         * another address, or our previous tunnel not yet seen dead there (the relay replaces
         * one silent for two ping intervals). Retry on the usual backoff, quietly. */
        l->duplicate = false;
        log_info("tunnel not needed relay=%s reason=the relay already has a live tunnel from this "
                 "agent retry_in_ms=%llu",
                 l->label, (unsigned long long)delay);
    } else if (l->state == LINK_UP)
        log_warn("tunnel down relay=%s reason=%s retry_in_ms=%llu", l->label, why,
                 (unsigned long long)delay);
    else
        log_warn("tunnel failed relay=%s reason=%s retry_in_ms=%llu", l->label, why,
                 (unsigned long long)delay);
    l->state = LINK_WAIT;
    uv_timer_start(&l->timer, link_timer_fired, delay, 0);
    if (l->owner)
        l->failed(l->owner); /* a relay behind a name may have moved */
}

/* Free a removed link once nothing refers to it any more (timer, resolver, tunnel). */
static void link_maybe_free(struct agent_link *l)
{
    struct agent *a = l->a;
    if (!l->timer_closed || l->gai_busy || l->t)
        return;
    for (struct agent_link **p = &a->links; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    free(l);
}

static void link_timer_closed(uv_handle_t *h)
{
    struct agent_link *l = h->data;
    l->timer_closed = true;
    if (l->removed)
        link_maybe_free(l);
}

struct agent_link *agent_link_add(struct agent *a, const struct agent_relay_addr *addr,
                                  const char *server_name, const char *label,
                                  agent_link_failed_fn failed, struct agent_relay *owner)
{
    struct agent_link *l = calloc(1, sizeof(*l));
    if (!l) {
        log_error("out of memory: no tunnel to relay %s:%u", addr->host, addr->port);
        return NULL;
    }
    l->a = a;
    l->addr = *addr;
    l->owner = owner;
    l->failed = failed;
    snprintf(l->server_name, sizeof(l->server_name), "%s", server_name);
    snprintf(l->label, sizeof(l->label), "%s", label);
    uv_timer_init(a->loop, &l->timer);
    l->timer.data = l;
    l->next = a->links;
    a->links = l;
    link_dial(l);
    return l;
}

/*
 * A reload dropped the relay address, or DNS no longer lists it (links.c): the relay gets a
 * GOAWAY (no new sessions), the tunnel closes when the last of its sessions ends, and the link
 * is never dialed again.
 */
void agent_link_retire(struct agent_link *l, const char *why)
{
    l->removed = true;
    l->owner = NULL;
    snprintf(l->retire_why, sizeof(l->retire_why), "%s", why);
    uv_timer_stop(&l->timer);
    if (l->pending) {
        conn_set_data(l->pending, NULL); /* its callbacks must not find this link */
        conn_close(l->pending);
        l->pending = NULL;
    }
    if (l->gai_busy)
        uv_cancel((uv_req_t *)&l->gai); /* link_on_resolved still runs, then frees */
    if (!l->t) {
        uv_close((uv_handle_t *)&l->timer, link_timer_closed);
        return;
    }
    if (l->state != LINK_UP) {
        tunnel_close(l->t, why);
        return;
    }
    tunnel_goaway(l->t, why);
    log_info("tunnel draining relay=%s sessions=%u (%s)", l->label, tunnel_nstreams(l->t), why);
    uv_timer_start(&l->timer, link_timer_fired, 0, 250);
}

/* ---- every link ---------------------------------------------------------------------- */

bool agent_link_is_up(const struct agent_link *l)
{
    return l && l->state == LINK_UP && l->t;
}

uint64_t agent_links_up(const struct agent *a)
{
    uint64_t n = 0;
    for (const struct agent_link *l = a->links; l; l = l->next)
        n += agent_link_is_up(l);
    return n;
}

uint64_t agent_links_nsessions(const struct agent *a)
{
    uint64_t n = 0;
    for (const struct agent_link *l = a->links; l; l = l->next)
        if (l->t)
            n += tunnel_nstreams(l->t);
    return n;
}

void agent_links_goaway(struct agent *a, const char *why)
{
    for (struct agent_link *l = a->links; l; l = l->next)
        if (l->t)
            tunnel_goaway(l->t, why);
}

void agent_links_stop(struct agent *a)
{
    for (struct agent_link *l = a->links; l; l = l->next) {
        if (l->t)
            tunnel_close(l->t, "agent shutting down");
        if (l->pending)
            conn_close(l->pending);
        l->pending = NULL;
        if (l->gai_busy)
            uv_cancel((uv_req_t *)&l->gai);
        if (!uv_is_closing((uv_handle_t *)&l->timer))
            uv_close((uv_handle_t *)&l->timer, link_timer_closed);
    }
}

void agent_links_free(struct agent *a)
{
    while (a->links) {
        struct agent_link *l = a->links;
        a->links = l->next;
        free(l);
    }
}

SSL_CTX *agent_links_ctx_new(const struct agent_config *cfg, char *err, size_t cap)
{
    char terr[PGB_ERR_MAX];
    struct tls_client_opts o = {
        .ca_file = cfg->ca,
        .cert_file = cfg->cert,
        .key_file = cfg->key,
        .min_version = TLS1_3_VERSION,
        .alpn = PROTO_ALPN,
    };
    SSL_CTX *ctx = tls_client_ctx_new(&o, terr, sizeof(terr));
    if (!ctx)
        snprintf(err, cap, "%s", terr);
    return ctx;
}
