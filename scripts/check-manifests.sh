#!/usr/bin/env bash
# Renders every kustomization under manifests/, webhook-config/, examples/ and certs/ and
# validates each object against kube-apiserver v1.36's OpenAPI v3 schemas and cert-manager's
# CRDs (tests/fixtures/), strictly: unknown fields are errors. Offline; needs kubectl (or
# kustomize), kubeecr (certs: KUBEECR_BIN, default target/debug/kubeecr) and the .venv's PyYAML and jsonschema.
#
# It works on a temporary copy of those directories, as a fresh clone has them: generated and
# secret files (certs/*.crt, *.key, *.env, aws-credentials.env) are left out, and throwaway
# ones are made where a kustomization needs them, so that certs/ and access-keys/ are checked
# on every machine and no real key is ever read. Components (kind: Component) are checked by
# enabling each in the kustomization of the directory above it, unless a kustomization already
# uses it. What the objects mean (flags,
# RBAC, namespaces) is checked by tests/integration/install.rs, which runs this script.
#
#   scripts/check-manifests.sh        KUBEECR_VENV=dir: the virtualenv (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${KUBEECR_VENV:-.venv}/bin/python"
validator=scripts/lib/validate_manifests.py
if command -v kubectl >/dev/null; then kustomize=(kubectl kustomize); else kustomize=(kustomize build); fi

echo "==> validator self-test"
"$py" "$validator" --self-test | tail -n 1
[ "${PIPESTATUS[0]}" = 0 ] || { "$py" "$validator" --self-test; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A copy of the tree as a fresh clone has it (plus uncommitted work), without generated files.
fresh_copy() {
  mkdir -p "$1"
  tar -c --exclude='certs/*.crt' --exclude='certs/*.key' --exclude='certs/*.env' --exclude='certs/*.pem' \
    --exclude=examples/installation/access-keys/aws-credentials.env \
    manifests webhook-config examples certs | tar -x -C "$1"
}

# Throwaway certificates, as `kubeecr certs --out certs/` writes them.
kubeecr_bin="${KUBEECR_BIN:-target/debug/kubeecr}"
throwaway_certs() {
  "$kubeecr_bin" certs --out "$1" --valid-for 1h --force >/dev/null
}

tree="$tmp/tree"
fresh_copy "$tree"

failures=()
checked=0
objects=0

# check LABEL DIR: renders DIR and validates what it renders.
check() {
  local label=$1 dir=$2 out
  checked=$((checked + 1))
  if ! "${kustomize[@]}" "$dir" >"$tmp/rendered.yaml" 2>"$tmp/render.err"; then
    echo "FAIL $label: does not render"
    sed 's/^/    /' "$tmp/render.err"
    failures+=("$label (render)")
    return
  fi
  if out=$("$py" "$validator" "$tmp/rendered.yaml"); then
    local n
    n=$(grep -c '^ok ' <<<"$out")
    objects=$((objects + n))
    echo "ok   $label ($n objects)"
  else
    echo "FAIL $label:"
    grep -v '^ok ' <<<"$out" | sed 's/^/    /'
    failures+=("$label")
  fi
}

echo "==> rendering and validating"
components=()
while IFS= read -r k; do
  dir=$(dirname "$k")
  if grep -q '^kind: Component' "$k"; then
    components+=("$dir")
    continue
  fi
  if [ "$dir" = certs ]; then
    if [ ! -x "$kubeecr_bin" ]; then
      echo "FAIL certs: $kubeecr_bin is needed to make throwaway certificates (cargo build, or KUBEECR_BIN)"
      failures+=("certs (no kubeecr binary)")
      continue
    fi
    throwaway_certs "$tree/certs"
    check "certs (throwaway certificates)" "$tree/certs"
    continue
  fi
  check "$dir" "$tree/$dir"
done < <(find manifests webhook-config examples certs -name kustomization.yaml | sort)

# Each Component, enabled in the kustomization above it (in a copy of its own).
for c in "${components[@]}"; do
  # A component some kustomization already lists (uncommented) was checked with it.
  if grep -Eqs "^[[:space:]]*-[[:space:]]+[./]*$(basename "$c")/?[[:space:]]*$" $(find manifests webhook-config examples certs -name kustomization.yaml); then
    continue
  fi
  parent=$(dirname "$c")
  variant="$tmp/component-$(echo "$c" | tr / -)"
  fresh_copy "$variant"
  [ -f "$variant/$c/aws-credentials.env.example" ] && cp "$variant/$c/aws-credentials.env.example" "$variant/$c/aws-credentials.env"
  if [ ! -f "$parent/kustomization.yaml" ]; then
    echo "FAIL $c: a Component with no kustomization above it"
    failures+=("$c")
    continue
  fi
  "$py" - "$variant/$parent/kustomization.yaml" "$(basename "$c")" <<'PY'
import sys, yaml
path, component = sys.argv[1], sys.argv[2]
k = yaml.safe_load(open(path))
k["components"] = (k.get("components") or []) + [component]
yaml.safe_dump(k, open(path, "w"), sort_keys=False)
PY
  check "$parent with component $(basename "$c")" "$variant/$parent"
done

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "manifests: ${#failures[@]} of $checked checks FAILED:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "manifests: $checked checks ok, $objects objects valid"
