#!/usr/bin/env bash
# One release of kubeecr, written to dist/ (or --out): everything in it says VERSION.
#
#   scripts/release.sh VERSION [--digest sha256:...] [--out DIR] [--binary PATH] [--add FILE]...
#
#   install.yaml           manifests/ rendered, the image ghcr.io/deft/kubeecr:VERSION (and
#                          @DIGEST when --digest is given): kubectl apply -f install.yaml
#   install-cronjob.yaml   manifests/cronjob/ rendered the same way
#   kubeecr-VERSION.tgz    the Helm chart (with --digest, its default image pinned too)
#   kubeecr-VERSION-linux-ARCH           the kubeecr binary for this host's architecture
#   kubeecr-VERSION.cdx.json             its SBOM (CycloneDX 1.5, the binary's crates)
#   SHA256SUMS
#
# Before writing anything it checks that Cargo.toml, the chart and the manifests all say
# VERSION, and the dependencies' licenses, bans and sources (cargo deny, offline). The same
# tag gives the same install.yaml and install-cronjob.yaml, byte for byte.
#
# --binary PATH takes an already built kubeecr (the tests use their debug build; the release
# workflow the one it built for amd64) instead of building the release profile. --add FILE
# puts another file in (the workflow's arm64 binary), named in SHA256SUMS too. Needs kubectl, and installs Helm (into .venv), cargo-deny and
# cargo-cyclonedx when missing (scripts/lib/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/tools.sh

usage() { echo "usage: scripts/release.sh VERSION [--digest sha256:...] [--out DIR] [--binary PATH] [--add FILE]..." >&2; exit 2; }
fail() { echo "release: $*" >&2; exit 1; }
[ $# -ge 1 ] || usage
version=$1; shift
digest=""; out=dist; binary=""; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --digest) digest=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --binary) binary=${2:?}; shift 2 ;;
    --add) [ -f "${2:?}" ] || fail "--add $2: no such file"; extra+=("$2"); shift 2 ;;
    *) usage ;;
  esac
done

[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
  fail "$version is not a version: give MAJOR.MINOR.PATCH, e.g. 0.2.0 (no leading v)"
[ -z "$digest" ] || [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] ||
  fail "--digest $digest: give sha256: and 64 lowercase hex digits, as 'docker buildx imagetools inspect' prints it"

# Everything that names the version must name this one.
image=ghcr.io/deft/kubeecr
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ "$cargo_version" = "$version" ] ||
  fail "Cargo.toml says $cargo_version, not $version: set version = \"$version\" in Cargo.toml (and run cargo build to update Cargo.lock)"
for field in version appVersion; do
  chart=$(sed -n "s/^$field: \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" charts/kubeecr/Chart.yaml)
  [ "$chart" = "$version" ] || fail "charts/kubeecr/Chart.yaml $field is $chart, not $version: set it to $version"
done
for file in manifests/deployment.yaml manifests/cronjob/cronjob.yaml; do
  grep -q "image: $image:$version\$" "$file" || fail "$file does not name $image:$version: set its image tag to $version"
done

echo "==> cargo deny check licenses bans sources"
ensure_release_tools
cargo deny --log-level error check licenses bans sources

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) fail "no release binary for $(uname -m)" ;;
esac
if [ -z "$binary" ]; then
  echo "==> cargo build --release"
  cargo build --release --locked --bin kubeecr
  binary=target/release/kubeecr
fi
said=$("$binary" --version)
[ "$said" = "kubeecr $version" ] || fail "$binary --version says '$said', not 'kubeecr $version'"

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f kubeecr_bin.cdx.json tests/testkit/*_bin.cdx.json' EXIT

# The manifests already name $image:$version; a digest pins that exact image as well.
pinned="$image:$version${digest:+@$digest}"
render() { # DIR TITLE
  echo "# kubeecr $version: $2"
  echo "#   kubectl apply -f https://github.com/deft/kubeecr/releases/download/v$version/$(basename "$3")"
  kubectl kustomize "$1" | sed "s|image: $image:$version\$|image: $pinned|"
}
echo "==> install.yaml, install-cronjob.yaml"
render manifests "kubeecr serve with its webhook (needs cert-manager)" "$out/install.yaml" >"$out/install.yaml"
render manifests/cronjob "kubeecr refresh as a CronJob, no webhook" "$out/install-cronjob.yaml" >"$out/install-cronjob.yaml"
for f in install.yaml install-cronjob.yaml; do
  [ "$(grep -c "image: $pinned\$" "$out/$f")" = 1 ] || fail "$f: the image is not $pinned"
done

echo "==> Helm chart"
ensure_helm
cp -r charts/kubeecr "$work/kubeecr"
if [ -n "$digest" ]; then
  sed -i "s|^  digest: \"\"|  digest: \"$digest\"|" "$work/kubeecr/values.yaml"
  grep -q "^  digest: \"$digest\"" "$work/kubeecr/values.yaml" || fail "could not pin the chart's image digest"
fi
"$HELM" lint --strict "$work/kubeecr" >/dev/null
"$HELM" package "$work/kubeecr" --version "$version" --app-version "$version" -d "$out" >/dev/null

echo "==> binary and SBOM"
cp "$binary" "$out/kubeecr-$version-linux-$arch"
cargo cyclonedx --format json --spec-version 1.5 --describe binaries -qq
mv kubeecr_bin.cdx.json "$out/kubeecr-$version.cdx.json"

for f in "${extra[@]}"; do cp "$f" "$out/"; done
(cd "$out" && sha256sum -- * >SHA256SUMS)
echo "==> $out/"
(cd "$out" && ls -l)
