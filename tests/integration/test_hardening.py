"""Hardening: binding a privileged port then running as an unprivileged user; private keys
with loose permissions refused at start-up, for both daemons."""

import os
import shutil
import socket
import subprocess

import pytest

import harness
from harness import t


def free_privileged_port():
    for port in range(1023, 900, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024 on 127.0.0.1")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind a privileged port")
def test_relay_binds_privileged_port_then_drops_to_user(burrow_env):
    b = burrow_env
    b.client_port = free_privileged_port()
    b.start_relay(user="nobody")
    b.relay.wait_for_log("running as user=nobody", timeout=5)
    status = open("/proc/%d/status" % b.relay.pid).read()
    uids = [l for l in status.splitlines() if l.startswith("Uid:")][0].split()[1:]
    assert uids == ["65534"] * 4, status  # real, effective, saved, filesystem
    groups = [l for l in status.splitlines() if l.startswith("Groups:")][0].split()[1:]
    assert "0" not in groups, groups
    b.start_agent("agent-a", routes=("a",))
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_unknown_user_refused(burrow_env):
    b = burrow_env
    ini = b.write_relay_ini(user="no-such-user-pgburrow")
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini],
                       capture_output=True, text=True, timeout=t(10))
    assert r.returncode != 0
    assert 'no such user "no-such-user-pgburrow"' in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["relay", "agent"])
def test_loose_key_permissions_refused(burrow_env, kind):
    b = burrow_env
    key = os.path.join(b.dir, "loose.key")
    shutil.copy(b.certs.relay_key if kind == "relay" else b.certs.agent_key("agent-a"), key)
    os.chmod(key, 0o640)
    if kind == "relay":
        ini = b.write_relay_ini(tls_key=key)
    else:
        ini = b.write_agent_ini("agent-a", routes=("a",), key=key)
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-%s" % kind), "-c", ini,
                        "--check-config"], capture_output=True, text=True, timeout=t(10))
    assert r.returncode != 0
    assert "group or world access" in r.stderr and "loose.key" in r.stderr, r.stderr


def make_crl(workdir, ca_crt, revoke):
    """A CRL from the test CA revoking the given certificate files."""
    os.makedirs(workdir, exist_ok=True)
    open(os.path.join(workdir, "index.txt"), "w").close()
    with open(os.path.join(workdir, "crlnumber"), "w") as f:
        f.write("01\n")
    cnf = os.path.join(workdir, "ca.cnf")
    with open(cnf, "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\ncrlnumber = %s/crlnumber\n"
                "default_md = sha256\ndefault_crl_days = 30\n" % (workdir, workdir))
    base = ["openssl", "ca", "-batch", "-config", cnf, "-keyfile",
            ca_crt[:-len(".crt")] + ".key", "-cert", ca_crt]
    for crt in revoke:
        subprocess.run(base + ["-revoke", crt], check=True, capture_output=True, timeout=30)
    crl = os.path.join(workdir, "agents.crl")
    subprocess.run(base + ["-gencrl", "-out", crl], check=True, capture_output=True, timeout=30)
    return crl


def test_revoked_agent_certificate_refused(burrow_env):
    """agent_crl: a revoked agent certificate cannot open a tunnel; the others still can."""
    b = burrow_env
    crl = make_crl(os.path.join(b.dir, "crl"), b.certs.ca, [b.certs.agent_crt("agent-b")])
    b.start_relay(routes={"a": ["agent-a"], "b": ["agent-b"]}, agent_crl=crl)
    b.start_agent("agent-a", routes=("a",))
    mark = b.relay.mark()
    b.start_agent("agent-b", routes=("b",), wait=False)
    line = b.relay.wait_for_log("tunnel rejected", timeout=10, since=mark)
    assert "revoked" in line, line
    assert b.relay.count("tunnel up agent=agent-b", since=mark) == 0
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
