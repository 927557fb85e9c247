#!/usr/bin/env bash
# Runs the conformance suite (`greentic-host conformance`) against every provider in
# components/providers, each with the `conformance.json` profile beside its manifest, and writes
# JSON and JUnit reports to $CARGO_TARGET_DIR/conformance/. Exits non-zero if any case fails.
#   scripts/conformance.sh [PROVIDER_DIR...]
# Builds the components first when they are missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_toolchain
if [ ! -d "$COMPONENTS_OUT/wasip2" ]; then
  ensure_cargo_component
  "$ROOT/scripts/build-components.sh"
fi
(cd "$ROOT" && cargo build --locked -q -p greentic-host)
host="$CARGO_TARGET_DIR/debug/greentic-host"
reports="$CARGO_TARGET_DIR/conformance"
mkdir -p "$reports"

dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=("$ROOT"/components/providers/*/)
status=0
for dir in "${dirs[@]}"; do
  dir="${dir%/}"
  crate="$(basename "$dir")"
  wasm="$COMPONENTS_OUT/wasip2/${crate//-/_}.wasm"
  profile=()
  [ -f "$dir/conformance.json" ] && profile=(--profile "$dir/conformance.json")
  log "conformance: $crate"
  "$host" conformance "$wasm" "${profile[@]}" \
    --json "$reports/$crate.json" --junit "$reports/$crate.xml" || status=1
done
log "reports in $reports"
exit $status
