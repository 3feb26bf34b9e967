#!/usr/bin/env bash
# Writes loadtest/hot-functions.txt: the symbols of every function a release
# build runs while it starts, serves each kind of traffic of loadtest/run.sh
# once (HTTP/1.1 keep-alive and one connection per request, HTTPS, HTTP/2
# over TLS, a 1 MiB response, a WebSocket, HTTP/2 to the backend, the
# operator endpoints) and shuts down, as valgrind's callgrind saw them.
#
# build.rs hands the list to the linker (lld's --symbol-ordering-file) for
# release builds, so that these functions sit together in the binary
# instead of spread over all of its 6.3 MiB of code: the kernel maps a
# binary's code in 64 KiB runs around each page first touched, so code
# that is spread out is resident almost whole (README, Performance: "Code
# layout"). A symbol the list names that a build no longer has is skipped;
# a function the list misses is placed after the listed ones, as before.
# Re-run it after changes that add or rename much of the request path:
#
#   cargo build --release && cargo build --release --example ws_bench
#   (two commands: built in one, the binary gets the dev-dependencies'
#   features, and its symbol names no longer match a plain release build)
#   loadtest/hot_functions.sh [PORTICO_BINARY]   (default: target/release/portico)
#
# Needs: valgrind, nginx, curl, openssl, python3. Bounded in time; stops
# every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
WS_BENCH=${WS_BENCH:-target/release/examples/ws_bench}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
[ -x "$WS_BENCH" ] || { echo "no $WS_BENCH (cargo build --release --example ws_bench)" >&2; exit 2; }
for c in valgrind nginx curl openssl python3; do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y valgrind nginx curl openssl python3)" >&2; exit 2; }
done
. loadtest/common.sh
WORKERS=1
PORTICO_TLS=$(free_port); WS_ECHO=$(free_port)
make_cert
write_bench_portico_config
start_backend
"$WS_BENCH" echo "127.0.0.1:$WS_ECHO" &
pids+=($!)

valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
    "$BIN" serve --config "$work/portico.yaml" > "$work/portico.log" 2> "$work/valgrind.log" &
gateway=$!
pids+=("$gateway")
# Under valgrind start-up takes a few seconds.
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$PORTICO/bench/x" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORTICO/bench/x" >/dev/null || { cat "$work"/*.log >&2; exit 1; }

p="http://127.0.0.1:$PORTICO"
s="https://127.0.0.1:$PORTICO_TLS"
urls() { local base=$1 path=$2 n=$3 i; for i in $(seq "$n"); do printf '%s%s ' "$base" "$path"; done; }
# shellcheck disable=SC2046
{
    curl -sf $(urls "$p" /bench/x 50)                       # keep-alive
    for _ in $(seq 10); do curl -sf "$p/bench/x"; done      # one connection each
    curl -skf --http1.1 $(urls "$s" /bench/x 50)            # HTTPS
    curl -skf --http2 $(urls "$s" /bench/x 50)              # HTTP/2 over TLS
    curl -sf $(urls "$p" /bench/big 5)                      # 1 MiB
    curl -sf --http2-prior-knowledge $(urls "$p" /h2bench/x 50)  # h2c both sides
    curl -sf "$p/bench/nothing/here?q=1"
    curl -sf "http://127.0.0.1:$OPERATOR/metrics"
    curl -sf "http://127.0.0.1:$OPERATOR/readyz"
} > /dev/null || { echo "a request failed" >&2; cat "$work"/*.log >&2; exit 1; }
"$WS_BENCH" load "ws://127.0.0.1:$PORTICO/ws/x" 4 4 1 128 1 > "$work/ws.out" ||
    { echo "the WebSocket load failed" >&2; cat "$work/ws.out" "$work"/*.log >&2; exit 1; }
kill -TERM "$gateway"; wait "$gateway" || true

# callgrind names each function once, as `fn=(id) symbol`, and by id after.
# Kept: the ones that are functions of this binary (not libc's).
nm --defined-only "$BIN" | awk '$2 ~ /^[tT]$/ {print $3}' > "$work/text-symbols"
python3 - "$work/callgrind.out" "$work/text-symbols" loadtest/hot-functions.txt <<'PY'
import re, sys
ours = set(open(sys.argv[2]).read().split())
seen = set()
for line in open(sys.argv[1]):
    m = re.match(r"^c?fn=\(\d+\) (\S+)$", line.strip())
    if m and m.group(1) in ours:
        seen.add(m.group(1))
# Sorted by name: a crate's functions stay together.
names = sorted(seen)
with open(sys.argv[3], "w") as f:
    f.write("\n".join(names) + "\n")
print(f"{sys.argv[3]}: {len(names)} functions")
PY
