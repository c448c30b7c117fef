/*
 * audit — the relay's audit log: one JSON object per line, to a file or stdout.
 *
 * Events: session_start, session_authenticated, auth_failed, session_end, tunnel_up,
 * tunnel_down, refused, admin_command (every command of the admin console, admin.h), and
 * (audit_statements = on) statement: the text of every Simple Query
 * ('Q') and extended-protocol Parse ('P') message a client sends, cut to audit_statement_max
 * bytes. Statements are read by a tunnel filter on the client -> server direction
 * (audit_stmt_filter): an incremental parser of the message stream (type byte, int32 length,
 * body; split anywhere) that copies at most audit_statement_max bytes of each statement and
 * skips every other message by its length.
 *
 * Nothing an unauthenticated peer sends is recorded as what a user did: until PostgreSQL's
 * AuthenticationOk the session's user is only claimed (session_start and auth_failed carry
 * claimed_user, never user), and statements a client pipelines before it are held (at most
 * AUDIT_PREAUTH_HELD_BYTES of text, the rest counted) and written only once it comes
 * (audit_stmt_authenticated): PostgreSQL runs them only then, as that user. When the session
 * ends unauthenticated they are dropped unwritten: PostgreSQL never ran them.
 *
 * Writing: one write(2) per line on an O_APPEND descriptor, from the loop thread. On a local
 * file that is a copy into the page cache; a line is never split between writes, so several
 * relays may share a file. A disk too slow even for that would slow the loop: point the log
 * at local storage (ship it elsewhere with a log shipper). A line that cannot be written is
 * counted and reported in the relay log, never retried. stdout is written the same way.
 *
 * One struct audit lives as long as the relay (reloads reconfigure it in place, so statement
 * filters may keep a pointer to it). When audit_log is empty every call is a no-op.
 */
#ifndef PGB_AUDIT_H
#define PGB_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit;
struct audit_stmt;

/* Returns new (off until audit_configure), or NULL (out of memory). */
struct audit *audit_new(void);
void audit_free(struct audit *a); /* NULL-tolerant */

/* Can path be used as the audit log (its directory exists and is writable, the file if it
 * exists is writable)? Opens nothing (for --check-config). NULL/""/"stdout" pass. 0 or
 * negative with err[err_cap] filled. */
int audit_check_path(const char *path, char *err, size_t err_cap);

/* Apply settings: path NULL or "" = off, "stdout", or a file (opened for appending, created
 * with mode 0600). A new path is opened before the old one is closed: on failure returns
 * negative with err filled and everything stays as it was. */
int audit_configure(struct audit *a, const char *path, bool statements, size_t statement_max,
                    char *err, size_t err_cap);
/* Reopen the file at the same path (log rotation: SIGUSR1). 0 or negative with err. */
int audit_reopen(struct audit *a, char *err, size_t err_cap);

bool audit_enabled(const struct audit *a);
bool audit_statements_enabled(const struct audit *a);

/* What the session events carry; NULL strings are written as null. */
struct audit_session {
    const char *relay; /* relay name */
    const char *sid;
    const char *route;
    const char *client; /* "ip:port" / "[v6]:port": written as client_addr, client_port */
    const char *sni;
    const char *user;
    const char *database;
    const char *application_name;
    const char *cert_subject; /* client certificate (NULL: none) */
    const char *cert_serial;
    const char *agent;
    const char *tls_version;
    const char *tls_cipher;
    bool authenticated; /* PostgreSQL said AuthenticationOk: user is then no longer a claim */
    /* auth_failed only: PostgreSQL's ErrorResponse, when it sent one */
    const char *sqlstate;
    /* session_end and auth_failed */
    uint64_t bytes_in;  /* client -> server */
    uint64_t bytes_out; /* server -> client */
    uint64_t duration_ms;
    const char *reason; /* "closed" or the error */
};

/* event: "session_start", "session_authenticated", "auth_failed" (adds sqlstate, duration and
 * reason) or "session_end" (adds bytes, duration and reason). The user is written as user
 * when authenticated, else as claimed_user. */
void audit_session(struct audit *a, const char *event, const struct audit_session *s);
/* event: "tunnel_up" or "tunnel_down"; routes: comma-separated (written as an array). */
void audit_tunnel(struct audit *a, const char *event, const char *relay, const char *agent,
                  const char *peer, const char *routes, const char *reason);
/* A refused client; sqlstate NULL when the client got no ErrorResponse (TLS failure...). */
void audit_refused(struct audit *a, const char *relay, const char *client, const char *sqlstate,
                   const char *reason);

/* One admin console command; NULL strings are written as null. */
struct audit_admin_command {
    const char *relay;
    const char *admin; /* the verified certificate's CN */
    const char *cert_serial;
    const char *client;   /* "ip:port": written as client_addr, client_port */
    const char *user;     /* the StartupMessage user, a claim: written as claimed_user */
    const char *command;  /* its text as sent (cut at ADMIN_CMD_TEXT_MAX) */
    const char *sqlstate; /* NULL when it succeeded */
    const char *result;   /* "ok", "ok: ..." or the error message */
};
void audit_admin(struct audit *a, const struct audit_admin_command *ac);

/* Statement logging for one session. Returns new, or NULL (statements off, or no memory).
 * Copies the strings. Use audit_stmt_filter as the tunnel filter with it as ctx. Statements
 * are held until audit_stmt_authenticated. */
#define AUDIT_PREAUTH_HELD_BYTES 4096 /* statement text held per session before authentication */
struct audit_stmt *audit_stmt_new(struct audit *a, const char *relay, const char *sid,
                                  const char *route, const char *user);
/* PostgreSQL authenticated the session: write the held statements (and how many did not fit),
 * then every later one as it comes. */
void audit_stmt_authenticated(struct audit_stmt *st);
/* tunnel_filter_fn: reads, never changes, data. Returns false (stop filtering) on a message
 * stream it cannot follow (a length below 4): PostgreSQL rejects that stream anyway. */
bool audit_stmt_filter(void *ctx, const uint8_t *data, size_t len);
void audit_stmt_free(struct audit_stmt *st); /* NULL-tolerant; held statements are dropped */

#endif
