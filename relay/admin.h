/*
 * admin — the relay's admin console: the virtual database "pgburrow" on the client port, as
 * pgbouncer's. With admin_users set, a client asking for dbname=pgburrow whose certificate the
 * front door verified against admin_ca (CN in admin_users; access.h) is answered by the relay
 * itself: no route, no stream, nothing of PostgreSQL's is reachable from here.
 *
 * The console speaks the simple query protocol and the extended protocol's Parse, Bind,
 * Describe, Execute, Close, Sync and Flush (no parameters), so that psql, psycopg 3 and JDBC
 * print its results. Commands and columns: admin_wire.h and README.md. Every command is
 * logged and audited (admin_command).
 *
 * Bounds: ADMIN_MAX_SESSIONS console connections at once; a message body of at most
 * ADMIN_MSG_MAX bytes (a longer one: FATAL 08P01, closed); a command's result of at most
 * ADMIN_OUT_MAX bytes (a larger one: ERROR 54000); ADMIN_MAX_STMTS named statements and
 * portals each; input is not read while the client does not read what it was sent.
 *
 * Each session is a struct admin_session on r->admins, owning its conn (from the front door)
 * and freed in the conn's close callback. It borrows the relay; it keeps no pointer into r->cfg.
 */
#ifndef PGB_RELAY_ADMIN_H
#define PGB_RELAY_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/conn.h"

struct relay;
struct relay_admin_login;

#define ADMIN_MAX_SESSIONS 16
#define ADMIN_MSG_MAX (64 * 1024)
#define ADMIN_OUT_MAX (16 * 1024 * 1024)
#define ADMIN_MAX_STMTS 8

/* Take over conn (TLS, after the StartupMessage; rest[rest_len]: what the client sent after
 * it) and greet the admin. 0, or negative with the client's FATAL message in msg[cap] (too
 * many console sessions, out of memory); conn is then still the caller's. r->open_admin. */
int admin_session_open(struct relay *r, struct conn *conn, const struct relay_admin_login *login,
                       const uint8_t *rest, size_t rest_len, char *msg, size_t cap);
/* Close every console session (relay_stop). */
void admin_close_all(struct relay *r);

/* SHOW STATS: the relay's counters as (name, value) pairs into v[cap]; returns the count. One
 * function, so that other counters join in one place. */
struct admin_stat {
    const char *name;
    uint64_t value;
};
size_t admin_stats_collect(const struct relay *r, struct admin_stat *v, size_t cap);

#endif
