"""The integration basics, small enough to run with the daemons under valgrind
(`make valgrind`: PGBURROW_VALGRIND=1, see harness.py): psql, psycopg queries, a 20 MB COPY
out and in with checksums, and an agent restart. They run in the normal suite too."""

import hashlib
import subprocess

from harness import t

MB = 1000 * 1000


def test_psql_select(burrow):
    r = subprocess.run(["psql", "-X", "-A", "-t", "-c", "select 40 + 2, current_user"],
                       capture_output=True, text=True, env=burrow.libpq_env(), timeout=t(30))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42|postgres", r.stdout


def test_psycopg_queries(burrow):
    with burrow.connect() as conn:
        for i in range(50):
            assert conn.execute("select %s::int * 2, md5(%s::text)", (i, i)).fetchone() == (
                2 * i, hashlib.md5(str(i).encode()).hexdigest())
        conn.execute("create temp table kv (k int primary key, v text)")
        with conn.pipeline():
            for i in range(100):
                conn.execute("insert into kv values (%s, %s)", (i, "v%d" % i))
        assert conn.execute("select count(*), sum(k) from kv").fetchone() == (100, 4950)


def test_copy_20mb_out_and_in(burrow):
    rows, width = 20000, 1000
    line = ("c" * (width - 1) + "\n").encode()
    want = hashlib.sha256(line * rows).hexdigest()
    with burrow.connect() as conn:
        h = hashlib.sha256()
        with conn.cursor().copy("COPY (SELECT repeat('c', %d) FROM generate_series(1, %d)) "
                                "TO STDOUT" % (width - 1, rows)) as copy:
            for data in copy:
                h.update(data)
        assert h.hexdigest() == want
        conn.execute("create temp table sink (t text)")
        with conn.cursor().copy("COPY sink FROM STDIN") as copy:
            for _ in range(rows // 100):
                copy.write(line * 100)
        got = conn.execute("select count(*), sum(length(t)), md5(string_agg(t, '')) "
                           "from sink").fetchone()
        assert got == (rows, rows * (width - 1),
                       hashlib.md5(("c" * (width - 1) * rows).encode()).hexdigest())


def test_agent_restart(burrow):
    with burrow.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    mark = burrow.relay.mark()
    assert burrow.agents["agent-a"].stop() == 0
    burrow.relay.wait_for_log("tunnel down agent=agent-a", timeout=10, since=mark)
    burrow.restart_agent("agent-a")
    with burrow.connect() as conn:
        assert conn.execute("select 'restarted'").fetchone()[0] == "restarted"
