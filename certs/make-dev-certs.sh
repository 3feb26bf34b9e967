#!/usr/bin/env bash
# Makes development TLS certificates for Portico with openssl:
#
#   OUT/ca.crt    a local certificate authority (trust this one in clients)
#   OUT/ca.key    its private key (reused on the next run, so you trust once)
#   OUT/tls.crt   a server certificate signed by that CA for localhost,
#                 *.portico.local, portico.local, 127.0.0.1 and ::1
#   OUT/tls.key   its private key
#
# Usage: certs/make-dev-certs.sh [OUT]          (default OUT: certs/dev, git-ignored)
# Environment:
#   KEY_TYPE=ec|rsa     server and CA key type (default ec: ECDSA P-256; rsa: 2048 bits)
#   DAYS=397            server certificate lifetime in days
#   EXTRA_DNS="a b"     more DNS names for the server certificate
#
# Development only: never use these in production and never commit the keys
# (see certs/README.md for real certificates with cert-manager).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/dev}"
key_type="${KEY_TYPE:-ec}"
days="${DAYS:-397}"
ca_days=3650

command -v openssl >/dev/null || { echo "make-dev-certs: openssl not found (e.g. apt-get install openssl)" >&2; exit 1; }
case "$key_type" in
  ec)  keyopts=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256); key_usage="digitalSignature" ;;
  rsa) keyopts=(-algorithm RSA -pkeyopt rsa_keygen_bits:2048); key_usage="digitalSignature, keyEncipherment" ;;
  *)   echo "make-dev-certs: KEY_TYPE must be ec or rsa, got '$key_type'" >&2; exit 2 ;;
esac
[[ "$days" =~ ^[0-9]+$ ]] || { echo "make-dev-certs: DAYS must be a number of days, got '$days'" >&2; exit 2; }

mkdir -p "$out"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- the CA (kept if it exists, so clients that trust it keep working) ---
if [[ -s "$out/ca.crt" && -s "$out/ca.key" ]]; then
  echo "make-dev-certs: reusing the CA in $out (delete ca.crt and ca.key for a new one)"
else
  cat >"$work/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Portico development CA
O = Portico (development only)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl genpkey "${keyopts[@]}" -out "$out/ca.key" 2>/dev/null
  openssl req -new -x509 -sha256 -days "$ca_days" -key "$out/ca.key" \
    -config "$work/ca.cnf" -extensions v3_ca -out "$out/ca.crt"
  echo "make-dev-certs: new CA $out/ca.crt"
fi

# --- the server certificate ---
{
  cat <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
O = Portico (development only)
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $key_usage
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt
[alt]
DNS.1 = localhost
DNS.2 = *.portico.local
DNS.3 = portico.local
IP.1 = 127.0.0.1
IP.2 = ::1
EOF
  n=4
  for name in ${EXTRA_DNS:-}; do
    echo "DNS.$n = $name"
    n=$((n + 1))
  done
} >"$work/leaf.cnf"

openssl genpkey "${keyopts[@]}" -out "$work/tls.key" 2>/dev/null
openssl req -new -key "$work/tls.key" -config "$work/leaf.cnf" -out "$work/tls.csr"
openssl x509 -req -sha256 -days "$days" -in "$work/tls.csr" \
  -CA "$out/ca.crt" -CAkey "$out/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/leaf.cnf" -extensions v3_leaf -out "$work/tls.crt" 2>/dev/null

# Check before replacing anything: the chain verifies and the key matches.
openssl verify -CAfile "$out/ca.crt" "$work/tls.crt" >/dev/null
if [[ "$(openssl pkey -in "$work/tls.key" -pubout)" != "$(openssl x509 -in "$work/tls.crt" -noout -pubkey)" ]]; then
  echo "make-dev-certs: the new key does not match the new certificate" >&2
  exit 1
fi
mv "$work/tls.key" "$out/tls.key"
mv "$work/tls.crt" "$out/tls.crt"
chmod 600 "$out/ca.key" "$out/tls.key"
chmod 644 "$out/ca.crt" "$out/tls.crt"

echo "make-dev-certs: server certificate $out/tls.crt ($key_type, $days days) for:"
openssl x509 -in "$out/tls.crt" -noout -ext subjectAltName 2>/dev/null | sed -n '2p' | sed 's/^ */  /' \
  || echo "  localhost, *.portico.local, portico.local, 127.0.0.1, ::1 ${EXTRA_DNS:-}"
cat <<EOF

Use it in portico.yaml:
  listen:
    https: 127.0.0.1:8443
  tls:
    certificates:
      - cert: $out/tls.crt
        key: $out/tls.key
Then:
  curl --cacert $out/ca.crt https://localhost:8443/
  curl --cacert $out/ca.crt --resolve api.portico.local:8443:127.0.0.1 https://api.portico.local:8443/
Re-running this script while Portico runs swaps the certificate live (same CA).
EOF
