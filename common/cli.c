#include "common/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_flag(struct cli_args *a, const char *key, const char *value)
{
    size_t n = strlen(key) + strlen(value) + 2;
    char *f = malloc(n);
    char **flags = realloc(a->flags, sizeof(*flags) * (size_t)(a->nflags + 1));
    if (!f || !flags) {
        free(f);
        if (flags)
            a->flags = flags;
        return -ENOMEM;
    }
    snprintf(f, n, "%s=%s", key, value);
    a->flags = flags;
    a->flags[a->nflags++] = f;
    return 0;
}

int cli_parse(int argc, char **argv, const char *program, struct cli_args *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            out->help = true;
        } else if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
            out->version = true;
        } else if (strcmp(arg, "--check-config") == 0) {
            out->check_config = true;
        } else if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "%s: %s needs a file name\n", program, arg);
                goto bad;
            }
            out->config_file = argv[i];
        } else if (strncmp(arg, "--config=", 9) == 0) {
            out->config_file = arg + 9;
        } else if (strncmp(arg, "--", 2) == 0 && strchr(arg, '.')) {
            const char *eq = strchr(arg, '=');
            int rc;
            if (eq) {
                char key[256];
                size_t kl = (size_t)(eq - arg);
                if (kl >= sizeof(key)) {
                    fprintf(stderr, "%s: option too long: %.40s...\n", program, arg);
                    goto bad;
                }
                memcpy(key, arg, kl);
                key[kl] = '\0';
                rc = add_flag(out, key, eq + 1);
            } else {
                if (i + 1 >= argc) {
                    fprintf(stderr, "%s: %s needs a value\n", program, arg);
                    goto bad;
                }
                rc = add_flag(out, arg, argv[++i]);
            }
            if (rc < 0) {
                fprintf(stderr, "%s: out of memory\n", program);
                goto bad;
            }
        } else {
            fprintf(stderr, "%s: unknown argument \"%s\" (try --help)\n", program, arg);
            goto bad;
        }
    }
    return 0;
bad:
    cli_args_free(out);
    return -EINVAL;
}

void cli_args_free(struct cli_args *a)
{
    for (int i = 0; i < a->nflags; i++)
        free(a->flags[i]);
    free(a->flags);
    a->flags = NULL;
    a->nflags = 0;
}
