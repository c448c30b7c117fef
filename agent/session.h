/*
 * session — the agent's side of one session: a stream a relay opened, joined to a new
 * connection to the route's PostgreSQL.
 *
 * A session owns its PostgreSQL connection until the stream takes it over, its connect timer
 * and its resolver request; it frees itself when the stream and all of those are done. It
 * borrows the agent (configuration, loop, cancel keys) and the tunnel it came on.
 */
#ifndef PGB_AGENT_SESSION_H
#define PGB_AGENT_SESSION_H

#include <stdint.h>

#include "common/tunnel.h"
#include "proto/proto.h"

struct agent;

/* OPEN m on stream id of t: accept the stream and start connecting to the route's
 * PostgreSQL (OPEN_OK or OPEN_FAIL follows). 0, or negative when the stream could not be
 * taken (the tunnel answers OPEN_FAIL). */
int agent_session_start(struct agent *a, struct tunnel *t, uint32_t id, const struct proto_open *m);
/* Add the bytes of running sessions so far to their routes' live_to_server / live_to_client
 * (route_stats.h), for a scrape. */
void agent_sessions_stats_live(struct agent *a);

#endif
