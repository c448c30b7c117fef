"""Access control and TLS policy at the relay's front door: client certificates per route
(verify, verify-user, CRL, ident map), source address allowlists (global: before TLS; per
route: inside TLS), TLS policy keys, direct TLS and ALPN, and silent health checks."""

import os
import socket
import ssl
import struct
import subprocess
import warnings

import psycopg
import pytest

import harness
from harness import (MKCERTS, expect_closed, kv, raw_connect, read_error, read_message,
                     recv_exact, ssl_request, startup_message, t, tls_after_sslrequest)


class ClientPKI:
    """A client CA of its own (not the agents' CA): certificates for postgres and scram_user, a
    revoked one and its CRL; and a certificate for postgres from another CA."""

    def __init__(self, root):
        self.dir = os.path.join(root, "client-ca")
        self.other = os.path.join(root, "client-other-ca")

    def mk(self, d, *args):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["bash", MKCERTS, d] + list(args), check=True, capture_output=True,
                       timeout=60)

    def make(self):
        if os.path.exists(self.crl):
            return self
        self.mk(self.dir, "ca")
        for user in ("postgres", "scram_user", "revoked"):
            self.mk(self.dir, "client", user)
        self.mk(self.other, "ca")
        self.mk(self.other, "client", "postgres")
        # revoke one certificate with `openssl ca`, then publish the CRL
        with open(os.path.join(self.dir, "index.txt"), "w"):
            pass
        with open(os.path.join(self.dir, "crlnumber"), "w") as f:
            f.write("01\n")
        cnf = os.path.join(self.dir, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\n"
                    "crlnumber = %s/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n"
                    % (self.dir, self.dir))
        base = ["openssl", "ca", "-batch", "-config", cnf, "-keyfile", self.ca_key, "-cert",
                self.ca]
        subprocess.run(base + ["-revoke", self.crt("revoked")], check=True, capture_output=True)
        subprocess.run(base + ["-gencrl", "-out", self.crl + ".tmp"], check=True,
                       capture_output=True)
        os.rename(self.crl + ".tmp", self.crl)
        return self

    @property
    def ca(self):
        return os.path.join(self.dir, "ca.crt")

    @property
    def ca_key(self):
        return os.path.join(self.dir, "ca.key")

    @property
    def crl(self):
        return os.path.join(self.dir, "crl.pem")

    def crt(self, user, other=False):
        return os.path.join(self.other if other else self.dir, "client-%s.crt" % user)

    def key(self, user, other=False):
        return os.path.join(self.other if other else self.dir, "client-%s.key" % user)

    def cert_kw(self, user, other=False):
        return dict(sslcert=self.crt(user, other), sslkey=self.key(user, other))

    def serial(self, user):
        out = subprocess.run(["openssl", "x509", "-in", self.crt(user), "-noout", "-serial"],
                             check=True, capture_output=True, text=True).stdout
        return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def pki(certs):
    return ClientPKI(certs.root).make()


def refused(b, **kw):
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(**kw).close()
    return str(ei.value)


def works(b, **kw):
    with b.connect(**kw) as conn:
        return conn.execute("select current_user").fetchone()[0]


# ---- client certificates per route ---------------------------------------------------------

@pytest.fixture
def cert_burrow(burrow_env, pki):
    b = burrow_env
    ident = os.path.join(b.dir, "ident.map")
    with open(ident, "w") as f:
        f.write("# CERT_CN    PG_USER\nscram_user  postgres\n")
    routes = {
        "a": ["agent-a"],  # no certificate needed, although every client is asked for one
        "vu": {"agents": ["agent-a"], "client_cert": "verify-user", "client_ca": pki.ca,
               "client_crl": pki.crl},
        "v": {"agents": ["agent-a"], "client_cert": "verify", "client_ca": pki.ca,
              "client_crl": pki.crl},
        "map": {"agents": ["agent-a"], "client_cert": "verify-user", "client_ca": pki.ca,
                "ident_map": ident},
    }
    b.start_relay(routes=routes)
    b.start_agent("agent-a", routes=("a", "vu", "v", "map"))
    return b


