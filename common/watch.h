/*
 * watch — notices that files were replaced or rewritten, so that renewed certificates, keys,
 * CAs and CRLs are picked up with no signal.
 *
 * It watches the DIRECTORY of each file (and the directory of the file a symlink resolves to),
 * not the file: renewals replace files rather than rewrite them (certbot repoints symlinks in
 * live/, Kubernetes/cert-manager renames a "..data" symlink, `mv` renames over the old name),
 * and a watch on the file itself would stay on the old inode and see nothing. Any event in a
 * watched directory (re)starts a debounce timer, because writers touch several files in a row
 * (certificate, then key); when it fires, each file's identity (device, inode, size, mtime,
 * ctime, through symlinks; or the stat error) is compared with the last one seen, and the
 * callback runs once if any differ, naming the first that did. Unrelated files in the same
 * directories therefore cost a stat per watched file and nothing else.
 *
 * Owns its libuv handles and copies of the paths. watch_close() closes the handles; the watch
 * frees itself from the loop once they are closed.
 */
#ifndef PGB_WATCH_H
#define PGB_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct watch;

/* path: the first watched file found changed (valid during the call only). */
typedef void (*watch_cb)(void *ctx, const char *path);

/* Returns new, or NULL (out of memory). debounce_ms: quiet time before checking. */
struct watch *watch_new(uv_loop_t *loop, uint64_t debounce_ms, watch_cb cb, void *ctx);

/* Replace the set of watched files (NULL and empty entries are skipped, duplicates merged).
 * Files already watched keep their last-seen identity, so a change noticed while the set is
 * replaced is not lost; new files are recorded as they are now. A directory that cannot be
 * watched is logged (warning) and skipped. Returns 0 or -ENOMEM (the previous set stays). */
int watch_set_files(struct watch *w, const char *const *paths, size_t n);

/* Record the current identity of every watched file without calling back (after a reload
 * that was not triggered by the watch, so that it does not fire again for the same files). */
void watch_resync(struct watch *w);

/* Stop watching; NULL-tolerant. The watch is freed once its handles are closed. */
void watch_close(struct watch *w);

#endif
