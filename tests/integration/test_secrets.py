"""Secrets never appear in logs (issue 5, Hardening).

Relay and agent run with log_level=debug (text and JSON, stderr and log_file, plus the relay's
audit log without statements); clients log in with a SCRAM password (right and wrong), with a
client certificate, and run queries (simple, extended, COPY) that carry a marker string. No log
may contain the passwords, the marker (statement auditing is off by default), or any private
key material (no base64 line of a key file, no hex of its DER).
"""

import base64
import binascii
import glob
import os

import psycopg
import pytest

import harness
from harness import SCRAM_PASSWORD, SCRAM_USER


def key_needles(path):
    """Strings that would betray the key in path: each base64 line, and hex windows of its DER."""
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("-----")]
    der = base64.b64decode("".join(lines))
    needles = [l for l in lines if len(l) >= 16]
    hx = binascii.hexlify(der).decode()
    for i in range(0, len(hx) - 32, 16):
        needles += [hx[i:i + 32], hx[i:i + 32].upper()]
    return needles


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_logged(burrow_env, fmt):
    b = burrow_env
    certs = b.certs
    relay_file = os.path.join(b.dir, "relay-%s.log" % fmt)
    agent_file = os.path.join(b.dir, "agent-%s.log" % fmt)
    audit_file = os.path.join(b.dir, "audit-%s.jsonl" % fmt)
    routes = {"a": ["agent-a"],
              "c": {"agents": ["agent-a"], "client_cert": "verify-user", "client_ca": certs.ca}}
    b.write_relay_ini(routes=routes, log_level="debug", log_format=fmt, log_file=relay_file,
                      audit_log=audit_file)
    b.relay = harness.Daemon("relay", b.relay_ini, b._logpath("relay")).start()
    b.daemons.append(b.relay)
    harness.wait_until(lambda: os.path.exists(relay_file) and
                       "listening clients=" in open(relay_file).read(), harness.t(10),
                       "the relay to listen")
    ini = b.write_agent_ini("agent-a", routes=("a", "c"), log_level="debug", log_format=fmt,
                            log_file=agent_file)
    b.agents["agent-a"] = agent = harness.Daemon("agent", ini, b._logpath("agent-a")).start()
    b.daemons.append(agent)
    harness.wait_until(lambda: os.path.exists(agent_file) and
                       "tunnel up relay=" in open(agent_file).read(), harness.t(10),
                       "the agent's tunnel")

    marker = "pgb-marker-" + binascii.hexlify(os.urandom(8)).decode()
    wrong_password = "wr0ng-" + binascii.hexlify(os.urandom(6)).decode()

    # SCRAM, right password: simple query, extended query with the marker as a parameter, COPY.
    with b.connect(user=SCRAM_USER, password=SCRAM_PASSWORD) as conn:
        assert conn.execute("select '%s'" % marker).fetchone()[0] == marker
        assert conn.execute("select %s::text", (marker,)).fetchone()[0] == marker
        with conn.cursor().copy("COPY (SELECT '%s') TO STDOUT" % marker) as copy:
            assert b"".join(copy).strip() == marker.encode()
    # SCRAM, wrong password.
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(user=SCRAM_USER, password=wrong_password)
    assert "password authentication failed" in str(ei.value), repr(ei.value)
    # The exception's traceback holds the failed connection's socket open; let it go (a
    # relay stopped with SIGINT waits up to 5 s for such a client to close, see the report).
    del ei
    # Client certificate (verify-user), then a query.
    with b.connect(route="c", sslcert=certs.client_crt("postgres"),
                   sslkey=certs.client_key("postgres")) as conn:
        assert conn.execute("select %s::text || '-cert'", (marker,)).fetchone()[0] == \
            marker + "-cert"
    # A TCP connection that sends nothing (logged at debug level by the relay).
    harness.raw_connect(b.client_port).close()
    # A connection string with the password that fails at the relay (unknown route).
    with pytest.raises(psycopg.OperationalError):
        b.connect(user=SCRAM_USER, password=wrong_password, route="nosuchroute")

    harness.wait_until(lambda: open(relay_file).read().count("session end ") >= 3 and
                       "closed without sending anything" in open(relay_file).read(),
                       harness.t(10), "the session end lines")
    logs = {p: open(p, encoding="utf-8", errors="replace").read()
            for p in [relay_file, agent_file, audit_file] + [d.logpath for d in b.daemons]}
    relay_log = logs[relay_file]
    # The logs are really at debug level and really record these sessions.
    assert "debug" in relay_log.lower() and "debug" in logs[agent_file].lower()
    assert "cert_subject=CN=postgres" in relay_log or "CN=postgres" in relay_log, \
        "the certificate session is not in the relay log"
    assert "user=" + SCRAM_USER in relay_log or '"user":"%s"' % SCRAM_USER in relay_log or \
        SCRAM_USER in relay_log

    secrets = {
        "SCRAM password": [SCRAM_PASSWORD, binascii.hexlify(SCRAM_PASSWORD.encode()).decode()],
        "wrong password": [wrong_password, binascii.hexlify(wrong_password.encode()).decode()],
        "query marker": [marker, binascii.hexlify(marker.encode()).decode()],
    }
    for key in sorted(glob.glob(os.path.join(certs.dir, "*.key"))):
        secrets["key " + os.path.basename(key)] = key_needles(key)
    found = []
    for path, text in logs.items():
        low = text.lower()
        for what, needles in secrets.items():
            if any(n in text or n.lower() in low for n in needles):
                found.append("%s in %s" % (what, path))
    print("checked %d log files (%d bytes) for %d secrets" % (
        len(logs), sum(len(x) for x in logs.values()), len(secrets)))
    assert not found, "secrets in logs: %s" % found
