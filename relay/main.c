/*
 * pgburrow-relay: accepts agents' tunnels and PostgreSQL clients, and joins them.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/log.h"
#include "relay/relay.h"
#include "relay/reload.h"

static const char usage[] =
    "Usage: pgburrow-relay [-c FILE] [--section.key=VALUE ...] [--check-config]\n"
    "\n"
    "Accepts PostgreSQL clients (TLS required) and pgburrow-agent tunnels (mutual TLS 1.3),\n"
    "and streams each client session through a tunnel of an agent allowed to serve its route.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE     read the configuration from FILE (INI)\n"
    "  --SECTION.KEY=VALUE   set a configuration key; wins over the file\n"
    "                        (e.g. --relay.listen=127.0.0.1:5432, --route.db1.agents=a,b)\n"
    "  --check-config        validate the configuration (files included) and exit\n"
    "  -h, --help            show this help and exit\n"
    "  -V, --version         show the version and exit\n"
    "\n"
    "See pgburrow-relay(8) and deploy/relay.ini for every key.\n";

/* After the listeners are bound (a port below 1024 needs root), become `user` for good: its
 * groups, then its gid, then its uid; and check that root cannot be regained. */
static int drop_privileges(const char *user, char *err)
{
    struct passwd *pw;
    if (!user || !user[0])
        return 0;
    errno = 0;
    pw = getpwnam(user);
    if (!pw) {
        snprintf(err, CONFIG_ERR_MAX, "user: no such user \"%s\"", user);
        return -1;
    }
    if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid) {
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0) {
            snprintf(err, CONFIG_ERR_MAX, "user: cannot become \"%s\": %s", user, strerror(errno));
            return -1;
        }
        if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
            snprintf(err, CONFIG_ERR_MAX, "user: could regain root after dropping to \"%s\"", user);
            return -1;
        }
    }
    log_info("running as user=%s uid=%u gid=%u", pw->pw_name, (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    return 0;
}

int main(int argc, char **argv)
{
    struct cli_args args;
    struct relay_config cfg;
    struct relay relay;
    char err[CONFIG_ERR_MAX] = "";
    int status = 1;
    uv_loop_t loop;

    if (cli_parse(argc, argv, "pgburrow-relay", &args) < 0)
        return 2;
    if (args.help) {
        fputs(usage, stdout);
        cli_args_free(&args);
        return 0;
    }
    if (args.version) {
        printf("pgburrow-relay %s\n", PGB_VERSION);
        cli_args_free(&args);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    relay_config_init(&cfg);
    if (relay_config_build(&cfg, args.config_file, args.nflags, args.flags, err) < 0) {
        fprintf(stderr, "pgburrow-relay: %s\n", err);
        goto out_cfg;
    }
    /* log and audit files may belong to the user the relay becomes (log_file_open) */
    struct passwd *pw = cfg.user && cfg.user[0] ? getpwnam(cfg.user) : NULL;
    if (pw)
        log_set_file_owner(pw->pw_uid, pw->pw_gid);
    if (log_apply(cfg.log_level, cfg.log_format, cfg.log_file, "pgburrow-relay", err) < 0) {
        fprintf(stderr, "pgburrow-relay: %s\n", err);
        goto out_cfg;
    }
    uv_loop_init(&loop);
    if (relay_init(&relay, &loop, &cfg, err) < 0) {
        fprintf(stderr, "pgburrow-relay: %s\n", err);
        log_error("%s", err);
        relay_stop(&relay);
        goto out_loop;
    }
    if (args.check_config) {
        printf("pgburrow-relay: configuration OK\n");
        status = 0;
        relay_stop(&relay);
        goto out_loop;
    }
    if (relay_start(&relay, err) < 0 ||
        relay_reload_start(&relay, args.config_file, args.nflags, args.flags, err) < 0 ||
        drop_privileges(relay.cfg.user, err) < 0) {
        fprintf(stderr, "pgburrow-relay: %s\n", err);
        log_error("%s", err);
        relay_stop(&relay);
        goto out_loop;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;
out_loop:
    uv_run(&loop, UV_RUN_DEFAULT); /* let every close callback run */
    if (uv_loop_close(&loop) != 0)
        log_warn("event loop closed with handles still open");
    relay_free(&relay);
    log_info("stopped");
    log_open(NULL); /* close log_file */
    cli_args_free(&args);
    return status;
out_cfg:
    relay_config_free(&cfg);
    cli_args_free(&args);
    return status;
}
