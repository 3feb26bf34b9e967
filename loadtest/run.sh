#!/usr/bin/env bash
# Side-by-side load test on loopback: one fast backend (nginx, a fixed small
# JSON body and a 1 MiB file) behind nginx, HAProxy and Portico with
# equivalent configs: the same prefix route, keep-alive upstream, a request
# id added upstream, one JSON access-log line per request each (nginx
# `access_log ... buffer=64k`, HAProxy `log stdout`, Portico's own), the
# same number of workers, TLS with the same throwaway certificate. The
# proxies take turns in the same run (nginx, HAProxy, Portico, ROUNDS
# times) for every scenario; each run reads the proxy's CPU time and peak
# RSS from /proc. Bounded in time; stops every process it started.
#
#   loadtest/run.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# The WebSocket scenario needs target/release/examples/ws_bench (built here
# with cargo when missing).
#
# Scenarios (SCENARIOS, default all):
#   keepalive64   HTTP/1.1 keep-alive, 64 connections (wrk)
#   keepalive256  HTTP/1.1 keep-alive, 256 connections (wrk)
#   close         a new connection per request, 64 connections (wrk)
#   https         HTTPS keep-alive, 64 connections (wrk)
#   h2            HTTP/2 over TLS, 64 connections x 10 streams (h2load -m 10)
#   1mib          a 1 MiB response, HTTP/1.1 keep-alive, 64 connections (wrk)
#   websocket     WebSockets: 1,000 open quiet sockets plus 64 that each send
#                 a 128-byte message and wait for its echo, again and again
#                 (loadtest/ws_bench.rs, both sides; round trips per second)
#   h2upstream    HTTP/2 to the backend: h2c clients (h2load -m 10, 64
#                 connections) and an h2c backend (nginx grpc_pass, HAProxy
#                 proto h2, Portico h2c://)
# Env: ROUNDS (default 3), DURATION (s per run, default 5; plus a 2 s
# warm-up), THREADS (load-generator threads, default 2), WORKERS (event
# loops per proxy: nginx worker_processes, HAProxy nbthread, Portico
# workers; default 2), OUT (directory for results.tsv, table.md and
# latency.svg; default loadtest/results).
#
# Installs what it lacks from Debian's packages when run as root: nginx,
# haproxy, wrk, nghttp2-client (h2load), openssl, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
DURATION=${DURATION:-5}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-keepalive64 keepalive256 close https h2 1mib websocket h2upstream}
WS_BENCH=${WS_BENCH:-target/release/examples/ws_bench}
OUT=${OUT:-loadtest/results}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }

need=()
for tool in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "needs: ${need[*]} (apt-get install -y ${need[*]})" >&2; exit 2; }
    echo "installing: ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

case " $SCENARIOS " in
    *" websocket "*) [ -x "$WS_BENCH" ] || cargo build --release --example ws_bench ;;
esac

. loadtest/common.sh
NGINX_TLS=$(free_port); HAPROXY_TLS=$(free_port); PORTICO_TLS=$(free_port)
# h2c listeners of nginx and HAProxy (Portico's plain listener takes both);
# the WebSocket echo backend.
NGINX_H2C=$(free_port); HAPROXY_H2C=$(free_port); WS_ECHO=$(free_port)

make_cert
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"
write_bench_portico_config

start_backend
if [ -x "$WS_BENCH" ]; then
    "$WS_BENCH" echo "127.0.0.1:$WS_ECHO" &
    pids+=($!)
