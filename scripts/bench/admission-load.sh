#!/usr/bin/env bash
# Admission under load: `kubeecr serve` (release build, warm token cache) answers POST /mutate
# with fixture 07 (a real v1.36 AdmissionReview whose answer fills a token) over HTTPS
# keep-alive, on the real kube-apiserver. oha drives it at fixed rates, latency-corrected as
# wrk2 is (a late request counts from when it should have been sent), then saturated. Prints
# one line per run, and the ECR calls and API server requests the runs caused.
#
#   scripts/bench/admission-load.sh [seconds] [rate...]
#   scripts/bench/admission-load.sh 30 5000                        # BENCHMARKS.md: the 5,000 req/s target
#   scripts/bench/admission-load.sh 20 1000 2000 3000 5000 10000    # BENCHMARKS.md: the sweep
#
# Needs oha (`cargo install oha --locked`). KUBEECR_BENCH_CONNECTIONS (default 16) connections;
# KUBEECR_BENCH_HTTP2=1 speaks HTTP/2 as the API server does (2 connections, 8 streams each).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

secs=${1:-30}; shift || true
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(5000)
command -v oha >/dev/null || { echo "needs oha: cargo install oha --locked" >&2; exit 1; }
bench_start real --namespaces 1 --secrets-per-namespace 0

start_webhook load
sleep 10 # a fresh kube-apiserver keeps a core busy for its first seconds

body=target/bench/review-07.json
"$KUBEECR_VENV/bin/python" -c '
import json, sys
print(json.dumps(json.load(open(sys.argv[1]))["review"]))' \
  tests/fixtures/admission/07-annotate-existing-mutate-update.json >"$body"
url="https://127.0.0.1:$port/mutate?timeout=10s"
# Warm the cache, and check the answer is the real one: allowed, with a patch.
curl -s --cacert "$certs/ca.crt" -H 'content-type: application/json' --data-binary @"$body" "$url" |
  "$KUBEECR_VENV/bin/python" -c '
import json, sys
r = json.load(sys.stdin)["response"]
assert r["allowed"] and r.get("patch"), r
print("warm: allowed, patch of %d bytes" % len(r["patch"]))'

ecr_calls() { curl -s "http://127.0.0.1:$admin/metrics" | awk '/^kubeecr_ecr_calls_total/ {n += $2} END {print n + 0}'; }
api_requests() {
  kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /metrics 2>/dev/null |
    awk '/^apiserver_request_total\{/ && !/verb="(WATCH|LIST)"/ && /resource="(secrets|events|leases)"/ {
      match($0, /resource="[a-z]+"/); r = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /verb="[A-Z]+"/); v = substr($0, RSTART + 6, RLENGTH - 7); n[r " " v] += $NF
    } END { for (k in n) printf "%s=%d ", k, n[k]; print "" }'
}
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$serve/stat"; }

conns=${KUBEECR_BENCH_CONNECTIONS:-16}
proto=(-c "$conns")
[ "${KUBEECR_BENCH_HTTP2:-0}" = 1 ] && proto=(--http2 -c 2 -p 8)
load() {
  local label=$1; shift
  oha --no-tui --output-format json -z "${secs}s" "${proto[@]}" "$@" \
    -m POST -H 'content-type: application/json' -D "$body" --cacert "$certs/ca.crt" "$url" |
    "$KUBEECR_VENV/bin/python" -c '
import json, sys
label = sys.argv[1]
r = json.load(sys.stdin)
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
errors = r.get("errorDistribution", {})
# oha cancels the requests in flight when the time is up; those are not failures.
cut = errors.pop("aborted due to deadline", 0)
ok = codes.get("200", 0)
failed = sum(codes.values()) - ok + sum(errors.values())
ms = lambda x: "%.2f" % (1000 * (x or 0))
print("%-12s %9.0f req/s  p50 %s ms  p99 %s ms  p99.9 %s ms  max %s ms  ok %d  failed %d  (%d cut at the end)"
      % (label, s["requestsPerSec"], ms(p["p50"]), ms(p["p99"]), ms(p.get("p99.9")), ms(s["slowest"]), ok, failed, cut))' "$label"
}

echo "before: ECR calls $(ecr_calls); API requests $(api_requests)"
echo "proto: ${proto[*]}, ${secs}s per run; kubeecr, moto, kube-apiserver, etcd and oha share the machine"
for rate in "${rates[@]}"; do
  c0=$(cpu)
  load "$rate/s" -q "$rate" --latency-correction
  echo "             kubeecr CPU $(echo "$(cpu) - $c0" | bc) s"
done
c0=$(cpu)
load saturated
echo "             kubeecr CPU $(echo "$(cpu) - $c0" | bc) s"
echo "after: ECR calls $(ecr_calls); API requests $(api_requests); RSS $(awk '/^VmRSS/ {print int($2/1024)}' /proc/$serve/status) MiB"
