#!/usr/bin/env bash
# One release of kubeecr, written to dist/ (or --out): everything in it says VERSION.
#
#   scripts/release.sh VERSION [--digest sha256:...] [--out DIR] [--binary PATH] [--add FILE]...
#   scripts/release.sh VERSION --check     the checks alone, writing nothing
#
#   install.yaml           manifests/ rendered, the image ghcr.io/deft/kubeecr:VERSION (and
#                          @DIGEST when --digest is given): kubectl apply -f install.yaml
#   install-cronjob.yaml   manifests/cronjob/ rendered the same way
#   kubeecr-VERSION.tgz    the Helm chart (with --digest, its default image pinned too)
#   kubeecr-VERSION-linux-ARCH           the kubeecr binary (ARCH read from the binary)
#   kubeecr-VERSION.cdx.json             its SBOM (CycloneDX 1.5, the binary's crates)
#   SHA256SUMS
#
# First it checks that Cargo.toml, the chart and the manifests all say VERSION, and the
# dependencies' licenses, bans and sources (cargo deny, offline). The manifests are rendered
# with the kubectl (kustomize) pinned in scripts/lib/tools.sh, so the same tag gives the same
# install.yaml and install-cronjob.yaml, byte for byte, on any machine.
#
# --binary PATH takes an already built kubeecr (the tests use their debug build; the release
# workflow the one it built for amd64) instead of building the release profile. --add FILE
# puts another file in (the workflow's arm64 binary), named in SHA256SUMS too. The release is
# assembled aside and moved to --out only when complete; --out must be a new or empty
# directory, or an earlier release.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/tools.sh

usage() { echo "usage: scripts/release.sh VERSION [--check] [--digest sha256:...] [--out DIR] [--binary PATH] [--add FILE]..." >&2; exit 2; }
fail() { echo "release: $*" >&2; exit 1; }
[ $# -ge 1 ] || usage
version=$1; shift
digest=""; out=dist; binary=""; extra=(); check_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1; shift ;;
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
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -f "$out/SHA256SUMS" ]; then
  fail "--out $out holds files that are not a release; give a new or empty directory"
fi

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
grep -q "^## \[$version\]" CHANGELOG.md || fail "CHANGELOG.md has no section for $version: add '## [$version] - DATE'"

echo "==> cargo deny check licenses bans sources"
ensure_release_tools
cargo deny --log-level error check licenses bans sources
[ -z "$check_only" ] || { echo "release $version: checks passed"; exit 0; }

if [ -z "$binary" ]; then
  echo "==> cargo build --release"
  cargo build --release --locked --bin kubeecr
  binary=target/release/kubeecr
fi
# The architecture the binary is for, from its ELF header (e_machine), not this machine's.
case "$(od -An -tx1 -j18 -N2 "$binary" | tr -d ' \n')" in
  3e00) arch=amd64 ;;
  b700) arch=arm64 ;;
  *) fail "$binary is not a linux amd64 or arm64 executable" ;;
esac
said=$("$binary" --version 2>/dev/null || true)
[ -z "$said" ] || [ "$said" = "kubeecr $version" ] || fail "$binary --version says '$said', not 'kubeecr $version'"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/dist"
mkdir -p "$stage"

# The manifests already name $image:$version; a digest pins that exact image as well.
ensure_kubectl
pinned="$image:$version${digest:+@$digest}"
render() { # DIR TITLE FILE
  echo "# kubeecr $version: $2"
  echo "#   kubectl apply -f https://github.com/deft/kubeecr/releases/download/v$version/$3"
  "$KUBECTL" kustomize "$1" | sed "s|image: $image:$version\$|image: $pinned|"
}
echo "==> install.yaml, install-cronjob.yaml"
render manifests "kubeecr serve with its webhook (needs cert-manager)" install.yaml >"$stage/install.yaml"
render manifests/cronjob "kubeecr refresh as a CronJob, no webhook" install-cronjob.yaml >"$stage/install-cronjob.yaml"
for f in install.yaml install-cronjob.yaml; do
  [ "$(grep -c "image: $pinned\$" "$stage/$f")" = 1 ] || fail "$f: the image is not $pinned"
done

echo "==> Helm chart"
ensure_helm
cp -r charts/kubeecr "$work/kubeecr"
if [ -n "$digest" ]; then
  sed -i "s|^  digest: \"\"|  digest: \"$digest\"|" "$work/kubeecr/values.yaml"
  grep -q "^  digest: \"$digest\"" "$work/kubeecr/values.yaml" || fail "could not pin the chart's image digest"
fi
"$HELM" lint --strict "$work/kubeecr" >/dev/null
"$HELM" package "$work/kubeecr" --version "$version" --app-version "$version" -d "$stage" >/dev/null

echo "==> binary and SBOM"
cp "$binary" "$stage/kubeecr-$version-linux-$arch"
chmod 0755 "$stage/kubeecr-$version-linux-$arch"
# cargo cyclonedx writes beside each Cargo.toml of the workspace: one run at a time.
mkdir -p target
(
  flock 9
  trap 'rm -f kubeecr_bin.cdx.json tests/testkit/*_bin.cdx.json' EXIT
  cargo cyclonedx --format json --spec-version 1.5 --describe binaries -qq
  mv kubeecr_bin.cdx.json "$stage/kubeecr-$version.cdx.json"
) 9>target/release-sbom.lock

for f in ${extra[@]+"${extra[@]}"}; do
  [ ! -e "$stage/$(basename "$f")" ] || fail "--add $f: the release already has a $(basename "$f")"
  cp "$f" "$stage/"
done
(cd "$stage" && sha256sum -- * >SHA256SUMS)

rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$stage" "$out"
echo "==> $out/"
(cd "$out" && ls -l)
