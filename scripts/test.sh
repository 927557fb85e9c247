#!/usr/bin/env bash
# Runs every check and test: formatting, lints, the vendored WIT, both component builds, the
# demo end to end, the conformance suite against every provider, the host workspace's tests
# (which start the real host on loopback with the built components) and the components' unit
# tests. The host workspace's tests replay every fuzz seed and every past crash on stable
# (`greentic-fuzzing`); timed coverage-guided fuzzing is scripts/fuzz.sh, run on its own.
# Installs what it needs (wasm target, cargo-component, cargo-cyclonedx, docker-registry,
# skopeo and umoci, nats-server) when missing, the Python DSSE/in-toto verifier the attestation
# tests check ours with, kubernetes-validate for the Kubernetes manifests, moto and python-hcl2
# for the platforms' tests (AWS Secrets Manager, Nomad), systemd-analyze for the systemd
# units and grpcio for the Python sidecar provider; safe to re-run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_toolchain
ensure_cargo_component
ensure_registry_tools
ensure_nats_server
ensure_dsse_verifier
ensure_kubernetes_validate
ensure_platform_tools
ensure_systemd_tools
ensure_grpc_python
ensure_image_tools

log "checking wit/deps against the Wasmtime release it is vendored from"
"$ROOT/scripts/vendor-wit.sh" --check

log "cargo fmt --check"
(cd "$ROOT" && cargo fmt --all -- --check)
(cd "$ROOT/components" && cargo fmt --all -- --check)

"$ROOT/scripts/build-components.sh"

log "clippy (host workspace)"
(cd "$ROOT" && cargo clippy --locked --workspace --all-targets -- -D warnings)
log "clippy (components, wasm32-wasip2 and native unit tests)"
(cd "$ROOT/components" && cargo clippy --locked --workspace --target wasm32-wasip2 -- -D warnings)
(cd "$ROOT/components" && cargo clippy --locked --workspace --all-targets -- -D warnings)

log "the demo, end to end"
"$ROOT/scripts/demo.sh"

log "the conformance suite, against every provider in components/providers"
"$ROOT/scripts/conformance.sh"

log "tests (host workspace)"
(cd "$ROOT" && cargo test --locked --workspace)
log "unit tests (components, native)"
(cd "$ROOT/components" && cargo test --locked --workspace)
log "all checks passed"
