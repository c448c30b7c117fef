/*
 * cert_expiry — one timer at the earliest notAfter among the certificates of running tunnels
 * and certificate-authenticated sessions; when it fires, r->cert_recheck runs (reload.h:
 * relay_certs_recheck), which ends what expired and sets the next expiry.
 *
 * Uses r->cert_timer and r->cert_next (struct relay); owns nothing.
 */
#ifndef PGB_RELAY_CERT_EXPIRY_H
#define PGB_RELAY_CERT_EXPIRY_H

struct relay;

/* A tunnel or session came up whose certificate chain expires at not_after (seconds since the
 * epoch; 0: nothing to watch): arm the expiry timer earlier if needed. */
void relay_cert_expiry_note(struct relay *r, long long not_after);
/* Arm the timer for r->cert_next (stop it when 0); now: the wall clock. */
void relay_cert_expiry_arm(struct relay *r, long long now);

#endif
