# Shared by scripts/test.sh and scripts/local-run.sh: moto in a local virtualenv, on 127.0.0.1.

MOTO_VERSION="5.2.5"
KUBEECR_VENV="${KUBEECR_VENV:-.venv}"

# The manifest checks' schema validator (scripts/lib/validate_manifests.py).
VALIDATOR_PACKAGES=("jsonschema==4.26.0" "referencing==0.37.0" "PyYAML==6.0.4")

# Installs moto[server] and the validator's packages into $KUBEECR_VENV when missing.
ensure_moto() {
  if [ ! -x "$KUBEECR_VENV/bin/moto_server" ]; then
    echo "==> installing moto[server]==$MOTO_VERSION into $KUBEECR_VENV"
    python3 -m venv "$KUBEECR_VENV"
    "$KUBEECR_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "${VALIDATOR_PACKAGES[@]}"
  elif ! "$KUBEECR_VENV/bin/python" -c 'import jsonschema, referencing, yaml' 2>/dev/null; then
    "$KUBEECR_VENV/bin/pip" install --quiet --disable-pip-version-check "${VALIDATOR_PACKAGES[@]}"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("nothing listens on 127.0.0.1:%s after 30s" % sys.argv[1])
PY
}

# Starts moto on a free port; sets MOTO_URL and MOTO_PID. Logs to $1.
start_moto() {
  local port
  port=$(free_port)
  "$KUBEECR_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$1" 2>&1 &
  MOTO_PID=$!
  MOTO_URL="http://127.0.0.1:$port"
  wait_port "$port"
}

# Starts the testkit's ECR proxy (binary $1) in front of the moto at $MOTO_URL: it answers as
# ECR does, with a fresh password of real length (2,300-2,800 characters) on every call and an
# expiry 12 h ahead, where moto gives `<account>-auth-token` expiring in 2015. Sets ECR_URL
# and ECR_PID. Logs to $2.
start_ecr() {
  local out
  out=$(mktemp)
  "$1" --moto "$MOTO_URL" >"$out" 2>"$2" &
  ECR_PID=$!
  for _ in $(seq 300); do
    ECR_URL=$(sed -n 's/^ready //p' "$out")
    [ -n "$ECR_URL" ] && break
    sleep 0.1
  done
  rm -f "$out"
  [ -n "$ECR_URL" ] || { echo "the ECR proxy did not start (log: $2)" >&2; return 1; }
}
