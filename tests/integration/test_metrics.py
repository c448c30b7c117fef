"""metrics_listen on both daemons: /metrics (Prometheus text format, parsed with the
prometheus_client parser), /healthz, /readyz; counters that move with real sessions and
refusals; drain_delay (readyz 503 at once, still accepting, then refusing); and the HTTP
responder's answers to bad requests and its bounds (head size, head timeout, connections)."""

import http.client
import os
import signal
import socket
import struct
import subprocess
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import free_port, t, wait_until

HEAD_MAX = 4096  # common/http.h
HEAD_TIMEOUT = 5.0
MAX_CONNS = 16
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def get(port, path, method="GET"):
    """(status, headers, body) of one request."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=t(10))
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def scrape(port):
    """{(name, frozenset(labels.items())): value} of every sample, and the families."""
    status, headers, body = get(port, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["Connection"] == "close"
    families = list(text_string_to_metric_families(body))
    samples = {}
    for fam in families:
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, {f.name: f for f in families}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def raw(port, data, timeout=10.0):
    """Send data, return everything the server answers until it closes (b"" when it resets
    the connection at once, as it does over its connection bound)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=t(timeout))
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    with s:
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def start_with_metrics(b, **relay_keys):
    rport, aport = free_port(), free_port()
    b.start_relay(metrics_listen="127.0.0.1:%d" % rport, **relay_keys)
    b.start_agent("agent-a", routes=("a",), metrics_listen="127.0.0.1:%d" % aport)
    return rport, aport


def test_metrics_move_with_sessions(burrow_env):
    b = burrow_env
    rport, aport = start_with_metrics(b)
    for port in (rport, aport):
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 200
        head = get(port, "/metrics", method="HEAD")
        assert head[0] == 200 and head[2] == "" and int(head[1]["Content-Length"]) > 0

    before, fams = scrape(rport)
    # the parser names counter families without their _total suffix
    for name in ("pgburrow_relay_sessions_active", "pgburrow_relay_sessions",
                 "pgburrow_relay_session_setup_seconds", "pgburrow_relay_refused",
                 "pgburrow_relay_tunnels_up", "pgburrow_relay_pending_connections",
                 "pgburrow_relay_cancel_requests", "pgburrow_reloads",
                 "pgburrow_cert_expiry_timestamp_seconds", "pgburrow_build_info"):
        assert name in fams, sorted(fams)
    assert fams["pgburrow_relay_session_setup_seconds"].type == "histogram"
    assert value(before, "pgburrow_build_info", version="0.1.0", daemon="relay") == 1
    assert value(before, "pgburrow_relay_sessions_total", route="a") == 0
    assert value(before, "pgburrow_relay_sessions_total", route="b") == 0
    assert value(before, "pgburrow_relay_tunnels_up", agent="agent-a") == 1
    assert value(before, "pgburrow_relay_tunnels_up", agent="agent-b") == 0
    assert value(before, "pgburrow_relay_tunnels_up", agent="other") == 0
    expiry = value(before, "pgburrow_cert_expiry_timestamp_seconds", file=b.certs.relay_crt)
    assert expiry and expiry > time.time()
    assert value(before, "pgburrow_cert_expiry_timestamp_seconds", file=b.certs.ca) > time.time()

    with b.connect() as conn:
        assert len(conn.execute("select repeat('x', 200000)").fetchone()[0]) == 200000
        during, _ = scrape(rport)
        assert value(during, "pgburrow_relay_sessions_active", route="a") == 1
        # the running session's bytes are counted already
        assert value(during, "pgburrow_relay_session_bytes_total", route="a",
                     direction="to_client") >= 200000
        agent_during, _ = scrape(aport)
        assert value(agent_during, "pgburrow_agent_sessions_active", route="a") == 1
    b.relay.wait_for_log("session end", timeout=5)

    def ended():
        s, _ = scrape(rport)
        return s if value(s, "pgburrow_relay_sessions_active", route="a") == 0 else None

    after = wait_until(ended, t(5), "the session's end in the relay's metrics")
    assert value(after, "pgburrow_relay_sessions_total", route="a") == 1
    assert value(after, "pgburrow_relay_session_bytes_total", route="a",
                 direction="to_client") >= 200000
    assert value(after, "pgburrow_relay_session_bytes_total", route="a",
                 direction="to_server") > 0
    assert value(after, "pgburrow_relay_session_setup_seconds_count") == 1
    assert value(after, "pgburrow_relay_session_setup_seconds_bucket", le="+Inf") == 1

    def agent_ended():
        s, _ = scrape(aport)
        return s if value(s, "pgburrow_agent_sessions_active", route="a") == 0 else None

    agent = wait_until(agent_ended, t(5), "the session's end in the agent's metrics")
    assert value(agent, "pgburrow_build_info", version="0.1.0", daemon="agent") == 1
    assert value(agent, "pgburrow_agent_sessions_total", route="a") == 1
    assert value(agent, "pgburrow_agent_upstream_connect_failures_total", route="a") == 0
    assert value(agent, "pgburrow_agent_session_bytes_total", route="a",
                 direction="to_client") >= 200000
    assert value(agent, "pgburrow_agent_tunnels_up", relay="127.0.0.1:%d" % b.tunnel_port) == 1
    assert value(agent, "pgburrow_cert_expiry_timestamp_seconds",
                 file=b.certs.agent_crt("agent-a")) > time.time()


