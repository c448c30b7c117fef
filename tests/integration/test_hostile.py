"""Hostile input at a running relay while a steady session runs (issue 5, "Hostile input").

One psycopg session loops over queries and COPYs and checks every result; meanwhile the test
throws at the relay's client listener garbage, truncated and pipelined SSLRequests, a huge
startup length, 1000 half-open connections, a garbage TLS ClientHello, random CancelRequests and
slowloris clients, and at its tunnel listener plaintext, TLS without a client certificate and a
valid agent certificate that sends garbage frames after HELLO. The steady session must see no
error and only right results; relay and agent stay up; the garbage tunnels are closed with a
protocol error and only they are.
"""

import hashlib
import os
import random
import socket
import ssl
import struct
import threading
import time


import harness
from harness import PROTOCOL_3_0, raw_connect, recv_exact, ssl_request, startup_message, t

CANCEL_REQUEST_CODE = 80877102


class Steady:
    """A session that runs queries and COPY OUTs in a loop and checks every answer."""

    def __init__(self, burrow):
        self.burrow = burrow
        self.stop = threading.Event()
        self.errors = []
        self.queries = 0
        self.copies = 0
        self.th = threading.Thread(target=self.run, daemon=True)

    def run(self):
        rows, width = 2000, 500
        want = hashlib.sha256(("y" * (width - 1) + "\n").encode() * rows).hexdigest()
        try:
            with self.burrow.connect(application_name="it-steady") as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    s = "steady-%d-%s" % (i, "z" * (i % 300))
                    got = conn.execute("select %s::int + 1, md5(%s), length(%s)",
                                       (i, s, s)).fetchone()
                    if got != (i + 1, hashlib.md5(s.encode()).hexdigest(), len(s)):
                        self.errors.append("query %d: wrong result %r" % (i, got))
                    self.queries += 1
                    if i % 20 == 0:
                        h = hashlib.sha256()
                        with conn.cursor().copy("COPY (SELECT repeat('y', %d) FROM "
                                                "generate_series(1, %d)) TO STDOUT"
                                                % (width - 1, rows)) as copy:
                            for data in copy:
                                h.update(data)
                        if h.hexdigest() != want:
                            self.errors.append("COPY %d: wrong bytes" % i)
                        self.copies += 1
        except BaseException as e:  # noqa: B902 - reported by the test
            self.errors.append("steady session failed: %r" % e)

    def __enter__(self):
        self.th.start()
        harness.wait_until(lambda: self.queries >= 5 or self.errors, t(10), "the steady session")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.th.join(t(20))


