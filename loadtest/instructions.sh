#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# cachegrind (no cache simulation): a deterministic figure for comparing two
# builds of the request path, where timings on a shared 2-core machine move
# by 10% from run to run. One worker, one keep-alive client sending GET
# /bench/x one after another to the nginx backend of common.sh; the
# figure is (Ir with 100 + N requests - Ir with 100) / N, so start-up and
# shutdown cancel out. Kernel work (the system calls) is not counted.
#
#   loadtest/instructions.sh [PORTICO_BINARY]   (default: target/release/portico)
#   PROTO=h2c loadtest/instructions.sh         (HTTP/2 both sides: h2load, one
#                                               connection, 10 streams at a
#                                               time, to the h2c backend)
#
# Needs: valgrind, nginx, python3, curl (and h2load for PROTO=h2c). Env: N
# (default 5000), PROTO (http1, the default, or h2c). Writes the
# per-function profile of the longer run to loadtest/results/cachegrind.out
# (read it with cg_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
N=${N:-5000}
PROTO=${PROTO:-http1}
case $PROTO in http1 | h2c) ;; *) echo "PROTO is http1 or h2c, not $PROTO" >&2; exit 2 ;; esac
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
for c in valgrind nginx python3 curl $([ "$PROTO" = h2c ] && echo h2load); do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y valgrind nginx curl python3 nghttp2-client)" >&2; exit 2; }
done
. loadtest/common.sh
WORKERS=1
start_backend
write_portico_config "  http: 127.0.0.1:$PORTICO" "" "  - prefix: /h2bench
    backend: h2c://127.0.0.1:$BACKEND_H2"
cat > "$work/client.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
req = b"GET /bench/x HTTP/1.1\r\nHost: localhost\r\nUser-Agent: instructions\r\n\r\n"
buf = b""
for _ in range(n):
    s.sendall(req)
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i].decode()
            length = [l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")]
            if len(buf) >= i + 4 + int(length[0]):
                buf = buf[i + 4 + int(length[0]):]
                break
        data = s.recv(65536)
        if not data:
            sys.exit("connection closed by the gateway")
        buf += data
PY
# Total user-space instructions of one gateway run serving $1 requests.
measure() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/cg-$1.out" \
        "$BIN" serve --config "$work/portico.yaml" > "$work/portico-$1.log" 2> "$work/valgrind-$1.log" &
    local pid=$!
    wait_up "http://127.0.0.1:$PORTICO/bench/x"
    if [ "$PROTO" = h2c ]; then
        h2load -n "$1" -c1 -m10 "http://127.0.0.1:$PORTICO/h2bench/x" >/dev/null
    else
        python3 "$work/client.py" "$PORTICO" "$1"
    fi
    kill -INT "$pid"; wait "$pid" || true
    awk '/^summary:/ {print $2}' "$work/cg-$1.out"
}
short=$(measure 100)
long=$(measure $((100 + N)))
mkdir -p loadtest/results
cp "$work/cg-$((100 + N)).out" loadtest/results/cachegrind.out
echo "$(basename "$BIN"): $(( (long - short) / N )) user-space instructions per proxied request ($PROTO, N=$N)"
