#!/usr/bin/python3
"""Transparency check: PostgreSQL's own test suites, run directly and through pgburrow.

"Whatever passes against PostgreSQL must pass through pgburrow" (design.md, non-negotiable 4),
checked with test suites written by others: PostgreSQL's regression suite (pg_regress, parallel
schedule: many concurrent psql sessions, COPY, LISTEN/NOTIFY, large objects), its isolation
suite (isolationtester: lock waits seen through pg_isolation_test_session_is_blocked() and the
backend pids libpq reports, cancels, prepared transactions) and libpq_pipeline (the extended
protocol in pipeline mode, with libpq traces). They are taken unmodified from Debian's source
package postgresql-15 at run time (never copied into this repository), built once and cached
under build/transparency/.

One PostgreSQL 15 cluster (TLS on 127.0.0.1, the settings the suites need) serves both runs:
  direct   the suite's clients connect to PostgreSQL itself (TCP, sslmode=verify-full)
  relay    the same clients connect to pgburrow-relay (sslmode=verify-full); the agent reaches
           the same PostgreSQL over TCP with sslmode=verify-full
so that PostgreSQL sees the same kind of session both times. Each suite runs in the same
directory both times (paths inside result files are equal), then its results are moved to
build/transparency/results/{direct,relay}/SUITE. Per test, the outcome and every result file
must be byte-for-byte equal; each difference is written to build/transparency/diffs/SUITE/ and
fails the check. Every wait is bounded: a suite that runs past its limit is killed and its
unfinished tests count as differences.

Usage: transparency.py [--suites regress,isolation,pipeline] [--sides A,B] [--only TEST,...]
                       [--full]
  --sides direct,direct2 runs the suites twice directly (a determinism check: a difference
  there is the suite's own, not pgburrow's); --only runs only the named tests; --full also
  runs the tests QUICK_SKIP leaves out.
Environment: PGBURROW_BIN (daemons, default build/release/bin), PGBURROW_KEEP_TMP=1 keeps the
cluster and daemon logs (build/transparency/run).
Exit status: 0 equal, 1 differences or failures, 2 the source could not be fetched or built.
"""

import argparse
import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import PG_BIN, REPO, Certs, free_port  # noqa: E402

STATE = os.path.join(REPO, "build", "transparency")
PACKAGE = "postgresql-15"
SUITE_NAME = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CONFIGURE_FLAGS = ["--without-readline", "--without-zlib", "--without-icu", "--with-openssl",
                   "--disable-nls"]
BUILD_DIRS = ["src/test/regress", "src/test/isolation", "src/test/modules/libpq_pipeline"]

# Wall-clock bounds (seconds). A suite still running then is killed (its process group) and
# its unfinished tests count as differences. The first run of a suite (direct) has a generous
# bound; the second may take twice as long as the first did, plus a margin.
SUITE_LIMIT = {"regress": 600, "isolation": 600, "pipeline": 300}
SECOND_RUN_FACTOR = 2
SECOND_RUN_MARGIN = 30
RERUN_LIMIT = 30  # one test run again (a test known to race, see NONDETERMINISTIC)
# Left out of `make test` to stay within its time (--full runs them): they load the CPU for
# 15 to 20 s each on 2 cores and send nothing through the protocol that other tests do not.
QUICK_SKIP = {
    "regress": ("select_parallel", "privileges", "join_hash"),
    "isolation": ("prepared-transactions",),
}
# isolationtester cancels a step that neither finishes nor is seen blocked after this long
# (its default is 300 s). Steps here finish in well under a second when blocking is detected.
ISOLATION_STEP_TIMEOUT = 30
PIPELINE_ROWS = 700  # as src/test/modules/libpq_pipeline/t/001_libpq_pipeline.pl
PIPELINE_TRACED = {"simple_pipeline", "nosync", "multi_pipelines", "prepared", "singlerow",
                   "pipeline_abort", "pipeline_idle", "transaction", "disallowed_in_pipeline"}


class Fatal(Exception):
    """The check could not run (source not fetched or not built, cluster not started)."""


def log(msg):
    print("transparency: %s" % msg, flush=True)


