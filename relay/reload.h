/*
 * reload — the relay's configuration reload and log reopening.
 *
 * Triggers: SIGHUP, and a change to any certificate, key, CA, CRL or ident map file the
 * configuration names (common/watch.h: their directories are watched, 200 ms debounce, so
 * certbot, cert-manager and `mv` renewals are seen). A reload reads the configuration file
 * again with the same command-line flags on top, builds every TLS context from it, and only
 * when all of that succeeds swaps the configuration and the contexts in at once; otherwise it
 * logs "reload: failed: REASON; keeping the running configuration" and changes nothing.
 *
 * What a reload changes: new connections use the new certificates and settings; sessions and
 * tunnels that are open keep their TLS connection (each SSL holds its own reference on the
 * context it was made with). Routes: every up tunnel is re-checked (relay_agents_recheck).
 * Not reloadable: listen and tunnel_listen (a warning says a restart is needed; the old
 * addresses stay in force), and the keepalive settings of tunnels already up.
 *
 * SIGUSR1 reopens the audit log and log_file at the same paths (log rotation).
 * Owns its signal handles, the watch and a copy of the command line; relay_reload_stop()
 * closes them and the module frees itself from the loop.
 */
#ifndef PGB_RELAY_RELOAD_H
#define PGB_RELAY_RELOAD_H

#include <stddef.h>

#include <stdbool.h>

struct relay;

#define RELAY_RELOAD_DEBOUNCE_MS 200

/* Install SIGHUP/SIGUSR1 and start watching files (after relay_start). config_path may be
 * NULL (flags only); flags are copied. 0, or negative with err[cap]. */
int relay_reload_start(struct relay *r, const char *config_path, int nflags, char *const *flags,
                       char *err, size_t cap);
/* Reload now. trigger: for the log line ("SIGHUP", "file change PATH", "admin console"). 0,
 * or negative with the reason (also logged) in err[cap]. */
int relay_reload(struct relay *r, const char *trigger, char *err, size_t cap);
/* Close the handles (relay_stop); NULL-tolerant and safe before relay_reload_start. */
void relay_reload_stop(struct relay *r);
/* Check the certificates of every running tunnel and certificate-authenticated session again:
 * after a reload (reverify: the new CA, CRL and ident map) or when one expires (the timer of
 * cert_expiry.h at the earliest notAfter among them, at least hourly). A tunnel no longer
 * accepted gets GOAWAY 28000 and closes; a session gets FATAL 28000. Logged; audited as
 * tunnel_down / session_end. */
void relay_certs_recheck(struct relay *r, bool reverify);

#endif
