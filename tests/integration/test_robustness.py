"""Beyond the issue's list: flow control, keepalive, timeouts, TLS versions, abrupt clients.
Each follows from design.md / the contract and guards a failure a user would feel."""

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import struct
import threading
import time
import warnings

import psycopg
import pytest

import harness
from harness import (TERMINATE, parse_error_response, query_message, raw_connect, raw_session,
                     read_error, recv_exact, rss_kib, startup_message, t, tls_after_sslrequest)


def backend(pg, app):
    rows = pg.sql("select pid, state, wait_event from pg_stat_activity where application_name = %s",
                  (app,))
    return rows[0] if rows else None


def test_slow_reader_does_not_stall_the_tunnel(burrow):
    """A client that stops reading a 100 MB result must not stall other sessions on the same
    tunnel, and must not make the relay or agent buffer its data (per-stream credit)."""
    rows, width = 100000, 1000
    tls, reader = raw_session(burrow.client_port, burrow.certs.ca,
                              {"user": "postgres", "database": "postgres",
                               "application_name": "it-slow"})
    try:
        rss0 = {d.kind: rss_kib(d.pid) for d in (burrow.relay, burrow.agents["agent-a"])}
        tls.sendall(query_message("COPY (SELECT repeat('x', %d) FROM generate_series(1, %d)) "
                                  "TO STDOUT" % (width, rows)))
        typ, _ = reader.read()
        assert typ == "H", typ  # CopyOutResponse; now stop reading
        # Back-pressure reaches PostgreSQL: its backend blocks writing to the agent.
        harness.wait_until(lambda: (backend(burrow.pg, "it-slow") or (0, 0, 0))[2] == "ClientWrite",
                           t(15), "the slow session's backend to block in ClientWrite")
        rss1 = {d.kind: rss_kib(d.pid) for d in (burrow.relay, burrow.agents["agent-a"])}
        # Other sessions on the same tunnel go on, at full speed.
        t0 = time.monotonic()
        with burrow.connect() as conn:
            for i in range(20):
                assert conn.execute("select %s::int", (i,)).fetchone()[0] == i
            got = conn.execute("select string_agg(repeat('y', 1000), '') "
                               "from generate_series(1, 5000)").fetchone()[0]
            assert len(got) == 5000000
        elapsed = time.monotonic() - t0
        assert elapsed < t(5), "other sessions took %.1fs next to a stalled one" % elapsed
        for kind in rss0:
            grew = rss1[kind] - rss0[kind]
            assert grew < 32 * 1024, "%s RSS grew by %d KiB while a client did not read" % (
                kind, grew)
        # The stalled session resumes and gets every row.
        n = 0
        while True:
            typ, body = reader.read()
            if typ == "d":
                assert len(body) == width + 1
                n += 1
            elif typ == "C":
                assert body.rstrip(b"\0") == b"COPY %d" % rows, body
            elif typ == "Z":
                break
            else:
                assert typ != "E", parse_error_response(body)
        assert n == rows
        tls.sendall(TERMINATE)
    finally:
        tls.close()


@pytest.mark.parametrize("how", ["copy_out", "copy_in"])
def test_client_vanishes_mid_copy(burrow, how):
    """A client that resets its connection mid-stream ends its session (and its PostgreSQL
    backend) and harms nobody else."""
    app = "it-abrupt-" + how
    tls, reader = raw_session(burrow.client_port, burrow.certs.ca,
                              {"user": "postgres", "database": "postgres",
                               "application_name": app})
    mark = burrow.relay.mark()
    if how == "copy_out":
        tls.sendall(query_message("COPY (SELECT repeat('x', 1000) FROM generate_series(1, 1000000))"
                                  " TO STDOUT"))
        got = 0
        while got < 1 << 20:
            typ, body = reader.read()
            assert typ in "Hd", (typ, body[:100])
            got += len(body)
    else:
        tls.sendall(query_message("CREATE TEMP TABLE sink (t text); COPY sink FROM STDIN"))
        while True:
            typ, body = reader.read()
            assert typ != "E", parse_error_response(body)
            if typ == "G":  # CopyInResponse
                break
        row = b"z" * 1000 + b"\n"
        data = b"d" + struct.pack("!I", len(row) * 1000 + 4) + row * 1000
        for _ in range(4):
            tls.sendall(data)
    raw = socket.socket(fileno=os.dup(tls.fileno()))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()
    raw.close()  # RST
    line = burrow.relay.wait_for_log("session end ", timeout=5, since=mark)
    assert "route=a" in line, line
    harness.wait_until(lambda: backend(burrow.pg, app) is None, t(10),
                       "the PostgreSQL backend of the vanished client to end")
    with burrow.connect() as conn:
        assert conn.execute("select 'fine'").fetchone()[0] == "fine"


