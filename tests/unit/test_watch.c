/* Unit tests: common/watch, noticing replaced certificate files through their directory. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "common/watch.h"

struct seen {
    int calls;
    char path[PATH_MAX];
};

static void on_change(void *ctx, const char *path)
{
    struct seen *s = ctx;
    s->calls++;
    snprintf(s->path, sizeof(s->path), "%s", path);
}

static void write_file(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0); /* as renewal tools do */
}

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Run the loop for ms milliseconds. */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, stop_loop, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Run the loop until want callbacks were seen, for at most 10 s: the 50 ms debounce can take
 * far longer on a busy machine under a sanitizer, so no fixed wait decides a positive check.
 * Then 100 ms more, so that a split burst would show as an extra callback. */
static void run_until_calls(uv_loop_t *loop, const struct seen *seen, int want)
{
    for (int waited = 0; seen->calls < want && waited < 10000; waited += 20)
        run_for(loop, 20);
    run_for(loop, 100);
}

static void rename_over_symlink_swap_and_noise(void **state)
{
    uv_loop_t loop;
    struct seen seen = {0};
    char dir[] = "/tmp/pgburrow-watch-XXXXXX", crt[PATH_MAX], key[PATH_MAX], other[PATH_MAX],
         link[PATH_MAX], v1[PATH_MAX], v2[PATH_MAX];
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(crt, sizeof(crt), "%s/relay.crt", dir);
    snprintf(key, sizeof(key), "%s/relay.key", dir);
    snprintf(other, sizeof(other), "%s/unrelated.txt", dir);
    snprintf(link, sizeof(link), "%s/tls.crt", dir);
    snprintf(v1, sizeof(v1), "%s/v1.crt", dir);
    snprintf(v2, sizeof(v2), "%s/v2.crt", dir);
    write_file(crt, "one");
    write_file(key, "one");
    write_file(v1, "v1");
    write_file(v2, "v2");
    assert_int_equal(symlink("v1.crt", link), 0);

    assert_int_equal(uv_loop_init(&loop), 0);
    struct watch *w = watch_new(&loop, 50, on_change, &seen);
    assert_non_null(w);
    const char *files[] = {crt, key, NULL, link, crt};
    assert_int_equal(watch_set_files(w, files, 5), 0);

    /* an unrelated file in the same directory: checked, no callback */
    write_file(other, "noise");
    run_for(&loop, 200);
    assert_int_equal(seen.calls, 0);

    /* certificate and key replaced in a burst: one callback */
    write_file(crt, "two");
    write_file(key, "two");
    run_until_calls(&loop, &seen, 1);
    assert_int_equal(seen.calls, 1);
    assert_true(strcmp(seen.path, crt) == 0 || strcmp(seen.path, key) == 0);

    /* a symlink repointed by rename (the Kubernetes ..data swap) */
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/tls.crt.new", dir);
    assert_int_equal(symlink("v2.crt", tmp), 0);
    assert_int_equal(rename(tmp, link), 0);
    run_until_calls(&loop, &seen, 2);
    assert_int_equal(seen.calls, 2);
    assert_string_equal(seen.path, link);

    /* resync: a change already taken into account is not reported again */
    write_file(crt, "three");
    watch_resync(w);
    run_for(&loop, 300);
    assert_int_equal(seen.calls, 2);

    /* a file removed from the set is no longer reported */
    const char *only_key[] = {key};
    assert_int_equal(watch_set_files(w, only_key, 1), 0);
    write_file(crt, "four");
    run_for(&loop, 300);
    assert_int_equal(seen.calls, 2);

    watch_close(w);
    watch_close(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed, the watch freed */
    const char *names[] = {"relay.crt", "relay.key", "unrelated.txt",
                           "tls.crt",   "v1.crt",    "v2.crt"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rename_over_symlink_swap_and_noise),
    };
    return cmocka_run_group_tests_name("watch", tests, NULL, NULL);
}
