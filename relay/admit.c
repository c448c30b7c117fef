/*
 * admit.c — pending bounds, descriptor headroom, shedding and the sweep (admit.h).
 */
#include "relay/admit.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "common/conn.h"
#include "common/log.h"
#include "relay/relay.h"

#define ACCEPT_FAIL_LOG_MS 1000

static struct preauth_limits limits_of(const struct relay *r)
{
    struct preauth_limits lim = {
        .max_pending = r->cfg.max_pending,
        .max_pending_per_source = r->cfg.max_pending_per_source,
        .handshake_rate = r->cfg.handshake_rate,
        .handshake_burst = r->cfg.handshake_burst,
    };
    return lim;
}

/* Descriptors that may still be opened before the relay runs short. */
static uint64_t fd_headroom(const struct relay *r)
{
    uint64_t h = r->fd_limit / 16;
    return h > ADMIT_FD_HEADROOM ? h : ADMIT_FD_HEADROOM;
}

/* Open descriptors as best known: the relay's count of its own, and the descriptor just
 * accepted (numbers are allocated lowest first, so fd N means at least N + 1 are open). */
static uint64_t fds_in_use(const struct relay *r, int newest_fd)
{
    uint64_t own = r->fd_base + r->nclients + r->nagents;
    uint64_t seen = newest_fd >= 0 ? (uint64_t)newest_fd + 1 : 0;
    return own > seen ? own : seen;
}

static bool fds_short(const struct relay *r, int newest_fd)
{
    return r->fd_limit && fds_in_use(r, newest_fd) + fd_headroom(r) >= r->fd_limit;
}

static uint64_t count_open_fds(void)
{
    uint64_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    if (!d)
        return 16;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory's own descriptor */
}

static void sweep(uv_timer_t *timer)
{
    struct relay *r = timer->data;
    uint64_t now = uv_now(r->loop), dropped;
    struct preauth_slot *s;

    while ((s = preauth_expired(r->preauth, now))) {
        s->deadline_ms = 0;
        s->shed(s, "no HELLO in time");
    }
    if ((dropped = preauth_log_dropped(r->preauth)) > 0)
        log_warn("refusals: %llu more lines left out (relay-wide log limit, %d/s)",
                 (unsigned long long)dropped, PREAUTH_LOG_GLOBAL_RATE);
    if (r->accept_fail_suppressed > 0 && now - r->accept_fail_ms >= ACCEPT_FAIL_LOG_MS) {
        log_warn("accept failed %llu more times in the last %llu ms",
                 (unsigned long long)r->accept_fail_suppressed,
                 (unsigned long long)(now - r->accept_fail_ms));
        r->accept_fail_suppressed = 0;
        r->accept_fail_ms = now;
    }
}

int relay_admit_start(struct relay *r, char *err, size_t cap)
{
    struct rlimit rl;

    if (!r->preauth && !(r->preauth = preauth_new())) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rlim_t was = rl.rlim_cur;
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                log_info("file descriptor limit raised from %llu to %llu (the hard limit)",
                         (unsigned long long)was, (unsigned long long)rl.rlim_cur);
            else
                rl.rlim_cur = was;
        }
        r->fd_limit = rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
        log_info("file descriptor limit %llu: pending connections are shed while fewer than %llu "
                 "remain free",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)fd_headroom(r));
    }
    /* the listeners, signal handles, logs and watches come next: counted generously */
    r->fd_base = count_open_fds() + 8;
    uv_timer_init(r->loop, &r->admit_timer);
    r->admit_timer.data = r;
    r->open_handles++;
    uv_timer_start(&r->admit_timer, sweep, ADMIT_SWEEP_MS, ADMIT_SWEEP_MS);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    r->open_handles--;
}

void relay_admit_stop(struct relay *r)
{
    if (r->admit_timer.loop && !uv_is_closing((uv_handle_t *)&r->admit_timer))
        uv_close((uv_handle_t *)&r->admit_timer, timer_closed);
}

void relay_admit_free(struct relay *r)
{
    preauth_free(r->preauth);
    r->preauth = NULL;
}

bool relay_admit_log_ok(struct relay *r, const char *peer, enum preauth_reason why, char *suffix,
                        size_t cap)
{
    uint64_t suppressed = 0;

    suffix[0] = '\0';
    r->stats.refused[why]++; /* every refusal passes here, logged or not */
    if (!r->preauth)
        return true;
    if (!preauth_log_ok(r->preauth, peer, why, uv_now(r->loop), &suppressed))
        return false;
    if (suppressed)
        snprintf(suffix, cap, " (%llu more suppressed)", (unsigned long long)suppressed);
    return true;
}

/* Shed the oldest pending connection of the heaviest source. False when none is pending. */
static bool shed_one(struct relay *r, const char *why)
{
    struct preauth_slot *victim = preauth_victim(r->preauth);
    if (!victim)
        return false;
    victim->shed(victim, why);
    return true;
}

/* A load balancer in proxy_protocol_from (proxied.h)? Its connections wait for their PROXY
 * header under its address, many at once when its clients connect at once: until the header
 * names each client, only the relay-wide bounds (max_pending, shedding, startup_timeout) apply
 * to them, not max_pending_per_source. */