fi
# nginx: WebSockets by proxy_pass with the upgrade headers; HTTP/2 to the
# backend only through grpc_pass, on an h2c listener of its own.
start_nginx_proxy "listen 127.0.0.1:$NGINX;
        listen 127.0.0.1:$NGINX_TLS ssl http2;
        ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;" \
    "location /ws/ {
            proxy_pass http://127.0.0.1:$WS_ECHO;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection upgrade;
            proxy_set_header X-Request-Id \$request_id;
            proxy_read_timeout 1h;
        }" \
    "proxy_set_header X-Forwarded-Proto \$scheme;" \
    "upstream bench_h2 { server 127.0.0.1:$BACKEND_H2; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_H2C http2;
        location /h2bench/ {
            grpc_pass grpc://bench_h2;
            grpc_set_header X-Request-Id \$request_id;
            grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }"
start_haproxy_proxy "bind 127.0.0.1:$HAPROXY_TLS ssl crt $work/haproxy.pem alpn h2,http/1.1
    bind 127.0.0.1:$HAPROXY_H2C proto h2
    timeout tunnel 1h" \
    "use_backend ws if { path_beg /ws/ }
    use_backend bench_h2 if { path_beg /h2bench/ }" \
    "backend ws
    server w1 127.0.0.1:$WS_ECHO
backend bench_h2
    server h1 127.0.0.1:$BACKEND_H2 proto h2 maxconn 1000"
start_portico
wait_up "http://127.0.0.1:$NGINX/bench/x" "http://127.0.0.1:$HAPROXY/bench/x" "http://127.0.0.1:$PORTICO/bench/x" \
    "https://127.0.0.1:$NGINX_TLS/bench/x" "https://127.0.0.1:$HAPROXY_TLS/bench/x" "https://127.0.0.1:$PORTICO_TLS/bench/x" \
    "h2c://127.0.0.1:$NGINX_H2C/h2bench/x" "h2c://127.0.0.1:$HAPROXY_H2C/h2bench/x" "h2c://127.0.0.1:$PORTICO/h2bench/x"
# Every nginx worker: CPU and memory are summed over them, as over
# Portico's and HAProxy's threads.
NGINX_WORKERS=$(pgrep -P "$(cat "$work/proxy.pid")" | tr '\n' ' ')
HAPROXY_PID=$(cat "$work/haproxy.pid")

# Peak RSS per run: reset each process's high-water mark, read it after.
reset_peak() { local p; for p in "$@"; do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done; }
peak_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }

# load TOOL URL CONNS OUTFILE [args...]: one measured run (after a warm-up).
load() {
    local tool=$1 url=$2 conns=$3 out=$4; shift 4
    case $tool in
        wrk)
            wrk -t"$THREADS" -c"$conns" -d2s "$@" "$url" >/dev/null 2>&1
            wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency -s loadtest/latency.lua "$@" "$url" > "$out" 2>&1 ||
                echo "wrk failed on $url" >&2 ;;
        ws)
            "$WS_BENCH" load "$url" "$conns" 1000 "$DURATION" 128 "$THREADS" > "$out" 2>&1 ||
                echo "ws_bench failed on $url" >&2 ;;
        h2load)
            h2load -t"$THREADS" -c"$conns" -m10 -D2 "$url" >/dev/null 2>&1
            h2load -t"$THREADS" -c"$conns" -m10 -D"$DURATION" --log-file="$out.log" "$url" > "$out" 2>&1 ||
                echo "h2load failed on $url" >&2 ;;
    esac
}

# Parses one run's output → "requests rps p50_ms p99_ms p999_ms errors".
parse() {
    local tool=$1 out=$2
    case $tool in
        ws)
            awk '/^round_trips/ {printf "%d %s %s %s %s %d\n", $2, $4, $6, $8, $10, $12; ok = 1}
                 END {if (!ok) print "0 0 - - - 1"}' "$out" ;;
        wrk)
            awk '/requests in/ {n = $1} /Requests\/sec/ {r = $2} /^lat_ms/ {a = $2; b = $3; c = $4}
                 /Non-2xx/ {e += $NF} /Socket errors/ {gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) e += $i}
                 END {printf "%d %.0f %s %s %s %d\n", n, r, a, b, c, e}' "$out" ;;
        h2load)
            local n rps errs pcts
            n=$(awk '/^requests:/ {print $8}' "$out")                 # succeeded
            rps=$(awk '/^finished in/ {gsub(/,/, ""); print $4}' "$out")
            # failed requests, and answers other than 2xx
            errs=$(awk '/^requests:/ {e += $10} /^status codes:/ {e += $5 + $7 + $9} END {print e + 0}' "$out")
            pcts=$(awk -F'\t' '{print $3 / 1000}' "$out.log" | sort -n | awk '{v[NR] = $1} END {
                printf "%.3f %.3f %.3f", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[int(NR * 0.999) + 1]}')
            printf '%d %.0f %s %d\n' "$n" "$rps" "$pcts" "$errs" ;;
    esac
}