def test_refusals_and_reloads_counted(burrow_env):
    b = burrow_env
    rport, _ = start_with_metrics(b)
    with pytest.raises(psycopg.OperationalError, match="unknown route"):
        b.connect(route="nosuch")
    with pytest.raises(psycopg.OperationalError, match="no agent"):
        b.connect(route="b")
    s, _ = scrape(rport)
    assert value(s, "pgburrow_relay_refused_sqlstate_total", sqlstate="3D000") == 1
    assert value(s, "pgburrow_relay_refused_sqlstate_total", sqlstate="57P03") == 1
    assert value(s, "pgburrow_relay_refused_total", reason="refused") == 2
    assert value(s, "pgburrow_relay_sessions_total", route="b") == 0
    assert value(s, "pgburrow_reloads_total", result="ok") == 0
    assert value(s, "pgburrow_last_reload_timestamp_seconds") == 0

    # a reload is counted; a new metrics_listen needs a restart (said in the log)
    mark = b.relay.mark()
    other = free_port()
    b.write_relay_ini(metrics_listen="127.0.0.1:%d" % other)
    os.kill(b.relay.pid, signal.SIGHUP)
    b.relay.wait_for_log("reload: ok", timeout=5, since=mark)
    assert "restart pgburrow-relay to apply it" in b.relay.log()[mark:]
    s, _ = scrape(rport)
    assert value(s, "pgburrow_reloads_total", result="ok") == 1
    assert value(s, "pgburrow_last_reload_success") == 1
    assert value(s, "pgburrow_last_reload_timestamp_seconds") >= time.time() - t(60)
    # routes follow the configuration: a new one appears, a removed idle one goes
    mark = b.relay.mark()
    b.write_relay_ini(routes={"a": ["agent-a"], "c": ["agent-b"]},
                      metrics_listen="127.0.0.1:%d" % rport)
    os.kill(b.relay.pid, signal.SIGHUP)
    b.relay.wait_for_log("reload: ok", timeout=5, since=mark)
    s, _ = scrape(rport)
    assert value(s, "pgburrow_relay_sessions_total", route="c") == 0
    assert value(s, "pgburrow_relay_sessions_total", route="b") is None
    assert value(s, "pgburrow_relay_refused_sqlstate_total", sqlstate="3D000") == 1

    mark = b.relay.mark()
    with open(b.relay_ini, "a") as f:
        f.write("[relay]\nbogus_key = 1\n")
    os.kill(b.relay.pid, signal.SIGHUP)
    b.relay.wait_for_log("reload: failed", timeout=5, since=mark)
    s, _ = scrape(rport)
    assert value(s, "pgburrow_reloads_total", result="error") == 1
    assert value(s, "pgburrow_reloads_total", result="ok") == 2
    assert value(s, "pgburrow_last_reload_success") == 0


