/* Unit tests: common/sdnotify, the messages a bound datagram socket receives. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "common/sdnotify.h"

/* A datagram socket bound at name ("/path" or "@abstract"), NOTIFY_SOCKET pointing at it. */
static int listen_at(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        unlink(name);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, salen), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", name, 1), 0);
    return fd;
}

/* The next datagram, or "" when none is waiting. */
static const char *next_message(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap - 1, MSG_DONTWAIT);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_path_socket(void **state)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/tmp/pgb-sdnotify-%d.sock", (int)getpid());
    int fd = listen_at(path);

    assert_int_equal(sdnotify_ready(), 0);
    assert_string_equal(next_message(fd, buf, sizeof(buf)), "READY=1");
    assert_int_equal(sdnotify_stopping(), 0);
    assert_string_equal(next_message(fd, buf, sizeof(buf)), "STOPPING=1");
    close(fd);
    unlink(path);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket_and_reloading(void **state)
{
    char name[64], buf[256];
    struct timespec ts;
    unsigned long long usec, now;
    snprintf(name, sizeof(name), "@pgb-sdnotify-test-%d", (int)getpid());
    int fd = listen_at(name);

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
    assert_int_equal(sdnotify_reloading(), 0);
    assert_int_equal(
        sscanf(next_message(fd, buf, sizeof(buf)), "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
    assert_true(usec >= now && usec < now + 10000000ULL);
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_no_socket_is_a_no_op(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sdnotify_ready(), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sdnotify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(sdnotify_send("READY=1"), -EINVAL);
    setenv("NOTIFY_SOCKET", "/nonexistent/pgburrow/notify", 1);
    assert_int_equal(sdnotify_send("READY=1"), -ENOENT);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_usec(void **state)
{
    char pid[32];
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(sdnotify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_int_equal(sdnotify_watchdog_usec(), 30000000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(sdnotify_watchdog_usec(), 30000000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    assert_int_equal(sdnotify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "30s", 1);
    assert_int_equal(sdnotify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(sdnotify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
}

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void on_role_sigterm(uv_signal_t *sig, int signum) {}

static void raise_sigterm(uv_timer_t *t)
{
    raise(SIGTERM);
}

/* On the loop: READY=1 at start, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM;
 * the handles never keep the loop alive, and close cleanly. */
static void test_loop_watchdog_and_stopping(void **state)
{
    char path[64], buf[256];
    uv_loop_t loop;
    uv_timer_t stopper, killer;
    uv_signal_t keep_term; /* the role's own handler, as in the daemons */
    struct sdnotify sn;
    int watchdogs = 0, stoppings = 0;
    snprintf(path, sizeof(path), "/tmp/pgb-sdnotify-loop-%d.sock", (int)getpid());
    int fd = listen_at(path);

    setenv("WATCHDOG_USEC", "20000", 1); /* ping every 10 ms */
    uv_loop_init(&loop);
    uv_signal_init(&loop, &keep_term);
    uv_signal_start(&keep_term, on_role_sigterm, SIGTERM);
    uv_unref((uv_handle_t *)&keep_term);
    sdnotify_start(&sn, &loop);
    assert_string_equal(next_message(fd, buf, sizeof(buf)), "READY=1");
    uv_timer_init(&loop, &killer);
    uv_timer_start(&killer, raise_sigterm, 60, 0);
    uv_timer_init(&loop, &stopper);
    uv_timer_start(&stopper, stop_loop, 100, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    while (*next_message(fd, buf, sizeof(buf))) {
        if (strcmp(buf, "WATCHDOG=1") == 0)
            watchdogs++;
        else if (strcmp(buf, "STOPPING=1") == 0)
            stoppings++;
        else
            fail_msg("unexpected message \"%s\"", buf);
    }
    assert_true(watchdogs >= 3);
    assert_int_equal(stoppings, 1);

    /* only unreferenced handles are left: the loop ends by itself */
    uv_close((uv_handle_t *)&stopper, NULL);
    uv_close((uv_handle_t *)&killer, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    sdnotify_close(&sn);
    uv_close((uv_handle_t *)&keep_term, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(fd);
    unlink(path);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
}

static void test_no_socket_starts_nothing(void **state)
{
    uv_loop_t loop;
    struct sdnotify sn;

    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "20000", 1);
    uv_loop_init(&loop);
    sdnotify_start(&sn, &loop);
    assert_false(sn.started);
    sdnotify_close(&sn);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket_and_reloading),
        cmocka_unit_test(test_no_socket_is_a_no_op),
        cmocka_unit_test(test_watchdog_usec),
        cmocka_unit_test(test_loop_watchdog_and_stopping),
        cmocka_unit_test(test_no_socket_starts_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
