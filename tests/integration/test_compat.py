"""Client compatibility matrix: real PostgreSQL clients through relay + agent.

Every client connects to the relay with verify-full (CA = the test CA, host name localhost)
and a client certificate (CN=postgres), and runs what its API offers: a simple query, an
extended (parameterized) query, a prepared statement, COPY in and out, and a cancel of
pg_sleep(30) that must end the query within 2 s. Where the route asks for a client
certificate (relay `client_cert = verify`), the same client without its certificate must be
refused. README.md "Client compatibility" shows the matrix; keep the two in step.

Clients: psql, pgbench, psycopg2, psycopg 3, asyncpg (ssl.SSLContext with CA, certificate and
key), JDBC (Debian libpostgresql-jdbc-java, one JVM run: clients/Compat.java), node `pg`
(installed from npm into build/node; clients/compat.js), `openssl s_client -starttls postgres`,
and a direct-TLS client (ALPN "postgresql", Python's ssl module).
"""

import asyncio
import io
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import threading
import time

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest

import harness
from harness import REPO, SCRAM_PASSWORD, SCRAM_USER, t

CLIENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")
JDBC_JAR = "/usr/share/java/postgresql.jar"
NODE_DIR = os.path.join(REPO, "build", "node")
CANCEL_WITHIN = 2.0  # seconds from the cancel request to the query's error
COPY_ROWS = [(i, "row %d" % i) for i in range(1, 1001)]
COPY_TEXT = "".join("%d\t%s\n" % r for r in COPY_ROWS)
SLEEP_SQL = "select pg_sleep(30)"


def client_cert_args(certs):
    return ["--route.a.client_cert=verify", "--route.a.client_ca=%s" % certs.ca]


@pytest.fixture(scope="module")
def client_cert_supported(binaries, certs, tmp_path_factory):
    """Whether this relay has per-route client certificates (`client_cert = verify`)."""
    ini = harness.write_ini(str(tmp_path_factory.mktemp("probe") / "relay.ini"), [
        ("relay", {"listen": "127.0.0.1:1", "tunnel_listen": "127.0.0.1:2",
                   "tls_cert": certs.relay_crt, "tls_key": certs.relay_key,
                   "agent_ca": certs.ca}),
        ("route a", {"agents": "agent-a"})])
    r = subprocess.run([os.path.join(binaries, "pgburrow-relay"), "-c", ini, "--check-config"] +
                       client_cert_args(certs), capture_output=True, text=True, timeout=t(10),
                       env=harness.DAEMON_ENV)
    return r.returncode == 0


@pytest.fixture
def relay(burrow_env, certs, client_cert_supported):
    """Relay with route a and agent-a serving it from the session cluster. The route requires a
    client certificate from the test CA when the relay supports it; otherwise clients only
    offer theirs."""
    burrow_env.start_relay(args=client_cert_args(certs) if client_cert_supported else ())
    burrow_env.start_agent("agent-a", routes=("a",))
    burrow_env.cert_enforced = client_cert_supported
    return burrow_env


def require_cert_enforced(relay):
    if not relay.cert_enforced:
        pytest.skip("this relay has no per-route client_cert")


def cert_params(certs, user="postgres"):
    return dict(sslcert=certs.client_crt(user), sslkey=certs.client_key(user))


def wait_for_sleeper(pg, application_name, timeout=10):
    """Wait until PostgreSQL runs the pg_sleep of the session with that application_name."""
    harness.wait_until(
        lambda: pg.sql("select count(*) from pg_stat_activity where application_name = %s "
                       "and state = 'active' and query like 'select pg_sleep%%'",
                       (application_name,))[0][0] == 1,
        t(timeout), "pg_sleep to start (%s)" % application_name)


def assert_no_sleepers(pg):
    rows = pg.sql("select application_name from pg_stat_activity "
                  "where query like 'select pg_sleep(30)%' and state = 'active'")
    assert rows == [], rows


