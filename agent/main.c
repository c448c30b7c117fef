/*
 * pgburrow-agent: dials out to relays and serves their sessions from the local PostgreSQL.
 */
#include <errno.h>

#include "common/daemon.h"
#include "common/log.h"
#include "agent/agent.h"
#include "agent/reload.h"

static const char usage[] =
    "Usage: pgburrow-agent [-c FILE] [--section.key=VALUE ...] [--check-config]\n"
    "\n"
    "Runs next to PostgreSQL. Dials out to one or more pgburrow relays over mutual TLS 1.3,\n"
    "keeps the tunnels up, and connects each session a relay opens to the local PostgreSQL.\n"
    "No inbound port is opened (metrics_listen, off by default, adds an HTTP port for\n"
    "/metrics, /healthz and /readyz).\n"
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

struct agent_main {
    struct agent_config cfg; /* until agent_init takes it over */
    struct agent agent;
};

static int agent_main_configure(void *ctx, const struct cli_args *args, char *err, size_t cap)
{
    struct agent_main *m = ctx;

    agent_config_init(&m->cfg);
    if (agent_config_build(&m->cfg, args->config_file, args->nflags, args->flags, err, cap) < 0)
        return -EINVAL;
    return log_apply(m->cfg.log_level, m->cfg.log_format, m->cfg.log_file, "pgburrow-agent", err,
                     cap);
}

static void agent_main_config_free(void *ctx)
{
    agent_config_free(&((struct agent_main *)ctx)->cfg);
}

static int agent_main_init(void *ctx, uv_loop_t *loop, char *err, size_t cap)
{
    struct agent_main *m = ctx;
    return agent_init(&m->agent, loop, &m->cfg, err, cap);
}

static int agent_main_start(void *ctx, const struct cli_args *args, char *err, size_t cap)
{
    struct agent_main *m = ctx;
    int rc = agent_start(&m->agent, err, cap);

    if (rc == 0)
        rc = agent_reload_start(&m->agent, args->config_file, args->nflags, args->flags, err, cap);
    return rc;
}

static void agent_main_stop(void *ctx)
{
    agent_stop(&((struct agent_main *)ctx)->agent);
}

static void agent_main_free(void *ctx)
{
    agent_free(&((struct agent_main *)ctx)->agent);
}

int main(int argc, char **argv)
{
    struct agent_main m;
    const struct daemon_role role = {
        .name = "pgburrow-agent",
        .usage = usage,
        .ctx = &m,
        .configure = agent_main_configure,
        .config_free = agent_main_config_free,
        .init = agent_main_init,
        .start = agent_main_start,
        .stop = agent_main_stop,
        .free = agent_main_free,
    };

    return daemon_main(&role, argc, argv);
}
