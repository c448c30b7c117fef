#!/bin/sh
# Installs the Debian 12 packages pgburrow needs to build, test, demo and benchmark.
# Idempotent and quiet when everything is present.
# Usage: deploy/install-deps.sh [build|test|demo|bench|deb]
# `deploy/install-deps.sh --list WHAT` prints WHAT's package list, one a line, and installs
# nothing (tests/deps/check_deps.py checks every target against these lists).
set -eu
list=0
if [ "${1:-}" = --list ]; then
    list=1
    shift
fi
what="${1:-test}"
pkgs="build-essential pkg-config libuv1-dev libssl-dev libmsgpack-dev libinih-dev openssl"
case "$what" in
build) ;;
demo) pkgs="$pkgs postgresql-15 postgresql-client-15" ;;
test) pkgs="$pkgs libcmocka-dev postgresql-15 postgresql-client-15 python3 python3-pytest \
python3-psycopg python3-psycopg2 python3-asyncpg clang libclang-rt-14-dev valgrind \
libpostgresql-jdbc-java haproxy libnss-wrapper clang-format python3-prometheus-client"
    # Client compatibility tests (JDBC, node pg): a JDK and node may already come from
    # elsewhere (e.g. NodeSource's nodejs, which conflicts with Debian's npm); only add
    # Debian's when the command is missing.
    command -v javac >/dev/null 2>&1 || pkgs="$pkgs default-jdk-headless"
    command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
    command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
    # Transparency check: fetches Debian's postgresql-15 source package (apt, signed by the
    # archive keyring), unpacks it (dpkg-source) and builds its test programs (needs libssl-dev).
    pkgs="$pkgs dpkg-dev debian-archive-keyring"
    # make check-systemd: systemd-analyze verify / security --offline (no running systemd needed).
    pkgs="$pkgs systemd"
    ;;
deb) pkgs="$pkgs debhelper dpkg-dev lintian" ;;
bench) pkgs="$pkgs postgresql-15 postgresql-client-15 openssh-server openssh-client python3 gnuplot-nox \
haproxy pgbouncer" ;;
*) echo "usage: $0 [--list] [build|test|demo|bench|deb]" >&2; exit 2 ;;
esac
if [ "$list" = 1 ]; then
    for p in $pkgs; do echo "$p"; done
    exit 0
fi
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql-common would create and start a system cluster; we never use one.
mkdir -p /etc/postgresql-common
[ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends $missing >/dev/null
