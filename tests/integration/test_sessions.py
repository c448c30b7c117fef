"""Real clients through relay + agent: psql, psycopg 3, asyncpg, pgbench, concurrency, COPY."""

import asyncio
import hashlib
import re
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import SCRAM_PASSWORD, SCRAM_USER, t


def test_psql_verify_full(burrow):
    r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "select 1",
                        burrow.dsn()], capture_output=True, text=True, timeout=t(30),
                       env=burrow.libpq_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    # As `make demo` sets it up: libpq environment only, with a client certificate offered.
    env = burrow.libpq_env(user=SCRAM_USER)
    env.update(PGPASSWORD=SCRAM_PASSWORD, PGSSLCERT=burrow.certs.client_crt(SCRAM_USER),
               PGSSLKEY=burrow.certs.client_key(SCRAM_USER))
    r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c",
                        "select current_user, current_setting('server_version_num')::int / 10000"],
                       capture_output=True, text=True, timeout=t(30), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "%s|15" % SCRAM_USER, r.stdout
    line = burrow.relay.wait_for_log("session end ", timeout=5)
    fields = harness.kv(line)
    assert fields.get("route") == "a", line
    assert int(fields["bytes_in"]) > 0 and int(fields["bytes_out"]) > 0, line


def test_psycopg_queries(burrow):
    with burrow.connect(application_name="it-psycopg") as conn:
        assert conn.info.parameter_status("server_version").startswith("15")
        assert conn.execute("show server_version").fetchone()[0].startswith("15")
        assert conn.execute("select %s::int + %s::int", (20, 22)).fetchone()[0] == 42
        # The StartupMessage reached PostgreSQL unchanged.
        assert conn.execute("select current_setting('application_name')").fetchone()[0] == \
            "it-psycopg"
        assert conn.execute("select current_user").fetchone()[0] == "postgres"
        # The session really is PostgreSQL over the agent's Unix socket (no client address).
        assert conn.execute("select inet_client_addr() is null").fetchone()[0] is True
        rows = conn.execute("select i, repeat('x', i) from generate_series(1, 200) i").fetchall()
        assert [(i, "x" * i) for i in range(1, 201)] == rows
        with conn.transaction():
            conn.execute("create temp table tt(v int)")
            conn.execute("insert into tt select generate_series(1, 1000)")
        assert conn.execute("select sum(v) from tt").fetchone()[0] == 500500
        # An error inside the session is PostgreSQL's own and the session goes on.
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        assert conn.execute("select 'still here'").fetchone()[0] == "still here"
    start = burrow.relay.wait_for_log("session start ", timeout=5)
    assert "user=postgres" in start and "database=postgres" in start, start
    assert "agent=agent-a" in start and "route=a" in start, start
    burrow.relay.wait_for_log("session end ", timeout=5)


def test_scram_auth_end_to_end(burrow):
    """PostgreSQL's own SCRAM authentication runs through the tunnel (psycopg and asyncpg)."""
    with open(burrow.pg.logfile, "rb") as f:
        pg_log_mark = f.seek(0, 2)
    with burrow.connect(user=SCRAM_USER, password=SCRAM_PASSWORD) as conn:
        assert conn.execute("select current_user").fetchone()[0] == SCRAM_USER
        assert conn.execute("select count(*) from generate_series(1, 10)").fetchone()[0] == 10
    # PostgreSQL itself authenticated the session with SCRAM (log_connections is on).
    with open(burrow.pg.logfile, "rb") as f:
        f.seek(pg_log_mark)
        assert b'identity="%s" method=scram-sha-256' % SCRAM_USER.encode() in f.read()

    async def via_asyncpg():
        c = await asyncpg.connect(host="127.0.0.1", port=burrow.client_port, user=SCRAM_USER,
                                  password=SCRAM_PASSWORD, database="postgres",
                                  ssl=harness.client_tls_context(burrow.certs.ca),
                                  timeout=t(10))
        try:
            return await c.fetchval("select current_user")
        finally:
            await c.close()

    assert asyncio.run(via_asyncpg()) == SCRAM_USER


