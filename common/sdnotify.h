/*
 * sdnotify — tells a service manager (systemd, Type=notify) where the daemon stands: READY=1
 * once it serves, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a reload, STOPPING=1
 * when SIGTERM or SIGINT arrives, and WATCHDOG=1 from a timer on the event loop at half of
 * $WATCHDOG_USEC, so that a loop that stops turning gets the daemon restarted.
 *
 * The protocol is written here rather than taken from libsystemd: one datagram of
 * "KEY=VALUE\n" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or '@' for the
 * abstract namespace), a documented and stable interface (sd_notify(3)). The daemons then
 * build and behave the same with or without libsystemd-dev. Without $NOTIFY_SOCKET every call
 * is a no-op that returns 0. Sends never block the loop (MSG_DONTWAIT).
 *
 * struct sdnotify owns a timer and two signal handles, all unreferenced: they never keep the
 * loop running. The role's own SIGTERM/SIGINT handlers run as before (libuv calls every
 * handle watching a signal).
 */
#ifndef PGB_SDNOTIFY_H
#define PGB_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Send state (one or more "KEY=VALUE" lines) to $NOTIFY_SOCKET. 0 when sent or when there is
 * no $NOTIFY_SOCKET; negative errno otherwise (-EINVAL: the variable is not a usable address). */
int sdnotify_send(const char *state);

int sdnotify_ready(void);     /* READY=1 */
int sdnotify_reloading(void); /* RELOADING=1 and MONOTONIC_USEC=<CLOCK_MONOTONIC in µs> */
int sdnotify_stopping(void);  /* STOPPING=1 */

/* The watchdog interval asked for by $WATCHDOG_USEC, in µs: 0 when unset, invalid, or meant
 * for another process ($WATCHDOG_PID not ours). */
uint64_t sdnotify_watchdog_usec(void);

struct sdnotify {
    uv_timer_t watchdog;
    uv_signal_t sig_term, sig_int;
    bool started;
};

/* After the role has started: READY=1, the watchdog pings (when asked for) and STOPPING=1 on
 * SIGTERM/SIGINT. sn is borrowed until sdnotify_close(). */
void sdnotify_start(struct sdnotify *sn, uv_loop_t *loop);
/* Close the handles (run the loop once more to finish); tolerates a never-started sn. */
void sdnotify_close(struct sdnotify *sn);

#endif
