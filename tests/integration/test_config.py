"""Configuration as the contract states it, on running daemons: flags over the file, routes
from flags, log format and file, signals, several relays per agent, IPv6, and the agent's
checks of the relay's identity."""

import json
import os
import signal
import socket
import subprocess

import pytest

import harness
from conftest import Burrow
from harness import (raw_connect, read_error, startup_message, t, tls_after_sslrequest)


def startup_error(b, params):
    with raw_connect(b.client_port) as s:
        with tls_after_sslrequest(s, b.certs.ca) as tls:
            tls.settimeout(t(5))
            tls.sendall(startup_message(params))
            return read_error(tls)


def test_flags_override_file_and_add_routes(burrow_env):
    b = burrow_env
    b.write_relay_ini(default_route="a")
    with open(b.relay_ini) as f:
        assert "listen = 127.0.0.1:%d" % b.client_port in f.read()
    b.client_port = harness.free_port()  # the flag's port; the file's is never used
    b.relay_args = ("--relay.listen=127.0.0.1:%d" % b.client_port, "--route.c.agents=agent-a")
    b.restart_relay()
    line = b.relay.wait_for_log("listening clients=", timeout=1)
    assert "clients=127.0.0.1:%d" % b.client_port in line, line
    b.start_agent("agent-a", routes=("c",))
    with b.connect(route="c") as conn:
        assert conn.execute("select current_setting('pgburrow.route')").fetchone()[0] == "c"
    assert "route=c" in b.relay.wait_for_log("session start ", timeout=5)


@pytest.mark.parametrize("options", [
    "-c pgburrow.route=b",
    "-cpgburrow.route=b",
    "--pgburrow.route=b",
    "-c application_name=x -c pgburrow.route=b",
])
def test_route_option_syntaxes(burrow_env, options):
    b = burrow_env
    b.start_relay(default_route="a")
    b.start_agent("agent-b", routes=("b",))
    with b.connect(options=options) as conn:
        assert conn.execute("select current_setting('pgburrow.route')").fetchone()[0] == "b"
    start = b.relay.wait_for_log("session start ", timeout=5)
    assert "route=b" in start and "agent=agent-b" in start, start


def test_no_default_route_3D000(burrow_env):
    b = burrow_env
    b.start_relay(default_route=None)
    b.start_agent("agent-a", routes=("a",))
    err = startup_error(b, {"user": "postgres", "database": "postgres"})
    assert err.get("C") == "3D000", err
    assert "no route" in err.get("M", ""), err
    with b.connect(route="a") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_json_log_to_file(burrow_env):
    b = burrow_env
    logfile = os.path.join(b.dir, "relay-json.log")
    b.write_relay_ini(log_format="json", log_file=logfile)
    b.relay = harness.Daemon("relay", b.relay_ini, b._logpath("relay-stderr")).start()
    b.daemons.append(b.relay)

    def lines():
        try:
            with open(logfile) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    harness.wait_until(lambda: any("listening clients=" in l.get("msg", "") for l in lines()),
                       t(5), "the JSON 'listening' line in log_file")
    agent = b.start_agent("agent-a", routes=("a",), wait=False)
    agent.wait_for_log("tunnel up relay=", timeout=10)
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    harness.wait_until(lambda: any("session end " in l.get("msg", "") for l in lines()), t(5),
                       "the JSON 'session end' line")
    for l in lines():
        assert {"ts", "level", "msg"} <= set(l), l
    assert "session start" not in b.relay.log(), "log_file set, but sessions logged to stderr"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_exit_zero(burrow, sig):
    """SIGINT stops at once even with a session open; SIGTERM drains (test_drain.py), so with
    no session left it stops at once too."""
    with burrow.connect() as conn:  # an open session while the daemons stop
        assert conn.execute("select 1").fetchone()[0] == 1
        if sig == signal.SIGTERM:
            conn.close()
        for d in (burrow.agents["agent-a"], burrow.relay):
            d.expected_exit = True
            os.kill(d.pid, sig)
            try:
                rc = d.proc.wait(t(10))
            except subprocess.TimeoutExpired:
                pytest.fail("%s did not exit within %.0fs of %s" % (d.describe(), t(10), sig.name))
            assert rc == 0, "%s exit status %s after %s" % (d.describe(), rc, sig.name)


def test_agent_with_two_relays(burrow_env):
    b = burrow_env
    b.start_relay()
    b2 = Burrow(os.path.join(b.dir, "relay2"), b.certs, b.pg)
    os.makedirs(b2.dir)
    b2.start_relay()
    b.daemons += b2.daemons  # stopped and checked by b's teardown
    relays = "127.0.0.1:%d, 127.0.0.1:%d" % (b.tunnel_port, b2.tunnel_port)
    b.start_agent("agent-a", routes=("a",), relay=relays)
    b2.relay.wait_for_log("tunnel up agent=agent-a ", timeout=10)
    for x in (b, b2):
        with x.connect() as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
        assert "agent=agent-a" in x.relay.wait_for_log("session start ", timeout=5)
    # One relay gone: the other keeps serving.
    b2.relay.stop()
    with b.connect() as conn:
        assert conn.execute("select 2").fetchone()[0] == 2


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_listeners(burrow_env):
    b = burrow_env
    b.start_relay(listen="[::1]:%d" % b.client_port, tunnel_listen="[::1]:%d" % b.tunnel_port)
    b.start_agent("agent-a", routes=("a",), relay="[::1]:%d" % b.tunnel_port)
    with b.connect(hostaddr="::1") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
    line = b.relay.wait_for_log("session start ", timeout=5)
    assert "::1" in harness.kv(line).get("client", ""), line


def test_agent_verifies_relay_ip_by_default(burrow_env):
    """No relay_server_name: the host of the relay address (an IP) is checked against the
    relay certificate's IP SANs."""
    b = burrow_env
    b.start_relay()
    ini = b.write_agent_ini("agent-a", routes=("a",))
    with open(ini) as f:
        text = f.read()
    with open(ini, "w") as f:
        f.write("".join(l for l in text.splitlines(True) if not l.startswith("relay_server_name")))
    b.restart_agent("agent-a", ini)
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


@pytest.mark.parametrize("case", ["wrong_name", "other_ca"])
def test_agent_refuses_unverified_relay(burrow_env, case):
    """The agent must not open a tunnel to a relay whose certificate does not verify."""
    b = burrow_env
    b.start_relay()
    if case == "wrong_name":
        agent = b.start_agent("agent-a", routes=("a",), wait=False,
                              relay_server_name="not-the-relay.example")
    else:
        agent = b.start_agent("agent-a", routes=("a",), wait=False, ca=b.certs.evil_ca)
    harness.wait_until(lambda: b.relay.count("tunnel rejected") >= 2, t(10),
                       "two failed tunnel attempts at the relay")
    assert agent.count("tunnel up") == 0, agent.lines("tunnel up")
    assert b.relay.count("tunnel up") == 0, b.relay.lines("tunnel up")
    assert agent.alive()
    assert startup_error(b, {"user": "postgres", "database": "postgres"}).get("C") == "57P03"
