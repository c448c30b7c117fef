"""CancelRequest end to end: the agent hides the backend's real pid and key behind fake ones
whose pid carries the hash of the agent's name; any relay routes a cancel to that agent.

Covered: libpq's PQcancel (psycopg conn.cancel(), psql on SIGINT: plaintext CancelRequest on
a new connection), the libpq 17 form (CancelRequest inside TLS after SSLRequest), forged keys,
per-source rate limiting, and a cancel sent to a second relay for a session of the first.
"""

import os
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import (free_port, raw_connect, startup_message, t, tls_after_sslrequest,
                     wait_until, write_ini)

CANCEL_REQUEST_CODE = 80877102
QUERY_CANCELED = "57014"


def name_hash(name):
    """proto_cancel_name_hash: FNV-1a 32 of the name, xor-folded to 15 bits."""
    h = 2166136261
    for b in name.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return (h ^ (h >> 15)) & 0x7FFF


def cancel_request(pid, key):
    return struct.pack("!III", 12 + len(key), CANCEL_REQUEST_CODE, pid) + key


def send_plain_cancel(port, pid, key):
    """libpq <= 16 style: a new connection, the CancelRequest, then wait for the close."""
    s = raw_connect(port)
    try:
        s.sendall(cancel_request(pid, key))
        s.settimeout(t(5))
        assert s.recv(1) == b"", "the relay answered a CancelRequest"
    finally:
        s.close()


def send_tls_cancel(port, ca, pid, key):
    """libpq 17 style: SSLRequest, TLS, then the CancelRequest inside TLS."""
    tls = tls_after_sslrequest(raw_connect(port), ca)
    try:
        tls.sendall(cancel_request(pid, key))
        tls.settimeout(t(5))
        try:
            assert tls.recv(1) == b"", "the relay answered a CancelRequest"
        except (ConnectionResetError, OSError):
            pass
    finally:
        tls.close()


class RawSession:
    """A session through the relay by hand, keeping the BackendKeyData the client sees."""

    def __init__(self, port, ca, user="postgres", dbname="postgres"):
        self.sock = tls_after_sslrequest(raw_connect(port), ca)
        self.sock.sendall(startup_message({"user": user, "database": dbname}))
        self.reader = harness.MessageReader(self.sock)
        self.pid = self.key = None
        while True:
            typ, body = self.reader.read()
            if typ == "E":
                raise AssertionError("startup failed: %r" % harness.parse_error_response(body))
            if typ == "K":
                self.pid = struct.unpack("!I", body[:4])[0]
                self.key = body[4:]
            if typ == "Z":
                break
        assert self.pid is not None, "no BackendKeyData"

    def query(self, sql):
        self.sock.sendall(harness.query_message(sql))

    def result(self, timeout):
        """Read to ReadyForQuery; return the SQLSTATE of an error, or None."""
        self.sock.settimeout(timeout)
        code = None
        while True:
            typ, body = self.reader.read()
            if typ == "E":
                code = harness.parse_error_response(body).get("C")
            if typ == "Z":
                return code

    def close(self):
        try:
            self.sock.sendall(harness.TERMINATE)
        except OSError:
            pass
        self.sock.close()


def real_pid_running(pg, sql_prefix):
    rows = pg.sql("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
                  (sql_prefix + "%",))
    return rows[0][0] if rows else None


def wait_running(pg, marker):
    return wait_until(lambda: real_pid_running(pg, marker), t(10), "query %r running" % marker)


def start_second_relay(b):
    """A second relay with the first one's configuration on other ports."""
    port, tport = free_port(), free_port()
    src = open(b.relay_ini).read()
    ini = os.path.join(b.dir, "relay2.ini")
    with open(ini, "w") as f:
        f.write(src.replace("127.0.0.1:%d" % b.client_port, "127.0.0.1:%d" % port)
                   .replace("127.0.0.1:%d" % b.tunnel_port, "127.0.0.1:%d" % tport)
                   .replace("relay-it", "relay-it-2"))
    d = harness.Daemon("relay", ini, os.path.join(b.dir, "relay2.log")).start()
    b.daemons.append(d)
    d.wait_for_log("listening clients=", timeout=10)
    return d, port, tport


# ---------------------------------------------------------------------------------------------

def test_client_sees_fake_backend_key(burrow):
    with burrow.connect() as conn:
        fake = conn.info.backend_pid
        real = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert fake != real
        assert 0 < fake < 2 ** 31
        assert fake >> 16 == name_hash("agent-a"), "fake pid does not carry the agent's hash"
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        assert len(s.key) == 4
        s.query("SELECT pg_backend_pid()")
        typ = None
        while typ != "D":
            typ, body = s.reader.read()
        real = int(body[6:].decode())
        assert s.pid != real
    finally:
        s.close()


