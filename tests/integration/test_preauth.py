"""Before authentication: what a peer without credentials can make the relay hold.

Pending connections (client port: not yet routed; tunnel port: no HELLO yet) are bounded
relay-wide and per source, the heaviest source is shed first when slots or file descriptors run
short, oversized TLS records and ClientHellos are refused before OpenSSL buffers them, a tunnel
must say HELLO within hello_timeout (PINGs before it are ignored), and refusal lines are
aggregated per source. Numbers are printed; only behaviour is asserted.
"""

import os
import resource
import socket
import struct
import subprocess
import threading
import time

import psycopg

import harness
from harness import t

# A TLS record header announcing a 16 KiB handshake record, then a ClientHello header
# announcing 128 KiB: 9 bytes that once made OpenSSL allocate the whole message buffer.
BIG_HELLO = bytes([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x02, 0x00, 0x00])


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def open_idle(port, n, source="127.0.0.1", payload=b"", deadline_s=20.0):
    """Up to n connections from source that send payload and then nothing; bounded by time."""
    socks = []
    end = time.monotonic() + t(deadline_s)
    while len(socks) < n and time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(t(5))
        try:
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            if payload:
                s.sendall(payload)
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def closed_count(socks, wait=0.0):
    """How many of socks the relay has closed (EOF or reset)."""
    n = 0
    for s in socks:
        s.settimeout(wait)
        try:
            if s.recv(1) == b"":
                n += 1
        except (ConnectionResetError, BrokenPipeError):
            n += 1
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            n += 1
    return n


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def psql_from(b, source):
    """A full session from source (hostaddr is the relay, the client binds to source via a raw
    socket); returns the connect time in seconds."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(t(10))
    s.bind((source, 0))
    s.connect(("127.0.0.1", b.client_port))
    tls = harness.tls_after_sslrequest(s, b.certs.ca)
    tls.sendall(harness.startup_message({"user": "postgres", "database": "postgres"}))
    reader = harness.MessageReader(tls)
    while True:
        typ, body = reader.read()
        if typ == "E":
            raise AssertionError("startup failed: %r" % harness.parse_error_response(body))
        if typ == "Z":
            break
    elapsed = time.monotonic() - t0
    tls.sendall(harness.query_message("select 42"))
    rows = []
    while True:
        typ, body = reader.read()
        if typ == "D":
            rows.append(body)
        if typ == "Z":
            break
    tls.sendall(harness.TERMINATE)
    tls.close()
    assert rows, "no row"
    return elapsed


def test_flood_numbers_and_per_source_cap(burrow_env):
    """One source's idle connections (more than its cap) keep nobody else out; numbers."""
    b = burrow_env
    b.start_relay(max_pending="400", max_pending_per_source="100")
    b.start_agent("agent-a", routes=("a",))
    relay = b.relay
    rss0 = harness.rss_kib(relay.pid)
    flood = open_idle(b.client_port, 300, payload=harness.ssl_request())
    try:
        # the source holds at most its cap; the rest were closed at once
        harness.wait_until(lambda: closed_count(flood) >= len(flood) - 100, t(10),
                           "connections over max_pending_per_source closed")
        held = len(flood) - closed_count(flood)
        rss1 = harness.rss_kib(relay.pid)
        connect_s = run_connect(b, "127.0.0.2")
        print("\nflood: %d connections from 127.0.0.1, %d held pending (cap 100); relay RSS "
              "%d -> %d KiB (%.1f KiB per connection accepted); a client from 127.0.0.2 "
              "connected in %.3f s" % (len(flood), held, rss0, rss1,
                                       (rss1 - rss0) / len(flood), connect_s))
        assert held <= 100
        assert relay.count("too many pending connections from this source") >= 1
    finally:
        close_all(flood)


def run_connect(b, source):
    return harness.run_bounded(lambda: psql_from(b, source), t(20), "a client from %s" % source)


