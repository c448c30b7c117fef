"""Route selection: SNI under sni_domains, endpoint= in options, and their hostile cases.

The relay shows a wildcard certificate (*.db.example.test) and routes orders.db.example.test to
route "orders"; a client that cannot send SNI names the route with options=endpoint=NAME, which
the relay removes before PostgreSQL sees it.
"""

import os
import shutil
import subprocess

import psycopg
import psycopg.conninfo
import pytest

import harness
from harness import (MKCERTS, kv, raw_connect, read_error, read_message, startup_message, t,
                     tls_after_sslrequest)

ROUTES = {"a": ["agent-a"], "orders": ["agent-a"]}
DOMAIN = "db.example.test"


@pytest.fixture(scope="module")
def sni_cert(certs):
    """A relay certificate for *.db.example.test (and localhost / 127.0.0.1 for the agents and
    for clients that connect by address), from the test CA."""
    d = os.path.join(certs.root, "sni")
    crt, key = os.path.join(d, "relay.crt"), os.path.join(d, "relay.key")
    if not os.path.exists(crt):
        os.makedirs(d, exist_ok=True)
        for f in ("ca.crt", "ca.key"):
            shutil.copy2(os.path.join(certs.dir, f), d)
        subprocess.run(["bash", MKCERTS, d, "relay", "DNS:*.%s" % DOMAIN, "DNS:localhost",
                        "IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.fixture
def sni_burrow(burrow_env, sni_cert):
    b = burrow_env
    b.start_relay(routes=ROUTES, sni_domains="%s, other.example.test" % DOMAIN,
                  tls_cert=sni_cert[0], tls_key=sni_cert[1])
    b.start_agent("agent-a", routes=("a", "orders"))
    return b


def session_line(b, mark):
    return kv(b.relay.wait_for_log("session start ", timeout=5, since=mark))


def refused(b, **kw):
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(**kw).close()
    return str(ei.value)


def test_sni_picks_the_route(sni_burrow):
    b = sni_burrow
    mark = b.relay.mark()
    with b.connect(host="orders." + DOMAIN) as conn:  # hostaddr=127.0.0.1, verify-full
        assert conn.execute("select 1").fetchone()[0] == 1
    line = session_line(b, mark)
    assert line["route"] == "orders" and line["sni"] == "orders." + DOMAIN, line
    # a server name under no configured domain is ignored: default_route
    mark = b.relay.mark()
    with b.connect() as conn:  # host=localhost
        assert conn.execute("select 1").fetchone()[0] == 1
    line = session_line(b, mark)
    assert line["route"] == "a" and line["sni"] == "localhost", line


def test_sni_wrong_label_3D000(sni_burrow):
    b = sni_burrow
    mark = b.relay.mark()
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca, server_hostname="nosuch." + DOMAIN) as tls:
            tls.sendall(startup_message({"user": "postgres", "database": "postgres"}))
            err = read_error(tls)
    assert err.get("C") == "3D000", err
    assert err.get("M") == 'pgburrow: unknown route "nosuch"', err
    b.relay.wait_for_log("sqlstate=3D000", timeout=5, since=mark)
    # libpq shows the message too
    assert 'unknown route "nosuch"' in refused(b, host="nosuch." + DOMAIN)
    # SNI and options naming different routes: refused, not silently one of them
    msg = refused(b, host="orders." + DOMAIN, route="a")
    assert 'the server name names route "orders" but the options name route "a"' in msg, msg


def test_endpoint_option_routes_and_is_removed(sni_burrow):
    b = sni_burrow
    # by address: no SNI at all, as with clients that cannot send it
    mark = b.relay.mark()
    with b.connect(host="127.0.0.1", options="endpoint=orders -c search_path=pgb_it") as conn:
        # PostgreSQL refuses unknown words in options: the session working proves it never saw
        # endpoint=, and the rest of options reached it unchanged
        assert conn.execute("show search_path").fetchone()[0] == "pgb_it"
    line = session_line(b, mark)
    assert line["route"] == "orders" and line["sni"] == "-", line

    # options holding only endpoint=: the parameter is dropped; the URI form libpq documents
    mark = b.relay.mark()
    uri = ("postgresql://postgres@127.0.0.1:%d/postgres?sslmode=verify-full&sslrootcert=%s"
           "&options=endpoint%%3Dorders" % (b.client_port, b.certs.ca))
    with psycopg.connect(uri, autocommit=True, connect_timeout=int(t(10))) as conn:
        assert conn.execute("select current_setting('search_path')").fetchone()[0] != "pgb_it"
    assert session_line(b, mark)["route"] == "orders"


def test_endpoint_hostile_values(sni_burrow):
    b = sni_burrow
    assert 'unknown route "nosuch"' in refused(b, options="endpoint=nosuch")
    msg = refused(b, options="endpoint=bad/name")
    assert "invalid route name in options" in msg, msg
    msg = refused(b, options="endpoint=orders -c pgburrow.route=a")
    assert 'options name two routes: "a" (pgburrow.route) and "orders" (endpoint)' in msg, msg
    # raw: the SQLSTATE
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.sendall(startup_message({"user": "postgres", "options": "endpoint=" + "x" * 80}))
            err = read_error(tls)
    assert err.get("C") == "3D000", err
    # the relay goes on serving
    with b.connect(options="endpoint=orders") as conn:
        assert conn.execute("select 2").fetchone()[0] == 2


def test_endpoint_in_raw_startup_keeps_other_parameters(sni_burrow):
    """The rebuilt StartupMessage keeps every other parameter (application_name, a GUC)."""
    b = sni_burrow
    params = {"user": "postgres", "database": "postgres", "application_name": "pgb-raw",
              "options": "endpoint=orders", "DateStyle": "German"}
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.sendall(startup_message(params))
            status = {}
            while True:
                typ, body = read_message(tls)
                assert typ != "E", harness.parse_error_response(body)
                if typ == "S":
                    k, v = body.rstrip(b"\0").split(b"\0")[:2]
                    status[k.decode()] = v.decode()
                if typ == "Z":
                    break
            tls.sendall(harness.TERMINATE)
    assert status.get("application_name") == "pgb-raw", status
    assert status.get("DateStyle", "").startswith("German"), status
