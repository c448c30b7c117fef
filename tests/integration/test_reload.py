"""Hot reload: SIGHUP and watched certificate files, at the relay and at the agent.

Every test that changes certificates works on its own copy of them (a per-test directory
holding the CA from the session's certificates), so the shared files are never touched.
"""

import os
import shutil
import signal
import subprocess

import psycopg
import pytest

import harness
from harness import t

RELOAD_OK = "reload: ok (trigger="
RELOAD_FAILED = "reload: failed: "


# -- helpers ---------------------------------------------------------------------------------

def issue_relay_cert(certs, d):
    """A new relay certificate and key in d, signed by the session's CA (random serial)."""
    os.makedirs(d, exist_ok=True)
    for f in ("ca.crt", "ca.key"):
        if not os.path.exists(os.path.join(d, f)):
            shutil.copy2(os.path.join(certs.dir, f), os.path.join(d, f))
    r = subprocess.run(["bash", harness.MKCERTS, d, "relay"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return os.path.join(d, "relay.crt"), os.path.join(d, "relay.key")


def replace_file(src, dst):
    """Write dst by renaming a complete copy of src over it (as renewal tools do)."""
    tmp = dst + ".new"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def cert_serial(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split("=", 1)[1].upper().lstrip("0")


def served_serial(burrow):
    """The serial of the certificate the relay shows a new client (SSLRequest path)."""
    s = harness.raw_connect(burrow.client_port)
    tls = harness.tls_after_sslrequest(s, burrow.certs.ca)
    try:
        return tls.getpeercert()["serialNumber"].upper().lstrip("0")
    finally:
        tls.close()


def one(conn, sql):
    return conn.execute(sql).fetchone()[0]


def sighup(daemon):
    mark = daemon.mark()
    os.kill(daemon.pid, signal.SIGHUP)
    return mark


# -- relay -------------------------------------------------------------------------------------

def test_session_survives_sighup(burrow):
    relay, agent = burrow.relay, burrow.agents["agent-a"]
    with burrow.connect() as conn:
        pid = one(conn, "select pg_backend_pid()")
        mark = sighup(relay)
        relay.wait_for_log(RELOAD_OK + "SIGHUP)", since=mark)
        amark = sighup(agent)
        agent.wait_for_log(RELOAD_OK + "SIGHUP)", since=amark)
        # the same backend, on the same connection
        assert one(conn, "select pg_backend_pid()") == pid
        assert one(conn, "select 40 + 2") == 42
        with burrow.connect() as conn2:
            assert one(conn2, "select 1") == 1
    # the tunnel stayed up through both reloads
    assert agent.count("tunnel down", since=amark) == 0
    assert relay.count("tunnel down", since=mark) == 0


def test_sighup_adds_and_revokes_routes(burrow_env):
    b = burrow_env
    b.start_relay()  # routes a -> agent-a, b -> agent-b
    b.start_agent("agent-a", routes=("a", "c"))
    b.relay.wait_for_log("tunnel refused agent=agent-a route=c reason=no such route")
    with pytest.raises(psycopg.OperationalError, match='unknown route "c"'):
        b.connect(route="c")

    b.write_relay_ini(routes={"a": ["agent-a"], "b": ["agent-b"], "c": ["agent-a"]})
    mark = sighup(b.relay)
    b.relay.wait_for_log(RELOAD_OK + "SIGHUP)", since=mark)
    b.relay.wait_for_log("tunnel route added agent=agent-a route=c", since=mark)
    with b.connect(route="c") as conn:
        assert one(conn, "select 'via c'") == "via c"

    # agent-a loses route a: the open session goes on, new ones find no agent
    with b.connect(route="a") as held:
        b.write_relay_ini(routes={"a": ["agent-b"], "b": ["agent-b"], "c": ["agent-a"]})
        mark = sighup(b.relay)
        b.relay.wait_for_log(RELOAD_OK + "SIGHUP)", since=mark)
        b.relay.wait_for_log("tunnel route revoked agent=agent-a route=a", since=mark)
        with pytest.raises(psycopg.OperationalError, match="no agent is connected"):
            b.connect(route="a")
        assert one(held, "select 'still here'") == "still here"


def test_sighup_invalid_config_keeps_running(burrow_env):
    b = burrow_env
    crt, key = issue_relay_cert(b.certs, os.path.join(b.dir, "certs"))
    b.start_relay(tls_cert=crt, tls_key=key)
    b.start_agent("agent-a")
    with b.connect() as conn:
        # a key file others can read is refused, as at start-up
        bad_key = os.path.join(b.dir, "bad.key")
        shutil.copy(key, bad_key)
        os.chmod(bad_key, 0o644)
        b.write_relay_ini(tls_cert=crt, tls_key=bad_key)
        mark = sighup(b.relay)
        line = b.relay.wait_for_log(RELOAD_FAILED, since=mark)
        assert "bad.key" in line and "group or world access" in line, line
        assert "keeping the running configuration" in line, line
        # a syntax error names the file and line
        with open(b.relay_ini, "a") as f:
            f.write("\n[relay\n")
        mark = sighup(b.relay)
        line = b.relay.wait_for_log(RELOAD_FAILED, since=mark)
        assert "relay.ini:" in line, line
        # the old configuration is still in force, for old and new sessions
        assert one(conn, "select 1") == 1
        with b.connect() as conn2:
            assert one(conn2, "select 2") == 2
    assert b.relay.count(RELOAD_OK) == 0


def test_listen_change_needs_restart(burrow):
    burrow.write_relay_ini(listen="127.0.0.1:%d" % harness.free_port())
    mark = sighup(burrow.relay)
    burrow.relay.wait_for_log(RELOAD_OK + "SIGHUP)", since=mark)
    assert burrow.relay.lines("restart pgburrow-relay to apply them", since=mark)
    with burrow.connect() as conn:  # still on the old address
        assert one(conn, "select 1") == 1


def test_renewed_certificate_picked_up_without_signal(burrow_env):
    b = burrow_env
    live = os.path.join(b.dir, "live")
    crt, key = issue_relay_cert(b.certs, live)
    b.start_relay(tls_cert=crt, tls_key=key)
    b.start_agent("agent-a")
    old_serial = cert_serial(crt)
    assert served_serial(b) == old_serial
    with b.connect() as conn:
        new_crt, new_key = issue_relay_cert(b.certs, os.path.join(b.dir, "renewed"))
        new_serial = cert_serial(new_crt)
        assert new_serial != old_serial
        mark = b.relay.mark()
        replace_file(new_key, key)
        replace_file(new_crt, crt)
        b.relay.wait_for_log(RELOAD_OK + "file change ", since=mark)
        assert served_serial(b) == new_serial
        assert one(conn, "select 'old session'") == "old session"
        with b.connect() as conn2:
            assert one(conn2, "select 'new session'") == "new session"
    # agents dialing now verify the new certificate too
    b.agents["agent-a"].stop()
    b.start_agent("agent-a")


def test_kubernetes_secret_swap_picked_up(burrow_env):
    """cert-manager / kubelet layout: tls.crt -> ..data/tls.crt, ..data -> ..<version>;
    an update renames a new ..data symlink over the old one."""
    b = burrow_env
    mnt = os.path.join(b.dir, "secret")
    os.makedirs(mnt)

    def publish(version, src_crt, src_key):
        vdir = os.path.join(mnt, "..%s" % version)
        os.makedirs(vdir)
        shutil.copy2(src_crt, os.path.join(vdir, "tls.crt"))
        shutil.copy2(src_key, os.path.join(vdir, "tls.key"))
        os.symlink("..%s" % version, os.path.join(mnt, "..data_tmp"))
        os.replace(os.path.join(mnt, "..data_tmp"), os.path.join(mnt, "..data"))

    crt1, key1 = issue_relay_cert(b.certs, os.path.join(b.dir, "v1"))
    publish("v1", crt1, key1)
    for f in ("tls.crt", "tls.key"):
        os.symlink(os.path.join("..data", f), os.path.join(mnt, f))
    b.start_relay(tls_cert=os.path.join(mnt, "tls.crt"), tls_key=os.path.join(mnt, "tls.key"))
    b.start_agent("agent-a")
    assert served_serial(b) == cert_serial(crt1)

    crt2, key2 = issue_relay_cert(b.certs, os.path.join(b.dir, "v2"))
    mark = b.relay.mark()
    publish("v2", crt2, key2)
    b.relay.wait_for_log(RELOAD_OK + "file change ", since=mark)
    assert served_serial(b) == cert_serial(crt2)
    with b.connect() as conn:
        assert one(conn, "select 1") == 1


def test_invalid_certificate_written_in_place_is_refused(burrow_env):
    b = burrow_env
    live = os.path.join(b.dir, "live")
    crt, key = issue_relay_cert(b.certs, live)
    b.start_relay(tls_cert=crt, tls_key=key)
    b.start_agent("agent-a")
    old_serial = cert_serial(crt)
    with b.connect() as conn:
        garbage = os.path.join(b.dir, "garbage.crt")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        mark = b.relay.mark()
        replace_file(garbage, crt)
        line = b.relay.wait_for_log(RELOAD_FAILED, since=mark)
        assert crt in line and "keeping the running configuration" in line, line
        assert "trigger=file change " in line, line
        assert served_serial(b) == old_serial
        assert one(conn, "select 1") == 1
        with b.connect() as conn2:
            assert one(conn2, "select 2") == 2
        # a cert that does not match the key is refused the same way
        other_crt, _ = issue_relay_cert(b.certs, os.path.join(b.dir, "other"))
        mark = b.relay.mark()
        replace_file(other_crt, crt)
        line = b.relay.wait_for_log(RELOAD_FAILED, since=mark)
        assert "does not match" in line, line
        assert served_serial(b) == old_serial


def test_check_config_loads_certificates(burrow_env):
    b = burrow_env
    ini = b.write_relay_ini(tls_cert=os.path.join(b.dir, "missing.crt"))
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini, "--check-config"],
                       capture_output=True, text=True, timeout=t(30), env=harness.DAEMON_ENV)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "missing.crt" in r.stderr, r.stderr


# -- agent -------------------------------------------------------------------------------------

def test_agent_sighup_new_route_host(burrow_env):
    b = burrow_env
    b.start_relay()
    dead = ("127.0.0.1", harness.free_port())  # nothing listens there
    agent = b.start_agent("agent-a", targets={"a": dead})
    with pytest.raises(psycopg.OperationalError, match="could not connect to PostgreSQL"):
        b.connect()
    b.write_agent_ini("agent-a")  # route a -> the test cluster's socket
    mark = sighup(agent)
    agent.wait_for_log(RELOAD_OK + "SIGHUP)", since=mark)
    with b.connect() as conn:
        assert one(conn, "select 'reloaded'") == "reloaded"
    assert agent.count("tunnel up", since=mark) == 0  # the same tunnel

    # an invalid agent configuration is refused and the running one stays
    b.write_agent_ini("agent-a", ca=os.path.join(b.dir, "missing-ca.crt"))
    mark = sighup(agent)
    line = agent.wait_for_log(RELOAD_FAILED, since=mark)
    assert "missing-ca.crt" in line, line
    with b.connect() as conn:
        assert one(conn, "select 1") == 1


def start_second_relay(b):
    """Another relay (route a -> agent-a) next to the Burrow's own; returns (daemon, ports)."""
    client_port, tunnel_port = harness.free_port(), harness.free_port()
    ini = harness.write_ini(os.path.join(b.dir, "relay2.ini"), [
        ("relay", {"name": "relay-two", "listen": "127.0.0.1:%d" % client_port,
                   "tunnel_listen": "127.0.0.1:%d" % tunnel_port,
                   "tls_cert": b.certs.relay_crt, "tls_key": b.certs.relay_key,
                   "agent_ca": b.certs.ca, "default_route": "a"}),
        ("route a", {"agents": "agent-a"}),
    ])
    d = harness.Daemon("relay", ini, b._logpath("relay2")).start()
    b.daemons.append(d)
    d.wait_for_log("listening clients=", timeout=10)
    return d, client_port, tunnel_port


def test_agent_sighup_relay_list_change(burrow_env):
    b = burrow_env
    b.start_relay()
    agent = b.start_agent("agent-a")
    relay1 = "127.0.0.1:%d" % b.tunnel_port
    relay2_daemon, relay2_client, relay2_tunnel = start_second_relay(b)
    relay2 = "127.0.0.1:%d" % relay2_tunnel

    dead = "127.0.0.1:%d" % harness.free_port()  # never answers: its link keeps retrying
    held = b.connect()  # a session through relay 1, across both reloads
    b.write_agent_ini("agent-a", relay="%s, %s, %s" % (relay1, relay2, dead))
    mark = sighup(agent)
    agent.wait_for_log(RELOAD_OK + "SIGHUP) relays=3", since=mark)
    agent.wait_for_log("tunnel failed relay=%s" % dead, since=mark)
    agent.wait_for_log("relay added relay=%s" % relay2, since=mark)
    relay2_daemon.wait_for_log("tunnel up agent=agent-a ")
    with psycopg.connect(b.dsn(port=relay2_client), autocommit=True) as conn:
        assert one(conn, "select 'via relay 2'") == "via relay 2"

    # relay 1 removed: drained (no new sessions, the open one goes on), then closed; the
    # dead one removed while it waits to retry
    b.write_agent_ini("agent-a", relay=relay2)
    rmark, mark = b.relay.mark(), sighup(agent)
    agent.wait_for_log("tunnel draining relay=%s sessions=1" % relay1, since=mark)
    b.relay.wait_for_log("tunnel draining agent=agent-a", since=rmark)
    with pytest.raises(psycopg.OperationalError, match="no agent is connected"):
        b.connect()
    assert one(held, "select 'still on relay 1'") == "still on relay 1"
    held.close()
    b.relay.wait_for_log("tunnel down agent=agent-a", since=rmark)
    agent.wait_for_log("tunnel closed relay=%s" % relay1, since=mark)
    with psycopg.connect(b.dsn(port=relay2_client), autocommit=True) as conn:
        assert one(conn, "select 1") == 1
    assert agent.count("tunnel up relay=%s" % relay1, since=mark) == 0
    n = agent.count("tunnel failed relay=%s" % dead)
    with psycopg.connect(b.dsn(port=relay2_client), autocommit=True) as conn:
        assert one(conn, "select 2") == 2
    assert agent.count("tunnel failed relay=%s" % dead) == n  # never dialed again


def test_certificates_rotated_under_load(burrow_env):
    """Relay certificates renewed in place three times while sessions run queries and new
    sessions keep opening: no query fails, no session is dropped."""
    import threading
    b = burrow_env
    live = os.path.join(b.dir, "live")
    crt, key = issue_relay_cert(b.certs, live)
    b.start_relay(tls_cert=crt, tls_key=key)
    b.start_agent("agent-a")
    stop = threading.Event()
    errors, counts = [], [0] * 4

    def worker(n):
        try:
            with b.connect() as held:
                i = 0
                while not stop.is_set():
                    i += 1
                    assert one(held, "select %d" % i) == i
                    if i % 5 == 0:  # a new session now and then, through the new certificate
                        with b.connect() as fresh:
                            assert one(fresh, "select count(*) from generate_series(1, 1000)") == 1000
                    counts[n] += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append("worker %d: %r" % (n, e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    try:
        for k in range(3):
            new_crt, new_key = issue_relay_cert(b.certs, os.path.join(b.dir, "renewed%d" % k))
            mark = b.relay.mark()
            replace_file(new_key, key)
            replace_file(new_crt, crt)
            b.relay.wait_for_log(RELOAD_OK + "file change ", since=mark)
            harness.wait_until(lambda: served_serial(b) == cert_serial(new_crt), t(5),
                               "the renewed certificate to be served")
    finally:
        stop.set()
        for th in threads:
            th.join(t(30))
    assert not errors, errors
    assert all(c > 0 for c in counts), counts
