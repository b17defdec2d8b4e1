#!/usr/bin/env bash
# What a tenant's big Secrets cost kubeecr: N Opaque Secrets of B bytes each, labelled
# `deft.com/kubeecr-managed=true` without opting in, in one namespace beside 10 opted-in ones
# (with `--opted-in`: N opted-in, labelled Secrets whose own .dockerconfigjson holds B bytes,
# which kubeecr must read whole and fill). Prints the peak RSS of one `kubeecr refresh` over
# that namespace (a dry run, so every run finds the same), and of `kubeecr serve` once its
# watches have listed them.
#
#   scripts/bench/labelled-secrets.sh [real|double] [count] [bytes] [--opted-in]
#   scripts/bench/labelled-secrets.sh real 120 768000             # BENCHMARKS.md: 120 Secrets of 750 KB
#   scripts/bench/labelled-secrets.sh real 120 768000 --opted-in  # ... opted in, the bytes in their config
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh

cluster=${1:-real}; count=${2:-120}; bytes=${3:-768000}; opted_in=${4:-}
if [ "$opted_in" = --opted-in ]; then
  bench_start "$cluster" --namespaces 1 --secrets-per-namespace "$count" --labelled --config-padding "$bytes"
else
  bench_start "$cluster" --namespaces 1 --secrets-per-namespace 10 \
    --unrelated "$count" --unrelated-bytes "$bytes" --unrelated-labelled --unrelated-prefix big
fi

# Peak RSS of a child, from the kernel's own count (ru_maxrss, KiB).
peak_of() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print("exit %d, peak RSS %d MiB" % (done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024))
if done.returncode not in (0, 1):
    sys.stderr.write(done.stderr[-2000:])
PY
}
echo "refresh over $count labelled Secrets of $bytes bytes: $(peak_of "$KUBEECR" refresh --kubeconfig "$KUBECONFIG_PATH" \
  --ecr-endpoint "$ECR_URL" --namespace bench-0 --log-level warn --dry-run)"

certs=target/bench/labelled-certs
rm -rf "$certs"
"$KUBEECR" certs --out "$certs" --extra-name 127.0.0.1 --valid-for 1d >/dev/null
admin=$(free_port)
"$KUBEECR" serve --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" \
  --listen "127.0.0.1:$(free_port)" --admin-listen "127.0.0.1:$admin" --leader-elect=false \
  --tls-cert-file "$certs/tls.crt" --tls-key-file "$certs/tls.key" --log-level warn \
  --namespaces bench-0 2>target/bench/serve-labelled.log &
serve=$!
bench_pids+=("$serve")
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
  kill -0 "$serve" 2>/dev/null || { echo "serve exited: $(tail -3 target/bench/serve-labelled.log)"; exit 1; }
  sleep 0.1
done
sleep 5
echo "serve with $count labelled Secrets of $bytes bytes: ready, peak RSS $(awk '/^VmHWM/ {print int($2/1024)}' "/proc/$serve/status") MiB, now $(awk '/^VmRSS/ {print int($2/1024)}' "/proc/$serve/status") MiB"
