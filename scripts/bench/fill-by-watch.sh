#!/usr/bin/env bash
# `kubeecr serve --admission-fill=false` (issue 8): the webhook answers with the placeholder
# and the managed label only, and the refresher fills the Secret by watch. Times `kubectl
# apply` of a data-less opted-in Secret, through the real kube-apiserver and kubeecr's
# webhooks, until its token is stored; and the same with the default (fill at admission).
#
#   scripts/bench/fill-by-watch.sh [runs]      # BENCHMARKS.md: 10 runs per mode
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

runs=${1:-10}
bench_start real --namespaces 1 --secrets-per-namespace 0
certs=target/bench/fill-certs
rm -rf "$certs"
"$KUBEECR" certs --out "$certs" --extra-name 127.0.0.1 --valid-for 1d >/dev/null
k() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
bundle=$(base64 -w0 "$certs/ca.crt")

for fill in false true; do
  port=$(free_port); admin=$(free_port)
  "$KUBEECR" serve --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --leader-elect=false \
    --tls-cert-file "$certs/tls.crt" --tls-key-file "$certs/tls.key" --log-level warn \
    --admission-fill="$fill" 2>"target/bench/serve-fill-$fill.log" &
  serve=$!
  bench_pids+=("$serve")
  until curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null; do sleep 0.05; done
  # webhook-config/, called by URL (a bare API server has no Service endpoints).
  kubectl kustomize webhook-config | "$KUBEECR_VENV/bin/python" -c '
import sys, yaml
url, bundle = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for d in docs:
    d["metadata"].pop("annotations", None)
    for w in d["webhooks"]:
        w["clientConfig"] = {"url": url + w["clientConfig"]["service"]["path"], "caBundle": bundle}
print(yaml.safe_dump_all(docs))' "https://127.0.0.1:$port" "$bundle" >target/bench/webhooks.yaml
  k apply -f target/bench/webhooks.yaml >/dev/null
  sleep 3
  for i in $(seq 1 "$runs"); do
    name="fill-$fill-$i"
    t0=$(date +%s.%N)
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: bench-0\n  annotations:\n    deft.com/kubeecr: 123456789012/us-west-2\ntype: kubernetes.io/dockerconfigjson\n' "$name" | k apply -f - >/dev/null
    until k get secret "$name" -n bench-0 -o 'jsonpath={.metadata.annotations.deft\.com/kubeecr-fingerprints}' | grep -q .; do sleep 0.02; done
    echo "admission-fill=$fill: filled $(echo "$(date +%s.%N) - $t0" | bc) s after kubectl apply started"
  done
  k delete -f target/bench/webhooks.yaml >/dev/null
  kill "$serve"; wait "$serve" 2>/dev/null || true
done
