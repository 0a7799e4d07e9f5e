#!/usr/bin/env bash
# The fuzzing step of the test command: builds the fuzz targets (fuzz/) once
# and runs each for a while, from the committed corpus. A crash, a failed
# assertion, a leak or a timeout in any target fails the step. See
# docs/FUZZING.md.
#
#   ./scripts/fuzz.sh             # every target, 30 s each
#   ./scripts/fuzz.sh 5           # every target, 5 s each
#   ./scripts/fuzz.sh 60 csr      # only the named targets
#
# The runner is libFuzzer, linked in by the `libfuzzer-sys` crate: cargo
# builds it from source, so nothing is installed. The targets are built
# with the flags `cargo fuzz build -O -a` passes (cargo-fuzz 0.13.2,
# src/project.rs), given to cargo directly. That saves installing
# cargo-fuzz on a fresh CI machine (3 to 10 minutes of the 40-minute
# budget); `cargo fuzz` still works on fuzz/ by hand (docs/FUZZING.md).
# One difference, for CI time: the targets run two at a time, one per
# core. The instrumentation flags are nightly-only, so
# the stable toolchain is told to allow them with RUSTC_BOOTSTRAP=1 (only
# here: fuzz/ is its own workspace, with its own target directory). New
# inputs go to a temporary directory, so the committed corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(http_codec mqtt_connect relay_codec register_request csr journal_replay)
fi
jobs="${FUZZ_JOBS:-$(nproc)}"
sanitizer="${FUZZ_SANITIZER:-address}"
if [ "$sanitizer" = none ]; then sanitizer=""; fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
# Coverage counters and comparison tracing for libFuzzer, `--cfg fuzzing`,
# AddressSanitizer (it watches the unsafe code in the dependencies:
# httparse's SIMD, ring; FUZZ_SANITIZER=none leaves it out, for long runs
# at 7 to 8 times the rate), one codegen unit (as cargo-fuzz: the sancov
# pass otherwise blocks cross-unit inlining), and debug assertions with overflow checks, so an
# arithmetic overflow is a crash too. `--target` keeps these flags off the
# build scripts.
RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing ${sanitizer:+-Zsanitizer=$sanitizer} -Cdebug-assertions -Coverflow-checks \
 -Ccodegen-units=1" \
  cargo build --locked --manifest-path fuzz/Cargo.toml --target "$triple" --release \
  --config 'profile.release.debug="line-tables-only"' \
  $(printf -- '--bin %s ' "${targets[@]}")
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# FUZZ_NEW_DIR keeps what a run finds, and each target's libFuzzer log (for
# a long run, to minimise into the corpus afterwards); otherwise both are
# dropped with $work.
new="${FUZZ_NEW_DIR:-$work/new}"

# Runs one target; its log goes to $work/<target>.log, its exit status to
# $work/<target>.rc. FUZZ_ARGS adds libFuzzer flags (e.g. -runs=10000000).
run_target() {
  local target="$1" status=0
  mkdir -p "$new/$target" "fuzz/corpus/$target" "fuzz/artifacts/$target"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds
  # memory; -print_final_stats for the executions and coverage reached.
  "$CARGO_TARGET_DIR/$triple/release/$target" "$new/$target" "fuzz/corpus/$target" \
    -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    ${FUZZ_ARGS:-} \
    >"$work/$target.log" 2>&1 || status=$?
  echo "$status" >"$work/$target.rc"
  if [ -n "${FUZZ_NEW_DIR:-}" ]; then cp "$work/$target.log" "$new/$target.log"; fi
}

echo "== fuzz ${#targets[@]} targets for ${seconds}s each, $jobs at a time"
pids=()
for target in "${targets[@]}"; do
  run_target "$target" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait

failed=0
for target in "${targets[@]}"; do
  status="$(cat "$work/$target.rc")"
  if [ "$status" -ne 0 ]; then
    tail -n 80 "$work/$target.log" >&2
    echo "fuzz target $target failed (exit $status); the input is under fuzz/artifacts/$target/" >&2
    failed=1
  else
    echo "$target: $(grep -E '^stat::number_of_executed_units' "$work/$target.log" | awk '{print $2}') executions, $(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$work/$target.log" | tail -1)"
  fi
done
if [ "$failed" -ne 0 ]; then exit 1; fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no findings"
