"""The relay's PostgreSQL front door against raw, hostile or unlucky clients."""

import asyncio
import struct
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import (SCRAM_USER, expect_closed, gssenc_request, parse_error_response,
                     raw_connect, read_error, read_message, recv_exact, ssl_request,
                     startup_message, t, tls_after_sslrequest)


def assert_still_serving(burrow):
    with burrow.connect() as conn:
        assert conn.execute("select 'alive'").fetchone()[0] == "alive"


def test_plaintext_startup_refused_28000(burrow):
    mark = burrow.relay.mark()
    with raw_connect(burrow.client_port) as s:
        s.sendall(startup_message({"user": "postgres", "database": "postgres"}))
        err = read_error(s)
        assert err.get("C") == "28000", err
        assert err.get("S") == "FATAL" and err.get("V") == "FATAL", err
        assert err.get("M", "").startswith("pgburrow: ") and "TLS" in err["M"], err
        expect_closed(s, t(5))
    burrow.relay.wait_for_log("sqlstate=28000", timeout=5, since=mark)
    assert_still_serving(burrow)


def test_sslrequest_with_pipelined_bytes_refused_08P01(burrow):
    """CVE-2021-23214 class: bytes after the SSLRequest, before the handshake, are refused
    in plaintext, never fed to TLS or PostgreSQL. (PostgreSQL itself answers 'S' before it
    looks at the buffer, so an 'S' before the ErrorResponse is tolerated.)"""
    mark = burrow.relay.mark()
    with raw_connect(burrow.client_port) as s:
        s.sendall(ssl_request() + startup_message({"user": "postgres", "database": "postgres"}))
        first = recv_exact(s, 1)
        if first == b"S":
            first = recv_exact(s, 1)
        assert first == b"E", "expected a plaintext ErrorResponse, got %r (then %r)" % (
            first, s.recv(100))
        length = int.from_bytes(recv_exact(s, 4), "big")
        err = parse_error_response(recv_exact(s, length - 4))
        assert err.get("C") == "08P01", err
        assert err.get("S") == "FATAL", err
        expect_closed(s, t(5))
    burrow.relay.wait_for_log("sqlstate=08P01", timeout=5, since=mark)
    assert burrow.relay.count("session start", since=mark) == 0
    assert_still_serving(burrow)


def test_garbage_first_bytes_refused_08P01(burrow):
    with raw_connect(burrow.client_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        err = read_error(s)
        assert err.get("C") == "08P01", err
        expect_closed(s, t(5))
    assert_still_serving(burrow)


def test_gssencrequest_then_tls(burrow):
    with raw_connect(burrow.client_port) as s:
        s.sendall(gssenc_request())
        assert recv_exact(s, 1) == b"N"
        tls = tls_after_sslrequest(s, burrow.certs.ca)
        with tls:
            tls.sendall(startup_message({"user": SCRAM_USER, "database": "postgres",
                                         "application_name": "it-raw"}))
            typ, body = read_message(tls)
            assert typ == "R", "expected an Authentication message, got %r %r" % (typ, body)
            assert int.from_bytes(body[:4], "big") == 10, body  # AuthenticationSASL
            assert b"SCRAM-SHA-256" in body, body
    # The same, trusted user: PostgreSQL completes the startup (AuthenticationOk ... ReadyForQuery).
    with raw_connect(burrow.client_port) as s:
        s.sendall(gssenc_request())
        assert recv_exact(s, 1) == b"N"
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
            seen = []
            while not seen or seen[-1] != "Z":
                typ, body = read_message(tls)
                assert typ != "E", parse_error_response(body)
                seen.append(typ)
            assert seen[0] == "R" and "K" in seen and "S" in seen, seen
            tls.sendall(b"X\0\0\0\4")  # Terminate
    assert_still_serving(burrow)


def test_oversized_startup_refused_08P01(burrow):
    mark = burrow.relay.mark()
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            pkt = startup_message({"user": "postgres", "database": "postgres",
                                   "options": "-c application_name=" + "x" * 12000})
            assert len(pkt) > 10000
            tls.sendall(pkt)
            err = read_error(tls)
            assert err.get("C") == "08P01", err
            assert err.get("M", "").startswith("pgburrow: "), err
            expect_closed(tls, t(5))
    burrow.relay.wait_for_log("sqlstate=08P01", timeout=5, since=mark)
    assert_still_serving(burrow)


def test_startup_without_user_refused(burrow):
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.sendall(startup_message({"database": "postgres"}))
            err = read_error(tls)
            assert err.get("C") == "08P01", err
    assert_still_serving(burrow)


def test_no_agent_57P03_quickly(burrow_env):
    b = burrow_env
    b.start_relay()  # routes a and b configured, no agent running
    t0 = time.monotonic()
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.settimeout(5)
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
            err = read_error(tls)
    elapsed = time.monotonic() - t0
    assert err.get("C") == "57P03", err
    assert '"a"' in err.get("M", ""), err  # names the route
    assert elapsed < 2.0 * (2 if harness.SANITIZER else 1), "57P03 took %.2fs" % elapsed

    # What libpq and asyncpg users see.
    t0 = time.monotonic()
    try:
        b.connect().close()
        text = "connected without an agent"
    except psycopg.OperationalError as e:
        text = str(e)  # only the text: a kept exception keeps libpq's socket open
    assert time.monotonic() - t0 < 2.0 * (2 if harness.SANITIZER else 1)
    assert "no agent is connected for route" in text, text

    async def via_asyncpg():
        try:
            await asyncpg.connect(host="127.0.0.1", port=b.client_port, user="postgres",
                                  database="postgres", timeout=t(10),
                                  ssl=harness.client_tls_context(b.certs.ca))
        except asyncpg.exceptions.PostgresError as e:
            return e.sqlstate, str(e)  # strings only: a kept exception keeps the socket open
        return None, "connected without an agent"

    sqlstate, text = asyncio.run(via_asyncpg())
    assert sqlstate == "57P03", text
    b.relay.wait_for_log("sqlstate=57P03", timeout=5)


def test_unknown_route_3D000(burrow):
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres", "database": "postgres",
                                         "options": "-c pgburrow.route=nosuchroute"}))
            err = read_error(tls)
    assert err.get("C") == "3D000", err
    assert "nosuchroute" in err.get("M", ""), err
    assert_still_serving(burrow)


