#!/bin/sh
# demo.sh — a throwaway PostgreSQL 15, pgburrow-relay and pgburrow-agent on loopback.
#
#   deploy/demo/demo.sh start     (what `make demo` runs, after building bin/)
#   deploy/demo/demo.sh stop      (`make demo-stop`: stop everything, remove build/demo)
#   deploy/demo/demo.sh status    (exit 0 running, 1 partly running, 3 not running)
#
#   psql --TLS verify-full--> relay 127.0.0.1:6543 <--mTLS tunnel :6544-- agent --Unix socket--> PostgreSQL
#
# Everything lives in build/demo/ of the repository: certificates (certs/), the cluster
# (pgdata/, socket in pgsock/, listening on no TCP port), relay.ini, agent.ini, the logs, the
# pid files and `env` (the libpq variables for psql, and PGBURROW_RELAY_METRICS_URL and
# PGBURROW_AGENT_METRICS_URL: the daemons' /metrics, /healthz and /readyz). The role `demo` gets a random password
# and authenticates with SCRAM end to end through the tunnel.
#
# Environment: PGBURROW_DEMO_PORT (client port, 6543), PGBURROW_DEMO_TUNNEL_PORT (6544),
# PGBURROW_DEMO_METRICS_PORT (the first port tried for the two metrics listeners, 6545: the
# first two free ones from there are used),
# PGBURROW_DEMO_BIN (directory of the two daemons, default bin/ of the repository; e.g.
# build/asan/bin), PGBURROW_PG_BIN (PostgreSQL server binaries, default
# /usr/lib/postgresql/15/bin).
#
# `start` on a running demo prints how to connect and changes nothing. `stop` signals only
# processes this script started: the daemons named in its pid files (checked against their
# command lines) and the cluster in its own data directory (through pg_ctl).
# As root, PostgreSQL runs as the user postgres; otherwise as the calling user.
# Reads no stdin; works from any directory.
set -eu

prog="pgburrow demo"
die() {
    echo "$prog: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$here/../.." && pwd -P)
D=$REPO/build/demo
CERTS=$D/certs
BIN=${PGBURROW_DEMO_BIN:-$REPO/bin}
case "$BIN" in /*) ;; *) BIN=$(pwd -P)/$BIN ;; esac
PORT=${PGBURROW_DEMO_PORT:-6543}
TUNNEL_PORT=${PGBURROW_DEMO_TUNNEL_PORT:-6544}
METRICS_PORT=${PGBURROW_DEMO_METRICS_PORT:-6545}
PG_PORT=5432
WAIT_TENTHS=200 # 20 s for each daemon to become ready

# Paths are written into INI files, postgresql.conf and libpq conninfo strings unquoted.
case "$D$BIN" in
*[!A-Za-z0-9_./@+,:=-]*) die "the paths $D and $BIN may only contain A-Z a-z 0-9 _ . / @ + , : = -" ;;
esac
# PostgreSQL refuses to run in, or be reached through, a directory it cannot enter.
cd /
umask 022
# Nothing from the caller's libpq environment may change what the checks below connect to.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE \
    PGSERVICEFILE PGOPTIONS PGSSLMODE PGSSLCERT PGSSLKEY PGSSLROOTCERT PGSSLCRL PGSSLCRLDIR \
    PGSSLSNI PGREQUIRESSL PGCONNECT_TIMEOUT PGTARGETSESSIONATTRS PGAPPNAME PGCLIENTENCODING \
    PGDATA 2>/dev/null || true

if [ "$(id -u)" = 0 ]; then
    PG_OS_USER=postgres
else
    PG_OS_USER=$(id -un)
fi
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Where the cluster lives: build/demo normally; a directory under /tmp when the user postgres
# cannot reach build/demo or the socket path would be too long (recorded in build/demo/pgroot).
set_pg_paths() {
    if [ -f "$D/pgroot" ]; then
        PGROOT=$(cat "$D/pgroot")
    else
        PGROOT=$D
    fi
    PGDATA_DIR=$PGROOT/pgdata
    PGSOCK=$PGROOT/pgsock
    PGLOG=$PGROOT/postgres.log
}

pg_bindir() {
    if [ -n "${PGBURROW_PG_BIN:-}" ]; then
        PGBIN=$PGBURROW_PG_BIN
    elif [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        PGBIN=/usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1; then
        PGBIN=$(pg_config --bindir)
    else
        PGBIN=""
    fi
    for b in initdb pg_ctl psql; do
        [ -x "$PGBIN/$b" ] ||
            die "PostgreSQL server binaries not found (install postgresql-15, or set PGBURROW_PG_BIN)"
    done
}

# A process is alive when it exists and is not a zombie (a daemon this shell started and
# has not reaped yet is a zombie after it exits).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -c1)" != Z ] || return 1
    fi
    return 0
}

# The pid of our running relay or agent: from our pid file, alive, and (where /proc exists)
# still our program (by its command line, or by its executable should it have retitled
# itself), so that a recycled pid is never signalled.
daemon_pid() { # relay|agent
    [ -f "$D/$1.pid" ] || return 1
    dp=$(cat "$D/$1.pid")
    case "$dp" in "" | *[!0-9]*) return 1 ;; esac
    alive "$dp" || return 1
    if [ -r "/proc/$dp/cmdline" ]; then
        if ! tr '\0' ' ' <"/proc/$dp/cmdline" | grep -qF "pgburrow-$1 -c $D/$1.ini"; then
            case "$(readlink "/proc/$dp/exe" 2>/dev/null)" in
            */pgburrow-"$1" | */pgburrow-"$1"" (deleted)") ;;
            *) return 1 ;;
            esac
        fi
    fi
    echo "$dp"
}