def test_cancels_and_pending_connections(burrow_env):
    b = burrow_env
    rport, _ = start_with_metrics(b)
    # CancelRequests for no session of this relay go to every agent; past the per-source
    # burst (20, relay/cancel.h) they are dropped
    sent = 25
    for pid in range(sent):
        with socket.create_connection(("127.0.0.1", b.client_port), timeout=t(5)) as c:
            c.sendall(struct.pack("!iiii", 16, 80877102, 100000 + pid, 4242))
            assert c.recv(16) == b""

    def all_counted():
        s, _ = scrape(rport)
        fwd = value(s, "pgburrow_relay_cancel_requests_total", result="forwarded")
        return s if fwd + value(s, "pgburrow_relay_cancel_requests_total",
                                result="dropped") == sent else None

    s = wait_until(all_counted, t(5), "every cancel request counted")
    assert value(s, "pgburrow_relay_cancel_requests_total", result="forwarded") >= 1
    assert value(s, "pgburrow_relay_cancel_requests_total", result="dropped") >= 1
    assert value(s, "pgburrow_relay_refused_total", reason="cancel_rate") == value(
        s, "pgburrow_relay_cancel_requests_total", result="dropped")

    # a connection that has sent nothing holds a pending slot until it goes
    assert value(s, "pgburrow_relay_pending_connections") == 0
    idle = socket.create_connection(("127.0.0.1", b.client_port), timeout=t(5))
    try:
        wait_until(lambda: value(scrape(rport)[0], "pgburrow_relay_pending_connections") == 1,
                   t(5), "the idle connection in pending_connections")
    finally:
        idle.close()
    wait_until(lambda: value(scrape(rport)[0], "pgburrow_relay_pending_connections") == 0,
               t(5), "pending_connections back to 0")


def test_agent_readyz_follows_its_tunnel(burrow_env):
    b = burrow_env
    aport = free_port()
    b.write_relay_ini()
    b.start_agent("agent-a", routes=("a",), wait=False, metrics_listen="127.0.0.1:%d" % aport)
    b.agents["agent-a"].wait_for_log("started relays=", timeout=5)
    status, _, body = get(aport, "/readyz")
    assert status == 503 and body == "not ready\n"
    assert get(aport, "/healthz")[0] == 200
    s, _ = scrape(aport)
    assert value(s, "pgburrow_agent_tunnels_up", relay="127.0.0.1:%d" % b.tunnel_port) == 0
    b.restart_relay()
    b.agents["agent-a"].wait_for_log("tunnel up relay=", timeout=10)
    wait_until(lambda: get(aport, "/readyz")[0] == 200, t(5), "the agent's /readyz to turn 200")


def test_drain_delay_keeps_accepting_while_readyz_is_503(burrow_env):
    """During drain_delay (long here, so that no work races it) /readyz is 503 and new
    sessions are still served; SIGINT still stops at once."""
    b = burrow_env
    rport, _ = start_with_metrics(b, drain_delay="1h")
    relay = b.relay
    assert get(rport, "/readyz")[0] == 200
    mark = relay.mark()
    os.kill(relay.pid, signal.SIGTERM)
    relay.wait_for_log("/readyz answers 503", timeout=5, since=mark)
    status, _, body = get(rport, "/readyz")
    assert status == 503 and body == "not ready\n"
    assert get(rport, "/healthz")[0] == 200
    for _ in range(3):
        with b.connect() as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
    s, _ = scrape(rport)
    assert value(s, "pgburrow_relay_draining") == 1
    assert value(s, "pgburrow_relay_sessions_total", route="a") == 3
    assert "received SIGTERM: draining" not in relay.log()[mark:]


def test_drain_delay_then_drains(burrow_env):
    """After drain_delay the relay drains as without it: new sessions are refused, the
    running one goes on, and the relay exits 0 when it ends."""
    b = burrow_env
    rport, _ = start_with_metrics(b, drain_delay="300ms")
    relay = b.relay
    held = b.connect()
    try:
        mark = relay.mark()
        os.kill(relay.pid, signal.SIGTERM)
        relay.wait_for_log("/readyz answers 503", timeout=5, since=mark)
        relay.wait_for_log("received SIGTERM: draining", timeout=5, since=mark)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(b.dsn(), connect_timeout=int(t(3)))
        assert get(rport, "/readyz")[0] == 503
        assert held.execute("select 2").fetchone()[0] == 2
    finally:
        held.close()
    relay.expected_exit = True
    assert relay.proc.wait(t(10)) == 0


