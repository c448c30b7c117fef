/*
 * reload — the agent's configuration reload and log reopening.
 *
 * Triggers: SIGHUP, and a change to the agent's certificate, key or CA file, or to a route's
 * upstream TLS files (common/watch.h: their directories are watched, 200 ms debounce). A
 * reload reads the configuration file again with the same command-line flags on top, builds
 * the TLS context for relays and the routes' upstream contexts, and only when all of that
 * succeeds swaps them in; otherwise it logs "reload: failed: REASON; keeping the running
 * configuration" and changes nothing.
 *
 * What a reload changes: tunnels stay up (their TLS connections keep the context they were
 * made with); new tunnels (every reconnect) use the new certificate; new sessions use the new
 * route table (host, port, upstream TLS); a removed route is refused for new sessions. Relay
 * addresses (agent_relays_update): a new one is dialed at once; a removed one is drained (GOAWAY:
 * the relay opens no new sessions on it; the tunnel closes when its last session ends) and
 * never dialed again. Not reloaded: the routes offered to relays already connected (HELLO is
 * sent once per tunnel: an added route is offered from the next tunnel on), the agent name (a
 * certificate with another CN is refused: restart to rename an agent), and keepalive of open
 * tunnels.
 *
 * SIGUSR1 reopens log_file (log rotation). Owns its signal handles, the watch and a copy of
 * the command line; agent_reload_stop() closes them and the module frees itself.
 */
#ifndef PGB_AGENT_RELOAD_H
#define PGB_AGENT_RELOAD_H

#include <stddef.h>

struct agent;

#define AGENT_RELOAD_DEBOUNCE_MS 200

/* Install SIGHUP/SIGUSR1 and start watching files (after agent_start). config_path may be
 * NULL; flags are copied. 0, or negative with err[cap]. */
int agent_reload_start(struct agent *a, const char *config_path, int nflags, char *const *flags,
                       char *err, size_t cap);
/* Reload now; trigger names the cause in the log line. 0 or negative. */
int agent_reload(struct agent *a, const char *trigger);
/* Close the handles (agent_stop); NULL-tolerant and safe before agent_reload_start. */
void agent_reload_stop(struct agent *a);

#endif
