#include "common/reloader.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sdnotify.h"
#include "common/watch.h"

struct reloader {
    const struct reloader_ops *ops;
    void *ctx;
    char *path; /* NULL: no configuration file, flags only */
    int nflags;
    char **flags;
    uv_signal_t sig_hup, sig_usr1;
    struct watch *watch;
    int open_handles;
};

static void reloader_free(struct reloader *rl)
{
    free(rl->path);
    for (int i = 0; i < rl->nflags; i++)
        free(rl->flags[i]);
    free(rl->flags);
    free(rl);
}

static void handle_closed(uv_handle_t *h)
{
    struct reloader *rl = h->data;
    if (--rl->open_handles == 0)
        reloader_free(rl);
}

static void on_sighup(uv_signal_t *sig, int signum)
{
    struct reloader *rl = sig->data;
    /* the files are read after this point: a change after it is noticed by the watch */
    watch_resync(rl->watch);
    sdnotify_reloading();
    rl->ops->on_reload(rl->ctx, "SIGHUP");
    sdnotify_ready(); /* the old configuration goes on when the new one is refused */
}

static void on_sigusr1(uv_signal_t *sig, int signum)
{
    struct reloader *rl = sig->data;
    rl->ops->on_reopen(rl->ctx);
}

static void on_file_change(void *ctx, const char *path)
{
    struct reloader *rl = ctx;
    char trigger[300];
    snprintf(trigger, sizeof(trigger), "file change %s", path);
    sdnotify_reloading();
    rl->ops->on_reload(rl->ctx, trigger);
    sdnotify_ready();
}

struct reloader *reloader_new(uv_loop_t *loop, const char *config_path, int nflags,
                              char *const *flags, uint64_t debounce_ms,
                              const struct reloader_ops *ops, void *ctx)
{
    struct reloader *rl = calloc(1, sizeof(*rl));

    if (!rl)
        return NULL;
    rl->ops = ops;
    rl->ctx = ctx;
    if (config_path && !(rl->path = strdup(config_path)))
        goto nomem;
    if (nflags > 0 && !(rl->flags = calloc((size_t)nflags, sizeof(*rl->flags))))
        goto nomem;
    for (; rl->nflags < nflags; rl->nflags++) {
        if (!(rl->flags[rl->nflags] = strdup(flags[rl->nflags])))
            goto nomem;
    }
    rl->watch = watch_new(loop, debounce_ms, on_file_change, rl);
    if (!rl->watch)
        goto nomem;
    uv_signal_init(loop, &rl->sig_hup);
    uv_signal_init(loop, &rl->sig_usr1);
    rl->sig_hup.data = rl->sig_usr1.data = rl;
    rl->open_handles = 2;
    uv_signal_start(&rl->sig_hup, on_sighup, SIGHUP);
    uv_signal_start(&rl->sig_usr1, on_sigusr1, SIGUSR1);
    return rl;
nomem:
    reloader_free(rl);
    return NULL;
}

const char *reloader_path(const struct reloader *rl)
{
    return rl->path;
}

int reloader_nflags(const struct reloader *rl)
{
    return rl->nflags;
}

char **reloader_flags(const struct reloader *rl)
{
    return rl->flags;
}

void reloader_watch(struct reloader *rl, const char *const *files, size_t n)
{
    if (watch_set_files(rl->watch, files, n) < 0)
        log_warn("reload: out of memory; certificate files are not watched");
}

void reloader_close(struct reloader *rl)
{
    if (!rl)
        return;
    watch_close(rl->watch);
    rl->watch = NULL;
    uv_close((uv_handle_t *)&rl->sig_hup, handle_closed);
    uv_close((uv_handle_t *)&rl->sig_usr1, handle_closed);
}