def test_client_cert_verify_user(cert_burrow, pki):
    b = cert_burrow
    mark = b.relay.mark()
    assert works(b, route="vu", **pki.cert_kw("postgres")) == "postgres"
    line = kv(b.relay.wait_for_log("session start ", timeout=5, since=mark))
    assert line["route"] == "vu" and line["cert_subject"] == "CN=postgres", line
    assert line["cert_serial"].lstrip("0") == pki.serial("postgres").lstrip("0"), line

    msg = refused(b, route="vu")
    assert 'pgburrow: route "vu" requires a client certificate' in msg, msg
    msg = refused(b, route="vu", **pki.cert_kw("postgres", other=True))
    assert "certificate verify failed: unable to get local issuer certificate" in msg, msg
    msg = refused(b, route="vu", **pki.cert_kw("scram_user"))
    assert 'certificate CN "scram_user" does not match user "postgres"' in msg, msg
    b.relay.wait_for_log("refused client=127.0.0.1:", timeout=5, since=mark)
    assert b.relay.count("sqlstate=28000", since=mark) == 3
    # a route without client_cert does not care about certificates, sent or not
    assert works(b, route="a") == "postgres"
    assert works(b, route="a", **pki.cert_kw("scram_user")) == "postgres"


def test_client_cert_revoked(cert_burrow, pki):
    b = cert_burrow
    for route in ("v", "vu"):
        msg = refused(b, route=route, user="revoked", **pki.cert_kw("revoked"))
        assert "certificate verify failed: certificate revoked" in msg, msg
    b.relay.wait_for_log("reason=route \"v\": certificate verify failed: certificate revoked",
                         timeout=5)
    # not revoked: verify accepts any CN from the CA
    assert works(b, route="v", **pki.cert_kw("scram_user")) == "postgres"


def test_client_cert_ident_map(cert_burrow, pki):
    b = cert_burrow
    assert works(b, route="map", **pki.cert_kw("scram_user")) == "postgres"
    # with a map, only the map counts (as in PostgreSQL): CN postgres is not mapped
    msg = refused(b, route="map", **pki.cert_kw("postgres"))
    assert 'certificate CN "postgres" is not mapped (ident_map) to user "postgres"' in msg, msg


def test_client_cert_raw_sqlstate(cert_burrow):
    b = cert_burrow
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres",
                                         "options": "-c pgburrow.route=vu"}))
            err = read_error(tls)
            expect_closed(tls, t(5))
    assert err.get("C") == "28000" and "requires a client certificate" in err["M"], err


def test_client_cert_files_checked_at_load(burrow_env, pki, tmp_path):
    b = burrow_env
    bad = tmp_path / "ident.map"
    bad.write_text("alice\n")
    cases = [
        ({"client_cert": "verify"}, "[route a] client_ca: required when client_cert = verify"),
        ({"client_cert": "verify", "client_ca": str(tmp_path / "none.crt")},
         "could not access CA file"),
        ({"client_cert": "verify-user", "client_ca": pki.ca, "ident_map": str(bad)},
         "ident_map: %s: line 1: expected CERT_CN PG_USER" % bad),
        ({"client_cert": "verify", "client_ca": pki.ca, "client_crl": pki.ca},
         "could not load CRL file"),
    ]
    for keys, want in cases:
        route = dict(keys, agents=["agent-a"])
        ini = b.write_relay_ini(routes={"a": route})
        r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini,
                            "--check-config"], capture_output=True, text=True, timeout=t(10))
        assert r.returncode == 1 and want in r.stderr, (keys, r.returncode, r.stderr)


# ---- source address allowlists -------------------------------------------------------------

