# Shared by the load tests (sourced, not run): a work directory removed on
# exit together with every process started for the run, free loopback
# ports, the nginx backend both tests put behind the proxies, the access-log
# format nginx gets (so it logs as much as Portico does), and CPU ticks.

work=$(mktemp -d)
# Processes to stop on exit (Portico); nginx masters are found by pid file.
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    [ -f "$work/backend.pid" ] && kill "$(cat "$work/backend.pid")" 2>/dev/null || true
    [ -f "$work/proxy.pid" ] && kill "$(cat "$work/proxy.pid")" 2>/dev/null || true
    for _ in $(seq 30); do   # nginx masters remove their pid files on exit
        [ -f "$work/backend.pid" ] || [ -f "$work/proxy.pid" ] || break; sleep 0.1
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); NGINX=$(free_port); PORTICO=$(free_port); OPERATOR=$(free_port); HAPROXY=$(free_port)
# The same small answer over HTTP/2 with prior knowledge (h2c), for the
# HTTP/2-upstream scenario.
BACKEND_H2=$(free_port)

# The backend: nginx answering a small fixed body, one worker, no logging.
start_backend() {
    head -c 1048576 /dev/zero > "$work/big.bin"
    # nginx workers drop root: let them read the file (mktemp -d is 0700).
    chmod 755 "$work"; chmod 644 "$work/big.bin"
    cat > "$work/backend.conf" <<CONF
worker_processes 1;
pid $work/backend.pid;
error_log $work/backend-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND;
        location / { return 200 '{"ok":true,"service":"bench"}\n'; }
        # The large-response scenario: 1 MiB from a file made for the run.
        location = /bench/big { alias $work/big.bin; }
    }
    server {
        listen 127.0.0.1:$BACKEND_H2 http2;
        location / { return 200 '{"ok":true,"service":"bench"}\n'; }
    }
}
CONF
    nginx -c "$work/backend.conf" -p "$work" -e "$work/backend-error.log"
}

# nginx's access log for the proxy under test: the fields of Portico's line,
# buffered as a production nginx would be.
NGINX_ACCESS_LOG="log_format json escape=json '{\"ts\":\"\$time_iso8601\",\"request_id\":\"\$request_id\",\"method\":\"\$request_method\",\"path\":\"\$uri\",\"status\":\$status,\"duration\":\$request_time,\"upstream\":\"\$upstream_addr\",\"client_ip\":\"\$remote_addr\",\"bytes_out\":\$bytes_sent,\"user_agent\":\"\$http_user_agent\"}';
    access_log $work/nginx-access.log json buffer=64k flush=1s;"

# CPU ticks (user+system) of a process and its threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same, summed over several processes (every nginx worker).
ticks_of() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)

# Event loops per proxy under test, the same for nginx, HAProxy and Portico.
WORKERS=${WORKERS:-2}

# Throwaway certificate: self-signed ECDSA P-256 for localhost and
# 127.0.0.1, in the work dir only (removed on exit).
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
}

# Portico's route file (/bench → the backend) and portico.yaml: $WORKERS
# workers, the operator port, no drain delay. $1: the listen lines
# (indented two spaces); $2: more top-level sections (tls:, limits:); $3:
# more routes (indented two spaces).
write_portico_config() {
    cat > "$work/routes.yaml" <<CONF
routes:
  - prefix: /bench
    backend: http://127.0.0.1:$BACKEND
${3:-}
CONF
    cat > "$work/portico.yaml" <<CONF
workers: $WORKERS
listen:
$1
${2:-}
operator:
  listen: 127.0.0.1:$OPERATOR
routes_file: $work/routes.yaml
shutdown:
  drain_delay: 0s
CONF
}

# The tls: section for the certificate of make_cert.
TLS_SECTION="tls:
  certificates:
    - cert: $work/cert.pem
      key: $work/key.pem"

