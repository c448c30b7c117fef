/*
 * pgburrow-agent: dials out to relays and serves their sessions from the local PostgreSQL.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/log.h"
#include "agent/agent.h"
#include "agent/reload.h"

static const char usage[] =
    "Usage: pgburrow-agent [-c FILE] [--section.key=VALUE ...] [--check-config]\n"
    "\n"
    "Runs next to PostgreSQL. Dials out to one or more pgburrow relays over mutual TLS 1.3,\n"
    "keeps the tunnels up, and connects each session a relay opens to the local PostgreSQL.\n"
    "No inbound port is opened.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE     read the configuration from FILE (INI)\n"
    "  --SECTION.KEY=VALUE   set a configuration key; wins over the file\n"
    "                        (e.g. --agent.relay=relay.example.com:7443,\n"
    "                         --route.db1.host=/var/run/postgresql)\n"
    "  --check-config        validate the configuration (files included) and exit\n"
    "  -h, --help            show this help and exit\n"
    "  -V, --version         show the version and exit\n"
    "\n"
    "See pgburrow-agent(8) and deploy/agent.ini for every key.\n";

int main(int argc, char **argv)
{
    struct cli_args args;
    struct agent_config cfg;
    struct agent agent;
    char err[CONFIG_ERR_MAX] = "";
    int status = 1;
    uv_loop_t loop;

    if (cli_parse(argc, argv, "pgburrow-agent", &args) < 0)
        return 2;
    if (args.help) {
        fputs(usage, stdout);
        cli_args_free(&args);
        return 0;
    }
    if (args.version) {
        printf("pgburrow-agent %s\n", PGB_VERSION);
        cli_args_free(&args);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    agent_config_init(&cfg);
    if (agent_config_build(&cfg, args.config_file, args.nflags, args.flags, err) < 0) {
        fprintf(stderr, "pgburrow-agent: %s\n", err);
        goto out_cfg;
    }
    if (log_apply(cfg.log_level, cfg.log_format, cfg.log_file, "pgburrow-agent", err) < 0) {
        fprintf(stderr, "pgburrow-agent: %s\n", err);
        goto out_cfg;
    }
    uv_loop_init(&loop);
    if (agent_init(&agent, &loop, &cfg, err) < 0) {
        fprintf(stderr, "pgburrow-agent: %s\n", err);
        log_error("%s", err);
        agent_stop(&agent);
        goto out_loop;
    }
    if (args.check_config) {
        printf("pgburrow-agent: configuration OK\n");
        status = 0;
        agent_stop(&agent);
        goto out_loop;
    }
    if (agent_start(&agent, err) < 0 ||
        agent_reload_start(&agent, args.config_file, args.nflags, args.flags, err) < 0) {
        fprintf(stderr, "pgburrow-agent: %s\n", err);
        log_error("%s", err);
        agent_stop(&agent);
        goto out_loop;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;
out_loop:
    uv_run(&loop, UV_RUN_DEFAULT); /* let every close callback run */
    if (uv_loop_close(&loop) != 0)
        log_warn("event loop closed with handles still open");
    agent_free(&agent);
    log_info("stopped");
    log_open(NULL); /* close log_file */
    cli_args_free(&args);
    return status;
out_cfg:
    agent_config_free(&cfg);
    cli_args_free(&args);
    return status;
}
