/*
 * keytab — the cancel keys of live sessions, as their BackendKeyData carried them (backend pid
 * and secret key), for cancel routing: the relay finds the tunnel of a session it holds, the
 * agent the PostgreSQL server of one of its sessions (relay/cancel.h, agent/cancel_key.h).
 *
 * A session's entry follows its server's BackendKeyData as a pgwire_bescan reads the
 * server-to-client bytes (read-only) until the first ReadyForQuery; a keytab_watch bundles
 * both for owners that need nothing else from those messages. Lookups compare every candidate key
 * in constant time, so that the time taken tells nothing about how much of a guessed key was right.
 *
 * Owns: the table's bucket array. The entries belong to their sessions (the table borrows
 * them, one per session, so it is bounded by the sessions); an entry leaves the table when it
 * is finished. Keys are wiped when they leave; nothing here logs.
 */
#ifndef PGB_KEYTAB_H
#define PGB_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pgwire.h"

struct keytab_entry;

struct keytab {
    struct keytab_entry **buckets;
    size_t nbuckets; /* a power of 2 */
    size_t nkeys;
};

/* One session's key, in the table while the session has one. */
struct keytab_entry {
    struct keytab *tab;
    struct keytab_entry *hnext; /* bucket chain, while in the table */
    bool in_table;
    uint32_t pid;
    uint32_t key_len;
    uint8_t key[PGWIRE_KEY_MAX];
};

int keytab_init(struct keytab *t);  /* 0 or -ENOMEM */
void keytab_fini(struct keytab *t); /* every entry must have been finished */
size_t keytab_size(const struct keytab *t);
/* The entry whose session has key (pid, key[key_len]), or NULL. */
struct keytab_entry *keytab_find(const struct keytab *t, uint32_t pid, const uint8_t *key,
                                 size_t key_len);

/* An entry of table t, not in it yet. */
void keytab_entry_init(struct keytab_entry *e, struct keytab *t);
/* After pgwire_bescan_feed returned ev for the session's scanner: the entry follows the last
 * BackendKeyData (in the table with its key, or out of it when that one had no usable key). */
void keytab_entry_follow(struct keytab_entry *e, const struct pgwire_bescan *scan, unsigned ev);
/* Leave the table and wipe the key. Idempotent. */
void keytab_entry_fini(struct keytab_entry *e);

/* A scanner and an entry together, for a session whose owner needs nothing else from the
 * server's first messages (the agent). */
struct keytab_watch {
    struct keytab_entry e;      /* first */
    struct pgwire_bescan *scan; /* until the first ReadyForQuery */
};
/* Start watching a session for table t: 0 or -ENOMEM. */
int keytab_watch_init(struct keytab_watch *w, struct keytab *t);
/* The session's next server-to-client bytes. Returns false once there is nothing more to read
 * (the key, if any, is in the table): a tunnel_filter_fn's answer. */
bool keytab_watch_feed(struct keytab_watch *w, const uint8_t *data, size_t len);
/* Leave the table and wipe the key. Idempotent; a zeroed watch is fine too. */
void keytab_watch_fini(struct keytab_watch *w);

#endif
