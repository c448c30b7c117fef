/*
 * cli — the command line both daemons share:
 *   PROGRAM [-c FILE] [--section.key=VALUE | --section.key VALUE ...] [--check-config]
 *           [-h|--help] [-V|--version]
 * Borrows argv; the flags array points into it (flags are normalised to "--k=v" form in
 * storage owned by struct cli_args; cli_args_free releases it).
 */
#ifndef PGB_CLI_H
#define PGB_CLI_H

#include <stdbool.h>

struct cli_args {
    const char *config_file;
    bool check_config;
    bool help;
    bool version;
    int nflags;
    char **flags;
};

/* Returns 0, or -EINVAL after printing the reason to stderr. */
int cli_parse(int argc, char **argv, const char *program, struct cli_args *out);
void cli_args_free(struct cli_args *a);

#endif
