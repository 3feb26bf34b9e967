#!/usr/bin/env bash
# Side-by-side load test on loopback: the same backend behind nginx and
# behind Portico, driven by wrk in the same run, with CPU time per request
# read from /proc for each proxy. Bounded in time; cleans up after itself.
#
#   loadtest/run.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# Needs: nginx, wrk (apt-get install -y nginx wrk). Env: DURATION (s, default 10),
# CONNECTIONS (default 64), THREADS (wrk threads, default 2), WORKERS (event
# loops per proxy, nginx worker_processes and Portico workers, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk" >&2; exit 2; }

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
"$BIN" serve --config "$work/portico.yaml" > "$work/portico.log" &
pids+=($!)
PORTICO_PID=$!
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORTICO/bench/x" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$NGINX/bench/x" >/dev/null 2>&1 && break
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

echo "# loopback, ${DURATION}s per run, wrk -t$THREADS -c$CONNECTIONS, $(nproc) cores, proxy workers: $WORKERS each"
direct=$(bench direct "http://127.0.0.1:$BACKEND/bench/x")
ngx=$(bench nginx "http://127.0.0.1:$NGINX/bench/x" "$NGINX_WORKERS")
por=$(bench portico "http://127.0.0.1:$PORTICO/bench/x" "$PORTICO_PID")
lines=$(wc -l < "$work/portico.log")
portico_rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$PORTICO_PID/status")
nginx_rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$NGINX_WORKER/status")

printf '| target | req/s | p50 | p99 | proxy CPU per request |\n|---|---|---|---|---|\n'
for row in "$direct" "$ngx" "$por"; do
    set -- $row
    printf '| %s | %s | %s | %s | %s µs |\n' "$1" "$2" "$3" "$4" "$5"
done
set -- $ngx; ngx_rps=$2; ngx_cpu=$5
set -- $por; por_rps=$2; por_cpu=$5
awk -v a="$por_rps" -v b="$ngx_rps" -v c="$por_cpu" -v d="$ngx_cpu" \
    'BEGIN {printf "\nportico/nginx: throughput %.2fx, CPU per request %.2fx\n", a / b, c / d}'
echo "portico access-log lines written: $lines"
echo "peak RSS: portico $portico_rss, nginx worker $nginx_rss"
grep -h -E "Non-2xx|Socket errors" "$work"/*.wrk || echo "no errors reported by wrk"
