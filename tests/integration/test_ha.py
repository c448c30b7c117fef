"""High availability: several relays behind an L4 load balancer, several agents per route, and
one tunnel per address of a relay name.

test_haproxy_three_relays_two_agents: 3 relays (one relay.ini, ports given on the command line)
behind HAProxy on loopback (TCP mode, roundrobin, health checks every 500 ms); agent-a and
agent-b both serve route a and each hold a tunnel to every relay. Sessions land on every relay
and both agents; a cancel through HAProxy (which lands on another relay than its session)
cancels the query; after SIGKILL of one relay (once HAProxy marked it down) and then of one
agent, every new session still works.

test_name_with_two_addresses: the agent's relay entry is a name with two A/AAAA records: it
holds one tunnel per address (one relay listens on 127.0.0.1, the other on ::1, same port),
verifies the certificate against the name (the relay certificate has no IP SAN), and follows
the records when they change. The name's records are per-process (nss_wrapper's
NSS_WRAPPER_HOSTS), so nothing global changes.
"""

import os
import shutil
import socket
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import Daemon, free_port, t, wait_until, write_ini

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"
ROUTES = {"a": ["agent-a", "agent-b"]}


class EnvDaemon(Daemon):
    """A Daemon with extra environment variables (LD_PRELOAD of nss_wrapper)."""

    def __init__(self, kind, config, logpath, extra_args=(), env=None):
        super().__init__(kind, config, logpath, extra_args)
        self.env = dict(harness.DAEMON_ENV)
        self.env.update(env or {})

    def start(self):
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", self.config] + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=os.path.dirname(self.logpath), start_new_session=True)
        harness._started.append(self.proc)
        return self


class HAProxy:
    def __init__(self, workdir, port, backends):
        self.port = port
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        self.logpath = os.path.join(workdir, "haproxy.log")
        servers = "\n".join(
            "    server r%d 127.0.0.1:%d check inter 500ms fall 1 rise 1" % (i + 1, p)
            for i, p in enumerate(backends))
        with open(self.cfg, "w") as f:
            f.write("""global
    maxconn 1000
    nbthread 1
    log stderr format short local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s

frontend postgres
    bind 127.0.0.1:%d
    default_backend relays

backend relays
    balance roundrobin
%s
""" % (port, servers))
        self.proc = None

    def start(self):
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        harness._started.append(self.proc)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited (%s):\n%s" % (self.proc.returncode,
                                                                  self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, t(10), "haproxy listening")
        return self

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def haproxy_bin():
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (deploy/install-deps.sh test installs it)")
    return HAPROXY


def start_relays(b, n, listen_hosts=None, port=None, tunnel_port=None):
    """n relays sharing one relay.ini; ports on the command line. Returns [(daemon, client_port,
    tunnel_port)]."""
    b.write_relay_ini(routes=ROUTES, default_route="a")
    out = []
    for i in range(n):
        host = listen_hosts[i] if listen_hosts else "127.0.0.1"
        cport = port if port else free_port()
        tport = tunnel_port if tunnel_port else free_port()
        h = "[%s]" % host if ":" in host else host
        args = ["--relay.name=relay-%d" % (i + 1), "--relay.listen=%s:%d" % (h, cport),
                "--relay.tunnel_listen=%s:%d" % (h, tport)]
        d = Daemon("relay", b.relay_ini, os.path.join(b.dir, "relay-%d.log" % (i + 1)),
                   args).start()
        b.daemons.append(d)
        out.append((d, cport, tport))
    for d, _, _ in out:
        d.wait_for_log("listening clients=", timeout=10)
    b.relay = out[0][0]
    return out


def start_agent(b, name, relay, env=None, **keys):
    ini = b.write_agent_ini(name, routes=("a",), relay=relay, **keys)
    with open(ini) as f:  # keys=None: leave the key out (its default)
        text = "".join(l for l in f if not l.rstrip().endswith("= None"))
    with open(ini, "w") as f:
        f.write(text)
    d = EnvDaemon("agent", ini, os.path.join(b.dir, "%s.log" % name), env=env).start()
    b.daemons.append(d)
    b.agents[name] = d
    return d


