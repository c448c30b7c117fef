/*
 * routing — SNI, options, default route (see routing.h).
 */
#include "relay/routing.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/*
 * Option scanning, as the server does it: pg_split_opts() cuts the string into words at
 * unescaped whitespace, a backslash taking the next byte literally; then getopt() runs over
 * the words with the option string of process_postgres_switches(). Only the `c` and `-`
 * options matter here, both take an argument ("-c name=value", "-cname=value",
 * "--name=value"), and GUC names compare case-insensitively. Later settings win.
 */
#define PG_SWITCHES "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:"
#define ROUTE_GUC "pgburrow.route"

/* Cursor over the words of an options string, yielding unescaped bytes. */
struct opt_cursor {
    const char *p;
};

static bool opt_space(char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* Skip to the next word; false at the end of the string. */
static bool opt_word_start(struct opt_cursor *c)
{
    while (opt_space(*c->p))
        c->p++;
    return *c->p != '\0';
}

/* Next byte of the current word, or -1 at its end. A trailing lone backslash is dropped,
 * as pg_split_opts() drops it. */
static int opt_word_char(struct opt_cursor *c)
{
    if (*c->p == '\0' || opt_space(*c->p))
        return -1;
    if (*c->p == '\\') {
        c->p++;
        if (*c->p == '\0')
            return -1;
    }
    return (unsigned char)*c->p++;
}

/* An option argument. Only its first bytes are kept: anything longer can only be a route
 * setting whose value is too long, which `len` (the full length) tells apart. */
struct opt_arg {
    char text[sizeof(ROUTE_GUC) + PROTO_NAME_MAX + 8];
    size_t len;
};

/* Collect the argument starting with byte `first` up to the end of the current word. */
static void opt_collect(struct opt_cursor *c, int first, struct opt_arg *a)
{
    a->len = 0;
    for (int ch = first; ch >= 0; ch = opt_word_char(c)) {
        if (a->len < sizeof(a->text) - 1)
            a->text[a->len] = (char)ch;
        a->len++;
    }
    a->text[a->len < sizeof(a->text) - 1 ? a->len : sizeof(a->text) - 1] = '\0';
}

/* Look at the argument of -c / --: 1 and *value if it sets pgburrow.route, 0 if it sets
 * something else, -EINVAL if it sets pgburrow.route to something that is not a name. */
static int opt_route_arg(const struct opt_arg *a, const char **value)
{
    size_t glen = strlen(ROUTE_GUC);

    if (a->len < glen || strncasecmp(a->text, ROUTE_GUC, glen) != 0)
        return 0;
    if (a->len == glen)
        return -EINVAL; /* "-c pgburrow.route" without a value: the server refuses it too */
    if (a->text[glen] != '=')
        return 0;
    if (a->len >= sizeof(a->text) - 1)
        return -EINVAL; /* truncated, so longer than any name */
    *value = a->text + glen + 1;
    return proto_name_valid(*value) ? 1 : -EINVAL;
}

int routing_options_route(const char *options, char *route, size_t cap)
{
    int found = 0;
    struct opt_cursor c = {options ? options : ""};
    struct opt_arg arg;

    while (opt_word_start(&c)) {
        if (opt_word_char(&c) != '-')
            goto next_word; /* not an option; the server refuses stray words itself */
        /* getopt: walk a cluster such as "-ec" until an option that takes an argument. */
        for (int i = 1, ch; (ch = opt_word_char(&c)) >= 0; i++) {
            const char *spec = ch != ':' ? strchr(PG_SWITCHES, ch) : NULL;
            if (!spec || spec[1] != ':')
                continue;
            int next = opt_word_char(&c);
            if (next >= 0) {
                opt_collect(&c, next, &arg); /* "-cname=value": the rest of this word */
            } else if (ch == '-' && i == 1) {
                goto out; /* the word "--" ends the options */
            } else if (opt_word_start(&c)) {
                opt_collect(&c, opt_word_char(&c), &arg); /* "-c name=value" */
            } else {
                goto out; /* missing argument: the server refuses these options */
            }
            if (ch == 'c' || ch == '-') {
                const char *value = NULL;
                int r = opt_route_arg(&arg, &value);
                if (r > 0 && strlen(value) >= cap)
                    r = -EINVAL;
                if (r > 0)
                    memcpy(route, value, strlen(value) + 1);
                if (r != 0)
                    found = r;
            }
            break;
        }
    next_word:
        while (opt_word_char(&c) >= 0)
            ;
    }
out:
    return found;
}

#define ENDPOINT_KEY "endpoint="

/* Append the raw (still escaped) text [start, end) of a kept word to rest. */
static int opt_keep(char *rest, size_t cap, size_t *o, const char *start, const char *end)
{
    size_t n = (size_t)(end - start);

    if (*o + (*o > 0) + n + 1 > cap)
        return -ENOSPC;
    if (*o > 0)
        rest[(*o)++] = ' ';
    memcpy(rest + *o, start, n);
    *o += n;
    rest[*o] = '\0';
    return 0;
}

/* Look at a word that is not an option: 1 and *value if it is endpoint=NAME, 0 if it is
 * something else, -EINVAL if it is endpoint= with a value that is not a name. */
static int opt_endpoint_word(const struct opt_arg *a, const char **value)
{
    size_t klen = strlen(ENDPOINT_KEY);

    if (a->len < klen || strncmp(a->text, ENDPOINT_KEY, klen) != 0)
        return 0;
    if (a->len >= sizeof(a->text) - 1)
        return -EINVAL; /* truncated, so longer than any name */
    *value = a->text + klen;
    return proto_name_valid(*value) ? 1 : -EINVAL;
}

int routing_options_endpoint(const char *options, char *route, size_t cap, char *rest,
                             size_t restcap)
{
    struct opt_cursor c = {options ? options : ""};
    struct opt_arg arg;
    bool operands = false; /* after "--": every word is an operand */
    size_t o = 0;
    int found = 0;

    if (restcap == 0)
        return -ENOSPC;
    rest[0] = '\0';
    while (opt_word_start(&c)) {
        const char *start = c.p, *value = NULL;
        int first = opt_word_char(&c), r;

        if (first != '-' || operands) {
            opt_collect(&c, first, &arg);
            r = opt_endpoint_word(&arg, &value);
            if (r > 0 && strlen(value) >= cap)
                r = -EINVAL;
            if (r > 0)
                memcpy(route, value, strlen(value) + 1);
            if (r != 0) {
                found = found < 0 ? found : r;
                continue; /* dropped from rest */
            }
            if (opt_keep(rest, restcap, &o, start, c.p) < 0)
                return -ENOSPC;
            continue;
        }
        /* an option word, possibly followed by the word that is its argument */
        bool arg_word = false;
        for (int i = 1, ch; (ch = opt_word_char(&c)) >= 0; i++) {
            const char *spec = ch != ':' ? strchr(PG_SWITCHES, ch) : NULL;
            if (!spec || spec[1] != ':')
                continue;
            if (opt_word_char(&c) >= 0)
                ; /* "-cname=value": the argument is the rest of this word */
            else if (ch == '-' && i == 1)
                operands = true; /* the word "--" */
            else
                arg_word = true; /* "-c name=value" */
            break;
        }
        while (opt_word_char(&c) >= 0)
            ;
        if (arg_word && opt_word_start(&c)) {
            while (opt_word_char(&c) >= 0)
                ;
        }
        if (opt_keep(rest, restcap, &o, start, c.p) < 0)
            return -ENOSPC;
    }
    return found;
}

int routing_sni_route(const char *sni, char *const *domains, size_t ndomains, char *route,
                      size_t cap)
{
    size_t slen = sni ? strlen(sni) : 0;

    for (size_t i = 0; i < ndomains; i++) {
        size_t dlen = strlen(domains[i]), llen;

        if (slen < dlen + 2 || sni[slen - dlen - 1] != '.' ||
            strcasecmp(sni + slen - dlen, domains[i]) != 0)
            continue;
        llen = slen - dlen - 1;
        if (llen >= cap || llen >= PROTO_NAME_MAX || memchr(sni, '.', llen))
            return -EINVAL;
        memcpy(route, sni, llen);
        route[llen] = '\0';
        return proto_name_valid(route) ? 1 : -EINVAL;
    }
    return 0;
}

int routing_choose(char *const *domains, size_t ndomains, const char *sni, const char *options,
                   const char *default_route, struct routing_result *out, char *msg, size_t cap)
{
    char by_guc[PROTO_NAME_MAX] = "", by_endpoint[PROTO_NAME_MAX] = "";
    const char *by_options = NULL;
    int rc;

    memset(out, 0, offsetof(struct routing_result, options));
    out->options[0] = '\0';
    msg[0] = '\0';

    rc = routing_sni_route(sni, domains, ndomains, out->route, sizeof(out->route));
    if (rc < 0) {
        snprintf(msg, cap,
                 "pgburrow: server name \"%.200s\" does not name a route (expected ROUTE.domain "
                 "with ROUTE made of A-Z a-z 0-9 _ -)",
                 sni);
        return -EINVAL;
    }
    bool from_sni = rc == 1;

    if (options) {
        if (routing_options_route(options, by_guc, sizeof(by_guc)) < 0) {
            snprintf(msg, cap, "pgburrow: invalid route name in options");
            return -EINVAL;
        }
        rc = routing_options_endpoint(options, by_endpoint, sizeof(by_endpoint), out->options,
                                      sizeof(out->options));
        if (rc < 0) {
            snprintf(msg, cap, "pgburrow: invalid route name in options (endpoint=)");
            return -EINVAL;
        }
        out->options_changed = rc == 1;
        if (by_guc[0] && by_endpoint[0] && strcmp(by_guc, by_endpoint) != 0) {
            snprintf(msg, cap,
                     "pgburrow: options name two routes: \"%s\" (pgburrow.route) and \"%s\" "
                     "(endpoint)",
                     by_guc, by_endpoint);
            return -EINVAL;
        }
        by_options = by_guc[0] ? by_guc : by_endpoint[0] ? by_endpoint : NULL;
    }

    if (from_sni) {
        out->source = ROUTING_SNI;
        if (by_options && strcmp(by_options, out->route) != 0) {
            snprintf(msg, cap,
                     "pgburrow: the server name names route \"%s\" but the options name route "
                     "\"%s\"",
                     out->route, by_options);
            return -EINVAL;
        }
        return 0;
    }
    if (by_options) {
        snprintf(out->route, sizeof(out->route), "%s", by_options);
        out->source = ROUTING_OPTIONS;
        return 0;
    }
    if (default_route && default_route[0]) {
        snprintf(out->route, sizeof(out->route), "%s", default_route);
        out->source = ROUTING_DEFAULT;
        return 0;
    }
    snprintf(msg, cap, "pgburrow: no route given and no default_route");
    return -EINVAL;
}
