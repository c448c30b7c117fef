/*
 * monitor — /metrics, /healthz and /readyz for both daemons (see monitor.h).
 */
#include "common/monitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/tls.h"

void monitor_init(struct monitor *m, const struct monitor_ops *ops, void *ctx)
{
    memset(m, 0, sizeof(*m));
    m->ops = ops;
    m->ctx = ctx;
}

static char *text_body(const char *s, size_t *len)
{
    char *b = strdup(s);
    *len = b ? strlen(b) : 0;
    return b;
}

static void render_common(struct monitor *m, struct metrics_buf *b)
{
    const char *build[] = {"version", PGB_VERSION, "daemon", m->ops->daemon, NULL};
    const char *ok[] = {"result", "ok", NULL};
    const char *failed[] = {"result", "error", NULL};

    metrics_family(b, "pgburrow_build_info", "gauge", "Always 1; the labels say which build runs.");
    metrics_u64(b, "pgburrow_build_info", build, 1);
    metrics_family(b, "pgburrow_reloads_total", "counter",
                   "Configuration reloads (SIGHUP, changed certificate files) by result.");
    metrics_u64(b, "pgburrow_reloads_total", ok, m->reloads_ok);
    metrics_u64(b, "pgburrow_reloads_total", failed, m->reloads_failed);
    metrics_family(b, "pgburrow_last_reload_timestamp_seconds", "gauge",
                   "When the last reload finished (0: none since start-up).");
    metrics_u64(b, "pgburrow_last_reload_timestamp_seconds", NULL,
                (uint64_t)(m->last_reload > 0 ? m->last_reload : 0));
    metrics_family(b, "pgburrow_last_reload_success", "gauge",
                   "1 when the last reload was applied (or none happened), 0 when it failed.");
    metrics_u64(b, "pgburrow_last_reload_success", NULL,
                m->last_reload == 0 || m->last_reload_ok ? 1 : 0);
    metrics_family(b, "pgburrow_metrics_connections_refused_total", "counter",
                   "Connections to metrics_listen closed at once: 16 were open already.");
    metrics_u64(b, "pgburrow_metrics_connections_refused_total", NULL, m->http.refused);
    metrics_family(b, "pgburrow_cert_expiry_timestamp_seconds", "gauge",
                   "The earliest notAfter of the certificates in each file the configuration "
                   "names.");
    for (size_t i = 0; i < m->ncerts; i++) {
        const char *labels[] = {"file", m->certs[i].file, NULL};
        metrics_u64(b, "pgburrow_cert_expiry_timestamp_seconds", labels,
                    (uint64_t)m->certs[i].not_after);
    }
}

static int monitor_handle(void *ctx, const struct http_request *req, char **body, size_t *len,
                          const char **content_type)
{
    struct monitor *m = ctx;
    struct metrics_buf b;
    bool metrics = strcmp(req->path, "/metrics") == 0;
    bool ready = strcmp(req->path, "/readyz") == 0;

    if (!metrics && !ready && strcmp(req->path, "/healthz") != 0)
        return 404;
    if (req->method == HTTP_OTHER)
        return 405;
    *content_type = "text/plain; charset=utf-8";
    if (ready) {
        bool yes = m->ops->ready(m->ctx);
        *body = text_body(yes ? "ready\n" : "not ready\n", len);
        return yes ? 200 : 503;
    }
    if (!metrics) {
        *body = text_body("ok\n", len);
        return 200;
    }
    metrics_buf_init(&b);
    render_common(m, &b);
    m->ops->render(m->ctx, &b);
    if (b.failed || !b.data) {
        metrics_buf_free(&b);
        return 500;
    }
    *content_type = METRICS_CONTENT_TYPE;
    *body = b.data;
    *len = b.len;
    return 200;
}

int monitor_start(struct monitor *m, uv_loop_t *loop, const char *hostport, char *err, size_t cap)
{
    int rc;

    if (!hostport || !hostport[0])
        return 0;
    if (!(m->listen = strdup(hostport))) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    m->on = true; /* the listener is open even when listening fails: closed by monitor_close */
    rc = http_server_start(&m->http, loop, hostport, monitor_handle, m, err, cap);
    if (rc < 0)
        return rc;
    return 0;
}

void monitor_close(struct monitor *m)
{
    if (!m->on)
        return;
    m->on = false;
    http_server_close(&m->http);
}

static void certs_free(struct monitor *m)
{
    for (size_t i = 0; i < m->ncerts; i++)
        free(m->certs[i].file);
    free(m->certs);
    m->certs = NULL;
    m->ncerts = 0;
}

void monitor_free(struct monitor *m)
{
    if (!m)
        return;
    certs_free(m);
    free(m->listen);
    m->listen = NULL;
}

void monitor_reloaded(struct monitor *m, bool ok)
{
    if (ok)
        m->reloads_ok++;
    else
        m->reloads_failed++;
    m->last_reload = (long long)time(NULL);
    m->last_reload_ok = ok;
}

void monitor_certs_read(struct monitor *m, const char *const *files, size_t n)
{
    certs_free(m);
    if (n == 0 || !(m->certs = calloc(n, sizeof(*m->certs))))
        return;
    for (size_t i = 0; i < n; i++) {
        long long t;
        bool seen = false;

        if (!files[i])
            continue;
        for (size_t j = 0; j < m->ncerts && !seen; j++)
            seen = strcmp(m->certs[j].file, files[i]) == 0;
        if (seen || tls_cert_file_not_after(files[i], &t) < 0)
            continue;
        if (!(m->certs[m->ncerts].file = strdup(files[i])))
            continue;
        m->certs[m->ncerts++].not_after = t;
    }
}

bool monitor_listen_differs(const struct monitor *m, const char *hostport)
{
    const char *want = hostport && hostport[0] ? hostport : NULL;
    return config_str_differs(m->listen, want);
}
