/*
 * reload.c — SIGHUP, watched files and SIGUSR1 for the agent (see reload.h).
 *
 *   SIGHUP / watched file changed
 *     --> build config (file + flags) --> relay TLS context --> upstream contexts
 *         --> same agent name (certificate CN)? --> open log_file
 *           \------------- any failure: log it, free what was built, keep everything ----/
 *     --> swap config + context, apply log settings, dial new relays / drain removed ones,
 *         re-watch
 */
#include "agent/reload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_metrics.h"
#include "agent/links.h"
#include "agent/relays.h"
#include "agent/upstream.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/reloader.h"

struct agent_reload {
    struct agent *a;
    struct reloader *rl;
    char name[256]; /* the agent name (CN) the relays know */
};

static void watch_config_files(struct agent_reload *rl)
{
    const struct agent_config *c = &rl->a->cfg;
    size_t n = 0, cap = 3 + 3 * c->nroutes;
    const char **files = calloc(cap, sizeof(*files));

    if (!files) {
        log_warn("reload: out of memory; certificate files are not watched");
        return;
    }
    files[n++] = c->ca;
    files[n++] = c->cert;
    files[n++] = c->key;
    for (size_t i = 0; i < c->nroutes; i++) {
        files[n++] = c->routes[i].sslrootcert;
        files[n++] = c->routes[i].sslcert;
        files[n++] = c->routes[i].sslkey;
    }
    reloader_watch(rl->rl, files, n);
    free(files);
}

static bool relays_differ(const struct agent_config *x, const struct agent_config *y)
{
    if (x->nrelays != y->nrelays)
        return true;
    for (size_t i = 0; i < x->nrelays; i++) {
        if (x->relays[i].port != y->relays[i].port ||
            strcmp(x->relays[i].host, y->relays[i].host) != 0)
            return true;
    }
    return false;
}

/* Log the routes that appeared or disappeared (host/port changes need no words). */
static void log_route_changes(const struct agent_config *old, const struct agent_config *nc)
{
    for (size_t i = 0; i < nc->nroutes; i++) {
        if (!agent_config_route(old, nc->routes[i].name))
            log_warn("reload: route %s added: it is offered to relays from the next tunnel on "
                     "(restart pgburrow-agent to offer it now)",
                     nc->routes[i].name);
    }
    for (size_t i = 0; i < old->nroutes; i++) {
        if (!agent_config_route(nc, old->routes[i].name))
            log_info("reload: route %s removed: new sessions for it are refused, open ones go on",
                     old->routes[i].name);
    }
}

int agent_reload(struct agent *a, const char *trigger)
{
    struct agent_reload *rl = a->reload;
    struct agent_config nc, old;
    SSL_CTX *relay_ctx = NULL;
    char err[PGB_ERR_MAX] = "", terr[PGB_ERR_MAX], name[256];
    bool relays_changed;
    int rc;

    if (!rl || a->stopping)
        return 0;
    agent_config_init(&nc);
    rc = agent_config_build(&nc, reloader_path(rl->rl), reloader_nflags(rl->rl),
                            reloader_flags(rl->rl), err, sizeof(err));
    if (rc < 0)
        goto fail;
    rc = -EINVAL;
    if (!(relay_ctx = agent_links_ctx_new(&nc, err, sizeof(err))))
        goto fail;
    if ((rc = upstream_build_contexts(&nc, err, sizeof(err))) < 0)
        goto fail;
    if ((rc = tls_cert_file_cn(nc.cert, name, sizeof(name), terr, sizeof(terr))) < 0) {
        snprintf(err, sizeof(err), "%s", terr);
        goto fail;
    }
    if (strcmp(name, rl->name) != 0) {
        snprintf(err, sizeof(err),
                 "certificate \"%s\" names agent \"%s\", not \"%s\": restart pgburrow-agent to "
                 "change its name",
                 nc.cert, name, rl->name);
        rc = -EINVAL;
        goto fail;
    }
    if (config_str_differs(nc.log_file, a->cfg.log_file) && (rc = log_open(nc.log_file)) < 0) {
        snprintf(err, sizeof(err), "cannot open log_file \"%s\": %s", nc.log_file, strerror(-rc));
        goto fail;
    }

    /* nothing fails from here on */
    relays_changed = relays_differ(&nc, &a->cfg);
    log_route_changes(&a->cfg, &nc);

    if (monitor_listen_differs(&a->monitor, nc.metrics_listen))
        log_warn("reload: metrics_listen=%s differs from the address in use (%s): restart "
                 "pgburrow-agent to apply it",
                 nc.metrics_listen ? nc.metrics_listen : "off",
                 a->monitor.listen ? a->monitor.listen : "off");
    old = a->cfg;
    a->cfg = nc;
    agent_config_free(&old);    /* sessions still connecting hold their own context reference */
    SSL_CTX_free(a->relay_ctx); /* open tunnels hold their own references */
    a->relay_ctx = relay_ctx;
    log_reconfigure(a->cfg.log_level, a->cfg.log_format);
    if (relays_changed)
        agent_relays_update(a);
    watch_config_files(rl);
    agent_metrics_sync(a);
    monitor_reloaded(&a->monitor, true);
    log_info("reload: ok (trigger=%s) relays=%zu routes=%zu", trigger, a->cfg.nrelays,
             a->cfg.nroutes);
    return 0;
fail:
    SSL_CTX_free(relay_ctx);
    agent_config_free(&nc);
    log_error("reload: failed: %s; keeping the running configuration (trigger=%s)", err, trigger);
    monitor_reloaded(&a->monitor, false);
    watch_config_files(rl);
    return rc;
}

static void on_reload(void *ctx, const char *trigger)
{
    struct agent_reload *rl = ctx;
    agent_reload(rl->a, trigger);
}

static void on_reopen(void *ctx)
{
    struct agent_reload *rl = ctx;
    const char *path = rl->a->cfg.log_file;
    int rc;

    if (!path)
        return;
    if ((rc = log_open(path)) < 0)
        log_error("SIGUSR1: cannot reopen log_file \"%s\": %s", path, strerror(-rc));
    else
        log_info("SIGUSR1: reopened log_file=%s", path);
}

static const struct reloader_ops reload_ops = {.on_reload = on_reload, .on_reopen = on_reopen};

int agent_reload_start(struct agent *a, const char *config_path, int nflags, char *const *flags,
                       char *err, size_t cap)
{
    struct agent_reload *rl = calloc(1, sizeof(*rl));
    char terr[PGB_ERR_MAX];

    if (!rl)
        goto nomem;
    rl->a = a;
    if (tls_cert_file_cn(a->cfg.cert, rl->name, sizeof(rl->name), terr, sizeof(terr)) < 0) {
        snprintf(err, cap, "%s", terr);
        free(rl);
        return -EINVAL;
    }
    rl->rl = reloader_new(a->loop, config_path, nflags, flags, AGENT_RELOAD_DEBOUNCE_MS,
                          &reload_ops, rl);
    if (!rl->rl)
        goto nomem;
    a->reload = rl;
    watch_config_files(rl);
    return 0;
nomem:
    free(rl);
    snprintf(err, cap, "out of memory");
    return -ENOMEM;
}

void agent_reload_stop(struct agent *a)
{
    struct agent_reload *rl = a->reload;
    if (!rl)
        return;
    a->reload = NULL;
    reloader_close(rl->rl); /* no callback comes after this: rl can go now */
    free(rl);
}
