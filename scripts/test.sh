#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs moto and the tools the tests run (Helm,
# hadolint, cargo-deny, ...) if they are missing, and starts moto on 127.0.0.1; starts the real kube-apiserver v1.36 of ../shared/kube-apiserver
# (installing etcd from Debian when missing) unless a cluster is given; runs every test of
# the workspace against the in-repo API double and that real server; stops what it started.
#
#   KUBEECR_TEST_KUBECONFIG=path   run the real-cluster tests against that cluster instead
#   KUBEECR_TEST_WEBHOOK_HOST=ip   and the webhook tests, if its API server can reach this machine there
#   KUBEECR_VENV=dir               where to keep the moto virtualenv (default: .venv)
#   KUBEECR_NO_APISERVER=1         do not start the real kube-apiserver (real-cluster tests print SKIPPED)
#   KUBEECR_TEST_REQUIRE_CLUSTER=0 let a real-cluster test that cannot run print SKIPPED (by
#                                  default here it fails: 1 unless KUBEECR_NO_APISERVER is set)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/moto.sh
source scripts/lib/tools.sh

ensure_moto
# The real tools the tests run: Helm v4, hadolint, check-jsonschema (into the virtualenv), the
# release's cargo-deny and cargo-cyclonedx (cargo install, pinned; a few minutes the first
# time), Debian's prometheus (promtool and a live Prometheus, for the alerts), and Debian's
# skopeo and docker-registry (a real registry client and server, to read back what kubeecr writes).
ensure_helm
ensure_kubectl
ensure_hadolint
ensure_check_jsonschema
ensure_release_tools
ensure_prometheus
ensure_registry_tools
export KUBEECR_HELM="$HELM" KUBEECR_HADOLINT="$HADOLINT"
# The manifest checks (tests/integration/install.rs) validate with this virtualenv's jsonschema,
# and need kubectl: here a missing tool fails them rather than skipping them.
export KUBEECR_VENV KUBEECR_TEST_REQUIRE_TOOLS=1
# Likewise a real-cluster test with no cluster (or no webhook host) fails rather than skipping,
# unless this run asked for no kube-apiserver.
if [ -n "${KUBEECR_NO_APISERVER:-}" ]; then require_cluster=0; else require_cluster=1; fi
export KUBEECR_TEST_REQUIRE_CLUSTER="${KUBEECR_TEST_REQUIRE_CLUSTER:-$require_cluster}"
mkdir -p target
start_moto target/moto.log
kapi_dir=""
cleanup() {
  kill "$MOTO_PID" 2>/dev/null || true
  if [ -n "$kapi_dir" ]; then ../shared/kube-apiserver/stop.sh "$kapi_dir" --wipe >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
export KUBEECR_TEST_MOTO_URL="$MOTO_URL"
export KUBEECR_TEST_MOTO_BIN="$PWD/$KUBEECR_VENV/bin/moto_server"
# Nothing in the tests may reach the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED=true

shared_apiserver=../shared/kube-apiserver
if [ -z "${KUBEECR_TEST_KUBECONFIG:-}" ] && [ -z "${KUBEECR_NO_APISERVER:-}" ] && [ -x "$shared_apiserver/start.sh" ]; then
  if ! command -v etcd >/dev/null; then
    echo "==> installing etcd (Debian's etcd-server) for the real kube-apiserver"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
  fi
  kapi_dir="$PWD/target/kube-apiserver"
  # A fresh etcd every run; the unpacked binary is kept.
  "$shared_apiserver/stop.sh" "$kapi_dir" --wipe >/dev/null 2>&1 || true
  started=$(date +%s)
  KUBEECR_TEST_KUBECONFIG=$("$shared_apiserver/start.sh" "$kapi_dir" | tail -n 1)
  export KUBEECR_TEST_KUBECONFIG
  export KUBEECR_TEST_WEBHOOK_HOST="${KUBEECR_TEST_WEBHOOK_HOST:-127.0.0.1}"
  echo "==> real kube-apiserver v1.36 ready in $(( $(date +%s) - started ))s: $KUBEECR_TEST_KUBECONFIG"
elif [ -z "${KUBEECR_TEST_KUBECONFIG:-}" ] && [ "$KUBEECR_TEST_REQUIRE_CLUSTER" != 0 ]; then
  echo "==> no real kube-apiserver (../shared/kube-apiserver missing or KUBEECR_NO_APISERVER set) and KUBEECR_TEST_REQUIRE_CLUSTER=$KUBEECR_TEST_REQUIRE_CLUSTER: real-cluster tests will FAIL" >&2
elif [ -z "${KUBEECR_TEST_KUBECONFIG:-}" ]; then
  echo "==> no real kube-apiserver (../shared/kube-apiserver missing or KUBEECR_NO_APISERVER set): real-cluster tests print SKIPPED; the API double covers them"
fi

echo "==> cargo test (moto at $KUBEECR_TEST_MOTO_URL)"
set +e
cargo test --workspace --locked -- --show-output 2>&1 | grep --line-buffered -v '^\s*$' | grep --line-buffered -Ev '^(---- .* stdout ----|successes:)$'
status=${PIPESTATUS[0]}
set -e
exit "$status"