pg_running() {
    [ -f "$PGDATA_DIR/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

pg_pid() {
    head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || echo "?"
}

# ---- stop ---------------------------------------------------------------------------------

stop_daemon() { # relay|agent
    if sp=$(daemon_pid "$1"); then
        kill -TERM "$sp" 2>/dev/null || true
        i=0
        while alive "$sp" && [ "$i" -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if alive "$sp"; then
            echo "$prog: pgburrow-$1 (pid $sp) still running 10 s after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$sp" 2>/dev/null || true
        fi
        wait "$sp" 2>/dev/null || true # reaps it when this shell started it
        echo "$prog: stopped pgburrow-$1 (pid $sp)"
    fi
    rm -f "$D/$1.pid"
}

stop_postgres() {
    [ -d "$PGDATA_DIR" ] || return 0
    pg_running || return 0
    if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null 2>&1; then
        echo "$prog: PostgreSQL did not stop with -m fast; using -m immediate" >&2
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
            die "could not stop PostgreSQL in $PGDATA_DIR (see $PGLOG)"
    fi
    echo "$prog: stopped PostgreSQL ($PGDATA_DIR)"
}

stop_processes() {
    rm -f "$D/ready"
    stop_daemon agent
    stop_daemon relay
    stop_postgres
}

remove_state() {
    case "$D" in */build/demo) ;; *) die "refusing to remove $D" ;; esac
    case "$PGROOT" in
    "$D") ;;
    /tmp/pgburrow-demo.*) rm -rf "$PGROOT" ;;
    *) echo "$prog: not removing unexpected cluster directory $PGROOT" >&2 ;;
    esac
    rm -rf "$D"
}

cmd_stop() {
    if [ ! -e "$D" ]; then
        echo "$prog: not running (no $D)"
        return 0
    fi
    set_pg_paths
    pg_bindir
    stop_processes
    remove_state
    echo "$prog: removed $D"
}

# ---- status -------------------------------------------------------------------------------

cmd_status() {
    if [ ! -e "$D" ]; then
        echo "$prog: not running"
        exit 3
    fi
    set_pg_paths
    pg_bindir
    up=0
    if p=$(daemon_pid relay); then
        echo "pgburrow-relay  running (pid $p)"
        up=$((up + 1))
    else
        echo "pgburrow-relay  not running"
    fi
    if p=$(daemon_pid agent); then
        echo "pgburrow-agent  running (pid $p)"
        up=$((up + 1))
    else
        echo "pgburrow-agent  not running"
    fi
    if pg_running; then
        echo "PostgreSQL      running (pid $(pg_pid))"
        up=$((up + 1))
    else
        echo "PostgreSQL      not running"
    fi
    if [ "$up" = 3 ] && [ -f "$D/ready" ]; then
        echo
        cat "$D/summary"
        exit 0
    fi
    [ "$up" = 0 ] && exit 3
    exit 1
}

# ---- start --------------------------------------------------------------------------------

print_tail() { # FILE
    echo "---- last lines of $1" >&2
    if [ -f "$1" ]; then tail -n 25 "$1" >&2; else echo "(no such file)" >&2; fi
}

# Any failure once something runs: show why, stop what we started, keep the logs.
starting=0
on_exit() {
    rc=$?
    [ "$starting" = 1 ] && [ "$rc" != 0 ] || return 0
    starting=0
    set +e
    echo "$prog: start failed" >&2
    print_tail "$PGLOG"
    print_tail "$D/relay.log"
    print_tail "$D/agent.log"
    stop_processes >&2
    echo "$prog: logs kept in $D; \`make demo-stop\` removes them" >&2
    exit "$rc"
}