def name_only_relay_cert(b):
    """A relay certificate for DNS:localhost only (no IP SAN), from the session CA."""
    cdir = os.path.join(b.dir, "name-only")
    os.makedirs(cdir, exist_ok=True)
    for f in ("ca.crt", "ca.key"):
        shutil.copy2(os.path.join(b.certs.dir, f), cdir)
    subprocess.run(["bash", harness.MKCERTS, cdir, "relay", "DNS:localhost"], check=True,
                   capture_output=True, timeout=60)
    return cdir


def query_ok(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 42").fetchone()[0] == 42


def session_counts(relays, since):
    return [d.count("session start ", since=m) for (d, _, _), m in zip(relays, since)]


def test_haproxy_three_relays_two_agents(burrow_env, haproxy_bin):
    b = burrow_env
    relays = start_relays(b, 3)
    tunnels = ", ".join("127.0.0.1:%d" % tp for _, _, tp in relays)
    agents = {n: start_agent(b, n, tunnels) for n in ("agent-a", "agent-b")}
    for d, _, _ in relays:
        for n in agents:
            d.wait_for_log("tunnel up agent=%s " % n, timeout=10)

    lb_port = free_port()
    lb = HAProxy(b.dir, lb_port, [cp for _, cp, _ in relays]).start()
    try:
        dsn = b.dsn(port=lb_port)

        # 30 sessions: every relay and both agents serve some.
        marks = [d.mark() for d, _, _ in relays]
        for _ in range(30):
            query_ok(dsn)
        per_relay = session_counts(relays, marks)
        assert all(n > 0 for n in per_relay), "sessions per relay: %s" % per_relay
        assert sum(per_relay) == 30, per_relay
        starts = [l for (d, _, _), m in zip(relays, marks) for l in d.lines("session start ", m)]
        per_agent = {n: sum(1 for l in starts if "agent=%s " % n in l + " ") for n in agents}
        assert all(v > 0 for v in per_agent.values()), "sessions per agent: %s" % per_agent
        print("sessions per relay %s, per agent %s" % (per_relay, per_agent))

        # Cancels through the load balancer: the cancel's own connection is balanced too.
        crossed = 0
        for i in range(5):
            smarks = [d.mark() for d, _, _ in relays]
            with psycopg.connect(dsn, autocommit=True) as conn:
                errors = []

                def run():
                    try:
                        conn.execute("SELECT pg_sleep(30)")
                    except psycopg.errors.QueryCanceled as e:
                        errors.append(e)
                    except Exception as e:  # noqa: BLE001 - reported below
                        errors.append(e)

                th = threading.Thread(target=run)
                th.start()
                wait_until(lambda: b.pg.sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                    " AND state = 'active'")[0][0] > 0, t(5), "pg_sleep running")
                t0 = time.monotonic()
                conn.cancel()
                th.join(t(5))
                took = time.monotonic() - t0
                assert not th.is_alive(), "cancel %d: pg_sleep(30) still running" % i
                assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
                assert took < t(2), "cancel %d took %.2fs" % (i, took)
                conn.execute("SELECT 1")  # the session survives its cancel
            fwd = [d.count("cancel forwarded ", since=m) for (d, _, _), m in zip(relays, smarks)]
            sess = session_counts(relays, smarks)
            assert sum(fwd) == 1, "cancel %d forwarded by %s" % (i, fwd)
            if fwd.index(1) != sess.index(1):
                crossed += 1
        assert crossed > 0, "no cancel landed on another relay than its session"
        print("cancels that crossed relays: %d of 5" % crossed)

        # SIGKILL one relay: once HAProxy marked it down, no new session fails.
        dead, _, _ = relays[0]
        dead.kill()
        wait_until(lambda: "r1 is DOWN" in lb.log(), t(5), "haproxy marks r1 DOWN")
        for i in range(20):
            query_ok(dsn)

        # SIGKILL one agent: every relay still has the other one; no new session fails.
        live = relays[1:]
        marks = [d.mark() for d, _, _ in live]
        agents["agent-b"].kill()
        for i in range(20):
            query_ok(dsn)
        starts = [l for (d, _, _), m in zip(live, marks) for l in d.lines("session start ", m)]
        assert len(starts) == 20
        assert all("agent=agent-a " in l for l in starts), starts
    finally:
        lb.stop()


