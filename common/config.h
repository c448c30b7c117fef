/*
 * config — INI files (libinih) and command-line overrides, with exact error messages.
 *
 * A daemon describes its keys with a handler; config_load() feeds it every key of the file,
 * config_apply_flag() feeds it one `--section.key=value` flag (flags are applied after the
 * file, so they win). Routes are sections named "route NAME"; a flag addresses them as
 * `--route.NAME.key=value`. Errors name the source, line and key:
 *   relay.ini:12: [relay] tunnel_listen: expected host:port, got "7443"
 * This module owns nothing beyond the call; handlers copy what they keep.
 */
#ifndef PGB_CONFIG_H
#define PGB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/err.h"

/* Return 0, or negative with a message (without source/line/key: the caller adds them)
 * written to err[cap]. -ENOENT means "unknown key".
 * When a section starts (a "[section]" line, or before each flag) the handler is called once
 * with key == NULL and value == NULL, so that it can refuse an unknown section (-ENOENT means
 * "unknown section" there) or create an empty one (a "[route x]" without keys is a route).
 * Section names are passed with blanks trimmed and collapsed ("route  x " -> "route x"). */
typedef int (*config_handler)(void *ctx, const char *section, const char *key, const char *value,
                              char *err, size_t cap);

/* Parse an INI file. On error returns negative and writes "path:line: [section] key: why"
 * into err. A file that cannot be opened is an error naming the path and errno text.
 * A repeated section or a repeated key within one file is an error. Lines hold at most
 * 4095 bytes. */
int config_load(const char *path, config_handler h, void *ctx, char *err, size_t cap);

/* Apply one flag of the form "--section.key=value" or "--route.NAME.key=value".
 * (argv splitting of "--k v" is the caller's business.) Same error format, source
 * "command line". */
int config_apply_flag(const char *flag, config_handler h, void *ctx, char *err, size_t cap);

/* Value parsers: return 0 or -EINVAL with a reason in err[cap]. */
int config_parse_bool(const char *v, bool *out, char *err,
                      size_t cap); /* on/off true/false yes/no 1/0 */
int config_parse_uint(const char *v, uint64_t min, uint64_t max, uint64_t *out, char *err,
                      size_t cap);
int config_parse_duration_ms(const char *v, uint64_t *out, char *err,
                             size_t cap); /* "250ms" "5s" "2m" "1h"; bare = s */
int config_parse_size(const char *v, uint64_t *out, char *err,
                      size_t cap); /* "4096" "64k" "16M" "1G" (KiB..) */
/* "host:port", "[v6]:port", "*:port" (= all addresses). host copied into host[256]. */
int config_parse_hostport(const char *v, char *host, uint16_t *port, char *err, size_t cap);
/* Split "a, b ,c" on commas; trims blanks; empty items are an error. Calls cb per item. */
int config_parse_list(const char *v, int (*cb)(void *ctx, const char *item, char *err, size_t cap),
                      void *ctx, char *err, size_t cap);

/* Replace *dst (freed) by a new copy of v. Returns 0, or -ENOMEM leaving *dst unchanged. */
int config_set_str(char **dst, const char *v);

/* Load path (may be NULL), then each flag ("--x.y=z"), then check(ctx): the whole config.
 * A check failure is reported as "path: why". */
int config_build(const char *path, int nflags, char **flags, config_handler h,
                 int (*check)(const void *ctx, char *err, size_t cap), void *ctx, char *err,
                 size_t cap);

/* Whether two optional settings differ (NULL equals only NULL): what a reload changed. */
bool config_str_differs(const char *a, const char *b);
/* Helpers for daemons' key handlers (all return 0 or negative with err filled). */
#define CONFIG_DURATION_MAX_MS (24ull * 60 * 60 * 1000) /* also fits u32 protocol fields */
void config_err(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A new [route.NAME] section: name checked (a route name, PROTO_NAME_MAX), then one zeroed
 * element of size bytes appended to the array *items of *n (at most max). Returns it in *out,
 * or -EINVAL with err[cap], or -ENOMEM. The caller copies the name in. */
int config_route_append(void **items, size_t *n, size_t size, size_t max, const char *name,
                        void **out, char *err, size_t cap);
/* An optional string: empty means "not set" (the default applies). */
int config_set_optional(char **dst, const char *value);
/* An optional listen address (metrics_listen): empty means off, else host:port. */
int config_set_optional_hostport(char **dst, const char *value, char *err, size_t cap);
/* A duration from 1ms to 24h. */
int config_set_duration(uint64_t *dst, const char *value, char *err, size_t cap);
/* A per-stream flow-control window: a size from 16k to 16M (PROTO_MAX_WINDOW). */
#define CONFIG_WINDOW_MIN 16384
int config_set_window(uint64_t *dst, const char *value, char *err, size_t cap);
/* log_level / log_format values, validated, kept as strings. */
int config_set_log_level(char **dst, const char *value, char *err, size_t cap);
int config_set_log_format(char **dst, const char *value, char *err, size_t cap);

#endif
