#!/usr/bin/env bash
# `kubeecr serve` footprint: time from start to ready with N labelled, opted-in Secrets
# (as the webhook leaves them), time until every one is filled by the watch-driven
# refresher, RSS 10 s after that, and RSS again after 100 MiB of unrelated Secret data
# appears. ECR is the testkit's: a fresh password of real length (2,300-2,800 characters) on
# every call, so what the Secrets hold is what real ones hold.
#
#   scripts/bench/serve-footprint.sh [real|double] [namespaces] [per-namespace] [registries-per-secret]
#   scripts/bench/serve-footprint.sh real 1000 10      # BENCHMARKS.md: 10,000 managed Secrets
#   scripts/bench/serve-footprint.sh real 1000 10 5    # the same with 5 registries each
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

cluster=${1:-real}; namespaces=${2:-1000}; per=${3:-10}; registries=${4:-1}
total=$((namespaces * per))
bench_start "$cluster" --namespaces "$namespaces" --secrets-per-namespace "$per" --labelled \
  --registries-per-secret "$registries"

certs=target/bench/serve-certs
mkdir -p "$certs"
[ -f "$certs/tls.key" ] || "$KUBEECR" certs --out "$certs" --extra-name 127.0.0.1 --valid-for 30d >/dev/null

admin=$(free_port)
started=$(date +%s.%N)
"$KUBEECR" serve --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" \
  --listen "127.0.0.1:$(free_port)" --admin-listen "127.0.0.1:$admin" --leader-elect=false \
  --tls-cert-file "$certs/tls.crt" --tls-key-file "$certs/tls.key" --log-level warn \
  2>target/bench/serve.log &
serve=$!
bench_pids+=("$serve")

rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$serve/status"; }
hwm() { awk '/^VmHWM/ {print int($2/1024)}' "/proc/$serve/status"; }
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

until curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null; do sleep 0.05; done
ready=$(date +%s.%N)
echo "ready after $(echo "$ready - $started" | bc) s (watches listed $total opted-in Secrets)"
# `managed` in 0.2.0 (KUBEECR_BENCH_BIN may run an older binary).
until [ "$(metric 'kubeecr_secrets{state="filled"}')" = "$total" ] \
  || [ "$(metric 'kubeecr_secrets{state="managed"}')" = "$total" ]; do sleep 0.2; done
filled=$(date +%s.%N)
echo "all $total filled after $(echo "$filled - $started" | bc) s; ECR calls: $(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^kubeecr_ecr_calls_total/ {n += $2} END {print n}')"
sleep 10
echo "RSS 10 s after all were filled: $(rss) MiB (peak so far $(hwm) MiB); $(awk '/^(Anonymous|Rss)/ {printf "%s %d MiB ", $1, $2/1024}' "/proc/$serve/smaps_rollup")"
# Fill by watch: a Secret annotated straight through the API (no webhook), timed to its token.
k() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
for i in 1 2 3 4 5; do
  k create secret docker-registry "latency-$i" -n bench-0 --docker-server=quay.io --docker-username=u --docker-password=p >/dev/null
  t0=$(date +%s.%N)
  k annotate secret "latency-$i" -n bench-0 deft.com/kubeecr=123456789012/us-west-2 >/dev/null
  until k get secret "latency-$i" -n bench-0 -o 'jsonpath={.metadata.annotations.deft\.com/kubeecr-fingerprints}' | grep -q .; do sleep 0.05; done
  echo "annotated behind the webhook's back: filled $(echo "$(date +%s.%N) - $t0" | bc) s after the annotate command started"
done
target/release/kubeecr-seed --kubeconfig "$KUBECONFIG_PATH" --namespaces 200 --secrets-per-namespace 0 \
  --unrelated 200 --unrelated-bytes 524288 --unrelated-prefix sh.helm.release.v1.unrelated
sleep 10
echo "after 200 unrelated Secrets of 512 KiB (100 MiB): RSS $(rss) MiB (peak $(hwm) MiB)"
strip -o target/bench/kubeecr.stripped "$KUBEECR"
echo "stripped binary: $(( $(stat -c %s target/bench/kubeecr.stripped) / 1024 / 1024 )) MiB"