def test_route_allow_refuses_inside_tls(burrow_env):
    b = burrow_env
    b.start_relay(routes={"a": {"agents": ["agent-a"], "allow": "10.0.0.0/8"},
                          "b": {"agents": ["agent-a"], "allow": "10.0.0.0/8, 127.0.0.0/8, ::1"}})
    b.start_agent("agent-a", routes=("a", "b"))
    mark = b.relay.mark()
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:  # TLS is done: the route is known later
            tls.sendall(startup_message({"user": "postgres"}))
            err = read_error(tls)
    assert err.get("C") == "28000", err
    assert err.get("M") == 'pgburrow: address not allowed for route "a"', err
    line = b.relay.wait_for_log("sqlstate=28000", timeout=5, since=mark)
    assert "refused client=127.0.0.1:" in line and "reason=address not allowed" in line, line
    assert "address not allowed" in refused(b)
    assert works(b, route="b") == "postgres"


def test_global_allow_refuses_before_tls(burrow_env):
    b = burrow_env
    b.start_relay(allow="10.0.0.0/8, 2001:db8::/32")
    b.start_agent("agent-a", routes=("a",))
    mark = b.relay.mark()
    with raw_connect(b.client_port) as s:
        s.sendall(ssl_request())
        err = read_error(s)  # an ErrorResponse instead of 'S': no TLS at all
        expect_closed(s, t(5))
    assert err.get("C") == "28000" and err.get("M") == "pgburrow: address not allowed", err
    line = b.relay.wait_for_log("sqlstate=28000", timeout=5, since=mark)
    assert "reason=address not allowed" in line, line
    # a direct TLS ClientHello is closed without a handshake
    ctx = harness.client_tls_context(b.certs.ca)
    ctx.set_alpn_protocols(["postgresql"])
    with raw_connect(b.client_port) as s:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            ctx.wrap_socket(s, server_hostname="localhost")
    with pytest.raises(psycopg.OperationalError):
        b.connect().close()
    assert b.relay.count("TLS handshake failed", since=mark) == 0


def test_global_allow_admits_listed_address(burrow_env):
    b = burrow_env
    b.start_relay(allow="10.0.0.0/8, 127.0.0.1")
    b.start_agent("agent-a", routes=("a",))
    assert works(b) == "postgres"


# ---- TLS policy -----------------------------------------------------------------------------

