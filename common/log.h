/*
 * log — one leveled logging API for both daemons.
 *
 * Lines go to stderr (or a file given to log_open) as text or JSON, one event per line:
 *   text: 2026-11-23T12:00:00.123Z INFO  [t3 s17] session opened route=demo
 *   json: {"ts":"...","level":"info","tunnel":3,"stream":17,"msg":"session opened route=demo"}
 * Tunnel and stream ids are prefixed when non-zero (log_t / log_s variants).
 * Each message is escaped as a whole (escape.h: text or JSON style), so that strings a peer
 * chose cannot start a line of their own or break the JSON, whatever the caller formats.
 * The settings are process-wide and written only at start-up or reload, from the loop thread;
 * everything else reads them. Never pass secrets or key material to these functions.
 */
#ifndef PGB_LOG_H
#define PGB_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_TEXT = 0, LOG_JSON };

/* Parse "debug|info|warn|error" / "text|json". Return 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

void log_configure(enum log_level level, enum log_format format, const char *program);
/* Redirect to a file (append, log_file_open with mode 0640); NULL means stderr. Returns 0 or
 * -errno. */
int log_open(const char *path);
/*
 * Open path for appending, as a log or audit file, without letting whoever controls its
 * directory redirect the writes: O_NOFOLLOW (a symlink is refused), O_CLOEXEC, O_NOCTTY; the
 * file must be a regular file with a single link, owned by this process's user or by the
 * service user (log_set_file_owner). A new file gets mode; an existing one whose mode allows
 * more is narrowed to it. A file created by root for a service user is given to that user, so
 * that the service can reopen it after dropping privileges. Returns the fd, or -errno with a
 * sentence in err[cap].
 */
int log_file_open(const char *path, mode_t mode, char *err, size_t cap);
/* The user the daemon runs as after start-up (relay `user`); files it owns are accepted. */
void log_set_file_owner(uid_t uid, gid_t gid);
bool log_enabled(enum log_level level);
/* Configure from a daemon's settings (level/format names, optional file; NULL = default).
 * Returns 0, or -EINVAL with a sentence in err[cap]. */
int log_apply(const char *level, const char *format, const char *file, const char *program,
              char *err, size_t cap);
/* A reload: level and format names already validated with the configuration (NULL = default);
 * the program name and the file stay. */
void log_reconfigure(const char *level, const char *format);

void log_msg(enum log_level level, uint32_t tunnel, uint32_t stream, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void log_vmsg(enum log_level level, uint32_t tunnel, uint32_t stream, const char *fmt, va_list ap);

#define log_debug(...) log_msg(LOG_DEBUG, 0, 0, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, 0, 0, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, 0, 0, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, 0, 0, __VA_ARGS__)

#endif