def drain(sock, timeout):
    """Read until the peer closes (bounded); return what it sent. Never raises on a reset."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
        return got
    raise AssertionError("peer did not close within %.1fs (got %r)" % (timeout, got[:100]))


def rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def error_code(data):
    """SQLSTATE of the ErrorResponse at the start of data, or None."""
    if len(data) < 5 or data[:1] != b"E":
        return None
    fields = harness.parse_error_response(data[5:])
    return fields.get("C")


# -- client listener cases ----------------------------------------------------------------------

def case_garbage_first_bytes(port, rng):
    for _ in range(20):
        first = rng.choice([b for b in range(1, 256) if b != 0x16])
        with raw_connect(port) as s:
            s.sendall(bytes([first]) + os.urandom(rng.randrange(7, 200)))
            got = drain(s, t(5))
        assert error_code(got) == "08P01", got[:200]


def case_truncated_sslrequest(port, rng):
    for n in (1, 4, 7):
        with raw_connect(port) as s:
            s.sendall(ssl_request()[:n])
            s.shutdown(socket.SHUT_WR)
            drain(s, t(5))
        s = raw_connect(port)
        s.sendall(ssl_request()[:n])
        rst(s)


def case_pipelined_sslrequest(port, rng):
    with raw_connect(port) as s:
        s.sendall(ssl_request() + startup_message({"user": "postgres", "database": "postgres"}))
        got = drain(s, t(5))
    # 'S' may come first; the answer is the 08P01 error either way, never TLS.
    assert error_code(got.lstrip(b"S")) == "08P01", got[:200]


def case_huge_startup_length(port, rng):
    for length in (0x7fffffff, 0xffffffff, 10001, 3):
        with raw_connect(port) as s:
            s.sendall(struct.pack("!II", length, PROTOCOL_3_0) + b"user\0x\0\0")
            got = drain(s, t(5))
        assert error_code(got) == "08P01", (length, got[:200])


def case_tls_garbage(port, rng, ca):
    # A direct-TLS "ClientHello" that is garbage.
    with raw_connect(port) as s:
        s.sendall(b"\x16\x03\x01\x00\x80" + os.urandom(128))
        drain(s, t(5))
    # A record header announcing far more than it sends, then nothing.
    with raw_connect(port) as s:
        s.sendall(b"\x16\x03\x01\xff\xff" + os.urandom(16))
        s.shutdown(socket.SHUT_WR)
        drain(s, t(5))
    # After a proper SSLRequest: garbage instead of a handshake.
    with raw_connect(port) as s:
        s.sendall(ssl_request())
        assert recv_exact(s, 1) == b"S"
        s.sendall(os.urandom(300))
        drain(s, t(5))
    # A real handshake, then garbage records inside the connection.
    s = raw_connect(port)
    tls = harness.tls_after_sslrequest(s, ca)
    raw = socket.socket(fileno=os.dup(tls.fileno()))
    raw.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
    drain(raw, t(5))
    raw.close()
    tls.close()


def case_cancel_random(port, rng):
    for _ in range(30):
        with raw_connect(port) as s:
            s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, rng.getrandbits(31),
                                  rng.getrandbits(32)))
            assert drain(s, t(5)) == b""  # never answered
    # A truncated one and an oversized one.
    with raw_connect(port) as s:
        s.sendall(struct.pack("!III", 16, CANCEL_REQUEST_CODE, 1))
        s.shutdown(socket.SHUT_WR)
        drain(s, t(5))
    with raw_connect(port) as s:
        s.sendall(struct.pack("!II", 100000, CANCEL_REQUEST_CODE) + os.urandom(64))
        drain(s, t(5))


def case_slowloris(port, rng, n=8, seconds=2.5):
    """n clients send a plaintext StartupMessage 1 byte per 100 ms, for at most `seconds`;
    then each either finishes (and must get an error: no TLS) or gives up."""
    errs = []
    done = []

    def one(k):
        try:
            # Even k: a short packet that completes (~1.6 s); odd k: one that never does.
            pkt = startup_message({"user": "u"} if k % 2 == 0 else
                                  {"user": "postgres", "database": "postgres",
                                   "application_name": "slow%d" % k})
            with raw_connect(port) as s:
                deadline = time.monotonic() + seconds
                for i in range(len(pkt)):
                    if time.monotonic() > deadline:
                        rst(s)
                        return
                    s.sendall(pkt[i:i + 1])
                    time.sleep(0.1)
                got = drain(s, t(5))
                if error_code(got) != "28000":
                    errs.append(got[:100])
                done.append(k)
        except OSError as e:
            errs.append(repr(e))

    ths = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(n)]
    for th in ths:
        th.start()
    return ths, errs, done


def case_half_open(port, count):
    socks = []
    try:
        for i in range(count):
            s = socket.socket()
            s.settimeout(t(10))
            s.connect(("127.0.0.1", port))
            if i % 3 == 1:
                s.sendall(ssl_request()[:5])
            elif i % 3 == 2:
                s.sendall(ssl_request())
            socks.append(s)
        time.sleep(0.5)
    finally:
        for i, s in enumerate(socks):
            if i % 2:
                rst(s)
            else:
                s.close()
    return len(socks)


# -- tunnel listener cases ----------------------------------------------------------------------

def frame(typ, stream, body, version=1, flags=0):
    return struct.pack("!BBHII", version, typ, flags, stream, len(body)) + body


def msgpack_str(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([0xa0 | len(b)]) + b


HELLO_B = frame(0x09, 0, bytes([0x83]) + msgpack_str("vmaj") + b"\x01" + msgpack_str("vmin")
                + b"\x00" + msgpack_str("routes") + b"\x91" + msgpack_str("b"))

GARBAGE_AFTER_HELLO = {
    "random bytes": b"\x02" + os.urandom(2000),
    "bad version": frame(0x07, 0, b"12345678", version=2),
    "unknown type": frame(0x7f, 0, b""),
    "flags set": frame(0x07, 0, b"12345678", flags=1),
    "oversized DATA": struct.pack("!BBHII", 1, 0, 0, 1, 0xffffffff) + os.urandom(100),
    "DATA on unknown stream": frame(0x00, 7, b"hello"),
    "OPEN from an agent": frame(0x02, 3, b"\x80"),
    "WINDOW on no stream": frame(0x01, 1, b"\0\0\0\1"),
    "PING on a stream": frame(0x07, 5, b"12345678"),
    "second HELLO": HELLO_B,
    "msgpack bomb": frame(0x0b, 0, b"\xdf\xff\xff\xff\xff"),
}


def tunnel_tls(burrow, cert=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(burrow.certs.ca)
    ctx.set_alpn_protocols(["pgburrow/1"])
    if cert:
        ctx.load_cert_chain(burrow.certs.agent_crt("agent-b"), burrow.certs.agent_key("agent-b"))
    s = raw_connect(burrow.tunnel_port)
    return ctx.wrap_socket(s, server_hostname="localhost")


def read_frame(sock):
    head = recv_exact(sock, 12)
    ver, typ, flags, stream, length = struct.unpack("!BBHII", head)
    return typ, recv_exact(sock, length)


def case_tunnel_plaintext(burrow):
    mark = burrow.relay.mark()
    with raw_connect(burrow.tunnel_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        drain(s, t(5))
    burrow.relay.wait_for_log("tunnel rejected peer=", timeout=5, since=mark)
    # Half-open tunnel connections, then closed.
    socks = [raw_connect(burrow.tunnel_port) for _ in range(50)]
    for s in socks:
        rst(s)


def case_tunnel_no_client_cert(burrow):
    mark = burrow.relay.mark()
    try:
        tls = tunnel_tls(burrow, cert=False)
    except (ssl.SSLError, OSError):
        pass  # refused during the handshake
    else:
        # TLS 1.3: the server's verdict on the (missing) certificate comes after our Finished.
        tls.settimeout(t(5))
        try:
            tls.sendall(HELLO_B)
            got = tls.recv(100)
            assert got == b"", "relay answered a tunnel without client certificate: %r" % got
        except (ssl.SSLError, OSError):
            pass
        tls.close()
    burrow.relay.wait_for_log("tunnel rejected peer=", timeout=5, since=mark)


def case_tunnel_garbage_frames(burrow):
    """A valid agent certificate (agent-b) sends a valid HELLO, gets WELCOME, then garbage:
    the relay logs a protocol error (08P01) and closes that tunnel only."""
    downs = []
    for what, garbage in GARBAGE_AFTER_HELLO.items():
        mark = burrow.relay.mark()
        tls = tunnel_tls(burrow)
        tls.settimeout(t(5))
        assert tls.selected_alpn_protocol() == "pgburrow/1"
        tls.sendall(HELLO_B)
        typ, body = read_frame(tls)
        assert typ == 0x0a, "expected WELCOME, got type %#x %r" % (typ, body[:100])
        burrow.relay.wait_for_log("tunnel up agent=agent-b ", timeout=5, since=mark)
        try:
            tls.sendall(garbage)
        except (ssl.SSLError, OSError):
            pass
        drain(tls, t(5))
        tls.close()
        line = burrow.relay.wait_for_log("tunnel down agent=agent-b", timeout=5, since=mark)
        downs.append((what, line))
        assert "08P01" in line, (what, line)
    # Garbage instead of HELLO.
    mark = burrow.relay.mark()
    tls = tunnel_tls(burrow)
    try:
        tls.sendall(os.urandom(64))
        drain(tls, t(5))
    except (ssl.SSLError, OSError):
        pass
    tls.close()
    burrow.relay.wait_for_log("tunnel rejected peer=", timeout=5, since=mark)
    for what, line in downs:
        print("%-24s %s" % (what, line[line.find("reason="):]))


# ----------------------------------------------------------------------------------------------

def test_hostile_input_while_a_steady_session_runs(burrow):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    port = burrow.client_port
    relay, agent = burrow.relay, burrow.agents["agent-a"]
    rmark, amark = relay.mark(), agent.mark()
    timings = {}
    with Steady(burrow) as steady:
        slow_threads, slow_errs, slow_done = case_slowloris(port, rng)
        cases = [
            ("garbage first bytes", lambda: case_garbage_first_bytes(port, rng)),
            ("truncated SSLRequest", lambda: case_truncated_sslrequest(port, rng)),
            ("pipelined SSLRequest", lambda: case_pipelined_sslrequest(port, rng)),
            ("huge startup length", lambda: case_huge_startup_length(port, rng)),
            ("1000 half-open connections", lambda: case_half_open(port, 1000)),
            ("TLS garbage", lambda: case_tls_garbage(port, rng, burrow.certs.ca)),
            ("random CancelRequests", lambda: case_cancel_random(port, rng)),
            ("tunnel: plaintext", lambda: case_tunnel_plaintext(burrow)),
            ("tunnel: no client cert", lambda: case_tunnel_no_client_cert(burrow)),
            ("tunnel: garbage frames", lambda: case_tunnel_garbage_frames(burrow)),
        ]
        for name, fn in cases:
            t0 = time.monotonic()
            harness.run_bounded(fn, t(60), name)
            timings[name] = time.monotonic() - t0
            assert relay.alive() and agent.alive(), "a daemon died during %r" % name
            assert not steady.errors, "after %r: %s" % (name, steady.errors[:3])
        for th in slow_threads:
            th.join(t(15))
        assert not any(th.is_alive() for th in slow_threads)
        assert not slow_errs, slow_errs
        assert sorted(slow_done) == [0, 2, 4, 6], slow_done
        q0 = steady.queries
        harness.wait_until(lambda: steady.queries >= q0 + 20 or steady.errors, t(10),
                           "the steady session to go on")
    assert not steady.th.is_alive()
    print("steady session: %d queries, %d COPYs, no error; cases: %s" % (
        steady.queries, steady.copies,
        ", ".join("%s %.1fs" % (k, v) for k, v in timings.items())))
    assert not steady.errors, steady.errors[:5]
    assert steady.copies >= 3
    # agent-a's tunnel was never touched.
    assert relay.count("tunnel down agent=agent-a", since=rmark) == 0
    assert agent.count("tunnel down", since=amark) == 0
    # The relay still serves new sessions.
    with burrow.connect() as conn:
        assert conn.execute("select 'after the storm'").fetchone()[0] == "after the storm"
