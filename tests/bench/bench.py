#!/usr/bin/python3
"""pgburrow benchmark: direct PostgreSQL TLS vs pgburrow vs `ssh -R`, side by side in one run.

Starts its own PostgreSQL 15, pgburrow-relay + pgburrow-agent, and a private sshd + `ssh -R`
reverse tunnel, all on loopback, then runs the commands of /work/shared/perf-targets.md against
each path and prints absolute figures and the ratios pgburrow/direct-TLS and pgburrow/ssh-R.
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
RUNS = max(1, env_int("BENCH_RUNS", 1))
SCALE = env_int("BENCH_SCALE", 10)
PATHS_WANTED = [p.strip() for p in os.environ.get("BENCH_PATHS", "direct,pgburrow,ssh").split(",")
                if p.strip()]
PGB_BIN = os.environ.get("PGBURROW_BIN") or os.path.join(ROOT, "bin")
PG_BIN = os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
SSH_CIPHER = "chacha20-poly1305@openssh.com"   # what the ssh -R baselines used
COPY_ROW_BYTES = 1001                            # repeat('x',1000) + newline in COPY text format
AGENT_NAME = "bench-agent"
ROUTE = "bench"
DB = "bench"
DB_USER = "postgres"
APP_NAME = "pgburrow-bench"

PATH_TITLES = {"direct": "direct TLS", "pgburrow": "pgburrow", "ssh": "ssh -R"}


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

    def start(self, name, argv, logpath, stop_signal=signal.SIGTERM, tree=False, **kw):
        """tree=True: the process forks helpers (sshd); stop its descendants by pid too."""
        logf = open(logpath, "ab")
        try:
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
    def __init__(self, procs, certs, pg):
        self.procs, self.certs, self.pg = procs, certs, pg
        self.dir = mkdir(os.path.join(OUT, "pgburrow"))
        self.port = free_port()
        self.tunnel_port = free_port()
        self.relay_log = os.path.join(self.dir, "relay.log")
        self.agent_log = os.path.join(self.dir, "agent.log")

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
                    "default_route = %s\ntls_cert = %s\ntls_key = %s\nagent_ca = %s\nlog_level = info\n\n"
                    "[route %s]\nagents = %s\n"
                    % (self.port, self.tunnel_port, ROUTE, c["relay_crt"], c["relay_key"], c["ca"],
                       ROUTE, AGENT_NAME))
        agent_ini = os.path.join(self.dir, "agent.ini")
        with open(agent_ini, "w") as f:
            f.write("[agent]\nrelay = 127.0.0.1:%d\nrelay_server_name = localhost\nca = %s\ncert = %s\n"
                    "key = %s\nlog_level = info\n\n[route %s]\nhost = %s\nport = %d\n"
                    % (self.tunnel_port, c["ca"], c["agent_crt"], c["agent_key"], ROUTE, self.pg.sock,
                       self.pg.port))
        for path in (self.relay_log, self.agent_log):
            if os.path.exists(path):
                os.unlink(path)
        relay = self.procs.start("relay", [relay_bin, "-c", relay_ini], self.relay_log, cwd=self.dir)
        wait_for("pgburrow-relay", lambda: file_contains(self.relay_log, "listening clients="), 20, relay,
                 self.relay_log)
        agent = self.procs.start("agent", [agent_bin, "-c", agent_ini], self.agent_log, cwd=self.dir)
        wait_for("pgburrow-agent tunnel", lambda: file_contains(self.relay_log, "tunnel up agent=%s" % AGENT_NAME)
                 or file_contains(self.relay_log, "tunnel refused"), 20, agent, self.agent_log)
        if file_contains(self.relay_log, "tunnel refused"):
            raise SetupError("relay refused the agent%s" % log_tail(self.relay_log))
        probe(self.port, "pgburrow", self.relay_log, False)
        log("pgburrow ready: relay pid %d on 127.0.0.1:%d, agent pid %d" % (relay.pid, self.port, agent.pid))

    def pids(self):
        r, a = self.procs.get("relay"), self.procs.get("agent")
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
    tps = lat = None
    for line in out.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
        elif line.startswith("latency average = "):
            lat = float(line.split()[3])
    return tps, lat


def m_pgbench(port, args, rawdir, tag):
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-S", "-M", "simple"] + args + \
           ["-T", str(SECONDS), conninfo(port)]
    rc, out, _ = run(argv, SECONDS + 120, os.path.join(rawdir, tag + ".txt"))
    tps, lat = parse_pgbench(out)
    if rc != 0 or tps is None:
        return None, "pgbench rc=%d: %s" % (rc, out.strip().splitlines()[-1:] if out.strip() else "")
    return tps, None


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
    with open(os.path.join(rawdir, "sessions-%s.txt" % path), "w") as f:
        f.write("%d sessions in %.3fs\n%s\nerror: %s\n" % (len(socks), secs, json.dumps(res, indent=1), err))
    return res, err


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


# (key, label, unit, higher_is_better, target text, target check on (ratio_direct, ratio_ssh, value))
ROWS = [
    ("tps_c1", "pgbench -S c1 (TPS)", "", True, "≥0.70× direct", lambda rd, rs, v: rd is not None and rd >= 0.70),
    ("tps_c16", "pgbench -S c16 (TPS)", "", True, "≥0.85× direct, ≥1.6× ssh",
     lambda rd, rs, v: rd is not None and rd >= 0.85 and (rs is None or rs >= 1.6)),
    ("tps_c16_prep", "pgbench -S c16 prepared (TPS)", "", True, "≥0.85× direct, ≥1.6× ssh",
     lambda rd, rs, v: rd is not None and rd >= 0.85 and (rs is None or rs >= 1.6)),
    ("tps_c64", "pgbench -S c64 (TPS)", "", True, "≥0.85× direct", lambda rd, rs, v: rd is not None and rd >= 0.85),
    ("copy_out_mbs", "COPY out (MB/s)", "", True, "≥0.85× direct", lambda rd, rs, v: rd is not None and rd >= 0.85),
    ("copy_in_mbs", "COPY in (MB/s)", "", True, "≥0.85× direct", lambda rd, rs, v: rd is not None and rd >= 0.85),
    ("lat_med_us", "SELECT 1 round trip, median (µs)", "", False, "", None),
    ("lat_added_us", "  added over direct TLS (µs)", "", False, "≤60 µs", lambda rd, rs, v: v is not None and v <= 60),
    ("lat_p99_us", "SELECT 1 round trip, p99 (µs)", "", False, "", None),
    ("setup_ms", "open a session, mean of N (ms)", "", False, "", None),
    ("setup_added_ms", "  added over direct TLS (ms)", "", False, "≤1 ms", lambda rd, rs, v: v is not None and v <= 1),
    ("relay_idle_mb", "relay RSS idle (MB) [ssh: sshd]", "", False, "<8 MB", lambda rd, rs, v: v is not None and v < 8),
    ("relay_held_mb", "relay RSS with N sessions (MB)", "", False, "", None),
    ("relay_per_session_kb", "  relay per session (KiB)", "", False, "≤32 KiB",
     lambda rd, rs, v: v is not None and v <= 32),
    ("agent_idle_mb", "agent RSS idle (MB) [ssh: ssh]", "", False, "<8 MB", lambda rd, rs, v: v is not None and v < 8),
    ("agent_held_mb", "agent RSS with N sessions (MB)", "", False, "", None),
    ("agent_per_session_kb", "  agent per session (KiB)", "", False, "≤32 KiB",
     lambda rd, rs, v: v is not None and v <= 32),
]


def derive(run_res):
    """Per run: add derived metrics (MB figures, differences against direct TLS in the same run)."""
    for path, m in run_res.items():
        for role in ("relay", "agent"):
            for k in ("idle", "held"):
                v = m.get("%s_%s_kb" % (role, k))
                m["%s_%s_mb" % (role, k)] = v / 1024 if v is not None else None
    d = run_res.get("direct", {})
    for path, m in run_res.items():
        if path == "direct":
            continue
        for key, base in (("lat_added_us", "lat_med_us"), ("setup_added_ms", "setup_ms")):
            a, b = m.get(base), d.get(base)
            m[key] = a - b if a is not None and b is not None else None


def ratio(a, b, higher_is_better):
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if higher_is_better else b / a


def summarize(runs, paths):
    """Median over runs of each figure, and median over runs of the per-run ratios."""
    summary = {}
    for key, label, unit, hib, target, check in ROWS:
        row = {p: median([r.get(p, {}).get(key) for r in runs]) for p in paths}
        if key in ("lat_med_us", "lat_p99_us", "setup_ms"):
            # ratio pgburrow/x of speed: >1 means pgburrow is faster (lower latency)
            rd = median([ratio(r.get("pgburrow", {}).get(key), r.get("direct", {}).get(key), False) for r in runs])
            rs = median([ratio(r.get("pgburrow", {}).get(key), r.get("ssh", {}).get(key), False) for r in runs])
        elif hib:
            rd = median([ratio(r.get("pgburrow", {}).get(key), r.get("direct", {}).get(key), True) for r in runs])
            rs = median([ratio(r.get("pgburrow", {}).get(key), r.get("ssh", {}).get(key), True) for r in runs])
        else:
            rd = rs = None
        verdict = ""
        if check and "pgburrow" in paths:
            verdict = "ok" if check(rd, rs, row.get("pgburrow")) else "MISS"
        summary[key] = {"label": label, "values": row, "pgburrow/direct": rd, "pgburrow/ssh": rs,
                        "target": target, "verdict": verdict, "higher_is_better": hib}
    return summary


def print_table(summary, paths, skipped):
    cols = ["metric", "direct TLS", "pgburrow", "ssh -R", "pgb/direct", "pgb/ssh", "target"]
    lines = []
    for key, label, unit, hib, target, check in ROWS:
        s = summary[key]
        label = label.replace("N", str(SESSIONS)) if "N sessions" in label or "of N" in label else label
        vals = [fmt(s["values"].get(p)) if p in paths else "skipped" for p in ("direct", "pgburrow", "ssh")]
        if key.startswith(("relay_", "agent_")) or key.endswith("_added_us") or key.endswith("_added_ms"):
            vals[0] = "—" if "direct" in paths else vals[0]
        tgt = ("%s %s" % (s["target"], s["verdict"])).strip() if s["target"] else ""
        lines.append([label] + vals + [fmt_ratio(s["pgburrow/direct"]), fmt_ratio(s["pgburrow/ssh"]), tgt])
    widths = [max(len(r[i]) for r in lines + [cols]) for i in range(len(cols))]
    out = []
    sep = "  "
    out.append(sep.join(c.ljust(widths[i]) if i in (0, 6) else c.rjust(widths[i]) for i, c in enumerate(cols)))
    out.append(sep.join("-" * w for w in widths))
    for r in lines:
        out.append(sep.join(c.ljust(widths[i]) if i in (0, 6) else c.rjust(widths[i]) for i, c in enumerate(r)))
    print()
    print("pgburrow benchmark: %d run(s), medians; ratios are pgburrow/x per run (>1 = pgburrow better), "
          "then the median" % RUNS)
    print("pgbench -T %ds, latency -T %ds, COPY %d rows (%.0f MB), %d sessions%s" % (
        SECONDS, LAT_SECONDS, COPY_ROWS, COPY_ROWS * COPY_ROW_BYTES / 1e6, SESSIONS, ", QUICK" if QUICK else ""))
    for p, why in skipped.items():
        print("%s: skipped: %s" % (PATH_TITLES[p], why))
    print("\n".join(out))
    print()
    return "\n".join(out)


def plot(summary, paths):
    """Bar chart of the ratios (higher is better) to build/bench/bench.png, if gnuplot exists."""
    gp = shutil.which("gnuplot")
    if "pgburrow" not in paths:
        log("pgburrow not measured: no bench.png")
        return
    if not gp:
        log("gnuplot not installed: no bench.png")
        return
    keys = ["tps_c1", "tps_c16", "tps_c16_prep", "tps_c64", "copy_out_mbs", "copy_in_mbs", "lat_med_us", "setup_ms"]
    names = {"tps_c1": "-S c1", "tps_c16": "-S c16", "tps_c16_prep": "-S c16 prep", "tps_c64": "-S c64",
             "copy_out_mbs": "COPY out", "copy_in_mbs": "COPY in", "lat_med_us": "1/latency",
             "setup_ms": "1/session setup"}
    dat = os.path.join(OUT, "bench-ratios.dat")
    with open(dat, "w") as f:
        f.write("# metric pgburrow/direct pgburrow/ssh (NaN = not measured)\n")
        for k in keys:
            rd, rs = summary[k]["pgburrow/direct"], summary[k]["pgburrow/ssh"]
            f.write('"%s" %s %s\n' % (names[k], "NaN" if rd is None else "%.4f" % rd, "NaN" if rs is None else "%.4f" % rs))
    png = os.path.join(OUT, "bench.png")
    term = "pngcairo size 1000,560 font 'sans,10'"
    rc, out, _ = run([gp, "-e", "set terminal"], 20)
    if "pngcairo" not in out:
        term = "png size 1000,560"
    script = os.path.join(OUT, "bench.gp")
    with open(script, "w") as f:
        f.write("""set terminal %(term)s
