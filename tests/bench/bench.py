#!/usr/bin/python3
"""pgburrow benchmark: direct PostgreSQL TLS vs a two-hop floor vs pgburrow vs `ssh -R`, in one run.

Starts its own PostgreSQL 15, pgburrow-relay + pgburrow-agent, two HAProxy TCP hops (the floor: the
cheapest two-hop relay, the client's TLS end to end inside) and a private sshd + `ssh -R` reverse
tunnel, all on loopback, then runs the commands of ../shared/perf-targets.md (the team's performance
targets, beside the checkout) against each path and prints absolute figures, the tunnel CPU per unit of work and the
ratios pgburrow/direct-TLS, pgburrow/floor and pgburrow/ssh-R. Then, separately, many concurrent
sessions on one tunnel (the agent in front of PostgreSQL through pgbouncer), 100 versus 10 000.
Raw outputs and results.json go to build/bench/, a bar chart of the ratios to build/bench/bench.png
when gnuplot is installed.

It is a benchmark, not a test: it exits 0 whatever the numbers are, and non-zero only when its
own set-up fails. Every wait is bounded; it stops only the processes it started, by pid, also on
Ctrl-C, SIGTERM or an exception. See tests/bench/README.md for the knobs (BENCH_* variables).

Standard library only (Debian's /usr/bin/python3).
"""

import json
import os
import platform
import pwd
import queue
import random
import resource
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "build", "bench")


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        sys.exit("bench: %s must be an integer, not %r" % (name, v))


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = env_int("BENCH_SECONDS", 2 if QUICK else 10)
LAT_SECONDS = env_int("BENCH_LATENCY_SECONDS", 2 if QUICK else 5)
COPY_ROWS = env_int("BENCH_COPY_ROWS", 20000 if QUICK else 1000000)
SESSIONS = env_int("BENCH_SESSIONS", 100 if QUICK else 1000)
RUNS = max(1, env_int("BENCH_RUNS", 1 if QUICK else 3))
SCALE = env_int("BENCH_SCALE", 10)
PATHS_WANTED = [p.strip() for p in os.environ.get("BENCH_PATHS", "direct,floor,pgburrow,ssh").split(",")
                if p.strip()]
# Many sessions on one tunnel (pgburrow only, through pgbouncer): BENCH_MANY_SESSIONS=0 turns it off.
MANY = max(0, env_int("BENCH_MANY_SESSIONS", 1000 if QUICK else 10000))
MANY_BASE = max(1, env_int("BENCH_MANY_BASE", 100))
MANY_SECONDS = max(1, env_int("BENCH_MANY_SECONDS", 5 if QUICK else 20))
MANY_INTERVAL_MS = max(10, env_int("BENCH_MANY_INTERVAL_MS", 1000))
MANY_PROCS = max(1, env_int("BENCH_MANY_PROCS", min(4, max(2, os.cpu_count() or 2))))
MANY_OPEN_CONCURRENCY = 32                       # opening handshakes in flight per client process
PGB_BIN = os.environ.get("PGBURROW_BIN") or os.path.join(ROOT, "bin")
PG_BIN = os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
SSH_CIPHER = "chacha20-poly1305@openssh.com"   # what the ssh -R baselines used
COPY_ROW_BYTES = 1001                            # repeat('x',1000) + newline in COPY text format
AGENT_NAME = "bench-agent"
ROUTE = "bench"
DB = "bench"
DB_USER = "postgres"
APP_NAME = "pgburrow-bench"

def unit_environment():
    """The Environment= settings of the shipped systemd units (deploy/systemd/): the bench runs the
    daemons as they run in production."""
    env = {}
    for name in ("pgburrow-relay.service", "pgburrow-agent.service"):
        try:
            with open(os.path.join(ROOT, "deploy", "systemd", name)) as f:
                for line in f:
                    if line.startswith("Environment=") and "=" in line[len("Environment="):]:
                        k, v = line[len("Environment="):].strip().split("=", 1)
                        env[k] = v
        except OSError:
            pass
    return env


DAEMON_ENV = unit_environment()

PATH_TITLES = {"direct": "direct TLS", "floor": "floor", "pgburrow": "pgburrow", "ssh": "ssh -R"}
PATH_ORDER = ("direct", "floor", "pgburrow", "ssh")
BASES = ("direct", "floor", "ssh")               # what pgburrow is compared with


class SetupError(Exception):
    """The benchmark cannot run (as opposed to a measurement that failed)."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind through the finally blocks like Ctrl-C does."""