def test_psycopg_cancel(burrow):
    relay_mark = burrow.relay.mark()
    with burrow.connect(application_name="cancel-me") as conn:
        fake = conn.info.backend_pid
        box = {}

        def run():
            try:
                conn.execute("SELECT pg_sleep(30) -- psycopg-cancel")
                box["error"] = None
            except psycopg.Error as e:
                box["error"] = e

        th = threading.Thread(target=run, daemon=True)
        th.start()
        wait_running(burrow.pg, "SELECT pg_sleep(30) -- psycopg-cancel")
        t0 = time.monotonic()
        conn.cancel()
        th.join(t(5))
        elapsed = time.monotonic() - t0
        assert not th.is_alive(), "query not cancelled"
        assert box["error"] is not None and box["error"].sqlstate == QUERY_CANCELED, box
        assert elapsed < t(2), "cancel took %.2fs" % elapsed
        # the session goes on
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    line = burrow.relay.wait_for_log("cancel forwarded", since=relay_mark)
    assert "pid=%d " % fake in line and "agents=agent-a" in line
    burrow.agents["agent-a"].wait_for_log("cancel sent")


def test_psql_sigint_cancels(burrow):
    env = burrow.libpq_env()
    p = subprocess.Popen(["psql", "-X", "-c", "SELECT pg_sleep(30) -- psql-sigint"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_running(burrow.pg, "SELECT pg_sleep(30) -- psql-sigint")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=t(5))
        assert time.monotonic() - t0 < t(2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "canceling statement due to user request" in err, (out, err)


def test_cancel_inside_tls(burrow):
    """libpq 17 sends its CancelRequest after SSLRequest, inside TLS."""
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        s.query("SELECT pg_sleep(30) -- tls-cancel")
        wait_running(burrow.pg, "SELECT pg_sleep(30) -- tls-cancel")
        t0 = time.monotonic()
        send_tls_cancel(burrow.client_port, burrow.certs.ca, s.pid, s.key)
        assert s.result(t(5)) == QUERY_CANCELED
        assert time.monotonic() - t0 < t(2)
    finally:
        s.close()


def test_cancel_over_direct_tls(burrow):
    """PostgreSQL 17 sslnegotiation=direct: TLS at once (ALPN postgresql), then the cancel."""
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        s.query("SELECT pg_sleep(30) -- direct-tls-cancel")
        wait_running(burrow.pg, "SELECT pg_sleep(30) -- direct-tls-cancel")
        ctx = harness.client_tls_context(burrow.certs.ca)
        ctx.set_alpn_protocols(["postgresql"])
        tls = ctx.wrap_socket(raw_connect(burrow.client_port), server_hostname="localhost")
        try:
            tls.sendall(cancel_request(s.pid, s.key))
        finally:
            tls.close()
        assert s.result(t(5)) == QUERY_CANCELED
    finally:
        s.close()


def test_forged_keys_cancel_nothing(burrow):
    relay_mark = burrow.relay.mark()
    agent = burrow.agents["agent-a"]
    agent_mark = agent.mark()
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        s.query("SELECT pg_sleep(1.5) -- forged")
        wait_running(burrow.pg, "SELECT pg_sleep(1.5) -- forged")
        h = name_hash("agent-a")
        # a pid no connected agent gave out: dropped by the relay
        other = (h + 1) & 0x7FFF
        send_plain_cancel(burrow.client_port, other << 16 | 0x1234, os.urandom(4))
        burrow.relay.wait_for_log("cancel dropped reason=no connected agent", since=relay_mark)
        # the right agent, a wrong key: forwarded, dropped by the agent
        send_plain_cancel(burrow.client_port, s.pid, bytes(b ^ 0x55 for b in s.key))
        agent.wait_for_log("cancel dropped: unknown key", since=agent_mark)
        # the real key through the fake pid, and the fake key with another pid: unknown too
        send_plain_cancel(burrow.client_port, s.pid ^ 1, s.key)
        send_tls_cancel(burrow.client_port, burrow.certs.ca, h << 16 | 7, os.urandom(32))
        assert s.result(t(5)) is None, "a forged cancel cancelled the query"
        wait_until(lambda: agent.count("cancel dropped: unknown key", since=agent_mark) >= 3,
                   t(5), "three unknown-key drops")
        assert agent.count("cancel sent", since=agent_mark) == 0
        log = agent._since(agent_mark)
        assert s.key.hex() not in log
    finally:
        s.close()
    # the relay stays healthy
    with burrow.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_rate_limited(burrow):
    relay_mark = burrow.relay.mark()
    h = name_hash("agent-a")
    for i in range(100):
        s = raw_connect(burrow.client_port)
        s.sendall(cancel_request((h ^ 0x7FFF) << 16 | i, os.urandom(4)))
        s.close()
    burrow.relay.wait_for_log("cancel dropped reason=rate limited client=127.0.0.1",
                              since=relay_mark)
    # at most the burst was processed; the rest was dropped
    wait_until(lambda: burrow.relay.count("reason=no connected agent", since=relay_mark) >= 20,
               t(5), "the burst processed")
    assert burrow.relay.count("reason=no connected agent", since=relay_mark) <= 25
    # a legitimate session still works
    with burrow.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_cancel_through_another_relay(burrow_env):
    b = burrow_env
    b.start_relay()
    relay2, port2, tport2 = start_second_relay(b)
    b.start_agent("agent-a", routes=("a",),
                  relay="127.0.0.1:%d, 127.0.0.1:%d" % (b.tunnel_port, tport2))
    relay2.wait_for_log("tunnel up agent=agent-a ", timeout=10)
    s = RawSession(b.client_port, b.certs.ca)
    try:
        s.query("SELECT pg_sleep(30) -- other-relay")
        wait_running(b.pg, "SELECT pg_sleep(30) -- other-relay")
        t0 = time.monotonic()
        send_plain_cancel(port2, s.pid, s.key)
        assert s.result(t(5)) == QUERY_CANCELED
        assert time.monotonic() - t0 < t(2)
    finally:
        s.close()
    relay2.wait_for_log("cancel forwarded pid=%d agents=agent-a" % s.pid)
    assert b.relay.count("cancel forwarded") == 0


# ---------------------------------------------------------------------------------------------
# PostgreSQL over TCP (and upstream TLS): a small proxy in front of the test cluster's socket
# that can terminate TLS like PostgreSQL does, and records how each connection's first packet
# arrived.

class PgProxy:
    def __init__(self, sockpath, tls_ctx=None):
        self.sockpath = sockpath
        self.tls_ctx = tls_ctx
        self.first_packets = []  # (code, inside TLS)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.lsock.close()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        u = None
        try:
            c.settimeout(t(10))
            head = harness.recv_exact(c, 8)
            tls = False
            if struct.unpack("!I", head[4:])[0] == harness.SSL_REQUEST_CODE:
                if not self.tls_ctx:
                    c.sendall(b"N")
                    return
                c.sendall(b"S")
                c = self.tls_ctx.wrap_socket(c, server_side=True)
                tls = True
                head = harness.recv_exact(c, 8)
            length, code = struct.unpack("!II", head)
            pkt = head + harness.recv_exact(c, length - 8)
            self.first_packets.append((code, tls))
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            u.connect(self.sockpath)
            u.sendall(pkt)
            self._pump(c, u)
        except (OSError, EOFError):
            pass
        finally:
            c.close()
            if u:
                u.close()

    @staticmethod
    def _pump(c, u):
        """One thread moves both directions: an SSL object must not be used by two threads."""
        import select
        c.setblocking(True)
        c.settimeout(t(60))
        while True:
            pending = hasattr(c, "pending") and c.pending() > 0
            r, _, _ = select.select([c, u], [], [], 0 if pending else t(60))
            if not r and not pending:
                return
            if c in r or pending:
                data = c.recv(65536)
                if not data:
                    return
                u.sendall(data)
            if u in r:
                data = u.recv(65536)
                if not data:
                    return
                c.sendall(data)


def cancel_via_psycopg(b, marker):
    with b.connect() as conn:
        box = {}

        def run():
            try:
                conn.execute("SELECT pg_sleep(30) -- " + marker)
                box["error"] = None
            except psycopg.Error as e:
                box["error"] = e

        th = threading.Thread(target=run, daemon=True)
        th.start()
        wait_running(b.pg, "SELECT pg_sleep(30) -- " + marker)
        t0 = time.monotonic()
        conn.cancel()
        th.join(t(5))
        assert not th.is_alive(), "query not cancelled"
        assert box["error"] is not None and box["error"].sqlstate == QUERY_CANCELED, box
        assert time.monotonic() - t0 < t(2)


@pytest.fixture
def proxy_factory(pg):
    made = []

    def make(tls_ctx=None):
        p = PgProxy(os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port), tls_ctx)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_cancel_over_tcp(burrow_env, proxy_factory):
    """The agent sends the real CancelRequest to the very address the session uses."""
    proxy = proxy_factory()
    b = burrow_env
    b.start_relay()
    b.start_agent("agent-a", routes=("a",), targets={"a": ("127.0.0.1", proxy.port)})
    cancel_via_psycopg(b, "tcp-cancel")
    assert proxy.first_packets[-1] == (CANCEL_REQUEST_CODE, False), proxy.first_packets


def test_cancel_over_upstream_tls(burrow_env, proxy_factory):
    """With upstream TLS the real key crosses the network inside TLS only."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(burrow_env.certs.relay_crt, burrow_env.certs.relay_key)
    proxy = proxy_factory(ctx)
    b = burrow_env
    b.start_relay()
    b.start_agent("agent-a", routes=("a",), targets={"a": ("127.0.0.1", proxy.port)},
                  args=["--route.a.sslmode=verify-full",
                        "--route.a.sslrootcert=%s" % b.certs.ca])
    cancel_via_psycopg(b, "tls-upstream-cancel")
    assert proxy.first_packets[0] == (harness.PROTOCOL_3_0, True), proxy.first_packets
    assert proxy.first_packets[-1] == (CANCEL_REQUEST_CODE, True), proxy.first_packets
