"""Certificate identity at the relay: agent and client certificates are not interchangeable
(the URI SAN pgburrow-agent:NAME), verify-user compares the role name PostgreSQL will use (63
bytes), TLS 1.2 offers AEAD suites only, and a revoked (reload) or expired certificate ends the
tunnels and sessions that rely on it at once."""

import calendar
import json
import os
import signal
import ssl
import subprocess
import time

import psycopg
import pytest

import harness
from harness import MKCERTS, raw_connect, t, wait_until


class MiniCA:
    """`openssl ca` over an existing CA (certificate and key): issues client or agent
    certificates with chosen names and validity, revokes them, and writes the CRL."""

    def __init__(self, d, ca_crt, ca_key):
        self.dir = d
        self.ca_crt, self.ca_key = ca_crt, ca_key
        os.makedirs(os.path.join(d, "new"), exist_ok=True)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "crlnumber"), "w") as f:
            f.write("01\n")
        self.cnf = os.path.join(d, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\n"
                    "new_certs_dir = {0}/new\nrand_serial = yes\ncrlnumber = {0}/crlnumber\n"
                    "default_md = sha256\ndefault_crl_days = 30\ndefault_days = 30\n"
                    "policy = pol\nunique_subject = no\n[pol]\ncommonName = supplied\n"
                    "[leaf]\nbasicConstraints = critical, CA:false\n"
                    "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n"
                    .format(d))
        self.crl = os.path.join(d, "crl.pem")
        self.write_crl()

    def _ca(self, *args):
        subprocess.run(["openssl", "ca", "-batch", "-config", self.cnf, "-cert", self.ca_crt,
                        "-keyfile", self.ca_key] + list(args), check=True, capture_output=True,
                       timeout=60)

    def issue(self, base, cn, uri=None, seconds=None):
        """base.crt/base.key with CN=cn (any length), optionally a URI SAN and a validity
        ending `seconds` from now."""
        crt, key = os.path.join(self.dir, base + ".crt"), os.path.join(self.dir, base + ".key")
        csr = os.path.join(self.dir, base + ".csr")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
        os.chmod(key, 0o600)
        subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr],
                       check=True, capture_output=True)
        ext = os.path.join(self.dir, base + ".ext")
        with open(ext, "w") as f:
            f.write("[leaf]\nbasicConstraints = critical, CA:false\n"
                    "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n")
            if uri:
                f.write("subjectAltName = URI:%s\n" % uri)
        args = ["-in", csr, "-out", crt, "-extfile", ext, "-extensions", "leaf", "-notext"]
        if seconds is not None:
            fmt = "%y%m%d%H%M%SZ"
            now = time.time()
            args += ["-startdate", time.strftime(fmt, time.gmtime(now - 60)),
                     "-enddate", time.strftime(fmt, time.gmtime(now + seconds))]
        self._ca(*args)
        return crt, key

    def write_crl(self):
        tmp = self.crl + ".tmp"
        self._ca("-gencrl", "-out", tmp)
        os.rename(tmp, self.crl)  # by rename, as the README asks

    def revoke(self, crt):
        self._ca("-revoke", crt)
        self.write_crl()


def not_after(crt):
    out = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-enddate"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))


def refused(b, **kw):
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(**kw).close()
    return str(ei.value)


def sighup(d):
    mark = d.mark()
    os.kill(d.pid, signal.SIGHUP)
    d.wait_for_log("reload: ok (trigger=SIGHUP)", timeout=10, since=mark)


def audit_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fails_now(conn):
    """The next query on conn fails: return the error text."""
    with pytest.raises(psycopg.OperationalError) as ei:
        conn.execute("select 1")
    return str(ei.value)


# ---- agent and client certificates are not interchangeable -------------------------------

@pytest.fixture
def shared_ca(burrow_env, certs):
    """openssl ca over the test CA, which signs agents and clients alike."""
    return MiniCA(os.path.join(burrow_env.dir, "shared-ca"), certs.ca,
                  os.path.join(certs.dir, "ca.key"))