def run(cmd, timeout, what, cwd=None, logpath=None, env=None):
    """Run cmd to completion within timeout; raise Fatal with the output's tail on failure."""
    try:
        if logpath:
            with open(logpath, "ab") as f:
                r = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                   stderr=subprocess.STDOUT, timeout=timeout, env=env)
            out = harness.tail(open(logpath, errors="replace").read(), 30)
        else:
            r = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout, env=env)
            out = (r.stdout or "") + (r.stderr or "")
    except subprocess.TimeoutExpired:
        raise Fatal("%s: no result within %ds (%s)" % (what, timeout, " ".join(cmd)))
    except OSError as e:
        raise Fatal("%s: %s" % (what, e))
    if r.returncode != 0:
        raise Fatal("%s failed (exit %d): %s\n%s" % (what, r.returncode, " ".join(cmd),
                                                    harness.tail(out, 30)))
    return out


# ---------------------------------------------------------------------------------------------
# the source: Debian's postgresql-15 source package, fetched with a private apt state

def apt_options(aptdir):
    return ["-o", "Dir::Etc::SourceList=/dev/null",
            "-o", "Dir::Etc::SourceParts=%s" % os.path.join(aptdir, "parts"),
            "-o", "Dir::State::Lists=%s" % os.path.join(aptdir, "lists"),
            "-o", "Dir::Cache=%s" % os.path.join(aptdir, "cache")]


def debian_mirror():
    """The mirror the system's own apt uses for SUITE_NAME main (deb822 .sources files or the
    one-line sources.list): the source package comes from where the binary packages come."""
    candidates = []
    parts = "/etc/apt/sources.list.d"
    for name in sorted(os.listdir(parts)) if os.path.isdir(parts) else []:
        if name.endswith(".sources"):
            with open(os.path.join(parts, name)) as f:
                for stanza in f.read().split("\n\n"):
                    keys = {}
                    for line in stanza.splitlines():
                        if ":" in line and not line.lstrip().startswith("#"):
                            k, v = line.split(":", 1)
                            keys[k.strip().lower()] = v.split()
                    candidates += [(keys.get("types", []), u, keys.get("suites", []),
                                    keys.get("components", [])) for u in keys.get("uris", [])]
    lists = ["/etc/apt/sources.list"]
    if os.path.isdir(parts):
        lists += [os.path.join(parts, n) for n in sorted(os.listdir(parts)) if n.endswith(".list")]
    for path in lists:
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    w = line.split("#", 1)[0].split()
                    w = [x for x in w if not x.startswith("[")]  # [signed-by=...] options
                    if len(w) >= 4:
                        candidates.append(([w[0]], w[1], [w[2]], w[3:]))
    for types, uri, suites, comps in candidates:
        if "deb" in types and SUITE_NAME in suites and "main" in comps:
            return uri.rstrip("/")
    raise Fatal("no Debian mirror for %s main in the system's apt sources" % SUITE_NAME)


def fetch_source():
    """Download and unpack Debian's source package; returns (version, tree). apt checks the
    signed Release file, the Sources index and every file's checksum, as apt-get source does."""
    mirror = debian_mirror()
    aptdir = os.path.join(STATE, "apt")
    for d in ("parts", "lists/partial", "cache/archives/partial"):
        os.makedirs(os.path.join(aptdir, d), exist_ok=True)
    with open(os.path.join(aptdir, "parts", "src.sources"), "w") as f:
        f.write("Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n" % (
            mirror, SUITE_NAME, KEYRING))
    opts = apt_options(aptdir)
    what = "fetching Debian's source package %s from %s (%s main)" % (PACKAGE, mirror, SUITE_NAME)
    try:
        out = run(["apt-get"] + opts + ["-q", "update"], 300, what)
        # apt-get update exits 0 when a mirror cannot be reached; no Sources index then.
        lists = os.path.join(aptdir, "lists")
        if not any("_Sources" in f for f in os.listdir(lists)):
            raise Fatal("%s: apt-get update got no Sources index:\n%s" % (
                what, harness.tail(out, 10)))
        text = run(["apt-cache"] + opts + ["showsrc", PACKAGE], 60, what)
        versions = re.findall(r"^Version: (\S+)$", text, re.M)
        if not versions:
            raise Fatal("%s: the index lists no %s" % (what, PACKAGE))
        version = versions[0]
        for v in versions[1:]:
            if subprocess.run(["dpkg", "--compare-versions", v, "gt", version]).returncode == 0:
                version = v
        download = os.path.join(STATE, "download")
        shutil.rmtree(download, ignore_errors=True)
        os.makedirs(download)
        # apt drops privileges to _apt for downloads when that user can write here.
        subprocess.run(["chown", "_apt", download], stderr=subprocess.DEVNULL)
        run(["apt-get"] + opts + ["-q", "source", "--download-only", "%s=%s" % (PACKAGE, version)],
            600, what, cwd=download)
    except Fatal as e:
        raise Fatal("%s\nThe transparency check needs Debian's source package once (it is then "
                    "cached in %s); check the network access to %s." % (e, STATE, mirror))
    dscs = [f for f in os.listdir(download) if f.endswith(".dsc")]
    if len(dscs) != 1:
        raise Fatal("%s: expected one .dsc in %s, found %s" % (what, download, dscs))
    tree = os.path.join(STATE, "%s-%s" % (PACKAGE, version))
    shutil.rmtree(tree, ignore_errors=True)
    log("unpacking %s" % dscs[0])
    run(["dpkg-source", "-x", os.path.join(download, dscs[0]), tree], 300,
        "dpkg-source -x %s" % dscs[0])
    return version, tree


