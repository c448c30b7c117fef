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

static int apply_logging(const struct agent_config *cfg, char *err)
{
    enum log_level level = LOG_INFO;
    enum log_format format = LOG_TEXT;
    if (cfg->log_level && log_level_parse(cfg->log_level, &level) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "log_level: unknown level \"%s\"", cfg->log_level);
        return -1;
    }
    if (cfg->log_format && log_format_parse(cfg->log_format, &format) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "log_format: unknown format \"%s\"", cfg->log_format);
        return -1;
    }
    log_configure(level, format, "pgburrow-agent");
    if (cfg->log_file && cfg->log_file[0] && log_open(cfg->log_file) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "cannot open log_file \"%s\"", cfg->log_file);
        return -1;
    }
    return 0;
}

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
    if (apply_logging(&cfg, err) < 0) {
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
    cli_args_free(&args);
    return status;
out_cfg:
    agent_config_free(&cfg);
    cli_args_free(&args);
    return status;
}
