#!/usr/bin/env bash
# Side-by-side TLS load test on loopback: nginx and Portico each terminate TLS
# (the same throwaway ECDSA P-256 certificate, one worker each) in front of the
# same plain-HTTP backend, driven by wrk in the same run, with the proxy's CPU
# time per request read from /proc. Three scenarios:
#   handshake        a new TLS connection per request (Connection: close on
#                    /local): full handshake + 1 request; CPU/req = CPU/handshake
#   keepalive-local  HTTPS keep-alive, a locally generated 404 (/local)
#   keepalive-proxy  HTTPS keep-alive, /bench/x proxied to the plain backend
# Bounded in time (3 x 2 x (2 s warm-up + DURATION)); cleans up after itself;
# the key lives only in the mktemp work dir, deleted on exit.
#
#   loadtest/tls.sh [PORTICO_BINARY]     (default: target/release/portico)
#
# Needs: nginx, wrk, openssl, curl, python3 (apt-get install -y nginx wrk).
# Env: DURATION (s, default 10), CONNECTIONS (default 64), CONNECTIONS_HANDSHAKE
# (default 16), THREADS (wrk threads, default 2), WORKERS (event loops per proxy, default 1).
#
# Session resumption (checked with wrk 4.1.0, OpenSSL 3.0): wrk keeps one SSL
# object per connection slot and closes with SSL_shutdown + SSL_clear, which
# keeps the session, so every reconnect offers the last TLS 1.3 ticket: against
# an nginx with resumption on, 7,735 of 7,751 "Connection: close" requests were
# resumed. Portico (rustls defaults: session cache + TLS 1.3 tickets) resumes;
# this nginx (ssl_session_cache off, ssl_session_tickets off) cannot, so plain
# wrk would pit PSK handshakes against full ones. wrk therefore runs with an
# LD_PRELOAD shim (cc, built in the work dir) that drops the session before
# SSL_clear: 0 of 4,722 resumed on that nginx. RESUME=1 runs wrk without it.
# The header shows which server resumes (openssl s_client -sess_out/-sess_in;
# `s_client -reconnect` closes before a TLS 1.3 ticket arrives, so it says no).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/portico}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
CONNECTIONS_HANDSHAKE=${CONNECTIONS_HANDSHAKE:-16}
THREADS=${THREADS:-2}
RESUME=${RESUME:-0}
[ -x "$BIN" ] || { echo "no portico binary at $BIN (cargo build --release)" >&2; exit 2; }
for c in nginx wrk openssl curl python3; do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y nginx wrk)" >&2; exit 2; }
done

. loadtest/common.sh

make_cert
write_portico_config "  https: 127.0.0.1:$PORTICO" "$TLS_SECTION"

# The wrk shim: forget the session before SSL_clear so reconnects never offer
# resumption (see the header). Built only when RESUME=0.
WRK_ENV=()
if [ "$RESUME" = 0 ]; then
    command -v cc >/dev/null || { echo "needs cc for the no-resumption shim (or RESUME=1)" >&2; exit 2; }
    cat > "$work/noresume.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
typedef struct ssl_st SSL;
static int (*real_clear)(SSL *);
static int (*set_session)(SSL *, void *);
__attribute__((constructor)) static void init(void) {   /* before any wrk thread */
    real_clear = (int (*)(SSL *)) dlsym(RTLD_NEXT, "SSL_clear");
    set_session = (int (*)(SSL *, void *)) dlsym(RTLD_NEXT, "SSL_set_session");
}
int SSL_clear(SSL *s) { set_session(s, 0); return real_clear(s); }
C
    cc -shared -fPIC -O2 -o "$work/noresume.so" "$work/noresume.c" -ldl
    WRK_ENV=(env "LD_PRELOAD=$work/noresume.so")
fi

start_backend
# nginx terminating TLS: no session cache, no tickets (every new connection is
# a full handshake); /local answers like Portico's own 404.
start_nginx_proxy \
    "listen 127.0.0.1:$NGINX ssl;
        ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off; ssl_session_tickets off;" \
    'location = /local {
            default_type application/json;
            return 404 '"'"'{"error":"no_route","message":"no route matches this path","request_id":"$request_id"}'"'"';
        }' \
    "proxy_set_header X-Forwarded-Proto https;"
start_portico
wait_up "https://127.0.0.1:$PORTICO/bench/x" "https://127.0.0.1:$NGINX/bench/x"
# Every nginx worker: CPU is summed over them, as over Portico's threads.
NGINX_WORKERS=$(pgrep -P "$(cat "$work/proxy.pid")" | tr '\n' ' ')

