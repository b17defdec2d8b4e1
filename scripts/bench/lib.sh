# Shared by scripts/bench/*.sh: release binaries, moto, and a real kube-apiserver (from
# ../shared/kube-apiserver, fresh etcd) or the in-repo API double.

source scripts/lib/moto.sh

# The kubeecr binary measured: the release build, or KUBEECR_BENCH_BIN (e.g. an older release,
# for a before-and-after comparison in one session).
KUBEECR=${KUBEECR_BENCH_BIN:-target/release/kubeecr}
# As the image runs it (Dockerfile).
export MIMALLOC_ALLOW_THP=0 MIMALLOC_PURGE_DELAY=0

build_release() {
  # KUBEECR_BENCH_NO_BUILD=1: measure the binaries already in target/release.
  [ "${KUBEECR_BENCH_NO_BUILD:-0}" = 1 ] && return
  echo "==> building release binaries" >&2
  cargo build --release --quiet --bin kubeecr
  cargo build --release --quiet -p kubeecr-testkit --bin kubeecr-seed --bin kubeecr-dev-cluster --bin kubeecr-ecr
}

bench_pids=()
bench_kapi=""
bench_cleanup() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$bench_kapi" ]; then ../shared/kube-apiserver/stop.sh "$bench_kapi" --wipe >/dev/null 2>&1 || true; fi
}
trap bench_cleanup EXIT

# Starts the cluster named by $1 (real|double); sets KUBECONFIG_PATH.
start_cluster() {
  local state=target/bench
  mkdir -p "$state"
  case "$1" in
    real)
      bench_kapi="$PWD/$state/kube-apiserver"
      ../shared/kube-apiserver/stop.sh "$bench_kapi" --wipe >/dev/null 2>&1 || true
      KUBECONFIG_PATH=$(../shared/kube-apiserver/start.sh "$bench_kapi" | tail -n 1)
      ;;
    double)
      local port
      port=$(free_port)
      target/release/kubeecr-dev-cluster --listen "127.0.0.1:$port" --kubeconfig "$state/kubeconfig" \
        >"$state/double.log" 2>&1 &
      bench_pids+=("$!")
      wait_port "$port"
      KUBECONFIG_PATH="$PWD/$state/kubeconfig"
      ;;
    *) echo "cluster must be real or double" >&2; exit 2 ;;
  esac
}

# CPU seconds kube-apiserver and etcd have used so far (real kube-apiserver only).
server_cpu() {
  local name
  for name in apiserver etcd; do
    printf "%s %s CPU-s  " "$name" "$(awk '{print ($14 + $15) / 100}' "/proc/$(cat "$bench_kapi/$name.pid")/stat")"
  done
  echo
}

# Counts of the API server's requests for secrets, by verb (on the double, its own count).
apiserver_secret_requests() {
  if [ -z "$bench_kapi" ]; then
    kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /testkit/requests | python3 -c '
import json, sys
print(" ".join("%s=%d" % (k.split()[1], v) for k, v in sorted(json.load(sys.stdin).items()) if k.startswith("secrets ")))'
    return
  fi
  kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /metrics 2>/dev/null |
    awk '/^apiserver_request_total\{/ && /resource="secrets"/ {
      match($0, /verb="[A-Z]+"/); verb = substr($0, RSTART + 6, RLENGTH - 7); n[verb] += $NF
    } END { for (v in n) printf "%s=%d ", v, n[v]; print "" }'
}


# Builds, starts moto and the cluster named by $1 (real|double), seeds with the rest of the
# arguments (kubeecr-seed flags). Sets MOTO_URL, ECR_URL (moto behind the testkit's proxy, which
# answers with real-size tokens, fresh on every call), KUBECONFIG_PATH, and the fake AWS keys.
bench_start() {
  local cluster=$1; shift
  build_release
  ensure_moto
  mkdir -p target/bench
  start_moto target/bench/moto.log
  bench_pids+=("$MOTO_PID")
  start_ecr target/release/kubeecr-ecr target/bench/ecr.log
  bench_pids+=("$ECR_PID")
  start_cluster "$cluster"
  target/release/kubeecr-seed --kubeconfig "$KUBECONFIG_PATH" "$@"
  export AWS_ACCESS_KEY_ID=AKIAKUBEECRBENCH0001 AWS_SECRET_ACCESS_KEY=bench-not-secret AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
}

# Starts `kubeecr serve` (release, --leader-elect=false) with fresh certificates in
# target/bench/$1-certs, logging to target/bench/serve-$1.log, and waits until it is ready.
# Sets certs, port (the webhook), admin and serve (its pid).
start_webhook() {
  certs=target/bench/$1-certs
  rm -rf "$certs"
  "$KUBEECR" certs --out "$certs" --extra-name 127.0.0.1 --valid-for 1d >/dev/null
  port=$(free_port); admin=$(free_port)
  "$KUBEECR" serve --kubeconfig "$KUBECONFIG_PATH" --ecr-endpoint "$ECR_URL" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --leader-elect=false \
    --tls-cert-file "$certs/tls.crt" --tls-key-file "$certs/tls.key" --log-level warn \
    2>"target/bench/serve-$1.log" &
  serve=$!
  bench_pids+=("$serve")
  until curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null; do sleep 0.05; done
}
