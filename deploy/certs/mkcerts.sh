#!/bin/sh
# mkcerts.sh — a small private CA and the certificates pgburrow needs (openssl CLI only).
#
#   mkcerts.sh DIR ca                 DIR/ca.crt DIR/ca.key           (never overwritten)
#   mkcerts.sh DIR relay [SAN ...]    DIR/relay.crt DIR/relay.key     (serverAuth)
#   mkcerts.sh DIR agent NAME         DIR/agent-NAME.crt DIR/agent-NAME.key
#                                     (CN=NAME, URI SAN pgburrow-agent:NAME, clientAuth)
#   mkcerts.sh DIR client USER        DIR/client-USER.crt DIR/client-USER.key (CN=USER, clientAuth)
#   mkcerts.sh DIR demo               ca, relay, client demo in DIR; a separate agent CA and
#                                     agent demo-agent in DIR/agents
#
# SANs are DNS:name or IP:address (default: DNS:localhost IP:127.0.0.1 IP:::1). The relay
# certificate's CN is the first SAN when that is a DNS name, else "localhost".
# The relay shows this certificate to PostgreSQL clients (sslmode=verify-full checks the SANs)
# and to agents (relay_server_name, default the host of the relay address, checks them).
# An agent's name is the CN of its certificate: it is what [route NAME] agents = ... lists.
# An agent certificate also carries the URI SAN pgburrow-agent:NAME: the relay accepts on its
# tunnel listener only certificates with that mark (and a CN equal to NAME), and never accepts
# one as a client certificate, so agent and client certificates are not interchangeable even
# from one CA. Separate CAs add a second wall: the demo signs agents with DIR/agents/ca.crt
# (relay: agent_ca) and clients with DIR/ca.crt (client_ca); any DIR has its own CA.
#
# Keys are EC P-256, mode 0600 (the daemons and libpq refuse keys others can read).
# Validity: CA 3650 days, other certificates 825 days. Serial numbers are random.
# An existing CA is kept (the others are re-issued from it); every certificate written is
# checked with `openssl verify` against the CA. Prints one line per file written.
# Exit status: 0 done, 1 failure, 2 usage error.
set -eu

CA_DAYS=3650
LEAF_DAYS=825

prog=mkcerts
usage() {
    cat >&2 <<EOF
usage: $0 DIR ca
       $0 DIR relay [DNS:name|IP:address ...]
       $0 DIR agent NAME
       $0 DIR client USER
       $0 DIR demo
NAME and USER: 1 to 63 characters from A-Z a-z 0-9 _ . -
EOF
    exit 2
}
die() {
    echo "$prog: $*" >&2
    exit 1
}

# Names end up in file names and in the relay's [route] agents lists: same rule as the
# daemons (PROTO_NAME_MAX): [A-Za-z0-9_.-], 1..63 bytes.
check_name() {
    case "$1" in
    "" | *[!A-Za-z0-9_.-]*) die "invalid name \"$1\": use 1 to 63 characters from A-Z a-z 0-9 _ . -" ;;
    esac
    [ "${#1}" -le 63 ] || die "invalid name \"$1\": longer than 63 characters"
}

# SANs are pasted into an openssl config file: allow only what a DNS name or an IP can hold.
check_san() {
    case "$1" in
    DNS:*)
        v=${1#DNS:}
        case "$v" in "" | *[!A-Za-z0-9.*_-]*) die "invalid SAN \"$1\": bad DNS name" ;; esac
        ;;
    IP:*)
        v=${1#IP:}
        case "$v" in "" | *[!0-9A-Fa-f:.]*) die "invalid SAN \"$1\": bad IP address" ;; esac
        ;;
    *) die "invalid SAN \"$1\": expected DNS:name or IP:address" ;;
    esac
}

[ $# -ge 2 ] || usage
dir=$1
what=$2
shift 2

# Check the arguments before anything is created.
case "$what" in
ca | demo) [ $# -eq 0 ] || usage ;;
relay) for s in "$@"; do check_san "$s"; done ;;
agent | client)
    [ $# -eq 1 ] || usage
    check_name "$1"
    ;;
*) usage ;;
esac
command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

# Keys must never be readable by others, not even for an instant: every file starts 0600.
umask 077
mkdir -p "$dir" || die "cannot create $dir"
dir=$(cd "$dir" && pwd -P)

tmp=$(mktemp -d "$dir/.mkcerts.XXXXXX") || die "cannot create a temporary directory in $dir"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# Our own minimal config, so that the system openssl.cnf adds no extensions of its own.
cat >"$tmp/req.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

new_key() { # FILE
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1" 2>"$tmp/err" ||
        die "openssl genpkey failed: $(cat "$tmp/err")"
}

# A positive 127-bit random serial (RFC 5280: at most 20 octets, non-negative).
new_serial() {
    s=$(openssl rand -hex 16) || die "openssl rand failed"
    printf '0x%s%s' "$(echo "$s" | cut -c1 | tr '89abcdef' '01234567')" "$(echo "$s" | cut -c2-)"
}

# Public keys of a certificate and a key file must be the same key.
same_key() { # CERT KEY
    a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
    b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
    [ -n "$a" ] && [ "$a" = "$b" ]
}

