#!/usr/bin/env bash
# The container image: both Dockerfiles linted by hadolint; the FROM scratch
# image (image/Dockerfile.scratch) built with podman from a static binary,
# inspected (numeric non-root user, entrypoint, ports, OCI labels), its
# filesystem exported, and the binary taken from it serving: /healthz
# answers and a request is proxied to a backend named by host name (DNS
# without glibc's NSS, which a scratch image does not have).
#
# Usage: .ci/image-smoke.sh          (the argument .ci/run passes is unused)
# Needs podman and the hadolint of .ci/tools.sh; builds the static binary
# with cargo (debug profile: the image's contents, not its speed, are
# checked). Containers are not run: crun refuses this machine's cgroup
# layout, so the binary runs from the exported filesystem instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. .ci/tools.sh

work="$(mktemp -d)"
image="localhost/portico-ci:$$"
pids=()
cid=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n "$cid" ]] && podman rm -f "$cid" >/dev/null 2>&1 || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "image-smoke: FAIL: $*" >&2
    [[ -s "$work/portico.log" ]] && tail -n 20 "$work/portico.log" >&2
    exit 1
}
ok() { echo "image-smoke: ok: $*"; }

# --- lint ---
"$TOOLS/hadolint" Dockerfile image/Dockerfile.scratch || fail "hadolint has findings"
ok "hadolint: no findings in Dockerfile and image/Dockerfile.scratch"

# --- a static binary, and the image FROM scratch ---
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --target "$triple" --bin portico
bin="target/$triple/debug/portico"
ldd "$bin" 2>&1 | grep -q "statically linked\|not a dynamic executable" || fail "$bin is not static: $(ldd "$bin" 2>&1)"
mkdir "$work/ctx"
strip -o "$work/ctx/portico" "$bin"
podman build --quiet -f image/Dockerfile.scratch -t "$image" "$work/ctx" >/dev/null || fail "podman build"
ok "podman built $image FROM scratch"

inspect() { podman image inspect "$image" --format "$1"; }
[[ "$(inspect '{{.Config.User}}')" == "65532:65532" ]] || fail "user is $(inspect '{{.Config.User}}')"
[[ "$(inspect '{{json .Config.Entrypoint}}')" == '["/usr/local/bin/portico","serve"]' ]] ||
    fail "entrypoint is $(inspect '{{json .Config.Entrypoint}}')"
for port in 8080 8443 9901; do
    inspect '{{json .Config.ExposedPorts}}' | grep -q "\"$port/tcp\"" || fail "port $port is not exposed"
done
for label in title description version licenses; do
    [[ -n "$(inspect "{{index .Config.Labels \"org.opencontainers.image.$label\"}}")" ]] ||
        fail "no org.opencontainers.image.$label label"
done
ok "inspect: user 65532:65532, entrypoint portico serve, ports 8080 8443 9901, OCI labels"
ok "image digest $(inspect '{{.Digest}}') (what overlays/prod pins, once pushed)"

# --- the exported filesystem holds the binary and nothing else ---
cid="$(podman create "$image")"
mkdir "$work/rootfs"
podman export "$cid" | tar -x -C "$work/rootfs"
files="$(cd "$work/rootfs" && find . -type f | sort)"
[[ "$files" == "./usr/local/bin/portico" ]] || fail "unexpected files in the image: $files"
ok "the image's filesystem is the binary alone"

# --- the binary from the image serves ---
backend_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir "$work/site" && echo "hello from the backend" > "$work/site/hello.txt"
python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$work/site" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf --max-time 1 "http://127.0.0.1:$backend_port/hello.txt" >/dev/null && break
    sleep 0.1
done
cat >"$work/routes.yaml" <<EOF
routes:
  - prefix: /files
    strip_prefix: true
    backend: http://localhost:$backend_port
EOF
cat >"$work/portico.yaml" <<EOF
listen:
  http: 127.0.0.1:0
operator:
  listen: 127.0.0.1:0
shutdown:
  drain_delay: 0s
routes_file: $work/routes.yaml
EOF
"$work/rootfs/usr/local/bin/portico" serve --config "$work/portico.yaml" >"$work/portico.log" 2>&1 &
pids+=($!)
addr() {
    { grep "\"listener\":\"$1\"" "$work/portico.log" 2>/dev/null || true; } | grep -m1 '"listening on' |
        sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true
}
http="" operator=""
for _ in $(seq 1 100); do
    http="$(addr http)" operator="$(addr operator)"
    [[ -n "$http" && -n "$operator" ]] && break
    sleep 0.1
done
[[ -n "$http" && -n "$operator" ]] || fail "no 'listening on' lines within 10 s"
[[ "$(curl -s --max-time 5 "http://$operator/healthz")" == *ok* ]] || fail "/healthz did not answer ok"
ok "/healthz answers on $operator"
for _ in $(seq 1 50); do
    curl -sf --max-time 5 "http://$operator/readyz" >/dev/null && break
    sleep 0.1
done
body="$(curl -sf --max-time 5 "http://$http/files/hello.txt")" || fail "the proxied request failed: $(curl -s "http://$http/files/hello.txt")"
[[ "$body" == "hello from the backend" ]] || fail "proxied body: $body"
ok "a request is proxied to http://localhost:$backend_port (resolved without NSS)"
echo "image-smoke: passed"