def libpq_error(fn):
    """Run fn, which must fail to connect; return the error text (no traceback kept alive:
    it would hold libpq's socket open)."""
    try:
        fn()
    except (psycopg.OperationalError, psycopg2.OperationalError) as e:
        return str(e)
    raise AssertionError("connection succeeded")


def assert_cert_rejection(text):
    # The relay's FATAL 28000 names what is missing.
    assert "client certificate" in text.lower(), text


# ---------------------------------------------------------------------------------------------
# psql

def psql(relay, *args, cert=True, timeout=30, **kw):
    env = relay.libpq_env()
    if cert:
        env.update(PGSSLCERT=relay.certs.client_crt("postgres"),
                   PGSSLKEY=relay.certs.client_key("postgres"))
    env.update(kw.pop("env", {}))
    return subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"] + list(args),
                          capture_output=True, text=True, timeout=t(timeout), env=env, **kw)


def test_psql(relay, tmp_path):
    r = psql(relay, "-c", "select 40 + 2")
    assert (r.returncode, r.stdout.strip()) == (0, "42"), r.stderr
    # PREPARE/EXECUTE (psql 15 has no \bind; every psql statement is a simple query)
    r = psql(relay, "-c", "prepare p(int) as select $1 * 2", "-c", "execute p(21)")
    assert (r.returncode, r.stdout.strip()) == (0, "42"), r.stderr
    src = tmp_path / "in.tsv"
    src.write_text(COPY_TEXT)
    out = tmp_path / "out.tsv"
    script = tmp_path / "copy.sql"
    script.write_text("create temp table c (a int, b text);\n"
                      "\\copy c from '%s'\n"
                      "select count(*), sum(a) from c;\n"
                      "\\copy (select a, b from c order by a) to '%s'\n" % (src, out))
    r = psql(relay, "-f", str(script))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1000|500500", r.stdout
    assert out.read_text() == COPY_TEXT


def test_psql_cancel(relay):
    env = relay.libpq_env()
    env.update(PGSSLCERT=relay.certs.client_crt("postgres"),
               PGSSLKEY=relay.certs.client_key("postgres"), PGAPPNAME="compat-psql-cancel")
    p = subprocess.Popen(["psql", "-X", "-A", "-t", "-c", SLEEP_SQL], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_sleeper(relay.pg, "compat-psql-cancel")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)  # psql sends a CancelRequest on ^C
        _, err = p.communicate(timeout=t(10))
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "canceling statement due to user request" in err, err
    assert elapsed < t(CANCEL_WITHIN), elapsed


def test_psql_without_client_certificate_refused(relay):
    require_cert_enforced(relay)
    r = psql(relay, "-c", "select 1", cert=False)
    assert r.returncode != 0
    assert_cert_rejection(r.stderr)


# ---------------------------------------------------------------------------------------------
# pgbench

