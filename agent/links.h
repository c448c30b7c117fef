/*
 * links — the agent's tunnels: one link per relay address, dialing it, keeping its tunnel up
 * (HELLO, WELCOME, keepalive, GOAWAY) and redialing after any failure with full-jitter
 * exponential backoff; each OPEN on a tunnel starts a session (session.h).
 *
 * The agent owns the list of links (a->links); a relay entry (relays.h) adds and retires the
 * links of its addresses and is told through agent_link_failed_fn when one fails. A retired
 * link frees itself once its sessions have ended.
 */
#ifndef PGB_AGENT_LINKS_H
#define PGB_AGENT_LINKS_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct agent;
struct agent_config;
struct agent_link;
struct agent_relay;
struct agent_relay_addr;

/* A link's tunnel failed or could not be set up (it redials on its own). */
typedef void (*agent_link_failed_fn)(struct agent_relay *owner);

/* A new link dialing addr (an IP literal or name) at once; the relay certificate is checked
 * against server_name (unless relay_server_name is set); label names it in logs. failed is
 * called with owner after each failure until the link is retired. NULL when out of memory
 * (logged). */
struct agent_link *agent_link_add(struct agent *a, const struct agent_relay_addr *addr,
                                  const char *server_name, const char *label,
                                  agent_link_failed_fn failed, struct agent_relay *owner);
/* No new sessions (GOAWAY to the relay), close once the last session ended (at once when
 * idle), never dial again; the link frees itself. why is logged. */
void agent_link_retire(struct agent_link *l, const char *why);

/* Whether the link's tunnel is up (WELCOME received, not failed since). */
bool agent_link_is_up(const struct agent_link *l);
/* Links whose tunnel is up, retired ones included (their sessions go on). */
uint64_t agent_links_up(const struct agent *a);
/* Sessions open on every link's tunnel. */
uint64_t agent_links_nsessions(const struct agent *a);
/* GOAWAY on every tunnel: no new sessions (drain). */
void agent_links_goaway(struct agent *a, const char *why);
/* agent_stop: close every tunnel, connection attempt and timer. */
void agent_links_stop(struct agent *a);
/* agent_free, after the loop ran out: free every link. */
void agent_links_free(struct agent *a);

/* The TLS client context for the tunnels to relays, from cfg (start-up and reload). Returns
 * new, or NULL with err[cap]. A reload replaces cfg and relay_ctx between loop
 * turns: never keep a pointer into a->cfg across turns (copy what you need). */
SSL_CTX *agent_links_ctx_new(const struct agent_config *cfg, char *err, size_t cap);

/* Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)] ms. Pure. */
uint64_t agent_backoff_ms(uint64_t base_ms, uint64_t cap_ms, uint32_t attempt, uint64_t rnd);

#endif
