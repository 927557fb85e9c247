#!/usr/bin/env bash
# The demo: builds the provider components and shows, for each, what the host sees before
# running it — its world, imports, exports, digest and embedded manifest — after the host's
# load-time checks. Installs the wasm32-wasip2 target when missing; safe to re-run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_toolchain
"$ROOT/scripts/build-components.sh" --wasip2-only
log "building greentic-host"
(cd "$ROOT" && cargo build --locked -q -p greentic-host)
host="$CARGO_TARGET_DIR/debug/greentic-host"

log "validating the provider manifests in components/"
"$host" manifest "$ROOT"/components/providers/*/provider.json "$ROOT"/components/test-components/*/provider.json

for name in messaging_webhook webhook_github echo; do
  echo
  log "greentic-host inspect $name.wasm"
  "$host" inspect "$COMPONENTS_OUT/wasip2/$name.wasm"
done
echo
log "the hostile test components (infinite loop, memory grower, ...) pass the same checks:"
for wasm in "$COMPONENTS_OUT"/wasip2/*.wasm; do
  "$host" inspect --json "$wasm" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(f"  {r[\"manifest\"][\"name\"]:<24} {r[\"world\"]:<36} {r[\"size\"]:>7} bytes  {r[\"digest\"][:19]}…")'
done
