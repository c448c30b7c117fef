"""The relay's audit log: JSON lines for sessions, tunnels, refusals and (optionally)
statements; reopened on SIGUSR1; settings applied by a reload."""

import json
import os
import signal
import struct
import subprocess

import psycopg
import pytest

import harness
from harness import t


# -- helpers ---------------------------------------------------------------------------------

def read_audit(path):
    """Every line of the audit file, each parsed as one JSON object (a bad line fails)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, "rb") as f:
        for raw in f.read().split(b"\n"):
            if raw:
                out.append(json.loads(raw.decode("utf-8")))
    return out


def wait_events(path, event, count=1, timeout=5, **match):
    def find():
        found = [e for e in read_audit(path) if e.get("event") == event and
                 all(e.get(k) == v for k, v in match.items())]
        return found if len(found) >= count else None
    return harness.wait_until(find, t(timeout), "%d %s event(s) in %s" % (count, event, path))


def start(b, **keys):
    path = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(audit_log=path, **keys)
    b.start_agent("agent-a")
    return path


def parse_message(sql, name=""):
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0)
    return b"P" + struct.pack("!I", len(body) + 4) + body


SYNC = b"S\0\0\0\4"


def read_until_ready(reader):
    while True:
        typ, body = reader.read()
        if typ == "Z":
            return


# -- tests -------------------------------------------------------------------------------------

def test_session_and_tunnel_events(burrow_env):
    b = burrow_env
    path = start(b)
    up = wait_events(path, "tunnel_up")[0]
    assert up["agent"] == "agent-a" and up["routes"] == ["a"], up
    assert up["peer"].startswith("127.0.0.1:") and up["relay"] == "relay-it", up

    with b.connect(application_name="audit-app") as conn:
        conn.execute("select 1")
        start_ev = wait_events(path, "session_start")[0]
    end_ev = wait_events(path, "session_end")[0]
    text_start = harness.kv(b.relay.wait_for_log("session start "))
    text_end = harness.kv(b.relay.wait_for_log("session end "))

    auth_ev = wait_events(path, "session_authenticated")[0]
    # before PostgreSQL's AuthenticationOk the user is only claimed; after it, it is the user
    assert start_ev["claimed_user"] == "postgres" and "user" not in start_ev, start_ev
    assert start_ev["authenticated"] is False, start_ev
    assert auth_ev["user"] == end_ev["user"] == "postgres", (auth_ev, end_ev)
    assert auth_ev["authenticated"] is True and end_ev["authenticated"] is True
    assert text_end["authenticated"] == "yes", text_end
    assert not [e for e in read_audit(path) if e["event"] == "auth_failed"]
    for ev in (start_ev, auth_ev, end_ev):
        assert ev["sid"] == text_start["sid"], ev
        assert ev["route"] == "a" and ev["agent"] == "agent-a", ev
        assert ev["client_addr"] == "127.0.0.1", ev
        assert "%s:%d" % (ev["client_addr"], ev["client_port"]) == text_start["client"], ev
        assert ev.get("user", ev.get("claimed_user")) == "postgres", ev
        assert ev["database"] == "postgres", ev
        assert ev["application_name"] == "audit-app", ev
        assert ev["sni"] == "localhost", ev
        assert ev["tls_version"] == "TLSv1.3" and ev["tls_cipher"], ev
        assert "client_cert_subject" in ev and "client_cert_serial" in ev, ev
        assert ev["ts"].endswith("Z"), ev
    assert "bytes_in" not in start_ev
    assert end_ev["bytes_in"] == int(text_end["bytes_in"]) > 0, end_ev
    assert end_ev["bytes_out"] == int(text_end["bytes_out"]) > 0, end_ev
    assert isinstance(end_ev["duration_ms"], int) and end_ev["reason"] == "closed", end_ev
    # statements are off by default
    assert not [e for e in read_audit(path) if e["event"] == "statement"]

    b.agents["agent-a"].stop()
    down = wait_events(path, "tunnel_down")[0]
    assert down["agent"] == "agent-a" and down["routes"] == ["a"] and down["reason"], down


def test_refused_events(burrow_env):
    b = burrow_env
    path = start(b)
    s = harness.raw_connect(b.client_port)
    s.sendall(harness.startup_message({"user": "postgres"}))
    assert harness.read_error(s)["C"] == "28000"
    s.close()
    with pytest.raises(psycopg.OperationalError, match="unknown route"):
        b.connect(route="nope")
    ev = wait_events(path, "refused", sqlstate="28000")[0]
    assert ev["client_addr"] == "127.0.0.1" and "TLS is required" in ev["reason"], ev
    ev = wait_events(path, "refused", sqlstate="3D000")[0]
    assert 'unknown route "nope"' in ev["reason"], ev


def test_statements(burrow_env):
    b = burrow_env
    path = start(b, audit_statements="on", audit_statement_max=64)
    tls, reader = harness.raw_session(b.client_port, b.certs.ca,
                                      {"user": "postgres", "database": "postgres"})
    try:
        # a simple query, sent one byte per TLS record: the parser must follow any split
        for byte in harness.query_message("select 'q1'"):
            tls.sendall(bytes([byte]))
        read_until_ready(reader)
        # escaping: quotes, backslash, newline, non-ASCII
        tricky = "select '\"x\\y\"',\n'é✓'"
        tls.sendall(harness.query_message(tricky))
        read_until_ready(reader)
        # longer than audit_statement_max
        long_sql = "select '" + "x" * 200 + "'"
        tls.sendall(harness.query_message(long_sql))
        read_until_ready(reader)
        # extended protocol: Parse (named statement), Sync; pipelined with a simple query
        tls.sendall(parse_message("select $1::int", name="s1") + SYNC +
                    harness.query_message("select 'q2'"))
        read_until_ready(reader)
        read_until_ready(reader)
        tls.sendall(harness.TERMINATE)
    finally:
        tls.close()
    stmts = wait_events(path, "statement", count=5)
    got = [(e["kind"], e["text"], e["truncated"]) for e in stmts]
    assert got == [
        ("query", "select 'q1'", False),
        ("query", tricky, False),
        ("query", long_sql[:64], True),
        ("parse", "select $1::int", False),
        ("query", "select 'q2'", False),
    ], got
    sid = wait_events(path, "session_start")[0]["sid"]
    assert all(e["sid"] == sid and e["route"] == "a" and e["user"] == "postgres" for e in stmts)

    # psycopg: a parameterized query goes through Parse
    with b.connect() as conn:
        assert conn.execute("select %s::int + 1 as audit_marker", (41,)).fetchone()[0] == 42
    stmts = wait_events(path, "statement", count=6)
    assert any(e["kind"] == "parse" and "audit_marker" in e["text"] for e in stmts), stmts


def test_unauthenticated_statements_not_audited(burrow_env):
    """A StartupMessage claiming a user, then at once a query, without the password: PostgreSQL
    never runs it, so the audit must not say that user did it (issue 9). A failed
    authentication is its own event, with the user marked as claimed."""
    b = burrow_env
    path = start(b, audit_statements="on")
    s = harness.tls_after_sslrequest(harness.raw_connect(b.client_port), b.certs.ca)
    try:
        s.sendall(harness.startup_message({"user": harness.SCRAM_USER, "database": "postgres"}) +
                  harness.query_message("DROP TABLE payroll; -- by %s" % harness.SCRAM_USER))
        reader = harness.MessageReader(s)
        s.settimeout(t(10))
        typ = None
        while typ != "E":  # SASL request, then PostgreSQL's FATAL for the out-of-place query
            typ, body = reader.read()
        err = harness.parse_error_response(body)
    finally:
        s.close()
    failed = wait_events(path, "auth_failed")[0]
    end = wait_events(path, "session_end")[0]
    assert failed["claimed_user"] == harness.SCRAM_USER and "user" not in failed, failed
    assert failed["authenticated"] is False and failed["sqlstate"] == err["C"], (failed, err)
    assert end["authenticated"] is False and "user" not in end, end
    assert not [e for e in read_audit(path) if e["event"] == "statement"], "statement audited"
    assert "authenticated=no" in b.relay.wait_for_log("session end ")

    # a wrong password: auth_failed with PostgreSQL's 28P01
    with pytest.raises(psycopg.OperationalError):
        b.connect(user=harness.SCRAM_USER, password="wrong")
    wait_events(path, "auth_failed", count=2)
    assert [e for e in read_audit(path) if e["event"] == "auth_failed"][1]["sqlstate"] == "28P01"

    # pipelined before AuthenticationOk on a trusted user: PostgreSQL runs it after
    # authenticating, so it is audited then, as that user
    s = harness.tls_after_sslrequest(harness.raw_connect(b.client_port), b.certs.ca)
    try:
        s.sendall(harness.startup_message({"user": "postgres", "database": "postgres"}) +
                  harness.query_message("SELECT 'pipelined-before-auth'"))
        reader = harness.MessageReader(s)
        s.settimeout(t(10))
        read_until_ready(reader)  # after startup
        read_until_ready(reader)  # after the query
    finally:
        s.close()
    stmt = wait_events(path, "statement")[0]
    assert stmt["user"] == "postgres" and "pipelined-before-auth" in stmt["text"], stmt
    order = [e["event"] for e in read_audit(path) if e.get("sid") == stmt["sid"]]
    assert order.index("session_authenticated") < order.index("statement"), order


def test_sigusr1_reopens_and_reload_toggles(burrow_env):
    b = burrow_env
    b.start_relay()  # no audit log at first
    b.start_agent("agent-a")
    path = os.path.join(b.dir, "audit.jsonl")
    b.write_relay_ini(audit_log=path)
    mark = b.relay.mark()
    os.kill(b.relay.pid, signal.SIGHUP)
    b.relay.wait_for_log("reload: ok (trigger=SIGHUP)", since=mark)
    with b.connect() as conn:
        conn.execute("select 1")
    wait_events(path, "session_end")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"

    rotated = path + ".1"
    os.rename(path, rotated)
    mark = b.relay.mark()
    os.kill(b.relay.pid, signal.SIGUSR1)
    b.relay.wait_for_log("SIGUSR1: reopened", since=mark)
    with b.connect(application_name="after-rotation") as conn:
        conn.execute("select 1")
    ev = wait_events(path, "session_end")[0]
    assert ev["application_name"] == "after-rotation", ev
    assert all(e.get("application_name") != "after-rotation" for e in read_audit(rotated))
    assert len([e for e in read_audit(rotated) if e["event"] == "session_end"]) == 1


def test_audit_to_stdout(burrow_env):
    b = burrow_env
    b.start_relay(audit_log="stdout")  # the daemon's stdout is its log file in these tests
    b.start_agent("agent-a")
    line = b.relay.wait_for_log('"event":"tunnel_up"')
    ev = json.loads(line)
    assert ev["agent"] == "agent-a", ev


def test_check_config_audit_path(burrow_env):
    b = burrow_env
    ini = b.write_relay_ini(audit_log=os.path.join(b.dir, "no-such-dir", "audit.jsonl"))
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30), env=harness.DAEMON_ENV)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "audit_log" in r.stderr and "no-such-dir" in r.stderr, r.stderr
    ini = b.write_relay_ini(audit_statement_max="2M")
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30), env=harness.DAEMON_ENV)
    assert r.returncode == 1 and "audit_statement_max" in r.stderr, r.stderr
