#!/usr/bin/env bash
# The Kubernetes manifests through the scanners a platform team runs:
# checkov (kubernetes framework) with no failed check (a skipped one carries
# its reason in a checkov.io/skip annotation next to it), and
# kubernetes-validate --strict on every manifest of k8s/ and its overlays.
# Custom resources (cert-manager, Prometheus Operator) and kustomization
# files have no schema there: they are reported, not failed; tests/it/k8s.rs
# checks what they must say.
#
# Usage: .ci/manifests-check.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. .ci/tools.sh

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# --skip-download: no platform calls (this runs without internet).
if ! "$TOOLS/checkov" -d k8s --framework kubernetes --compact --quiet --skip-download >"$out" 2>&1; then
    cat "$out" >&2
    echo "manifests: FAIL: checkov reports failed checks" >&2
    exit 1
fi
grep -q "Failed checks: 0" "$out" || { cat "$out" >&2; echo "manifests: FAIL: checkov did not report its checks" >&2; exit 1; }
echo "manifests: ok: checkov $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$out")"

# Every YAML file under k8s/ that is a Kubernetes object (has apiVersion
# and kind at the top level); portico.yaml files of overlays are not.
manifests=()
while IFS= read -r f; do
    grep -q '^apiVersion:' "$f" && grep -q '^kind:' "$f" && manifests+=("$f")
done < <(find k8s -name '*.yaml' | sort)
"$TOOLS/kubernetes-validate" --strict "${manifests[@]}" >"$out" 2>&1 || {
    cat "$out" >&2
    echo "manifests: FAIL: kubernetes-validate --strict" >&2
    exit 1
}
if grep -q '^ERROR' "$out"; then
    cat "$out" >&2
    exit 1
fi
passed=$(grep -c '^INFO .* passed' "$out" || true)
echo "manifests: ok: kubernetes-validate --strict: $passed objects valid in ${#manifests[@]} files; without a schema:"
sed -n 's/^WARN \([^ ]*\) Couldn.t find schema for kind \([^ ]*\).*/  \1: \2/p' "$out"
