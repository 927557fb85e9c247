#!/usr/bin/env bash
# Runs the benchmarks (invoke, engine, verify, fleet, audit, token; or the ones named) after building the
# components they load. Numbers and method: BENCHMARKS.md.
#   scripts/bench.sh [invoke|engine|verify|fleet|audit|token ...] [-- ARGS]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_toolchain
ensure_nats_server
if [ ! -f "$COMPONENTS_OUT/wasip2/workloads.wasm" ]; then
  ensure_cargo_component
  "$ROOT/scripts/build-components.sh"
fi
benches=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do benches+=(--bench "$1"); shift; done
[ $# -gt 0 ] && shift
cd "$ROOT"
exec cargo bench --locked -p greentic-host "${benches[@]}" -- "$@"