def log(msg):
    print("[bench] " + msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: everything long-lived we start is recorded here (and in build/bench/pids.json, so
# that a run killed with SIGKILL can be cleaned up by the next one) and stopped by pid.

def proc_starttime(pid):
    """Field 22 of /proc/PID/stat: identifies a process even if its pid is later reused."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def proc_children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def proc_descendants(pid):
    kids, out, todo = proc_children_map(), [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class Procs:
    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.items = []   # dicts: name, popen, stop_signal, tree

    def _save(self):
        data = [{"name": i["name"], "pid": i["popen"].pid, "start": i["start"]}
                for i in self.items if i["popen"].poll() is None]
        with open(self.pidfile, "w") as f:
            json.dump(data, f)

    def start(self, name, argv, logpath, stop_signal=signal.SIGTERM, tree=False, piped=False, **kw):
        """tree=True: the process forks helpers (sshd); stop its descendants by pid too.
        piped=True: stdin and stdout are pipes to us (stderr goes to the log)."""
        logf = open(logpath, "ab")
        try:
            if piped:
                p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                     start_new_session=True, **kw)
            else:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, **kw)
        finally:
            logf.close()
        self.items.append({"name": name, "popen": p, "stop_signal": stop_signal, "tree": tree,
                           "start": proc_starttime(p.pid), "log": logpath})
        self._save()
        return p

    def get(self, name):
        for i in self.items:
            if i["name"] == name:
                return i["popen"]
        return None

    def stop(self, name, timeout=20):
        for i in list(self.items):
            if i["name"] != name:
                continue
            p = i["popen"]
            helpers = proc_descendants(p.pid) if i["tree"] else []
            helpers = [(h, proc_starttime(h)) for h in helpers]
            if p.poll() is None:
                try:
                    p.send_signal(i["stop_signal"])
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    log("%s (pid %d) did not stop in %ds, killing it" % (name, p.pid, timeout))
                    p.kill()
                    p.wait(10)
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            for h, st in helpers:
                if st is not None and proc_starttime(h) == st:
                    try:
                        os.kill(h, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            self.items.remove(i)
            self._save()

    def stop_all(self):
        for i in reversed(list(self.items)):
            try:
                self.stop(i["name"])
            except Exception as e:   # keep stopping the others
                log("stopping %s: %s" % (i["name"], e))


def kill_leftovers(pidfile):
    """Processes a previous run (killed before its cleanup) started, recognised by pid + start time."""
    try:
        with open(pidfile) as f:
            items = json.load(f)
    except (OSError, ValueError):
        return
    for i in items:
        pid, start = i.get("pid"), i.get("start")
        if pid and start is not None and proc_starttime(pid) == start:
            log("stopping leftover %s (pid %d) from an earlier run" % (i.get("name"), pid))
            try:
                os.kill(pid, signal.SIGINT if i.get("name") == "postgres" else signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if proc_starttime(pid) != start:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    os.unlink(pidfile)


# ---------------------------------------------------------------------------------------------
# Small helpers

def clean_env():
    """Our environment minus libpq variables (a sourced demo env must not redirect the bench)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


ENV = clean_env()


def run(argv, timeout, outpath=None, stdin=None, **kw):
    """Run a command to completion (killed after timeout). Returns (rc, output text, seconds)."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=kw.pop("env", ENV), **kw)
        rc, out = r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        rc, out = -1, (e.output or b"").decode(errors="replace") + "\n[bench] timed out after %ss\n" % timeout
    elapsed = time.monotonic() - t0
    if outpath:
        with open(outpath, "w") as f:
            f.write("$ %s\n%s" % (" ".join(argv), out))
    return rc, out, elapsed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, pred, timeout, proc=None, logpath=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise SetupError("%s: process exited with status %s%s" % (what, proc.returncode, log_tail(logpath)))
        time.sleep(0.05)
    raise SetupError("%s: not ready after %ds%s" % (what, timeout, log_tail(logpath)))


def log_tail(path, n=15):
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()[-n:]
    except OSError:
        return ""
    return "\n  last lines of %s:\n    %s" % (path, "\n    ".join(lines))


def file_contains(path, needle):
    try:
        with open(path, errors="replace") as f:
            return needle in f.read()
    except OSError:
        return False


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mkdir(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


def conninfo(port):
    return ("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=require gssencmode=disable "
            "connect_timeout=10 application_name=%s" % (port, DB, DB_USER, APP_NAME))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# Set-up: certificates, PostgreSQL, pgburrow, ssh

def make_certs(d):
    script = os.path.join(ROOT, "deploy", "certs", "mkcerts.sh")
    if not os.path.exists(script):
        raise SetupError("%s is missing" % script)
    for args in (["ca"], ["relay"], ["agent", AGENT_NAME]):
        rc, out, _ = run(["sh", script, d] + args, 60)
        if rc != 0:
            raise SetupError("mkcerts.sh %s failed:\n%s" % (" ".join(args), out))
    certs = {"ca": "ca.crt", "relay_crt": "relay.crt", "relay_key": "relay.key",
             "agent_crt": "agent-%s.crt" % AGENT_NAME, "agent_key": "agent-%s.key" % AGENT_NAME}
    for k, v in certs.items():
        certs[k] = os.path.join(d, v)
        if not os.path.exists(certs[k]):
            raise SetupError("mkcerts.sh did not produce %s" % certs[k])
    return certs


class Postgres:
    def __init__(self, procs, certs):
        self.procs = procs
        self.dir = os.path.join(OUT, "pg")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        # sun_path holds 107 bytes; fall back to a short private directory for deep checkouts.
        if len(os.path.join(self.sock, ".s.PGSQL.65535")) > 100:
            self.sock = tempfile.mkdtemp(prefix="pgb-bench-")
        self.port = free_port()
        self.certs = certs
        self.log = os.path.join(self.dir, "postgres.log")
        self.as_root = os.geteuid() == 0

    def _user_kw(self):
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self.as_root else {}

    def _chown(self, path):
        if self.as_root:
            shutil.chown(path, "postgres", "postgres")

    def setup(self):
        for b in ("initdb", "postgres", "pgbench", "psql"):
            if not os.access(os.path.join(PG_BIN, b), os.X_OK):
                raise SetupError("%s/%s not found (install postgresql-15)" % (PG_BIN, b))
        if self.as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise SetupError("no 'postgres' OS user (install postgresql-15)")
        mkdir(self.dir, 0o755)
        mkdir(self.sock, 0o755)
        self._chown(self.dir)
        self._chown(self.sock)
        initdb = [os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", DB_USER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync"]
        if self.as_root:
            initdb = ["runuser", "-u", "postgres", "--"] + initdb
        rc, out, _ = run(initdb, 180, os.path.join(self.dir, "initdb.out"), cwd=self.dir)
        if rc != 0:
            raise SetupError("initdb failed:\n%s" % out[-2000:])
        # Same certificate type as the relay shows (EC P-256), so that both TLS paths cost alike.
        for src, dst in ((self.certs["relay_crt"], "server.crt"), (self.certs["relay_key"], "server.key")):
            shutil.copyfile(src, os.path.join(self.data, dst))
            os.chmod(os.path.join(self.data, dst), 0o600)
            self._chown(os.path.join(self.data, dst))
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# pgburrow bench\n"
                    "listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "max_connections = 1100\nshared_buffers = 128MB\nfsync = off\n"
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                    "log_min_messages = warning\n" % (self.port, self.sock))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            # Every TCP path must be TLS to PostgreSQL (the ssh -R path included).
            f.write("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                    "hostnossl all all 127.0.0.1/32 reject\n")
        p = self.procs.start("postgres", [os.path.join(PG_BIN, "postgres"), "-D", self.data], self.log,
                             stop_signal=signal.SIGINT, cwd=self.dir, **self._user_kw())
        wait_for("PostgreSQL", lambda: os.path.exists(os.path.join(self.sock, ".s.PGSQL.%d" % self.port))
                 and self.sql("SELECT 1", db="postgres", check=False) == "1", 60, p, self.log)
        self.sql("CREATE DATABASE %s" % DB, db="postgres")
        log("pgbench -i -s %d ..." % SCALE)
        rc, out, secs = run([os.path.join(PG_BIN, "pgbench"), "-i", "-q", "-s", str(SCALE), "-h", self.sock,
                             "-p", str(self.port), "-U", DB_USER, DB], 900, os.path.join(self.dir, "pgbench-init.out"))
        if rc != 0:
            raise SetupError("pgbench -i failed:\n%s" % out[-2000:])
        self.sql("CREATE UNLOGGED TABLE bench_copy (t text)")
        self.sql("VACUUM ANALYZE")
        log("PostgreSQL ready on 127.0.0.1:%d and %s (pgbench -i took %.0fs)" % (self.port, self.sock, secs))

    def sql(self, query, db=DB, check=True, timeout=120):
        rc, out, _ = run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", self.sock, "-p", str(self.port), "-U", DB_USER, "-d", db, "-c", query], timeout)
        if rc != 0:
            if check:
                raise SetupError("psql %r failed: %s" % (query, out.strip()))
            return None
        return out.strip()

    def bench_backends(self):
        n = self.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'" % APP_NAME,
                     db="postgres", check=False)
        return int(n) if n and n.isdigit() else -1

    def wait_backends_gone(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bench_backends() == 0:
                return True
            time.sleep(0.2)
        return False


class Pgburrow:
    """pgburrow-relay + pgburrow-agent. The main pair serves the route from PostgreSQL's Unix socket;
    the many-sessions pair (tag "many") serves it from pgbouncer, with its session limits raised."""

    def __init__(self, procs, certs, pg, tag="", target=None, relay_extra="", agent_extra=""):
        self.procs, self.certs, self.pg = procs, certs, pg
        self.tag = tag
        self.dir = mkdir(os.path.join(OUT, "many" if tag else "pgburrow", "pgburrow" if tag else ""))
        self.port = free_port()
        self.tunnel_port = free_port()
        self.relay_log = os.path.join(self.dir, "relay.log")
        self.agent_log = os.path.join(self.dir, "agent.log")
        self.target = target or (pg.sock, pg.port)   # (host or socket directory, port) the agent serves
        self.relay_extra, self.agent_extra = relay_extra, agent_extra
        self.names = ("relay-" + tag, "agent-" + tag) if tag else ("relay", "agent")

    def setup(self):
        relay_bin = os.path.join(PGB_BIN, "pgburrow-relay")
        agent_bin = os.path.join(PGB_BIN, "pgburrow-agent")
        for b in (relay_bin, agent_bin):
            if not os.access(b, os.X_OK):
                raise SetupError("%s not found (run make)" % b)
        c = self.certs
        relay_ini = os.path.join(self.dir, "relay.ini")
        with open(relay_ini, "w") as f:
            f.write("[relay]\nname = bench-relay\nlisten = 127.0.0.1:%d\ntunnel_listen = 127.0.0.1:%d\n"
                    "default_route = %s\ntls_cert = %s\ntls_key = %s\nagent_ca = %s\nlog_level = info\n%s\n"
                    "[route %s]\nagents = %s\n"
                    % (self.port, self.tunnel_port, ROUTE, c["relay_crt"], c["relay_key"], c["ca"],
                       self.relay_extra, ROUTE, AGENT_NAME))
        agent_ini = os.path.join(self.dir, "agent.ini")
        with open(agent_ini, "w") as f:
            f.write("[agent]\nrelay = 127.0.0.1:%d\nrelay_server_name = localhost\nca = %s\ncert = %s\n"
                    "key = %s\nlog_level = info\n%s\n[route %s]\nhost = %s\nport = %d\n"
                    % (self.tunnel_port, c["ca"], c["agent_crt"], c["agent_key"], self.agent_extra, ROUTE,
                       self.target[0], self.target[1]))
        for path in (self.relay_log, self.agent_log):
            if os.path.exists(path):
                os.unlink(path)
        what = "pgburrow" + (" (%s)" % self.tag if self.tag else "")
        env = dict(os.environ, **DAEMON_ENV)
        relay = self.procs.start(self.names[0], [relay_bin, "-c", relay_ini], self.relay_log, cwd=self.dir,
                                 env=env)
        wait_for(what + " relay", lambda: file_contains(self.relay_log, "listening clients="), 20, relay,
                 self.relay_log)
        agent = self.procs.start(self.names[1], [agent_bin, "-c", agent_ini], self.agent_log, cwd=self.dir,
                                 env=env)
        wait_for(what + " agent tunnel", lambda: file_contains(self.relay_log, "tunnel up agent=%s" % AGENT_NAME)
                 or file_contains(self.relay_log, "tunnel refused"), 20, agent, self.agent_log)
        if file_contains(self.relay_log, "tunnel refused"):
            raise SetupError("relay refused the agent%s" % log_tail(self.relay_log))
        probe(self.port, what, self.relay_log, False)
        log("%s ready: relay pid %d on 127.0.0.1:%d, agent pid %d" % (what, relay.pid, self.port, agent.pid))

    def stop(self):
        self.procs.stop(self.names[1])
        self.procs.stop(self.names[0])

    def pids(self):
        r, a = self.procs.get(self.names[0]), self.procs.get(self.names[1])
        return {"relay": [r.pid] if r else [], "agent": [a.pid] if a else []}


class Ssh:
    """A private sshd on loopback and `ssh -N -R` from the DB side, like an ssh reverse tunnel.

    The client's TLS runs inside, end to end with PostgreSQL ("ssh -R, client TLS inside" in the
    baselines). The forward targets PostgreSQL's TCP port: `-R PORT:/path/.s.PGSQL.N` also works,
    but PostgreSQL answers SSLRequest with 'N' on a Unix socket, so sslmode=require would fail."""

    def __init__(self, procs, pg):
        self.procs, self.pg = procs, pg
        self.dir = os.path.join(OUT, "ssh")
        self.sshd_port = free_port()
        self.port = free_port()
        self.sshd_log = os.path.join(self.dir, "sshd.log")
        self.ssh_log = os.path.join(self.dir, "ssh.log")

    def setup(self):
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        for b in (sshd, shutil.which("ssh"), shutil.which("ssh-keygen")):
            if not b or not os.access(b, os.X_OK):
                raise SetupError("openssh-server / openssh-client not installed")
        if os.geteuid() != 0:
            raise SetupError("needs root (a private sshd logging in as root)")
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        mkdir(self.dir, 0o700)
        hostkey = os.path.join(self.dir, "host_ed25519")
        userkey = os.path.join(self.dir, "id_ed25519")
        for k in (hostkey, userkey):
            rc, out, _ = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgburrow-bench", "-f", k], 30)
            if rc != 0:
                raise SetupError("ssh-keygen failed: %s" % out)
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(userkey + ".pub", authorized)
        os.chmod(authorized, 0o600)
        known = os.path.join(self.dir, "known_hosts")
        with open(hostkey + ".pub") as f, open(known, "w") as k:
            k.write("[127.0.0.1]:%d %s\n" % (self.sshd_port, " ".join(f.read().split()[:2])))
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            # Root login by key only, on this private loopback instance only; no PAM, no passwords.
            # StrictModes off: the checkout's parent directories are not ours to judge.
            f.write("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n"
                    "UsePAM no\nPermitRootLogin prohibit-password\nAllowUsers root\n"
                    "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "StrictModes no\nAllowTcpForwarding remote\nGatewayPorts no\nX11Forwarding no\n"
                    "PermitTTY no\nCiphers %s\nLogLevel INFO\n"
                    % (self.sshd_port, hostkey, os.path.join(self.dir, "sshd.pid"), authorized, SSH_CIPHER))
        mkdir("/run/sshd", 0o755)   # sshd's privilege-separation directory
        rc, out, _ = run([sshd, "-t", "-f", config], 30)
        if rc != 0:
            raise SetupError("sshd -t rejected the config: %s" % out.strip())
        d = self.procs.start("sshd", [sshd, "-D", "-e", "-f", config], self.sshd_log, tree=True)
        wait_for("sshd", lambda: port_open(self.sshd_port), 20, d, self.sshd_log)
        argv = ["ssh", "-N", "-F", "/dev/null", "-i", userkey, "-p", str(self.sshd_port),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=" + known, "-o", "ExitOnForwardFailure=yes",
                "-o", "Ciphers=" + SSH_CIPHER, "-o", "Compression=no", "-o", "ControlMaster=no",
                "-o", "LogLevel=ERROR",
                "-R", "127.0.0.1:%d:127.0.0.1:%d" % (self.port, self.pg.port), "root@127.0.0.1"]
        c = self.procs.start("ssh", argv, self.ssh_log)
        wait_for("ssh -R", lambda: port_open(self.port), 20, c, self.ssh_log)
        probe(self.port, "ssh -R", self.sshd_log, True)
        log("ssh -R ready: sshd pid %d on 127.0.0.1:%d, ssh pid %d forwarding 127.0.0.1:%d" %
            (d.pid, self.sshd_port, c.pid, self.port))

    def pids(self):
        d, c = self.procs.get("sshd"), self.procs.get("ssh")
        return {"relay": ([d.pid] + proc_descendants(d.pid)) if d else [], "agent": [c.pid] if c else []}


class Floor:
    """The floor: the cheapest two-hop relay there is. Two HAProxy processes in TCP mode, client ->
    hop 1 -> hop 2 -> PostgreSQL's TCP port; the client's TLS runs end to end with PostgreSQL inside
    (as through ssh -R), so the hops only copy bytes: no crypto, no framing, no multiplexing.

    Like the relay and the agent: each hop is its own process with one thread (`nbthread 1`), no
    logging at all, TCP_NODELAY on every socket (HAProxy always sets it) and none of the
    tcp-smart-* packet savings (pgburrow does not use TCP_DEFER_ACCEPT or delayed ACKs either),
    no splice(): bytes pass through user space, as through any relay that must look at them."""

    def __init__(self, procs, pg):
        self.procs, self.pg = procs, pg
        self.dir = os.path.join(OUT, "floor")
        self.port = free_port()        # hop 1: what clients connect to
        self.hop2_port = free_port()

    def config(self, listen_port, to_port):
        maxconn = max(SESSIONS, 1000) * 2 + 256
        return ("# pgburrow bench: the two-hop floor\n"
                "global\n    nbthread 1\n    maxconn %d\n    # no 'log' line: nothing logged\n\n"
                "defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 1h\n"
                "    timeout server 1h\n    no option tcp-smart-accept\n    no option tcp-smart-connect\n"
                "    no option splice-auto\n\n"
                "frontend hop\n    bind 127.0.0.1:%d\n    default_backend next\n\n"
                "backend next\n    server next 127.0.0.1:%d\n" % (maxconn, listen_port, to_port))

    def setup(self):
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(haproxy, os.X_OK):
            raise SetupError("haproxy not installed (deploy/install-deps.sh bench)")
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        mkdir(self.dir)
        hops = (("floor-hop2", self.hop2_port, self.pg.port), ("floor-hop1", self.port, self.hop2_port))
        for name, listen_port, to_port in hops:   # hop 2 first: hop 1 forwards to it
            cfg = os.path.join(self.dir, name + ".cfg")
            logpath = os.path.join(self.dir, name + ".log")
            with open(cfg, "w") as f:
                f.write(self.config(listen_port, to_port))
            rc, out, _ = run([haproxy, "-c", "-q", "-f", cfg], 30)
            if rc != 0:
                raise SetupError("haproxy -c rejected %s: %s" % (cfg, out.strip()))
            # -db: stay in the foreground (no daemon, no master process): one process, our pid.
            h = self.procs.start(name, [haproxy, "-db", "-f", cfg], logpath, cwd=self.dir)
            wait_for(name, lambda: port_open(listen_port), 20, h, logpath)
        probe(self.port, "floor", os.path.join(self.dir, "floor-hop1.log"), True)
        log("floor ready: haproxy hop 1 pid %d on 127.0.0.1:%d -> hop 2 pid %d on 127.0.0.1:%d -> "
            "PostgreSQL 127.0.0.1:%d" % (self.procs.get("floor-hop1").pid, self.port,
                                         self.procs.get("floor-hop2").pid, self.hop2_port, self.pg.port))

    def pids(self):
        h1, h2 = self.procs.get("floor-hop1"), self.procs.get("floor-hop2")
        return {"relay": [h1.pid] if h1 else [], "agent": [h2.pid] if h2 else []}


def probe(port, what, logpath, backend_tls):
    """A real session through the path (bounded) with sslmode=require. backend_tls: PostgreSQL
    itself must see TLS (direct, ssh -R); through pgburrow the client's TLS ends at the relay and
    the agent reaches PostgreSQL over its Unix socket."""
    deadline = time.monotonic() + 20
    out = ""
    want = "ok:t" if backend_tls else "ok:"
    while time.monotonic() < deadline:
        rc, out, _ = run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", conninfo(port), "-c",
                          "SELECT 'ok:' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], 20)
        if rc == 0 and want in out:
            return
        time.sleep(0.3)
    raise SetupError("%s: no working session: %s%s" % (what, out.strip(), log_tail(logpath)))


# ---------------------------------------------------------------------------------------------
# Measurements. Each returns a dict of metric -> number (None when it failed) and never raises
# on a bad number; raw outputs go to build/bench/raw/runN/.

PGBENCH_TESTS = [
    ("tps_c1", ["-c", "1"]),
    ("tps_c16", ["-c", "16", "-j", "2"]),
    ("tps_c16_prep", ["-c", "16", "-j", "2", "-M", "prepared"]),
    ("tps_c64", ["-c", "64", "-j", "2"]),
]


def parse_pgbench(out):
    tps = tx = None
    for line in out.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
        elif line.startswith("number of transactions actually processed: "):
            tx = int(line.split(":")[1].split("/")[0])
    return tps, tx


def m_pgbench(port, args, rawdir, tag):
    """Returns (tps, transactions processed, error)."""
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-S", "-M", "simple"] + args + \
           ["-T", str(SECONDS), conninfo(port)]
    rc, out, _ = run(argv, SECONDS + 120, os.path.join(rawdir, tag + ".txt"))
    tps, tx = parse_pgbench(out)
    if rc == 0 and tx == 0:
        return None, None, ("pgbench processed 0 transactions in -T %d s (opening its connections took "
                            "the whole run? raise BENCH_SECONDS)" % SECONDS)
    if rc != 0 or tps is None:
        return None, None, "pgbench rc=%d: %s" % (rc, out.strip().splitlines()[-1:] if out.strip() else "")
    return tps, tx, None


def m_latency(port, rawdir, tag):
    """Median round trip of `SELECT 1` on one connection, from pgbench's per-transaction log."""
    script = os.path.join(rawdir, "select1.sql")
    with open(script, "w") as f:
        f.write("SELECT 1;\n")
    prefix = os.path.join(rawdir, tag + "-txlog")
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-c", "1", "-M", "simple", "-f", script, "-T",
            str(LAT_SECONDS), "-l", "--log-prefix=" + prefix, conninfo(port)]
    rc, out, _ = run(argv, LAT_SECONDS + 120, os.path.join(rawdir, tag + ".txt"), cwd=rawdir)
    lats = []
    for name in os.listdir(rawdir):
        if name.startswith(os.path.basename(prefix) + "."):
            with open(os.path.join(rawdir, name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lats.append(int(parts[2]))
            os.unlink(os.path.join(rawdir, name))   # tens of thousands of lines; keep only the summary
    if rc != 0 or not lats:
        return {}, "pgbench latency rc=%d" % rc
    lats.sort()
    res = {"lat_med_us": statistics.median(lats), "lat_p99_us": lats[min(len(lats) - 1, int(len(lats) * 0.99))]}
    with open(os.path.join(rawdir, tag + ".txt"), "a") as f:
        f.write("\n[bench] %d transactions, median %.1f us, p99 %d us\n" % (len(lats), res["lat_med_us"],
                                                                          res["lat_p99_us"]))
    return res, None


COPY_OUT_SQL = "COPY (SELECT repeat('x',1000) FROM generate_series(1,%d)) TO STDOUT"


def m_copy_out(port, rawdir, tag):
    argv = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo(port), "-c",
            COPY_OUT_SQL % COPY_ROWS]
    t0 = time.monotonic()
    with open(os.devnull, "wb") as null:
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=null, stderr=subprocess.PIPE,
                               timeout=max(120, COPY_ROWS / 2000), env=ENV)
            rc, err = p.returncode, p.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            rc, err = -1, "timed out"
    secs = time.monotonic() - t0
    with open(os.path.join(rawdir, tag + ".txt"), "w") as f:
        f.write("$ %s > /dev/null\nrc=%d seconds=%.3f\n%s" % (" ".join(argv), rc, secs, err))
    if rc != 0:
        return None, "COPY out rc=%d: %s" % (rc, err.strip()[-300:])
    return COPY_ROWS * COPY_ROW_BYTES / secs / 1e6, None


