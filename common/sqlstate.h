/*
 * sqlstate — the SQLSTATE codes pgburrow sends and acts on, named once.
 *
 * The same codes travel in tunnel frames (OPEN_FAIL, RESET, GOAWAY; proto/PROTOCOL.md section
 * 10) and in the ErrorResponses the relay sends to PostgreSQL clients. Names follow
 * PostgreSQL's errcodes.txt. Code outside this header and tests/ uses the names, never the
 * five-character strings (`make check-sqlstate`), and decides on a received code only through
 * the predicates below, which say what the code means where it is received.
 *
 * Pure code: constants and inline predicates, nothing owned.
 */
#ifndef PGB_SQLSTATE_H
#define PGB_SQLSTATE_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define SQLSTATE_SUCCESSFUL_COMPLETION "00000"               /* GOAWAY: graceful drain */
#define SQLSTATE_CONNECTION_FAILURE "08006"                  /* PostgreSQL, client or tunnel lost */
#define SQLSTATE_PROTOCOL_VIOLATION "08P01"                  /* any breach of a protocol */
#define SQLSTATE_FEATURE_NOT_SUPPORTED "0A000"               /* protocol version not supported */
#define SQLSTATE_INVALID_AUTHORIZATION_SPECIFICATION "28000" /* identity or address refused */
#define SQLSTATE_INVALID_SQL_STATEMENT_NAME "26000"          /* admin console: no such statement */
#define SQLSTATE_INVALID_CURSOR_NAME "34000"                 /* admin console: no such portal */
#define SQLSTATE_INVALID_CATALOG_NAME "3D000"                /* unknown or malformed route */
#define SQLSTATE_SYNTAX_ERROR "42601"                        /* admin console: bad command */
#define SQLSTATE_UNDEFINED_OBJECT "42704"                    /* admin console: no such target */
#define SQLSTATE_OUT_OF_MEMORY "53200"
#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"         /* session, stream or tunnel limit */
#define SQLSTATE_CONFIGURATION_LIMIT_EXCEEDED "53400" /* peer's limits above ours */
#define SQLSTATE_PROGRAM_LIMIT_EXCEEDED "54000"       /* admin console: a result too large */
#define SQLSTATE_ADMIN_SHUTDOWN "57P01"               /* the relay is shutting down */
#define SQLSTATE_CANNOT_CONNECT_NOW "57P03"           /* route not served here now */
#define SQLSTATE_CONFIG_FILE_ERROR "F0000"            /* admin console: RELOAD failed */

/* Characters in a SQLSTATE, and the size of a buffer holding one with its NUL. */
#define SQLSTATE_LEN 5
#define SQLSTATE_SIZE (SQLSTATE_LEN + 1)

static inline bool sqlstate_equal(const char *code, const char *sqlstate)
{
    return strcmp(code, sqlstate) == 0;
}

/* GOAWAY: the peer drains (no new streams; running ones go on), not an error. */
static inline bool sqlstate_goaway_is_drain(const char *code)
{
    return sqlstate_equal(code, SQLSTATE_SUCCESSFUL_COMPLETION);
}

/* GOAWAY at HELLO: the relay already holds this agent's live tunnel (reached over another
 * address of the same name); the agent keeps that one and does not report an error. */
static inline bool sqlstate_goaway_is_duplicate_tunnel(const char *code)
{
    return sqlstate_equal(code, SQLSTATE_TOO_MANY_CONNECTIONS);
}

/* OPEN_FAIL: the agent could not reach PostgreSQL; another agent of the route may. */
static inline bool sqlstate_open_fail_is_unreachable(const char *code)
{
    return sqlstate_equal(code, SQLSTATE_CONNECTION_FAILURE);
}

/* The code to close with when decoding or handling a peer's message failed with rc: -ENOMEM is
 * this side running out of memory, anything else the peer breaking the protocol. */
static inline const char *sqlstate_of_failure(int rc)
{
    return rc == -ENOMEM ? SQLSTATE_OUT_OF_MEMORY : SQLSTATE_PROTOCOL_VIOLATION;
}

#endif
