/*
 * daemon — main() of both daemons (see daemon.h).
 */
#include "common/daemon.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "common/config.h"
#include "common/log.h"
#include "common/sdnotify.h"

static void report(const struct daemon_role *role, const char *err, bool logged)
{
    fprintf(stderr, "%s: %s\n", role->name, err);
    if (logged)
        log_error("%s", err);
}

int daemon_main(const struct daemon_role *role, int argc, char **argv)
{
    struct cli_args args;
    char err[PGB_ERR_MAX] = "";
    int status = 1;
    uv_loop_t loop;
    struct sdnotify sn = {.started = false};

    if (cli_parse(argc, argv, role->name, &args) < 0)
        return 2;
    if (args.help || args.version) {
        if (args.help)
            fputs(role->usage, stdout);
        else
            printf("%s %s\n", role->name, PGB_VERSION);
        status = 0;
        goto out_args;
    }
    signal(SIGPIPE, SIG_IGN);
    if (role->configure(role->ctx, &args, err, sizeof(err)) < 0) {
        report(role, err, false);
        role->config_free(role->ctx);
        goto out_args;
    }
    uv_loop_init(&loop);
    if (role->init(role->ctx, &loop, err, sizeof(err)) < 0) {
        report(role, err, true);
        role->stop(role->ctx);
        goto out_loop;
    }
    if (args.check_config) {
        printf("%s: configuration OK\n", role->name);
        status = 0;
        role->stop(role->ctx);
        goto out_loop;
    }
    if (role->start(role->ctx, &args, err, sizeof(err)) < 0) {
        report(role, err, true);
        role->stop(role->ctx);
        goto out_loop;
    }
    sdnotify_start(&sn, &loop); /* READY=1 (listening, dialing), watchdog, STOPPING=1 */
    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;
out_loop:
    sdnotify_close(&sn);
    uv_run(&loop, UV_RUN_DEFAULT); /* let every close callback run */
    if (uv_loop_close(&loop) != 0)
        log_warn("event loop closed with handles still open");
    role->free(role->ctx);
    log_info("stopped");
    log_open(NULL); /* close log_file */
out_args:
    cli_args_free(&args);
    return status;
}

/* ---- signals and drain ------------------------------------------------------------------ */

/* The struct a signal handle lives in (its data is the role's context). */
static struct daemon_signals *signals_of(uv_signal_t *sig)
{
    size_t off = sig->signum == SIGTERM ? offsetof(struct daemon_signals, term)
                                        : offsetof(struct daemon_signals, intr);
    return (struct daemon_signals *)(void *)((char *)sig - off);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct daemon_signals *s = signals_of(sig);

    if (signum == SIGTERM && !s->term_seen) {
        s->term_seen = true;
        s->ops->drain(s->ctx);
        return;
    }
    log_info("received %s: shutting down now", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    s->ops->stop(s->ctx);
}

static void drain_tick(uv_timer_t *timer)
{
    struct daemon_signals *s =
        (struct daemon_signals *)(void *)((char *)timer -
                                          offsetof(struct daemon_signals, drain_timer));
    uint64_t n = s->ops->sessions(s->ctx);

    if (n == 0) {
        log_info("drain: every session has ended; stopping");
        s->ops->stop(s->ctx);
    } else if (uv_now(timer->loop) >= s->drain_deadline_ms) {
        log_warn("drain: drain_timeout reached; closing %llu remaining session(s)",
                 (unsigned long long)n);
        s->ops->stop(s->ctx);
    }
}

void daemon_signals_start(struct daemon_signals *s, uv_loop_t *loop,
                          const struct daemon_signal_ops *ops, void *ctx)
{
    s->ops = ops;
    s->ctx = ctx;
    uv_signal_init(loop, &s->term);
    uv_signal_init(loop, &s->intr);
    s->term.data = s->intr.data = ctx;
    s->started = true;
    uv_signal_start(&s->term, on_signal, SIGTERM);
    uv_signal_start(&s->intr, on_signal, SIGINT);
}

void daemon_drain_start(struct daemon_signals *s, uv_loop_t *loop, uint64_t timeout_ms)
{
    s->drain_deadline_ms = uv_now(loop) + timeout_ms;
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s->ctx;
    s->draining = true;
    uv_timer_start(&s->drain_timer, drain_tick, 0, 100);
}

void daemon_signals_close(struct daemon_signals *s, uv_close_cb cb)
{
    if (s->draining)
        uv_close((uv_handle_t *)&s->drain_timer, cb);
    if (s->started) {
        uv_close((uv_handle_t *)&s->term, cb);
        uv_close((uv_handle_t *)&s->intr, cb);
    }
}
