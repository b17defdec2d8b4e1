#!/usr/bin/env bash
# `kubeecr refresh` at scale: fills N opted-in Secrets spread over namespaces and 50
# (account, region) pairs in 5 regions, beside unrelated Secrets of a given size, then runs
# again with nothing due. Prints wall time, peak RSS, ECR calls and the API requests for
# secrets by verb (the real kube-apiserver's metrics, or the double's own count).
#
#   scripts/bench/refresh-scale.sh [real|double] [namespaces] [per-namespace] [unrelated] [unrelated-bytes] [--labelled]
#   scripts/bench/refresh-scale.sh real 1000 10 0 0             # BENCHMARKS.md: 10,000 Secrets, 1,000 namespaces
#   scripts/bench/refresh-scale.sh real 1000 10 0 0 --labelled  # as the webhook labels them at creation
#   scripts/bench/refresh-scale.sh double 1000 10 1000 524288   # with 1,000 unrelated Secrets of 512 KiB
#
#   KUBEECR_BENCH_FLAGS="--concurrency 64 --write-qps 0"  extra flags for kubeecr refresh
#   KUBEECR_BENCH_BIN=path                                 another kubeecr binary (a baseline)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

cluster=${1:-real}; namespaces=${2:-1000}; per=${3:-10}; unrelated=${4:-0}; bytes=${5:-0}; labelled=${6:-}
seed=(--namespaces "$namespaces" --secrets-per-namespace "$per" --unrelated "$unrelated" --unrelated-bytes "$bytes")
[ "$labelled" = --labelled ] && seed+=(--labelled)
bench_start "$cluster" "${seed[@]}"

refresh=("$KUBEECR" refresh --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" --log-level warn ${KUBEECR_BENCH_FLAGS:-})

for run in fill steady; do
  before=$(apiserver_secret_requests)
  cpu_before=$( [ "$cluster" = real ] && server_cpu || true)
  out=$(mktemp); timing=$(mktemp)
  /usr/bin/time -f '%e %M %U %S' -o "$timing" "${refresh[@]}" >"$out" 2>"$out.err" || { cat "$out.err" >&2; exit 1; }
  read -r secs rss user sys <"$timing"
  after=$(apiserver_secret_requests)
  cpu_after=$( [ "$cluster" = real ] && server_cpu || true)
  echo "$run: $(tail -n 1 "$out") | ${secs}s, peak RSS $((rss / 1024)) MiB, CPU ${user}s user + ${sys}s sys"
  echo "  API requests for secrets before: $before"
  echo "                            after: $after"
  if [ "$cluster" = real ]; then
    echo "  server CPU before: $cpu_before"
    echo "              after: $cpu_after"
  fi
  rm -f "$out" "$out.err" "$timing"
done