def test_wrong_password_gets_postgres_error(burrow):
    # asyncpg parses the ErrorResponse itself, so the SQLSTATE is visible. Only strings leave
    # the helpers: a kept exception would keep the failed client socket open.
    async def via_asyncpg():
        try:
            await asyncpg.connect(host="127.0.0.1", port=burrow.client_port, user=SCRAM_USER,
                                  password="wrong", database="postgres",
                                  ssl=harness.client_tls_context(burrow.certs.ca),
                                  timeout=t(10))
        except asyncpg.exceptions.PostgresError as e:
            return e.sqlstate, str(e)
        return None, "connected with a wrong password"

    sqlstate, text = asyncio.run(via_asyncpg())
    assert sqlstate == "28P01", text
    assert 'password authentication failed for user "%s"' % SCRAM_USER in text
    assert "pgburrow" not in text  # PostgreSQL's text, not the relay's

    # libpq shows the same PostgreSQL text.
    try:
        burrow.connect(user=SCRAM_USER, password="wrong").close()
        text = "connected with a wrong password"
    except psycopg.OperationalError as e:
        text = str(e)
    assert 'password authentication failed for user "%s"' % SCRAM_USER in text, text

    # The relay is unharmed.
    with burrow.connect(user=SCRAM_USER, password=SCRAM_PASSWORD) as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def run_pgbench(burrow, *args, timeout=60):
    r = subprocess.run(["pgbench"] + list(args), capture_output=True, text=True,
                       timeout=t(timeout), env=burrow.libpq_env())
    assert r.returncode == 0, "pgbench %s failed (%d):\n%s\n%s" % (" ".join(args), r.returncode,
                                                                  r.stdout, r.stderr)
    return r


