#!/usr/bin/env bash
# A brief fuzzing pass over every cargo-fuzz target in fuzz/ (see fuzz/README.md), on stable
# Rust: libFuzzer with coverage instrumentation and no sanitizer (`-s none`; sanitizers need
# nightly). Installs the pinned cargo-fuzz if it is missing, builds all targets once, runs each
# for PAGELOG_FUZZ_SECONDS (default 25) starting from its committed corpus, prints the
# executions per target, and fails if any target crashes, leaks past the RSS limit or hangs.
# New corpus entries go to a scratch directory, never into the source tree; a crashing input is
# kept in fuzz/artifacts/<target>/ (and its path printed).
#
#   scripts/fuzz_ci.sh                      # every target, 25 s each
#   PAGELOG_FUZZ_SECONDS=300 scripts/fuzz_ci.sh log_segment
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cargo_fuzz_version=0.13.2
secs=${PAGELOG_FUZZ_SECONDS:-25}
target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  start=$(date +%s)
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
  echo "installed in $(( $(date +%s) - start )) s"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== building fuzz targets (stable, -s none)"
start=$(date +%s)
cargo fuzz build -s none --target-dir "$target_dir"
echo "built in $(( $(date +%s) - start )) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$t"
  log="$scratch/$t.log"
  echo "== fuzzing $t for $secs s"
  set +e
  cargo fuzz run -s none --target-dir "$target_dir" "$t" "$scratch/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [ "$rc" -ne 0 ]; then
    echo "FAILED: $t (exit $rc) after ${runs:-?} executions"
    tail -n 60 "$log"
    failed+=("$t")
  else
    echo "ok: $t: ${runs:-?} executions in $secs s, ${cov:-cov: ?}, corpus $(ls "$scratch/corpus/$t" | wc -l) new + $(ls "fuzz/corpus/$t" | wc -l) committed inputs"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
