/*
 * keytab — the cancel keys of live sessions, as their BackendKeyData carried them (backend pid
 * and secret key), for cancel routing: the relay finds the tunnel of a session it holds, the
 * agent the PostgreSQL server of one of its sessions (relay/cancel.h, agent/cancel_key.h).
 *
 * A keytab_watch reads one session's server-to-client bytes (read-only, with pgwire_bescan)
 * until the first ReadyForQuery, and enters the session's key in the table once its
 * BackendKeyData has passed. Lookups compare every candidate key in constant time, so that the
 * time taken tells nothing about how much of a guessed key was right.
 *
 * Owns: the table's bucket array. The watches belong to their sessions (the table borrows
 * them, one entry per session, so it is bounded by the sessions); a watch leaves the table
 * when it is finished. Keys are wiped when they leave; nothing here logs.
 */
#ifndef PGB_KEYTAB_H
#define PGB_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pgwire.h"

struct keytab_watch;

struct keytab {
    struct keytab_watch **buckets;
    size_t nbuckets; /* a power of 2 */
    size_t nkeys;
};

struct keytab_watch {
    struct keytab *tab;
    struct keytab_watch *hnext; /* bucket chain, while in the table */
    bool in_table;
    struct pgwire_bescan *scan; /* until the first ReadyForQuery */
    uint32_t pid;
    uint32_t key_len;
    uint8_t key[PGWIRE_KEY_MAX];
};

int keytab_init(struct keytab *t);  /* 0 or -ENOMEM */
void keytab_fini(struct keytab *t); /* every watch must have been finished */
size_t keytab_size(const struct keytab *t);
/* The watch whose session has key (pid, key[key_len]), or NULL. */
struct keytab_watch *keytab_find(const struct keytab *t, uint32_t pid, const uint8_t *key,
                                 size_t key_len);

/* Start watching a session for table t: 0 or -ENOMEM. */
int keytab_watch_init(struct keytab_watch *w, struct keytab *t);
/* The session's next server-to-client bytes. Returns false once there is nothing more to read
 * (the key, if any, is in the table): a tunnel_filter_fn's answer. */
bool keytab_watch_feed(struct keytab_watch *w, const uint8_t *data, size_t len);
/* Leave the table and wipe the key. Idempotent; a zeroed watch is fine too. */
void keytab_watch_fini(struct keytab_watch *w);

#endif