check_port() { # VALUE NAME
    case "$1" in "" | *[!0-9]*) die "$2 must be a port number, got \"$1\"" ;; esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then die "$2 must be a port number, got \"$1\""; fi
}

# Whether a TCP socket (any state, IPv4 or IPv6) uses local port $1 (Linux /proc/net/tcp*).
port_in_use() { # PORT
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        awk -v p=":$(printf '%04X' "$1")" 'substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'
}

# The first port from $1 on that is not in use and is none of the others given.
free_port() { # FROM [TAKEN ...]
    p=$1
    shift
    while [ "$p" -le 65535 ]; do
        taken=0
        for x in "$PORT" "$TUNNEL_PORT" "$@"; do [ "$p" != "$x" ] || taken=1; done
        if [ "$taken" = 0 ] && ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
        p=$((p + 1))
    done
    die "no free port from PGBURROW_DEMO_METRICS_PORT on"
}

preflight() {
    check_port "$PORT" PGBURROW_DEMO_PORT
    check_port "$METRICS_PORT" PGBURROW_DEMO_METRICS_PORT
    check_port "$TUNNEL_PORT" PGBURROW_DEMO_TUNNEL_PORT
    [ "$PORT" != "$TUNNEL_PORT" ] || die "PGBURROW_DEMO_PORT and PGBURROW_DEMO_TUNNEL_PORT must differ"
    for b in pgburrow-relay pgburrow-agent; do
        [ -x "$BIN/$b" ] || die "$BIN/$b not found: build it first (\`make demo\` builds and starts)"
    done
    command -v openssl >/dev/null 2>&1 || die "openssl not found"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "the user postgres does not exist (install postgresql-15)"
        command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux)"
    fi
}

# As root, the cluster runs as postgres, which must be able to enter build/demo: give the
# directories under the repository the search bit they lack; if a directory above the
# repository still blocks it (or the socket path is too long), use a directory under /tmp.
choose_pg_root() {
    PGROOT=$D
    if [ "$(id -u)" = 0 ] && ! as_pg test -x "$D"; then
        chmod o+x "$REPO" "$REPO/build" "$D"
        as_pg test -x "$D" || PGROOT=""
    fi
    # sun_path holds 107 bytes: "$PGSOCK/.s.PGSQL.5432" must fit.
    if [ -z "$PGROOT" ] || [ "${#PGROOT}" -gt 80 ]; then
        PGROOT=$(mktemp -d /tmp/pgburrow-demo.XXXXXX)
        chmod 755 "$PGROOT"
        echo "$PGROOT" >"$D/pgroot"
        echo "$prog: PostgreSQL cannot use $D; its cluster goes in $PGROOT"
    fi
    set_pg_paths
}

start_postgres() {
    mkdir -p "$PGDATA_DIR" "$PGSOCK"
    : >"$PGLOG"
    chmod 700 "$PGDATA_DIR"
    chmod 755 "$PGSOCK"
    chmod 600 "$PGLOG"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PGDATA_DIR" "$PGSOCK" "$PGLOG"
    fi
    as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U "$PG_OS_USER" -E UTF8 --no-locale --no-sync \
        --auth-local=peer --auth-host=reject >"$D/initdb.log" 2>&1 ||
        { cat "$D/initdb.log" >&2; die "initdb failed"; }
    # Only the superuser's own OS account gets in without a password (this script creating
    # the role); every other local connection, the agent's included, must use SCRAM.
    cat >"$PGDATA_DIR/pg_hba.conf" <<EOF
# pgburrow demo: written by deploy/demo/demo.sh
local all $PG_OS_USER peer
local all all scram-sha-256
EOF
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# pgburrow demo: written by deploy/demo/demo.sh. Unix socket only, private directory.
listen_addresses = ''
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
password_encryption = 'scram-sha-256'
log_connections = on
log_disconnections = on
# A throwaway cluster: durability is not worth the wait.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 30 start >/dev/null 2>&1 ||
        die "PostgreSQL did not start"
    # The password goes through stdin, never through a command line others can read.
    as_pg "$PGBIN/psql" -X -q -w -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" \
        -U "$PG_OS_USER" -d postgres >/dev/null <<EOF || die "could not create the role and database demo"
CREATE ROLE demo LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE demo OWNER demo;
EOF
}