def m_copy_in(port, pg, rawdir, tag):
    """COPY FROM STDIN of the same rows into an unlogged table; psql reads them from a pipe."""
    pg.sql("TRUNCATE bench_copy")
    argv = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo(port), "-c",
            "COPY bench_copy FROM STDIN"]
    chunk_rows = 1000
    chunk = (b"x" * 1000 + b"\n") * chunk_rows
    timeout = max(120, COPY_ROWS / 2000)
    outpath = os.path.join(rawdir, tag + ".txt")
    t0 = time.monotonic()
    with open(outpath, "wb") as outf:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=outf, stderr=subprocess.STDOUT, env=ENV)

    def feed():
        try:
            left = COPY_ROWS
            while left > 0:
                n = min(left, chunk_rows)
                p.stdin.write(chunk if n == chunk_rows else chunk[:n * COPY_ROW_BYTES])
                left -= n
            p.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass   # psql died: its status says why

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        rc = -1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    writer.join(10)
    secs = time.monotonic() - t0
    with open(outpath, errors="replace") as f:
        out = f.read()
    with open(outpath, "w") as f:
        f.write("$ %s < (%d rows)\nrc=%d seconds=%.3f\n%s" % (" ".join(argv), COPY_ROWS, rc, secs, out))
    if rc != 0:
        return None, "COPY in rc=%d: %s" % (rc, out.strip()[-300:] or "timed out")
    n = pg.sql("SELECT count(*) FROM bench_copy", check=False)
    pg.sql("TRUNCATE bench_copy", check=False)
    if n != str(COPY_ROWS):
        return None, "COPY in stored %s rows, expected %d" % (n, COPY_ROWS)
    return COPY_ROWS * COPY_ROW_BYTES / secs / 1e6, None


