/*
 * libFuzzer harness for common/config: the input is written to a memfd and loaded as an INI
 * file through a local handler that runs every value parser, then each input line is applied
 * as a command-line flag. (The fuzz build links common/ and proto/ only, not relay/.)
 * Sections: any name but "nope" (refused); keys: "bool", "uint", "duration", "size",
 * "hostport", "list", "str" run one parser and fail with it; any other key runs them all and
 * is accepted, except "unknown" (-ENOENT).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/config.h"

struct fuzz_ctx {
    char *str;
    unsigned items;
};

static int on_item(void *ctx, const char *item, char *err, size_t cap)
{
    struct fuzz_ctx *f = ctx;
    size_t n = strlen(item);
    /* Items are never empty and never start or end with a blank. */
    if (n == 0 || item[0] == ' ' || item[0] == '\t' || item[n - 1] == ' ' || item[n - 1] == '\t')
        abort();
    if (strcmp(item, "stop") == 0) {
        snprintf(err, cap, "stop");
        return -EINVAL;
    }
    f->items++;
    return 0;
}

static int run_parser(struct fuzz_ctx *f, const char *key, const char *value, char *err, size_t cap)
{
    bool b;
    uint64_t u;
    char host[256];
    uint16_t port;

    if (strcmp(key, "bool") == 0)
        return config_parse_bool(value, &b, err, cap);
    if (strcmp(key, "uint") == 0)
        return config_parse_uint(value, 1, 65535, &u, err, cap);
    if (strcmp(key, "duration") == 0)
        return config_parse_duration_ms(value, &u, err, cap);
    if (strcmp(key, "size") == 0)
        return config_parse_size(value, &u, err, cap);
    if (strcmp(key, "hostport") == 0) {
        int rc = config_parse_hostport(value, host, &port, err, cap);
        if (rc == 0 && (port == 0 || host[0] == '\0' || strlen(host) > 255))
            abort();
        return rc;
    }
    if (strcmp(key, "list") == 0)
        return config_parse_list(value, on_item, f, err, cap);
    if (strcmp(key, "str") == 0)
        return config_set_str(&f->str, value);
    return -ENOENT;
}

static int fuzz_handle(void *ctx, const char *section, const char *key, const char *value,
                       char *err, size_t cap)
{
    static const char *const keys[] = {"bool", "uint", "duration", "size", "hostport", "list"};
    struct fuzz_ctx *f = ctx;

    if (section[0] == '\0' || section[0] == ' ' || strstr(section, "  "))
        abort(); /* sections arrive trimmed and collapsed */
    if (strcmp(section, "nope") == 0)
        return -ENOENT;
    if (!key)
        return 0;
    if (strcmp(key, "unknown") == 0)
        return -ENOENT;
    int rc = run_parser(f, key, value, err, cap);
    if (rc != -ENOENT)
        return rc;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char scratch[PGB_ERR_MAX];
        (void)run_parser(f, keys[i], value, scratch, sizeof(scratch));
    }
    return 0;
}

static void check_err(int rc, const char *err, size_t cap)
{
    if (rc < 0 && (memchr(err, '\0', cap) == NULL || err[0] == '\0'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_ctx f = {0};
    char err[PGB_ERR_MAX];
    char path[64];
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int rc = config_load(path, fuzz_handle, &f, err, sizeof(err));
    check_err(rc, err, sizeof(err));
    close(fd);

    /* Each line as a flag. */
    char *copy = malloc(size + 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        rc = config_apply_flag(line, fuzz_handle, &f, err, sizeof(err));
        check_err(rc, err, sizeof(err));
    }
    free(copy);
    free(f.str);
    return 0;
}
