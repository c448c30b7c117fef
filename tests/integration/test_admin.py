"""The relay's admin console (dbname=pgburrow): who gets in (a certificate from admin_ca whose
CN is in admin_users, the relay's allow), what psql, psycopg 3 and JDBC print, what the commands
do to real sessions and tunnels (KILL SESSION, DRAIN AGENT, RELOAD), and the audit lines."""

import json
import os
import shutil
import subprocess

import psycopg
import pytest

import harness
from harness import t, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
JDBC_JAR = "/usr/share/java/postgresql.jar"


class AdminPKI:
    """A CA for admins (admin-alice, admin-bob, mallory) and another CA's admin-alice."""

    def __init__(self, root):
        self.dir = os.path.join(root, "admin")
        self.other_dir = os.path.join(root, "admin-other")

    def make(self):
        for d, args in [(self.dir, ["ca"]), (self.dir, ["client", "admin-alice"]),
                        (self.dir, ["client", "admin-bob"]), (self.dir, ["client", "mallory"]),
                        (self.other_dir, ["ca"]), (self.other_dir, ["client", "admin-alice"])]:
            r = subprocess.run(["sh", harness.MKCERTS, d] + args, capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr
        return self

    @property
    def ca(self):
        return os.path.join(self.dir, "ca.crt")

    def cert_kw(self, cn, other=False):
        d = self.other_dir if other else self.dir
        return dict(sslcert=os.path.join(d, "client-%s.crt" % cn),
                    sslkey=os.path.join(d, "client-%s.key" % cn))


@pytest.fixture(scope="module")
def pki(certs):
    return AdminPKI(certs.root).make()


def admin_keys(pki, audit):
    return {"admin_users": "admin-alice, admin-bob", "admin_ca": pki.ca, "audit_log": audit}


@pytest.fixture
def console(burrow_env, pki):
    """relay (console on, audit log) + agent-a serving route a."""
    b = burrow_env
    b.audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(**admin_keys(pki, b.audit))
    b.start_agent("agent-a", routes=("a",))
    return b


def admin_dsn(b, pki, cn="admin-alice", other=False, **extra):
    kw = pki.cert_kw(cn, other) if cn else {}
    kw.update(extra)
    kw.setdefault("user", cn or "postgres")
    return b.dsn(dbname="pgburrow", **kw)


def admin(b, pki, **kw):
    return psycopg.connect(admin_dsn(b, pki, **kw), autocommit=True)


def rows(conn, command):
    cur = conn.execute(command)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def audit_lines(b, event="admin_command"):
    if not os.path.exists(b.audit):
        return []
    with open(b.audit) as f:
        return [x for x in map(json.loads, f) if x["event"] == event]


def refused(b, pki, **kw):
    with pytest.raises(psycopg.OperationalError) as e:
        admin(b, pki, **kw).close()
    return str(e.value)


# ---- who gets in ------------------------------------------------------------------------------


def test_psql_show_sessions(console, pki):
    b = console
    with b.connect(application_name="app-one") as s:
        sid = rows_sid(b, pki, "app-one")
        env = b.libpq_env(user="admin-alice", dbname="pgburrow")
        env.update(PGSSLCERT=pki.cert_kw("admin-alice")["sslcert"],
                   PGSSLKEY=pki.cert_kw("admin-alice")["sslkey"])
        r = subprocess.run(["psql", "-X", "-A", "-F", "|", "-c", "SHOW SESSIONS"], env=env,
                           capture_output=True, text=True, timeout=t(30))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split("|") == [
            "sid", "state", "route", "agent", "client", "user", "database", "application_name",
            "cert_subject", "tls_version", "authenticated", "started_at", "duration_ms",
            "bytes_in", "bytes_out"], lines
        mine = [x.split("|") for x in lines[1:] if x.startswith(sid)]
        assert len(mine) == 1, lines
        row = mine[0]
        assert row[1:4] == ["streaming", "a", "agent-a"] and row[5:8] == [
            "postgres", "postgres", "app-one"] and row[10] == "yes", row
        assert int(row[13]) > 0 and int(row[14]) > 0, row
        assert lines[-1] == "(1 row)", lines
        s.execute("select 1")
    lines = [x for x in b.relay.lines("admin session start cn=admin-alice")]
    assert lines and "user=admin-alice" in lines[-1], lines


def rows_sid(b, pki, application_name):
    with admin(b, pki) as a:
        mine = [r for r in rows(a, "SHOW SESSIONS") if r["application_name"] == application_name]
    assert len(mine) == 1, mine
    return mine[0]["sid"]


def test_refusals(console, pki):
    b = console
    msg = refused(b, pki, cn=None)
    assert "admin console requires a client certificate" in msg, msg
    msg = refused(b, pki, other=True)
    assert "admin console: certificate verify failed" in msg, msg
    msg = refused(b, pki, cn="mallory")
    assert 'certificate CN "mallory" is not in admin_users' in msg, msg
    for reason in ["requires a client certificate", "certificate verify failed",
                   'certificate CN "mallory" is not in admin_users']:
        b.relay.wait_for_log(reason, timeout=5)
    reasons = set(x["reason"] for x in audit_lines(b, "refused") if x["sqlstate"] == "28000")
    assert len(reasons) == 3 and all(r.startswith("admin console: ") or "admin console" in r
                                      for r in reasons), reasons
    # a certificate of another admin works; the user of the StartupMessage does not matter
    with admin(b, pki, cn="admin-bob", user="anyone") as a:
        assert rows(a, "show version")[0]["version"].startswith("pgburrow-relay ")


def test_admin_crl_and_agent_certificates(burrow_env, certs):
    """A revoked certificate (admin_crl) and an agent's certificate never get in, CN listed or
    not."""
    from test_access import ClientPKI

    cpki = ClientPKI(certs.root).make()
    b = burrow_env
    b.audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(admin_users="revoked, postgres", admin_ca=cpki.ca, admin_crl=cpki.crl,
                  audit_log=b.audit)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(b.dsn(dbname="pgburrow", **cpki.cert_kw("revoked"))).close()
    assert "admin console: certificate verify failed: certificate revoked" in str(e.value)
    with psycopg.connect(b.dsn(dbname="pgburrow", **cpki.cert_kw("postgres")),
                         autocommit=True) as a:
        assert rows(a, "SHOW VERSION")
    b.write_relay_ini(admin_users="agent-a", admin_ca=certs.ca, audit_log=b.audit)
    with psycopg.connect(b.dsn(dbname="pgburrow", **cpki.cert_kw("postgres")),
                         autocommit=True) as a:
        a.execute("RELOAD")
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(b.dsn(dbname="pgburrow", sslcert=certs.agent_crt("agent-a"),
                              sslkey=certs.agent_key("agent-a"))).close()
    assert "an agent certificate (URI pgburrow-agent:NAME) is not a client certificate" in str(
        e.value), str(e.value)


def test_allow_applies_to_the_console(burrow_env, pki):
    b = burrow_env
    b.audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(allow="10.0.0.0/8", **admin_keys(pki, b.audit))
    refused(b, pki)
    b.relay.wait_for_log("sqlstate=28000 reason=address not allowed", timeout=5)
    assert audit_lines(b, "refused")[0]["reason"] == "address not allowed", audit_lines(b, "refused")
    assert audit_lines(b) == []


def test_console_off_routes_as_before(burrow):
    """Without admin_users, dbname=pgburrow is an ordinary database name for the route."""
    with pytest.raises(psycopg.OperationalError) as e:
        burrow.connect(dbname="pgburrow").close()
    assert 'database "pgburrow" does not exist' in str(e.value), str(e.value)


def test_route_named_pgburrow_refused(burrow_env, pki, binaries):
    b = burrow_env
    ini = b.write_relay_ini(routes={"a": ["agent-a"], "pgburrow": ["agent-a"]},
                            **admin_keys(pki, os.path.join(b.dir, "audit.jsonl")))
    r = subprocess.run([os.path.join(binaries, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30))
    assert r.returncode != 0 and 'may not be named "pgburrow"' in r.stderr, r.stderr
    ini = b.write_relay_ini(admin_users="admin-alice")
    r = subprocess.run([os.path.join(binaries, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30))
    assert r.returncode != 0 and "admin_ca: required when admin_users is set" in r.stderr, r.stderr
    ini = b.write_relay_ini(admin_users="admin-alice", admin_ca=os.path.join(b.dir, "missing.crt"))
    r = subprocess.run([os.path.join(binaries, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30))
    assert r.returncode != 0 and "[relay] admin_ca/admin_crl:" in r.stderr, r.stderr


# ---- clients ------------------------------------------------------------------------------------


def test_psycopg_extended_protocol_and_errors(console, pki):
    b = console
    with admin(b, pki) as a:
        # psycopg 3 sends execute() through Parse/Bind/Describe/Execute/Sync
        assert rows(a, "SHOW VERSION") == [{"version": "pgburrow-relay " + version(b)}]
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            a.execute("SELECT 1")
        assert "syntax error" in str(e.value)
        with pytest.raises(psycopg.errors.UndefinedObject):
            a.execute("show nothing")
        with pytest.raises(psycopg.errors.UndefinedObject):
            a.execute("KILL SESSION 0123456789abcdef")
        with pytest.raises(psycopg.errors.UndefinedObject):
            a.execute("DRAIN AGENT nobody")
        # the session goes on after each error, in both protocols
        assert rows(a, "  show   Stats ; ")[0]["name"] == "sessions"
        cur = a.cursor()
        cur.execute("SHOW ROUTES", prepare=True)
        cur.execute("SHOW ROUTES", prepare=True)  # the named statement again
        assert [r[0] for r in cur.fetchall()] == ["a", "b"]
        a.pgconn.exec_(b"SHOW TUNNELS")  # simple query protocol
        assert rows(a, "SHOW AGENTS")[0]["agent"] == "agent-a"
        # binary results: int8 as 8 bytes
        cur = a.cursor(binary=True)
        cur.execute("SHOW STATS")
        assert dict(cur.fetchall())["tunnels"] == 1


def version(b):
    with open(os.path.join(os.path.dirname(HERE), "..", "Makefile")) as f:
        for line in f:
            if line.startswith("VERSION"):
                return line.split(":=")[1].strip()


def test_message_too_long_closes(console, pki):
    b = console
    with admin(b, pki) as a:
        with pytest.raises(psycopg.OperationalError) as e:
            a.execute("SHOW " + "x" * 70000)
        assert "message too long" in str(e.value), str(e.value)


def test_jdbc(console, pki, tmp_path):
    if not shutil.which("java") or not os.path.exists(JDBC_JAR):
        pytest.skip("java or %s missing" % JDBC_JAR)
    b = console
    key = str(tmp_path / "admin.pk8")
    subprocess.run(["openssl", "pkcs8", "-topk8", "-outform", "DER", "-nocrypt", "-in",
                    pki.cert_kw("admin-alice")["sslkey"], "-out", key], check=True, timeout=30)
    url = ("jdbc:postgresql://localhost:%d/pgburrow?sslmode=verify-full&sslrootcert=%s"
           "&sslcert=%s&sslkey=%s" % (b.client_port, b.certs.ca,
                                      pki.cert_kw("admin-alice")["sslcert"], key))
    r = subprocess.run(["java", "-cp", JDBC_JAR, os.path.join(HERE, "clients", "Admin.java"), url,
                        "admin-alice"], capture_output=True, text=True, timeout=t(120))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "ok show version pgburrow-relay " + version(b) in out, out
    assert "ok show routes a,b" in out, out
    assert "ok prepared show stats" in out, out
    assert "ok unknown command 42601" in out, out
    # the driver's SETs at connect are answered and audited like any command
    assert any(x["command"].startswith("SET") for x in audit_lines(b)), audit_lines(b)


# ---- commands -----------------------------------------------------------------------------------


def test_kill_session(console, pki):
    b = console
    idle = b.connect(application_name="idle-victim")
    other = b.connect(application_name="other")
    busy, reader = harness.raw_session(b.client_port, b.certs.ca, {
        "user": "postgres", "database": "postgres", "application_name": "busy-victim"})
    with admin(b, pki) as a:
        sids = {r["application_name"]: r["sid"] for r in rows(a, "SHOW SESSIONS")}
        # a session waiting for its query's result gets FATAL 57P01 as its answer
        busy.sendall(harness.query_message("select pg_sleep(3)"))
        wait_until(lambda: b.pg.sql(
            "select count(*) from pg_stat_activity where application_name = 'busy-victim' "
            "and state = 'active'")[0][0] == 1, t(5), "the busy session's query running")
        a.execute("KILL SESSION %s" % sids["busy-victim"])
        typ, body = reader.read()
        assert typ == "E", (typ, body)
        fields = harness.parse_error_response(body)
        assert fields["S"] == "FATAL" and fields["C"] == "57P01", fields
        assert fields["M"] == "pgburrow: terminating connection due to administrator command"
        harness.expect_closed(busy, t(5))
        # an idle one reads it when it next uses the connection, as after pg_terminate_backend
        a.execute("kill session %s;" % sids["idle-victim"])
    with pytest.raises(psycopg.OperationalError) as e:
        idle.execute("select 1")
    assert "terminating connection due to administrator command" in str(e.value)
    assert other.execute("select 42").fetchone()[0] == 42
    idle.close()
    other.close()
    for sid in (sids["busy-victim"], sids["idle-victim"]):
        b.relay.wait_for_log("session killed sid=%s" % sid, timeout=5)
    lines = [x for x in audit_lines(b) if x["command"].lower().startswith("kill")]
    assert [x["result"] for x in lines] == ["ok", "ok"], lines
    assert lines[0]["admin"] == "admin-alice" and lines[0]["client_addr"] == "127.0.0.1", lines
    assert lines[0]["sqlstate"] is None, lines
    wait_until(lambda: len([x for x in audit_lines(b, "session_end")
                            if x["sid"] in sids.values()]) == 3, t(5), "session_end lines")
    ends = {x["sid"]: x for x in audit_lines(b, "session_end")}
    assert "administrator command" in ends[sids["busy-victim"]]["reason"], ends


def test_drain_agent(console, pki):
    """DRAIN AGENT recycles an agent's tunnel without a gap: the agent dials a replacement at the
    GOAWAY, new sessions go to it, the running one finishes on the drained tunnel, which then
    closes."""
    b = console
    running = b.connect(application_name="running")
    mark_relay, mark_agent = b.relay.mark(), b.agents["agent-a"].mark()
    with admin(b, pki) as a:
        a.execute("DRAIN AGENT agent-a")
        b.agents["agent-a"].wait_for_log("sent GOAWAY code=00000", since=mark_agent, timeout=5)
        b.agents["agent-a"].wait_for_log("dialing a replacement", since=mark_agent, timeout=5)
        b.relay.wait_for_log("tunnel up agent=agent-a", since=mark_relay, timeout=10)
        wait_until(lambda: sorted(x["state"] for x in rows(a, "SHOW TUNNELS")) ==
                   ["draining", "up"], t(5), "the drained tunnel and its replacement")
        # a new session goes to the replacement at once; the running one goes on
        with b.connect(application_name="new") as s:
            assert s.execute("select 6").fetchone()[0] == 6
            assert running.execute("select 7").fetchone()[0] == 7
            per_state = {x["state"]: int(x["sessions"]) for x in rows(a, "SHOW TUNNELS")}
            assert per_state == {"draining": 1, "up": 1}, per_state
        # its last session ends: the drained tunnel closes
        running.close()
        wait_until(lambda: [x["state"] for x in rows(a, "SHOW TUNNELS")] == ["up"], t(5),
                   "the drained tunnel closed")
        b.agents["agent-a"].wait_for_log("(relay sent GOAWAY, replaced)", since=mark_agent,
                                         timeout=5)
    with b.connect() as s:
        assert s.execute("select 1").fetchone()[0] == 1
    line = [x for x in audit_lines(b) if x["command"] == "DRAIN AGENT agent-a"][-1]
    assert line["result"] == "ok: 1 tunnel(s) draining", line


def test_reload(console, pki):
    b = console
    with admin(b, pki) as a:
        a.execute("RELOAD")
        b.relay.wait_for_log("reload: ok (trigger=admin console, admin-alice)", timeout=5)
        with open(b.relay_ini, "a") as f:
            f.write("\n[relay]\nbogus_key = 1\n")
        with pytest.raises(psycopg.errors.ConfigFileError) as e:
            a.execute("RELOAD")
        assert "reload failed" in str(e.value) and "relay.ini:" in str(e.value), str(e.value)
        assert rows(a, "SHOW VERSION")  # still usable
    results = [x["result"] for x in audit_lines(b) if x["command"] == "RELOAD"]
    assert results[0] == "ok" and "reload failed" in results[1], results


def test_reload_changes_admin_users(console, pki):
    """admin_users is reloadable: new console connections follow it, and an open session of an
    admin no longer listed runs no further command."""
    b = console
    with admin(b, pki, cn="admin-alice") as a:
        b.write_relay_ini(**dict(admin_keys(pki, b.audit), admin_users="admin-bob",
                                 allow="127.0.0.0/8, ::1/128, 2001:db8::/32"))
        a.execute("RELOAD")
        msg = refused(b, pki, cn="admin-alice")
        assert 'certificate CN "admin-alice" is not in admin_users' in msg, msg
        with admin(b, pki, cn="admin-bob") as bob:
            config = dict((r["key"], r["value"]) for r in rows(bob, "SHOW CONFIG"))
        assert config["allow"] == "127.0.0.0/8,::1/128,2001:db8::/32", config
        assert config["admin_users"] == "admin-bob" and config["route.a.allow"] == "", config
        with pytest.raises(psycopg.OperationalError) as e:
            a.execute("SHOW VERSION")
        assert 'certificate CN "admin-alice" is not in admin_users; session ended' in str(
            e.value), str(e.value)
    line = audit_lines(b)[-1]
    assert line["command"] == "SHOW VERSION" and line["sqlstate"] == "28000", line


def test_show_contents(console, pki):
    b = console
    with b.connect():
        with admin(b, pki) as a:
            routes = {r["route"]: r for r in rows(a, "SHOW ROUTES")}
            assert routes["a"] == {"route": "a", "agents": "agent-a", "tunnels": 1,
                                   "sessions": 1, "max_sessions": 0, "client_cert": "none",
                                   "is_default": "yes"}, routes
            assert routes["b"]["tunnels"] == 0 and routes["b"]["is_default"] == "no", routes
            agents = {r["agent"]: r for r in rows(a, "SHOW AGENTS")}
            assert agents["agent-a"] == {"agent": "agent-a", "routes": "a", "tunnels": 1,
                                         "draining": 0, "sessions": 1}, agents
            assert agents["agent-b"]["tunnels"] == 0, agents
            (tun,) = rows(a, "SHOW TUNNELS")
            assert tun["agent"] == "agent-a" and tun["state"] == "up" and tun["routes"] == "a"
            assert tun["sessions"] == 1 and tun["peer"].startswith("127.0.0.1:"), tun
            assert tun["connected_at"].endswith("Z") and tun["cert_not_after"], tun
            stats = dict((r["name"], r["value"]) for r in rows(a, "SHOW STATS"))
            assert stats["sessions"] == 1 and stats["tunnels"] == 1, stats
            assert stats["admin_sessions"] == 1 and stats["routes"] == 2, stats
            # the /metrics counters, summed: the running session's setup was timed
            assert stats["session_setups"] >= 1 and stats["session_setup_us_avg"] > 0, stats
            assert stats["cancel_dropped"] == 0 and "bytes_to_client" in stats, stats
            config = dict((r["key"], r["value"]) for r in rows(a, "SHOW CONFIG"))
            assert config["admin_users"] == "admin-alice,admin-bob", config
            assert config["tls_key"] == b.certs.relay_key, config  # a path, never its contents
            assert config["route.a.agents"] == "agent-a", config
            with open(b.certs.relay_key) as f:
                secret = f.read().split("\n")[1]
            assert not any(secret in (v or "") for v in config.values())
    commands = [x["command"] for x in audit_lines(b)]
    assert commands == ["SHOW ROUTES", "SHOW AGENTS", "SHOW TUNNELS", "SHOW STATS",
                        "SHOW CONFIG"], commands
    b.relay.wait_for_log("admin command cn=admin-alice client=127.0.0.1:", timeout=5)


def test_admin_sessions_bounded(console, pki):
    b = console
    conns = [admin(b, pki) for _ in range(16)]
    try:
        msg = refused(b, pki)
        assert "too many admin console sessions" in msg, msg
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: run_ok(b, pki), t(5), "a console session after the others closed")


def run_ok(b, pki):
    try:
        with admin(b, pki) as a:
            return bool(rows(a, "SHOW VERSION"))
    except psycopg.OperationalError:
        return False


def raw_admin(b, pki, after_startup=b""):
    """A console session over a raw TLS socket (admin-alice's certificate)."""
    sock = harness.raw_connect(b.client_port)
    sock.sendall(harness.ssl_request())
    assert harness.recv_exact(sock, 1) == b"S"
    ctx = harness.client_tls_context(b.certs.ca)
    kw = pki.cert_kw("admin-alice")
    ctx.load_cert_chain(kw["sslcert"], kw["sslkey"])
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(harness.startup_message({"user": "admin-alice", "database": "pgburrow"}) +
                after_startup)
    return tls, harness.MessageReader(tls)


def test_pipelined_queries_answered(console, pki):
    """Queries sent right behind the StartupMessage are answered (nothing dropped)."""
    b = console
    tls, reader = raw_admin(b, pki, harness.query_message("SHOW VERSION") +
                            harness.query_message("SHOW STATS"))
    seen = []
    while seen.count("Z") < 3:
        typ, _ = reader.read()
        seen.append(typ)
    assert seen.count("C") == 2 and "E" not in seen, seen
    tls.sendall(harness.TERMINATE)
    harness.expect_closed(tls, t(5))


@pytest.mark.parametrize("message, reason", [
    (b"Q\0\0\0\4", "invalid Query message"),  # no text, not even its NUL
    (b"Q\0\0\0\3", "invalid message length"),
    (b"y\0\0\0\4", "invalid frontend message type"),
    (b"Q\x7f\0\0\0", "message too long"),  # refused on its header, before any buffering
])
def test_hostile_messages(console, pki, message, reason):
    b = console
    tls, reader = raw_admin(b, pki)
    while reader.read()[0] != "Z":
        pass
    tls.sendall(message)
    typ, body = reader.read()
    fields = harness.parse_error_response(body)
    assert typ == "E" and fields["S"] == "FATAL" and fields["C"] == "08P01", fields
    assert reason in fields["M"], fields
    harness.expect_closed(tls, t(5))
    with admin(b, pki) as a:  # the relay goes on
        assert rows(a, "SHOW VERSION")