def pg_session(port, ctx, timeout=30):
    """One PostgreSQL session as libpq sslmode=require opens it: SSLRequest, TLS, StartupMessage,
    until ReadyForQuery. Returns the TLS socket, left open and idle."""
    def recv_exact(s, n):
        buf = b""
        while len(buf) < n:
            b = s.recv(n - len(buf))
            if not b:
                raise ConnectionError("connection closed by peer")
            buf += b
        return buf

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(struct.pack("!II", 8, 80877103))
        answer = recv_exact(s, 1)
        if answer != b"S":
            raise ConnectionError("SSLRequest answered %r" % answer)
        t = ctx.wrap_socket(s)
    except BaseException:
        s.close()
        raise
    try:
        params = b"".join(k + b"\0" + v + b"\0" for k, v in (
            (b"user", DB_USER.encode()), (b"database", DB.encode()), (b"application_name", APP_NAME.encode()))) + b"\0"
        t.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        while True:
            typ = recv_exact(t, 1)
            body = recv_exact(t, struct.unpack("!I", recv_exact(t, 4))[0] - 4)
            if typ == b"Z":
                return t
            if typ == b"E":
                fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
                raise ConnectionError("%s %s" % (fields.get(b"C", b"?").decode(), fields.get(b"M", b"?").decode()))
            if typ == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise ConnectionError("server asks for authentication (the bench uses trust)")
    except BaseException:
        t.close()
        raise


def tunnel_rss(pids):
    out = {}
    for role, plist in pids.items():
        vals = [rss_kb(p) for p in plist]
        vals = [v for v in vals if v is not None]
        out[role] = sum(vals) if vals else None
    return out


def m_sessions(port, path, pg, pids_fn, rawdir):
    """Open SESSIONS idle sessions from this process (timed), sample the tunnel's RSS, close them."""
    res, err = {}, None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # sslmode=require, as in every conninfo of the bench
    if pids_fn:
        time.sleep(0.5)
        idle = tunnel_rss(pids_fn())
        res["relay_idle_kb"], res["agent_idle_kb"] = idle["relay"], idle["agent"]
    socks = []
    t0 = time.monotonic()
    try:
        for _ in range(SESSIONS):
            socks.append(pg_session(port, ctx))
    except (OSError, ConnectionError, ssl.SSLError) as e:
        err = "opened %d of %d sessions, then: %s" % (len(socks), SESSIONS, e)
    secs = time.monotonic() - t0
    res["sessions_open"] = len(socks)
    if not err:
        res["setup_ms"] = secs * 1000 / SESSIONS
    try:
        if pids_fn and not err:
            time.sleep(1.0)
            held = tunnel_rss(pids_fn())
            res["relay_held_kb"], res["agent_held_kb"] = held["relay"], held["agent"]
            for role in ("relay", "agent"):
                i, h = res.get(role + "_idle_kb"), res.get(role + "_held_kb")
                if i is not None and h is not None:
                    res[role + "_per_session_kb"] = (h - i) / SESSIONS
        # Every session still works after being held (catches a tunnel that dropped some).
        if socks and not err:
            alive = 0
            for t in socks:
                try:
                    t.sendall(b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 1\0")
                    buf = b""
                    while b"Z\0\0\0\x05" not in buf:
                        b = t.recv(4096)
                        if not b:
                            break
                        buf += b
                    alive += b"Z\0\0\0\x05" in buf
                except (OSError, ssl.SSLError):
                    pass
            res["sessions_alive"] = alive
            if alive != len(socks):
                err = "%d of %d held sessions no longer answer SELECT 1" % (len(socks) - alive, len(socks))
    finally:
        for t in socks:
            try:
                t.sendall(b"X\0\0\0\4")
            except (OSError, ssl.SSLError):
                pass
            t.close()
    if not pg.wait_backends_gone():
        err = (err + "; " if err else "") + "PostgreSQL backends of the sessions did not go away in 90s"
    elif pids_fn:
        # what the daemons keep once the run's load and its sessions are gone (the daemons
        # return freed memory after 1 s without closing connections: sample after 3 s)
        time.sleep(3.0)
        after = tunnel_rss(pids_fn())
        res["relay_after_kb"], res["agent_after_kb"] = after["relay"], after["agent"]
    with open(os.path.join(rawdir, "sessions-%s.txt" % path), "w") as f:
        f.write("%d sessions in %.3fs\n%s\nerror: %s\n" % (len(socks), secs, json.dumps(res, indent=1), err))
    return res, err


# ---------------------------------------------------------------------------------------------
# Many sessions on one tunnel: 100 vs 10 000 sessions, each running SELECT 1 once a second,
# through a pgburrow pair of its own whose agent serves the route from pgbouncer (transaction
# pooling), so that PostgreSQL's max_connections is not the limit. The sessions are held by
# MANY_PROCS client processes (this file run with --many-worker: asyncio + ssl + a minimal
# PostgreSQL wire client), driven over their stdin/stdout.

MANY_APP_NAME = APP_NAME + "-many"
MANY_TARGET = 10000                              # issue 10: sessions on one tunnel


class Pgbouncer:
    """pgbouncer on a Unix socket of its own (no TCP), transaction pooling, no per-connection logging."""

    def __init__(self, procs, pg, certs):
        self.procs, self.pg, self.certs = procs, pg, certs
        self.dir = os.path.join(OUT, "many", "pgbouncer")
        self.port = free_port()   # its Unix socket's number and its TLS port on 127.0.0.1
        self.sock = self.dir
        self.log = os.path.join(self.dir, "pgbouncer.log")
        self.as_root = os.geteuid() == 0

    def setup(self):
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(exe, os.X_OK):
            raise SetupError("pgbouncer not installed (deploy/install-deps.sh bench)")
        mkdir(self.dir, 0o755)
        if len(os.path.join(self.sock, ".s.PGSQL.65535")) > 100:
            self.sock = tempfile.mkdtemp(prefix="pgb-bench-bouncer-")
            os.chmod(self.sock, 0o755)
        if self.as_root:   # pgbouncer refuses to run as root
            for d in {self.dir, self.sock}:
                shutil.chown(d, "postgres", "postgres")
        # the baseline without a tunnel: clients with TLS straight to pgbouncer on 127.0.0.1
        tls = {}
        for k, name in (("relay_crt", "server.crt"), ("relay_key", "server.key")):
            tls[k] = os.path.join(self.dir, name)
            shutil.copyfile(self.certs[k], tls[k])
            os.chmod(tls[k], 0o600)
            if self.as_root:
                shutil.chown(tls[k], "postgres", "postgres")
        userlist = os.path.join(self.dir, "userlist.txt")
        with open(userlist, "w") as f:
            f.write('"%s" ""\n' % DB_USER)
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write("; pgburrow bench: many sessions on one tunnel\n"
                    "[databases]\n%s = host=%s port=%d dbname=%s user=%s\n\n"
                    "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir = %s\n"
                    "client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n"
                    "auth_type = trust\nauth_file = %s\npool_mode = transaction\n"
                    "max_client_conn = %d\ndefault_pool_size = 16\nreserve_pool_size = 0\n"
                    "ignore_startup_parameters = extra_float_digits,options\n"
                    "log_connections = 0\nlog_disconnections = 0\nstats_period = 3600\n"
                    % (DB, self.pg.sock, self.pg.port, DB, DB_USER, self.port, self.sock, tls["relay_crt"],
                       tls["relay_key"], userlist, MANY + 256))
        kw = {"user": "postgres", "group": "postgres", "extra_groups": []} if self.as_root else {}
        p = self.procs.start("pgbouncer", [exe, ini], self.log, cwd=self.dir, **kw)
        sockfile = os.path.join(self.sock, ".s.PGSQL.%d" % self.port)
        wait_for("pgbouncer", lambda: os.path.exists(sockfile), 20, p, self.log)

        def works():
            rc, out, _ = run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-h", self.sock, "-p", str(self.port),
                              "-U", DB_USER, "-d", DB, "-c", "SELECT 1"], 20)
            return rc == 0 and out.strip() == "1"
        wait_for("pgbouncer session", works, 30, p, self.log)
        log("pgbouncer ready: pid %d on %s (port %d), transaction pooling" % (p.pid, self.sock, self.port))

    def pids(self):
        p = self.procs.get("pgbouncer")
        return [p.pid] if p else []


class ManyClients:
    """MANY_PROCS worker processes; commands go to their stdin, one JSON answer line each comes back."""

    def __init__(self, procs, port, n, logdir, prefix="many-client"):
        self.procs, self.n = procs, n
        self.q = queue.Queue()
        self.names = []
        cfg = json.dumps({"port": port, "concurrency": MANY_OPEN_CONCURRENCY,
                          "interval": MANY_INTERVAL_MS / 1000.0, "app": MANY_APP_NAME})
        for i in range(n):
            name = "%s-%d" % (prefix, i)
            p = procs.start(name, [sys.executable, os.path.abspath(__file__), "--many-worker", cfg],
                            os.path.join(logdir, name + ".log"), piped=True)
            self.names.append(name)
            threading.Thread(target=self._reader, args=(i, p.stdout), daemon=True).start()

    def _reader(self, i, pipe):
        try:
            for line in pipe:
                self.q.put((i, line))
        except (OSError, ValueError):
            pass
        self.q.put((i, None))

    def pids(self):
        return [p.pid for p in (self.procs.get(n) for n in self.names) if p]

    def command(self, cmds, timeout):
        """cmds: worker index -> command line. Returns index -> answer dict ({"error": ...} when a
        worker did not answer in time or exited)."""
        answers = {}
        for i, c in cmds.items():
            p = self.procs.get(self.names[i])
            try:
                p.stdin.write((c + "\n").encode())
                p.stdin.flush()
            except (OSError, ValueError, AttributeError) as e:
                answers[i] = {"error": "worker %d: cannot send %r: %s" % (i, c, e)}
        deadline = time.monotonic() + timeout
        while len(answers) < len(cmds):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                i, line = self.q.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if i in answers:
                continue
            if line is None:
                answers[i] = {"error": "worker %d exited (see raw/many/%s.log)" % (i, self.names[i])}
                continue
            try:
                answers[i] = json.loads(line)
            except ValueError:
                answers[i] = {"error": "worker %d: unreadable answer %r" % (i, line[:200])}
        for i in cmds:
            answers.setdefault(i, {"error": "worker %d: no answer in %.0fs" % (i, timeout)})
        return answers

    def stop(self):
        for name in self.names:
            self.procs.stop(name, timeout=10)


def proc_cpu_s(pids):
    return sum(cpu_ticks(p) for p in pids) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def interesting_log_lines(path, n=5):
    words = ("refus", "too many", "limit", "fail", "error", "fatal", "warn", "53300", "shed")
    try:
        with open(path, errors="replace") as f:
            lines = [ln.rstrip() for ln in f if any(w in ln.lower() for w in words)]
    except OSError:
        return []
    return lines[-n:]