# Move a finished file into place (rename within one filesystem: never half-written).
install_file() { # TMPFILE DEST MODE SUMMARY
    chmod "$3" "$1"
    mv -f "$1" "$2" || die "cannot write $2"
    echo "$prog: wrote $2 ($4)"
}

make_ca() { # [CN]
    ca_cn=${1:-pgburrow CA}
    crt=$dir/ca.crt
    key=$dir/ca.key
    if [ -e "$crt" ] || [ -e "$key" ]; then
        if [ ! -f "$crt" ] || [ ! -f "$key" ]; then
            die "only one of $crt and $key exists; remove it or supply the other"
        fi
        same_key "$crt" "$key" || die "$key does not match $crt"
        openssl verify -CAfile "$crt" "$crt" >"$tmp/err" 2>&1 || die "$crt: $(cat "$tmp/err")"
        echo "$prog: note: keeping the existing CA $crt" >&2
        return 0
    fi
    new_key "$tmp/ca.key"
    openssl req -new -x509 -config "$tmp/req.cnf" -extensions v3_ca -key "$tmp/ca.key" \
        -subj "/CN=$ca_cn" -days "$CA_DAYS" -sha256 -set_serial "$(new_serial)" \
        -out "$tmp/ca.crt" 2>"$tmp/err" || die "openssl req (CA) failed: $(cat "$tmp/err")"
    openssl verify -CAfile "$tmp/ca.crt" "$tmp/ca.crt" >"$tmp/err" 2>&1 ||
        die "the new CA does not verify: $(cat "$tmp/err")"
    install_file "$tmp/ca.key" "$key" 600 "CA private key, EC P-256"
    install_file "$tmp/ca.crt" "$crt" 644 "CA certificate, CN=$ca_cn, $CA_DAYS days"
}

# make_leaf BASENAME CN EKU PURPOSE SANS
make_leaf() {
    base=$1 cn=$2 eku=$3 purpose=$4 sans=$5
    if [ ! -f "$dir/ca.crt" ] || [ ! -f "$dir/ca.key" ]; then
        die "no CA in $dir: run \`$0 $dir ca\` first"
    fi
    {
        echo "[leaf]"
        echo "basicConstraints = critical, CA:false"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid:always"
        [ -z "$sans" ] || echo "subjectAltName = $sans"
    } >"$tmp/leaf.ext"
    new_key "$tmp/$base.key"
    openssl req -new -config "$tmp/req.cnf" -key "$tmp/$base.key" -subj "/CN=$cn" \
        -out "$tmp/$base.csr" 2>"$tmp/err" || die "openssl req ($base) failed: $(cat "$tmp/err")"
    openssl x509 -req -in "$tmp/$base.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "$(new_serial)" -days "$LEAF_DAYS" -sha256 \
        -extfile "$tmp/leaf.ext" -extensions leaf -out "$tmp/$base.crt" 2>"$tmp/err" ||
        die "openssl x509 ($base) failed: $(cat "$tmp/err")"
    openssl verify -CAfile "$dir/ca.crt" -purpose "$purpose" "$tmp/$base.crt" >"$tmp/err" 2>&1 ||
        die "$base.crt does not verify against $dir/ca.crt: $(cat "$tmp/err")"
    extra=""
    [ -z "$sans" ] || extra=", SAN $sans"
    install_file "$tmp/$base.key" "$dir/$base.key" 600 "private key, EC P-256"
    install_file "$tmp/$base.crt" "$dir/$base.crt" 644 \
        "CN=$cn$extra, $eku, $LEAF_DAYS days, signed by $dir/ca.crt"
}

make_relay() { # [SAN ...]
    [ $# -gt 0 ] || set -- DNS:localhost IP:127.0.0.1 IP:::1
    sans=""
    cn=localhost
    first=1
    for s in "$@"; do
        [ "$first" = 0 ] || case "$s" in DNS:*) cn=${s#DNS:} ;; esac
        first=0
        sans="$sans${sans:+,}$s"
    done
    make_leaf relay "$cn" serverAuth sslserver "$sans"
    # Check the names too: a certificate the clients would refuse is no use.
    for s in "$@"; do
        case "$s" in
        DNS:\**) continue ;;
        DNS:*) opt=-verify_hostname v=${s#DNS:} ;;
        IP:*) opt=-verify_ip v=${s#IP:} ;;
        esac
        openssl verify -CAfile "$dir/ca.crt" "$opt" "$v" "$dir/relay.crt" >"$tmp/err" 2>&1 ||
            die "$dir/relay.crt does not verify for $s: $(cat "$tmp/err")"
    done
}

case "$what" in
ca) make_ca ;;
relay) make_relay "$@" ;;
agent) make_leaf "agent-$1" "$1" clientAuth sslclient "URI:pgburrow-agent:$1" ;;
client) make_leaf "client-$1" "$1" clientAuth sslclient "" ;;
demo)
    make_ca
    make_relay
    make_leaf client-demo demo clientAuth sslclient ""
    mkdir -p "$dir/agents" || die "cannot create $dir/agents"
    dir=$dir/agents
    make_ca "pgburrow agent CA"
    make_leaf agent-demo-agent demo-agent clientAuth sslclient "URI:pgburrow-agent:demo-agent"
    ;;
esac