set output '%(png)s'
set title 'pgburrow vs direct TLS and ssh -R (ratios, higher is better; %(runs)d run(s), %(date)s)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:%(ymax)s]
set grid ytics
set key top left
set ylabel 'ratio (bars above %(ymax)s are clipped; the label gives the value)'
set xtics rotate by -20
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'black' dt 2
set arrow from graph 0, first 0.85 to graph 1, first 0.85 nohead lc rgb 'red' dt 3
clip(v) = v > %(ymax)s ? %(ymax)s : v
plot '%(dat)s' using (clip($2)):xtic(1) title 'pgburrow / direct TLS' lc rgb '#4477aa', \\
     '' using (clip($3)) title 'pgburrow / ssh -R' lc rgb '#ee7733', \\
     '' using ($0-1.0/6):(clip($2)):(sprintf('%%.2f',$2)) with labels offset 0,0.7 font ',8' notitle, \\
     '' using ($0+1.0/6):(clip($3)):(sprintf('%%.2f',$3)) with labels offset 0,0.7 font ',8' notitle
""" % {"term": term, "png": png, "runs": RUNS, "date": time.strftime("%Y-%m-%d"), "dat": dat, "ymax": 3})
    rc, out, _ = run([gp, script], 60, os.path.join(OUT, "gnuplot.out"))
    if rc == 0 and os.path.exists(png):
        log("plot: %s" % png)
    else:
        log("gnuplot failed (see %s)" % os.path.join(OUT, "gnuplot.out"))
        if os.path.exists(png):
            os.unlink(png)


# ---------------------------------------------------------------------------------------------

def raise_fd_limit():
    """N sessions need N sockets here, in the relay and in the agent (children inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(SESSIONS * 2 + 1024, 8192)
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
        pids_fn = targets[path][1]
        return sum(cpu_ticks(p) for plist in pids_fn().values() for p in plist) if pids_fn else 0

    def cpu_note(path, what, before):
        if targets[path][1]:
            res[path].setdefault("tunnel_cpu_s", {})[what] = (cpu_mark(path) - before) / os.sysconf("SC_CLK_TCK")

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
                    m["agent_held_kb"] / 1024)))
    for key, args in PGBENCH_TESTS:
        for path in order:
            port = targets[path][0]
            c0 = cpu_mark(path)
            v, err = m_pgbench(port, args, rawdir, "%s-%s" % (key, path))
            cpu_note(path, key, c0)
            res[path][key] = v
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
    derive(res)
    return res, errors


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    unknown = [p for p in PATHS_WANTED if p not in PATH_TITLES]
    if unknown:
        sys.exit("bench: BENCH_PATHS: unknown path(s) %s (use direct,pgburrow,ssh)" % ",".join(unknown))
    mkdir(OUT)
    pidfile = os.path.join(OUT, "pids.json")
    kill_leftovers(pidfile)
    for d in ("pg", "pgburrow", "ssh", "raw", "certs"):
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
        paths = [p for p in ("direct", "pgburrow", "ssh") if p in targets]
        summary = summarize(runs, paths)
        table = print_table(summary, paths, skipped)
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
                         "copy_rows": COPY_ROWS, "sessions": SESSIONS, "scale": SCALE, "ssh_cipher": SSH_CIPHER},
            "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "paths": paths, "skipped": skipped, "runs": runs, "summary": summary, "errors": errors,
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
    sys.exit(main())
