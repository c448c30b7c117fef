"""Logs and the audit log cannot be forged or redirected by what a peer sends (issue 9).

A user name, database or application_name with a newline, a carriage return, invalid UTF-8 or
JSON syntax is escaped by the one escaper (common/escape.c) in text and JSON logs: it never
starts a line of its own, and every JSON line stays valid JSON. Log and audit files are opened
with O_NOFOLLOW: a symbolic link, a hard-linked file or another user's file is refused at start.
"""

import json
import os
import struct
import subprocess

import harness
from harness import raw_connect, t, tls_after_sslrequest

FORGED = b"2026-12-01T00:00:00.000Z INFO  [t9] tunnel up agent=evil routes=a"


def startup_bytes(params):
    body = struct.pack("!I", harness.PROTOCOL_3_0)
    for k, v in params.items():
        body += k + b"\0" + v + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def hostile_session(port, ca):
    """A session whose startup strings try to forge log lines; read until the server answers."""
    s = tls_after_sslrequest(raw_connect(port), ca)
    try:
        s.sendall(startup_bytes({
            b"user": b"bob\n" + FORGED,
            b"database": b"db\r\n\"},{\"level\":\"error\"",
            b"application_name": b"app\xff\xfe\xc0\xaf\xe2\x80\xa8end",
        }))
        s.settimeout(t(10))
        reader = harness.MessageReader(s)
        typ, _ = reader.read()  # PostgreSQL's answer through the tunnel: a password request
        assert typ in ("R", "E"), typ
    finally:
        s.close()


def test_text_log_lines_cannot_be_forged(burrow):
    mark = burrow.relay.mark()
    agent = burrow.agents["agent-a"]
    amark = agent.mark()
    hostile_session(burrow.client_port, burrow.certs.ca)
    line = burrow.relay.wait_for_log("session end ", since=mark)
    agent.wait_for_log("session end", since=amark)
    for d, m in ((burrow.relay, mark), (agent, amark)):
        text = d._since(m)
        for l in text.splitlines():
            assert not l.startswith("2026-12-01T00:00:00.000Z"), "forged line in %s log" % d.kind
            assert "\r" not in l
    assert "user=bob\\n" + FORGED.decode() in line, line
    start = burrow.relay.wait_for_log("session start ", since=mark)
    assert "database=db\\r\\n\"},{\"level\":\"error\"" in start, start


def test_json_logs_stay_json(burrow_env):
    b = burrow_env
    audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(log_format="json", audit_log=audit)
    b.start_agent("agent-a", routes=("a",), log_format="json")
    mark = b.relay.mark()
    hostile_session(b.client_port, b.certs.ca)
    b.relay.wait_for_log("session end ", since=mark)
    b.agents["agent-a"].wait_for_log("session end")
    seen_user = False
    for path in (b.relay.logpath, b.agents["agent-a"].logpath, audit):
        with open(path, "rb") as f:
            for raw in f.read().splitlines():
                rec = json.loads(raw.decode("utf-8"))  # raises on invalid UTF-8 or JSON
                text = json.dumps(rec)
                if "bob\\n2026-12-01" in text:
                    seen_user = True
    assert seen_user, "the hostile user name was not logged at all"


def start_relay_expect_failure(b, want, **keys):
    ini = b.write_relay_ini(**keys)
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini],
                       capture_output=True, text=True, timeout=t(20))
    assert r.returncode != 0 and want in r.stderr, (keys, r.returncode, r.stderr)


def test_log_files_not_redirected(burrow_env):
    b = burrow_env
    target = os.path.join(b.dir, "root-only")
    with open(target, "w") as f:
        f.write("precious\n")
    os.chmod(target, 0o600)
    link = os.path.join(b.dir, "audit-link.jsonl")
    os.symlink(target, link)
    start_relay_expect_failure(b, "symbolic link", audit_log=link)
    start_relay_expect_failure(b, "symbolic link", log_file=link)
    hard = os.path.join(b.dir, "audit-hard.jsonl")
    os.link(target, hard)
    start_relay_expect_failure(b, "other hard links", audit_log=hard)
    fifo = os.path.join(b.dir, "audit.fifo")
    os.mkfifo(fifo)
    start_relay_expect_failure(b, "not a regular file", audit_log=fifo)
    with open(target) as f:
        assert f.read() == "precious\n"
    # a fresh file is created 0600 (audit) and 0640 (log)
    audit = os.path.join(b.dir, "fresh-audit.jsonl")
    logf = os.path.join(b.dir, "fresh.log")
    d = harness.Daemon("relay", b.write_relay_ini(audit_log=audit, log_file=logf),
                       os.path.join(b.dir, "fresh-relay.out")).start()
    b.daemons.append(d)
    harness.wait_until(lambda: os.path.exists(audit) and "listening clients=" in open(logf).read(),
                       t(10), "the relay listening with its files open")
    assert os.stat(audit).st_mode & 0o777 == 0o600
    assert os.stat(logf).st_mode & 0o777 == 0o640
