#!/usr/bin/env bash
# Builds every provider and test component in components/ twice and collects the results:
#
#   $GREENTIC_COMPONENTS_DIR/wasip2/NAME.wasm           cargo build --release --target wasm32-wasip2
#   $GREENTIC_COMPONENTS_DIR/cargo-component/NAME.wasm  cargo component build --release
#   $GREENTIC_COMPONENTS_DIR/sbom/NAME.cdx.json         CycloneDX SBOM (cargo cyclonedx) of NAME
#
# GREENTIC_COMPONENTS_DIR defaults to $CARGO_TARGET_DIR/greentic-components, which is where the
# tests look for them. Installs the wasm target and cargo-component when missing.
#
#   --wasip2-only   skip the cargo-component build (no cargo-component install needed)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

with_cargo_component=1
[ "${1:-}" = "--wasip2-only" ] && with_cargo_component=0

ensure_toolchain
ensure_cargo_cyclonedx
[ "$with_cargo_component" = 1 ] && ensure_cargo_component

cd "$ROOT/components"
log "building components with cargo build --target wasm32-wasip2"
cargo build --release --locked --target wasm32-wasip2
if [ "$with_cargo_component" = 1 ]; then
  log "building components with cargo component build"
  cargo component build --release --locked
fi

names="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "cdylib" in t["crate_types"]:
            print(t["name"].replace("-", "_"))
')"

# Copy into a fresh directory, then swap it in, so a failed build never leaves a mixed set.
staging="$(mktemp -d "${COMPONENTS_OUT%/}.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/wasip2" "$staging/sbom"
# SBOMs from the dependency graph of each component as built for wasm32-wasip2 (cargo
# cyclonedx writes them beside each crate's Cargo.toml; they are moved out of the tree).
log "writing CycloneDX SBOMs (cargo cyclonedx)"
cargo cyclonedx -q -f json --spec-version 1.5 --target wasm32-wasip2 --describe binaries
[ "$with_cargo_component" = 1 ] && mkdir -p "$staging/cargo-component"
for name in $names; do
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$name.wasm" "$staging/wasip2/"
  mv "$(find . -name "${name}_cdylib.cdx.json" -not -path './target/*' | head -n 1)" "$staging/sbom/$name.cdx.json"
  if [ "$with_cargo_component" = 1 ]; then
    cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/$name.wasm" "$staging/cargo-component/"
  fi
done
if [ "$with_cargo_component" = 0 ] && [ -d "$COMPONENTS_OUT/cargo-component" ]; then
  # Keep the last cargo-component build; only a full build replaces it.
  mv "$COMPONENTS_OUT/cargo-component" "$staging/cargo-component"
fi
rm -rf "$COMPONENTS_OUT"
mv "$staging" "$COMPONENTS_OUT"
trap - EXIT
log "components in $COMPONENTS_OUT: $(echo $names | tr '\n' ' ')"