def test_name_with_two_addresses(burrow_env, tmp_path):
    if not os.path.exists(NSS_WRAPPER):
        pytest.skip("libnss-wrapper is not installed (deploy/install-deps.sh test installs it)")
    b = burrow_env
    # A relay certificate with the name only: verifying the address instead would fail.
    cdir = name_only_relay_cert(b)
    port, tport = free_port(), free_port()
    b.write_relay_ini(routes=ROUTES, default_route="a",
                      tls_cert=os.path.join(cdir, "relay.crt"),
                      tls_key=os.path.join(cdir, "relay.key"))
    relays = []
    for i, host in enumerate(("127.0.0.1", "::1")):
        h = "[%s]" % host if ":" in host else host
        d = Daemon("relay", b.relay_ini, os.path.join(b.dir, "relay-%d.log" % (i + 1)),
                   ["--relay.name=relay-%d" % (i + 1), "--relay.listen=%s:%d" % (h, port),
                    "--relay.tunnel_listen=%s:%d" % (h, tport)]).start()
        b.daemons.append(d)
        relays.append(d)
    for d in relays:
        d.wait_for_log("listening clients=", timeout=10)
    b.relay = relays[0]

    hosts = os.path.join(b.dir, "hosts")

    def set_hosts(*addrs):
        tmp = hosts + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join("%s localhost\n" % a for a in addrs))
        os.replace(tmp, hosts)  # a new inode: nss_wrapper notices and reads it again

    set_hosts("127.0.0.1", "::1")
    env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": hosts}
    if harness.SANITIZER:
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    agent = start_agent(b, "agent-a", "localhost:%d" % tport, env=env,
                        relay_server_name=None, resolve_interval="300ms")
    agent.wait_for_log("relay addresses for localhost: 127.0.0.1, ::1", timeout=10)
    marks = []
    for d in relays:
        d.wait_for_log("tunnel up agent=agent-a ", timeout=10)
        marks.append(d.mark())
    # the agent logs its side once WELCOME arrives, after the relay logged its own
    harness.wait_until(lambda: agent.count("tunnel up relay=") == 2, t(10), "both tunnels up")
    assert "tunnel failed" not in agent.log()

    # Sessions through either relay work.
    for host in ("127.0.0.1", "::1"):
        query_ok(b.dsn(port=port, hostaddr=host))

    # ::1 disappears from the name: its tunnel is closed (idle: at once); 127.0.0.1's stays.
    amark = agent.mark()
    set_hosts("127.0.0.1")
    agent.wait_for_log("relay addresses for localhost: 127.0.0.1\n", timeout=10, since=amark)
    relays[1].wait_for_log("tunnel down agent=agent-a ", timeout=10, since=marks[1])
    assert relays[0].count("tunnel down", since=marks[0]) == 0
    query_ok(b.dsn(port=port, hostaddr="127.0.0.1"))

    # It comes back: a new tunnel.
    mark1 = relays[1].mark()
    set_hosts("::1", "127.0.0.1")
    relays[1].wait_for_log("tunnel up agent=agent-a ", timeout=10, since=mark1)
    query_ok(b.dsn(port=port, hostaddr="::1"))
    assert relays[0].count("tunnel down", since=marks[0]) == 0


