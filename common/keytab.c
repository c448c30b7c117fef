/*
 * keytab.c — a chained hash table of session cancel keys (see keytab.h). It grows at load 1
 * so that chains stay short; a failed grow only costs speed.
 */
#include "common/keytab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#define KEYTAB_BUCKETS_MIN 64

int keytab_init(struct keytab *t)
{
    memset(t, 0, sizeof(*t));
    t->buckets = calloc(KEYTAB_BUCKETS_MIN, sizeof(*t->buckets));
    if (!t->buckets)
        return -ENOMEM;
    t->nbuckets = KEYTAB_BUCKETS_MIN;
    return 0;
}

void keytab_fini(struct keytab *t)
{
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

size_t keytab_size(const struct keytab *t)
{
    return t->nkeys;
}

static size_t bucket_of(const struct keytab *t, uint32_t pid)
{
    return ((pid * 2654435761u) >> 8) & (t->nbuckets - 1);
}

static void grow(struct keytab *t)
{
    size_t n = t->nbuckets * 2;
    struct keytab_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    struct keytab_entry **old = t->buckets;
    size_t oldn = t->nbuckets;
    t->buckets = b;
    t->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (struct keytab_entry *w = old[i], *next; w; w = next) {
            next = w->hnext;
            size_t k = bucket_of(t, w->pid);
            w->hnext = b[k];
            b[k] = w;
        }
    }
    free(old);
}

static void insert(struct keytab_entry *w)
{
    struct keytab *t = w->tab;
    if (t->nkeys >= t->nbuckets)
        grow(t);
    size_t k = bucket_of(t, w->pid);
    w->hnext = t->buckets[k];
    t->buckets[k] = w;
    w->in_table = true;
    t->nkeys++;
}

static void remove_key(struct keytab_entry *w)
{
    struct keytab *t = w->tab;
    if (!w->in_table)
        return;
    for (struct keytab_entry **pp = &t->buckets[bucket_of(t, w->pid)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == w) {
            *pp = w->hnext;
            break;
        }
    }
    w->in_table = false;
    w->hnext = NULL;
    t->nkeys--;
}

struct keytab_entry *keytab_find(const struct keytab *t, uint32_t pid, const uint8_t *key,
                                 size_t key_len)
{
    struct keytab_entry *found = NULL;
    /* every entry with this pid is compared in full (pids of different servers can clash) */
    for (struct keytab_entry *w = t->buckets[bucket_of(t, pid)]; w; w = w->hnext) {
        if (w->pid == pid && w->key_len == key_len && CRYPTO_memcmp(w->key, key, key_len) == 0)
            found = w;
    }
    return found;
}

void keytab_entry_init(struct keytab_entry *e, struct keytab *t)
{
    memset(e, 0, sizeof(*e));
    e->tab = t;
}

void keytab_entry_follow(struct keytab_entry *e, const struct pgwire_bescan *scan, unsigned ev)
{
    /* a new key, or a later BackendKeyData without a usable one: the table follows the last */
    if (!(ev & PGWIRE_BESCAN_KEY) && !(e->in_table && !scan->have_key))
        return;
    remove_key(e);
    if (scan->have_key) {
        e->pid = scan->pid;
        e->key_len = scan->key_len;
        memcpy(e->key, scan->key, e->key_len);
        insert(e);
    }
}

void keytab_entry_fini(struct keytab_entry *e)
{
    if (e->tab)
        remove_key(e);
    OPENSSL_cleanse(e->key, sizeof(e->key));
    e->pid = 0;
    e->key_len = 0;
}

int keytab_watch_init(struct keytab_watch *w, struct keytab *t)
{
    memset(w, 0, sizeof(*w));
    w->scan = malloc(sizeof(*w->scan));
    if (!w->scan)
        return -ENOMEM;
    pgwire_bescan_init(w->scan);
    keytab_entry_init(&w->e, t);
    return 0;
}

/* The scanner is needed only until the first ReadyForQuery: wipe it (it saw the key) and free
 * it, so that a long session holds just its key. */
static void scan_end(struct keytab_watch *w)
{
    if (!w->scan)
        return;
    OPENSSL_cleanse(w->scan, sizeof(*w->scan));
    free(w->scan);
    w->scan = NULL;
}

bool keytab_watch_feed(struct keytab_watch *w, const uint8_t *data, size_t len)
{
    if (!w->scan)
        return false;
    keytab_entry_follow(&w->e, w->scan, pgwire_bescan_feed(w->scan, data, len));
    if (!w->scan->done)
        return true;
    scan_end(w);
    return false;
}

void keytab_watch_fini(struct keytab_watch *w)
{
    keytab_entry_fini(&w->e);
    scan_end(w);
}
