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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/watch.h"
#include "relay/audit.h"
#include "relay/relay.h"

struct relay_reload {
    struct relay *r;
    char *path; /* NULL: no configuration file, flags only */
    int nflags;
    char **flags;
    uv_signal_t sig_hup, sig_usr1;
    struct watch *watch;
    int open_handles;
};

static void reload_free(struct relay_reload *rl)
{
    free(rl->path);
    for (int i = 0; i < rl->nflags; i++)
        free(rl->flags[i]);
    free(rl->flags);
    free(rl);
}

static void handle_closed(uv_handle_t *h)
{
    struct relay_reload *rl = h->data;
    if (--rl->open_handles == 0)
        reload_free(rl);
}

static bool str_differs(const char *a, const char *b)
{
    if (!a || !b)
        return a != b;
    return strcmp(a, b) != 0;
}

static void swap_str(char **a, char **b)
{
    char *tmp = *a;
    *a = *b;
    *b = tmp;
}

/* Every file the configuration reads (certificates, keys, CAs, CRLs, ident maps). */
static void watch_config_files(struct relay_reload *rl)
{
    const struct relay_config *c = &rl->r->cfg;
    size_t n = 0, cap = 6 + 3 * c->nroutes;
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
    for (size_t i = 0; i < c->nroutes; i++) {
        files[n++] = c->routes[i].client_ca;
        files[n++] = c->routes[i].client_crl;
        files[n++] = c->routes[i].ident_map;
    }
    if (watch_set_files(rl->watch, files, n) < 0)
        log_warn("reload: out of memory; certificate files are not watched");
    free(files);
}

/* Apply log_level/log_format (already validated by the config). */
static void apply_log_settings(const struct relay_config *c)
{
    enum log_level level = LOG_INFO;
    enum log_format format = LOG_TEXT;
    if (c->log_level)
        log_level_parse(c->log_level, &level);
    if (c->log_format)
        log_format_parse(c->log_format, &format);
    log_configure(level, format, NULL);
}

int relay_reload(struct relay *r, const char *trigger)
{
    struct relay_reload *rl = r->reload;
    struct relay_config nc, old;
    struct relay_tls tls = {0};
    char err[CONFIG_ERR_MAX] = "";
    bool log_file_changed;
    int rc;

    if (!rl || r->stopping)
        return 0;
    relay_config_init(&nc);
    rc = relay_config_build(&nc, rl->path, rl->nflags, rl->flags, err);
    if (rc < 0)
        goto fail;
    rc = relay_tls_build(&nc, &tls, err);
    if (rc < 0)
        goto fail;
    log_file_changed = str_differs(nc.log_file, r->cfg.log_file);
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
    if (str_differs(nc.listen, r->cfg.listen) ||
        str_differs(nc.tunnel_listen, r->cfg.tunnel_listen))
        log_warn("reload: listen=%s tunnel_listen=%s differ from the addresses in use "
                 "(listen=%s tunnel_listen=%s): restart pgburrow-relay to apply them",
                 nc.listen, nc.tunnel_listen, r->cfg.listen, r->cfg.tunnel_listen);
    /* the new configuration keeps the addresses in use, so that logs (and the next reload's
     * comparison) tell the truth; the old configuration, freed below, takes the others */
    swap_str(&nc.listen, &r->cfg.listen);
    swap_str(&nc.tunnel_listen, &r->cfg.tunnel_listen);

    old = r->cfg;
    r->cfg = nc;
    relay_config_free(&old);
    relay_tls_swap(r, &tls);
    relay_tls_free(&tls); /* open connections keep their own references */
    apply_log_settings(&r->cfg);
    relay_agents_recheck(r);
    watch_config_files(rl);
    log_info("reload: ok (trigger=%s) routes=%zu audit_log=%s audit_statements=%s", trigger,
             r->cfg.nroutes, r->cfg.audit_log ? r->cfg.audit_log : "off",
             r->cfg.audit_statements ? "on" : "off");
    return 0;
fail:
    relay_tls_free(&tls);
    relay_config_free(&nc);
    log_error("reload: failed: %s; keeping the running configuration (trigger=%s)", err, trigger);
    /* the files in force may now live elsewhere (a symlink repointed): watch them there */
    watch_config_files(rl);
    return rc;
}

static void on_sighup(uv_signal_t *sig, int signum)
{
    struct relay_reload *rl = sig->data;
    /* the files are read after this point: a change after it is noticed by the watch */
    watch_resync(rl->watch);
    relay_reload(rl->r, "SIGHUP");
}

static void on_file_change(void *ctx, const char *path)
{
    struct relay_reload *rl = ctx;
    char trigger[300];
    snprintf(trigger, sizeof(trigger), "file change %s", path);
    relay_reload(rl->r, trigger);
}

static void on_sigusr1(uv_signal_t *sig, int signum)
{
    struct relay_reload *rl = sig->data;
    struct relay *r = rl->r;
    char err[CONFIG_ERR_MAX];
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

int relay_reload_start(struct relay *r, const char *config_path, int nflags, char *const *flags,
                       char *err)
{
    struct relay_reload *rl = calloc(1, sizeof(*rl));

    if (!rl)
        goto nomem;
    rl->r = r;
    if (config_path && !(rl->path = strdup(config_path)))
        goto nomem;
    if (nflags > 0 && !(rl->flags = calloc((size_t)nflags, sizeof(*rl->flags))))
        goto nomem;
    for (; rl->nflags < nflags; rl->nflags++) {
        if (!(rl->flags[rl->nflags] = strdup(flags[rl->nflags])))
            goto nomem;
    }
    rl->watch = watch_new(r->loop, RELAY_RELOAD_DEBOUNCE_MS, on_file_change, rl);
    if (!rl->watch)
        goto nomem;
    uv_signal_init(r->loop, &rl->sig_hup);
    uv_signal_init(r->loop, &rl->sig_usr1);
    rl->sig_hup.data = rl->sig_usr1.data = rl;
    rl->open_handles = 2;
    uv_signal_start(&rl->sig_hup, on_sighup, SIGHUP);
    uv_signal_start(&rl->sig_usr1, on_sigusr1, SIGUSR1);
    r->reload = rl;
    watch_config_files(rl);
    return 0;
nomem:
    if (rl)
        reload_free(rl);
    snprintf(err, CONFIG_ERR_MAX, "out of memory");
    return -ENOMEM;
}

void relay_reload_stop(struct relay *r)
{
    struct relay_reload *rl = r->reload;
    if (!rl)
        return;
    r->reload = NULL;
    watch_close(rl->watch);
    rl->watch = NULL;
    uv_close((uv_handle_t *)&rl->sig_hup, handle_closed);
    uv_close((uv_handle_t *)&rl->sig_usr1, handle_closed);
}
