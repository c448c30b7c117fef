/*
 * admit — the relay's admission of unauthenticated connections on both listeners.
 *
 * Every accepted connection holds a pending slot (preauth.h) until it is routed (client) or its
 * HELLO is accepted (tunnel). relay_admit enforces, at accept time:
 *
 *   - max_pending_per_source: a source over it has its new connection closed at once;
 *   - max_pending (relay-wide) and file descriptors: while either runs short, the oldest pending
 *     connection of the heaviest source is shed (possibly the new one), so that established
 *     tunnels and sessions keep their descriptors and every other source still gets in.
 *
 * File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start; a connection
 * is accepted only while at least ADMIT_FD_HEADROOM (or 1/16 of the limit) descriptors stay
 * free, counted from the descriptor number the kernel gave it (descriptors are allocated lowest
 * first: number N means 0..N-1 are all open) and from the relay's own count of connections.
 * An accept that fails anyway (EMFILE, ENFILE, ENOMEM) sheds a pending connection and is logged
 * at most once per second with a count.
 *
 * A periodic sweep (ADMIT_SWEEP_MS) closes tunnels that sent no HELLO within hello_timeout of
 * their accept, logs how many refusal lines the relay-wide log limit left out, and returns
 * freed memory to the system once a flood of pending connections is gone.
 *
 * Refusal lines of unauthenticated peers go through relay_admit_log_ok: a bounded number per
 * source and reason, and relay-wide, with the count of those left out on the next line.
 */
#ifndef PGB_RELAY_ADMIT_H
#define PGB_RELAY_ADMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "relay/preauth.h"

struct relay;
struct conn;

#define ADMIT_FD_HEADROOM 16
#define ADMIT_SWEEP_MS 250

/* At start (before the listeners): raise the soft file limit to the hard one (logged), note
 * the limit, create the table, start the sweep. 0 or negative with err[cap]. */
int relay_admit_start(struct relay *r, char *err, size_t cap);
void relay_admit_stop(struct relay *r); /* closes the sweep timer */
void relay_admit_free(struct relay *r);

/* A connection just accepted from peer on conn: hold slot (its shed callback set) or refuse.
 * Returns 0 when admitted (other pending connections may have been shed), negative when the
 * caller must close conn at once (the refusal is logged here). */
int relay_admit(struct relay *r, struct preauth_slot *slot, const char *peer, struct conn *conn,
                const char *listener);
/* The slot's connection turned out to come from peer (a PROXY protocol header, proxied.h):
 * the slot (held) moves to peer's source. 0, or negative when that source already holds
 * max_pending_per_source slots (logged here; the slot is then released): close the
 * connection. */
int relay_admit_rekey(struct relay *r, struct preauth_slot *slot, const char *peer,
                      const char *listener);
/* The slot's connection is routed, authenticated or gone. NULL-tolerant, idempotent. */
void relay_admit_release(struct relay *r, struct preauth_slot *slot);
/* May the slot's source start a TLS handshake now (handshake_rate)? */
bool relay_admit_handshake(struct relay *r, struct preauth_slot *slot);
/* An accept on a listener failed with status (a UV_E* code): shed, log (rate limited). */
void relay_admit_accept_failed(struct relay *r, int status, const char *listener);

/*
 * A listener's spare handle. libuv hands a listener's connection callback one connection to
 * accept; a callback that returns without uv_accept leaves it waiting and the listener reads
 * no more (libuv src/unix/stream.c, uv__server_io), for good. A connection the relay cannot
 * take (out of memory before its struct exists) is accepted into the spare and closed at once.
 * The spare is free again in its close callback; a connection refused while it is closing
 * waits on the listener until then (the listener pauses for that loop turn, no longer).
 */
struct admit_spare {
    uv_tcp_t tcp;
    struct relay *r;
    uv_stream_t *server;
    bool busy;    /* closing */
    bool waiting; /* a connection waits on server for the spare */
};

/* In the connection callback of listener server (one of r's two), before uv_accept: the
 * connection cannot be taken. Accept it into the listener's spare, close it, count and log it
 * as an accept failure (relay_admit_accept_failed, UV_ENOMEM), so that the listener goes on. */
void relay_admit_drop_unaccepted(struct relay *r, uv_stream_t *server, const char *listener);

/* May a refusal line for peer be written now? *suffix gets " (N more suppressed)" or "". */
bool relay_admit_log_ok(struct relay *r, const char *peer, enum preauth_reason why, char *suffix,
                        size_t cap);

#endif
