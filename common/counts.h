/*
 * counts — live counts keyed by short strings (route names, client addresses), for the relay's
 * per-route and per-source session limits. An entry exists only while its count is above
 * zero, so the table never holds more entries than there are live sessions. Owns its keys.
 */
#ifndef PGB_COUNTS_H
#define PGB_COUNTS_H

#include <stdbool.h>
#include <stdint.h>

#define COUNTS_KEY_MAX 64 /* longer keys are cut (IPv6 text fits) */

struct counts;

struct counts *counts_new(void);    /* returns new, NULL on ENOMEM */
void counts_free(struct counts *c); /* accepts NULL */
uint32_t counts_get(const struct counts *c, const char *key);
int counts_add(struct counts *c, const char *key);  /* +1; 0 or -ENOMEM */
void counts_sub(struct counts *c, const char *key); /* -1; the entry goes at zero */
uint32_t counts_entries(const struct counts *c);

#endif
