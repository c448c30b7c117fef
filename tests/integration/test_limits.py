"""Limits: sessions per route and per source address, streams per tunnel, tunnels per agent
identity. Each limit answers FATAL 53300 with its reason and harms nothing else."""

import os
import signal
import socket

import psycopg
import pytest

import harness
from harness import startup_message, t


def refused_with(relay, sqlstate, text):
    """libpq reports no SQLSTATE for a failed connection: the relay's log line has it."""
    return any("sqlstate=%s" % sqlstate in l and text in l for l in relay.lines("refused client="))


def test_route_max_sessions(burrow_env):
    b = burrow_env
    b.start_relay(routes={"a": {"agents": ["agent-a"], "max_sessions": "2"},
                          "b": ["agent-a"]})
    b.start_agent("agent-a", routes=("a", "b"))
    c1, c2 = b.connect(), b.connect()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            b.connect()
        assert "too many sessions for route" in str(e.value)
        assert refused_with(b.relay, "53300", "too many sessions for route")
        # another route is not affected
        with b.connect(route="b") as other:
            assert other.execute("select 1").fetchone()[0] == 1
        ends = lambda: b.relay.log().count("session end")  # noqa: E731
        harness.wait_until(lambda: ends() >= 1, t(5), "the end of the session on route b")
        c1.close()
        harness.wait_until(lambda: ends() >= 2, t(5), "the end of c1's session")
        with b.connect() as again:
            assert again.execute("select 2").fetchone()[0] == 2
        assert c2.execute("select 3").fetchone()[0] == 3
    finally:
        c1.close()
        c2.close()


def raw_session_from(source_ip, burrow):
    """A TLS session from source_ip: returns (socket, first message type, body)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(t(10))
    s.bind((source_ip, 0))
    s.connect(("127.0.0.1", burrow.client_port))
    tls = harness.tls_after_sslrequest(s, burrow.certs.ca)
    tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
    typ, body = harness.read_message(tls)
    return tls, typ, body


def test_max_sessions_per_source(burrow_env):
    b = burrow_env
    b.start_relay(max_sessions_per_source="2")
    b.start_agent("agent-a", routes=("a",))
    held = []
    try:
        for _ in range(2):
            tls, typ, _ = raw_session_from("127.0.0.1", b)
            held.append(tls)
            assert typ == "R"
        tls, typ, body = raw_session_from("127.0.0.1", b)
        held.append(tls)
        assert typ == "E"
        err = harness.parse_error_response(body)
        assert err["C"] == "53300" and "too many sessions from 127.0.0.1" in err["M"], err
        # another source address still gets in
        tls, typ, _ = raw_session_from("127.0.0.2", b)
        held.append(tls)
        assert typ == "R"
    finally:
        for s in held:
            s.close()


def test_max_streams_per_tunnel(burrow_env):
    b = burrow_env
    b.start_relay(max_streams_per_tunnel="2")
    b.start_agent("agent-a", routes=("a",))
    c1, c2 = b.connect(), b.connect()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            b.connect()
        assert "cannot take more sessions" in str(e.value)
        assert refused_with(b.relay, "53300", "cannot take more sessions")
        assert c1.execute("select 1").fetchone()[0] == 1
    finally:
        c1.close()
        c2.close()


def test_tunnels_per_agent_live_duplicate_refused_zombie_replaced(burrow_env):
    """A second process with agent-a's certificate is refused while the first is alive; once
    the first goes silent (SIGSTOP: a zombie tunnel, as after a network cut), the newcomer
    replaces it at once, long before dead_timeout would have noticed."""
    b = burrow_env
    b.start_relay(ping_interval="250ms", dead_timeout="60s")
    first = b.start_agent("agent-a", routes=("a",), ping_interval="250ms", dead_timeout="60s")
    relay = b.relay
    mark = relay.mark()
    ini = b.write_agent_ini("agent-a", routes=("a",), ping_interval="250ms", dead_timeout="60s",
                            reconnect_min="100ms", reconnect_max="500ms")
    second = harness.Daemon("agent", ini, b._logpath("agent-a-second")).start()
    b.daemons.append(second)
    relay.wait_for_log("already has 1 live tunnel", timeout=10, since=mark)
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    assert relay.count("tunnel replaced", since=mark) == 0
    os.kill(first.pid, signal.SIGSTOP)
    try:
        relay.wait_for_log("tunnel replaced agent=agent-a", timeout=10, since=mark)
        second.wait_for_log("tunnel up relay=", timeout=10)
        with b.connect() as conn:
            assert conn.execute("select 2").fetchone()[0] == 2
    finally:
        os.kill(first.pid, signal.SIGCONT)


def test_stream_window_configurable(burrow_env):
    """stream_window reaches the agent in WELCOME; a small window still carries bulk data
    intact both ways (every byte, in order)."""
    b = burrow_env
    b.start_relay(stream_window="16k")
    b.start_agent("agent-a", routes=("a",))
    b.agents["agent-a"].wait_for_log("window=16384", timeout=5)
    with b.connect() as conn:
        out = bytearray()
        with conn.cursor().copy(
                "COPY (SELECT i, md5(i::text) FROM generate_series(1, 200000) i) TO STDOUT") as cp:
            for chunk in cp:
                out += chunk
        want = conn.execute("SELECT md5(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' "
                            "ORDER BY i)) FROM generate_series(1, 200000) i").fetchone()[0]
        import hashlib
        assert hashlib.md5(bytes(out)).hexdigest() == want
        conn.execute("CREATE TEMP TABLE w (t text)")
        with conn.cursor().copy("COPY w FROM STDIN") as cp:
            for i in range(50000):
                cp.write("line %d %s\n" % (i, "y" * 40))
        assert conn.execute("SELECT count(*) FROM w").fetchone()[0] == 50000


def test_stream_window_bounds(burrow_env):
    b = burrow_env
    ini = b.write_relay_ini(stream_window="8k")
    import subprocess
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(10))
    assert r.returncode != 0 and "stream_window" in r.stderr and "16k to 16M" in r.stderr, r.stderr