static bool from_balancer(const struct relay *r, const char *peer)
{
    uint8_t addr[16];

    return r->cfg.proxy_protocol_from.n > 0 && cidr_addr_parse(peer, addr) == 0 &&
           cidr_list_match(&r->cfg.proxy_protocol_from, addr);
}

static void log_hold_refused(struct relay *r, const char *peer, const char *listener, int rc)
{
    char suffix[64];

    if (relay_admit_log_ok(r, peer, PREAUTH_SOURCE_FULL, suffix, sizeof(suffix)))
        log_warn("refused %s=%s reason=%s%s", listener, peer,
                 rc == -EBUSY ? "too many pending connections from this source "
                                "(max_pending_per_source)"
                              : "out of memory",
                 suffix);
}

int relay_admit(struct relay *r, struct preauth_slot *slot, const char *peer, struct conn *conn,
                const char *listener)
{
    struct preauth_limits lim = limits_of(r);
    int rc, fd = conn_fileno(conn);

    if (!r->preauth)
        return 0;
    if (from_balancer(r, peer))
        lim.max_pending_per_source = 0;
    rc = preauth_hold(r->preauth, slot, peer, &lim, uv_now(r->loop));
    if (rc < 0) {
        log_hold_refused(r, peer, listener, rc);
        return rc;
    }
    /* The new connection may be the one shed (then it is no longer held, and the caller
     * closes it). One descriptor shed per descriptor accepted keeps the headroom: a shed
     * connection's descriptor is closed at once, but counted until its close callback. */
    if (fds_short(r, fd))
        shed_one(r, "file descriptors running short");
    while (preauth_held(slot) && preauth_pending(r->preauth) > r->cfg.max_pending)
        if (!shed_one(r, "too many pending connections (max_pending)"))
            break;
    return preauth_held(slot) ? 0 : -EAGAIN;
}

int relay_admit_rekey(struct relay *r, struct preauth_slot *slot, const char *peer,
                      const char *listener)
{
    struct preauth_limits lim = limits_of(r);
    int rc;

    if (!r->preauth || !preauth_held(slot))
        return 0;
    /* the relay-wide count does not change: nothing to shed */
    preauth_release(r->preauth, slot);
    rc = preauth_hold(r->preauth, slot, peer, &lim, uv_now(r->loop));
    if (rc < 0)
        log_hold_refused(r, peer, listener, rc);
    return rc;
}

void relay_admit_release(struct relay *r, struct preauth_slot *slot)
{
    if (r->preauth && slot)
        preauth_release(r->preauth, slot);
}

bool relay_admit_handshake(struct relay *r, struct preauth_slot *slot)
{
    struct preauth_limits lim = limits_of(r);
    return !r->preauth || preauth_take_handshake(r->preauth, slot, &lim, uv_now(r->loop));
}

void relay_admit_accept_failed(struct relay *r, int status, const char *listener)
{
    uint64_t now = uv_now(r->loop);

    /* free a descriptor for the next one: the heaviest source's oldest pending connection */
    if (r->preauth)
        shed_one(r, "accept failed: file descriptors exhausted");
    if (r->accept_fail_ms == 0 || now - r->accept_fail_ms >= ACCEPT_FAIL_LOG_MS) {
        log_warn("%s listener: accept failed: %s (%llu open connections, limit %llu "
                 "descriptors)",
                 listener, uv_strerror(status), (unsigned long long)(r->nclients + r->nagents),
                 (unsigned long long)r->fd_limit);
        r->accept_fail_ms = now;
    } else {
        r->accept_fail_suppressed++;
    }
}

static void spare_take(struct admit_spare *sp);

static void spare_closed(uv_handle_t *h)
{
    struct admit_spare *sp = h->data;

    sp->busy = false;
    sp->r->open_handles--;
    /* a connection refused while the spare was closing still waits: take it now, which
     * also lets the listener read again (uv_accept restarts it) */
    if (sp->waiting && !sp->r->stopping && !uv_is_closing((uv_handle_t *)sp->server))
        spare_take(sp);
    sp->waiting = false;
}

static void spare_take(struct admit_spare *sp)
{
    sp->waiting = false;
    if (uv_tcp_init(sp->r->loop, &sp->tcp) < 0)
        return;
    sp->tcp.data = sp;
    sp->busy = true;
    sp->r->open_handles++;
    /* on failure libuv has closed the connection's descriptor itself */
    uv_accept(sp->server, (uv_stream_t *)&sp->tcp);
    uv_close((uv_handle_t *)&sp->tcp, spare_closed);
}

void relay_admit_drop_unaccepted(struct relay *r, uv_stream_t *server, const char *listener)
{
    struct admit_spare *sp =
        server == (uv_stream_t *)&r->client_listener ? &r->client_spare : &r->tunnel_spare;

    sp->r = r;
    sp->server = server;
    relay_admit_accept_failed(r, UV_ENOMEM, listener);
    if (sp->busy)
        sp->waiting = true;
    else
        spare_take(sp);
}
