"""The PROXY protocol ([relay] proxy_protocol_from): HAProxy (send-proxy-v2, send-proxy) in front
of the relay, connecting to it from its own loopback address BALANCER (HAProxy's `source`), while
the clients connect to HAProxy from 127.0.0.1. The relay must see 127.0.0.1 everywhere: session
log lines, the audit log, allow; a cancel through HAProxy still reaches its session; HAProxy's
health checks (check-send-proxy: a v2 LOCAL header) keep the server up without a refusal line.
Raw sockets play a balancer (bound to BALANCER) and a stranger: a header from an address not in
proxy_protocol_from is refused, a trusted address without a header is refused, a slow or
oversized header is cut off, and the pending slot moves to the client's source.
"""

import json
import os
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

import harness
from harness import expect_closed, free_port, read_error, recv_exact, ssl_request, t, wait_until
from test_ha import HAProxy

BALANCER = "127.0.0.3"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, sport, dst="127.0.0.1", dport=5432, cmd=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


class ProxyHAProxy(HAProxy):
    """test_ha's HAProxy, one backend (the relay) with the PROXY protocol and a source address."""

    def __init__(self, workdir, port, backend, send_proxy="send-proxy-v2"):
        super().__init__(workdir, port, [backend])
        with open(self.cfg) as f:
            text = f.read()
        text = text.replace(
            "server r1 127.0.0.1:%d check" % backend,
            "server r1 127.0.0.1:%d source %s %s check-send-proxy check" % (
                backend, BALANCER, send_proxy))
        text = text.replace("    balance roundrobin\n",
                            "    balance roundrobin\n    option log-health-checks\n")
        with open(self.cfg, "w") as f:
            f.write(text)