def test_drain_delay_second_sigterm_stops_at_once(burrow_env):
    b = burrow_env
    start_with_metrics(b, drain_delay="1h")
    mark = b.relay.mark()
    os.kill(b.relay.pid, signal.SIGTERM)
    b.relay.wait_for_log("/readyz answers 503", timeout=5, since=mark)
    os.kill(b.relay.pid, signal.SIGTERM)
    b.relay.expected_exit = True
    assert b.relay.proc.wait(t(5)) == 0


def test_bad_http_gets_its_status_and_harms_nothing(burrow_env):
    b = burrow_env
    rport, _ = start_with_metrics(b)
    assert get(rport, "/metrics", method="POST")[0] == 405
    assert get(rport, "/metrics", method="DELETE")[1]["Allow"] == "GET, HEAD"
    assert get(rport, "/nosuch")[0] == 404
    assert status_of(raw(rport, b"GET /metrics HTTP/1.1\r\n\r\n")) == 400  # no Host
    assert status_of(raw(rport, b"\x16\x03\x01\x00\x05hello\r\n\r\n")) == 400
    assert status_of(raw(rport, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")) == 505
    assert status_of(raw(rport, b"GET /" + b"a" * 300 + b" HTTP/1.0\r\n\r\n")) == 414
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEAD_MAX + b"\r\n\r\n"
    assert status_of(raw(rport, big)) == 431
    assert status_of(raw(rport, big[:HEAD_MAX])) == 431

    # slowloris: a head that never ends gets 408 after the head timeout, bounded
    started = time.monotonic()
    answer = raw(rport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", timeout=HEAD_TIMEOUT + 10)
    assert status_of(answer) == 408
    assert HEAD_TIMEOUT - 0.5 <= time.monotonic() - started <= t(HEAD_TIMEOUT + 5)

    # connections over the bound are closed at once; the others still get their answers
    idle = [socket.create_connection(("127.0.0.1", rport), timeout=t(10))
            for _ in range(MAX_CONNS)]
    try:
        assert raw(rport, b"GET /healthz HTTP/1.0\r\n\r\n") == b""
        idle[0].sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert status_of(idle[0].recv(4096)) == 200
    finally:
        for c in idle:
            c.close()
    wait_until(lambda: status_of(raw(rport, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200, t(5),
               "a free connection slot")

    # the relay goes on: sessions and scrapes work; the refused connection is counted
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    s, _ = scrape(rport)
    assert value(s, "pgburrow_metrics_connections_refused_total") >= 1
    assert value(s, "pgburrow_relay_sessions_total", route="a") == 1


def test_check_config_validates_the_new_keys(binaries, certs, tmp_path):
    ini = tmp_path / "relay.ini"
    ini.write_text("[relay]\ntls_cert = %s\ntls_key = %s\nagent_ca = %s\n[route a]\nagents = x\n"
                   % (certs.relay_crt, certs.relay_key, certs.ca))
    relay = os.path.join(binaries, "pgburrow-relay")
    agent = os.path.join(binaries, "pgburrow-agent")
    ok = subprocess.run([relay, "-c", str(ini), "--relay.metrics_listen=127.0.0.1:9187",
                         "--relay.drain_delay=15s", "--check-config"], capture_output=True,
                        text=True, timeout=t(30), env=harness.DAEMON_ENV)
    assert ok.returncode == 0, ok.stderr
    for flag, why in (("--relay.metrics_listen=9187", "expected host:port"),
                      ("--relay.drain_delay=soon", "expected a duration")):
        bad = subprocess.run([relay, "-c", str(ini), flag, "--check-config"],
                             capture_output=True, text=True, timeout=t(30),
                             env=harness.DAEMON_ENV)
        assert bad.returncode != 0 and why in bad.stderr, bad.stderr
    bad = subprocess.run([agent, "--agent.metrics_listen=nope", "--check-config"],
                         capture_output=True, text=True, timeout=t(30), env=harness.DAEMON_ENV)
    assert bad.returncode != 0 and "metrics_listen" in bad.stderr, bad.stderr
