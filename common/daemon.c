/*
 * daemon — main() of both daemons (see daemon.h).
 */
#include "common/daemon.h"

#include <signal.h>
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
    char err[CONFIG_ERR_MAX] = "";
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
    if (role->configure(role->ctx, &args, err) < 0) {
        report(role, err, false);
        role->config_free(role->ctx);
        goto out_args;
    }
    uv_loop_init(&loop);
    if (role->init(role->ctx, &loop, err) < 0) {
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
    if (role->start(role->ctx, &args, err) < 0) {
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