# Does a server resume an offered session? (-reconnect closes before the
# TLS 1.3 ticket arrives, so save the session after a request and offer it.)
s_get() {
    local port=$1; shift
    printf 'GET /local HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
        timeout 5 openssl s_client -connect "127.0.0.1:$port" -ign_eof "$@" 2>/dev/null || true
}
resumes() {
    local v out=""
    for v in 1_3 1_2; do
        s_get "$1" -tls"$v" -sess_out "$work/sess.pem" >/dev/null
        s_get "$1" -tls"$v" -sess_in "$work/sess.pem" | grep -q '^Reused' && out+=" TLS${v/_/.} yes" || out+=" TLS${v/_/.} no"
    done
    echo "${out# }"
}


# bench NAME URL PID CONNS [wrk args...] → "rps cpu_us_per_req non2xx [socket errors]"
bench() {
    local name=$1 url=$2 pid=$3 conns=$4; shift 4
    "${WRK_ENV[@]}" wrk -t"$THREADS" -c"$conns" -d2s "$@" "$url" >/dev/null 2>&1   # warm-up
    local before after reqs rps non2xx sock cpu
    # shellcheck disable=SC2086 # a list of pids
    before=$(ticks_of $pid)
    "${WRK_ENV[@]}" wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency "$@" "$url" > "$work/$name.wrk" ||
        echo "wrk failed (exit $?) on $name" >&2
    # shellcheck disable=SC2086
    after=$(ticks_of $pid)
    reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/$name.wrk")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$name.wrk")
    sock=$(awk '/Socket errors/ {sub(/^ *Socket errors: */, ""); print}' "$work/$name.wrk")
    cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="${reqs:-0}" 'BEGIN {if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-"}')
    echo "${rps:--} $cpu ${non2xx:-0} $sock"
}

echo "# loopback TLS (ECDSA P-256, HTTP/1.1), ${DURATION}s per run after a 2s warm-up, wrk -t$THREADS -c$CONNECTIONS --latency (handshake: -c$CONNECTIONS_HANDSHAKE -H 'Connection: close'), $(nproc) cores, proxy workers: $WORKERS each; wrk offers session resumption: $([ "$RESUME" = 0 ] && echo no || echo yes)"
echo "# server resumes an offered session: nginx ($(resumes "$NGINX")), portico ($(resumes "$PORTICO"))"
printf '\n| scenario | nginx req/s | nginx CPU/req | Portico req/s | Portico CPU/req | Portico/nginx CPU |\n|---|---|---|---|---|---|\n'
notes=()
for scenario in handshake keepalive-local keepalive-proxy; do
    case $scenario in
        handshake)       path=/local;   conns=$CONNECTIONS_HANDSHAKE; args=(-H "Connection: close") ;;
        keepalive-local) path=/local;   conns=$CONNECTIONS; args=() ;;
        keepalive-proxy) path=/bench/x; conns=$CONNECTIONS; args=() ;;
    esac
    ngx=$(bench "$scenario-nginx" "https://127.0.0.1:$NGINX$path" "$NGINX_WORKERS" "$conns" "${args[@]}")
    por=$(bench "$scenario-portico" "https://127.0.0.1:$PORTICO$path" "$PORTICO_PID" "$conns" "${args[@]}")
    read -r n_rps n_cpu n_bad n_sock <<<"$ngx"
    read -r p_rps p_cpu p_bad p_sock <<<"$por"
    ratio=$(awk -v a="$p_cpu" -v b="$n_cpu" 'BEGIN {if (b > 0 && a > 0) printf "%.2fx", a / b; else print "-"}')
    printf '| %s | %s | %s µs | %s | %s µs | %s |\n' "$scenario" "$n_rps" "$n_cpu" "$p_rps" "$p_cpu" "$ratio"
    # /local answers 404 by design; elsewhere a non-2xx is an error, as is any socket error.
    expected=""; [ "$path" = /local ] && expected=" (404 expected)"
    note="$scenario: non-2xx nginx $n_bad, portico $p_bad$expected; socket errors nginx ${n_sock:-none}, portico ${p_sock:-none}"
    if [ -n "$n_sock$p_sock" ] || { [ -z "$expected" ] && [ "$n_bad$p_bad" != 00 ]; }; then note="ERRORS $note"; fi
    notes+=("$note")
done
echo
printf '%s\n' "${notes[@]}"
echo "access-log lines written: portico $(wc -l < "$work/portico.log"), nginx $(wc -l < "$work/nginx-access.log")"
