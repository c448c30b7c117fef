/*
 * pgburrow-relay: accepts agents' tunnels and PostgreSQL clients, and joins them.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "common/daemon.h"
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
    "                        (e.g. --relay.listen=127.0.0.1:5432, --route.db1.agents=a,b,\n"
    "                         --relay.metrics_listen=127.0.0.1:9187)\n"
    "  --check-config        validate the configuration (files included) and exit\n"
    "  -h, --help            show this help and exit\n"
    "  -V, --version         show the version and exit\n"
    "\n"
    "See pgburrow-relay(8) and deploy/relay.ini for every key.\n";

/* After the listeners are bound (a port below 1024 needs root), become `user` for good: its
 * groups, then its gid, then its uid; and check that root cannot be regained. */
static int drop_privileges(const char *user, char *err, size_t cap)
{
    struct passwd *pw;
    if (!user || !user[0])
        return 0;
    errno = 0;
    pw = getpwnam(user);
    if (!pw) {
        snprintf(err, cap, "user: no such user \"%s\"", user);
        return -ENOENT;
    }
    if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid) {
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0) {
            snprintf(err, cap, "user: cannot become \"%s\": %s", user, strerror(errno));
            return -EPERM;
        }
        if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
            snprintf(err, cap, "user: could regain root after dropping to \"%s\"", user);
            return -EPERM;
        }
    }
    log_info("running as user=%s uid=%u gid=%u", pw->pw_name, (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    return 0;
}

struct relay_main {
    struct relay_config cfg; /* until relay_init takes it over */
    struct relay relay;
};

static int relay_main_configure(void *ctx, const struct cli_args *args, char *err, size_t cap)
{
    struct relay_main *m = ctx;
    struct passwd *pw;

    relay_config_init(&m->cfg);
    if (relay_config_build(&m->cfg, args->config_file, args->nflags, args->flags, err, cap) < 0)
        return -EINVAL;
    /* log and audit files may belong to the user the relay becomes (log_file_open) */
    pw = m->cfg.user && m->cfg.user[0] ? getpwnam(m->cfg.user) : NULL;
    if (pw)
        log_set_file_owner(pw->pw_uid, pw->pw_gid);
    return log_apply(m->cfg.log_level, m->cfg.log_format, m->cfg.log_file, "pgburrow-relay", err,
                     cap);
}

static void relay_main_config_free(void *ctx)
{
    relay_config_free(&((struct relay_main *)ctx)->cfg);
}

static int relay_main_init(void *ctx, uv_loop_t *loop, char *err, size_t cap)
{
    struct relay_main *m = ctx;
    return relay_init(&m->relay, loop, &m->cfg, err, cap);
}

static int relay_main_start(void *ctx, const struct cli_args *args, char *err, size_t cap)
{
    struct relay *r = &((struct relay_main *)ctx)->relay;
    int rc = relay_start(r, err, cap);

    if (rc == 0)
        rc = relay_reload_start(r, args->config_file, args->nflags, args->flags, err, cap);
    if (rc == 0)
        rc = drop_privileges(r->cfg.user, err, cap);
    return rc;
}

static void relay_main_stop(void *ctx)
{
    relay_stop(&((struct relay_main *)ctx)->relay);
}

static void relay_main_free(void *ctx)
{
    relay_free(&((struct relay_main *)ctx)->relay);
}

int main(int argc, char **argv)
{
    struct relay_main m;
    const struct daemon_role role = {
        .name = "pgburrow-relay",
        .usage = usage,
        .ctx = &m,
        .configure = relay_main_configure,
        .config_free = relay_main_config_free,
        .init = relay_main_init,
        .start = relay_main_start,
        .stop = relay_main_stop,
        .free = relay_main_free,
    };

    return daemon_main(&role, argc, argv);
}
