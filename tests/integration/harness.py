"""Helpers for the pgburrow integration tests.

Everything here is plain Python (no pytest fixtures): a throwaway PostgreSQL 15 cluster,
certificates made by deploy/certs/mkcerts.sh, free loopback ports, the relay/agent process
wrapper with bounded log waits, and raw PostgreSQL protocol helpers for the hostile tests.
Every wait is bounded; nothing sleeps as synchronisation where a readiness signal exists.
"""

import atexit
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(os.environ.get("PGBURROW_BIN", os.path.join(REPO, "build", "release", "bin")))
SANITIZER = os.environ.get("PGBURROW_SANITIZER") == "1"
# PGBURROW_VALGRIND=1: run every daemon under valgrind (memcheck); an error or a definite leak
# makes it exit 99, and the teardown fails on that or on errors in its valgrind log.
VALGRIND = os.environ.get("PGBURROW_VALGRIND") == "1"
VALGRIND_CMD = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                "--track-fds=no", "--num-callers=30"]
# Sanitizer builds are several times slower (valgrind more); every timeout scales with this.
SLOW = 4.0 if SANITIZER else 10.0 if VALGRIND else 1.0
PG_BIN = "/usr/lib/postgresql/15/bin"
MKCERTS = os.path.join(REPO, "deploy", "certs", "mkcerts.sh")

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