write_configs() {
    cat >"$D/relay.ini" <<EOF
; pgburrow demo relay: written by deploy/demo/demo.sh (see deploy/relay.ini for every key)
[relay]
name = demo-relay
listen = 127.0.0.1:$PORT
tunnel_listen = 127.0.0.1:$TUNNEL_PORT
default_route = demo
tls_cert = $CERTS/relay.crt
tls_key = $CERTS/relay.key
; clients: TLS 1.2 or newer, and only from loopback (checked before any TLS work)
tls_min_version = TLSv1.2
allow = 127.0.0.0/8, ::1/128
; agents: certificates from their own CA (certs/agents/ca.crt) carrying the URI SAN
; pgburrow-agent:NAME; a client certificate is never accepted here, nor an agent's as a client's
agent_ca = $CERTS/agents/ca.crt
log_level = info
log_file = $D/relay.log
; /metrics, /healthz, /readyz over plain HTTP, on loopback only
metrics_listen = 127.0.0.1:$RELAY_METRICS_PORT
; one JSON line per session start/end, tunnel up/down, refused connection and admin command
audit_log = $D/audit.log
; the admin console (dbname=pgburrow): a certificate from the demo CA with CN demo-admin
admin_users = demo-admin
admin_ca = $CERTS/ca.crt

; only the agent whose certificate says CN=demo-agent may serve the route demo, and clients
; need a certificate from the demo CA whose CN is their PostgreSQL user (as PostgreSQL's
; "cert" method), before PostgreSQL's own SCRAM authentication
[route demo]
agents = demo-agent
client_cert = verify-user
client_ca = $CERTS/ca.crt
EOF
    cat >"$D/agent.ini" <<EOF
; pgburrow demo agent: written by deploy/demo/demo.sh (see deploy/agent.ini for every key)
[agent]
relay = 127.0.0.1:$TUNNEL_PORT
relay_server_name = localhost
ca = $CERTS/ca.crt
cert = $CERTS/agents/agent-demo-agent.crt
key = $CERTS/agents/agent-demo-agent.key
log_level = info
log_file = $D/agent.log
metrics_listen = 127.0.0.1:$AGENT_METRICS_PORT

[route demo]
host = $PGSOCK
port = $PG_PORT
EOF
}

# Detached from the terminal and from make's process group, so that nothing but
# `demo.sh stop` ends them. setsid execs in place here (a background job of a
# non-interactive shell is no group leader), so $! is the daemon's own pid.
start_daemon() { # relay|agent
    if command -v setsid >/dev/null 2>&1; then
        setsid "$BIN/pgburrow-$1" -c "$D/$1.ini" </dev/null >>"$D/$1.log" 2>&1 &
    else
        nohup "$BIN/pgburrow-$1" -c "$D/$1.ini" </dev/null >>"$D/$1.log" 2>&1 &
    fi
    echo "$!" >"$D/$1.pid"
}

wait_for_log() { # relay|agent STRING
    i=0
    while [ "$i" -lt "$WAIT_TENTHS" ]; do
        grep -qF -- "$2" "$D/$1.log" 2>/dev/null && return 0
        if ! alive "$(cat "$D/$1.pid")"; then
            hint=""
            [ "$1" != relay ] || hint=" (a port in use? see PGBURROW_DEMO_PORT, PGBURROW_DEMO_TUNNEL_PORT)"
            die "pgburrow-$1 exited before logging \"$2\"$hint"
        fi
        sleep 0.1
        i=$((i + 1))
    done
    die "timed out after $((WAIT_TENTHS / 10)) s waiting for \"$2\" in $D/$1.log"
}

conninfo() { # HOST
    echo "host=$1 port=$PORT sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/client-demo.crt sslkey=$CERTS/client-demo.key user=demo dbname=demo"
}

# A real session through relay and agent: TLS verify-full to the relay, SCRAM to PostgreSQL.
check_session() {
    i=0
    until out=$(PGPASSWORD=$PASSWORD "$PGBIN/psql" -X -w "$(conninfo 127.0.0.1) connect_timeout=10" \
        -Atc 'select 1' </dev/null 2>&1) && [ "$out" = 1 ]; do
        i=$((i + 1))
        [ "$i" -lt 5 ] || die "psql through the relay failed: $out"
        sleep 0.5
    done
    # And the env file, exactly as a user will use it.
    # shellcheck source=/dev/null
    out=$(. "$D/env" && "$PGBIN/psql" -X -w -Atc 'select current_user' </dev/null 2>&1) || true
    [ "$out" = demo ] || die "psql with $D/env failed: $out"
    # The admin console, as the summary shows it.
    # shellcheck source=/dev/null
    out=$(. "$D/env" && "$PGBIN/psql" -X -w "$PGBURROW_ADMIN_DSN" -Atc 'SHOW VERSION' </dev/null 2>&1) || true
    case "$out" in
    pgburrow-relay*) ;;
    *) die "the admin console with \$PGBURROW_ADMIN_DSN failed: $out" ;;
    esac
}