def build_tree(tree):
    """configure, then build only the three test programs (and what they link)."""
    buildlog = os.path.join(STATE, "build.log")
    open(buildlog, "w").close()
    log("configuring (%s; log %s)" % (" ".join(CONFIGURE_FLAGS), buildlog))
    run(["./configure"] + CONFIGURE_FLAGS, 600, "configure", cwd=tree, logpath=buildlog)
    jobs = str(os.cpu_count() or 2)
    # PostgreSQL's makefiles generate their headers (utils/errcodes.h...) only in a top-level
    # make (MAKELEVEL 0): under `make test` this script runs inside make, whose MAKELEVEL and
    # MAKEFLAGS would otherwise reach the build through the environment.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    for d in BUILD_DIRS:
        log("building %s" % d)
        run(["make", "-s", "-j" + jobs, "-C", d], 600, "make -C %s" % d, cwd=tree,
            logpath=buildlog, env=env)


def prepare_source():
    """The built source tree, from the cache when a previous run finished building it."""
    os.makedirs(STATE, exist_ok=True)
    current = os.path.join(STATE, "current")
    if os.path.exists(current):
        with open(current) as f:
            version, tree = f.read().split()
        stamp = os.path.join(tree, ".pgburrow-built")
        if os.path.exists(stamp) and open(stamp).read().split() == CONFIGURE_FLAGS:
            log("using the cached %s %s (%s)" % (PACKAGE, version, tree))
            return version, tree
    log("fetching Debian's source package %s (%s main, once; cached in %s)" % (
        PACKAGE, SUITE_NAME, STATE))
    version, tree = fetch_source()
    build_tree(tree)
    with open(os.path.join(tree, ".pgburrow-built"), "w") as f:
        f.write(" ".join(CONFIGURE_FLAGS) + "\n")
    with open(current, "w") as f:
        f.write("%s %s\n" % (version, tree))
    return version, tree


def installed_server_version():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True,
                       text=True)
    return r.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------------------
# the server: one PostgreSQL 15 cluster with TLS on 127.0.0.1, run as postgres

class Cluster:
    def __init__(self, root, certs):
        self.root = root
        self.certs = certs
        self.data = os.path.join(root, "pgdata")
        self.sockdir = os.path.join(root, "pgsock")
        self.logfile = os.path.join(root, "postgres.log")
        self.port = free_port()

    def _pg(self, *args):
        return run(["runuser", "-u", "postgres", "--"] + list(args), 120, args[0])

    def start(self):
        for d in (self.sockdir, self.data):
            os.makedirs(d)
            subprocess.run(["chown", "postgres:postgres", d], check=True)
            os.chmod(d, 0o700)
        open(self.logfile, "a").close()
        subprocess.run(["chown", "postgres:postgres", self.logfile], check=True)
        self._pg(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                 "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C",
                 "--no-sync", "--no-instructions")
        for src, dst in ((self.certs.relay_crt, "server.crt"), (self.certs.relay_key, "server.key")):
            p = os.path.join(self.data, dst)
            shutil.copyfile(src, p)
            subprocess.run(["chown", "postgres:postgres", p], check=True)
            os.chmod(p, 0o600)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# pgburrow transparency check\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "ssl = on\n"
                    "ssl_cert_file = 'server.crt'\n"
                    "ssl_key_file = 'server.key'\n"
                    "max_connections = 200\n"
                    # the isolation suite's prepared-transactions tests
                    "max_prepared_transactions = 100\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "shared_buffers = 128MB\n" % (self.port, self.sockdir))
        # hostssl only: a session that is not TLS all the way to PostgreSQL cannot pass.
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "hostssl all all 127.0.0.1/32 trust\n")
        self._pg(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                 "-t", "60", "start")
        return self

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._pg(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                     "-t", "60", "stop")

    def sql(self, query):
        import psycopg
        dsn = "host=%s port=%d user=postgres dbname=postgres" % (self.sockdir, self.port)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
            cur = c.execute(query)
            return cur.fetchall() if cur.description else None