@pytest.mark.parametrize("target", ["unix_no_socket", "tcp_refused"])
def test_agent_cannot_reach_postgres_08006(burrow_env, tmp_path, target):
    b = burrow_env
    b.start_relay()
    if target == "unix_no_socket":
        empty = str(tmp_path / "nosock")
        os.makedirs(empty)
        dest = (empty, 5432)
    else:
        dest = ("127.0.0.1", harness.free_port())
    b.start_agent("agent-a", routes=("a",), targets={"a": dest})
    t0 = time.monotonic()
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.settimeout(t(10))
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
            err = read_error(tls)
    assert err.get("C") == "08006", err
    assert "agent-a" in err.get("M", "") and "PostgreSQL" in err.get("M", ""), err
    assert time.monotonic() - t0 < t(3)
    assert b.agents["agent-a"].alive() and b.relay.alive()


def test_silent_clients_time_out(burrow_env):
    b = burrow_env
    b.start_relay(startup_timeout="500ms")
    b.start_agent()
    t0 = time.monotonic()
    plain = raw_connect(b.client_port)  # sends nothing at all
    tls = tls_after_sslrequest(raw_connect(b.client_port), b.certs.ca)  # TLS, no startup
    half = tls_after_sslrequest(raw_connect(b.client_port), b.certs.ca)
    half.sendall(startup_message({"user": "postgres", "database": "postgres"})[:20])
    for name, s in (("plain", plain), ("tls", tls), ("partial startup", half)):
        try:
            s.settimeout(t(5))
            while s.recv(4096):
                pass  # an ErrorResponse is fine; the close is what matters
        except (ConnectionResetError, ssl.SSLError, OSError):
            pass
        except socket.timeout:
            raise AssertionError("%s client still connected %.1fs after startup_timeout=500ms" % (
                name, time.monotonic() - t0))
        finally:
            s.close()
    assert time.monotonic() - t0 < t(4)
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def tls_handshake(port, ca, min_version, max_version):
    ctx = harness.client_tls_context(ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1: that is the point
        ctx.minimum_version = min_version
        ctx.maximum_version = max_version
    with raw_connect(port) as s:
        s.sendall(harness.ssl_request())
        assert recv_exact(s, 1) == b"S"
        with ctx.wrap_socket(s, server_hostname="localhost") as tls:
            return tls.version()


def test_tls_versions_default(burrow):
    V = ssl.TLSVersion
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = (V.TLSv1, V.TLSv1_1)
    assert tls_handshake(burrow.client_port, burrow.certs.ca, V.TLSv1_2, V.TLSv1_2) == "TLSv1.2"
    assert tls_handshake(burrow.client_port, burrow.certs.ca, V.TLSv1_2, V.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError) as ei:
        tls_handshake(burrow.client_port, burrow.certs.ca, *old)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value), "client could not offer TLS 1.1"
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_tls_min_version_13(burrow_env):
    b = burrow_env
    b.start_relay(tls_min_version="TLSv1.3")
    V = ssl.TLSVersion
    with pytest.raises(ssl.SSLError):
        tls_handshake(b.client_port, b.certs.ca, V.TLSv1_2, V.TLSv1_2)
    assert tls_handshake(b.client_port, b.certs.ca, V.TLSv1_2, V.TLSv1_3) == "TLSv1.3"