@pytest.mark.parametrize("pkt", [
    pytest.param(startup_message({"user": "postgres"}, protocol=0x00020000), id="protocol-2.0"),
    pytest.param(startup_message({"user": "postgres"}, protocol=0x00040000), id="protocol-4.0"),
    pytest.param(struct.pack("!II", 4 + 4 + 14, 196608) + b"user\0postgres\0", id="no-final-nul"),
    pytest.param(struct.pack("!II", 7, 196608), id="length-7"),
    pytest.param(struct.pack("!II", 8, 196608), id="empty"),
    pytest.param(struct.pack("!II", 4 + 4 + 11, 196608) + b"user\0postgr", id="unterminated-value"),
])
def test_invalid_startup_packets_08P01(burrow, pkt):
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.settimeout(t(5))
            tls.sendall(pkt)
            err = read_error(tls)
            assert err.get("C") == "08P01", err
            expect_closed(tls, t(5))
    assert_still_serving(burrow)


def test_protocol_3_2_startup_is_forwarded(burrow):
    """A protocol 3.2 StartupMessage (PostgreSQL 18 clients) reaches PostgreSQL 15, which
    answers NegotiateProtocolVersion and goes on."""
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"},
                                        protocol=0x00030002))
            seen = []
            while not seen or seen[-1] != "Z":
                typ, body = read_message(tls)
                assert typ != "E", parse_error_response(body)
                seen.append(typ)
            assert seen[0] == "v", seen  # NegotiateProtocolVersion from PostgreSQL 15
            tls.sendall(b"X\0\0\0\4")


def test_fragmented_and_coalesced_startup(burrow):
    """The relay reassembles an SSLRequest split over TCP segments and a StartupMessage split
    into one-byte TLS records; bytes that follow the StartupMessage in the same record (a
    pipelined Query) reach PostgreSQL."""
    with raw_connect(burrow.client_port) as s:
        req = ssl_request()
        s.sendall(req[:3])
        s.sendall(req[3:])
        assert recv_exact(s, 1) == b"S"
        with harness.client_tls_context(burrow.certs.ca).wrap_socket(
                s, server_hostname="localhost") as tls:
            for byte in startup_message({"user": "postgres", "database": "postgres"}):
                tls.sendall(bytes([byte]))
            seen = []
            while not seen or seen[-1] != "Z":
                typ, body = read_message(tls)
                assert typ != "E", parse_error_response(body)
                seen.append(typ)
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest(s, burrow.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"}) +
                        harness.query_message("select 6 * 7") + harness.TERMINATE)
            rows = []
            while True:
                typ, body = read_message(tls)
                assert typ != "E", parse_error_response(body)
                if typ == "D":
                    rows.append(body[6:].decode())
                if typ == "C":
                    break
            assert rows == ["42"], rows


def test_clients_abandon_at_every_stage(burrow):
    """Clients that vanish after the SSLRequest, mid-handshake, after the StartupMessage or
    mid-authentication harm nobody (and, in the sanitizer run, leak nothing)."""
    ca = burrow.certs.ca
    query = ("select pid, usename, application_name, state, wait_event, backend_start "
             "from pg_stat_activity where backend_type = 'client backend' "
             "and pid <> pg_backend_pid()")
    before = {r[0] for r in burrow.pg.sql(query)}
    for _ in range(10):
        s = raw_connect(burrow.client_port)
        s.sendall(ssl_request()[:5])
        s.close()
        s = raw_connect(burrow.client_port)
        s.sendall(ssl_request())
        s.close()
        s = raw_connect(burrow.client_port)
        s.sendall(ssl_request())
        recv_exact(s, 1)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello, cut short
        s.close()
        s = raw_connect(burrow.client_port)
        tls = tls_after_sslrequest(s, ca)
        tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
        tls.close()
        s = raw_connect(burrow.client_port)
        tls = tls_after_sslrequest(s, ca)
        tls.sendall(startup_message({"user": SCRAM_USER, "database": "postgres"}))
        assert read_message(tls)[0] == "R"
        tls.close()
    left = []

    def gone():
        left[:] = [r for r in burrow.pg.sql(query) if r[0] not in before]
        return not left

    try:
        harness.wait_until(gone, t(10), "the abandoned clients' backends to end")
    except AssertionError as e:
        raise AssertionError("%s; still there: %r" % (e, left))
    assert_still_serving(burrow)