def test_oversized_client_hello_refused_rss_bounded(burrow_env):
    """9 bytes announcing a 128 KiB ClientHello, on both listeners: refused before OpenSSL
    buffers them; memory per connection stays small and comes back."""
    b = burrow_env
    b.start_relay(max_pending="2000", max_pending_per_source="2000", handshake_burst="2000")
    b.start_agent("agent-a", routes=("a",))
    relay = b.relay
    mark = relay.mark()
    rss0 = harness.rss_kib(relay.pid)
    n = 500
    direct = open_idle(b.client_port, n, payload=BIG_HELLO)
    tunnel = open_idle(b.tunnel_port, n // 2, payload=BIG_HELLO)
    try:
        harness.wait_until(lambda: closed_count(direct) + closed_count(tunnel)
                           >= len(direct) + len(tunnel), t(15), "every oversized hello refused")
        time.sleep(1.0)  # the sweep gives memory back once the flood is gone
        rss1 = harness.rss_kib(relay.pid)
        print("\noversized ClientHello: %d client + %d tunnel connections refused; relay RSS "
              "%d -> %d KiB (%.1f KiB per connection)" % (
                  len(direct), len(tunnel), rss0, rss1,
                  (rss1 - rss0) / max(len(direct) + len(tunnel), 1)))
        assert relay.count("ClientHello of 131072 bytes", since=mark) >= 1
        # under ASan, memory freed when they closed sits in its quarantine (up to 256 MB): the
        # RSS then measures the sanitizer, not the relay (the release build checks it)
        if not harness.SANITIZER:
            assert rss1 - rss0 < 16 * (len(direct) + len(tunnel)), "more than 16 KiB each"
    finally:
        close_all(direct)
        close_all(tunnel)
    # the relay still serves
    with b.connect() as c:
        assert c.execute("select 1").fetchone()[0] == 1


def test_pending_rss_per_connection(burrow_env):
    """Pending connections in the TLS handshake (SSLRequest answered, partial record) cost
    the relay at most 16 KiB each, and the memory comes back once they are gone."""
    b = burrow_env
    b.start_relay(max_pending="2000", max_pending_per_source="2000", handshake_burst="2000",
                  startup_timeout="60s")
    relay = b.relay
    rss0 = harness.rss_kib(relay.pid)
    # a record header announcing 512 bytes, and 4 of them: the handshake waits for the rest
    partial = harness.ssl_request() + bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
    socks = open_idle(b.client_port, 1000, payload=partial)
    try:
        harness.wait_until(lambda: fd_count(relay.pid) >= len(socks), t(10), "all accepted")
        time.sleep(0.5)
        held = len(socks) - closed_count(socks)
        rss1 = harness.rss_kib(relay.pid)
        per = (rss1 - rss0) / max(held, 1)
        print("\npending in TLS handshake: %d held, relay RSS %d -> %d KiB, %.1f KiB each" % (
            held, rss0, rss1, per))
        assert held >= len(socks) * 0.9
        assert per <= 16, "%.1f KiB per pending connection" % per
    finally:
        close_all(socks)
    harness.wait_until(lambda: fd_count(relay.pid) < 50, t(10), "connections closed")
    if harness.SANITIZER or harness.VALGRIND:
        return  # their allocators keep freed memory on purpose
    # Once the flood is gone and the loop has been quiet for a second, the relay returns what
    # it freed (conn.c: the chunk pool shrinks, malloc_trim): back within 1 MiB of before.
    harness.wait_until(lambda: harness.rss_kib(relay.pid) - rss0 < 1024, t(10),
                       "relay RSS back within 1 MiB of %d KiB" % rss0)
    print("after they closed: relay RSS %d KiB" % harness.rss_kib(relay.pid))


def test_emfile_sheds_heaviest_keeps_tunnel_and_sessions(burrow_env):
    """With a low file limit, one source's idle connections are shed before anything
    established: the agent's tunnel and a running session survive, a client from another
    source gets in."""
    b = burrow_env
    b.write_relay_ini(max_pending="5000", max_pending_per_source="5000")
    b.relay_args = ()
    limit = 128

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    d = harness.Daemon("relay", b.relay_ini, b._logpath("relay"), ())
    with open(d.logpath, "ab") as log:
        d.proc = subprocess.Popen([d.binary, "-c", b.relay_ini], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, env=harness.DAEMON_ENV,
                                  cwd=os.path.dirname(d.logpath), start_new_session=True,
                                  preexec_fn=low_limit)
    harness._started.append(d.proc)
    b.daemons.append(d)
    b.relay = d
    d.wait_for_log("listening clients=", timeout=10)
    b.start_agent("agent-a", routes=("a",))
    session = b.connect()
    flood = open_idle(b.client_port, 250, payload=harness.ssl_request())
    try:
        time.sleep(0.5)
        print("\nEMFILE: relay limit %d, %d idle connections opened, relay holds %d fds" % (
            limit, len(flood), fd_count(d.pid)))
        assert fd_count(d.pid) < limit
        assert session.execute("select 7").fetchone()[0] == 7
        connect_s = run_connect(b, "127.0.0.2")
        print("a client from 127.0.0.2 connected in %.3f s" % connect_s)
        assert d.count("shed client=127.0.0.1:") >= 1
        assert d.count("tunnel down") == 0
        assert session.execute("select 8").fetchone()[0] == 8
    finally:
        close_all(flood)
        session.close()


def test_hello_deadline_and_ping_before_welcome(burrow_env):
    """A tunnel that completes TLS and sends only PINGs is not answered and is closed at
    hello_timeout."""
    b = burrow_env
    b.start_relay(hello_timeout="1s")
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(b.certs.ca)
    ctx.load_cert_chain(b.certs.agent_crt("agent-a"), b.certs.agent_key("agent-a"))
    ctx.set_alpn_protocols(["pgburrow/1"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", b.tunnel_port), timeout=t(5))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    mark = b.relay.mark()
    t0 = time.monotonic()
    ping = ping_frame(1)
    got = b""
    tls.settimeout(0.2)
    closed = False
    while time.monotonic() - t0 < t(5):
        try:
            tls.sendall(ping)
        except OSError:
            closed = True
            break
        try:
            data = tls.recv(4096)
            if not data:
                closed = True
                break
            got += data
        except socket.timeout:
            pass
        except (ssl.SSLError, OSError):
            closed = True
            break
    elapsed = time.monotonic() - t0
    print("\ntunnel without HELLO closed after %.2f s (hello_timeout 1 s), %d bytes received" % (
        elapsed, len(got)))
    assert closed, "still open after %.1f s" % elapsed
    assert PONG_TYPE not in frame_types(got), "a PING before WELCOME was answered"
    b.relay.wait_for_log("no HELLO in time", timeout=5, since=mark)


PING_TYPE = None
PONG_TYPE = None


def _proto_types():
    """PING/PONG type codes and header layout from proto/proto.h."""
    global PING_TYPE, PONG_TYPE
    text = open(os.path.join(harness.REPO, "proto", "proto.h")).read()
    import re
    PING_TYPE = int(re.search(r"PROTO_PING\s*=\s*(0x[0-9a-fA-F]+|\d+)", text).group(1), 0)
    PONG_TYPE = int(re.search(r"PROTO_PONG\s*=\s*(0x[0-9a-fA-F]+|\d+)", text).group(1), 0)


_proto_types()


def ping_frame(opaque):
    """A PING frame (proto/frame.c): header version 1, type, flags, stream 0, length 8."""
    return struct.pack("!BBHII", 1, PING_TYPE, 0, 0, 8) + struct.pack("!Q", opaque)


def frame_types(data):
    types = []
    i = 0
    while i + 12 <= len(data):
        _v, typ, _flags, _sid, length = struct.unpack_from("!BBHII", data, i)
        types.append(typ)
        i += 12 + length
    return types


def test_refusal_log_aggregated(burrow_env):
    """A flood of bad handshakes from one source writes a bounded number of lines."""
    b = burrow_env
    b.start_relay(max_pending_per_source="2000", max_pending="2000", handshake_burst="5000",
                  handshake_rate="5000")
    relay = b.relay
    mark = relay.mark()
    n = 0
    end = time.monotonic() + t(4)
    while time.monotonic() < end and n < 2000:
        s = socket.create_connection(("127.0.0.1", b.client_port), timeout=t(5))
        s.sendall(b"garbage!")
        s.close()
        n += 1
    time.sleep(1.5)
    lines = len(relay._since(mark).splitlines())
    print("\nlog aggregation: %d bad connections in %.0f s wrote %d log lines" % (n, t(4), lines))
    assert lines < 10 + 2 * t(6) + 20, lines
    # the next line after suppression says how many were left out
    time.sleep(1.1)
    s = socket.create_connection(("127.0.0.1", b.client_port), timeout=t(5))
    s.sendall(b"garbage!")
    s.close()
    relay.wait_for_log("more suppressed)", timeout=5, since=mark)
