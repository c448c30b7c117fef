/*
 * sdnotify — the service manager notification protocol (see sdnotify.h).
 */
#include "common/sdnotify.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

int sdnotify_send(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len;
    socklen_t salen;
    ssize_t n;
    int fd, rc = 0;

    if (!name || !*name)
        return 0;
    len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len < 2 || len >= sizeof(sa.sun_path))
        return -EINVAL;
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace: the name is not NUL-terminated */
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/'));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    n = sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa,
               salen);
    if (n < 0)
        rc = -errno;
    else if ((size_t)n != strlen(state))
        rc = -EMSGSIZE;
    close(fd);
    return rc;
}

/* Sends and logs a failure once per call: the daemon goes on either way. */
static int send_logged(const char *state)
{
    int rc = sdnotify_send(state);
    if (rc < 0)
        log_warn("service manager notification \"%.20s\" failed: %s", state, strerror(-rc));
    return rc;
}

int sdnotify_ready(void)
{
    return send_logged("READY=1");
}

int sdnotify_reloading(void)
{
    struct timespec ts;
    char state[64];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    return send_logged(state);
}

int sdnotify_stopping(void)
{
    return send_logged("STOPPING=1");
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

uint64_t sdnotify_watchdog_usec(void)
{
    const char *pid = getenv("WATCHDOG_PID");
    uint64_t usec, p;

    if (!parse_u64(getenv("WATCHDOG_USEC"), &usec) || usec == 0)
        return 0;
    if (pid && (!parse_u64(pid, &p) || p != (uint64_t)getpid()))
        return 0;
    return usec;
}

static void on_watchdog(uv_timer_t *t)
{
    send_logged("WATCHDOG=1");
}

static void on_stop_signal(uv_signal_t *sig, int signum)
{
    sdnotify_stopping();
}

void sdnotify_start(struct sdnotify *sn, uv_loop_t *loop)
{
    const char *name = getenv("NOTIFY_SOCKET");
    uint64_t usec;

    sn->started = false;
    if (!name || !*name)
        return;
    sn->started = true;
    uv_timer_init(loop, &sn->watchdog);
    uv_unref((uv_handle_t *)&sn->watchdog);
    usec = sdnotify_watchdog_usec();
    if (usec) {
        /* half the interval, as sd_watchdog_enabled(3) advises; at least 1 ms */
        uint64_t ms = usec / 2000 ? usec / 2000 : 1;
        uv_timer_start(&sn->watchdog, on_watchdog, 0, ms);
        log_info("systemd watchdog: pinging every %llu ms", (unsigned long long)ms);
    }
    uv_signal_init(loop, &sn->sig_term);
    uv_signal_init(loop, &sn->sig_int);
    uv_signal_start(&sn->sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&sn->sig_int, on_stop_signal, SIGINT);
    uv_unref((uv_handle_t *)&sn->sig_term);
    uv_unref((uv_handle_t *)&sn->sig_int);
    sdnotify_ready();
}

void sdnotify_close(struct sdnotify *sn)
{
    if (!sn->started)
        return;
    sn->started = false;
    uv_close((uv_handle_t *)&sn->watchdog, NULL);
    uv_close((uv_handle_t *)&sn->sig_term, NULL);
    uv_close((uv_handle_t *)&sn->sig_int, NULL);
}
