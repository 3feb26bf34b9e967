#!/usr/bin/env bash
# Side-by-side load test on loopback: the same backend behind nginx, HAProxy
# and Portico, driven by wrk in interleaved rounds of the same run, with CPU
# time per request read from /proc for each proxy. Bounded in time; cleans up
# after itself.
#
#   loadtest/run.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# Needs: nginx, haproxy, wrk (apt-get install -y nginx haproxy wrk). Env:
# ROUNDS (interleaved nginx, HAProxy, Portico rounds, default 3), DURATION (s, default 10),
# CONNECTIONS (default 64), THREADS (wrk threads, default 2), WORKERS (event
# loops per proxy, nginx worker_processes and Portico workers, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null || { echo "needs nginx, haproxy and wrk" >&2; exit 2; }

. loadtest/common.sh

cat > "$work/routes.yaml" <<CONF
routes:
  - prefix: /bench
    backend: http://127.0.0.1:$BACKEND
CONF
cat > "$work/portico.yaml" <<CONF
workers: $WORKERS
listen:
  http: 127.0.0.1:$PORTICO
operator:
  listen: 127.0.0.1:$OPERATOR
routes_file: $work/routes.yaml
shutdown:
  drain_delay: 0s
CONF

start_backend
# nginx as the reference proxy: keep-alive upstream, access log on (as Portico).
start_nginx_proxy "listen 127.0.0.1:$NGINX;"
start_haproxy_proxy
"$BIN" serve --config "$work/portico.yaml" > "$work/portico.log" &
pids+=($!)
PORTICO_PID=$!
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORTICO/bench/x" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$NGINX/bench/x" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$HAPROXY/bench/x" >/dev/null 2>&1 && break
    sleep 0.1
done
# Every nginx worker: CPU is summed over them, as over Portico's threads.
NGINX_WORKERS=$(pgrep -P "$(cat "$work/proxy.pid")" | tr '\n' ' ')
NGINX_WORKER=${NGINX_WORKERS%% *}


# CPU ticks summed over several processes.
ticks_of() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }

# bench NAME URL "PIDS" → prints "rps p50 p99 cpu_us_per_req"
bench() {
    local name=$1 url=$2 pid=${3:-}
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null 2>&1   # warm-up
    local before=0 after=0
    # shellcheck disable=SC2086 # a list of pids
    [ -n "$pid" ] && before=$(ticks_of $pid)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" > "$work/$name.wrk"
    # shellcheck disable=SC2086
    [ -n "$pid" ] && after=$(ticks_of $pid)
    local reqs rps p50 p99 errs
    reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/$name.wrk")
    p50=$(awk '$1=="50%" {print $2}' "$work/$name.wrk")
    p99=$(awk '$1=="99%" {print $2}' "$work/$name.wrk")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/$name.wrk" | tr '\n' ' ')
    local cpu="-"
    if [ -n "$pid" ] && [ "$reqs" -gt 0 ]; then
        cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    fi
    echo "$name $rps $p50 $p99 $cpu ${errs:-}"
}

echo "# loopback, ${DURATION}s per run, wrk -t$THREADS -c$CONNECTIONS, $(nproc) cores, proxy workers: $WORKERS each, $ROUNDS interleaved rounds"
direct=$(bench direct "http://127.0.0.1:$BACKEND/bench/x")
HAPROXY_PID=$(cat "$work/haproxy.pid")

printf '| round | target | req/s | p50 | p99 | proxy CPU per request |\n|---|---|---|---|---|---|\n'
row() { local round=$1; shift; printf '| %s | %s | %s | %s | %s | %s µs |\n' "$round" "$1" "$2" "$3" "$4" "$5"; }
# shellcheck disable=SC2086 # rows are words
row - $direct
ratios=()
for round in $(seq "$ROUNDS"); do
    ngx=$(bench nginx "http://127.0.0.1:$NGINX/bench/x" "$NGINX_WORKERS")
    hap=$(bench haproxy "http://127.0.0.1:$HAPROXY/bench/x" "$HAPROXY_PID")
    por=$(bench portico "http://127.0.0.1:$PORTICO/bench/x" "$PORTICO_PID")
    for r in "$ngx" "$hap" "$por"; do
        # shellcheck disable=SC2086
        row "$round" $r
    done
    # Ratios to the faster of nginx and HAProxy (by req/s) in this round.
    ratios+=("$(awk -v n="$ngx" -v h="$hap" -v p="$por" 'BEGIN {
        split(n, N, " "); split(h, H, " "); split(p, P, " ")
        if (N[2] >= H[2]) { best = "nginx"; r = N[2]; c = N[5] } else { best = "haproxy"; r = H[2]; c = H[5] }
        printf "round %d: portico/%s throughput %.2fx, CPU per request %.2fx (vs nginx %.2fx, vs haproxy %.2fx)", '"$round"', best, P[2] / r, P[5] / c, P[5] / N[5], P[5] / H[5]
    }')")
done
echo
printf '%s\n' "${ratios[@]}"
lines=$(wc -l < "$work/portico.log")
portico_rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$PORTICO_PID/status")
nginx_rss=$(awk '/VmHWM/ {s += $2} END {print s / 1024 " MiB"}' $(printf "/proc/%s/status " $NGINX_WORKERS))
haproxy_rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$HAPROXY_PID/status")
echo "portico access-log lines written: $lines; haproxy: $(wc -l < "$work/haproxy.log")"
echo "peak RSS: portico $portico_rss, nginx workers $nginx_rss, haproxy $haproxy_rss"
grep -h -E "Non-2xx|Socket errors" "$work"/*.wrk || echo "no errors reported by wrk"
