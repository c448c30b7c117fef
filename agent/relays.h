/*
 * relays — the agent's relay entries: one per `relay = host:port` address of the configuration.
 *
 * An IP literal gets one link (links.h), as does a name that resolves to one address. A name
 * that resolves to several A/AAAA records (a Kubernetes headless Service, a DNS round robin)
 * gets one link per address, so that every relay behind the name has a tunnel to this agent.
 * Names are resolved again every resolve_interval (and soon after a link to them fails): new
 * addresses get a link; the links to addresses that disappeared are retired gracefully (GOAWAY,
 * closed once their sessions have ended). The relay certificate is always verified against the
 * name (or relay_server_name), never the address.
 *
 * Owns the entries and, through them, the links it adds (links.h); a retired link frees
 * itself once its sessions have ended.
 */
#ifndef PGB_AGENT_RELAYS_H
#define PGB_AGENT_RELAYS_H

#include <stdbool.h>
#include <stddef.h>
#include <netdb.h>

#define AGENT_ADDR_STRLEN 46     /* INET6_ADDRSTRLEN */
#define AGENT_RELAY_MAX_ADDRS 64 /* addresses used per name; more are ignored (logged) */

struct agent;
struct agent_link;
struct agent_relay;
struct agent_relay_addr;

/* Make the entries match a->cfg.relays: new addresses get an entry (and dial or resolve at
 * once), entries no longer configured are retired with their links. initial: at start-up
 * (nothing logged per entry). -ENOMEM when an entry could not be made (logged). */
int agent_relays_sync(struct agent *a, bool initial);
/* After a reload replaced a->cfg: dial relay addresses that are new, drain and close the
 * links to addresses that are gone (GOAWAY, then closed when their last session ends). */
void agent_relays_update(struct agent *a);
/* agent_stop: stop resolving (the links are closed by agent_stop). */
void agent_relays_stop(struct agent *a);
/* agent_free, after the loop ran out: free every entry. */
void agent_relays_free(struct agent *a);

/* Call fn for every configured relay entry with its label (host:port as configured) and how
 * many of its links have their tunnel up (metrics). */
typedef void (*agent_relay_up_fn)(void *ctx, const char *label, uint32_t up);
void agent_relays_foreach_up(const struct agent *a, agent_relay_up_fn fn, void *ctx);

/* Pure helpers (unit-tested). */

/* The distinct IPv4/IPv6 addresses of res as text, sorted (stable logs and comparisons),
 * at most cap. Returns how many; *truncated tells whether some were left out. */
size_t agent_addrs_from_addrinfo(const struct addrinfo *res, char (*out)[AGENT_ADDR_STRLEN],
                                 size_t cap, bool *truncated);
/* Set difference: cur_kept[i] = cur[i] is in next; next_new[j] = next[j] is not in cur. */
void agent_addrs_diff(const char (*cur)[AGENT_ADDR_STRLEN], size_t ncur,
                      const char (*next)[AGENT_ADDR_STRLEN], size_t nnext, bool *cur_kept,
                      bool *next_new);
/* "a, b, c" into buf (truncated to cap). */
void agent_addrs_join(const char (*addrs)[AGENT_ADDR_STRLEN], size_t n, char *buf, size_t cap);

#endif
