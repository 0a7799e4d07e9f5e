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
# The runner is cargo-fuzz (libFuzzer). Its instrumentation flags are
# nightly-only, so the stable toolchain is told to allow them with
# RUSTC_BOOTSTRAP=1 (nothing else in the build is affected: fuzz/ is its own
# workspace, with its own target directory). New inputs the run finds go to
# a temporary directory, so the committed corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(http_codec mqtt_connect relay_codec register_request csr journal_replay)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  timeout 1200 cargo install --locked cargo-fuzz --version 0.13.2
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
# -O: optimised; -a: with debug assertions and overflow checks, so an
# arithmetic overflow is a crash too. AddressSanitizer (cargo-fuzz's default)
# watches the unsafe code in the dependencies (httparse's SIMD, ring).
fuzz_flags=(-O -a --fuzz-dir fuzz)
cargo fuzz build "${fuzz_flags[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$work/$target" "fuzz/corpus/$target"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds
  # memory; -print_final_stats for the executions and coverage reached.
  status=0
  cargo fuzz run "${fuzz_flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$work/$target.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 80 "$work/$target.log" >&2
    echo "fuzz target $target failed (exit $status); the input is under fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|peak_rss_mb)' "$work/$target.log" || true
done
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no findings"
