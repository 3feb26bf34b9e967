#!/usr/bin/env bash
# Memory held by idle keep-alive connections, side by side: N clients each make
# one request through nginx, HAProxy and Portico (same backend, same route),
# then stay connected and idle. Prints each proxy's RSS before, while the N
# connections idle (after SETTLE seconds), and after they close. Bounded in
# time; stops every process it started.
#
#   loadtest/idle.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# Needs: nginx, haproxy, python3. Env: CLIENTS (default 10000), SETTLE (s,
# default 3), WORKERS (event loops per proxy, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
CLIENTS=${CLIENTS:-10000}
SETTLE=${SETTLE:-3}
export WORKERS=${WORKERS:-2}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
for c in nginx haproxy python3 curl; do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y nginx haproxy curl python3)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)"

. loadtest/common.sh

write_portico_config "  http: 127.0.0.1:$PORTICO" "limits:
  max_connections: $((CLIENTS + 1000))"

start_backend
start_nginx_proxy "listen 127.0.0.1:$NGINX;"
sed -i "s/worker_connections 4096/worker_connections $((CLIENTS + 1000))/" "$work/proxy.conf"
nginx -c "$work/proxy.conf" -p "$work" -s reload 2>/dev/null || true
start_haproxy_proxy
# HAProxy wants two descriptors per maxconn; the hard open-file limit bounds it.
HAPROXY_CLIENTS=$(( CLIENTS < ($(ulimit -Hn) - 200) / 2 ? CLIENTS : ($(ulimit -Hn) - 200) / 2 ))
sed -i "s/maxconn 8000/maxconn $((HAPROXY_CLIENTS + 50))/" "$work/haproxy.cfg"
kill "$(cat "$work/haproxy.pid")"; sleep 0.3
haproxy -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
echo $! > "$work/haproxy.pid"; pids+=($!)
start_portico
wait_up "http://127.0.0.1:$PORTICO/bench/x" "http://127.0.0.1:$NGINX/bench/x" "http://127.0.0.1:$HAPROXY/bench/x"
sleep 1   # nginx reload: old workers exit

rss() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

# measure NAME PORT "PIDS" → one table row
measure() {
    local name=$1 port=$2 pids_=$3 n=$4 before during after
    # shellcheck disable=SC2086
    before=$(rss $pids_)
    coproc CLIENT { python3 loadtest/idle_clients.py 127.0.0.1 "$port" /bench/x "$n" 120; }
    local line=""
    read -r line <&"${CLIENT[0]}" || true
    [ "${line%% *}" = ready ] || { echo "$name: clients failed: $line" >&2; exit 1; }
    sleep "$SETTLE"
    # shellcheck disable=SC2086
    during=$(rss $pids_)
    exec {CLIENT[1]}>&-
    read -r line <&"${CLIENT[0]}" || true
    wait "$CLIENT_PID" 2>/dev/null || true
    sleep 2
    # shellcheck disable=SC2086
    after=$(rss $pids_)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$n" "$(mib "$before")" "$(mib "$during")" \
        "$(awk -v a="$during" -v b="$before" -v n="$n" 'BEGIN {printf "%.1f KiB", (a - b) / n}')" \
        "$(mib "$after")" "${line#closed-by-server }"
}

NGINX_WORKERS=$(pgrep -P "$(cat "$work/proxy.pid")" | tr '\n' ' ')
echo "## $CLIENTS idle keep-alive connections (one request each), $(nproc) cores, proxy workers: $WORKERS each, RSS after ${SETTLE}s idle"
printf '| proxy | idle connections | RSS before | RSS with them | per connection | RSS after they close | closed by proxy |\n|---|---|---|---|---|---|---|\n'
measure nginx "$NGINX" "$NGINX_WORKERS" "$CLIENTS"
measure haproxy "$HAPROXY" "$(cat "$work/haproxy.pid")" "$HAPROXY_CLIENTS"
measure portico "$PORTICO" "$PORTICO_PID" "$CLIENTS"