DAEMON_ENV = dict(os.environ)
DAEMON_ENV["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
DAEMON_ENV["UBSAN_OPTIONS"] = "print_stacktrace=1"
# Keep libpq defaults of the test runner (PGHOST, PGSSLMODE, ...) out of every client we start.
for _k in list(DAEMON_ENV):
    if _k.startswith("PG") and not _k.startswith("PGBURROW"):
        del DAEMON_ENV[_k]


def t(seconds):
    """A timeout, scaled for the sanitizer build."""
    return seconds * SLOW


def tail(text, n=40):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def wait_until(pred, timeout, what, interval=0.02):
    """Poll pred() until it returns a true value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def sanitizer_findings(text):
    return [p for p in SANITIZER_PATTERNS if p in text]


def valgrind_findings(path):
    """Problems in one valgrind log: errors or definite leaks in its summary (a SIGKILLed
    daemon writes no summary: then the individual error reports)."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return ["no valgrind log %s" % path]
    out = []
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    if m and int(m.group(1)):
        out.append("%s errors (%s)" % (m.group(1), path))
    m = re.search(r"definitely lost: ([\d,]+) bytes", text)
    if m and m.group(1) != "0":
        out.append("definitely lost: %s bytes (%s)" % (m.group(1), path))
    if not out:  # a killed daemon writes no summary, but its errors are in the log
        for e in re.findall(r"^==\d+== (Invalid \w+|Conditional jump|Use of uninitialised|"
                            r"Syscall param|Mismatched free|Source and destination overlap)",
                            text, re.M):
            out.append("%s (%s)" % (e, path))
    return out


# ---------------------------------------------------------------------------------------------
# ports

_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now and was not handed out before in this run."""
    with _ports_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port found")


# ---------------------------------------------------------------------------------------------
# certificates

class Certs:
    """Paths of the certificates made by deploy/certs/mkcerts.sh."""

    def __init__(self, root):
        self.root = root
        self.dir = os.path.join(root, "good")
        self.evil_dir = os.path.join(root, "evil")

    def make(self):
        if not os.path.exists(MKCERTS):
            raise RuntimeError("%s does not exist" % MKCERTS)
        steps = [
            (self.dir, ["ca"]),
            (self.dir, ["relay"]),
            (self.dir, ["agent", "agent-a"]),
            (self.dir, ["agent", "agent-b"]),
            (self.dir, ["client", "postgres"]),
            (self.dir, ["client", "scram_user"]),
            # A second CA, unknown to the relay, that signs a certificate with a valid name.
            (self.evil_dir, ["ca"]),
            (self.evil_dir, ["agent", "agent-a"]),
        ]
        for d, args in steps:
            os.makedirs(d, exist_ok=True)
            r = subprocess.run(["bash", MKCERTS, d] + args, capture_output=True, text=True,
                               timeout=60)
            if r.returncode != 0:
                raise RuntimeError("mkcerts.sh %s %s failed (%d):\n%s%s" % (
                    d, " ".join(args), r.returncode, r.stdout, r.stderr))
        for p in [self.ca, self.relay_crt, self.relay_key, self.agent_crt("agent-a"),
                  self.agent_key("agent-a"), self.agent_crt("agent-b"), self.evil_ca,
                  self.agent_crt("agent-a", evil=True), self.agent_key("agent-a", evil=True),
                  self.client_crt("postgres"), self.client_key("postgres")]:
            if not os.path.isfile(p):
                raise RuntimeError("mkcerts.sh did not create %s" % p)
        return self

    @property
    def ca(self):
        return os.path.join(self.dir, "ca.crt")

    @property
    def evil_ca(self):
        return os.path.join(self.evil_dir, "ca.crt")

    @property
    def relay_crt(self):
        return os.path.join(self.dir, "relay.crt")

    @property
    def relay_key(self):
        return os.path.join(self.dir, "relay.key")

    def agent_crt(self, name, evil=False):
        return os.path.join(self.evil_dir if evil else self.dir, "agent-%s.crt" % name)

    def agent_key(self, name, evil=False):
        return os.path.join(self.evil_dir if evil else self.dir, "agent-%s.key" % name)

    def client_crt(self, user):
        return os.path.join(self.dir, "client-%s.crt" % user)

    def client_key(self, user):
        return os.path.join(self.dir, "client-%s.key" % user)


# ---------------------------------------------------------------------------------------------
# PostgreSQL

SCRAM_USER = "scram_user"
SCRAM_PASSWORD = "s3cret-Pa55"


class Postgres:
    """A throwaway PostgreSQL 15 cluster on a Unix socket only, run as the postgres user."""

    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "pgdata")
        self.sockdir = os.path.join(root, "pgsock")
        self.logfile = os.path.join(root, "postgres.log")
        self.port = 5432  # only names the socket file; the socket dir is private

    def _pg(self, *args, timeout=120):
        cmd = ["runuser", "-u", "postgres", "--"] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout, r.stderr))
        return r

    def start(self):
        os.makedirs(self.sockdir)
        os.makedirs(self.data)
        for d in (self.sockdir, self.data):
            subprocess.run(["chown", "postgres:postgres", d], check=True)
            os.chmod(d, 0o700)
        open(self.logfile, "a").close()
        subprocess.run(["chown", "postgres:postgres", self.logfile], check=True)
        self._pg(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                 "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--no-sync",
                 "--no-instructions")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# pgburrow integration tests\n"
                    "listen_addresses = ''\n"
                    "unix_socket_directories = '%s'\n"
                    "port = %d\n"
                    "max_connections = 300\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "shared_buffers = 128MB\n"
                    "password_encryption = 'scram-sha-256'\n"
                    # A backend whose client (the agent) vanished ends within a second.
                    "client_connection_check_interval = 1000\n"
                    "log_connections = on\n"
                    "log_disconnections = on\n" % (self.sockdir, self.port))
        # The SCRAM-only user proves PostgreSQL's own authentication runs end to end;
        # everyone else is trusted on the local socket (the tests run as root, not postgres).
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all %s scram-sha-256\n"
                    "local all all trust\n" % SCRAM_USER)
        self._pg(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                 "-w", "-t", "60", "start")
        self.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (SCRAM_USER, SCRAM_PASSWORD))
        return self

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._pg(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                     "-w", "-t", "60", "stop")

    def direct_dsn(self, user="postgres", dbname="postgres"):
        return "host=%s port=%d user=%s dbname=%s" % (self.sockdir, self.port, user, dbname)

    def sql(self, query, params=None):
        """Run one statement directly (not through pgburrow); return all rows or None."""
        import psycopg
        with psycopg.connect(self.direct_dsn(), autocommit=True, connect_timeout=10) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None


# ---------------------------------------------------------------------------------------------
# relay / agent processes

def write_ini(path, sections):
    """sections: list of (section name, {key: value}); values are written verbatim."""
    with open(path, "w") as f:
        for name, keys in sections:
            f.write("[%s]\n" % name)
            for k, v in keys.items():
                f.write("%s = %s\n" % (k, v))
            f.write("\n")
    return path


class DaemonDied(AssertionError):
    pass


_started = []  # every daemon process, so that none outlives an interrupted run


@atexit.register
def _kill_leftovers():
    for proc in _started:
        if proc.poll() is None:
            proc.kill()


class Daemon:
    """One run of pgburrow-relay or pgburrow-agent; stdout and stderr go to a log file."""

    def __init__(self, kind, config, logpath, extra_args=()):
        self.kind = kind  # "relay" or "agent"
        self.binary = os.path.join(BIN, "pgburrow-" + kind)
        self.config = config
        self.logpath = logpath
        self.extra_args = list(extra_args)
        self.proc = None
        self.expected_exit = False  # set when the test stopped or killed it on purpose
        self.stopped_rc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        prefix = []
        if VALGRIND:
            prefix = VALGRIND_CMD + ["--log-file=%s.valgrind.%%p" % self.logpath]
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(
                prefix + [self.binary, "-c", self.config] + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=DAEMON_ENV, cwd=os.path.dirname(self.logpath), start_new_session=True)
        _started.append(self.proc)
        return self

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """An offset into the log; wait_for_log(..., since=mark) looks only at later lines."""
        try:
            return os.path.getsize(self.logpath)
        except FileNotFoundError:
            return 0

    def _since(self, since):
        with open(self.logpath, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def describe(self):
        return "%s (pid %s, log %s)" % (self.kind, self.proc.pid if self.proc else "-",
                                        self.logpath)

    def wait_for_log(self, substring, timeout=5.0, since=0, scale=True):
        """Wait until substring appears in the log after offset since; returns the line.
        Fails at once (with the log tail) if the process exits meanwhile."""
        if scale:
            timeout = t(timeout)
        deadline = time.monotonic() + timeout
        while True:
            text = self._since(since)
            i = text.find(substring)
            if i >= 0:
                start = text.rfind("\n", 0, i) + 1
                end = text.find("\n", i)
                return text[start:end if end >= 0 else len(text)]
            if not self.alive() and not self.expected_exit:
                rc = self.proc.poll() if self.proc else None
                raise DaemonDied("%s exited (status %s) while waiting for %r; log tail:\n%s" % (
                    self.describe(), rc, substring, tail(self.log())))
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %r in %s; log tail:\n%s" % (
                    timeout, substring, self.describe(), tail(self.log())))
            time.sleep(0.02)

    def count(self, substring, since=0):
        return self._since(since).count(substring)

    def lines(self, substring, since=0):
        return [l for l in self._since(since).splitlines() if substring in l]

    def stop(self, timeout=10.0, sig=signal.SIGINT):
        """SIGINT (stop now; SIGTERM would drain), bounded wait, then SIGKILL. Returns the exit
        status. Problems (no exit on the signal, non-zero status) are recorded for the
        teardown check."""
        if self.proc is None:
            return None
        was_alive = self.alive()
        self.expected_exit = True
        if was_alive:
            self.proc.send_signal(sig)
            try:
                self.stopped_rc = self.proc.wait(t(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.stopped_rc = "did not exit within %.0fs of %s (SIGKILLed)" % (
                    t(timeout), signal.Signals(sig).name)
        return self.proc.returncode

    def kill(self):
        """SIGKILL on purpose (the test wants a crash)."""
        self.expected_exit = True
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)

    def problems(self, died_before_stop):
        out = []
        if died_before_stop:
            out.append("%s died unexpectedly with status %s" % (self.describe(),
                                                                 self.proc.returncode))
        elif self.stopped_rc not in (None, 0):
            out.append("%s: exit status %s after being stopped (contract: exit 0)" % (
                self.describe(), self.stopped_rc))
        if SANITIZER:
            found = sanitizer_findings(self.log())
            if found:
                out.append("%s: sanitizer report (%s)" % (self.describe(), ", ".join(found)))
        if VALGRIND and self.proc is not None:
            found = valgrind_findings("%s.valgrind.%d" % (self.logpath, self.proc.pid))
            if found:
                out.append("%s: valgrind: %s" % (self.describe(), "; ".join(found)))
        return out


# ---------------------------------------------------------------------------------------------
# raw PostgreSQL protocol

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
PROTOCOL_3_0 = 196608


def startup_message(params, protocol=PROTOCOL_3_0):
    body = struct.pack("!I", protocol)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def gssenc_request():
    return struct.pack("!II", 8, GSSENC_REQUEST_CODE)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def read_message(sock):
    """One backend message: (type byte as str, body bytes)."""
    head = recv_exact(sock, 5)
    typ, length = head[:1].decode("latin1"), struct.unpack("!I", head[1:])[0]
    if length < 4 or length > 1 << 24:
        raise AssertionError("implausible message length %d (type %r)" % (length, typ))
    return typ, recv_exact(sock, length - 4)


def parse_error_response(body):
    """ErrorResponse/NoticeResponse body -> {field code: value}, e.g. S, V, C, M."""
    fields = {}
    i = 0
    while i < len(body) and body[i] != 0:
        code = chr(body[i])
        end = body.index(b"\0", i + 1)
        fields[code] = body[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return fields


def read_error(sock):
    """Read one message, which must be an ErrorResponse; return its fields."""
    typ, body = read_message(sock)
    if typ != "E":
        raise AssertionError("expected ErrorResponse, got %r: %r" % (typ, body[:200]))
    return parse_error_response(body)


def expect_closed(sock, timeout):
    """The peer must close the connection within timeout (EOF, reset or TLS close)."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
    except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return
    except socket.timeout:
        raise AssertionError("connection still open %.1fs after the error" % timeout)


def raw_connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=t(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def client_tls_context(ca):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tls_after_sslrequest(sock, ca, server_hostname="localhost"):
    """Send SSLRequest on sock, expect 'S', and return the TLS-wrapped socket (verify-full)."""
    sock.sendall(ssl_request())
    answer = recv_exact(sock, 1)
    if answer != b"S":
        raise AssertionError("SSLRequest answered %r, expected b'S'" % answer)
    return client_tls_context(ca).wrap_socket(sock, server_hostname=server_hostname)


def kv(line):
    """key=value pairs of a log line."""
    return dict(re.findall(r"(\w+)=(\S+)", line))


def run_bounded(fn, timeout, what):
    """Run fn() in a thread; return its result or raise its exception; fail if it is still
    running after timeout seconds (the thread is left behind as a daemon)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: B902 - handed to the caller
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise AssertionError("%s still blocked after %.1fs (hang)" % (what, timeout))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def query_message(sql):
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


TERMINATE = b"X\0\0\0\4"


class MessageReader:
    """Buffered backend-message reader over a (TLS) socket, for bulk reads."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 17)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read(self):
        self._fill(5)
        typ = chr(self.buf[0])
        length = struct.unpack_from("!I", self.buf, 1)[0]
        self._fill(1 + length)
        body = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return typ, body


def raw_session(port, ca, params):
    """SSLRequest, TLS (verify-full), StartupMessage; returns (tls socket, reader) once the
    server sent ReadyForQuery. Only for users PostgreSQL trusts (no password exchange)."""
    s = raw_connect(port)
    tls = tls_after_sslrequest(s, ca)
    tls.sendall(startup_message(params))
    reader = MessageReader(tls)
    while True:
        typ, body = reader.read()
        if typ == "E":
            raise AssertionError("startup failed: %r" % parse_error_response(body))
        if typ == "Z":
            return tls, reader


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
