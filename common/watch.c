/*
 * watch.c — directory watches, a debounce timer, and file identities (see watch.h).
 *
 * Lifetime: the watch holds one reference for itself and one per open handle (timer, each
 * directory's uv_fs_event_t); watch_close drops its own and closes the handles; the last close
 * callback frees it.
 */
#include "common/watch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"

struct watch_file {
    char *path;
    bool seen_ok; /* last stat succeeded */
    int seen_errno;
    struct stat seen;
};

struct watch_dir {
    struct watch *w;
    struct watch_dir *next;
    uv_fs_event_t h;
    char *path;
    bool keep; /* scratch for watch_set_files */
};

struct watch {
    uv_loop_t *loop;
    uv_timer_t timer;
    uint64_t debounce_ms;
    uint64_t burst_start; /* loop time of the first event since the last check */
    watch_cb cb;
    void *ctx;
    struct watch_file *files;
    size_t nfiles;
    struct watch_dir *dirs;
    int refs;
    bool closing;
};

static void watch_unref(struct watch *w)
{
    if (--w->refs > 0)
        return;
    for (size_t i = 0; i < w->nfiles; i++)
        free(w->files[i].path);
    free(w->files);
    free(w);
}

static void record(struct watch_file *f)
{
    f->seen_ok = stat(f->path, &f->seen) == 0;
    f->seen_errno = f->seen_ok ? 0 : errno;
}

/* True when the file is no longer what record() saw (and records what it is now). */
static bool changed(struct watch_file *f)
{
    struct stat st;
    bool ok = stat(f->path, &st) == 0;
    int e = ok ? 0 : errno;
    bool diff;

    if (ok != f->seen_ok)
        diff = true;
    else if (!ok)
        diff = e != f->seen_errno;
    else
        diff = st.st_dev != f->seen.st_dev || st.st_ino != f->seen.st_ino ||
               st.st_size != f->seen.st_size || st.st_mtim.tv_sec != f->seen.st_mtim.tv_sec ||
               st.st_mtim.tv_nsec != f->seen.st_mtim.tv_nsec ||
               st.st_ctim.tv_sec != f->seen.st_ctim.tv_sec ||
               st.st_ctim.tv_nsec != f->seen.st_ctim.tv_nsec;
    f->seen_ok = ok;
    f->seen_errno = e;
    if (ok)
        f->seen = st;
    return diff;
}

static void on_debounced(uv_timer_t *timer)
{
    struct watch *w = timer->data;
    const char *first = NULL;

    if (w->closing)
        return;
    /* every file is re-recorded, so one callback covers all of them */
    for (size_t i = 0; i < w->nfiles; i++) {
        if (changed(&w->files[i]) && !first)
            first = w->files[i].path;
    }
    if (first)
        w->cb(w->ctx, first);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->w;

    if (w->closing)
        return;
    if (status < 0) {
        log_warn("watch: %s: %s", d->path, uv_strerror(status));
        return;
    }
    /* check once the writer has been quiet for debounce_ms, but not later than 10 debounce
     * periods after the first event, so that a directory that is never quiet still works */
    uint64_t now = uv_now(w->loop);
    if (!uv_is_active((uv_handle_t *)&w->timer))
        w->burst_start = now;
    else if (now - w->burst_start >= 10 * w->debounce_ms)
        return;
    uv_timer_start(&w->timer, on_debounced, w->debounce_ms, 0);
}

static void dir_closed(uv_handle_t *h)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->w;
    free(d->path);
    free(d);
    watch_unref(w);
}

static void timer_closed(uv_handle_t *h)
{
    watch_unref(h->data);
}

struct watch *watch_new(uv_loop_t *loop, uint64_t debounce_ms, watch_cb cb, void *ctx)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->loop = loop;
    w->debounce_ms = debounce_ms;
    w->cb = cb;
    w->ctx = ctx;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    w->refs = 2; /* itself + timer */
    return w;
}

