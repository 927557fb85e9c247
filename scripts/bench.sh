#!/usr/bin/env bash
# Runs the benchmarks (invoke, engine, verify, fleet, audit, token, log_line, tls, forms; or the ones named) after building the
# components they load. Numbers and method: BENCHMARKS.md.
#   scripts/bench.sh [invoke|engine|verify|fleet|audit|token|log_line|tls|forms ...] [-- ARGS]
#   scripts/bench.sh capacity [-- inflight|tenants|cold ...]
# `capacity` (the published figures: calls in flight, tenants per host, cold start) also
# appends its figures to benchmarks/history.jsonl (commit, date, machine) and redraws
# benchmarks/history.svg.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Every process measured runs as in production: with RUST_BACKTRACE=1 in the environment each
# error Wasmtime builds (one per dropped store) walks the stack — greentic-host turns that off
# for itself, `wasmtime serve` and the benches' in-process hosts would pay it.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

ensure_toolchain
ensure_nats_server
if [ ! -f "$COMPONENTS_OUT/wasip2/workloads.wasm" ]; then
  ensure_cargo_component
  "$ROOT/scripts/build-components.sh"
fi
if [ "${1:-}" = capacity ]; then
  shift
  [ "${1:-}" = -- ] && shift
  # 10 000 calls in flight hold ~60 000 memory mappings: more than Linux's default
  # vm.max_map_count leaves a process (the host would hold ~6 800 and queue the rest). Raised
  # as an operator of such a host raises it.
  if [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 262144)" -lt 262144 ]; then
    log "raising vm.max_map_count to 262144 (sysctl) for the 10 000 calls in flight"
    raise=(sysctl -q -w vm.max_map_count=262144)
    [ "$(id -u)" = 0 ] || raise=(sudo -n "${raise[@]}")
    "${raise[@]}" 2>/dev/null ||
      log "could not raise it (not root, no sudo): the host holds ~6 800 calls at once and queues the rest"
  fi
  cd "$ROOT"
  out="$(mktemp)"
  trap 'rm -f "$out"' EXIT
  cargo bench --locked -p greentic-host --bench capacity -- "$@" | tee "$out"
  python3 "$ROOT/scripts/bench-history.py" add benchmarks/history.jsonl "$(tail -n 1 "$out")"
  python3 "$ROOT/scripts/bench-history.py" svg benchmarks/history.jsonl benchmarks/history.svg
  log "figures kept in benchmarks/history.jsonl, drawn in benchmarks/history.svg"
  exit 0
fi
benches=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do benches+=(--bench "$1"); shift; done
[ $# -gt 0 ] && shift
cd "$ROOT"
exec cargo bench --locked -p greentic-host "${benches[@]}" -- "$@"
