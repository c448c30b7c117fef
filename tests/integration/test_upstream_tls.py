"""Upstream TLS at the agent: [route NAME] sslmode / sslrootcert / sslcert / sslkey /
sslservername toward a PostgreSQL reached over TCP (a managed database, another host).

Module scope: a second PostgreSQL 15 cluster listening on 127.0.0.1:PORT with ssl=on, a server
certificate from its own CA (SANs DNS:localhost, IP:127.0.0.1) and `hostssl` lines only, so
that a plaintext connection is refused by PostgreSQL itself. Clients reach it through the relay
as usual (verify-full to the relay); only the agent's side of the session changes.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import PG_BIN, free_port, t

CERT_USER = "cert_user"  # authenticated by its client certificate (pg_hba `cert`)


class TlsPostgres:
    """A PostgreSQL 15 cluster with TLS only (hostssl), run as postgres. It listens on
    127.0.0.1 (in its certificate) and 127.0.0.2 (not in it: Linux routes all of 127/8 to lo)."""

    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "pgdata")
        self.sockdir = os.path.join(root, "pgsock")
        self.certdir = os.path.join(root, "certs")
        self.logfile = os.path.join(root, "postgres.log")
        self.port = free_port()

    def _run(self, args, user=None):
        cmd = (["runuser", "-u", user, "--"] if user else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout, r.stderr))
        return r

    def ca(self):
        return os.path.join(self.certdir, "ca.crt")

    def client_crt(self):
        return os.path.join(self.certdir, "client-%s.crt" % CERT_USER)

    def client_key(self):
        return os.path.join(self.certdir, "client-%s.key" % CERT_USER)

    def start(self):
        for args in (["ca"], ["relay", "DNS:localhost", "IP:127.0.0.1"], ["client", CERT_USER]):
            self._run(["bash", harness.MKCERTS, self.certdir] + args)
        for d in (self.sockdir, self.data):
            os.makedirs(d)
            subprocess.run(["chown", "postgres:postgres", d], check=True)
            os.chmod(d, 0o700)
        open(self.logfile, "a").close()
        subprocess.run(["chown", "postgres:postgres", self.logfile], check=True)
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                   "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--no-sync",
                   "--no-instructions"], user="postgres")
        # PostgreSQL wants its key owned by itself and not readable by others.
        for src, dst in (("relay.crt", "server.crt"), ("relay.key", "server.key"),
                         ("ca.crt", "root.crt")):
            p = os.path.join(self.data, dst)
            shutil.copyfile(os.path.join(self.certdir, src), p)
            subprocess.run(["chown", "postgres:postgres", p], check=True)
            os.chmod(p, 0o600)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# pgburrow upstream TLS tests\n"
                    "listen_addresses = '127.0.0.1,127.0.0.2'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "ssl = on\n"
                    "ssl_cert_file = 'server.crt'\n"
                    "ssl_key_file = 'server.key'\n"
                    "ssl_ca_file = 'root.crt'\n"
                    "max_connections = 50\n"
                    "fsync = off\n"
                    "shared_buffers = 16MB\n" % (self.port, self.sockdir))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "hostssl all %s 127.0.0.0/8 cert\n"
                    "hostssl all all 127.0.0.0/8 trust\n" % CERT_USER)
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                   "-t", "60", "start"], user="postgres")
        self.sql("CREATE ROLE %s LOGIN" % CERT_USER)
        return self

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                       "-t", "60", "stop"], user="postgres")

    def sql(self, query):
        dsn = "host=%s port=%d user=postgres dbname=postgres" % (self.sockdir, self.port)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
            cur = c.execute(query)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def tls_pg(workroot):
    root = os.path.join(workroot, "pg-tls")
    os.makedirs(root)
    os.chmod(root, 0o755)
    p = TlsPostgres(root)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def start(burrow_env, tls_pg, host="localhost", **route_keys):
    """Relay (route a -> agent-a) and agent-a whose route a goes to the TLS cluster."""
    burrow_env.start_relay()
    args = ["--route.a.%s=%s" % (k, v) for k, v in route_keys.items()]
    burrow_env.start_agent("agent-a", routes=("a",), targets={"a": (host, tls_pg.port)},
                           args=args)
    return burrow_env


def connect_error(burrow, **kw):
    with pytest.raises(psycopg.OperationalError) as ei:
        burrow.connect(**kw).close()
    text = str(ei.value)
    del ei  # the traceback holds libpq's connection (its socket) until collected
    return text


def startup_error(burrow, user="postgres"):
    """The ErrorResponse fields a client gets for its StartupMessage (raw protocol)."""
    s = harness.raw_connect(burrow.client_port)
    tls = harness.tls_after_sslrequest(s, burrow.certs.ca)
    try:
        tls.sendall(harness.startup_message({"user": user, "database": "postgres"}))
        return harness.read_error(tls)
    finally:
        tls.close()


def test_verify_full(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=tls_pg.ca())
    with b.connect() as conn:
        row = conn.execute("select ssl, version from pg_stat_ssl "
                           "where pid = pg_backend_pid()").fetchone()
        assert row[0] is True, row
        assert row[1] in ("TLSv1.2", "TLSv1.3"), row
        assert conn.execute("select inet_server_port()").fetchone()[0] == tls_pg.port
    line = b.agents["agent-a"].wait_for_log("session open ", timeout=5)
    assert "postgres_tls=TLSv1." in line, line
    assert "postgres=localhost:%d" % tls_pg.port in line, line


def test_cancel_over_tls_route(burrow_env, tls_pg):
    """A cancel reaches a backend behind a TLS-only (hostssl) PostgreSQL."""
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=tls_pg.ca())
    with b.connect(application_name="upstream-cancel") as conn:
        stamp = {}

        def cancel():
            harness.wait_until(lambda: tls_pg.sql(
                "select count(*) from pg_stat_activity where application_name = "
                "'upstream-cancel' and state = 'active' and query like 'select pg_sleep%'")[0][0],
                t(10), "pg_sleep to start")
            stamp["t0"] = time.monotonic()
            conn.cancel()

        th = threading.Thread(target=cancel, daemon=True)
        th.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            harness.run_bounded(lambda: conn.execute("select pg_sleep(30)"), t(15), "pg_sleep")
        assert time.monotonic() - stamp["t0"] < t(2.0)
        th.join(t(5))
        assert conn.execute("select 1").fetchone()[0] == 1


def test_verify_full_ip_host_uses_ip_san(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, host="127.0.0.1", sslmode="verify-full",
              sslrootcert=tls_pg.ca())
    with b.connect() as conn:
        assert conn.execute("select ssl from pg_stat_ssl "
                            "where pid = pg_backend_pid()").fetchone()[0] is True


def test_verify_full_wrong_ca_fails(burrow_env, tls_pg):
    # The relay's CA did not sign the PostgreSQL certificate.
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=burrow_env.certs.ca)
    err = startup_error(b)
    assert err["C"] == "08006", err
    assert err["M"].startswith("pgburrow: agent agent-a: could not connect to PostgreSQL: "), err
    assert "localhost:%d" % tls_pg.port in err["M"], err
    assert "certificate verify failed" in err["M"], err
    text = connect_error(b)  # and libpq shows the same sentence
    assert "certificate verify failed" in text, text


def test_verify_full_wrong_name_fails(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=tls_pg.ca(),
              sslservername="db.example.com")
    text = connect_error(b)
    assert "certificate verify failed: hostname mismatch" in text, text


def test_verify_full_ip_not_in_certificate_fails(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, host="127.0.0.2", sslmode="verify-full",
              sslrootcert=tls_pg.ca())
    text = connect_error(b)
    assert "certificate verify failed: IP address mismatch" in text, text


def test_verify_ca_ignores_name(burrow_env, tls_pg):
    # An address the certificate does not carry: verify-ca checks the chain only (as libpq).
    b = start(burrow_env, tls_pg, host="127.0.0.2", sslmode="verify-ca",
              sslrootcert=tls_pg.ca())
    with b.connect() as conn:
        assert conn.execute("select ssl from pg_stat_ssl "
                            "where pid = pg_backend_pid()").fetchone()[0] is True


def test_verify_ca_wrong_ca_fails(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="verify-ca", sslrootcert=burrow_env.certs.ca)
    assert "certificate verify failed" in connect_error(b)


def test_require_without_ca(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="require")
    with b.connect() as conn:
        assert conn.execute("select ssl from pg_stat_ssl "
                            "where pid = pg_backend_pid()").fetchone()[0] is True


def test_disable_to_hostssl_only_server_gets_postgres_error(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg)  # sslmode defaults to disable
    text = connect_error(b)
    # PostgreSQL's own refusal, passed through unchanged.
    assert "no pg_hba.conf entry" in text and "no encryption" in text, text
    line = b.agents["agent-a"].wait_for_log("session open ", timeout=5)
    assert "postgres_tls=off" in line, line


def test_client_certificate_cert_auth(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=tls_pg.ca(),
              sslcert=tls_pg.client_crt(), sslkey=tls_pg.client_key())
    with b.connect(user=CERT_USER) as conn:
        row = conn.execute("select current_user, client_dn from pg_stat_ssl "
                           "where pid = pg_backend_pid()").fetchone()
        assert row[0] == CERT_USER, row
        assert "CN=%s" % CERT_USER in row[1], row


def test_cert_auth_without_client_certificate_fails(burrow_env, tls_pg):
    b = start(burrow_env, tls_pg, sslmode="verify-full", sslrootcert=tls_pg.ca())
    text = connect_error(b, user=CERT_USER)
    assert "connection requires a valid client certificate" in text, text


def test_reload_rebuilds_upstream_context(burrow_env, tls_pg, tmp_path):
    """SIGHUP rebuilds the route's TLS context from the (renewed) sslrootcert file; a session
    opened before the reload goes on."""
    ca_file = str(tmp_path / "db-ca.crt")
    shutil.copyfile(burrow_env.certs.ca, ca_file)  # the wrong CA at first
    b = start(burrow_env, tls_pg, host="127.0.0.1", sslmode="verify-ca", sslrootcert=ca_file)
    assert "certificate verify failed" in connect_error(b)
    shutil.copyfile(tls_pg.ca(), ca_file + ".new")
    os.replace(ca_file + ".new", ca_file)
    agent = b.agents["agent-a"]
    mark = agent.mark()
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log("reload: ok", timeout=5, since=mark)
    with b.connect() as conn:
        assert conn.execute("select ssl from pg_stat_ssl "
                            "where pid = pg_backend_pid()").fetchone()[0] is True
        mark = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for_log("reload: ok", timeout=5, since=mark)
        assert conn.execute("select 1").fetchone()[0] == 1
        with b.connect() as conn2:
            assert conn2.execute("select 2").fetchone()[0] == 2


def test_server_without_ssl_refused(burrow_env):
    """sslmode=require toward a server that answers 'N' to SSLRequest fails clearly."""
    # A tiny fake server that answers 'N', as PostgreSQL with ssl=off does.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    seen = []

    def serve():
        try:
            while True:
                c, _ = srv.accept()
                seen.append(harness.recv_exact(c, 8))
                c.sendall(b"N")
                c.settimeout(t(10))
                try:
                    c.recv(1)
                except OSError:
                    pass
                c.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        burrow_env.start_relay()
        burrow_env.start_agent("agent-a", routes=("a",), targets={"a": ("127.0.0.1", port)},
                               args=["--route.a.sslmode=require"])
        text = connect_error(burrow_env)
        assert "does not support SSL" in text, text
        assert seen and seen[0] == harness.ssl_request(), seen
    finally:
        srv.close()


def test_config_errors(tmp_path, binaries, certs):
    agent = os.path.join(binaries, "pgburrow-agent")
    base = ["--agent.relay=127.0.0.1:1", "--agent.ca=%s" % certs.ca,
            "--agent.cert=%s" % certs.agent_crt("agent-a"),
            "--agent.key=%s" % certs.agent_key("agent-a"), "--check-config"]
    cases = [
        (["--route.r.sslmode=require"], "Unix socket"),
        (["--route.r.host=db", "--route.r.sslmode=verify-full"], "sslrootcert: required"),
        (["--route.r.host=db", "--route.r.sslmode=prefer"], "not offered"),
        (["--route.r.host=db", "--route.r.sslrootcert=%s" % certs.ca], "sslmode=disable"),
        (["--route.r.host=db", "--route.r.sslmode=verify-full",
          "--route.r.sslrootcert=%s" % str(tmp_path / "none.crt")], "could not access CA file"),
        (["--route.r.host=db", "--route.r.sslmode=require",
          "--route.r.sslcert=%s" % certs.client_crt("postgres")], "go together"),
    ]
    for extra, want in cases:
        r = subprocess.run([agent] + base + extra, capture_output=True, text=True,
                           timeout=t(10), env=harness.DAEMON_ENV)
        assert r.returncode == 1, (extra, r.stdout, r.stderr)
        assert "[route r]" in r.stderr and want in r.stderr, (extra, r.stderr)
    r = subprocess.run([agent] + base + ["--route.r.host=db", "--route.r.sslmode=verify-full",
                                         "--route.r.sslrootcert=%s" % certs.ca],
                       capture_output=True, text=True, timeout=t(10), env=harness.DAEMON_ENV)
    assert r.returncode == 0, r.stderr