def test_client_cert_with_agent_cn_refused_on_tunnel(burrow_env, shared_ca):
    b = burrow_env
    b.start_relay()
    # what `mkcerts.sh DIR client agent-a` makes: the agent's CN, no agent mark
    crt, key = shared_ca.issue("client-agent-a", "agent-a")
    mark = b.relay.mark()
    b.start_agent("agent-a", routes=("a",), wait=False, cert=crt, key=key)
    line = b.relay.wait_for_log("tunnel rejected", timeout=10, since=mark)
    assert "not an agent certificate (no URI subjectAltName pgburrow-agent:NAME)" in line, line
    # a mark whose name is not the CN is refused too
    b.agents["agent-a"].stop()
    crt, key = shared_ca.issue("agent-a-mismatch", "agent-a", uri="pgburrow-agent:agent-b")
    mark = b.relay.mark()
    b.start_agent("agent-a", routes=("a",), wait=False, cert=crt, key=key)
    line = b.relay.wait_for_log("tunnel rejected", timeout=10, since=mark)
    assert "CN is not its agent name" in line, line
    b.agents["agent-a"].stop()
    assert b.relay.count("tunnel up agent=") == 0
    # the real agent certificate (mkcerts.sh agent agent-a) works
    b.start_agent("agent-a", routes=("a",))
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_agent_cert_refused_as_client_cert(burrow_env, certs):
    b = burrow_env
    routes = {"a": ["agent-a"],
              "v": {"agents": ["agent-a"], "client_cert": "verify", "client_ca": certs.ca},
              "vu": {"agents": ["agent-a"], "client_cert": "verify-user", "client_ca": certs.ca}}
    b.start_relay(routes=routes)
    b.start_agent("agent-a", routes=("a", "v", "vu"))
    agent_cert = dict(sslcert=certs.agent_crt("agent-a"), sslkey=certs.agent_key("agent-a"))
    mark = b.relay.mark()
    msg = refused(b, route="v", **agent_cert)
    assert ('pgburrow: route "v": an agent certificate (URI pgburrow-agent:NAME) is not a '
            'client certificate') in msg, msg
    msg = refused(b, route="vu", user="agent-a", **agent_cert)
    assert "an agent certificate" in msg, msg
    line = b.relay.wait_for_log("refused client=", timeout=5, since=mark)
    assert "sqlstate=28000" in line and "an agent certificate" in line, line
    # a client certificate from the same CA is fine
    client = dict(sslcert=certs.client_crt("postgres"), sslkey=certs.client_key("postgres"))
    with b.connect(route="v", **client) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "postgres"


# ---- verify-user: the role name PostgreSQL logs in --------------------------------------

LONG = "r" * 63


def test_verify_user_compares_the_role_postgres_uses(burrow_env, certs, shared_ca, pg):
    b = burrow_env
    if not pg.sql("select 1 from pg_roles where rolname = %s", (LONG,)):
        pg.sql('create role "%s" login' % LONG)
    routes = {"a": ["agent-a"],
              "vu": {"agents": ["agent-a"], "client_cert": "verify-user", "client_ca": certs.ca}}
    b.start_relay(routes=routes)
    b.start_agent("agent-a", routes=("a", "vu"))
    crt64, key64 = shared_ca.issue("cn64", LONG + "z")
    crt63, key63 = shared_ca.issue("cn63", LONG)
    # CN of 64 bytes, user the same 64 bytes: PostgreSQL would log in role LONG (63 bytes),
    # which the certificate does not name
    msg = refused(b, route="vu", user=LONG + "z", dbname="postgres", sslcert=crt64,
                  sslkey=key64)
    assert 'certificate CN "%sz" does not match user "%s"' % (LONG, LONG) in msg, msg
    # CN of 63 bytes, user of 64: PostgreSQL logs in LONG, which the certificate names (its
    # own cert method accepts this pair too)
    with b.connect(route="vu", user=LONG + "z", dbname="postgres", sslcert=crt63,
                   sslkey=key63) as conn:
        assert conn.execute("select current_user").fetchone()[0] == LONG


# ---- TLS 1.2: ECDHE with AEAD only ------------------------------------------------------

def tls12_handshake(b, cipher):
    ctx = harness.client_tls_context(b.certs.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with raw_connect(b.client_port) as s:
        s.sendall(harness.ssl_request())
        assert harness.recv_exact(s, 1) == b"S"
        with ctx.wrap_socket(s, server_hostname="localhost") as tls:
            return tls.cipher()[0]


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                                    "ECDHE-ECDSA-AES128-SHA256", "AES128-GCM-SHA256"])
def test_tls12_refuses_cbc_and_static_rsa(burrow, cipher):
    with pytest.raises(ssl.SSLError):
        tls12_handshake(burrow, cipher)


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                                    "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_accepts_ecdhe_aead(burrow, cipher):
    assert tls12_handshake(burrow, cipher) == cipher


