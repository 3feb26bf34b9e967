#!/usr/bin/env bash
# Side-by-side load test on loopback: the same backend behind nginx, HAProxy
# and Portico, driven by wrk in interleaved rounds of the same run, with CPU
# time per request read from /proc for each proxy. Bounded in time; cleans up
# after itself.
#
#   loadtest/run.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# Needs: nginx, haproxy, wrk (apt-get install -y nginx haproxy wrk). Env:
# SCENARIOS (default "keepalive close 1mib": HTTP/1.1 keep-alive, a new
# connection per request, a 1 MiB response), ROUNDS (interleaved nginx,
# HAProxy, Portico rounds per scenario, default 3), DURATION (s, default 10),
# CONNECTIONS (default 64), THREADS (wrk threads, default 2), WORKERS (event
# loops per proxy, nginx worker_processes and Portico workers, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-keepalive close 1mib}
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



# bench NAME URL "PIDS" → prints "rps p50 p99 p99.9 cpu_us_per_req errors"
# (WRK_EXTRA, an array: more wrk arguments for the scenario, e.g. a header).
bench() {
    local name=$1 url=$2 pid=${3:-}
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${WRK_EXTRA[@]}" "$url" >/dev/null 2>&1   # warm-up
    local before=0 after=0
    # shellcheck disable=SC2086 # a list of pids
    [ -n "$pid" ] && before=$(ticks_of $pid)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s loadtest/latency.lua "${WRK_EXTRA[@]}" "$url" > "$work/$name.wrk"
    # shellcheck disable=SC2086
    [ -n "$pid" ] && after=$(ticks_of $pid)
    local reqs rps p50 p99 p999 errs
    reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/$name.wrk")
    p50=$(awk '$1=="50%" {print $2}' "$work/$name.wrk")
    p99=$(awk '$1=="99%" {print $2}' "$work/$name.wrk")
    p999=$(awk '$1=="p999" {print $2}' "$work/$name.wrk")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/$name.wrk" | tr '\n' ' ')
    local cpu="-"
    if [ -n "$pid" ] && [ "$reqs" -gt 0 ]; then
        cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    fi
    echo "$name $rps $p50 $p99 $p999 $cpu ${errs:-}"
}

HAPROXY_PID=$(cat "$work/haproxy.pid")
row() { local round=$1; shift; printf '| %s | %s | %s | %s | %s | %s | %s µs |\n' "$round" "$1" "$2" "$3" "$4" "$5" "$6"; }
ratios=()
for scenario in $SCENARIOS; do
    case $scenario in
        keepalive) path=/bench/x; WRK_EXTRA=() ;;
        close) path=/bench/x; WRK_EXTRA=(-H "Connection: close") ;;
        1mib) path=/bench/big; WRK_EXTRA=() ;;
        *) echo "unknown scenario $scenario (keepalive, close, 1mib)" >&2; exit 2 ;;
    esac
    echo
    echo "## $scenario: loopback, ${DURATION}s per run, wrk -t$THREADS -c$CONNECTIONS ${WRK_EXTRA[*]}, $(nproc) cores, proxy workers: $WORKERS each, $ROUNDS interleaved rounds"
    printf '| round | target | req/s | p50 | p99 | p99.9 | proxy CPU per request |\n|---|---|---|---|---|---|---|\n'
    # shellcheck disable=SC2046 # rows are words
    row - $(bench direct "http://127.0.0.1:$BACKEND$path")
    for round in $(seq "$ROUNDS"); do
        ngx=$(bench nginx "http://127.0.0.1:$NGINX$path" "$NGINX_WORKERS")
        hap=$(bench haproxy "http://127.0.0.1:$HAPROXY$path" "$HAPROXY_PID")
        por=$(bench portico "http://127.0.0.1:$PORTICO$path" "$PORTICO_PID")
        for r in "$ngx" "$hap" "$por"; do
            # shellcheck disable=SC2086
            row "$round" $r
        done
        # Ratios to the faster of nginx and HAProxy (by req/s) in this round.
        ratios+=("$(awk -v n="$ngx" -v h="$hap" -v p="$por" -v s="$scenario" -v r="$round" 'BEGIN {
            split(n, N, " "); split(h, H, " "); split(p, P, " ")
            if (N[2] >= H[2]) { best = "nginx"; q = N[2]; c = N[6] } else { best = "haproxy"; q = H[2]; c = H[6] }
            printf "%s round %d: portico/%s throughput %.2fx, CPU per request %.2fx (vs nginx %.2fx, vs haproxy %.2fx)", s, r, best, P[2] / q, P[6] / c, P[6] / N[6], P[6] / H[6]
        }')")
    done
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
