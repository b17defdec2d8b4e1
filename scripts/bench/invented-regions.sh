#!/usr/bin/env bash
# Issue 9's report, replayed: AdmissionReviews whose annotation lists thousands of invented
# regions, sent to `kubeecr serve`'s /mutate. Counts GetAuthorizationToken calls (from
# /metrics) and RSS before and after. Then the most one Secret may ask for: 20 registries in
# 10 known regions, 200 times.
#
#   scripts/bench/invented-regions.sh [requests] [regions]   # BENCHMARKS.md: 3 requests of 5000
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

requests=${1:-3}; regions=${2:-5000}
bench_start double --namespaces 1 --secrets-per-namespace 0
start_webhook invented

rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$serve/status"; }
calls() { curl -s "http://127.0.0.1:$admin/metrics" | awk '/^kubeecr_ecr_calls_total/ {n += $2} END {print n + 0}'; }
# Fixture 01 (a real v1.36 AdmissionReview) with the annotation set to $1.
review() {
  "$KUBEECR_VENV/bin/python" - "$1" <<'PY'
import json, sys
doc = json.load(open("tests/fixtures/admission/01-create-annotated-nodata-apply-mutate-create.json"))
review = doc["review"]
review["request"]["object"]["metadata"]["annotations"]["deft.com/kubeecr"] = sys.argv[1]
print(json.dumps(review))
PY
}
mutate() {
  curl -s --cacert "$certs/ca.crt" -H 'content-type: application/json' \
    --data-binary @- "https://127.0.0.1:$port/mutate?timeout=10s"
}

invented=$(seq 0 $((regions - 1)) | sed 's|^|123456789012/us-x|; s|$|-1|' | paste -sd, -)
body=$(review "$invented")
echo "before: RSS $(rss) MiB, ECR calls $(calls); annotation ${#invented} bytes, $regions invented regions"
for _ in $(seq "$requests"); do
  printf '%s' "$body" | mutate | "$KUBEECR_VENV/bin/python" -c '
import json, sys
r = json.load(sys.stdin)["response"]
print("  allowed=%s, message %d bytes: %s" % (r["allowed"], len(r["status"]["message"]), r["status"]["message"][:110]))'
done
echo "after $requests requests: RSS $(rss) MiB, ECR calls $(calls)"

known="us-east-1 us-east-2 us-west-1 us-west-2 eu-west-1 eu-west-2 eu-west-3 eu-central-1 ap-south-1 ap-northeast-1"
max=$(for i in $(seq 0 19); do set -- $known; shift $((i % 10)); printf '%012d/%s\n' "$i" "$1"; done | paste -sd, -)
body=$(review "$max")
for _ in $(seq 200); do printf '%s' "$body" | mutate >/dev/null; done
echo "after 200 requests at the cap (20 registries, 10 regions): RSS $(rss) MiB, ECR calls $(calls)"