/* dirname of path into out[PATH_MAX]; "." for a bare name. */
static void dir_of(const char *path, char *out)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(out, ".");
    } else if (slash == path) {
        strcpy(out, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= PATH_MAX)
            n = PATH_MAX - 1;
        memcpy(out, path, n);
        out[n] = '\0';
    }
}

static struct watch_dir *dir_find(struct watch *w, const char *path)
{
    for (struct watch_dir *d = w->dirs; d; d = d->next) {
        if (strcmp(d->path, path) == 0)
            return d;
    }
    return NULL;
}

/* Make sure dir is watched and marked kept. */
static void dir_want(struct watch *w, const char *path)
{
    struct watch_dir *d = dir_find(w, path);
    int rc;

    if (d) {
        d->keep = true;
        return;
    }
    d = calloc(1, sizeof(*d));
    if (!d || !(d->path = strdup(path))) {
        free(d);
        log_warn("watch: %s: out of memory; changes there are not noticed", path);
        return;
    }
    d->w = w;
    d->keep = true;
    uv_fs_event_init(w->loop, &d->h);
    d->h.data = d;
    w->refs++;
    rc = uv_fs_event_start(&d->h, on_fs_event, path, 0);
    if (rc < 0) {
        log_warn("watch: cannot watch directory %s: %s; changes there need SIGHUP", path,
                 uv_strerror(rc));
        uv_close((uv_handle_t *)&d->h, dir_closed);
        return;
    }
    d->next = w->dirs;
    w->dirs = d;
}

static struct watch_file *file_find(struct watch_file *files, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(files[i].path, path) == 0)
            return &files[i];
    }
    return NULL;
}

int watch_set_files(struct watch *w, const char *const *paths, size_t n)
{
    struct watch_file *files = calloc(n ? n : 1, sizeof(*files));
    size_t nfiles = 0;
    char dir[PATH_MAX], real[PATH_MAX];

    if (!files || w->closing) {
        free(files);
        return w->closing ? 0 : -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct watch_file *old;
        if (!paths[i] || !paths[i][0] || file_find(files, nfiles, paths[i]))
            continue;
        if (!(files[nfiles].path = strdup(paths[i]))) {
            for (size_t k = 0; k < nfiles; k++)
                free(files[k].path);
            free(files);
            return -ENOMEM;
        }
        old = file_find(w->files, w->nfiles, paths[i]);
        if (old) {
            files[nfiles].seen_ok = old->seen_ok;
            files[nfiles].seen_errno = old->seen_errno;
            files[nfiles].seen = old->seen;
        } else {
            record(&files[nfiles]);
        }
        nfiles++;
    }
    for (size_t i = 0; i < w->nfiles; i++)
        free(w->files[i].path);
    free(w->files);
    w->files = files;
    w->nfiles = nfiles;

    for (struct watch_dir *d = w->dirs; d; d = d->next)
        d->keep = false;
    for (size_t i = 0; i < nfiles; i++) {
        dir_of(files[i].path, dir);
        dir_want(w, dir);
        /* a symlink's target may be replaced in its own directory */
        if (realpath(files[i].path, real)) {
            dir_of(real, dir);
            dir_want(w, dir);
        }
    }
    for (struct watch_dir **p = &w->dirs; *p;) {
        struct watch_dir *d = *p;
        if (d->keep) {
            p = &d->next;
            continue;
        }
        *p = d->next;
        uv_close((uv_handle_t *)&d->h, dir_closed);
    }
    return 0;
}

void watch_resync(struct watch *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nfiles; i++)
        record(&w->files[i]);
}

void watch_close(struct watch *w)
{
    if (!w || w->closing)
        return;
    w->closing = true;
    while (w->dirs) {
        struct watch_dir *d = w->dirs;
        w->dirs = d->next;
        uv_close((uv_handle_t *)&d->h, dir_closed);
    }
    uv_close((uv_handle_t *)&w->timer, timer_closed);
    watch_unref(w); /* its own reference */
}
