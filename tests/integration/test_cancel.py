"""CancelRequest end to end. Clients get BackendKeyData exactly as PostgreSQL sent it (real pid
and key); a relay forwards a cancel for one of its own sessions to that session's agent, and any
other to every agent, where only the agent holding the session acts.

Covered: the real backend pid (and what depends on it: NOTIFY to oneself, pg_terminate_backend of
one's own pid), libpq's PQcancel (psycopg conn.cancel(), psql on SIGINT: plaintext CancelRequest
on a new connection), the libpq 17 form (CancelRequest inside TLS after SSLRequest), forged keys,
per-source rate limiting, and a cancel sent to a second relay for a session of the first, with a
second agent that must not act on it.
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
RELAY_CANCEL_BURST = 20  # relay/cancel.h
QUERY_CANCELED = "57014"


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

def test_client_sees_real_backend_key(burrow):
    with burrow.connect() as conn:
        pid = conn.info.backend_pid  # libpq's PQbackendPID()
        assert pid == conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        rows = burrow.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert rows[0][0] == 1
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        assert len(s.key) == 4
        s.query("SELECT pg_backend_pid()")
        typ = None
        while typ != "D":
            typ, body = s.reader.read()
        assert s.pid == int(body[6:].decode())
    finally:
        s.close()


def test_notify_to_oneself_carries_own_pid(burrow):
    """libpq's idiom for ignoring one's own notifications compares be_pid with PQbackendPID()."""
    with burrow.connect() as conn, burrow.connect() as other:
        got = []
        conn.add_notify_handler(lambda n: got.append((n.payload, n.pid)))
        conn.execute("LISTEN burrow_chan")
        conn.execute("NOTIFY burrow_chan, 'from me'")
        other.execute("NOTIFY burrow_chan, 'from other'")

        def both():
            conn.execute("SELECT 1")  # reads what arrived meanwhile
            return len(got) >= 2
        wait_until(both, t(5), "two notifications")
        assert sorted(got) == sorted([("from me", conn.info.backend_pid),
                                      ("from other", other.info.backend_pid)])
        own = [pid for payload, pid in got if payload == "from me"]
        assert own == [conn.execute("SELECT pg_backend_pid()").fetchone()[0]]


def test_terminate_own_backend(burrow):
    """pg_terminate_backend(PQbackendPID()) ends the session as PostgreSQL itself ends it: libpq
    reports the FATAL message, then the end of the TLS connection, exactly as it does talking
    to PostgreSQL over TLS directly."""
    with burrow.connect() as conn:
        with pytest.raises(psycopg.OperationalError) as e:
            conn.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        assert str(e.value) == ("consuming input failed: terminating connection due to "
                                "administrator command\nSSL connection has been closed "
                                "unexpectedly"), e.value
    with burrow.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_psycopg_cancel(burrow):
    relay_mark = burrow.relay.mark()
    with burrow.connect(application_name="cancel-me") as conn:
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
    # a session of this relay: to its own agent only
    line = burrow.relay.wait_for_log("cancel forwarded", since=relay_mark)
    assert "sid=" in line and "agent=agent-a " in line, line
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
        # the right pid with a wrong key, a wrong pid with the right key, a 3.2-length key:
        # none is a session of this relay, so each goes to every agent, and none matches there
        send_plain_cancel(burrow.client_port, s.pid, bytes(b ^ 0x55 for b in s.key))
        send_plain_cancel(burrow.client_port, s.pid ^ 1, s.key)
        send_tls_cancel(burrow.client_port, burrow.certs.ca, s.pid, os.urandom(32))
        wait_until(lambda: burrow.relay.count("cancel forwarded to=every agent",
                                              since=relay_mark) >= 3,
                   t(5), "three cancels forwarded to every agent")
        assert s.result(t(5)) is None, "a forged cancel cancelled the query"
        assert agent.count("cancel sent", since=agent_mark) == 0
        log = agent._since(agent_mark) + burrow.relay._since(relay_mark)
        assert s.key.hex() not in log
    finally:
        s.close()
    # the relay stays healthy
    with burrow.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_rate_limited(burrow):
    relay_mark = burrow.relay.mark()
    for i in range(100):
        s = raw_connect(burrow.client_port)
        s.sendall(cancel_request(0x7FFF0000 | i, os.urandom(4)))
        s.close()
    burrow.relay.wait_for_log("cancel dropped reason=rate limited client=127.0.0.1",
                              since=relay_mark)
    # at most the burst was processed; the rest was dropped
    done = "cancel forwarded to=every agent"
    wait_until(lambda: burrow.relay.count(done, since=relay_mark) >= 20, t(5),
               "the burst processed")
    assert burrow.relay.count(done, since=relay_mark) <= 25
    # a legitimate session still works
    with burrow.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_one_network_cannot_starve_others(burrow):
    """A flood of cancels from many addresses of one network (here 127.0.0.0/24) hits that
    network's budget, not the relay-wide one: a cancel from another network still works."""
    relay_mark = burrow.relay.mark()
    sent = 0
    for host in range(2, 127):
        for _ in range(RELAY_CANCEL_BURST):
            s = socket.create_connection(("127.0.0.1", burrow.client_port), timeout=t(5),
                                         source_address=("127.0.0.%d" % host, 0))
            s.sendall(cancel_request(0x7FFF0000 | sent, os.urandom(4)))
            s.close()
            sent += 1
    burrow.relay.wait_for_log("cancel dropped reason=rate limited for the network",
                              since=relay_mark)
    # without the network level this flood (2500 > the relay-wide burst of 2000) would have
    # left nothing for anyone else
    s = RawSession(burrow.client_port, burrow.certs.ca)
    try:
        s.query("SELECT pg_sleep(30) -- other-network")
        wait_running(burrow.pg, "SELECT pg_sleep(30) -- other-network")
        c = socket.create_connection(("127.0.0.1", burrow.client_port), timeout=t(5),
                                     source_address=("127.0.1.7", 0))
        c.sendall(cancel_request(s.pid, s.key))
        c.close()
        assert s.result(t(5)) == QUERY_CANCELED
    finally:
        s.close()
    assert burrow.relay.count("relay-wide rate limit", since=relay_mark) == 0


def test_cancel_through_another_relay(burrow_env):
    """Behind a load balancer the cancel may reach a relay that does not hold the session: it
    goes to every agent there, and only the one holding the session acts on it."""
    b = burrow_env
    b.start_relay(routes={"a": ["agent-a"], "b": ["agent-b"]})
    relay2, port2, tport2 = start_second_relay(b)
    both = "127.0.0.1:%d, 127.0.0.1:%d" % (b.tunnel_port, tport2)
    b.start_agent("agent-a", routes=("a",), relay=both)
    b.start_agent("agent-b", routes=("b",), relay=both)
    relay2.wait_for_log("tunnel up agent=agent-a ", timeout=10)
    relay2.wait_for_log("tunnel up agent=agent-b ", timeout=10)
    mark_b = b.agents["agent-b"].mark()
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
    relay2.wait_for_log("cancel forwarded to=every agent (not a session of this relay) tunnels=2")
    assert b.relay.count("cancel forwarded") == 0
    b.agents["agent-a"].wait_for_log("cancel sent")
    assert b.agents["agent-b"].count("cancel sent", since=mark_b) == 0


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