# Portico for every scenario of run.sh: plain and TLS listeners, /bench,
# /ws to the WebSocket echo backend on $WS_ECHO, /h2bench to the h2c
# backend. Needs PORTICO_TLS and WS_ECHO set, and make_cert's certificate.
write_bench_portico_config() {
    write_portico_config "  http: 127.0.0.1:$PORTICO
  https: 127.0.0.1:$PORTICO_TLS" "$TLS_SECTION" "  - prefix: /ws
    backend: http://127.0.0.1:$WS_ECHO
  - prefix: /h2bench
    backend: h2c://127.0.0.1:$BACKEND_H2"
}

# nginx as the proxy under test: $WORKERS workers, keep-alive upstream to the
# backend, the access log above. $1: the listen line and any server-level
# directives; $2: more locations; $3: more proxy_set_header lines; $4: more
# http-level blocks (upstreams, servers).
start_nginx_proxy() {
    cat > "$work/proxy.conf" <<CONF
worker_processes $WORKERS;
pid $work/proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 4096; }
http {
    $NGINX_ACCESS_LOG
    keepalive_requests 1000000;
    upstream bench { server 127.0.0.1:$BACKEND; keepalive 128; }
    server {
        $1
        location /bench/ {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-Id \$request_id;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            ${3:-}
        }
        ${2:-}
    }
    ${4:-}
}
CONF
    nginx -c "$work/proxy.conf" -p "$work" -e "$work/proxy-error.log"
}

# HAProxy as the proxy under test: $WORKERS threads, keep-alive upstream
# (http-reuse always), a request id and X-Forwarded-For added upstream, one
# JSON access-log line per request on stdout (redirected to a file). $1: more
# bind lines (e.g. TLS); $2: more rules for the frontend; $3: more sections. Its pid goes to $work/haproxy.pid; the cleanup stops
# it with the others.
start_haproxy_proxy() {
    cat > "$work/haproxy.cfg" <<CONF
global
    nbthread $WORKERS
    maxconn 8000
    log stdout format raw local0
defaults
    mode http
    log global
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY
    ${1:-}
    unique-id-format %{+X}o%ci%cp%fp%Ts%rt
    http-request set-header X-Request-Id %[unique-id]
    option forwardfor
    log-format '{"ts":"%tr","request_id":"%ID","method":"%HM","path":"%HPO","status":%ST,"duration_ms":%Ta,"upstream":"%si:%sp","client_ip":"%ci","bytes_out":%B,"user_agent":"%{+Q}[capture.req.hdr(0)]"}'
    http-request capture req.hdr(User-Agent) len 128
    ${2:-}
    use_backend bench if { path_beg /bench/ }
backend bench
    server b1 127.0.0.1:$BACKEND maxconn 1000
${3:-}
CONF
    haproxy -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
    echo $! > "$work/haproxy.pid"
    pids+=("$(cat "$work/haproxy.pid")")
}

# Portico with $work/portico.yaml, logging to $work/portico.log; its pid in
# PORTICO_PID (stopped on exit with the others).
start_portico() {
    "$BIN" serve --config "$work/portico.yaml" > "$work/portico.log" &
    pids+=($!)
    PORTICO_PID=$!
}

# Waits (10 s at most) until every URL answers 2xx (https ones over HTTP/2
# by ALPN when offered, certificate not checked; h2c://… ones over HTTP/2
# with prior knowledge); otherwise prints the logs and exits 1.
wait_up() {
    local url
    all_up() {
        for url in "$@"; do
            case $url in
                https:*) curl -skf --http2 "$url" >/dev/null 2>&1 || return 1 ;;
                h2c:*) curl -sf --http2-prior-knowledge "http:${url#h2c:}" >/dev/null 2>&1 || return 1 ;;
                *) curl -sf "$url" >/dev/null 2>&1 || return 1 ;;
            esac
        done
    }
    for _ in $(seq 50); do all_up "$@" && return 0; sleep 0.2; done
    echo "a proxy did not come up:" >&2
    cat "$work"/*.log >&2
    exit 1
}