def tls12_cipher(b, cipher):
    ctx = harness.client_tls_context(b.certs.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest_ctx(s, ctx) as tls:
            return tls.cipher()[0]


def tls_after_sslrequest_ctx(s, ctx):
    s.sendall(ssl_request())
    assert recv_exact(s, 1) == b"S"
    return ctx.wrap_socket(s, server_hostname="localhost")


def test_tls_policy_keys(burrow_env):
    b = burrow_env
    b.start_relay(tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384",
                  tls_ciphersuites="TLS_AES_256_GCM_SHA384", tls_groups="P-256:X25519",
                  tunnel_ciphersuites="TLS_CHACHA20_POLY1305_SHA256", tunnel_groups="X25519")
    b.start_agent("agent-a", routes=("a",))  # the tunnel works with its own policy
    assert tls12_cipher(b, "ECDHE-ECDSA-AES256-GCM-SHA384") == "ECDHE-ECDSA-AES256-GCM-SHA384"
    with pytest.raises(ssl.SSLError):
        tls12_cipher(b, "ECDHE-ECDSA-AES128-GCM-SHA256")
    ctx = harness.client_tls_context(b.certs.ca)
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest_ctx(s, ctx) as tls:
            assert tls.version() == "TLSv1.3"
            assert tls.cipher()[0] == "TLS_AES_256_GCM_SHA384"
    assert works(b) == "postgres"
    # TLS 1.1 is never accepted
    ctx = harness.client_tls_context(b.certs.ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with raw_connect(b.client_port) as s:
        with pytest.raises(ssl.SSLError) as ei:
            tls_after_sslrequest_ctx(s, ctx)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value), "the client could not offer TLS 1.1"


def test_tls_min_version_13_refuses_tls12(burrow_env):
    b = burrow_env
    b.start_relay(tls_min_version="TLSv1.3")
    ctx = harness.client_tls_context(b.certs.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with raw_connect(b.client_port) as s:
        with pytest.raises(ssl.SSLError):
            tls_after_sslrequest_ctx(s, ctx)


@pytest.mark.parametrize("key,value,want", [
    ("tls_ciphersuites", "TLS_BOGUS", 'unknown TLS 1.3 cipher suite "TLS_BOGUS"'),
    ("tunnel_ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_TYPO",
     'unknown TLS 1.3 cipher suite "TLS_TYPO"'),
    ("tls_ciphers", "NOPE", 'TLS 1.2 cipher list "NOPE" not accepted'),
    ("tls_groups", "X25519:bogus", 'group list "X25519:bogus" not accepted'),
    ("allow", "10.1.0.0/8", "bits are set after the /8 prefix"),
    ("sni_domains", "*.db.example.test", 'write the domain without "*."'),
])
def test_bad_policy_values_fail_check_config(burrow_env, key, value, want):
    ini = burrow_env.write_relay_ini(**{key: value})
    r = subprocess.run([os.path.join(harness.BIN, "pgburrow-relay"), "-c", ini,
                        "--check-config"], capture_output=True, text=True, timeout=t(10))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "[relay] %s: " % key in r.stderr and want in r.stderr, r.stderr


# ---- direct TLS and ALPN --------------------------------------------------------------------

def direct_tls(b, alpn):
    ctx = harness.client_tls_context(b.certs.ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    s = raw_connect(b.client_port)
    try:
        return ctx.wrap_socket(s, server_hostname="localhost")  # ClientHello as first bytes
    except BaseException:
        s.close()
        raise


def test_direct_tls_with_alpn_postgresql(burrow):
    mark = burrow.relay.mark()
    with direct_tls(burrow, ["postgresql"]) as tls:
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
        typ, body = read_message(tls)
        assert typ == "R", (typ, body)
        assert struct.unpack("!I", body[:4])[0] == 0  # AuthenticationOk (trust)
        tls.sendall(harness.TERMINATE)
    burrow.relay.wait_for_log("session start ", timeout=5, since=mark)


@pytest.mark.parametrize("alpn,why", [(None, "did not offer ALPN postgresql"),
                                      (["http/1.1"], "offered ALPN http/1.1")])
def test_direct_tls_without_alpn_postgresql_refused(burrow, alpn, why):
    mark = burrow.relay.mark()
    with pytest.raises(ssl.SSLError) as ei:
        direct_tls(burrow, alpn).close()
    assert "NO APPLICATION PROTOCOL" in str(ei.value).upper().replace("_", " "), ei.value
    line = burrow.relay.wait_for_log("TLS handshake failed", timeout=5, since=mark)
    assert why in line, line


def test_sslrequest_alpn(burrow):
    ctx = harness.client_tls_context(burrow.certs.ca)
    ctx.set_alpn_protocols(["postgresql"])
    with raw_connect(burrow.client_port) as s:
        with tls_after_sslrequest_ctx(s, ctx) as tls:
            assert tls.selected_alpn_protocol() == "postgresql"
    ctx = harness.client_tls_context(burrow.certs.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    with raw_connect(burrow.client_port) as s:
        with pytest.raises(ssl.SSLError):
            tls_after_sslrequest_ctx(s, ctx)


# ---- health checks --------------------------------------------------------------------------

def test_health_check_connections_log_only_at_debug(burrow_env):
    b = burrow_env
    b.start_relay(log_level="debug")
    mark = b.relay.mark()
    for reset in (False, True):
        s = raw_connect(b.client_port)
        if reset:  # some load balancers end their probe with a RST
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    harness.wait_until(lambda: b.relay.count("closed without sending anything", since=mark) == 2,
                       t(5), "both probes to be logged")
    for line in b.relay.lines("client=", since=mark):
        assert " DEBUG " in line, line