def test_pgbench(burrow):
    run_pgbench(burrow, "-i", "-s", "1", "-q")
    with burrow.connect() as conn:
        assert conn.execute("select count(*) from pgbench_accounts").fetchone()[0] == 100000
    r = run_pgbench(burrow, "-S", "-c", "4", "-j", "2", "-T", "3", "-n")
    out = r.stdout
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 100, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed is not None, out
    assert int(failed.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr
    with burrow.connect() as conn:
        conn.execute("drop table if exists pgbench_accounts, pgbench_branches, "
                     "pgbench_history, pgbench_tellers")


def test_100_concurrent_sessions(burrow):
    n = 100
    barrier = threading.Barrier(n, timeout=t(60))
    results = [None] * n
    errors = []

    def worker(i):
        try:
            with burrow.connect(application_name="it-conc-%d" % i) as conn:
                pid = conn.execute("select pg_backend_pid()").fetchone()[0]
                barrier.wait()  # all n sessions are open at the same time
                assert conn.execute("select %s::int * 2", (i,)).fetchone()[0] == 2 * i
                s = conn.execute("select sum(g) from generate_series(1, %s) g",
                                 (1000 + i,)).fetchone()[0]
                assert s == (1000 + i) * (1001 + i) // 2
                assert conn.execute("select current_setting('application_name')").fetchone()[0] \
                    == "it-conc-%d" % i
                assert conn.execute("select pg_backend_pid()").fetchone()[0] == pid
                results[i] = pid
        except BaseException as e:  # noqa: B902 - report every failure, then break the barrier
            errors.append("session %d: %r" % (i, e))
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + t(90)
    for th in threads:
        th.join(max(0.1, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "sessions still running after the limit"
    # Broken-barrier errors are a consequence of the first failure; show the real ones first.
    errors.sort(key=lambda e: "BrokenBarrierError" in e)
    assert not errors, "%d of %d sessions failed:\n%s" % (len(errors), n, "\n".join(errors[:10]))
    assert len(set(results)) == n, "backend pids not distinct: %r" % results


def test_long_query_does_not_block_others(burrow):
    sleep_s = 3
    out = {}

    def long_query():
        try:
            with burrow.connect(application_name="it-long") as conn:
                t0 = time.monotonic()
                conn.execute("select pg_sleep(%s)" % sleep_s)
                out["elapsed"] = time.monotonic() - t0
                out["after"] = conn.execute("select 'done'").fetchone()[0]
        except BaseException as e:
            out["error"] = repr(e)

    th = threading.Thread(target=long_query, daemon=True)
    th.start()
    # Wait (bounded) until PostgreSQL is really running the sleep.
    harness.wait_until(lambda: burrow.pg.sql(
        "select 1 from pg_stat_activity where application_name = 'it-long' "
        "and query like 'select pg_sleep%%' and state = 'active'"),
        t(10), "the long query to be running")
    t0 = time.monotonic()
    conns = [burrow.connect(application_name="it-short-%d" % i) for i in range(4)]
    try:
        for k in range(25):
            for i, c in enumerate(conns):
                assert c.execute("select %s::int + 1", (k * 10 + i,)).fetchone()[0] == k * 10 + i + 1
        with burrow.connect() as c:  # a new session too
            assert c.execute("select count(*) from generate_series(1, 50000)").fetchone()[0] == 50000
    finally:
        for c in conns:
            c.close()
    others = time.monotonic() - t0
    assert th.is_alive(), "the long query ended before the short ones did (%.2fs)" % others
    assert others < sleep_s / 2 or harness.SANITIZER, \
        "short sessions took %.2fs next to one pg_sleep(%d)" % (others, sleep_s)
    th.join(t(20))
    assert not th.is_alive(), "long query did not finish"
    assert "error" not in out, out.get("error")
    assert out["elapsed"] >= sleep_s - 0.1 and out["after"] == "done", out


COPY_BYTES = 256 * 1024 * 1024
PAYLOAD = 992  # row = "%7d\t" + 992 chars + "\n" -> ~1 KiB


def test_copy_out_256mb(burrow):
    rows = COPY_BYTES // (PAYLOAD + 9) + 1
    cols = ("lpad(i::text, 7, '0')", "repeat(md5(i::text), %d)" % (PAYLOAD // 32))
    # The text COPY writes for one row (the columns need no escaping).
    row_sql = "%s || E'\\t' || %s" % cols
    h = hashlib.md5()
    nbytes = 0
    t0 = time.monotonic()
    with burrow.connect() as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY (SELECT %s, %s FROM generate_series(1, %d) i) TO STDOUT"
                          % (cols + (rows,))) as copy:
                for chunk in copy:
                    h.update(chunk)
                    nbytes += len(chunk)
        elapsed = time.monotonic() - t0
        # The same stream, hashed by PostgreSQL.
        expect_md5, expect_len = conn.execute(
            "SELECT md5(s), octet_length(s) FROM (SELECT string_agg(%s || E'\\n', '' ORDER BY i) s"
            " FROM generate_series(1, %d) i) x" % (row_sql, rows)).fetchone()
    assert nbytes >= COPY_BYTES, nbytes
    assert nbytes == expect_len
    assert h.hexdigest() == expect_md5, "COPY OUT stream differs from the server's data"
    line = burrow.relay.wait_for_log("session end ", timeout=5)
    assert int(harness.kv(line)["bytes_out"]) >= COPY_BYTES, line
    print("COPY OUT %d MB in %.1fs" % (nbytes >> 20, elapsed))


def test_copy_in_256mb(burrow):
    # A pool of distinct payloads; row i carries pool[i % K]. Cheap to generate, and every
    # row's payload is checked server-side by md5, in order, with count and sum of ids.
    k = 97
    pool = [(hashlib.sha512(b"%d" % j).hexdigest() * 8)[:PAYLOAD - j].encode() for j in range(k)]
    pool_md5 = [hashlib.md5(p).hexdigest() for p in pool]
    batch = 1024
    sent = 0
    rows = 0
    digest = hashlib.md5()
    with burrow.connect() as conn:
        conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS copy_in (i int, t text)")
        conn.execute("TRUNCATE copy_in")
        t0 = time.monotonic()
        try:
            with conn.cursor() as cur:
                with cur.copy("COPY copy_in (i, t) FROM STDIN") as copy:
                    while sent < COPY_BYTES:
                        ids = range(rows + 1, rows + 1 + batch)
                        rows += batch
                        block = b"".join(b"%d\t%s\n" % (i, pool[i % k]) for i in ids)
                        for i in ids:
                            digest.update(pool_md5[i % k].encode())
                        copy.write(block)
                        sent += len(block)
            elapsed = time.monotonic() - t0
            count, total, md5 = conn.execute(
                "SELECT count(*), sum(i), md5(string_agg(md5(t), '' ORDER BY i)) FROM copy_in"
            ).fetchone()
        finally:
            conn.execute("DROP TABLE IF EXISTS copy_in")
    assert sent >= COPY_BYTES
    assert count == rows
    assert total == rows * (rows + 1) // 2
    assert md5 == digest.hexdigest(), "COPY IN data differs at the server"
    line = burrow.relay.wait_for_log("session end ", timeout=5)
    assert int(harness.kv(line)["bytes_in"]) >= COPY_BYTES, line
    print("COPY IN %d MB in %.1fs" % (sent >> 20, elapsed))


def test_backend_terminated_error_reaches_client(burrow):
    """A session ended by PostgreSQL shows the client PostgreSQL's own FATAL (57P01)."""
    with burrow.connect(application_name="it-terminated") as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert burrow.pg.sql("select pg_terminate_backend(%s)", (pid,))[0][0] is True
        with pytest.raises(psycopg.OperationalError) as ei:
            harness.run_bounded(lambda: conn.execute("select 1"), t(10), "query on a killed backend")
        text = str(ei.value)
        del ei
    assert "terminating connection due to administrator command" in text, text
    line = burrow.relay.wait_for_log("session end ", timeout=5)
    assert "route=a" in line, line
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
