#include "common/counts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct count_entry {
    struct count_entry *next;
    uint32_t n;
    char key[COUNTS_KEY_MAX];
};

struct counts {
    struct count_entry **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t nentries;
};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; s[i] && i < COUNTS_KEY_MAX - 1; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static bool key_eq(const struct count_entry *e, const char *key)
{
    return strncmp(e->key, key, COUNTS_KEY_MAX - 1) == 0;
}

struct counts *counts_new(void)
{
    struct counts *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

void counts_free(struct counts *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nbuckets; i++) {
        while (c->buckets[i]) {
            struct count_entry *e = c->buckets[i];
            c->buckets[i] = e->next;
            free(e);
        }
    }
    free(c->buckets);
    free(c);
}

static struct count_entry **find(const struct counts *c, const char *key)
{
    struct count_entry **pp = &c->buckets[hash(key) & (c->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if (key_eq(*pp, key))
            break;
    return pp;
}

uint32_t counts_get(const struct counts *c, const char *key)
{
    struct count_entry *e = *find(c, key);
    return e ? e->n : 0;
}

static void grow(struct counts *c)
{
    uint32_t n = c->nbuckets * 2;
    struct count_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* keep the longer chains: still correct */
    for (uint32_t i = 0; i < c->nbuckets; i++) {
        while (c->buckets[i]) {
            struct count_entry *e = c->buckets[i];
            c->buckets[i] = e->next;
            uint32_t h = hash(e->key) & (n - 1);
            e->next = b[h];
            b[h] = e;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

int counts_add(struct counts *c, const char *key)
{
    struct count_entry **pp = find(c, key);
    if (*pp) {
        (*pp)->n++;
        return 0;
    }
    struct count_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    strncpy(e->key, key, COUNTS_KEY_MAX - 1);
    e->n = 1;
    *pp = e;
    if (++c->nentries > c->nbuckets)
        grow(c);
    return 0;
}

void counts_sub(struct counts *c, const char *key)
{
    struct count_entry **pp = find(c, key);
    struct count_entry *e = *pp;
    if (!e)
        return;
    if (--e->n == 0) {
        *pp = e->next;
        free(e);
        c->nentries--;
    }
}

uint32_t counts_entries(const struct counts *c)
{
    return c->nentries;
}