def test_keepalive_detects_frozen_agent(burrow_env):
    """A frozen agent (SIGSTOP: no FIN, no RST) is declared dead after dead_timeout; its
    sessions end with an error; once thawed it reconnects by itself."""
    b = burrow_env
    b.start_relay(ping_interval="200ms", dead_timeout="1s")
    agent = b.start_agent(ping_interval="200ms", dead_timeout="1s")
    conn = b.connect(application_name="it-frozen")
    assert conn.execute("select 1").fetchone()[0] == 1
    mark = b.relay.mark()
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        b.relay.wait_for_log("tunnel down agent=agent-a", timeout=5, since=mark)
        down = time.monotonic() - t0
        assert down < t(3), "tunnel declared dead after %.1fs (dead_timeout=1s)" % down
        with pytest.raises(psycopg.OperationalError):
            harness.run_bounded(lambda: conn.execute("select 1"), t(5), "query on a dead tunnel")
        conn.close()
        with raw_connect(b.client_port) as s:
            with tls_after_sslrequest(s, b.certs.ca) as tls:
                tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
                assert read_error(tls).get("C") == "57P03"
        mark = b.relay.mark()
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    b.relay.wait_for_log("tunnel up agent=agent-a ", timeout=10, since=mark)
    with b.connect() as c:
        assert c.execute("select 'thawed'").fetchone()[0] == "thawed"


@pytest.mark.parametrize("how", ["sigkill"])
def test_relay_killed_agent_reconnects(burrow, how):
    agent = burrow.agents["agent-a"]
    amark = agent.mark()
    burrow.relay.kill()
    agent.wait_for_log("tunnel down relay=", timeout=5, since=amark)
    amark = agent.mark()
    burrow.restart_relay()
    agent.wait_for_log("tunnel up relay=", timeout=10, since=amark)
    burrow.relay.wait_for_log("tunnel up agent=agent-a ", timeout=5)
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_psycopg_async_large_results(burrow):
    """psycopg 3.1 async clients hang when TLS records larger than a socket read sit decrypted
    inside OpenSSL (design.md: records to clients are at most 8 KiB)."""

    async def run():
        conn = await psycopg.AsyncConnection.connect(burrow.dsn(), autocommit=True)
        try:
            for n in (1, 7, 100, 5000, 20000):
                cur = await conn.execute("select repeat('q', 1000) from generate_series(1, %s)"
                                         % n)
                rows = await cur.fetchall()
                assert len(rows) == n and len(rows[0][0]) == 1000
            total = 0
            async with conn.cursor() as cur:
                async with cur.copy("COPY (SELECT repeat('w', 3000) FROM generate_series(1, 10000))"
                                    " TO STDOUT") as copy:
                    async for chunk in copy:
                        total += len(chunk)
            assert total == 10000 * 3001
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(run(), t(30)))


def test_large_single_messages(burrow):
    """Messages far larger than any frame, window or TLS record: one 64 MB DataRow out,
    one 48 MB Bind in."""
    with burrow.connect() as conn:
        big, md5 = conn.execute("select repeat('0123456789abcdef', 4 * 1024 * 1024), "
                                "md5(repeat('0123456789abcdef', 4 * 1024 * 1024))").fetchone()
        assert len(big) == 64 << 20
        assert hashlib.md5(big.encode()).hexdigest() == md5
        payload = hashlib.sha256(b"in").hexdigest() * (48 << 20 >> 6)
        n, md5 = conn.execute("select length(%s::text), md5(%s::text)",
                              (payload, payload)).fetchone()
        assert n == len(payload)
        assert md5 == hashlib.md5(payload.encode()).hexdigest()


def test_pipeline_mode(burrow):
    """libpq pipeline mode: thousands of small messages in flight both ways at once."""
    n = 3000
    with burrow.connect() as conn:
        with conn.pipeline():
            curs = [conn.execute("select %s::int, md5(%s::text)", (i, str(i))) for i in range(n)]
        for i, cur in enumerate(curs):
            assert cur.fetchone() == (i, hashlib.md5(str(i).encode()).hexdigest())