# bench SCENARIO ROUND PROXY TOOL URL CONNS "PIDS" [args...] → a results.tsv line
bench() {
    local scenario=$1 round=$2 proxy=$3 tool=$4 url=$5 conns=$6 pids_=$7; shift 7
    local out="$work/$scenario-$round-$proxy.out" before after
    # shellcheck disable=SC2086 # lists of pids
    { reset_peak $pids_; before=$(ticks_of $pids_); }
    load "$tool" "$url" "$conns" "$out" "$@"
    # shellcheck disable=SC2086
    after=$(ticks_of $pids_)
    local n rps p50 p99 p999 errs
    read -r n rps p50 p99 p999 errs <<<"$(parse "$tool" "$out")"
    local cpu="-" rss="-"
    if [ -n "$pids_" ]; then
        [ "${n:-0}" -gt 0 ] && cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
        # shellcheck disable=SC2086
        rss=$(awk -v k="$(peak_kib $pids_)" 'BEGIN {printf "%.1f", k / 1024}')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$round" "$proxy" "$rps" "$p50" "$p99" "$p999" "$cpu" "$rss" "$errs"
}

mkdir -p "$OUT"
results="$OUT/results.tsv"
printf 'scenario\tround\tproxy\treq_s\tp50_ms\tp99_ms\tp999_ms\tcpu_us_per_req\tpeak_rss_mib\terrors\n' > "$results"
for scenario in $SCENARIOS; do
    tool=wrk conns=64 scheme=http path=/bench/x args=()
    case $scenario in
        keepalive64) ;;
        keepalive256) conns=256 ;;
        close) args=(-H "Connection: close") ;;
        https) scheme=https ;;
        h2) scheme=https tool=h2load ;;
        1mib) path=/bench/big ;;
        websocket) tool=ws scheme=ws path=/ws/echo ;;
        h2upstream) tool=h2load scheme=h2c path=/h2bench/x ;;
        *) echo "unknown scenario $scenario ($SCENARIOS)" >&2; exit 2 ;;
    esac
    case $scheme in
        http)
            ports=("$NGINX" "$HAPROXY" "$PORTICO")
            bench "$scenario" - direct "$tool" "http://127.0.0.1:$BACKEND$path" "$conns" "" "${args[@]}" >> "$results" ;;
        ws)
            ports=("$NGINX" "$HAPROXY" "$PORTICO")
            bench "$scenario" - direct "$tool" "ws://127.0.0.1:$WS_ECHO$path" "$conns" "" >> "$results" ;;
        h2c)
            # h2load speaks h2c (prior knowledge) to http:// URLs.
            scheme=http
            ports=("$NGINX_H2C" "$HAPROXY_H2C" "$PORTICO")
            bench "$scenario" - direct "$tool" "http://127.0.0.1:$BACKEND_H2$path" "$conns" "" >> "$results" ;;
        *) ports=("$NGINX_TLS" "$HAPROXY_TLS" "$PORTICO_TLS") ;;
    esac
    echo "$scenario ..." >&2
    for round in $(seq "$ROUNDS"); do
        bench "$scenario" "$round" nginx "$tool" "$scheme://127.0.0.1:${ports[0]}$path" "$conns" "$NGINX_WORKERS" "${args[@]}" >> "$results"
        bench "$scenario" "$round" haproxy "$tool" "$scheme://127.0.0.1:${ports[1]}$path" "$conns" "$HAPROXY_PID" "${args[@]}" >> "$results"
        bench "$scenario" "$round" portico "$tool" "$scheme://127.0.0.1:${ports[2]}$path" "$conns" "$PORTICO_PID" "${args[@]}" >> "$results"
    done
done

# The load generators' own output, for a closer look at any run.
mkdir -p "$OUT/raw" && cp "$work"/*.out "$OUT/raw/" 2>/dev/null || true
header="$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(. /etc/os-release && echo "$PRETTY_NAME"), nginx $(nginx -v 2>&1 | sed 's|.*/||'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), wrk + h2load $(h2load --version | awk '{print $2}' | sed 's|.*/||'); loopback; $WORKERS workers per proxy; $THREADS load-generator threads; ${DURATION}s per run after a 2s warm-up; $ROUNDS interleaved rounds"
python3 loadtest/report.py "$results" "$OUT/table.md" "$OUT/latency.svg" "$header"
cat "$OUT/table.md"
echo
echo "access-log lines: portico $(grep -c '"msg":"request"' "$work/portico.log"), nginx $(wc -l < "$work/nginx-access.log"), haproxy $(grep -c '"request_id"' "$work/haproxy.log")"
echo "written: $results, $OUT/table.md, $OUT/latency.svg, $OUT/raw/"