write_env() {
    cat >"$D/env" <<EOF
# pgburrow demo: \`. $D/env && psql\` connects through the relay.
export PGHOST=localhost
export PGPORT=$PORT
export PGSSLMODE=verify-full
export PGSSLROOTCERT=$CERTS/ca.crt
export PGSSLCERT=$CERTS/client-demo.crt
export PGSSLKEY=$CERTS/client-demo.key
export PGUSER=demo
export PGDATABASE=demo
export PGPASSWORD=$PASSWORD
# metrics and health: curl \$PGBURROW_RELAY_METRICS_URL/metrics (also /healthz, /readyz)
export PGBURROW_RELAY_METRICS_URL=http://127.0.0.1:$RELAY_METRICS_PORT
export PGBURROW_AGENT_METRICS_URL=http://127.0.0.1:$AGENT_METRICS_PORT
# the relay's admin console: psql "\$PGBURROW_ADMIN_DSN" -c 'SHOW SESSIONS'
export PGBURROW_ADMIN_DSN="host=localhost port=$PORT sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/client-demo-admin.crt sslkey=$CERTS/client-demo-admin.key user=demo-admin dbname=pgburrow"
EOF
    chmod 600 "$D/env"
}

write_summary() {
    cat >"$D/summary" <<EOF
pgburrow demo is running (state in $D)
  PostgreSQL 15   pid $(pg_pid)  Unix socket $PGSOCK/.s.PGSQL.$PG_PORT only, no TCP  log $PGLOG
  pgburrow-relay  pid $(cat "$D/relay.pid")  clients 127.0.0.1:$PORT  agents 127.0.0.1:$TUNNEL_PORT  log $D/relay.log
                  metrics http://127.0.0.1:$RELAY_METRICS_PORT/metrics (/healthz, /readyz)
  pgburrow-agent  pid $(cat "$D/agent.pid")  route demo -> $PGSOCK port $PG_PORT  log $D/agent.log
                  metrics http://127.0.0.1:$AGENT_METRICS_PORT/metrics (/healthz, /readyz)
  certificates    $CERTS (ca, relay, client-demo, client-demo-admin; agents/: agent CA, agent-demo-agent)

Connect through the relay (TLS verify-full, then SCRAM as role demo):
  . $D/env && psql
or
  PGPASSWORD=$PASSWORD psql "$(conninfo localhost)"

Metrics and health (the URLs are in $D/env too):
  . $D/env && curl -s \$PGBURROW_RELAY_METRICS_URL/metrics

The relay's admin console (SHOW ROUTES|AGENTS|TUNNELS|SESSIONS|STATS|CONFIG|VERSION, RELOAD,
DRAIN AGENT name, KILL SESSION sid; certificate CN demo-admin):
  . $D/env && psql "\$PGBURROW_ADMIN_DSN" -c 'SHOW SESSIONS'

Stop everything and remove $D:
  make demo-stop        (or: sh $REPO/deploy/demo/demo.sh stop)
EOF
    chmod 600 "$D/summary"
}

cmd_start() {
    if [ -f "$D/ready" ]; then
        set_pg_paths
        pg_bindir
        if daemon_pid relay >/dev/null && daemon_pid agent >/dev/null && pg_running; then
            echo "$prog: already running"
            cat "$D/summary"
            return 0
        fi
    fi
    preflight
    pg_bindir
    if [ -e "$D" ]; then
        echo "$prog: cleaning up a previous demo that is not fully running"
        set_pg_paths
        stop_processes
        remove_state
    fi

    mkdir -p "$D"
    chmod 755 "$D"
    starting=1
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP

    sh "$REPO/deploy/certs/mkcerts.sh" "$CERTS" demo >/dev/null
    sh "$REPO/deploy/certs/mkcerts.sh" "$CERTS" client demo-admin >/dev/null
    choose_pg_root
    PASSWORD=$(openssl rand -hex 10)
    start_postgres
    RELAY_METRICS_PORT=$(free_port "$METRICS_PORT")
    AGENT_METRICS_PORT=$(free_port "$METRICS_PORT" "$RELAY_METRICS_PORT")
    write_configs
    start_daemon relay
    wait_for_log relay "listening clients="
    start_daemon agent
    wait_for_log agent "tunnel up relay="
    wait_for_log relay "tunnel up agent=demo-agent"
    write_env
    check_session
    write_summary
    touch "$D/ready"
    starting=0
    cat "$D/summary"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
