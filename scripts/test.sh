#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs moto into .venv if it is missing,
# starts it on 127.0.0.1, and runs every test of the workspace.
#
#   KUBEECR_TEST_KUBECONFIG=path  also runs the Kubernetes tests against that real cluster
#   KUBEECR_VENV=dir              where to keep the moto virtualenv (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"
venv="${KUBEECR_VENV:-.venv}"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "==> installing moto[server]==$MOTO_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

mkdir -p target
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
export KUBEECR_TEST_MOTO_URL="http://127.0.0.1:$port"
export KUBEECR_TEST_MOTO_BIN="$PWD/$venv/bin/moto_server"
# Nothing in the tests may reach the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED=true

if [ -z "${KUBEECR_TEST_KUBECONFIG:-}" ]; then
  echo "==> KUBEECR_TEST_KUBECONFIG is not set: real-cluster tests print SKIPPED; the API double covers them"
fi

echo "==> cargo test (moto at $KUBEECR_TEST_MOTO_URL)"
cargo test --workspace --locked -- --show-output 2>&1 | grep -v '^\s*$' | grep -Ev '^(---- .* stdout ----|successes:)$'
exit "${PIPESTATUS[0]}"