def pgbench(relay, *args, timeout=60):
    env = relay.libpq_env()
    env.update(PGSSLCERT=relay.certs.client_crt("postgres"),
               PGSSLKEY=relay.certs.client_key("postgres"))
    r = subprocess.run(["pgbench"] + list(args), capture_output=True, text=True,
                       timeout=t(timeout), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_pgbench(relay, tmp_path):
    script = tmp_path / "bench.sql"
    script.write_text("\\set x random(1, 1000)\nselect :x * 2;\n")
    for mode in ("simple", "extended", "prepared"):
        r = pgbench(relay, "-n", "-t", "20", "-c", "2", "-M", mode, "-f", str(script))
        assert "number of transactions actually processed: 40/40" in r.stdout, (mode, r.stdout)
    # Initialization with client-side data generation is COPY FROM STDIN.
    try:
        pgbench(relay, "-i", "-s", "1", "-q", "-I", "dtg")
        with relay.connect(**cert_params(relay.certs)) as conn:
            assert conn.execute("select count(*) from pgbench_accounts").fetchone()[0] == 100000
    finally:
        pgbench(relay, "-i", "-I", "d")


# ---------------------------------------------------------------------------------------------
# psycopg2

def test_psycopg2(relay):
    dsn = relay.dsn(application_name="compat-psycopg2", **cert_params(relay.certs))
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("select 40 + 2")  # psycopg2 sends every statement as a simple query
        assert cur.fetchone()[0] == 42
        cur.execute("select pg_backend_pid()")
        assert cur.fetchone()[0] == conn.get_backend_pid()  # libpq's PQbackendPID()
        cur.execute("select %s::int * 2, %s", (21, "x"))  # client-side parameters
        assert cur.fetchone() == (42, "x")
        cur.execute("prepare p(int) as select $1 * 2")
        cur.execute("execute p(21)")
        assert cur.fetchone()[0] == 42
        cur.execute("create temp table c (a int, b text)")
        cur.copy_expert("COPY c FROM STDIN", io.StringIO(COPY_TEXT))
        cur.execute("select count(*), sum(a) from c")
        assert cur.fetchone() == (1000, 500500)
        out = io.StringIO()
        cur.copy_expert("COPY (select a, b from c order by a) TO STDOUT", out)
        assert out.getvalue() == COPY_TEXT
    finally:
        conn.close()


def test_psycopg2_cancel(relay):
    conn = psycopg2.connect(relay.dsn(application_name="compat-psycopg2-cancel",
                                      **cert_params(relay.certs)))
    try:
        conn.autocommit = True
        cur = conn.cursor()
        stamp = {}

        def cancel():
            wait_for_sleeper(relay.pg, "compat-psycopg2-cancel")
            stamp["t0"] = time.monotonic()
            conn.cancel()

        th = threading.Thread(target=cancel, daemon=True)
        th.start()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute(SLEEP_SQL)
        elapsed = time.monotonic() - stamp["t0"]
        th.join(t(5))
        assert elapsed < t(CANCEL_WITHIN), elapsed
        cur.execute("select 1")
        assert cur.fetchone()[0] == 1
    finally:
        conn.close()


def test_psycopg2_without_client_certificate_refused(relay):
    require_cert_enforced(relay)
    assert_cert_rejection(libpq_error(lambda: psycopg2.connect(relay.dsn())))


# ---------------------------------------------------------------------------------------------
# psycopg 3

def test_psycopg3(relay):
    with relay.connect(application_name="compat-psycopg3", **cert_params(relay.certs)) as conn:
        assert conn.execute("select 40 + 2").fetchone()[0] == 42  # no parameters: simple query
        assert conn.execute("select pg_backend_pid()").fetchone()[0] == conn.info.backend_pid
        assert conn.execute("select %s::int * 2, %s", (21, "x")).fetchone() == (42, "x")
        for i in range(2):
            assert conn.execute("select %s::int * 3", (i,), prepare=True).fetchone()[0] == 3 * i
        assert conn.execute("select count(*) from pg_prepared_statements").fetchone()[0] >= 1
        with conn.pipeline():
            curs = [conn.execute("select %s::int", (i,)) for i in range(5)]
        assert [c.fetchone()[0] for c in curs] == list(range(5))
        conn.execute("create temp table c (a int, b text)")
        with conn.cursor() as cur:
            with cur.copy("COPY c FROM STDIN") as cp:
                for row in COPY_ROWS:
                    cp.write_row(row)
            assert cur.execute("select count(*), sum(a) from c").fetchone() == (1000, 500500)
            buf = bytearray()
            with cur.copy("COPY (select a, b from c order by a) TO STDOUT") as cp:
                for chunk in cp:
                    buf += chunk
            assert bytes(buf).decode() == COPY_TEXT


def test_psycopg3_cancel(relay):
    with relay.connect(application_name="compat-psycopg3-cancel",
                       **cert_params(relay.certs)) as conn:
        stamp = {}

        def cancel():
            wait_for_sleeper(relay.pg, "compat-psycopg3-cancel")
            stamp["t0"] = time.monotonic()
            conn.cancel()

        th = threading.Thread(target=cancel, daemon=True)
        th.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            harness.run_bounded(lambda: conn.execute(SLEEP_SQL), t(15), "cancelled pg_sleep")
        elapsed = time.monotonic() - stamp["t0"]
        th.join(t(5))
        assert elapsed < t(CANCEL_WITHIN), elapsed
        assert conn.execute("select 1").fetchone()[0] == 1


def test_psycopg3_without_client_certificate_refused(relay):
    require_cert_enforced(relay)
    assert_cert_rejection(libpq_error(lambda: psycopg.connect(relay.dsn())))


def test_channel_binding_require_fails_clearly(relay):
    """The relay terminates TLS: PostgreSQL sees no TLS behind the agent and offers only
    SCRAM-SHA-256 (no -PLUS), so libpq refuses with channel_binding=require."""
    text = libpq_error(lambda: psycopg.connect(relay.dsn(
        user=SCRAM_USER, password=SCRAM_PASSWORD, channel_binding="require",
        **cert_params(relay.certs, SCRAM_USER))))
    assert "channel binding" in text, text
    # libpq 15's wording, quoted in README.md
    assert "server did not offer an authentication method that supports channel binding" \
        in text, text
    # Without channel_binding=require the same user logs in with SCRAM end to end.
    with relay.connect(user=SCRAM_USER, password=SCRAM_PASSWORD,
                       **cert_params(relay.certs, SCRAM_USER)) as conn:
        assert conn.execute("select current_user").fetchone()[0] == SCRAM_USER


# ---------------------------------------------------------------------------------------------
# asyncpg

def asyncpg_ssl(certs, cert=True):
    """As users configure asyncpg for mutual TLS: an SSLContext with CA, certificate, key."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs.ca)
    ctx.check_hostname = True
    if cert:
        ctx.load_cert_chain(certs.client_crt("postgres"), certs.client_key("postgres"))
    return ctx


async def asyncpg_connect(relay, cert=True, **kw):
    return await asyncpg.connect(host="localhost", port=relay.client_port, user="postgres",
                                 database="postgres", ssl=asyncpg_ssl(relay.certs, cert),
                                 timeout=t(10), **kw)


def test_asyncpg(relay):
    async def main():
        conn = await asyncpg_connect(relay)
        try:
            await conn.execute("create temp table c (a int, b text)")  # no args: simple query
            assert await conn.fetchval("select pg_backend_pid()") == conn.get_server_pid()
            assert await conn.fetchval("select $1::int * 2", 21) == 42  # extended
            stmt = await conn.prepare("select $1::int * 3")
            assert [await stmt.fetchval(i) for i in range(3)] == [0, 3, 6]
            await conn.copy_records_to_table("c", records=COPY_ROWS, columns=["a", "b"])
            assert tuple(await conn.fetchrow("select count(*), sum(a) from c")) == (1000, 500500)
            out = io.BytesIO()
            await conn.copy_from_query("select a, b from c order by a", output=out)
            assert out.getvalue().decode() == COPY_TEXT
        finally:
            await conn.close()
        # Route selection as README.md shows it for asyncpg (startup parameter "options").
        conn = await asyncpg_connect(relay, server_settings={
            "options": "-c pgburrow.route=a"})
        try:
            assert await conn.fetchval("select current_setting('pgburrow.route', true)") == "a"
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), t(30)))


def test_asyncpg_cancel(relay):
    async def main():
        conn = await asyncpg_connect(relay, server_settings={
            "application_name": "compat-asyncpg-cancel"})
        try:
            task = asyncio.ensure_future(conn.execute(SLEEP_SQL))
            await asyncio.get_running_loop().run_in_executor(
                None, wait_for_sleeper, relay.pg, "compat-asyncpg-cancel")
            t0 = time.monotonic()
            task.cancel()  # asyncpg sends a CancelRequest and waits for the query to end
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await conn.fetchval("select 1") == 1
            return time.monotonic() - t0
        finally:
            await conn.close()

    elapsed = asyncio.run(asyncio.wait_for(main(), t(30)))
    assert elapsed < t(CANCEL_WITHIN), elapsed
    assert_no_sleepers(relay.pg)


def test_asyncpg_without_client_certificate_refused(relay):
    require_cert_enforced(relay)
    async def main():
        with pytest.raises((asyncpg.PostgresError, ConnectionError, ssl.SSLError, OSError)) as ei:
            conn = await asyncpg_connect(relay, cert=False)
            await conn.close()
        return str(ei.value)

    assert_cert_rejection(asyncio.run(asyncio.wait_for(main(), t(30))))


# ---------------------------------------------------------------------------------------------
# JDBC and node: one run of each does every check (starting them is the slow part)

def result_lines(out, prefix):
    return [l for l in out.splitlines() if l.startswith(prefix)]


def assert_cancel_line(out):
    lines = result_lines(out, "cancel ")
    assert lines, out
    fields = harness.kv(lines[0])
    assert fields.get("sqlstate") == "57014", out
    assert int(fields["ms_after_cancel"]) < CANCEL_WITHIN * 1000 * harness.SLOW, out
    assert "after-cancel usable" in out, out


def assert_no_cert_line(out):
    lines = result_lines(out, "no-cert ")
    assert lines and lines[0].startswith("no-cert rejected sqlstate=28000 "), out
    assert_cert_rejection(lines[0])


_runs = {}


def jdbc_run(relay, tmp_path):
    """Run clients/Compat.java once per test module; returns its stdout."""
    if "jdbc" in _runs:
        return _runs["jdbc"]
    if not shutil.which("java"):
        pytest.skip("java is not installed (deploy/install-deps.sh test installs it)")
    if not os.path.exists(JDBC_JAR):
        pytest.skip("%s is missing (Debian libpostgresql-jdbc-java)" % JDBC_JAR)
    # pgjdbc reads client keys as PKCS-8 DER.
    key_der = str(tmp_path / "client-postgres.pk8")
    subprocess.run(["openssl", "pkcs8", "-topk8", "-outform", "DER", "-nocrypt", "-in",
                    relay.certs.client_key("postgres"), "-out", key_der], check=True,
                   capture_output=True, timeout=30)
    os.chmod(key_der, 0o600)
    base = "jdbc:postgresql://localhost:%d/postgres?sslmode=verify-full&sslrootcert=%s" % (
        relay.client_port, relay.certs.ca)
    args = [base + "&sslcert=%s&sslkey=%s&ApplicationName=compat-jdbc" % (
        relay.certs.client_crt("postgres"), key_der), "postgres"]
    if relay.cert_enforced:
        args.append(base)  # no sslcert: pgjdbc then tries ~/.postgresql/postgresql.crt
    # ... so user.home is an empty directory: the no-certificate case really sends none.
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run(["java", "-Duser.home=%s" % home, "-XX:TieredStopAtLevel=1", "-cp", JDBC_JAR,
                        os.path.join(CLIENTS_DIR, "Compat.java")] + args,
                       capture_output=True, text=True, timeout=t(90), env=harness.DAEMON_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    _runs["jdbc"] = r.stdout
    return r.stdout


def test_jdbc(relay, tmp_path):
    out = jdbc_run(relay, tmp_path)
    for check in ("simple query", "backend pid", "extended query 3",
                  "prepared statement on the server", "copy in", "copy out", "route option"):
        assert "ok " + check in out, out
    if relay.cert_enforced:
        assert_no_cert_line(out)


def test_jdbc_cancel(relay, tmp_path):
    assert_cancel_line(jdbc_run(relay, tmp_path))


def node_run(relay):
    """Run clients/compat.js once per test module; returns its stdout."""
    if "node" in _runs:
        return _runs["node"]
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node:
        pytest.skip("node is not installed (deploy/install-deps.sh test installs it)")
    modules = os.path.join(NODE_DIR, "node_modules")
    if not all(os.path.isdir(os.path.join(modules, m)) for m in ("pg", "pg-copy-streams")):
        if not npm:
            pytest.skip("npm is not installed: cannot install node pg")
        r = subprocess.run([npm, "install", "--prefix", NODE_DIR, "--no-audit", "--no-fund",
                            "pg", "pg-copy-streams"], capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0, "npm install pg failed:\n" + r.stdout + r.stderr
    cfg = dict(host="localhost", port=relay.client_port, user="postgres", database="postgres",
               ca=relay.certs.ca, cert=relay.certs.client_crt("postgres"),
               key=relay.certs.client_key("postgres"), direct=True)
    env = dict(harness.DAEMON_ENV, NODE_PATH=modules)
    r = subprocess.run([node, os.path.join(CLIENTS_DIR, "compat.js"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=t(60), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    _runs["node"] = r.stdout
    return r.stdout


def test_node_pg(relay):
    out = node_run(relay)
    for check in ("simple query", "backend pid", "extended query",
                  "prepared statement on the server", "copy in", "copy out", "direct TLS",
                  "route option"):
        assert "ok " + check in out, out
    if relay.cert_enforced:
        assert_no_cert_line(out)


def test_node_pg_cancel(relay):
    assert_cancel_line(node_run(relay))


# ---------------------------------------------------------------------------------------------
# openssl s_client, direct TLS

def s_client(relay, *extra):
    return subprocess.run(
        ["openssl", "s_client", "-starttls", "postgres", "-connect",
         "127.0.0.1:%d" % relay.client_port, "-servername", "localhost", "-verify_hostname",
         "localhost", "-CAfile", relay.certs.ca, "-verify_return_error", "-brief"] + list(extra),
        input="", capture_output=True, text=True, timeout=t(20))


def test_openssl_s_client_starttls(relay):
    r = s_client(relay, "-cert", relay.certs.client_crt("postgres"), "-key",
                 relay.certs.client_key("postgres"))
    out = r.stdout + r.stderr
    assert "Verification: OK" in out, out
    assert "Verified peername: localhost" in out, out
    assert "Protocol version: TLSv1.3" in out, out


def direct_tls(relay, alpn=("postgresql",), cert=True):
    ctx = harness.client_tls_context(relay.certs.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert:
        ctx.load_cert_chain(relay.certs.client_crt("postgres"),
                            relay.certs.client_key("postgres"))
    s = harness.raw_connect(relay.client_port)
    return ctx.wrap_socket(s, server_hostname="localhost")


def frontend(typ, body=b""):
    return typ + struct.pack("!I", len(body) + 4) + body


def read_until_ready(reader):
    msgs = []
    while True:
        typ, body = reader.read()
        if typ == "E":
            raise AssertionError("ErrorResponse: %r" % harness.parse_error_response(body))
        msgs.append((typ, body))
        if typ == "Z":
            return msgs


def test_direct_tls_alpn_postgresql(relay):
    tls = direct_tls(relay)
    try:
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(harness.startup_message({"user": "postgres", "database": "postgres"}))
        reader = harness.MessageReader(tls)
        msgs = read_until_ready(reader)
        assert msgs[0] == ("R", struct.pack("!I", 0)), msgs[0]  # AuthenticationOk
        # simple query
        tls.sendall(harness.query_message("select 40 + 2"))
        rows = [b for typ, b in read_until_ready(reader) if typ == "D"]
        assert rows and rows[0].endswith(b"42"), rows
        # extended: named prepared statement, bound twice
        tls.sendall(frontend(b"P", b"s1\0select $1::int * 2\0\0\0") +
                    b"".join(frontend(b"B", b"\0s1\0\0\0\0\1" + struct.pack("!I", len(v)) + v +
                                      b"\0\0") + frontend(b"E", b"\0\0\0\0\0")
                             for v in (b"21", b"5")) + frontend(b"S"))
        msgs = read_until_ready(reader)
        rows = [b for typ, b in msgs if typ == "D"]
        assert [r[-2:] for r in rows] == [b"42", b"10"], msgs
        # COPY out
        tls.sendall(harness.query_message("COPY (select g from generate_series(1, 3) g) TO STDOUT"))
        msgs = read_until_ready(reader)
        assert [b for typ, b in msgs if typ == "d"] == [b"1\n", b"2\n", b"3\n"], msgs
        tls.sendall(harness.TERMINATE)
    finally:
        tls.close()
