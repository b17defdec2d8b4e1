#!/usr/bin/env bash
# kubeecr against the script it replaces (scripts/bench/baseline-script.sh), on the same opted-in
# Secrets of a fresh real kube-apiserver that the tests never see, with the same moto: wall
# time and ECR calls (moto's log) of `kubeecr refresh` filling them all, then of the script
# rewriting them all.
#
#   scripts/bench/side-by-side.sh [namespaces] [per-namespace]
#   scripts/bench/side-by-side.sh 10 10        # BENCHMARKS.md: 100 Secrets over 50 (account, region) pairs
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

namespaces=${1:-10}; per=${2:-10}
bench_start real --namespaces "$namespaces" --secrets-per-namespace "$per"
# The AWS CLI in a virtualenv of its own, so moto's stays as the tests use it.
aws_venv=target/bench/awscli-venv
[ -x "$aws_venv/bin/aws" ] || { python3 -m venv "$aws_venv" && "$aws_venv/bin/pip" install --quiet --disable-pip-version-check "awscli==1.46.3"; }
export PATH="$PWD/$aws_venv/bin:$PATH"
calls() { grep -c '"POST / HTTP' target/bench/moto.log || true; }
filled() {
  kubectl --kubeconfig "$KUBECONFIG_PATH" get secrets -A -o json | "$KUBEECR_VENV/bin/python" -c '
import base64, json, sys
items = [s for s in json.load(sys.stdin)["items"] if "deft.com/kubeecr" in s["metadata"].get("annotations", {})]
ok = sum(1 for s in items if any(e.get("password") for e in json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))["auths"].values()))
print("%d of %d hold a token" % (ok, len(items)))'
}

c0=$(calls); t0=$(date +%s.%N)
"$KUBEECR" refresh --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" --log-level warn | tail -n 1
t1=$(date +%s.%N); c1=$(calls)
kubeecr_secs=$(echo "$t1 - $t0" | bc)
echo "kubeecr refresh: ${kubeecr_secs} s, $((c1 - c0)) ECR calls; $(filled)"

scripts/bench/baseline-script.sh "$KUBECONFIG_PATH" "$ECR_URL"
t2=$(date +%s.%N); c2=$(calls)
script_secs=$(echo "$t2 - $t1" | bc)
echo "baseline script: ${script_secs} s, $((c2 - c1)) ECR calls; $(filled)"
echo "ratio: the script takes $(echo "scale=0; $script_secs / $kubeecr_secs" | bc)x as long"