# ---------------------------------------------------------------------------------------------
# relay + agent

def start_burrow(workdir, certs, cluster):
    """Relay (route a -> agent-a, the default) and agent-a, whose route a reaches the cluster
    over TCP with verify-full. Returns the conftest Burrow (its shutdown() reports problems)."""
    import conftest
    burrow = conftest.Burrow(workdir, certs, cluster)
    burrow.start_relay()
    burrow.start_agent("agent-a", routes=("a",), targets={"a": ("localhost", cluster.port)},
                       args=["--route.a.sslmode=verify-full",
                             "--route.a.sslrootcert=%s" % certs.ca])
    return burrow


def probe_backend_pid(port, ca):
    """(pid libpq reports, pg_backend_pid()) for one session to port."""
    import psycopg
    dsn = ("host=localhost hostaddr=127.0.0.1 port=%d sslmode=verify-full sslrootcert=%s "
           "user=postgres dbname=postgres connect_timeout=10" % (port, ca))
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.info.backend_pid, c.execute("select pg_backend_pid()").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# suites

def client_env(port, ca):
    """The libpq environment of a suite's clients for one side (direct or relay)."""
    env = dict(harness.DAEMON_ENV)
    for k in ("LANG", "LANGUAGE") + tuple(k for k in env if k.startswith("LC_")):
        env.pop(k, None)
    env.update(LC_ALL="C", HOME=STATE, PGHOST="localhost", PGHOSTADDR="127.0.0.1",
               PGPORT=str(port), PGUSER="postgres", PGSSLMODE="verify-full",
               PGSSLROOTCERT=ca, PGCONNECT_TIMEOUT="10",
               PGISOLATIONTIMEOUT=str(ISOLATION_STEP_TIMEOUT))
    return env


def as_postgres():
    """Suites run as postgres: the server writes COPY files into their output directory."""
    return dict(user="postgres", group="postgres", extra_groups=[])


def run_suite_process(cmd, env, cwd, limit, logpath):
    """Run one suite driver in its own process group; kill the group past limit seconds.
    Returns (exit status or None when killed, seconds)."""
    t0 = time.monotonic()
    with open(logpath, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                **as_postgres())
        try:
            rc = proc.wait(limit)
        except subprocess.TimeoutExpired:
            rc = None
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            out.write(b"\ntransparency: killed after %d s (suite time limit)\n" % limit)
    return rc, time.monotonic() - t0


REGRESS_LINE = re.compile(r"^(?:test\s+|\s+)(\S+)\s+\.\.\. (ok|FAILED|failed \(ignored\))", re.M)


def parse_pg_regress(text, names):
    """Outcome per test from pg_regress's report; tests it never reached are 'not run'."""
    outcome = {n: "not run" for n in names}
    for name, status in REGRESS_LINE.findall(text):
        outcome[name] = "ok" if status == "ok" else status
    return outcome


def schedule_tests(path, extra=()):
    names = []
    with open(path) as f:
        for line in f:
            if line.startswith("test:"):
                names += line.split(":", 1)[1].split()
    return names + list(extra)


class Suite:
    """A suite: name, how to run it into a directory, and the files to compare per test.
    full: every test (else QUICK_SKIP's are left out); scratch: a directory for a schedule."""

    name = ""

    def __init__(self, tree, full, scratch):
        self.tree = tree
        self.full = full
        self.scratch = scratch
        self.skipped = () if full else QUICK_SKIP.get(self.name, ())

    def run(self, rundir, env, only=None, limit=None):
        """Run the suite (or only some of its tests) with its results in rundir: returns
        ({test: outcome}, driver exit status or None when killed at the limit, seconds)."""
        raise NotImplementedError

    def files(self, resultdir, test):
        """Result files of one test, relative to its result directory."""
        raise NotImplementedError


