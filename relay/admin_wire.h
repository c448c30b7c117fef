/*
 * admin_wire — the pure half of the relay's admin console (admin.h): its command language and
 * the PostgreSQL backend messages it answers with.
 *
 * Commands, case-insensitive, blanks anywhere between words, one optional trailing ';':
 *   SHOW ROUTES | AGENTS | TUNNELS | SESSIONS | STATS | CONFIG | VERSION
 *   RELOAD
 *   DRAIN AGENT name
 *   KILL SESSION sid
 *   SET ...          (accepted and ignored: drivers send it at connect)
 *   (empty)          EmptyQueryResponse
 * Anything else is 42601 (syntax), an unknown SHOW target 42704 (unknown object).
 *
 * Messages are appended to a struct admin_out, a growing buffer bounded by its max: a result
 * that would grow it past max fails the buffer (admin_out.failed) instead.
 * Frontend messages of the extended protocol (Parse, Bind, Describe, Execute, Close) are read
 * from a complete body; every string borrows the body.
 *
 * Pure code: no I/O; admin_out is the only allocation.
 */
#ifndef PGB_RELAY_ADMIN_WIRE_H
#define PGB_RELAY_ADMIN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADMIN_CMD_TEXT_MAX 1024 /* longer command texts are refused (42601): none is that long */
#define ADMIN_ARG_MAX 64        /* DRAIN AGENT / KILL SESSION argument, with its NUL */
#define ADMIN_MAX_COLS 16

enum admin_cmd_kind {
    ADMIN_EMPTY = 0,
    ADMIN_SHOW_ROUTES,
    ADMIN_SHOW_AGENTS,
    ADMIN_SHOW_TUNNELS,
    ADMIN_SHOW_SESSIONS,
    ADMIN_SHOW_STATS,
    ADMIN_SHOW_CONFIG,
    ADMIN_SHOW_VERSION,
    ADMIN_RELOAD,
    ADMIN_DRAIN_AGENT,
    ADMIN_KILL_SESSION,
    ADMIN_SET,
};

struct admin_cmd {
    enum admin_cmd_kind kind;
    char arg[ADMIN_ARG_MAX]; /* DRAIN AGENT name, KILL SESSION sid */
};

/* Parse text[len] (a Query or Parse string; need not be NUL-terminated). 0, or -EINVAL with the
 * SQLSTATE for the client in *sqlstate and the message in err[cap]. */
int admin_cmd_parse(const char *text, size_t len, struct admin_cmd *out, const char **sqlstate,
                    char *err, size_t cap);
/* CommandComplete tag: "SHOW", "RELOAD", "DRAIN", "KILL", "SET" (NULL for ADMIN_EMPTY). */
const char *admin_cmd_tag(enum admin_cmd_kind kind);

enum admin_type { ADMIN_TEXT, ADMIN_INT8 };
struct admin_col {
    const char *name;
    enum admin_type type;
};
/* The columns a command returns (n = 0: none; the command returns no rows). */
const struct admin_col *admin_cmd_columns(enum admin_cmd_kind kind, size_t *n);

/* One value of a DataRow: NULL (s == NULL for ADMIN_TEXT), a string, or an integer. */
struct admin_val {
    const char *s;
    int64_t i;
};

struct admin_out {
    uint8_t *p;
    size_t len, cap;
    size_t max;  /* the buffer never grows past this */
    bool failed; /* out of memory or past max: what it holds is not to be sent */
};
void admin_out_init(struct admin_out *o, size_t max);
void admin_out_reset(struct admin_out *o); /* empty, keeps the memory */
void admin_out_free(struct admin_out *o);

void admin_put_auth_ok(struct admin_out *o);
void admin_put_parameter_status(struct admin_out *o, const char *name, const char *value);
void admin_put_backend_key(struct admin_out *o, uint32_t pid, uint32_t key);
void admin_put_ready(struct admin_out *o); /* ReadyForQuery, idle */
/* A message with no body: '1' ParseComplete, '2' BindComplete, '3' CloseComplete,
 * 'n' NoData, 'I' EmptyQueryResponse. */
void admin_put_empty(struct admin_out *o, char type);
void admin_put_no_params(struct admin_out *o); /* ParameterDescription with 0 parameters */
/* RowDescription; formats[nformats] as Bind gave them (0: all text, 1: one for all). */
void admin_put_row_description(struct admin_out *o, const struct admin_col *cols, size_t n,
                               const int16_t *formats, size_t nformats);
/* DataRow of vals[n] typed by cols; binary where formats say 1 (int8: 8 bytes big-endian). */
void admin_put_data_row(struct admin_out *o, const struct admin_col *cols,
                        const struct admin_val *vals, size_t n, const int16_t *formats,
                        size_t nformats);
void admin_put_command_complete(struct admin_out *o, const char *tag);
/* ErrorResponse: severity "ERROR" or "FATAL", sqlstate, message. */
void admin_put_error(struct admin_out *o, const char *severity, const char *sqlstate,
                     const char *message);

/* ---- frontend messages (bodies without type and length) --------------------------------- */

struct admin_parse {
    const char *name, *query;
    uint16_t ntypes;
};
struct admin_bind {
    const char *portal, *stmt;
    uint16_t nparams;
    uint16_t nformats; /* result formats */
    int16_t formats[ADMIN_MAX_COLS];
};
/* Each returns 0 or -EINVAL (malformed: 08P01). admin_read_bind: -E2BIG for more result
 * formats than ADMIN_MAX_COLS. */
int admin_read_query(const uint8_t *body, size_t len, const char **query);
int admin_read_parse(const uint8_t *body, size_t len, struct admin_parse *m);
int admin_read_bind(const uint8_t *body, size_t len, struct admin_bind *m);
/* Describe and Close: kind 'S' (statement) or 'P' (portal), and the name. */
int admin_read_target(const uint8_t *body, size_t len, char *kind, const char **name);
int admin_read_execute(const uint8_t *body, size_t len, const char **portal);

#endif
