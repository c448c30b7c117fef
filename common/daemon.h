/*
 * daemon — the start and the end both daemons share: the command line (--help, --version),
 * SIGPIPE ignored, the configuration built and the log opened, the role's context initialised
 * on one loop and started (or only checked, --check-config), the loop run until the context
 * stops, then run again so that every close callback runs, and everything freed.
 *
 * What differs between the agent and the relay comes in struct daemon_role, which daemon_main
 * borrows. Errors are reported once, on stderr and in the log.
 */
#ifndef PGB_DAEMON_H
#define PGB_DAEMON_H

#include <uv.h>

#include "common/cli.h"

struct daemon_role {
    const char *name;  /* "pgburrow-agent": messages and --version */
    const char *usage; /* --help */
    void *ctx;         /* the role's own: its configuration and its context */
    /* Build the configuration (file, then flags) and apply its log settings: 0, or negative
     * with err[CONFIG_ERR_MAX]; config_free then releases what was built. */
    int (*configure)(void *ctx, const struct cli_args *args, char *err);
    void (*config_free)(void *ctx);
    /* The context on loop, taking the configuration over; stop is called when this fails. */
    int (*init)(void *ctx, uv_loop_t *loop, char *err);
    /* Listen, dial, watch for reloads (args: the command line to build a reload from). */
    int (*start)(void *ctx, const struct cli_args *args, char *err);
    void (*stop)(void *ctx); /* close every handle: the loop then ends */
    void (*free)(void *ctx); /* after the loop ended */
};

/* Run the daemon; returns the process exit status (0, 1, or 2 for a bad command line). */
int daemon_main(const struct daemon_role *role, int argc, char **argv);

#endif
