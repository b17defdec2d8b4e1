#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs moto into .venv if it is missing,
# starts it on 127.0.0.1, and runs every test of the workspace.
#
#   KUBEECR_TEST_KUBECONFIG=path   also run the Kubernetes tests against that real cluster
#   KUBEECR_TEST_WEBHOOK_HOST=ip   and the webhook tests, if its API server can reach this machine there
#   KUBEECR_VENV=dir               where to keep the moto virtualenv (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/moto.sh

ensure_moto
mkdir -p target
start_moto target/moto.log
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
export KUBEECR_TEST_MOTO_URL="$MOTO_URL"
export KUBEECR_TEST_MOTO_BIN="$PWD/$KUBEECR_VENV/bin/moto_server"
# Nothing in the tests may reach the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED=true

if [ -z "${KUBEECR_TEST_KUBECONFIG:-}" ]; then
  echo "==> KUBEECR_TEST_KUBECONFIG is not set: real-cluster tests print SKIPPED; the API double covers them"
fi

echo "==> cargo test (moto at $KUBEECR_TEST_MOTO_URL)"
set +e
cargo test --workspace --locked -- --show-output 2>&1 | grep --line-buffered -v '^\s*$' | grep --line-buffered -Ev '^(---- .* stdout ----|successes:)$'
status=${PIPESTATUS[0]}
set -e
exit "$status"
