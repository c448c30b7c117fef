/*
 * reloader — what both daemons' reload has in common: a copy of the command line to read the
 * configuration again with, SIGHUP and SIGUSR1 handlers, and the watch on the directories of
 * the files the configuration reads (common/watch.h).
 *
 *   SIGHUP -----------------------+
 *   watched file changed (debounced) --> on_reload(ctx, "SIGHUP" | "file change PATH")
 *   SIGUSR1 ----------------------------> on_reopen(ctx)
 *
 * Owns the copy of the command line, its signal handles and the watch; reloader_close()
 * closes them and the reloader frees itself from the loop.
 */
#ifndef PGB_RELOADER_H
#define PGB_RELOADER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct reloader;

struct reloader_ops {
    void (*on_reload)(void *ctx, const char *trigger);
    void (*on_reopen)(void *ctx);
};

/* config_path may be NULL (flags only); path and flags are copied. Returns new, or NULL
 * (out of memory). */
struct reloader *reloader_new(uv_loop_t *loop, const char *config_path, int nflags,
                              char *const *flags, uint64_t debounce_ms,
                              const struct reloader_ops *ops, void *ctx);
const char *reloader_path(const struct reloader *rl);
int reloader_nflags(const struct reloader *rl);
char **reloader_flags(const struct reloader *rl);
/* Watch exactly these files (NULL entries are skipped); logs when it cannot. */
void reloader_watch(struct reloader *rl, const char *const *files, size_t n);
/* Close the handles; the reloader is freed once they are closed. NULL-tolerant. */
void reloader_close(struct reloader *rl);

#endif
