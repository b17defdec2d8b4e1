#!/usr/bin/env bash
# Runs kubeecr locally with no cluster and no AWS account: moto stands in for ECR (behind the
# testkit's proxy, which answers as ECR does: a fresh password of real length on every call,
# expiring 12 h ahead), the in-repo
# kube-apiserver double (tests/testkit) stands in for Kubernetes, with kubeecr's admission
# webhooks registered. It then:
#   1. runs `kubeecr serve` (webhook, watch-driven refresher, admin port) with certs from `kubeecr certs` in target/local/certs/,
#   2. applies examples/usage/*.yaml through the API (the webhook fills or refuses them),
#   3. runs `kubeecr refresh --force` once, as a CronJob would,
#   4. prints what the Secrets hold (passwords hidden), and `kubeecr status`.
#
#   scripts/local-run.sh          run, show, stop
#   scripts/local-run.sh --keep   keep everything running until Ctrl-C (kubeconfig: target/local/kubeconfig)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/moto.sh

keep=false
[ "${1:-}" = "--keep" ] && keep=true

echo "==> building"
cargo build --workspace --bins --quiet
ensure_moto
state=target/local
mkdir -p "$state"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_moto "$state/moto.log"
pids+=("$MOTO_PID")
start_ecr target/debug/kubeecr-ecr "$state/ecr.log"
pids+=("$ECR_PID")

webhook_port=$(free_port)
admin_port=$(free_port)
api_port=$(free_port)
# The webhook's certificate, made as an operator without cert-manager makes it.
target/debug/kubeecr certs --out "$state/certs" --extra-name 127.0.0.1,localhost --valid-for 1d --force >/dev/null
target/debug/kubeecr-dev-cluster --listen "127.0.0.1:$api_port" --kubeconfig "$state/kubeconfig" \
  --webhook-ca "$state/certs/ca.crt" --webhook-url "https://127.0.0.1:$webhook_port" >"$state/apiserver.log" 2>&1 &
pids+=("$!")
wait_port "$api_port"

# Fake credentials: moto accepts any. IMDS stays off so nothing leaves this machine.
export AWS_ACCESS_KEY_ID=AKIAKUBEECRLOCAL0001 AWS_SECRET_ACCESS_KEY=local-run-not-secret AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export KUBEECR_KUBECONFIG="$state/kubeconfig" KUBEECR_ECR_ENDPOINT="$ECR_URL"

target/debug/kubeecr serve --listen "127.0.0.1:$webhook_port" --admin-listen "127.0.0.1:$admin_port" \
  --tls-cert-file "$state/certs/tls.crt" --tls-key-file "$state/certs/tls.key" >"$state/serve.log" 2>&1 &
pids+=("$!")
wait_port "$webhook_port"
wait_port "$admin_port"
echo "==> kubeecr serve is up: webhook https://127.0.0.1:$webhook_port, admin http://127.0.0.1:$admin_port (/readyz, /metrics), API http://127.0.0.1:$api_port, ECR (moto behind the testkit proxy) $ECR_URL"

echo
echo "==> applying examples/usage/*.yaml (the API server calls kubeecr's webhooks)"
"$KUBEECR_VENV/bin/python" scripts/lib/apply.py "http://127.0.0.1:$api_port" examples/usage/*.yaml

echo
echo "==> kubeecr refresh --force (the one-shot mode, as a CronJob runs it)"
target/debug/kubeecr refresh --force --log-level warn

echo
echo "==> the Secrets now"
"$KUBEECR_VENV/bin/python" scripts/lib/show.py "http://127.0.0.1:$api_port"

echo
echo "==> kubeecr status"
target/debug/kubeecr status

echo
echo "==> what kubeecr serve's /metrics says"
"$KUBEECR_VENV/bin/python" - "http://127.0.0.1:$admin_port/metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
for line in text.splitlines():
    if line.startswith(("kubeecr_leader ", "kubeecr_secrets{", "kubeecr_refreshes_total", "kubeecr_ecr_calls_total", "kubeecr_admission_requests_total")):
        print("  " + line)
PY

if $keep; then
  echo
  echo "==> running; try: kubectl --kubeconfig $state/kubeconfig get secrets -A   (Ctrl-C stops; logs in $state/)"
  wait
fi
