"""Command line of both daemons: --help, --version, --check-config."""

import os
import re
import subprocess

import pytest

import harness
from harness import t, write_ini

KINDS = ("relay", "agent")


def run(kind, *args, timeout=20):
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-" + kind)] + list(args),
                       capture_output=True, text=True, timeout=t(timeout), env=harness.DAEMON_ENV,
                       stdin=subprocess.DEVNULL)
    if harness.SANITIZER:
        found = harness.sanitizer_findings(r.stdout + r.stderr)
        assert not found, "sanitizer report from pgburrow-%s %s:\n%s" % (kind, " ".join(args),
                                                                         r.stderr)
    return r


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(binaries, kind, flag):
    r = run(kind, flag)
    assert r.returncode == 0, r.stderr
    assert re.match(r"pgburrow-%s \d+\.\d+\.\d+\b" % kind, r.stdout), repr(r.stdout)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(binaries, kind, flag):
    r = run(kind, flag)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "pgburrow-%s" % kind in out, out
    for option in ("--check-config", "--version", "-c"):
        assert option in out, "--help does not mention %s:\n%s" % (option, out)


def good_config(kind, tmp_path, certs):
    if kind == "relay":
        sections = [
            ("relay", {"listen": "127.0.0.1:1", "tunnel_listen": "127.0.0.1:2",
                       "tls_cert": certs.relay_crt, "tls_key": certs.relay_key,
                       "agent_ca": certs.ca}),
            ("route a", {"agents": "agent-a"}),
        ]
    else:
        sections = [
            ("agent", {"relay": "127.0.0.1:2", "ca": certs.ca,
                       "cert": certs.agent_crt("agent-a"), "key": certs.agent_key("agent-a")}),
            ("route a", {"host": "/tmp", "port": "5432"}),
        ]
    return sections


@pytest.mark.parametrize("kind", KINDS)
def test_check_config_good(binaries, certs, tmp_path, kind):
    path = write_ini(str(tmp_path / ("%s.ini" % kind)), good_config(kind, tmp_path, certs))
    r = run(kind, "--check-config", "-c", path)
    assert r.returncode == 0, "valid config refused:\n%s%s" % (r.stdout, r.stderr)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["unknown_key", "bad_value"])
def test_check_config_bad(binaries, certs, tmp_path, kind, bad):
    sections = good_config(kind, tmp_path, certs)
    main = sections[0][1]
    if bad == "unknown_key":
        main["no_such_key"] = "1"
        key = "no_such_key"
    elif kind == "relay":
        main["tunnel_listen"] = "7443"  # not host:port
        key = "tunnel_listen"
    else:
        main["reconnect_max"] = "soon"  # not a duration
        key = "reconnect_max"
    path = write_ini(str(tmp_path / ("%s.ini" % kind)), sections)
    # The line of the bad key in the file we wrote.
    with open(path) as f:
        lineno = next(i for i, l in enumerate(f, 1) if l.startswith(key + " "))
    r = run(kind, "--check-config", "-c", path)
    assert r.returncode != 0, "bad config accepted:\n%s%s" % (r.stdout, r.stderr)
    assert "%s.ini:%d:" % (kind, lineno) in r.stderr, \
        "stderr does not name %s.ini:%d:\n%s" % (kind, lineno, r.stderr)
    assert key in r.stderr, r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_bad_flag_value(binaries, certs, tmp_path, kind):
    """A flag overrides the file; a bad flag value is an error too (exit 1, names the key)."""
    path = write_ini(str(tmp_path / ("%s.ini" % kind)), good_config(kind, tmp_path, certs))
    flag = "--relay.max_sessions=lots" if kind == "relay" else "--agent.connect_timeout=later"
    r = run(kind, "--check-config", "-c", path, flag)
    assert r.returncode != 0, r.stderr
    assert flag.split("=")[0].split(".")[-1] in r.stderr, r.stderr


# The limits on what unauthenticated peers (relay) and a relay (agent) can make a daemon hold:
# (daemon, key, a value at a bound, a value just past it).
LIMIT_KEYS = [
    ("relay", "max_pending", "1", "0"),
    ("relay", "max_pending_per_source", "0", "1000001"),
    ("relay", "handshake_rate", "0", "-1"),
    ("relay", "handshake_burst", "1000000", "0"),
    ("relay", "hello_timeout", "24h", "0"),
    ("agent", "max_streams_per_tunnel", "100000", "100001"),
    ("agent", "max_stream_window", "16k", "17M"),
]


@pytest.mark.parametrize("kind,key,good,bad", LIMIT_KEYS)
def test_check_config_limit_keys(binaries, certs, tmp_path, kind, key, good, bad):
    """--check-config takes each limit key at its bound, and refuses a value past it, as a flag
    or in the file (naming the file, line and key)."""
    sections = good_config(kind, tmp_path, certs)
    sections[0][1][key] = good
    path = write_ini(str(tmp_path / ("%s.ini" % kind)), sections)
    r = run(kind, "--check-config", "-c", path)
    assert r.returncode == 0, "%s = %s refused:\n%s%s" % (key, good, r.stdout, r.stderr)
    r = run(kind, "--check-config", "-c", path, "--%s.%s=%s" % (kind, key, bad))
    assert r.returncode != 0, "--%s.%s=%s accepted:\n%s" % (kind, key, bad, r.stdout)
    assert "command line: [%s] %s:" % (kind, key) in r.stderr, r.stderr

    sections[0][1][key] = bad
    path = write_ini(str(tmp_path / ("%s.ini" % kind)), sections)
    with open(path) as f:
        lineno = next(i for i, l in enumerate(f, 1) if l.startswith(key + " "))
    r = run(kind, "--check-config", "-c", path)
    assert r.returncode != 0, "%s = %s accepted:\n%s" % (key, bad, r.stdout)
    assert "%s.ini:%d: [%s] %s:" % (kind, lineno, kind, key) in r.stderr, r.stderr
