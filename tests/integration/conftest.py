"""Fixtures for the pgburrow integration tests.

Session scope: one PostgreSQL 15 cluster (Unix socket only, in a private temp dir), one set
of certificates made by deploy/certs/mkcerts.sh. Function scope: a Burrow (relay + agents
with generated ini files, logs in a per-test dir) that stops every daemon it started and
fails the test when one died unexpectedly, did not exit 0 when stopped, or (with
PGBURROW_SANITIZER=1) logged a sanitizer report.
"""

import os
import shutil
import signal
import tempfile

import psycopg
import psycopg.conninfo
import pytest

import harness
from harness import Certs, Daemon, Postgres, free_port, t, write_ini

DEFAULT_RELAY_ROUTES = {"a": ["agent-a"], "b": ["agent-b"]}
TEST_TIME_LIMIT = 120  # seconds per test (scaled); a backstop against hangs, not a wait


def pytest_report_header(config):
    return "pgburrow binaries: %s%s" % (harness.BIN, " (sanitizer build)" if harness.SANITIZER else "")


@pytest.fixture(scope="session")
def workroot():
    root = tempfile.mkdtemp(prefix="pgburrow-it-")
    # PostgreSQL runs as postgres and must traverse this directory.
    os.chmod(root, 0o755)
    yield root
    if os.environ.get("PGBURROW_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def binaries():
    for kind in ("relay", "agent"):
        p = os.path.join(harness.BIN, "pgburrow-" + kind)
        if not os.access(p, os.X_OK):
            pytest.fail("%s is missing (set PGBURROW_BIN, run make)" % p)
    return harness.BIN


@pytest.fixture(scope="session")
def certs(workroot):
    return Certs(os.path.join(workroot, "certs")).make()


@pytest.fixture(scope="session")
def pg(workroot):
    p = Postgres(os.path.join(workroot, "pg"))
    os.makedirs(p.root)
    os.chmod(p.root, 0o755)
    try:
        p.start()
        yield p
    finally:
        p.stop()


@pytest.fixture(autouse=True)
def time_limit():
    """Fail (instead of hanging the whole run) when a test exceeds its time limit."""
    limit = int(t(TEST_TIME_LIMIT))

    def on_alarm(signum, frame):
        raise pytest.fail.Exception("test exceeded its %ds time limit" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


class Burrow:
    """A relay and its agents for one test, plus client connection helpers."""

    def __init__(self, workdir, certs, pg):
        self.dir = workdir
        self.certs = certs
        self.pg = pg
        self.client_port = free_port()
        self.tunnel_port = free_port()
        self.daemons = []
        self.relay = None
        self.relay_ini = None
        self.relay_args = ()
        self.agents = {}
        self._n = 0

    def _logpath(self, name):
        self._n += 1
        return os.path.join(self.dir, "%02d-%s.log" % (self._n, name))

    # -- relay -----------------------------------------------------------------------------
    def write_relay_ini(self, routes=None, default_route="a", **keys):
        routes = DEFAULT_RELAY_ROUTES if routes is None else routes
        relay = {
            "name": "relay-it",
            "listen": "127.0.0.1:%d" % self.client_port,
            "tunnel_listen": "127.0.0.1:%d" % self.tunnel_port,
            "tls_cert": self.certs.relay_crt,
            "tls_key": self.certs.relay_key,
            "agent_ca": self.certs.ca,
            "log_level": "info",
        }
        if default_route:
            relay["default_route"] = default_route
        relay.update(keys)
        sections = [("relay", relay)]
        for name, agents in routes.items():
            # agents: a list of agent names, or a dict of [route NAME] keys whose "agents" is one
            route = dict(agents) if isinstance(agents, dict) else {"agents": agents}
            route["agents"] = ", ".join(route["agents"])
            sections.append(("route %s" % name, route))
        self.relay_ini = write_ini(os.path.join(self.dir, "relay.ini"), sections)
        return self.relay_ini

    def start_relay(self, routes=None, default_route="a", args=(), **keys):
        """keys: [relay] keys for relay.ini; args: extra command-line flags."""
        self.write_relay_ini(routes, default_route, **keys)
        self.relay_args = tuple(args)
        return self.restart_relay()

    def restart_relay(self):
        """Start the relay (again) with the current relay.ini; wait until it listens."""
        d = Daemon("relay", self.relay_ini, self._logpath("relay"), self.relay_args).start()
        self.daemons.append(d)
        self.relay = d
        d.wait_for_log("listening clients=", timeout=10)
        return d

    # -- agents ----------------------------------------------------------------------------
    def write_agent_ini(self, name="agent-a", routes=("a",), evil=False, targets=None, **keys):
        """targets: {route: (host, port)} instead of the test cluster's socket."""
        agent = {
            "relay": "127.0.0.1:%d" % self.tunnel_port,
            "relay_server_name": "localhost",
            "ca": self.certs.ca,
            "cert": self.certs.agent_crt(name, evil),
            "key": self.certs.agent_key(name, evil),
            "reconnect_min": "100ms",
            "reconnect_max": "1s",
            "log_level": "info",
        }
        agent.update(keys)
        sections = [("agent", agent)]
        for r in routes:
            host, port = (targets or {}).get(r, (self.pg.sockdir, self.pg.port))
            sections.append(("route %s" % r, {"host": host, "port": port}))
        path = os.path.join(self.dir, "%s%s.ini" % (name, "-evil" if evil else ""))
        return write_ini(path, sections)

    def start_agent(self, name="agent-a", routes=("a",), evil=False, wait=True, targets=None,
                    args=(), **keys):
        ini = self.write_agent_ini(name, routes, evil, targets, **keys)
        return self.restart_agent(name, ini, wait, args)

    def restart_agent(self, name="agent-a", ini=None, wait=True, args=None):
        """Start an agent (again); with wait, until both ends logged "tunnel up"."""
        if ini is None:
            ini = self.agents[name].config
        if args is None:
            args = self.agents[name].extra_args if name in self.agents else ()
        mark = self.relay.mark() if self.relay else 0
        d = Daemon("agent", ini, self._logpath(name), args).start()
        self.daemons.append(d)
        self.agents[name] = d
        if wait:
            d.wait_for_log("tunnel up relay=", timeout=10)
            self.relay.wait_for_log("tunnel up agent=%s " % name, timeout=10, since=mark)
        return d

    # -- clients ---------------------------------------------------------------------------
    def dsn(self, user="postgres", dbname="postgres", route=None, password=None, **extra):
        params = dict(host="localhost", hostaddr="127.0.0.1", port=self.client_port,
                      sslmode="verify-full", sslrootcert=self.certs.ca, user=user,
                      dbname=dbname, connect_timeout=int(t(10)))
        if route is not None:
            params["options"] = "-c pgburrow.route=%s" % route
        if password is not None:
            params["password"] = password
        params.update(extra)
        return psycopg.conninfo.make_conninfo(**params)

    def connect(self, **kw):
        return psycopg.connect(self.dsn(**kw), autocommit=True)

    def libpq_env(self, user="postgres", dbname="postgres"):
        env = dict(harness.DAEMON_ENV)
        env.update(PGHOST="localhost", PGHOSTADDR="127.0.0.1", PGPORT=str(self.client_port),
                   PGSSLMODE="verify-full", PGSSLROOTCERT=self.certs.ca, PGUSER=user,
                   PGDATABASE=dbname, PGCONNECT_TIMEOUT=str(int(t(10))))
        return env

    # -- teardown --------------------------------------------------------------------------
    def shutdown(self):
        problems = []
        died = {id(d): (not d.expected_exit and not d.alive()) for d in self.daemons}
        # Agents first, so that the relay's shutdown is not mixed with reconnect attempts.
        for d in sorted(self.daemons, key=lambda d: d.kind != "agent"):
            d.stop()
        for d in self.daemons:
            problems += d.problems(died[id(d)])
        return problems


@pytest.fixture
def burrow_env(request, workroot, certs, pg, binaries):
    """A Burrow with nothing started (tests that need special configurations)."""
    d = os.path.join(workroot, "tests", request.node.name.replace("/", "_")[:100])
    os.makedirs(d, exist_ok=True)
    b = Burrow(d, certs, pg)
    yield b
    problems = b.shutdown()
    if problems:
        pytest.fail("daemon problems:\n" + "\n".join(problems) + "\n" + "\n".join(
            "--- %s:\n%s" % (x.logpath, harness.tail(x.log(), 25)) for x in b.daemons),
            pytrace=False)


@pytest.fixture
def burrow(burrow_env):
    """A relay (routes a -> agent-a, b -> agent-b, default a) and agent-a serving route a."""
    burrow_env.start_relay()
    burrow_env.start_agent("agent-a", routes=("a",))
    return burrow_env