def quantile(sorted_xs, q):
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * q))] if sorted_xs else None


def many_phases(clients, nproc, counts, roles, rss_fn, idle, logs, res):
    """Opens the sessions of each count in turn on clients and loads them; appends one dict per count
    to res["phases"] (a shortfall stops there, with its reasons in res["why"]). rss_fn: the tunnel's
    RSS by role, or None (no tunnel); idle: its RSS before the sessions; logs: (name, path) to quote
    from when sessions are missing."""
    held = 0
    phases = []
    for want in counts:
        add = want - held
        split = {i: add // nproc + (1 if i < add % nproc else 0) for i in range(nproc)}
        log("many sessions: opening %d more (%d held) ..." % (add, held))
        t0 = time.monotonic()
        ans = clients.command({i: "open %d" % k for i, k in split.items()}, 60 + add * 0.05)
        open_s = time.monotonic() - t0
        held = sum(a.get("held", 0) for a in ans.values())
        open_errors = {}
        for a in ans.values():
            if a.get("error"):
                open_errors[a["error"]] = open_errors.get(a["error"], 0) + 1
            for msg, k in a.get("errors", {}).items():
                open_errors[msg] = open_errors.get(msg, 0) + k
        ph = {"wanted": want, "sessions": held, "open_s": open_s, "opened": add, "open_errors": open_errors,
              "tunnel": rss_fn is not None}
        log("many sessions: %d held (wanted %d), %.1fs to open %d%s" % (
            held, want, open_s, add, "" if not open_errors else "; errors: %s" % open_errors))
        time.sleep(1.0)
        rss_open = rss_fn() if rss_fn else {"relay": None, "agent": None}
        c0 = {r: proc_cpu_s(f()) for r, f in roles.items()}
        b0 = machine_busy()
        t0 = time.monotonic()
        ans = clients.command({i: "load %g" % MANY_SECONDS for i in range(nproc)}, MANY_SECONDS + 120)
        wall = time.monotonic() - t0
        b1 = machine_busy()
        c1 = {r: proc_cpu_s(f()) for r, f in roles.items()}
        rss = rss_fn() if rss_fn else {"relay": None, "agent": None}
        lats, qerr, stuck = [], {}, 0
        for a in ans.values():
            lats.extend(a.get("lats", []))
            stuck += a.get("stuck", 0)
            if a.get("error"):
                qerr[a["error"]] = qerr.get(a["error"], 0) + 1
            for msg, k in a.get("errors", {}).items():
                qerr[msg] = qerr.get(msg, 0) + k
        held = sum(a.get("held", 0) for a in ans.values())   # sessions that failed are dropped
        lats.sort()
        offered = ph["sessions"] * MANY_SECONDS * 1000.0 / MANY_INTERVAL_MS
        cpu = {r: c1[r] - c0[r] for r in roles}
        ph.update({
            "load_wall_s": wall, "queries": len(lats), "offered": offered,
            "qps": len(lats) / MANY_SECONDS, "offered_qps": offered / MANY_SECONDS,
            "lat_p50_us": quantile(lats, 0.50), "lat_p99_us": quantile(lats, 0.99),
            "lat_max_us": lats[-1] if lats else None, "query_errors": qerr, "stuck": stuck,
            "held_after_load": held,
            "relay_open_kb": rss_open["relay"], "agent_open_kb": rss_open["agent"],
            "relay_kb": rss["relay"], "agent_kb": rss["agent"],
            "cpu_s": cpu, "cpu_pct": {r: v * 100 / wall for r, v in cpu.items()},
            "machine_busy_pct": (b1[0] - b0[0]) * 100.0 / max(1, b1[1] - b0[1]),
            "tunnel_cpu_us_per_query": (cpu["relay"] + cpu["agent"]) * 1e6 / len(lats)
            if lats and "relay" in cpu else None,
        })
        for role in ("relay", "agent"):
            i, h = idle.get(role), ph.get(role + "_kb")
            ph[role + "_per_session_kb"] = (h - i) / ph["sessions"] if i is not None and h and ph["sessions"] else None
        log("many sessions: %d sessions%s: %.0f of %.0f SELECT 1/s, p50 %s µs, p99 %s µs%s, machine %.0f%% busy%s" % (
            ph["sessions"], "" if rss_fn else " without a tunnel", ph["qps"], ph["offered_qps"], ph["lat_p50_us"],
            ph["lat_p99_us"], ", relay %.1f MB, agent %.1f MB" % ((ph["relay_kb"] or 0) / 1024, (ph["agent_kb"] or 0) / 1024)
            if rss_fn else "", ph["machine_busy_pct"], "" if not qerr else "; errors: %s" % qerr))
        res["phases"].append(ph)
        phases.append(ph)
        if ph["sessions"] < want:
            res["why"].append("wanted %d sessions%s, %d opened: %s" % (
                want, "" if rss_fn else " without a tunnel", ph["sessions"],
                "; ".join("%s (×%d)" % (m, k) for m, k in open_errors.items()) or "no error reported"))
            for name, path in logs:
                for line in interesting_log_lines(path):
                    res["why"].append("%s log: %s" % (name, line[:300]))
            break
    ans = clients.command({i: "close" for i in range(nproc)}, 60)
    for a in ans.values():
        if a.get("error"):
            res["why"].append("closing: " + a["error"])
    return phases


def m_many(procs, certs, pg, rawdir):
    """Returns a dict for results.json and print_many(); never raises on a measurement.

    The same load runs twice: through pgburrow (relay + agent in front of pgbouncer), then with the
    largest count only, the clients' TLS straight to pgbouncer (no tunnel): what this machine does
    with that many sessions when pgburrow is not there, so that a latency the machine causes (the
    clients, pgbouncer and PostgreSQL sharing its cores) is not read as the tunnel's."""
    base = min(MANY_BASE, MANY)
    counts = [base, MANY] if MANY > base else [MANY]
    res = {"wanted": MANY, "base": base, "seconds": MANY_SECONDS, "interval_ms": MANY_INTERVAL_MS,
           "client_procs": MANY_PROCS, "phases": [], "error": None, "why": []}
    log("many sessions: %s sessions on one tunnel through pgbouncer, SELECT 1 every %d ms, %ds each; then %d "
        "without the tunnel" % (" then ".join(str(c) for c in counts), MANY_INTERVAL_MS, MANY_SECONDS, MANY))
    bouncer = pgb = clients = None
    limit = MANY + 1000
    try:
        bouncer = Pgbouncer(procs, pg, certs)
        pgb = Pgburrow(procs, certs, pg, tag="many", target=(bouncer.sock, bouncer.port),
                       relay_extra="max_sessions = %d\nmax_streams_per_tunnel = %d\nhandshake_rate = 0\n"
                                   "max_pending = 1024\nmax_pending_per_source = 1024\n" % (limit, limit),
                       agent_extra="max_streams_per_tunnel = %d\n" % min(limit, 100000))
        try:
            bouncer.setup()
            pgb.setup()
        except SetupError as e:
            res["error"] = "set-up failed: %s" % str(e).splitlines()[0]
            log("many sessions: " + res["error"])
            return res
        res["fd_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        time.sleep(0.5)
        idle = tunnel_rss(pgb.pids())
        res["relay_idle_kb"], res["agent_idle_kb"] = idle["relay"], idle["agent"]
        nproc = max(1, min(MANY_PROCS, counts[0]))

        def postgres_pids():
            p = pg.procs.get("postgres")
            return [p.pid] + proc_descendants(p.pid) if p else []

        clients = ManyClients(procs, pgb.port, nproc, rawdir)
        roles = {"relay": lambda: pgb.pids()["relay"], "agent": lambda: pgb.pids()["agent"],
                 "pgbouncer": bouncer.pids, "clients": clients.pids, "postgres": postgres_pids}
        done = many_phases(clients, nproc, counts, roles, lambda: tunnel_rss(pgb.pids()), idle,
                           (("relay", pgb.relay_log), ("agent", pgb.agent_log), ("pgbouncer", bouncer.log)), res)
        clients.stop()
        clients = None
        pgb.stop()   # its memory and CPU out of the way of the baseline
        pgb = None
        if len(done) == len(counts):
            clients = ManyClients(procs, bouncer.port, max(1, min(MANY_PROCS, MANY)), rawdir, prefix="many-direct")
            roles = {"pgbouncer": bouncer.pids, "clients": clients.pids, "postgres": postgres_pids}
            many_phases(clients, clients.n, [MANY], roles, None, {}, (("pgbouncer", bouncer.log),), res)
    except Exception as e:   # a measurement, not the bench's set-up: report and go on
        res["error"] = "%s: %s" % (type(e).__name__, e)
        log("many sessions: FAILED: %s" % res["error"])
    finally:
        if clients:
            clients.stop()
        if pgb:
            pgb.stop()
        if bouncer:
            procs.stop("pgbouncer")
            if bouncer.sock != bouncer.dir:
                shutil.rmtree(bouncer.sock, ignore_errors=True)
    tun = [ph for ph in res["phases"] if ph["tunnel"]]
    if len(tun) == len(counts) and tun[0]["lat_p99_us"] and tun[-1]["lat_p99_us"]:
        res["p99_ratio"] = tun[-1]["lat_p99_us"] / tun[0]["lat_p99_us"]
    direct = [ph for ph in res["phases"] if not ph["tunnel"]]
    if direct and direct[0]["lat_p99_us"] and tun and tun[-1]["lat_p99_us"] and tun[-1]["wanted"] == MANY:
        res["p99_vs_direct"] = tun[-1]["lat_p99_us"] / direct[0]["lat_p99_us"]
    with open(os.path.join(rawdir, "many.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def print_many(many):
    phases = many["phases"]
    title = ("many sessions on one tunnel: pgburrow relay + agent -> pgbouncer (transaction pooling) -> "
             "PostgreSQL; each session SELECT 1 every %d ms for %ds; %d client process(es)"
             % (many["interval_ms"], many["seconds"], many["client_procs"]))
    lines_out = [title]
    if many["wanted"] < MANY_TARGET:
        lines_out.append("scaled down: %d sessions instead of %d (BENCH_MANY_SESSIONS, BENCH_QUICK): "
                         "the session-count target is not judged" % (many["wanted"], MANY_TARGET))
    if many.get("error"):
        lines_out.append("many sessions: %s" % many["error"])
    if phases:
        cols = ["metric"] + [("%d sessions" if ph["tunnel"] else "%d, no tunnel") % ph["wanted"]
                             for ph in phases] + ["target"]
        last = max(i for i, ph in enumerate(phases) if ph["tunnel"]) if any(ph["tunnel"] for ph in phases) else 0

        def row(label, fn, target="", verdict=None):
            vals = []
            for ph in phases:
                try:
                    vals.append(fn(ph))
                except (TypeError, KeyError, ZeroDivisionError):
                    vals.append("—")
            t = ("%s %s" % (target, verdict or "")).strip() if target else ""
            return [label] + vals + [t]

        def per_session(role):
            v = phases[last].get(role + "_per_session_kb")
            return judge([(v, "<=", 32)]) if phases[last]["wanted"] == many["wanted"] else "n/a"

        p99r = many.get("p99_ratio")
        lines = [
            row("sessions held / wanted", lambda ph: "%d / %d" % (ph["sessions"], ph["wanted"]),
                "%d without error" % MANY_TARGET,
                "MISS" if phases[last]["sessions"] < phases[last]["wanted"] or phases[last]["query_errors"]
                or phases[last]["stuck"] else "ok" if many["wanted"] >= MANY_TARGET else "n/a"),
            row("  time to open them (s)", lambda ph: "%.1f" % ph["open_s"]),
            row("SELECT 1 done / offered per s", lambda ph: "%.0f / %.0f" % (ph["qps"], ph["offered_qps"])),
            row("  failed or stuck queries", lambda ph: "%d" % (sum(ph["query_errors"].values()) + ph["stuck"])),
            row("SELECT 1 p50 (µs)", lambda ph: fmt(ph["lat_p50_us"])),
            row("SELECT 1 p99 (µs)", lambda ph: fmt(ph["lat_p99_us"]),
                "≤2× the p99 at %d" % many["base"], judge([(p99r, "<=", 2.0)]) + (
                    "" if p99r is None else " (%.2f×)" % p99r)),
            row("  p99 through pgburrow / without it", lambda ph: fmt_ratio(many.get("p99_vs_direct"))
                if ph is phases[last] and ph["wanted"] == many["wanted"] else "—"),
            row("SELECT 1 max (µs)", lambda ph: fmt(ph["lat_max_us"])),
            row("relay RSS (MB, idle %s)" % fmt((many.get("relay_idle_kb") or 0) / 1024),
                lambda ph: fmt(ph["relay_kb"] / 1024)),
            row("  relay per session (KiB)", lambda ph: fmt(ph["relay_per_session_kb"]), "≤32 KiB", per_session("relay")),
            row("agent RSS (MB, idle %s)" % fmt((many.get("agent_idle_kb") or 0) / 1024),
                lambda ph: fmt(ph["agent_kb"] / 1024)),
            row("  agent per session (KiB)", lambda ph: fmt(ph["agent_per_session_kb"]), "≤32 KiB", per_session("agent")),
            row("relay / agent CPU (% of a core)", lambda ph: "%.0f / %.0f" % (ph["cpu_pct"]["relay"], ph["cpu_pct"]["agent"])),
            row("  tunnel CPU per SELECT 1 (µs)", lambda ph: fmt(ph["tunnel_cpu_us_per_query"])),
            row("pgbouncer / postgres / clients CPU (%)", lambda ph: "%.0f / %.0f / %.0f" % (
                ph["cpu_pct"]["pgbouncer"], ph["cpu_pct"]["postgres"], ph["cpu_pct"]["clients"])),
            row("machine busy (% of all cores)", lambda ph: "%.0f" % ph["machine_busy_pct"]),
        ]
        lines_out.append(render(cols, lines, left=(0, len(cols) - 1)))
    for w in many.get("why", []):
        lines_out.append("  " + w)
    text = "\n".join(lines_out)
    print(text)
    print()
    return text


def many_worker(cfg):
    """A client process of the many-sessions test. Commands on stdin, one JSON line answers each:
    `open K` opens K more sessions (at most cfg["concurrency"] handshakes at a time), `load S` runs
    SELECT 1 on every held session once per interval for S seconds (random phase per session) and
    returns every latency in µs, `close` ends the sessions (Terminate) and exits."""
    import asyncio

    port, interval = cfg["port"], cfg["interval"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # sslmode=require
    params = b"".join(k + b"\0" + v + b"\0" for k, v in (
        (b"user", DB_USER.encode()), (b"database", DB.encode()), (b"application_name", cfg["app"].encode()))) + b"\0"
    startup = struct.pack("!II", 8 + len(params), 196608) + params
    query = b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 1\0"
    sessions = []

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def errtext(e):
        return ("%s: %s" % (type(e).__name__, e))[:160]

    async def read_until_ready(reader):
        while True:
            hdr = await reader.readexactly(5)
            n = struct.unpack("!I", hdr[1:5])[0]
            body = await reader.readexactly(n - 4) if n > 4 else b""
            if hdr[:1] == b"Z":
                return
            if hdr[:1] == b"E":
                fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
                raise ConnectionError("%s %s" % (fields.get(b"C", b"?").decode(errors="replace"),
                                                 fields.get(b"M", b"?").decode(errors="replace")))
            if hdr[:1] == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise ConnectionError("server asks for authentication")

    async def open_one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(struct.pack("!II", 8, 80877103))
            answer = await reader.readexactly(1)
            if answer != b"S":
                raise ConnectionError("SSLRequest answered %r" % answer)
            await writer.start_tls(ctx)
            writer.write(startup)
            await read_until_ready(reader)
            return reader, writer
        except BaseException:
            writer.transport.abort()
            raise

    async def open_many(k):
        sem = asyncio.Semaphore(cfg["concurrency"])
        errors, state = {}, {"failed": 0}

        async def one():
            async with sem:
                if state["failed"] >= 50:   # the limit is reached: stop trying, report
                    errors["not tried after 50 failures"] = errors.get("not tried after 50 failures", 0) + 1
                    return
                try:
                    sessions.append(await asyncio.wait_for(open_one(), 30))
                except Exception as e:
                    state["failed"] += 1
                    errors[errtext(e)] = errors.get(errtext(e), 0) + 1
        await asyncio.gather(*(one() for _ in range(k)))
        emit({"held": len(sessions), "errors": errors})

    async def load(seconds):
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        end = start + seconds
        lats, errors, dead = [], {}, []

        async def one(s):
            reader, writer = s
            t = start + random.random() * interval
            try:
                while True:
                    d = t - loop.time()
                    if d > 0:
                        await asyncio.sleep(d)
                    if loop.time() >= end:
                        return
                    t0 = time.perf_counter()
                    writer.write(query)
                    await read_until_ready(reader)
                    lats.append(int((time.perf_counter() - t0) * 1e6))
                    t = max(t + interval, loop.time())   # behind schedule: no burst to catch up
            except Exception as e:
                errors[errtext(e)] = errors.get(errtext(e), 0) + 1
                dead.append(s)

        tasks = [asyncio.ensure_future(one(s)) for s in sessions]
        stuck = 0
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=seconds + 60)
            for t in pending:
                t.cancel()
            stuck = len(pending)
            if pending:
                await asyncio.wait(pending, timeout=5)
        for s in dead:
            sessions.remove(s)
            s[1].transport.abort()
        emit({"held": len(sessions), "lats": lats, "errors": errors, "stuck": stuck})

    async def close_all():
        for reader, writer in sessions:
            try:
                writer.write(b"X\0\0\0\4")
                writer.close()
            except Exception:
                writer.transport.abort()
        if sessions:
            await asyncio.wait([asyncio.ensure_future(w.wait_closed()) for _, w in sessions], timeout=20)

    async def main():
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break   # the bench went away
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "open":
                await open_many(int(arg))
            elif cmd == "load":
                await load(float(arg))
            elif cmd == "close":
                break
            else:
                emit({"error": "unknown command %r" % cmd})
        await close_all()
        emit({"closed": True})

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------------------------------------
# Report

def fmt(v, unit=""):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        s = "%.0f" % v
    elif abs(v) >= 100:
        s = "%.0f" % v
    elif abs(v) >= 10:
        s = "%.1f" % v
    else:
        s = "%.2f" % v
    return s + unit


def fmt_ratio(v):
    return "—" if v is None else "%.2f×" % v


def judge(parts):
    """parts: (value, op, threshold) with op '>=', '<=' or '<'. 'ok' when every part holds, 'MISS' when
    one fails, 'n/a' when nothing failed but something could not be measured."""
    verdict = "ok"
    for v, op, thr in parts:
        if v is None:
            verdict = "n/a" if verdict == "ok" else verdict
        elif not (v >= thr if op == ">=" else v <= thr if op == "<=" else v < thr):
            return "MISS"
    return verdict


def vs_floor_ssh(rat, v):
    return judge([(rat.get("floor"), ">=", 0.95), (rat.get("ssh"), ">=", 1.6)])


def vs_direct(x):
    return lambda rat, v: judge([(rat.get("direct"), ">=", x)])


def at_most(x):
    return lambda rat, v: judge([(v, "<=", x)])


def below(x):
    return lambda rat, v: judge([(v, "<", x)])


THR_TARGET = "≥0.95× floor, ≥1.6× ssh"

# key, label, ratio kind ("hi": pgburrow/x, throughput; "lo": x/pgburrow, latency, time or CPU;
# None: no ratio), target of issue 10 (text, check), long-term target against direct TLS (text, check).
# A check gets (ratios by base path, pgburrow's value) and answers ok / MISS / n/a.
ROWS = [
    ("tps_c1", "pgbench -S c1 (TPS)", "hi", THR_TARGET, vs_floor_ssh, "≥0.70× direct", vs_direct(0.70)),
    ("tps_c16", "pgbench -S c16 (TPS)", "hi", THR_TARGET, vs_floor_ssh, "≥0.85× direct", vs_direct(0.85)),
    ("tps_c16_prep", "pgbench -S c16 prepared (TPS)", "hi", THR_TARGET, vs_floor_ssh, "≥0.85× direct",
     vs_direct(0.85)),
    ("tps_c64", "pgbench -S c64 (TPS)", "hi", THR_TARGET, vs_floor_ssh, "≥0.85× direct", vs_direct(0.85)),
    ("copy_out_mbs", "COPY out (MB/s)", "hi", THR_TARGET, vs_floor_ssh, "≥0.85× direct", vs_direct(0.85)),
    ("copy_in_mbs", "COPY in (MB/s)", "hi", THR_TARGET, vs_floor_ssh, "≥0.85× direct", vs_direct(0.85)),
    ("lat_med_us", "SELECT 1 round trip, median (µs)", "lo", "", None, "", None),
    ("lat_added_us", "  added over direct TLS (µs)", None, "", None, "≤60 µs", at_most(60)),
    ("lat_over_floor_us", "  added over the floor (µs)", None, "≤15 µs", at_most(15), "", None),
    ("lat_p99_us", "SELECT 1 round trip, p99 (µs)", "lo", "", None, "", None),
    ("setup_ms", "open a session, mean of N (ms)", "lo", "", None, "", None),
    ("setup_added_ms", "  added over direct TLS (ms)", None, "", None, "≤1 ms", at_most(1)),
    ("cpu_us_per_tx", "tunnel CPU per tx, -S c16 (µs)", "lo", "≤25 µs", at_most(25), "", None),
    ("cpu_s_per_gb", "tunnel CPU per GB COPY out (s)", "lo", "≤1.2 s", at_most(1.2), "", None),
    ("relay_busy_pct", "relay CPU, busiest test (% of a core)", None, "", None, "", None),
    ("agent_busy_pct", "agent CPU, busiest test (% of a core)", None, "", None, "", None),
    ("relay_idle_mb", "relay RSS idle, after the run's load (MB)", None, "", None, "", None),
    ("relay_held_mb", "relay RSS with N sessions (MB)", None, "", None, "", None),
    ("relay_per_session_kb", "  relay per session (KiB)", None, "≤32 KiB", at_most(32), "", None),
    ("relay_after_mb", "relay RSS once they closed (MB)", None, "<8 MB", below(8), "", None),
    ("agent_idle_mb", "agent RSS idle, after the run's load (MB)", None, "", None, "", None),
    ("agent_held_mb", "agent RSS with N sessions (MB)", None, "", None, "", None),
    ("agent_per_session_kb", "  agent per session (KiB)", None, "≤32 KiB", at_most(32), "", None),
    ("agent_after_mb", "agent RSS once they closed (MB)", None, "<8 MB", below(8), "", None),
]
# Rows that describe a tunnel: no figure for direct TLS.
TUNNEL_ONLY = ("lat_added_us", "lat_over_floor_us", "setup_added_ms", "cpu_us_per_tx", "cpu_s_per_gb",
               "relay_busy_pct", "agent_busy_pct")


def derive(run_res):
    """Per run: add derived metrics (MB figures, differences against direct TLS and the floor in the
    same run, tunnel CPU per unit of work)."""
    for path, m in run_res.items():
        for role in ("relay", "agent"):
            for k in ("idle", "held", "after"):
                v = m.get("%s_%s_kb" % (role, k))
                m["%s_%s_mb" % (role, k)] = v / 1024 if v is not None else None
        for role in ("relay", "agent"):
            busy = [b[role] for b in m.get("busy_pct", {}).values() if role in b]
            m["%s_busy_pct" % role] = max(busy) if busy else None
        cpu = m.get("tunnel_cpu_s", {})
        tx = m.get("transactions", {}).get("tps_c16")
        m["cpu_us_per_tx"] = cpu["tps_c16"] * 1e6 / tx if tx and "tps_c16" in cpu else None
        gb = COPY_ROWS * COPY_ROW_BYTES / 1e9
        m["cpu_s_per_gb"] = (cpu["copy_out_mbs"] / gb if m.get("copy_out_mbs") is not None
                             and "copy_out_mbs" in cpu else None)
    d = run_res.get("direct", {})
    f = run_res.get("floor", {})
    for path, m in run_res.items():
        if path == "direct":
            continue
        for key, base, ref in (("lat_added_us", "lat_med_us", d), ("setup_added_ms", "setup_ms", d),
                               ("lat_over_floor_us", "lat_med_us", f)):
            if key == "lat_over_floor_us" and path == "floor":
                continue
            a, b = m.get(base), ref.get(base)
            m[key] = a - b if a is not None and b is not None else None


def ratio(a, b, higher_is_better):
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if higher_is_better else b / a


def summarize(runs, paths):
    """Median over runs of each figure, and median over runs of the per-run ratios pgburrow/x
    (throughput) or x/pgburrow (latency, time, CPU): > 1 means pgburrow is better."""
    summary = {}
    for key, label, kind, target, check, longterm, lcheck in ROWS:
        row = {p: median([r.get(p, {}).get(key) for r in runs]) for p in paths}
        rat = {}
        for base in BASES:
            rat[base] = None if kind is None else median(
                [ratio(r.get("pgburrow", {}).get(key), r.get(base, {}).get(key), kind == "hi") for r in runs])
        verdict = lverdict = ""
        if "pgburrow" in paths:
            verdict = check(rat, row.get("pgburrow")) if check else ""
            lverdict = lcheck(rat, row.get("pgburrow")) if lcheck else ""
        summary[key] = {"label": label, "values": row, "ratio_kind": kind,
                        "pgburrow/direct": rat["direct"], "pgburrow/floor": rat["floor"],
                        "pgburrow/ssh": rat["ssh"], "target": target, "verdict": verdict,
                        "longterm": longterm, "longterm_verdict": lverdict}
    return summary


def render(cols, lines, left=(0,)):
    widths = [max(len(r[i]) for r in lines + [cols]) for i in range(len(cols))]
    sep = "  "
    out = [sep.join(c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cols)),
           sep.join("-" * w for w in widths)]
    for r in lines:
        out.append(sep.join(c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def print_table(summary, paths, skipped):
    cols = ["metric"] + [PATH_TITLES[p] for p in PATH_ORDER] + ["pgb/direct", "pgb/floor", "pgb/ssh",
                                                                 "target (issue 10)", "long-term"]
    lines = []
    for key, label, kind, target, check, longterm, lcheck in ROWS:
        s = summary[key]
        label = label.replace("N", str(SESSIONS)) if "N sessions" in label or "of N" in label else label
        vals = []
        for p in PATH_ORDER:
            if p not in paths:
                vals.append("skipped")
            elif p == "direct" and (key.startswith(("relay_", "agent_")) or key in TUNNEL_ONLY):
                vals.append("—")
            elif p == "floor" and key == "lat_over_floor_us":
                vals.append("—")
            else:
                vals.append(fmt(s["values"].get(p)))
        tgt = ("%s %s" % (target, s["verdict"])).strip() if target else ""
        lt = ("%s %s" % (longterm, s["longterm_verdict"])).strip() if longterm else ""
        lines.append([label] + vals + [fmt_ratio(s["pgburrow/direct"]), fmt_ratio(s["pgburrow/floor"]),
                                        fmt_ratio(s["pgburrow/ssh"]), tgt, lt])
    table = render(cols, lines, left=(0, 8, 9))
    print()
    print("pgburrow benchmark: %d run(s), medians; ratios are pgburrow/x per run (>1 = pgburrow better; "
          "for latency, time and CPU x/pgburrow), then the median" % RUNS)
    print("pgbench -T %ds, latency -T %ds, COPY %d rows (%.0f MB), %d sessions%s" % (
        SECONDS, LAT_SECONDS, COPY_ROWS, COPY_ROWS * COPY_ROW_BYTES / 1e6, SESSIONS, ", QUICK" if QUICK else ""))
    print("floor = two HAProxy TCP hops, client TLS end to end; relay/agent rows: floor = hop 1 / hop 2, "
          "ssh -R = sshd / ssh; tunnel CPU = utime+stime of both")
    if DAEMON_ENV:
        print("pgburrow daemons run with the systemd units' environment: %s" % " ".join(
            "%s=%s" % kv for kv in sorted(DAEMON_ENV.items())))
    for p, why in skipped.items():
        print("%s: skipped: %s" % (PATH_TITLES[p], why))
    print(table)
    print()
    return table


PLOT_SERIES = (("direct", "pgburrow / direct TLS", "#4477aa"), ("floor", "pgburrow / floor (2× HAProxy)", "#228833"),
               ("ssh", "pgburrow / ssh -R", "#ee7733"))


def plot(summary, paths):
    """Bar chart of the ratios (higher is better) to build/bench/bench.png, if gnuplot exists."""
    gp = shutil.which("gnuplot")
    if "pgburrow" not in paths:
        log("pgburrow not measured: no bench.png")
        return
    if not gp:
        log("gnuplot not installed: no bench.png")
        return
    series = [(i, b, t, c) for i, (b, t, c) in enumerate(PLOT_SERIES) if b in paths]
    if not series:
        log("nothing to compare pgburrow with: no bench.png")
        return
    keys = ["tps_c1", "tps_c16", "tps_c16_prep", "tps_c64", "copy_out_mbs", "copy_in_mbs", "lat_med_us",
            "setup_ms", "cpu_us_per_tx", "cpu_s_per_gb"]
    names = {"tps_c1": "-S c1", "tps_c16": "-S c16", "tps_c16_prep": "-S c16 prep", "tps_c64": "-S c64",
             "copy_out_mbs": "COPY out", "copy_in_mbs": "COPY in", "lat_med_us": "1/latency",
             "setup_ms": "1/session setup", "cpu_us_per_tx": "1/CPU per tx", "cpu_s_per_gb": "1/CPU per GB"}
    dat = os.path.join(OUT, "bench-ratios.dat")
    with open(dat, "w") as f:
        f.write("# metric %s (NaN = not measured)\n" % " ".join("pgburrow/" + b for b, _, _ in PLOT_SERIES))
        for k in keys:
            vals = [summary[k]["pgburrow/" + b] for b, _, _ in PLOT_SERIES]
            f.write('"%s" %s\n' % (names[k], " ".join("NaN" if v is None else "%.4f" % v for v in vals)))
    png = os.path.join(OUT, "bench.png")
    term = "pngcairo size 1200,600 font 'sans,10'"
    rc, out, _ = run([gp, "-e", "set terminal"], 20)
    if "pngcairo" not in out:
        term = "png size 1200,600"
    # Only the paths measured (a column with no valid point stops gnuplot).
    n = len(series)
    width = 1.0 / (n + 1)   # clustered histogram, gap 1: bar j of a cluster sits at $0 + (j - (n-1)/2) * width
    plots = []
    for j, (i, base, title, colour) in enumerate(series):
        plots.append("'%s' using (clip($%d))%s title '%s' lc rgb '%s'" % (
            dat if j == 0 else "", i + 2, ":xtic(1)" if j == 0 else "", title, colour))
    for j, (i, base, title, colour) in enumerate(series):
        plots.append("'' using ($0%+.4f):(clip($%d)):(sprintf('%%.2f',$%d)) with labels offset 0,0.7 font ',7' "
                     "notitle" % ((j - (n - 1) / 2.0) * width, i + 2, i + 2))
    script = os.path.join(OUT, "bench.gp")
    with open(script, "w") as f:
        f.write("""set terminal %(term)s
set output '%(png)s'
set title 'pgburrow vs direct TLS, the two-hop floor and ssh -R (ratios, higher is better; %(runs)d run(s), %(date)s)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:%(ymax)s]
set grid ytics
set key above horizontal
set ylabel 'ratio (bars above %(ymax)s are clipped; the label gives the value)'
set xtics rotate by -20
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'black' dt 2
set arrow from graph 0, first 0.95 to graph 1, first 0.95 nohead lc rgb '#228833' dt 3
set arrow from graph 0, first 0.85 to graph 1, first 0.85 nohead lc rgb 'red' dt 3
set arrow from graph 0, first 1.6 to graph 1, first 1.6 nohead lc rgb '#ee7733' dt 3
clip(v) = v > %(ymax)s ? %(ymax)s : v
plot %(plots)s
""" % {"term": term, "png": png, "runs": RUNS, "date": time.strftime("%Y-%m-%d"), "ymax": 3,
       "plots": ", \\\n     ".join(plots)})
    rc, out, _ = run([gp, script], 60, os.path.join(OUT, "gnuplot.out"))
    if rc == 0 and os.path.exists(png):
        log("plot: %s" % png)
    else:
        log("gnuplot failed (see %s)" % os.path.join(OUT, "gnuplot.out"))
        if os.path.exists(png):
            os.unlink(png)


# ---------------------------------------------------------------------------------------------

def raise_fd_limit():
    """N sessions need N sockets here, in the relay, the agent, pgbouncer and the client processes
    (children inherit this). As root the hard limit is raised too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(max(SESSIONS, MANY) * 2 + 4096, 8192)
    try:
        if hard != resource.RLIM_INFINITY and hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        elif soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def measure_run(run_no, targets, pg, rawdir):
    """One run: every test on every path, interleaved (test by test) so drift hits all paths alike."""
    res = {p: {} for p in targets}
    errors = []
    order = list(targets)
    k = run_no % len(order)
    order = order[k:] + order[:k]   # rotate which path goes first from run to run

    def note(path, what, err):
        if err:
            errors.append({"run": run_no + 1, "path": path, "test": what, "error": err})
            log("  %s %s: FAILED: %s" % (PATH_TITLES[path], what, err))

    def cpu_mark(path):
        """CPU ticks per role (relay, agent) so far, and the time."""
        pids_fn = targets[path][1]
        ticks = {role: sum(cpu_ticks(p) for p in plist) for role, plist in pids_fn().items()} if pids_fn else {}
        return ticks, time.monotonic()

    def cpu_note(path, what, before):
        if not targets[path][1]:
            return
        (t0, w0), (t1, w1) = before, cpu_mark(path)
        hz = os.sysconf("SC_CLK_TCK")
        res[path].setdefault("tunnel_cpu_s", {})[what] = sum(t1[r] - t0.get(r, 0) for r in t1) / hz
        # how busy each daemon's one event loop was: near 100 % it caps the path (workers)
        if w1 > w0:
            res[path].setdefault("busy_pct", {})[what] = {r: (t1[r] - t0.get(r, 0)) * 100 / hz / (w1 - w0)
                                                          for r in t1}

    for key, args in PGBENCH_TESTS:
        for path in order:
            port = targets[path][0]
            c0 = cpu_mark(path)
            v, tx, err = m_pgbench(port, args, rawdir, "%s-%s" % (key, path))
            cpu_note(path, key, c0)
            res[path][key] = v
            res[path].setdefault("transactions", {})[key] = tx
            note(path, key, err)
            if v is not None:
                log("run %d: %-38s %-10s %8.0f tps" % (run_no + 1, "pgbench -S " + " ".join(args), PATH_TITLES[path], v))
    for path in order:
        m, err = m_latency(targets[path][0], rawdir, "latency-%s" % path)
        res[path].update(m)
        note(path, "latency", err)
        if m:
            log("run %d: SELECT 1 latency %-10s median %.0f µs, p99 %d µs" % (run_no + 1, PATH_TITLES[path],
                m["lat_med_us"], m["lat_p99_us"]))
    for what, fn in (("copy_out_mbs", lambda port, tag: m_copy_out(port, rawdir, tag)),
                     ("copy_in_mbs", lambda port, tag: m_copy_in(port, pg, rawdir, tag))):
        for path in order:
            c0 = cpu_mark(path)
            v, err = fn(targets[path][0], "%s-%s" % (what, path))
            cpu_note(path, what, c0)
            res[path][what] = v
            note(path, what, err)
            if v is not None:
                log("run %d: %-12s %-10s %8.1f MB/s" % (run_no + 1, what.split("_mbs")[0].replace("_", " "),
                                                       PATH_TITLES[path], v))
    # Last, after every load of the run: the sessions, then the memory once they are gone.
    for path in order:
        port, pids_fn = targets[path]
        log("run %d: %s: %d sessions ..." % (run_no + 1, PATH_TITLES[path], SESSIONS))
        m, err = m_sessions(port, path, pg, pids_fn, rawdir)
        res[path].update(m)
        note(path, "sessions", err)
        if m.get("setup_ms") is not None:
            log("  %s: %.2f ms/session%s" % (PATH_TITLES[path], m["setup_ms"],
                "" if m.get("relay_held_kb") is None else ", RSS relay %.1f→%.1f MB agent %.1f→%.1f MB" % (
                    m["relay_idle_kb"] / 1024, m["relay_held_kb"] / 1024, m["agent_idle_kb"] / 1024,
                    m["agent_held_kb"] / 1024)
                + ("" if m.get("relay_after_kb") is None else ", after they closed relay %.1f MB agent %.1f MB"
                   % (m["relay_after_kb"] / 1024, m["agent_after_kb"] / 1024))))
    derive(res)
    return res, errors


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    unknown = [p for p in PATHS_WANTED if p not in PATH_TITLES]
    if unknown:
        sys.exit("bench: BENCH_PATHS: unknown path(s) %s (use direct,floor,pgburrow,ssh)" % ",".join(unknown))
    mkdir(OUT)
    pidfile = os.path.join(OUT, "pids.json")
    kill_leftovers(pidfile)
    for d in ("pg", "pgburrow", "ssh", "floor", "many", "raw", "certs"):
        shutil.rmtree(os.path.join(OUT, d), ignore_errors=True)
    for f in ("results.json", "bench.png", "table.txt"):
        if os.path.exists(os.path.join(OUT, f)):
            os.unlink(os.path.join(OUT, f))
    raise_fd_limit()
    procs = Procs(pidfile)
    skipped = {p: "not in BENCH_PATHS" for p in PATH_TITLES if p not in PATHS_WANTED}
    started = time.time()
    try:
        log("QUICK mode" if QUICK else "full mode (BENCH_QUICK=1 for a smoke test)")
        certs = make_certs(mkdir(os.path.join(OUT, "certs"), 0o700))
        pg = Postgres(procs, certs)
        pg.setup()
        targets = {}   # path -> (port, pids function or None)
        if "direct" in PATHS_WANTED:
            probe(pg.port, "direct TLS", pg.log, True)
            targets["direct"] = (pg.port, None)
        if "floor" in PATHS_WANTED:
            fl = Floor(procs, pg)
            try:
                fl.setup()
                targets["floor"] = (fl.port, fl.pids)
            except SetupError as e:
                skipped["floor"] = str(e).splitlines()[0]
                print("floor: skipped: %s" % skipped["floor"], flush=True)
                procs.stop("floor-hop1")
                procs.stop("floor-hop2")
        if "pgburrow" in PATHS_WANTED:
            pgb = Pgburrow(procs, certs, pg)
            pgb.setup()   # pgburrow is what we measure: its set-up failing fails the bench
            targets["pgburrow"] = (pgb.port, pgb.pids)
        if "ssh" in PATHS_WANTED:
            sh = Ssh(procs, pg)
            try:
                sh.setup()
                targets["ssh"] = (sh.port, sh.pids)
            except SetupError as e:
                skipped["ssh"] = str(e).splitlines()[0]
                print("ssh -R: skipped: %s" % skipped["ssh"], flush=True)
                procs.stop("ssh")
                procs.stop("sshd")
        if not targets:
            raise SetupError("no path to measure")
        runs, errors = [], []
        for i in range(RUNS):
            rawdir = mkdir(os.path.join(OUT, "raw", "run%d" % (i + 1)))
            r, e = measure_run(i, targets, pg, rawdir)
            runs.append(r)
            errors.extend(e)
        paths = [p for p in PATH_ORDER if p in targets]
        many = None
        if MANY and "pgburrow" in targets:
            many = m_many(procs, certs, pg, mkdir(os.path.join(OUT, "raw", "many")))
        elif MANY:
            log("many sessions: skipped (pgburrow not in BENCH_PATHS)")
        summary = summarize(runs, paths)
        table = print_table(summary, paths, skipped)
        if many is not None:
            table += "\n\n" + print_many(many)
        if errors:
            print("%d measurement(s) failed (see build/bench/results.json and raw/):" % len(errors))
            for e in errors:
                print("  run %d %s %s: %s" % (e["run"], PATH_TITLES[e["path"]], e["test"], e["error"]))
        with open(os.path.join(OUT, "table.txt"), "w") as f:
            f.write(table + "\n")
        results = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds_total": round(time.time() - started),
            "settings": {"quick": QUICK, "runs": RUNS, "pgbench_seconds": SECONDS, "latency_seconds": LAT_SECONDS,
                         "copy_rows": COPY_ROWS, "sessions": SESSIONS, "scale": SCALE, "ssh_cipher": SSH_CIPHER,
                         "many_sessions": MANY, "many_base": MANY_BASE, "many_seconds": MANY_SECONDS,
                         "many_interval_ms": MANY_INTERVAL_MS, "many_procs": MANY_PROCS},
            "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "paths": paths, "skipped": skipped, "runs": runs, "summary": summary, "errors": errors,
            "many": many,
        }
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        plot(summary, paths)
        log("raw outputs and results.json in %s (%.0fs)" % (OUT, time.time() - started))
        return 0
    except SetupError as e:
        print("bench: set-up failed: %s" % e, file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("bench: interrupted, stopping what it started", file=sys.stderr, flush=True)
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--many-worker":
        sys.exit(many_worker(json.loads(sys.argv[2])))
    sys.exit(main())
