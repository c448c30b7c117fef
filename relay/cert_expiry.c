/*
 * cert_expiry.c — the timer at the next certificate expiry (see cert_expiry.h).
 */
#include "relay/cert_expiry.h"

#include <time.h>

#include "relay/relay.h"

/* The timer follows the wall clock only roughly (libuv timers are monotonic): it fires at the
 * next expiry, or within the hour, so that a clock step is noticed within an hour; and at most
 * once a second, so that many certificates expiring one after another cost one pass a second. */
static void cert_timer_fired(uv_timer_t *timer);

void relay_cert_expiry_arm(struct relay *r, long long now)
{
    long long delay_s;

    if (!r->cert_timer.loop || r->stopping || uv_is_closing((uv_handle_t *)&r->cert_timer))
        return;
    if (r->cert_next == 0) {
        uv_timer_stop(&r->cert_timer);
        return;
    }
    delay_s = r->cert_next + 1 - now; /* a certificate is valid through its notAfter second */
    if (delay_s < 1)
        delay_s = 1;
    if (delay_s > 3600)
        delay_s = 3600;
    uv_timer_start(&r->cert_timer, cert_timer_fired, (uint64_t)delay_s * 1000, 0);
}

void relay_cert_expiry_note(struct relay *r, long long not_after)
{
    if (not_after <= 0 || (r->cert_next != 0 && r->cert_next <= not_after))
        return;
    r->cert_next = not_after;
    relay_cert_expiry_arm(r, (long long)time(NULL));
}

static void cert_timer_fired(uv_timer_t *timer)
{
    struct relay *r = timer->data;
    r->cert_recheck(r, false);
}
