/*
 * err — one size and one form for the reasons functions give when they fail.
 *
 * A function that explains a failure writes one line (no trailing period) into a buffer the
 * caller passes as (char *err, size_t cap); callers size their own buffers PGB_ERR_MAX and
 * pass sizeof. What went wrong is said apart from that, by the return value: 0, or a
 * negative errno (-ENOMEM is this side's failure, never the peer's), or a module's own negative
 * codes (PROTO_E_* for a peer breaking the tunnel protocol).
 */
#ifndef PGB_ERR_H
#define PGB_ERR_H

#define PGB_ERR_MAX 512

#endif