class RegressSuite(Suite):
    name = "regress"
    driver = "src/test/regress/pg_regress"
    srcdir = "src/test/regress"
    schedule = "parallel_schedule"
    extra = ()

    def tests(self):
        return [t for t in schedule_tests(os.path.join(self.tree, self.srcdir, self.schedule),
                                          self.extra) if t not in self.skipped]

    def selection(self, only):
        """The schedule (QUICK_SKIP's tests taken out of it), or only the given tests."""
        if only:
            return list(only)
        schedule = os.path.join(self.tree, self.srcdir, self.schedule)
        if self.skipped:
            kept = os.path.join(self.scratch, "%s_schedule" % self.name)
            with open(schedule) as f, open(kept, "w") as out:
                for line in f:
                    if line.startswith("test:"):
                        names = [t for t in line.split(":", 1)[1].split() if t not in self.skipped]
                        line = "test: %s\n" % " ".join(names) if names else ""
                    out.write(line)
            schedule = kept
        return ["--schedule=" + schedule] + [t for t in self.extra if t not in self.skipped]

    def command(self, rundir, env, only=None):
        src = os.path.join(self.tree, self.srcdir)
        return [os.path.join(self.tree, self.driver), "--inputdir=" + src, "--outputdir=" + rundir,
                "--bindir=" + PG_BIN, "--dlpath=" + src, "--max-concurrent-tests=20",
                "--host=" + env["PGHOST"], "--port=" + env["PGPORT"]] + self.selection(only)

    def run(self, rundir, env, only=None, limit=None):
        logpath = os.path.join(rundir, "driver.log")
        rc, secs = run_suite_process(self.command(rundir, env, only), env, rundir,
                                     limit or SUITE_LIMIT[self.name], logpath)
        with open(logpath, errors="replace") as f:
            text = f.read()
        return parse_pg_regress(text, only or self.tests()), rc, secs

    def files(self, resultdir, test):
        return [os.path.join("results", test + ".out")]


class IsolationSuite(RegressSuite):
    name = "isolation"
    driver = "src/test/isolation/pg_isolation_regress"
    srcdir = "src/test/isolation"
    schedule = "isolation_schedule"
    # Not in the schedule because they need max_prepared_transactions, which the cluster has.
    extra = ("prepared-transactions", "prepared-transactions-cic")

    def command(self, rundir, env, only=None):
        src = os.path.join(self.tree, self.srcdir)
        return [os.path.join(self.tree, self.driver), "--inputdir=" + src, "--outputdir=" + rundir,
                "--bindir=" + PG_BIN, "--host=" + env["PGHOST"],
                "--port=" + env["PGPORT"]] + self.selection(only)


class PipelineSuite(Suite):
    """libpq_pipeline TESTNAME CONNINFO for each of its tests, as its TAP test runs it: the
    exit status, its output, and for the traced tests the libpq trace, which must also equal
    the trace PostgreSQL ships (traces/TEST.trace)."""

    name = "pipeline"
    srcdir = "src/test/modules/libpq_pipeline"
    dbname = "pipeline_regression"

    def binary(self):
        return os.path.join(self.tree, self.srcdir, "libpq_pipeline")

    def tests(self):
        out = run([self.binary(), "tests"], 30, "libpq_pipeline tests")
        return [t for t in out.split() if t not in self.skipped]

    def run(self, rundir, env, only=None, limit=None):
        os.makedirs(os.path.join(rundir, "results"))
        os.makedirs(os.path.join(rundir, "traces"))
        for d in ("results", "traces"):
            subprocess.run(["chown", "postgres:postgres", os.path.join(rundir, d)], check=True)
        outcome = {}
        deadline = time.monotonic() + (limit or SUITE_LIMIT[self.name])
        t0 = time.monotonic()
        rc_all = 0
        for test in only or self.tests():
            left = deadline - time.monotonic()
            if left <= 0:
                outcome[test] = "not run"
                rc_all = None
                continue
            cmd = [self.binary(), "-r", str(PIPELINE_ROWS)]
            trace = os.path.join(rundir, "traces", test + ".trace")
            if test in PIPELINE_TRACED:
                cmd += ["-t", trace]
            cmd += [test, "dbname=%s" % self.dbname]
            rc, _ = run_suite_process(cmd, env, rundir, min(60, left),
                                      os.path.join(rundir, "results", test + ".out"))
            status = "ok" if rc == 0 else "FAILED (exit %s)" % ("killed" if rc is None else rc)
            if rc == 0 and test in PIPELINE_TRACED:
                expected = os.path.join(self.tree, self.srcdir, "traces", test + ".trace")
                if read_bytes(expected) != read_bytes(trace):
                    status = "FAILED (trace differs from traces/%s.trace)" % test
            outcome[test] = status
            if rc != 0 and rc_all is not None:
                rc_all = 1
        return outcome, rc_all, time.monotonic() - t0

    def files(self, resultdir, test):
        out = [os.path.join("results", test + ".out")]
        if test in PIPELINE_TRACED:
            out.append(os.path.join("traces", test + ".trace"))
        return out