def read_audit(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def start(b, **keys):
    path = os.path.join(b.dir, "audit.jsonl")
    keys.setdefault("proxy_protocol_from", BALANCER + "/32")
    b.start_relay(audit_log=path, **keys)
    b.start_agent("agent-a", routes=("a",))
    return path


def connect_from(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(t(10))
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


@pytest.fixture
def haproxy_bin():
    from test_ha import HAPROXY
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (deploy/install-deps.sh test installs it)")
    return HAPROXY


@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_haproxy_client_address(burrow_env, haproxy_bin, send_proxy):
    b = burrow_env
    audit = start(b, log_level="debug")
    lb_port = free_port()
    lb = ProxyHAProxy(b.dir, lb_port, b.client_port, send_proxy).start()
    try:
        mark = b.relay.mark()
        with psycopg.connect(b.dsn(port=lb_port), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            # a cancel through HAProxy reaches the session (a new connection with its header)
            done = {}

            def run():
                try:
                    conn.execute("SELECT pg_sleep(30) -- proxied-cancel")
                except psycopg.errors.QueryCanceled:
                    done["cancelled"] = time.monotonic()

            th = threading.Thread(target=run)
            th.start()
            wait_until(lambda: b.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                        "'SELECT pg_sleep(30) -- proxied-cancel'")[0][0] == 1,
                       t(10), "query running")
            conn.cancel()
            th.join(t(10))
            assert "cancelled" in done, "query not cancelled"
        line = b.relay.wait_for_log("cancel forwarded", since=mark)
        assert "client=127.0.0.1:" in line, line
        start_line = harness.kv(b.relay.wait_for_log("session start ", since=mark))
        assert start_line["client"].startswith("127.0.0.1:"), start_line
        ev = [e for e in read_audit(audit) if e["event"] == "session_start"][0]
        assert ev["client_addr"] == "127.0.0.1", ev
        assert "%s:%d" % (ev["client_addr"], ev["client_port"]) == start_line["client"], ev
        b.relay.wait_for_log("client=127.0.0.1:", since=mark)
        for l in b.relay.lines("session start ", since=mark) + b.relay.lines("session end "):
            assert "client=%s:" % BALANCER not in l, l

        # health checks: a LOCAL header (v2) or a v1 header, accepted, never refused
        # (HAProxy resets a check right after its header: one the relay accepts in time logs
        # its header, one reset while still in the backlog has no address left and is dropped
        # quietly; either way never refused)
        if send_proxy == "send-proxy-v2":
            wait_until(lambda: b.relay.lines("PROXY v2 LOCAL") or
                       b.relay.lines("reset before it was accepted"), t(5), "a health check")
        time.sleep(t(1.2))  # a few checks (every 500 ms)
        assert "is DOWN" not in lb.log(), lb.log()
        assert not b.relay.lines("refused client=%s" % BALANCER), b.relay.lines("refused")
        assert not [l for l in b.relay.lines("refused") if "proxy_protocol_from" in l], \
            b.relay.lines("refused")
    finally:
        lb.stop()


def test_allow_applies_to_client_address(burrow_env, haproxy_bin):
    b = burrow_env
    start(b, allow=BALANCER + "/32")  # the balancer's address is allowed, its client's is not
    lb_port = free_port()
    lb = ProxyHAProxy(b.dir, lb_port, b.client_port).start()
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(b.dsn(port=lb_port)).close()
        # libpq reports the relay's plaintext FATAL as the answer to its SSLRequest
        assert "error response during SSL exchange" in str(e.value), e.value
        line = b.relay.wait_for_log("refused client=127.0.0.1:")
        assert "sqlstate=28000 reason=address not allowed" in line, line

        # reloaded: the client's address allowed, the balancer's not (it needs not be)
        b.write_relay_ini(audit_log=os.path.join(b.dir, "audit.jsonl"), allow="127.0.0.1/32",
                          proxy_protocol_from=BALANCER)
        mark = b.relay.mark()
        os.kill(b.relay.pid, signal.SIGHUP)
        b.relay.wait_for_log("reload: ok", since=mark)
        with psycopg.connect(b.dsn(port=lb_port), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        lb.stop()


def test_header_from_untrusted_address_refused(burrow_env):
    b = burrow_env
    start(b)
    for hdr in (b"PROXY TCP4 10.9.9.9 127.0.0.1 4000 5432\r\n", v2_header("10.9.9.9", 4000)):
        with connect_from("127.0.0.1", b.client_port) as s:
            s.sendall(hdr + ssl_request())
            err = read_error(s)
            assert err["C"] == "08P01" and "proxy_protocol_from" in err["M"], err
            expect_closed(s, t(5))
    line = b.relay.wait_for_log("PROXY protocol header from an address not in")
    assert "client=127.0.0.1:" in line and "10.9.9.9" not in b.relay.log(), line


def test_trusted_address_needs_header(burrow_env):
    b = burrow_env
    start(b)
    with connect_from(BALANCER, b.client_port) as s:
        s.sendall(ssl_request())
        err = read_error(s)
        assert err["C"] == "08P01" and "invalid PROXY protocol header" in err["M"], err
        expect_closed(s, t(5))
    b.relay.wait_for_log("refused client=%s:" % BALANCER)


def test_slow_and_oversized_headers(burrow_env):
    b = burrow_env
    start(b, startup_timeout="1s")
    # slow: cut off at startup_timeout
    with connect_from(BALANCER, b.client_port) as s:
        s.sendall(b"PROXY TCP4 ")
        t0 = time.monotonic()
        expect_closed(s, t(5))
        assert time.monotonic() - t0 < t(3)
    b.relay.wait_for_log("reason=no PROXY protocol header within 1000 ms")
    # v2 longer than the relay takes: refused at its 16th byte
    with connect_from(BALANCER, b.client_port) as s:
        s.sendall(SIG + b"\x21\x11\xff\xff")
        err = read_error(s)
        assert err["C"] == "08P01" and "too long" in err["M"], err
    # v1 without CRLF within 107 bytes
    with connect_from(BALANCER, b.client_port) as s:
        s.sendall(b"PROXY UNKNOWN " + b"x" * 200)
        err = read_error(s)
        assert err["C"] == "08P01" and "107" in err["M"], err


def test_header_and_first_bytes_in_one_write(burrow_env):
    """The header and the client's SSLRequest arrive together, or in pieces: the client's bytes
    are handed on intact, and a full session runs (relay log: the header's address)."""
    b = burrow_env
    start(b)
    mark = b.relay.mark()
    for pieces in ([v2_header("10.1.2.3", 4444) + ssl_request()],
                   [b"PROXY TCP4 10.1.2.3 127.0.0.1 4445 5432\r\n"[:9],
                    b"PROXY TCP4 10.1.2.3 127.0.0.1 4445 5432\r\n"[9:] + ssl_request()[:3],
                    ssl_request()[3:]]):
        with connect_from(BALANCER, b.client_port) as s:
            for p in pieces:
                s.sendall(p)
                time.sleep(0.05)
            assert recv_exact(s, 1) == b"S"
            tls = harness.client_tls_context(b.certs.ca).wrap_socket(s,
                                                                     server_hostname="localhost")
            tls.sendall(harness.startup_message({"user": "postgres", "database": "postgres"}))
            reader = harness.MessageReader(tls)
            while True:
                typ, _ = reader.read()
                if typ == "Z":
                    break
            tls.close()
    lines = b.relay.lines("session start ", since=mark)
    assert [harness.kv(l)["client"] for l in lines] == ["10.1.2.3:4444", "10.1.2.3:4445"], lines


def test_pending_slot_moves_to_client_source(burrow_env):
    """max_pending_per_source bounds each client behind the balancer, not the balancer."""
    b = burrow_env
    start(b, max_pending_per_source=2)
    socks = []
    try:
        # the balancer itself: many connections waiting for their headers at once are fine
        for _ in range(4):
            socks.append(connect_from(BALANCER, b.client_port))
        time.sleep(t(0.3))
        for i, s in enumerate(socks):
            s.sendall(v2_header("10.0.1.%d" % (i + 1), 5000) + ssl_request())
            assert recv_exact(s, 1) == b"S"
        # four clients, each with an SSLRequest answered and no TLS yet: all pending at once
        for i in range(4):
            s = connect_from(BALANCER, b.client_port)
            socks.append(s)
            s.sendall(v2_header("10.0.0.%d" % (i + 1), 5000) + ssl_request())
            assert recv_exact(s, 1) == b"S"
        # one client over its own limit
        for port in (6001, 6002):
            s = connect_from(BALANCER, b.client_port)
            socks.append(s)
            s.sendall(v2_header("10.0.0.9", port) + ssl_request())
            assert recv_exact(s, 1) == b"S"
        s = connect_from(BALANCER, b.client_port)
        socks.append(s)
        s.sendall(v2_header("10.0.0.9", 6003) + ssl_request())
        expect_closed(s, t(5))
        line = b.relay.wait_for_log("refused client=10.0.0.9:6003")
        assert "max_pending_per_source" in line, line
    finally:
        for s in socks:
            s.close()