# ---- revocation on reload, expiry --------------------------------------------------------

@pytest.fixture
def client_pki(burrow_env):
    d = os.path.join(burrow_env.dir, "client-pki")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["bash", MKCERTS, d, "ca"], check=True, capture_output=True, timeout=60)
    return MiniCA(d, os.path.join(d, "ca.crt"), os.path.join(d, "ca.key"))


def cert_routes(pki):
    return {"a": ["agent-a"],
            "v": {"agents": ["agent-a"], "client_cert": "verify", "client_ca": pki.ca_crt,
                  "client_crl": pki.crl}}


def test_revoked_client_cert_ends_live_session(burrow_env, client_pki):
    b = burrow_env
    audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(routes=cert_routes(client_pki), audit_log=audit)
    b.start_agent("agent-a", routes=("a", "v"))
    crt, key = client_pki.issue("doomed", "postgres")
    crt2, key2 = client_pki.issue("kept", "postgres")
    doomed = b.connect(route="v", sslcert=crt, sslkey=key)
    kept = b.connect(route="v", sslcert=crt2, sslkey=key2)
    plain = b.connect(route="a")
    try:
        assert doomed.execute("select 1").fetchone()[0] == 1
        mark = b.relay.mark()
        client_pki.revoke(crt)
        sighup(b.relay)
        line = b.relay.wait_for_log("session revoked ", timeout=5, since=mark)
        assert "sqlstate=28000" in line and "certificate revoked" in line, line
        assert b.relay.count("session revoked ", since=mark) == 1
        msg = fails_now(doomed)
        assert ('pgburrow: route "v": certificate verify failed: certificate revoked; session '
                'ended by a configuration reload') in msg, msg
        # the others go on
        assert kept.execute("select 2").fetchone()[0] == 2
        assert plain.execute("select 3").fetchone()[0] == 3
    finally:
        for c in (doomed, kept, plain):
            c.close()
    ends = [x for x in audit_lines(audit) if x["event"] == "session_end"
            and "certificate revoked" in (x.get("reason") or "")]
    assert len(ends) == 1, audit_lines(audit)
    # and new sessions with it are refused
    assert "certificate revoked" in refused(b, route="v", sslcert=crt, sslkey=key)


def test_revoked_agent_cert_closes_tunnel(burrow_env, certs, shared_ca):
    b = burrow_env
    audit = os.path.join(b.dir, "audit.jsonl")
    b.start_relay(agent_crl=shared_ca.crl, audit_log=audit)
    b.start_agent("agent-a", routes=("a",))
    conn = b.connect()
    try:
        assert conn.execute("select 1").fetchone()[0] == 1
        mark = b.relay.mark()
        shared_ca.revoke(certs.agent_crt("agent-a"))
        sighup(b.relay)
        line = b.relay.wait_for_log("tunnel closed agent=agent-a", timeout=5, since=mark)
        assert "agent certificate no longer accepted: certificate revoked" in line, line
        b.relay.wait_for_log("tunnel down agent=agent-a", timeout=5, since=mark)
        b.agents["agent-a"].wait_for_log("code=28000", timeout=5)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()
    # its next tunnels are refused in the handshake
    b.relay.wait_for_log("certificate revoked", timeout=10, since=b.relay.mark())
    msg = refused(b)
    assert "no agent is connected" in msg, msg
    downs = [x for x in audit_lines(audit) if x["event"] == "tunnel_down"]
    assert downs and "certificate revoked" in (downs[-1].get("reason") or ""), downs


def test_expired_client_cert_ends_live_session(burrow_env, client_pki):
    b = burrow_env
    b.start_relay(routes=cert_routes(client_pki))
    b.start_agent("agent-a", routes=("a", "v"))
    crt, key = client_pki.issue("short", "postgres", seconds=int(t(5)))
    end = not_after(crt)
    conn = b.connect(route="v", sslcert=crt, sslkey=key)
    try:
        assert time.time() <= end, "the session opened after its certificate expired"
        assert conn.execute("select 1").fetchone()[0] == 1
        line = b.relay.wait_for_log("session revoked ", timeout=end - time.time() + 5,
                                    scale=False)
        assert time.time() >= end, "ended before its certificate expired"
        assert "client certificate expired" in line, line
        msg = fails_now(conn)
        assert 'pgburrow: route "v": client certificate expired; session ended' in msg, msg
    finally:
        conn.close()