SUITES = {"regress": RegressSuite, "isolation": IsolationSuite, "pipeline": PipelineSuite}


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def prepare_databases(cluster, suite):
    """pg_regress drops and creates its own database; libpq_pipeline needs one made for it."""
    if suite.name == "pipeline":
        cluster.sql("DROP DATABASE IF EXISTS %s" % suite.dbname)
        cluster.sql("CREATE DATABASE %s" % suite.dbname)



# ---------------------------------------------------------------------------------------------
# tests whose output changes from one run to the next against the same server, shown by
# running them twice directly (--sides direct,direct2; README "Transparency check")

def normalize_uniqviol(data):
    """uniqviol's report, reduced to what does not depend on socket buffer sizes and timing:
    numbers masked, progress lines (dots, 'switch to reading', 'done writing': where they fall
    depends on when the socket filled and when the error came back) dropped, repeats
    collapsed. What is left: the results before the error, the unique violation, the aborted
    rest of the pipeline, ok."""
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        if re.fullmatch(r"[.E]*", line) or line in ("switch to reading", "done writing"):
            continue
        line = re.sub(r"\d+", "N", line)
        if not out or out[-1] != line:
            out.append(line)
    return "\n".join(out).encode()


class Nondeterministic:
    """reason: why two direct runs differ. normalize: compare a reduced form of the result
    files; retries: on a difference, run the test again on both sides (up to retries times)
    until one side's output is one the other side also produced."""

    def __init__(self, reason, normalize=None, retries=0):
        self.reason = reason
        self.normalize = normalize
        self.retries = retries


NONDETERMINISTIC = {
    ("pipeline", "uniqviol"): Nondeterministic(
        "pipelines INSERTs until the socket would block, so how many are sent before each "
        "'switch to reading', and whether writing is done before the error comes back, depend "
        "on socket buffer sizes and timing (two direct runs: 191650 and 120070 output lines)",
        normalize=normalize_uniqviol),
    ("isolation", "insert-conflict-specconflict"): Nondeterministic(
        "a NOTICE raised by a session that goes on to wait for an advisory lock is reported "
        "before or after the next step's output (two direct runs: one passed, one failed)",
        retries=3),
}


# ---------------------------------------------------------------------------------------------
# running and comparing

class Runner:
    def __init__(self, tree, cluster, workroot, envs, only):
        self.only = only  # None, or the tests to run (of every suite that has them)
        self.tree = tree
        self.cluster = cluster
        self.workroot = workroot
        self.envs = envs  # side -> client environment

    def rundir(self, suite, rerun=False):
        """Each suite always runs in the same directory, whatever the side."""
        d = os.path.join(self.workroot, "%s-%s" % ("rerun" if rerun else "suite", suite.name))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        subprocess.run(["chown", "postgres:postgres", d], check=True)
        return d

    def run_side(self, suite, side, limit):
        rundir = self.rundir(suite)
        prepare_databases(self.cluster, suite)
        only = [t for t in suite.tests() if t in self.only] if self.only else None
        outcome, rc, secs = suite.run(rundir, self.envs[side], only=only, limit=limit)
        resultdir = os.path.join(STATE, "results", side, suite.name)
        shutil.rmtree(resultdir, ignore_errors=True)
        os.makedirs(os.path.dirname(resultdir), exist_ok=True)
        shutil.move(rundir, resultdir)
        passed = sum(1 for s in outcome.values() if s == "ok")
        log("%-9s %-7s %3d tests, %3d passed, %5.1f s%s" % (
            suite.name, side, len(outcome), passed, secs,
            "" if rc is not None else "  (KILLED at its %d s limit)" % limit))
        return outcome, rc is None, secs

    def rerun(self, suite, side, test):
        """One test again on one side: (outcome, result files' contents)."""
        rundir = self.rundir(suite, rerun=True)
        prepare_databases(self.cluster, suite)
        outcome, rc, _ = suite.run(rundir, self.envs[side], only=[test], limit=RERUN_LIMIT)
        files = tuple(read_bytes(os.path.join(rundir, rel)) for rel in suite.files(rundir, test))
        return rc is not None, (outcome.get(test, "not run"),) + files


def unified(x, y, a, b):
    xs = [] if x is None else x.decode("utf-8", "replace").splitlines(True)
    ys = [] if y is None else y.decode("utf-8", "replace").splitlines(True)
    return list(difflib.unified_diff(xs, ys, a, b))


