"""The agent <-> relay tunnel: failures, reconnects, identities and route binding."""

import threading
import time

import psycopg
import pytest

import harness
from harness import (raw_connect, read_error, run_bounded, startup_message, t,
                     tls_after_sslrequest)


def raw_startup_error(burrow, route):
    """Ask for a route over raw TLS; return the ErrorResponse fields (must be one)."""
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.settimeout(t(5))
            tls.sendall(startup_message({"user": "postgres", "database": "postgres",
                                         "options": "-c pgburrow.route=%s" % route}))
            return read_error(tls)


def test_agent_sigkill_mid_session_then_restart(burrow):
    relay = burrow.relay
    relay_pid = relay.pid
    out = {}

    def busy():
        try:
            with burrow.connect(application_name="it-victim") as conn:
                conn.execute("select pg_sleep(60)")
            out["result"] = "returned normally"
        except BaseException as e:
            out["error"] = e
        out["t"] = time.monotonic()

    idle = burrow.connect(application_name="it-idle")
    assert idle.execute("select 1").fetchone()[0] == 1
    th = threading.Thread(target=busy, daemon=True)
    th.start()
    harness.wait_until(lambda: burrow.pg.sql(
        "select 1 from pg_stat_activity where application_name = 'it-victim' and state = 'active'"),
        t(10), "the victim query to be running")

    mark = relay.mark()
    t0 = time.monotonic()
    burrow.agents["agent-a"].kill()
    th.join(t(10))
    assert not th.is_alive(), "client still blocked %.0fs after the agent was SIGKILLed" % t(10)
    assert "result" not in out, "query through a dead agent returned normally"
    assert isinstance(out["error"], psycopg.OperationalError), repr(out["error"])
    print("client saw after %.2fs: %s" % (out["t"] - t0, out["error"]))
    assert out["t"] - t0 < t(5)
    relay.wait_for_log("tunnel down agent=agent-a", timeout=5, since=mark)

    # The idle session on the same tunnel ends with an error too (not a hang).
    with pytest.raises(psycopg.OperationalError):
        run_bounded(lambda: idle.execute("select 1"), t(10), "query on the idle session")
    idle.close()

    # No agent now: an immediate 57P03.
    err = run_bounded(lambda: raw_startup_error(burrow, "a"), t(5), "startup without agent")
    assert err.get("C") == "57P03", err

    # A new agent process serves new sessions; the relay was never restarted.
    burrow.restart_agent("agent-a")
    with burrow.connect() as conn:
        assert conn.execute("select 'back'").fetchone()[0] == "back"
    assert relay.alive() and relay.pid == relay_pid


def test_relay_restart_agent_reconnects(burrow):
    agent = burrow.agents["agent-a"]
    agent_pid = agent.pid
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    amark = agent.mark()
    rc = burrow.relay.stop()
    assert rc == 0, "relay exit status %s after SIGTERM" % rc
    agent.wait_for_log("tunnel down relay=", timeout=5, since=amark)

    amark = agent.mark()
    burrow.restart_relay()  # same config, same ports
    agent.wait_for_log("tunnel up relay=", timeout=10, since=amark)
    burrow.relay.wait_for_log("tunnel up agent=agent-a ", timeout=5)
    for _ in range(3):
        with burrow.connect() as conn:
            assert conn.execute("select 'reconnected'").fetchone()[0] == "reconnected"
    assert agent.alive() and agent.pid == agent_pid


def test_agent_cert_from_other_ca_rejected(burrow_env):
    b = burrow_env
    b.start_relay()
    evil = b.start_agent("agent-a", routes=("a",), evil=True, wait=False)
    line = b.relay.wait_for_log("tunnel rejected", timeout=10)
    assert "peer=127.0.0.1:" in line, line
    # The agent keeps retrying (it never gives up) and keeps being rejected.
    harness.wait_until(lambda: b.relay.count("tunnel rejected") >= 2, t(10),
                       "a second rejected attempt")
    assert b.relay.count("tunnel up") == 0, b.relay.lines("tunnel up")
    assert evil.count("tunnel up") == 0, evil.lines("tunnel up")
    assert evil.alive()
    # Nothing serves route a.
    err = raw_startup_error(b, "a")
    assert err.get("C") == "57P03", err


def test_agent_cannot_serve_route_not_allowed(burrow_env):
    """agent-a is allowed route a only; it offers a and b. Route b must stay unserved."""
    b = burrow_env
    b.start_relay()  # a -> agent-a, b -> agent-b
    agent = b.start_agent("agent-a", routes=("a", "b"), wait=False)
    refused = b.relay.wait_for_log("tunnel refused agent=agent-a route=b", timeout=10)
    assert "reason=" in refused, refused
    problems = []
    try:
        up = b.relay.wait_for_log("tunnel up agent=agent-a ", timeout=5)
        routes = harness.kv(up).get("routes", "").split(",")
        if "b" in routes:
            problems.append("relay lists route b for agent-a: %s" % up)
    except AssertionError as e:
        up = None
        problems.append("the tunnel of agent-a was not accepted for its allowed route a: %s" % e)

    # A client asking for route b gets 57P03 and no session is opened on agent-a.
    err = raw_startup_error(b, "b")
    assert err.get("C") == "57P03", err
    assert not any(harness.kv(l).get("route") == "b" for l in b.relay.lines("session start")), \
        b.relay.lines("session start")
    assert not problems, "\n".join(problems)

    # Route a, selected by options, is served by agent-a.
    with b.connect(route="a") as conn:
        assert conn.execute("select current_setting('pgburrow.route')").fetchone()[0] == "a"
    start = b.relay.wait_for_log("session start ", timeout=5)
    assert "route=a" in start and "agent=agent-a" in start, start
    assert agent.alive()


def test_route_selection_two_agents(burrow_env):
    b = burrow_env
    b.start_relay(default_route="a")
    b.start_agent("agent-a", routes=("a",))
    b.start_agent("agent-b", routes=("b",))
    for route, app in (("b", "it-route-b"), ("a", "it-route-a"), (None, "it-route-default")):
        mark = b.relay.mark()
        with b.connect(route=route, application_name=app) as conn:
            # The options parameter reaches PostgreSQL unchanged.
            got = conn.execute("select current_setting('pgburrow.route', true)").fetchone()[0]
            assert got == route if route else got in (None, ""), got
        start = b.relay.wait_for_log("session start ", timeout=5, since=mark)
        want = route or "a"
        fields = harness.kv(start)
        assert fields.get("route") == want and fields.get("agent") == "agent-" + want, start
