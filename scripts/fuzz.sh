#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets/) for SECONDS each (default 10: the short run CI
# makes), starting from the committed seeds (fuzz/seeds/<target>/) plus whatever corpus earlier
# runs of a minute or more on this machine grew ($CARGO_TARGET_DIR/fuzz/corpus/<target>/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Environment: FUZZ_SANITIZER (default address; `none` builds faster). A crash stops the run
# and leaves its input in $CARGO_TARGET_DIR/fuzz/artifacts/<target>/: copy it to
# fuzz/regressions/<target>/ with a name that says what it found, fix the bug, and
# `cargo test -p greentic-fuzzing` replays it on every run from then on. See SECURITY.md
# ("Fuzzing").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH="${1:-10}"
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" = 0 ]; then
  TARGETS=(bundle provider_manifest oci signature attestation component breaker connection tls_connection)
fi
SANITIZER="${FUZZ_SANITIZER:-address}"
OUT="$CARGO_TARGET_DIR/fuzz"

ensure_cargo_fuzz

cd "$ROOT/fuzz"
log "building the fuzz targets ($FUZZ_TOOLCHAIN, sanitizer: $SANITIZER)"
cargo "+$FUZZ_TOOLCHAIN" fuzz build --fuzz-dir . --sanitizer "$SANITIZER" --target-dir "$OUT/target"

for target in "${TARGETS[@]}"; do
  # libFuzzer runs every corpus input before the clock starts, and the component target takes
  # about two seconds an input: a short run starts from the seeds alone, so it stays short
  # however large the corpus of longer runs has grown.
  if [ "$SECONDS_EACH" -lt 60 ]; then
    corpus="$OUT/corpus-short/$target"
    rm -rf "$corpus"
  else
    corpus="$OUT/corpus/$target"
  fi
  mkdir -p "$corpus" "$OUT/artifacts/$target"
  rm -f "$OUT/artifacts/$target"/*
  log "fuzzing $target for ${SECONDS_EACH}s"
  # -timeout: an input that runs for 10 s is a finding (a hang), not a slow case.
  # -rss_limit_mb: the component target compiles guests; parsers stay far below this.
  set +e
  cargo "+$FUZZ_TOOLCHAIN" fuzz run --fuzz-dir . --sanitizer "$SANITIZER" \
    --target-dir "$OUT/target" "$target" "$corpus" "$ROOT/fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="$OUT/artifacts/$target/" -print_final_stats=1 >"$OUT/$target.log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$OUT/$target.log" >&2 || true
  if [ "$status" != 0 ]; then
    tail -n 60 "$OUT/$target.log" >&2
    echo "error: fuzz target $target failed (exit $status); log: $OUT/$target.log, inputs: $OUT/artifacts/$target/" >&2
    exit 1
  fi
done
log "no crash in ${#TARGETS[@]} targets, ${SECONDS_EACH}s each"
