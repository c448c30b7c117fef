/*
 * daemon — the start and the end both daemons share: the command line (--help, --version),
 * SIGPIPE ignored, the configuration built and the log opened, the role's context initialised
 * on one loop and started (or only checked, --check-config), the loop run until the context
 * stops, then run again so that every close callback runs, and everything freed.
 *
 * What differs between the agent and the relay comes in struct daemon_role, which daemon_main
 * borrows. Errors are reported once, on stderr and in the log. Also the signal handling and
 * drain both contexts share (struct daemon_signals).
 */
#ifndef PGB_DAEMON_H
#define PGB_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/cli.h"

struct daemon_role {
    const char *name;  /* "pgburrow-agent": messages and --version */
    const char *usage; /* --help */
    void *ctx;         /* the role's own: its configuration and its context */
    /* Build the configuration (file, then flags) and apply its log settings: 0, or negative
     * with err[cap]; config_free then releases what was built. */
    int (*configure)(void *ctx, const struct cli_args *args, char *err, size_t cap);
    void (*config_free)(void *ctx);
    /* The context on loop, taking the configuration over; stop is called when this fails. */
    int (*init)(void *ctx, uv_loop_t *loop, char *err, size_t cap);
    /* Listen, dial, watch for reloads (args: the command line to build a reload from). */
    int (*start)(void *ctx, const struct cli_args *args, char *err, size_t cap);
    void (*stop)(void *ctx); /* close every handle: the loop then ends */
    void (*free)(void *ctx); /* after the loop ended */
};

/* Run the daemon; returns the process exit status (0, 1, or 2 for a bad command line). */
int daemon_main(const struct daemon_role *role, int argc, char **argv);

/*
 * Signals and drain, the same in both daemons: the first SIGTERM drains (ops->drain, which
 * calls daemon_drain_start: no new sessions, running ones may finish), a second SIGTERM or a
 * SIGINT stops at once (ops->stop), also while the role waits before its drain; a drain stops once
 * ops->sessions says none is left, or at its deadline. Lives inside the role's context; the
 * handles' data is ctx, so that the role's close callbacks find it.
 */
struct daemon_signal_ops {
    void (*drain)(void *ctx);
    void (*stop)(void *ctx);
    uint64_t (*sessions)(void *ctx); /* sessions still running */
};

struct daemon_signals {
    uv_signal_t term, intr;
    uv_timer_t drain_timer;
    uint64_t drain_deadline_ms;
    bool started;   /* term and intr are open */
    bool draining;  /* drain_timer is open */
    bool term_seen; /* the first SIGTERM drained (or began the role's drain delay) */
    const struct daemon_signal_ops *ops;
    void *ctx;
};

/* Handle SIGTERM and SIGINT on loop from now on (2 handles). */
void daemon_signals_start(struct daemon_signals *s, uv_loop_t *loop,
                          const struct daemon_signal_ops *ops, void *ctx);
/* Start the drain: check every 100 ms until no session is left or timeout_ms have passed,
 * then ops->stop (1 handle). */
void daemon_drain_start(struct daemon_signals *s, uv_loop_t *loop, uint64_t timeout_ms);
/* Close every handle opened above, each with cb (may be NULL). */
void daemon_signals_close(struct daemon_signals *s, uv_close_cb cb);

#endif
