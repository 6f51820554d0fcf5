#!/usr/bin/env bash
# Makes test certificates for logdist's TLS with openssl: a CA, a server
# certificate signed by it (names: localhost, 127.0.0.1, ::1 and NAMES) and a
# client certificate signed by it (for mutual TLS). ECDSA P-256 keys,
# unencrypted, readable by the owner only.
#
#   DIR/ca.pem          CA certificate: the `ca` / `client_ca` / --tls-ca file
#   DIR/ca-key.pem      CA key: keep it away from the servers
#   DIR/server.pem      server certificate: a listener's `cert`
#   DIR/server-key.pem  its key: a listener's `key`
#   DIR/client.pem      client certificate: --tls-cert, `cert` of a static analyzer
#   DIR/client-key.pem  its key: --tls-key, `key` of a static analyzer
#
# For tests and trials: production certificates come from your own CA.
# Needs openssl (Debian/Ubuntu: apt-get install -y openssl). Validity: the CA
# 10 years, the others DAYS days (environment, default 825).

set -euo pipefail

usage() {
    echo "usage: $0 DIR [NAMES...]" >&2
    echo "  Makes DIR/{ca,ca-key,server,server-key,client,client-key}.pem; the server" >&2
    echo "  certificate is valid for localhost, 127.0.0.1, ::1 and every NAME (DNS name" >&2
    echo "  or IP address). DIR must not hold these files already." >&2
}

die() {
    echo "gen-certs.sh: $*" >&2
    exit 1
}

if [[ $# -lt 1 || $1 == "-h" || $1 == "--help" || -z $1 ]]; then
    usage
    exit 2
fi
dir=$1
shift
days=${DAYS:-825}
[[ $days =~ ^[1-9][0-9]*$ ]] || die "DAYS must be a positive number of days, got '$days'"

command -v openssl >/dev/null 2>&1 ||
    die "openssl not found; install it first (Debian/Ubuntu: apt-get install -y openssl)"

# The server's names: DNS names and IP addresses (v4, or v6 with a colon).
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
    if [[ $name =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || $name =~ ^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$ ]]; then
        san+=",IP:$name"
    elif [[ $name =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
        san+=",DNS:$name"
    else
        die "'$name' is neither a DNS name nor an IP address"
    fi
done

files=(ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem)
for f in "${files[@]}"; do
    [[ ! -e $dir/$f ]] || die "$dir/$f exists; remove the old files or choose another directory"
done
mkdir -p -- "$dir" || die "cannot create directory $dir"
[[ -w $dir ]] || die "cannot write to $dir"

# Everything is made in a private scratch directory and moved into DIR at
# the end, so a failure leaves DIR as it was.
work=$(mktemp -d) || die "cannot create a temporary directory"
trap 'rm -rf -- "$work"' EXIT
umask 077

run() {
    local what=$1
    shift
    if ! "$@" >"$work/openssl.log" 2>&1; then
        cat "$work/openssl.log" >&2
        die "openssl failed to $what"
    fi
}

cat >"$work/req.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = logdist test CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

cat >"$work/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
EXT

cat >"$work/client.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT

key() {
    run "make the key $1" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1"
}

key ca-key.pem
run "make the CA certificate" openssl req -x509 -new -config "$work/req.cnf" \
    -key "$work/ca-key.pem" -sha256 -days 3650 -out "$work/ca.pem"

# leaf NAME COMMON_NAME: NAME.pem and NAME-key.pem, signed by the CA.
leaf() {
    key "$1-key.pem"
    run "make the $1 certificate request" openssl req -new -config "$work/req.cnf" \
        -key "$work/$1-key.pem" -subj "/CN=$2" -out "$work/$1.csr"
    run "sign the $1 certificate" openssl x509 -req -in "$work/$1.csr" \
        -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
        -CAserial "$work/ca.srl" -CAcreateserial \
        -sha256 -days "$days" -extfile "$work/$1.ext" -out "$work/$1.pem"
}

leaf server "logdist server"
leaf client "logdist client"

run "verify the certificates against the CA" \
    openssl verify -CAfile "$work/ca.pem" "$work/server.pem" "$work/client.pem"

chmod 644 "$work/ca.pem" "$work/server.pem" "$work/client.pem"
for f in "${files[@]}"; do
    mv -- "$work/$f" "$dir/$f" || die "cannot move $f into $dir"
done

echo "Made in $dir: ${files[*]}"
echo "Server certificate names: ${san//,/, }"
