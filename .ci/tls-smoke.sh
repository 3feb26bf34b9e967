#!/usr/bin/env bash
# TLS smoke test of the real binary with real clients: curl (HTTP/2 and
# HTTP/1.1 over ALPN) and openssl s_client (ALPN h2, chain verification,
# TLS 1.2 accepted, TLS 1.1 refused), then a clean SIGTERM shutdown.
#
# Usage: .ci/tls-smoke.sh PATH/TO/portico
# Builds nothing. Needs bash, curl (with HTTP/2) and openssl. Makes its
# certificates with certs/make-dev-certs.sh in a temporary directory; every
# listener binds 127.0.0.1:0 and the ports are read from the startup log.
set -euo pipefail

bin="${1:?usage: .ci/tls-smoke.sh PATH/TO/portico}"
[[ -x "$bin" ]] || { echo "tls-smoke: $bin is not an executable" >&2; exit 2; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for tool in curl openssl; do
    command -v "$tool" >/dev/null || { echo "tls-smoke: $tool is required" >&2; exit 2; }
done

work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "tls-smoke: FAIL: $*" >&2
    if [[ -s "$work/portico.log" ]]; then
        echo "--- last lines of the portico log:" >&2
        tail -n 20 "$work/portico.log" >&2
    fi
    exit 1
}
ok() { echo "tls-smoke: ok: $*"; }

# --- certificates, config, start ---
"$root/certs/make-dev-certs.sh" "$work/certs" >/dev/null || fail "certs/make-dev-certs.sh failed"
ca="$work/certs/ca.crt"
printf 'routes: []\n' >"$work/routes.yaml"
cat >"$work/portico.yaml" <<EOF
listen:
  https: 127.0.0.1:0
tls:
  certificates:
    - cert: $work/certs/tls.crt
      key: $work/certs/tls.key
  handshake_timeout: 5s
operator:
  listen: 127.0.0.1:0
shutdown:
  drain_delay: 0s
  timeout: 5s
routes_file: $work/routes.yaml
EOF

"$bin" serve --config "$work/portico.yaml" >"$work/portico.log" 2>&1 &
pid=$!

# The "listening on" line of a listener: {"listener":"https","addr":"127.0.0.1:PORT",...}
listener_addr() {
    { grep "\"listener\":\"$1\"" "$work/portico.log" 2>/dev/null || true; } | grep -m1 '"listening on' |
        sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true
}
https_addr=""
operator_addr=""
for _ in $(seq 1 100); do
    https_addr="$(listener_addr https)"
    operator_addr="$(listener_addr operator)"
    [[ -n "$https_addr" && -n "$operator_addr" ]] && break
    kill -0 "$pid" 2>/dev/null || fail "portico exited during startup"
    sleep 0.1
done
[[ -n "$https_addr" ]] || fail "no 'listening on' line for the https listener within 10s"
port="${https_addr##*:}"
ok "portico serves HTTPS on $https_addr"

# --- curl: HTTP/2 and HTTP/1.1 over ALPN, verified against the dev CA ---
for proto in http2 http1.1; do
    out="$(curl -sS --"$proto" --cacert "$ca" --max-time 10 -o "$work/body" \
        -w '%{http_code} %{http_version}' "https://localhost:$port/smoke/nowhere")" ||
        fail "curl --$proto failed"
    want_version=2
    [[ "$proto" == http1.1 ]] && want_version=1.1
    [[ "$out" == "404 $want_version" ]] || fail "curl --$proto: expected '404 $want_version', got '$out'"
    grep -q '"error":"no_route"' "$work/body" || fail "curl --$proto: body is not the no_route JSON: $(cat "$work/body")"
    grep -q '"request_id":"' "$work/body" || fail "curl --$proto: no request_id in the body"
    ok "curl --$proto: 404 no_route over HTTP/$want_version"
done

# --- openssl s_client: ALPN h2, chain verifies, TLS 1.2 accepted ---
s_client() {
    openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$ca" \
        -verify_return_error "$@" </dev/null 2>&1
}
out="$(s_client -alpn h2)" || fail "openssl s_client -alpn h2 failed: $out"
grep -q '^ALPN protocol: h2' <<<"$out" || fail "s_client: ALPN h2 not negotiated"
grep -q 'Verify return code: 0 (ok)' <<<"$out" || fail "s_client: certificate did not verify"
ok "openssl s_client: ALPN protocol h2, verify return code 0"

out="$(s_client -tls1_2 -alpn http/1.1)" || fail "openssl s_client -tls1_2 failed: $out"
grep -Eq 'Protocol *: TLSv1\.2' <<<"$out" || fail "s_client -tls1_2: TLS 1.2 not negotiated"
grep -q '^ALPN protocol: http/1.1' <<<"$out" || fail "s_client -tls1_2: ALPN http/1.1 not negotiated"
ok "openssl s_client -tls1_2: TLS 1.2 with ALPN http/1.1"

# --- TLS 1.1 must fail. SECLEVEL=0 lets OpenSSL 3 actually send a TLS 1.1
# hello, so the refusal comes from Portico (an alert), not from the client.
if out="$(s_client -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0')"; then
    fail "openssl s_client -tls1_1 succeeded: TLS 1.1 must be refused"
fi
if grep -q 'SSL alert number' <<<"$out"; then
    ok "openssl s_client -tls1_1: refused by the server ($(grep -o 'SSL alert number [0-9]*' <<<"$out" | head -1))"
else
    ok "openssl s_client -tls1_1: fails (this openssl could not send a TLS 1.1 hello: $(head -1 <<<"$out"))"
fi

# The refusal is counted.
metrics="$(curl -sS --max-time 5 "http://$operator_addr/metrics")" || fail "cannot read /metrics"
errors="$(sed -n 's/^portico_tls_handshake_errors_total \([0-9]*\)$/\1/p' <<<"$metrics")"
[[ -n "$errors" && "$errors" -ge 1 ]] || fail "portico_tls_handshake_errors_total is '${errors:-missing}', expected >= 1"
ok "portico_tls_handshake_errors_total = $errors"

# --- SIGTERM: a clean exit ---
kill -TERM "$pid"
for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "portico still running 15s after SIGTERM"
status=0
wait "$pid" || status=$?
pid=""
[[ "$status" -eq 0 ]] || fail "portico exited with status $status after SIGTERM"
ok "SIGTERM: exited 0"
echo "tls-smoke: passed"