def test_open_fail_tries_the_other_agent(burrow_env):
    """An agent that cannot reach PostgreSQL answers OPEN_FAIL 08006: the relay opens the
    session on another agent of the route, once, before failing the client."""
    b = burrow_env
    b.start_relay(routes=ROUTES)
    b.start_agent("agent-a", routes=("a",))
    b.start_agent("agent-b", routes=("a",), targets={"a": ("127.0.0.1", free_port())})
    mark = b.relay.mark()
    for _ in range(6):
        query_ok(b.dsn())
    starts = b.relay.lines("session start ", mark)
    assert len(starts) == 6 and all("agent=agent-a " in l for l in starts), starts
    retries = b.relay.lines("session retry ", mark)
    assert len(retries) == 3, retries  # round robin: every other OPEN went to agent-b first
    assert all("failed_agent=agent-b agent=agent-a " in l for l in retries), retries

    # Only agent-b left: one try, and the client gets its error.
    b.agents["agent-a"].kill()
    b.relay.wait_for_log("tunnel down agent=agent-a ", timeout=10, since=mark)
    with pytest.raises(psycopg.OperationalError) as e:
        query_ok(b.dsn())
    assert "agent-b could not connect to PostgreSQL" in str(e.value) or \
        "could not connect to PostgreSQL" in str(e.value), str(e.value)


def test_session_opening_on_a_frozen_agent_moves_to_the_other(burrow_env):
    """Sessions sent to an agent that froze (SIGSTOP: its tunnel looks alive until keepalive
    gives up) are opened on the other agent of the route once the tunnel is declared dead:
    every client gets its session, none an error."""
    import os
    import signal
    import threading
    b = burrow_env
    b.start_relay(routes=ROUTES, ping_interval="250ms", dead_timeout="1500ms")
    frozen = b.start_agent("agent-a", routes=("a",))
    b.start_agent("agent-b", routes=("a",))
    mark = b.relay.mark()
    os.kill(frozen.pid, signal.SIGSTOP)
    results, threads = [], []
    try:
        def one():
            try:
                query_ok(b.dsn())
                results.append("ok")
            except Exception as e:  # noqa: BLE001 - asserted below
                results.append(repr(e))
        for _ in range(6):
            th = threading.Thread(target=one)
            th.start()
            threads.append(th)
        for th in threads:
            th.join(t(20))
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert results == ["ok"] * 6, results
    retries = b.relay.lines("session retry ", mark)
    assert retries and all("failed_agent=agent-a agent=agent-b " in l for l in retries), retries
    starts = b.relay.lines("session start ", mark)
    assert len(starts) == 6 and all("agent=agent-b " in l for l in starts), starts


def test_same_relay_behind_two_addresses(burrow_env):
    """A name whose two addresses (IPv4 and IPv6) reach ONE dual-stack relay: the relay keeps
    the first tunnel and refuses the second as a duplicate (max_tunnels_per_agent=1); the agent
    takes that calmly (info, not a warning) and sessions work."""
    if not os.path.exists(NSS_WRAPPER):
        pytest.skip("libnss-wrapper is not installed (deploy/install-deps.sh test installs it)")
    b = burrow_env
    cdir = name_only_relay_cert(b)
    b.start_relay(routes=ROUTES, tls_cert=os.path.join(cdir, "relay.crt"),
                  tls_key=os.path.join(cdir, "relay.key"),
                  tunnel_listen="*:%d" % b.tunnel_port)  # one relay, IPv4 and IPv6
    hosts = os.path.join(b.dir, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost\n")
    env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": hosts}
    if harness.SANITIZER:
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    agent = start_agent(b, "agent-a", "localhost:%d" % b.tunnel_port, env=env,
                        relay_server_name=None, resolve_interval="30s")
    agent.wait_for_log("relay addresses for localhost: 127.0.0.1, ::1", timeout=10)
    b.relay.wait_for_log("tunnel up agent=agent-a ", timeout=10)
    b.relay.wait_for_log("already has 1 live tunnel", timeout=10)
    agent.wait_for_log("tunnel not needed", timeout=10)
    query_ok(b.dsn())
    assert b.relay.count("tunnel up agent=agent-a ") == 1
    assert "tunnel failed" not in agent.log() and "ERROR" not in agent.log(), agent.log()