def test_parallel_bulk_streams_keep_their_bytes(burrow):
    """Several bulk streams multiplexed on one tunnel at once, both directions; every stream
    arrives whole and unmixed."""
    mb = 32
    outs, ins = 4, 2
    barrier = threading.Barrier(outs + ins, timeout=t(30))
    errors = []

    def copy_out(k):
        cols = ("lpad(i::text, 8, '0')", "repeat(md5((i * %d)::text), 30)" % (k + 7))
        row = "%s || E'\\t' || %s" % cols  # the text COPY writes for one row
        rows = (mb << 20) // 970 + 1
        h = hashlib.md5()
        with burrow.connect(application_name="it-bulk-out-%d" % k) as conn:
            barrier.wait()
            with conn.cursor() as cur:
                with cur.copy("COPY (SELECT %s, %s FROM generate_series(1, %d) i) TO STDOUT"
                              % (cols + (rows,))) as copy:
                    for chunk in copy:
                        h.update(chunk)
            want = conn.execute("SELECT md5(string_agg(%s || E'\\n', '' ORDER BY i)) "
                                "FROM generate_series(1, %d) i" % (row, rows)).fetchone()[0]
        if h.hexdigest() != want:
            errors.append("copy out %d: md5 mismatch" % k)

    def copy_in(k):
        line = ("%d" % k).encode() * 1000
        table = "bulk_in_%d" % k
        rows = (mb << 20) // (len(line) + 8) + 1
        with burrow.connect(application_name="it-bulk-in-%d" % k) as conn:
            conn.execute("CREATE TEMP TABLE %s (i int, t text)" % table)
            barrier.wait()
            with conn.cursor() as cur:
                with cur.copy("COPY %s FROM STDIN" % table) as copy:
                    for start in range(1, rows + 1, 512):
                        copy.write(b"".join(b"%d\t%s\n" % (i, line)
                                            for i in range(start, min(start + 512, rows + 1))))
            got = conn.execute("SELECT count(*), sum(i), count(DISTINCT t), min(t) = %s "
                               "FROM " + table, (line.decode(),)).fetchone()
        if got != (rows, rows * (rows + 1) // 2, 1, True):
            errors.append("copy in %d: got %r" % (k, got))

    def guard(fn, k):
        try:
            fn(k)
        except BaseException as e:  # noqa: B902
            errors.append("%s %d: %r" % (fn.__name__, k, e))
            barrier.abort()

    threads = [threading.Thread(target=guard, args=(copy_out, k), daemon=True) for k in range(outs)]
    threads += [threading.Thread(target=guard, args=(copy_in, k), daemon=True) for k in range(ins)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + t(60)
    for th in threads:
        th.join(max(0.1, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "bulk streams still running (hang?)"
    assert not errors, errors


def test_two_agents_one_route_failover(burrow_env):
    """[route a] agents = agent-a, agent-b: both serve; with one killed, the other serves."""
    b = burrow_env
    b.start_relay(routes={"a": ["agent-a", "agent-b"]})
    b.start_agent("agent-a", routes=("a",))
    b.start_agent("agent-b", routes=("a",))
    for _ in range(6):
        with b.connect() as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
    served = {harness.kv(l).get("agent") for l in b.relay.lines("session start")}
    assert served <= {"agent-a", "agent-b"}, served
    mark = b.relay.mark()
    b.agents["agent-a"].kill()
    b.relay.wait_for_log("tunnel down agent=agent-a", timeout=5, since=mark)
    for _ in range(6):
        with b.connect() as conn:
            assert conn.execute("select 2").fetchone()[0] == 2
    after = {harness.kv(l).get("agent") for l in b.relay.lines("session start", since=mark)}
    assert after == {"agent-b"}, after


def test_slow_postgres_does_not_stall_the_tunnel(burrow):
    """PostgreSQL that stops reading (COPY FROM blocked on a lock) while a client pushes
    100 MB: the agent and relay must push back instead of buffering, and other sessions on
    the tunnel go on. Once unblocked, every row arrives."""
    pg = burrow.pg
    pg.sql("DROP TABLE IF EXISTS slowpg")
    pg.sql("CREATE UNLOGGED TABLE slowpg (t text)")
    locker = psycopg.connect(pg.direct_dsn(), connect_timeout=10)
    locker.execute("LOCK TABLE slowpg IN ACCESS EXCLUSIVE MODE")
    tls, reader = raw_session(burrow.client_port, burrow.certs.ca,
                              {"user": "postgres", "database": "postgres",
                               "application_name": "it-slowpg"})
    row = b"x" * 1023 + b"\n"
    per_msg = 64
    msg = b"d" + struct.pack("!I", len(row) * per_msg + 4) + row * per_msg
    nmsg = 1600  # 100 MiB
    progress = {"sent": 0}

    def sender():
        try:
            tls.sendall(query_message("COPY slowpg FROM STDIN"))
            for _ in range(nmsg):
                tls.sendall(msg)
                progress["sent"] += 1
            tls.sendall(b"c\0\0\0\4")  # CopyDone
            progress["done"] = True
        except BaseException as e:  # noqa: B902
            progress["error"] = repr(e)

    try:
        rss0 = {d.kind: rss_kib(d.pid) for d in (burrow.relay, burrow.agents["agent-a"])}
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        harness.wait_until(lambda: pg.sql("select 1 from pg_stat_activity where application_name"
                                          " = 'it-slowpg' and wait_event_type = 'Lock'"),
                           t(10), "the COPY to wait for the table lock")
        # Wait (bounded) until the client is pushed back: no progress for a while.
        last = [-1, time.monotonic()]

        def stalled():
            if progress["sent"] != last[0]:
                last[:] = [progress["sent"], time.monotonic()]
            return time.monotonic() - last[1] > 0.5

        harness.wait_until(stalled, t(20), "the client's sends to be pushed back")
        assert "done" not in progress and "error" not in progress, progress
        assert progress["sent"] < nmsg // 2, "%d of %d MiB accepted while PostgreSQL read nothing" % (
            progress["sent"] // 16, nmsg // 16)
        rss1 = {d.kind: rss_kib(d.pid) for d in (burrow.relay, burrow.agents["agent-a"])}
        for kind in rss0:
            assert rss1[kind] - rss0[kind] < 32 * 1024, "%s RSS grew by %d KiB" % (
                kind, rss1[kind] - rss0[kind])
        t0 = time.monotonic()
        with burrow.connect() as conn:
            for i in range(20):
                assert conn.execute("select %s::int", (i,)).fetchone()[0] == i
            assert len(conn.execute("select string_agg(repeat('y', 1000), '') "
                                    "from generate_series(1, 5000)").fetchone()[0]) == 5000000
        assert time.monotonic() - t0 < t(5)
    finally:
        locker.close()  # releases the lock
    th.join(t(60))
    assert not th.is_alive() and progress.get("done"), progress
    while True:
        typ, body = reader.read()
        assert typ != "E", parse_error_response(body)
        if typ == "C":
            assert body.rstrip(b"\0") == b"COPY %d" % (nmsg * per_msg), body
        if typ == "Z":
            break
    tls.sendall(TERMINATE)
    tls.close()
    assert pg.sql("select count(*) from slowpg")[0][0] == nmsg * per_msg
    pg.sql("DROP TABLE slowpg")


def test_max_sessions(burrow_env):
    b = burrow_env
    b.start_relay(max_sessions="3")
    b.start_agent()
    conns = [b.connect() for _ in range(3)]
    try:
        with raw_connect(b.client_port) as s:
            with tls_after_sslrequest(s, b.certs.ca) as tls:
                tls.settimeout(t(5))
                tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
                err = read_error(tls)
        assert err.get("S") == "FATAL" and err.get("M", "").startswith("pgburrow: "), err
        for c in conns:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        conns.pop().close()
    b.relay.wait_for_log("session end ", timeout=5)
    with b.connect() as c:  # a freed slot is usable again
        assert c.execute("select 1").fetchone()[0] == 1
    for c in conns:
        c.close()
