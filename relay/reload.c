/*
 * reload.c — SIGHUP, watched files and SIGUSR1 for the relay (see reload.h).
 *
 *   SIGHUP / watched file changed
 *     --> build config (file + flags) --> build TLS contexts --> open log_file, audit_log
 *           \------------- any failure: log it, free what was built, keep everything ----/
 *     --> swap config + contexts, apply log settings, re-check tunnels' routes, re-watch files
 */
#include "relay/reload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/reloader.h"
#include "relay/audit.h"
#include "relay/cert_expiry.h"
#include "relay/frontdoor.h"
#include "relay/relay.h"
#include "relay/relay_metrics.h"
#include "relay/relay_tls.h"
#include "relay/tunnels.h"

static void swap_str(char **a, char **b)
{
    char *tmp = *a;
    *a = *b;
    *b = tmp;
}

/* Every file the configuration reads (certificates, keys, CAs, CRLs, ident maps). */
static void watch_config_files(struct relay *r)
{
    const struct relay_config *c = &r->cfg;
    size_t n = 0, cap = 8 + 3 * c->nroutes;
    const char **files = calloc(cap, sizeof(*files));

    if (!files) {
        log_warn("reload: out of memory; certificate files are not watched");
        return;
    }
    files[n++] = c->tls_cert;
    files[n++] = c->tls_key;
    files[n++] = c->tunnel_cert;
    files[n++] = c->tunnel_key;
    files[n++] = c->agent_ca;
    files[n++] = c->agent_crl;
    files[n++] = c->admin_ca;
    files[n++] = c->admin_crl;
    for (size_t i = 0; i < c->nroutes; i++) {
        files[n++] = c->routes[i].client_ca;
        files[n++] = c->routes[i].client_crl;
        files[n++] = c->routes[i].ident_map;
    }
    reloader_watch(r->reload, files, n);
    free(files);
}

int relay_reload(struct relay *r, const char *trigger, char *why, size_t why_cap)
{
    struct reloader *rl = r->reload;
    struct relay_config nc, old;
    struct relay_tls tls = {0};
    char err[PGB_ERR_MAX] = "";
    bool log_file_changed;
    int rc;

    why[0] = '\0';
    if (!rl || r->stopping) {
        snprintf(why, why_cap, "the relay is stopping");
        return -ECANCELED;
    }
    relay_config_init(&nc);
    rc = relay_config_build(&nc, reloader_path(rl), reloader_nflags(rl), reloader_flags(rl), err,
                            sizeof(err));
    if (rc < 0)
        goto fail;
    rc = relay_tls_build(&nc, &tls, err, sizeof(err));
    if (rc < 0)
        goto fail;
    log_file_changed = config_str_differs(nc.log_file, r->cfg.log_file);
    if (log_file_changed && (rc = log_open(nc.log_file)) < 0) {
        snprintf(err, sizeof(err), "cannot open log_file \"%s\": %s", nc.log_file, strerror(-rc));
        goto fail;
    }
    rc = audit_configure(r->audit, nc.audit_log, nc.audit_statements,
                         (size_t)nc.audit_statement_max, err, sizeof(err));
    if (rc < 0) {
        if (log_file_changed)
            log_open(r->cfg.log_file); /* back to the file that worked */
        goto fail;
    }

    /* nothing fails from here on */
    if (config_str_differs(nc.listen, r->cfg.listen) ||
        config_str_differs(nc.tunnel_listen, r->cfg.tunnel_listen))
        log_warn("reload: listen=%s tunnel_listen=%s differ from the addresses in use "
                 "(listen=%s tunnel_listen=%s): restart pgburrow-relay to apply them",
                 nc.listen, nc.tunnel_listen, r->cfg.listen, r->cfg.tunnel_listen);
    /* the new configuration keeps the addresses in use, so that logs (and the next reload's
     * comparison) tell the truth; the old configuration, freed below, takes the others */
    if (monitor_listen_differs(&r->monitor, nc.metrics_listen))
        log_warn("reload: metrics_listen=%s differs from the address in use (%s): restart "
                 "pgburrow-relay to apply it",
                 nc.metrics_listen ? nc.metrics_listen : "off",
                 r->monitor.listen ? r->monitor.listen : "off");
    swap_str(&nc.listen, &r->cfg.listen);
    swap_str(&nc.tunnel_listen, &r->cfg.tunnel_listen);
    swap_str(&nc.metrics_listen, &r->cfg.metrics_listen);

    old = r->cfg;
    r->cfg = nc;
    relay_config_free(&old);
    relay_tls_swap(r, &tls);
    relay_tls_free(&tls); /* open connections keep their own references */
    log_reconfigure(r->cfg.log_level, r->cfg.log_format);
    relay_agents_recheck(r);
    relay_certs_recheck(r, true); /* revoked or no longer trusted certificates end now */
    watch_config_files(r);
    relay_stats_sync(&r->stats, &r->cfg);
    relay_metrics_certs(r);
    monitor_reloaded(&r->monitor, true);
    log_info("reload: ok (trigger=%s) routes=%zu audit_log=%s audit_statements=%s", trigger,
             r->cfg.nroutes, r->cfg.audit_log ? r->cfg.audit_log : "off",
             r->cfg.audit_statements ? "on" : "off");
    return 0;
fail:
    relay_tls_free(&tls);
    relay_config_free(&nc);
    log_error("reload: failed: %s; keeping the running configuration (trigger=%s)", err, trigger);
    snprintf(why, why_cap, "%s", err);
    monitor_reloaded(&r->monitor, false);
    /* the files in force may now live elsewhere (a symlink repointed): watch them there */
    watch_config_files(r);
    return rc;
}

static void on_reload(void *ctx, const char *trigger)
{
    char err[PGB_ERR_MAX];

    relay_reload(ctx, trigger, err, sizeof(err));
}

static void on_reopen(void *ctx)
{
    struct relay *r = ctx;
    char err[PGB_ERR_MAX];
    int rc;

    if (r->cfg.log_file && (rc = log_open(r->cfg.log_file)) < 0)
        log_error("SIGUSR1: cannot reopen log_file \"%s\": %s", r->cfg.log_file, strerror(-rc));
    if (audit_reopen(r->audit, err, sizeof(err)) < 0)
        log_error("SIGUSR1: %s; audit lines keep going to the old file", err);
    else
        log_info("SIGUSR1: reopened%s%s%s%s", r->cfg.log_file ? " log_file=" : "",
                 r->cfg.log_file ? r->cfg.log_file : "",
                 audit_enabled(r->audit) ? " audit_log=" : "",
                 audit_enabled(r->audit) ? r->cfg.audit_log : "");
}

static const struct reloader_ops reload_ops = {.on_reload = on_reload, .on_reopen = on_reopen};

int relay_reload_start(struct relay *r, const char *config_path, int nflags, char *const *flags,
                       char *err, size_t cap)
{
    r->reload =
        reloader_new(r->loop, config_path, nflags, flags, RELAY_RELOAD_DEBOUNCE_MS, &reload_ops, r);
    if (!r->reload) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    watch_config_files(r);
    return 0;
}

void relay_reload_stop(struct relay *r)
{
    reloader_close(r->reload);
    r->reload = NULL;
}

void relay_certs_recheck(struct relay *r, bool reverify)
{
    long long now = (long long)time(NULL);
    long long agents = relay_tunnels_certs_recheck(r, reverify, now);
    long long sessions = frontdoor_certs_recheck(r, reverify, now);

    r->cert_next = agents == 0 || (sessions != 0 && sessions < agents) ? sessions : agents;
    relay_cert_expiry_arm(r, now);
}