def compare(runner, suite, base, other, outcomes, diffdir):
    """Every test of suite whose outcome or result files differ between the two sides:
    returns (differences, explained), each a list of (test, why, diff file)."""
    resultdirs = {s: os.path.join(STATE, "results", s, suite.name) for s in (base, other)}
    differences, explained = [], []
    tests = list(dict.fromkeys(list(outcomes[base]) + list(outcomes[other])))
    for test in tests:
        a, b = outcomes[base].get(test, "not run"), outcomes[other].get(test, "not run")
        reasons, chunks = [], []
        if a != b or a == "not run":
            reasons.append("outcome %s: %s, %s: %s" % (base, a, other, b))
        raw = []
        for rel in suite.files(resultdirs[base], test):
            x = read_bytes(os.path.join(resultdirs[base], rel))
            y = read_bytes(os.path.join(resultdirs[other], rel))
            raw.append((rel, x, y))
            if x != y:
                reasons.append("%s differs" % rel)
                chunks += unified(x, y, "%s/%s" % (base, rel), "%s/%s" % (other, rel))
        if not reasons:
            continue
        nd = NONDETERMINISTIC.get((suite.name, test))
        note = None
        if nd and nd.normalize and a == b and all(
                x is not None and y is not None and nd.normalize(x) == nd.normalize(y)
                for _, x, y in raw):
            note = "equal once normalized: %s" % nd.reason
        elif nd and nd.retries:
            seen = {base: {(a,) + tuple(x for _, x, _ in raw)},
                    other: {(b,) + tuple(y for _, _, y in raw)}}
            for attempt in range(1, nd.retries + 1):
                finished = True
                for side in (base, other):
                    done, result = runner.rerun(suite, side, test)
                    seen[side].add(result)
                    finished = finished and done
                if seen[base] & seen[other]:
                    note = "equal on re-run %d: %s" % (attempt, nd.reason)
                    break
                if not finished:  # killed at RERUN_LIMIT: a hang is no race
                    reasons.append("a re-run did not finish within %d s" % RERUN_LIMIT)
                    break
        os.makedirs(diffdir, exist_ok=True)
        path = os.path.join(diffdir, "%s-vs-%s.%s%s.diff" % (
            base, other, test, ".nondeterministic" if note else ""))
        with open(path, "w") as f:
            f.write("# %s: %s\n" % (test, "; ".join(reasons)))
            if note:
                f.write("# not counted: %s\n" % note)
            f.writelines(chunks)
        (explained if note else differences).append((test, "; ".join(reasons) + (
            " (%s)" % note if note else ""), path))
    return differences, explained


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", default="regress,isolation,pipeline")
    ap.add_argument("--full", action="store_true",
                    help="also the tests left out to save time (QUICK_SKIP)")
    ap.add_argument("--only", metavar="TEST,...", help="run only these tests of the suites")
    ap.add_argument("--sides", default="direct,relay",
                    help="two of: direct, relay, or direct2/relay2 for a second run of a kind")
    args = ap.parse_args()
    names = args.suites.split(",")
    sides = args.sides.split(",")
    if any(n not in SUITES for n in names):
        ap.error("--suites: choose from %s" % ",".join(SUITES))
    if len(sides) != 2 or sides[0] == sides[1] or any(
            s.rstrip("0123456789") not in ("direct", "relay") for s in sides):
        ap.error("--sides: two different sides, e.g. direct,relay or direct,direct2")
    if os.geteuid() != 0:
        ap.error("run as root (PostgreSQL and the suites run as the postgres user)")
    t_start = time.monotonic()

    try:
        version, tree = prepare_source()
    except Fatal as e:
        log("FAILED: could not prepare the suites:\n%s" % e)
        return 2
    server = installed_server_version()
    log("suites from Debian's source %s %s; server %s %s" % (PACKAGE, version, PACKAGE, server))
    t_ready = time.monotonic()

    workroot = os.path.join(STATE, "run")
    shutil.rmtree(workroot, ignore_errors=True)
    os.makedirs(workroot)
    os.chmod(workroot, 0o755)
    diffroot = os.path.join(STATE, "diffs")
    shutil.rmtree(diffroot, ignore_errors=True)
    shutil.rmtree(os.path.join(STATE, "results"), ignore_errors=True)
    certs = Certs(os.path.join(workroot, "certs")).make()
    os.chmod(certs.dir, 0o755)  # the suites run as postgres and read the CA
    os.chmod(certs.ca, 0o644)
    cluster = Cluster(os.path.join(workroot, "pg"), certs)
    os.makedirs(cluster.root)
    os.chmod(cluster.root, 0o755)
    burrow = None
    problems, differences, explained, summary = [], [], [], []
    try:
        cluster.start()
        burrowdir = os.path.join(workroot, "burrow")
        os.makedirs(burrowdir)
        burrow = start_burrow(burrowdir, certs, cluster)
        ports = {"direct": cluster.port, "relay": burrow.client_port}
        if "relay" in [s.rstrip("0123456789") for s in sides]:
            reported, real = probe_backend_pid(burrow.client_port, certs.ca)
            if reported != real:
                problems.append(
                    "through the relay libpq reports backend pid %d, pg_backend_pid() is %d: "
                    "isolationtester cannot see lock waits (pg_isolation_test_session_is_"
                    "blocked) and cancels each blocked step after %d s" % (
                        reported, real, ISOLATION_STEP_TIMEOUT))
                log("NOTE: " + problems[-1])
        envs = {s: client_env(ports[s.rstrip("0123456789")], certs.ca) for s in sides}
        runner = Runner(tree, cluster, workroot, envs,
                        args.only.split(",") if args.only else None)
        suites = [SUITES[n](tree, args.full, workroot) for n in names]
        if runner.only:
            suites = [s for s in suites if set(s.tests()) & set(runner.only)]
        outcomes = {}
        for suite in suites:
            limit = SUITE_LIMIT[suite.name]
            for side in sides:
                outcome, killed, secs = runner.run_side(suite, side, limit)
                outcomes[(suite.name, side)] = outcome
                if killed:
                    problems.append("%s %s: killed at its %d s limit, %d tests not run" % (
                        suite.name, side, limit, sum(1 for v in outcome.values()
                                                     if v == "not run")))
                limit = int(SECOND_RUN_FACTOR * secs + SECOND_RUN_MARGIN)
        for d in [burrow.relay] + list(burrow.agents.values()):
            if not d.alive():
                problems.append("%s exited during the suites" % d.describe())
        for suite in suites:
            per_side = {s: outcomes[(suite.name, s)] for s in sides}
            diffs, notes = compare(runner, suite, sides[0], sides[1], per_side,
                                   os.path.join(diffroot, suite.name))
            differences += [(suite.name,) + d for d in diffs]
            explained += [(suite.name,) + d for d in notes]
            for s in sides:
                summary.append("%-9s %-7s %3d tests run, %3d passed" % (
                    suite.name, s, len(per_side[s]),
                    sum(1 for v in per_side[s].values() if v == "ok")))
            summary.append("%-9s %d differ, %d differ only as they do between two direct runs" % (
                suite.name, len(diffs), len(notes)))
            if suite.skipped:
                summary.append("%-9s left out to save time (--full runs them): %s" % (
                    suite.name, ", ".join(suite.skipped)))
            failed = sorted(t for t, v in per_side[sides[0]].items() if v != "ok")
            if failed:
                summary.append("%-9s failed in the %s run too (see results/%s/%s/"
                               "regression.diffs): %s" % (suite.name, sides[0], sides[0],
                                                          suite.name, ", ".join(failed)))
    except Fatal as e:
        problems.append(str(e))
    finally:
        if burrow is not None:
            problems += burrow.shutdown()
        try:
            cluster.stop()
        except Fatal as e:
            problems.append(str(e))
        if os.environ.get("PGBURROW_KEEP_TMP") != "1" and not problems and not differences:
            shutil.rmtree(workroot, ignore_errors=True)

    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    print("\n== transparency check: %s vs %s (results in %s, diffs in %s)" % (
        sides[0], sides[1], rel(os.path.join(STATE, "results")), rel(diffroot)))
    for line in summary:
        print("  " + line)
    for suite, test, why, path in explained:
        print("  note    %s %s: %s\n          %s" % (suite, test, why, rel(path)))
    for suite, test, why, path in differences:
        print("  DIFFERS %s %s: %s\n          %s" % (suite, test, why, rel(path)))
    for p in problems:
        print("  PROBLEM %s" % p)
    print("  time: %.0f s (%.0f s preparing the suites)" % (time.monotonic() - t_start,
                                                          t_ready - t_start))
    if differences or problems:
        print("transparency: FAILED (%d tests differ, %d problems)" % (len(differences),
                                                                      len(problems)))
        return 1
    print("transparency: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
