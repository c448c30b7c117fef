#!/bin/sh
# check_systemd.sh: the systemd units in deploy/systemd/ pass `systemd-analyze verify` with no
# message at all, and `systemd-analyze security` rates each at most MAX_EXPOSURE ("OK" or
# better). Both run offline (no running systemd needed; systemd 252 of Debian 12). ExecStart
# is pointed at the binaries just built (BIN, default build/release/bin), as `make install`
# points it at $(PREFIX)/sbin, since verify checks that the command exists.
# Skips, saying so, when systemd-analyze is missing. Usage: check_systemd.sh [BIN]
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$here/build/release/bin}
max_exposure=4.9
out=$here/build/systemd-check
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd: SKIPPED: systemd-analyze is missing (deploy/install-deps.sh test installs systemd)"
    exit 0
fi
rm -rf "$out"
mkdir -p "$out"
fail=0
for unit in "$here"/deploy/systemd/*.service; do
    name=$(basename "$unit")
    role=${name%.service}
    [ -x "$bin/$role" ] || { echo "check-systemd: $bin/$role is not built" >&2; exit 2; }
    sed "s#^ExecStart=/usr/sbin/$role #ExecStart=$bin/$role #" "$unit" > "$out/$name"
    msgs=$(cd "$out" && systemd-analyze verify --man=no "$name" 2>&1) || fail=1
    if [ -n "$msgs" ]; then
        echo "check-systemd: systemd-analyze verify $name:" >&2
        echo "$msgs" >&2
        fail=1
    fi
    level=$(cd "$out" && systemd-analyze security --offline=true --no-pager "$name" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p')
    if [ -z "$level" ]; then
        echo "check-systemd: systemd-analyze security $name gave no rating" >&2
        fail=1
    elif awk -v l="${level% *}" -v m="$max_exposure" 'BEGIN { exit !(l > m) }'; then
        echo "check-systemd: $name exposure $level, more than $max_exposure" >&2
        fail=1
    else
        echo "check-systemd: $name verified, exposure $level"
    fi
done
exit $fail
