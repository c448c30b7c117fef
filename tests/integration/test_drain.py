"""Graceful drain: SIGTERM on the relay or the agent lets running sessions finish (up to
drain_timeout), refuses new ones, and exits 0; a second SIGTERM stops at once."""

import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import t


def wait_exit(daemon, timeout):
    daemon.expected_exit = True
    try:
        return daemon.proc.wait(t(timeout))
    except subprocess.TimeoutExpired:
        pytest.fail("%s did not exit within %.0fs" % (daemon.describe(), t(timeout)))


def test_relay_sigterm_lets_running_session_finish(burrow):
    relay, agent = burrow.relay, burrow.agents["agent-a"]
    amark = agent.mark()
    with burrow.connect() as conn:
        result = {}

        def long_query():
            try:
                result["v"] = conn.execute("select 7 from pg_sleep(1.5)").fetchone()[0]
            except Exception as e:  # noqa: BLE001 - reported below
                result["e"] = e

        th = threading.Thread(target=long_query)
        th.start()
        time.sleep(0.3)  # the query is running (not a synchronisation: the result is checked)
        mark = relay.mark()
        os.kill(relay.pid, signal.SIGTERM)
        relay.wait_for_log("draining", timeout=5, since=mark)
        agent.wait_for_log("sent GOAWAY code=00000", timeout=5, since=amark)
        # the agent keeps the drained tunnel for the running session and dials a replacement,
        # which this relay, no longer listening, refuses (another one behind the name would not)
        agent.wait_for_log("sessions=1 (relay sent GOAWAY); dialing a replacement", timeout=5,
                           since=amark)
        agent.wait_for_log("tunnel failed relay=", timeout=5, since=amark)
        # no new connections while draining
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(burrow.dsn(), connect_timeout=3)
        th.join(t(10))
        assert result.get("v") == 7, result
        assert relay.alive(), "the relay stopped before the session ended"
        # the session still works for more queries
        assert conn.execute("select 8").fetchone()[0] == 8
    rc = wait_exit(relay, 10)
    assert rc == 0
    assert "every session has ended" in relay.log()


def test_relay_drain_timeout_closes_sessions(burrow_env):
    b = burrow_env
    b.start_relay(drain_timeout="1s")
    b.start_agent("agent-a", routes=("a",))
    conn = b.connect()
    try:
        assert conn.execute("select 1").fetchone()[0] == 1
        started = time.monotonic()
        os.kill(b.relay.pid, signal.SIGTERM)
        rc = wait_exit(b.relay, 10)
        elapsed = time.monotonic() - started
        assert rc == 0
        assert 0.8 <= elapsed <= t(5), elapsed
        assert "drain_timeout reached" in b.relay.log()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()


def test_second_sigterm_stops_at_once(burrow):
    relay = burrow.relay
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
        mark = relay.mark()
        os.kill(relay.pid, signal.SIGTERM)
        relay.wait_for_log("draining", timeout=5, since=mark)
        os.kill(relay.pid, signal.SIGTERM)
        assert wait_exit(relay, 5) == 0


def test_agent_sigterm_drains_and_new_sessions_go_elsewhere(burrow_env):
    """Two agents serve route a; SIGTERM on one: its session goes on, new sessions go to the
    other agent, and the drained agent exits 0 once its session ends."""
    b = burrow_env
    b.start_relay(routes={"a": ["agent-a", "agent-b"], "b": ["agent-b"]})
    a = b.start_agent("agent-a", routes=("a",))
    b.start_agent("agent-b", routes=("a",))
    relay = b.relay
    # find a session served by agent-a
    conns = [b.connect() for _ in range(4)]
    try:
        starts = relay.lines("session start")
        on_a = [i for i, l in enumerate(starts[-4:]) if "agent=agent-a" in l]
        assert on_a, "round robin never picked agent-a: %r" % starts
        conn_a = conns[on_a[0]]
        for i, c in enumerate(conns):
            if i != on_a[0]:
                c.close()
        mark = relay.mark()
        os.kill(a.pid, signal.SIGTERM)
        relay.wait_for_log("tunnel draining agent=agent-a", timeout=5, since=mark)
        # new sessions all go to agent-b
        for _ in range(4):
            with b.connect() as c:
                assert c.execute("select 1").fetchone()[0] == 1
        new_starts = relay.lines("session start", since=mark)
        assert len(new_starts) == 4 and all("agent=agent-b" in l for l in new_starts), new_starts
        # the draining agent's session still works, and the agent waits for it
        assert conn_a.execute("select 42").fetchone()[0] == 42
        assert a.alive()
        conn_a.close()
        assert wait_exit(a, 10) == 0
        assert "every session has ended" in a.log()
    finally:
        for c in conns:
            c.close()
