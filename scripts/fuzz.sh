#!/usr/bin/env bash
# Fuzzes every parser that takes bytes from outside (fuzz/fuzz_targets, issue 16) with cargo-fuzz
# on the nightly toolchain (the product crates stay on stable), SECONDS per target (default 600),
# and writes executions, exec/s, crashes and corpus size per target to bench/results/fuzz.md.
#
#   scripts/fuzz.sh [SECONDS]      full run, writes bench/results/fuzz.md
#   scripts/fuzz.sh --smoke        5 s per target, prints the table only (a CI-sized check)
#
# Corpora live in fuzz/corpus/<target> (not committed; seeded from crates/providers/testdata
# and examples/ by fuzz/seed.py when empty). Crashes land in fuzz/artifacts/<target>/; reproduce
# one with `cargo +nightly fuzz run -s none -a <target> <file>`, minimise it with
# `cargo +nightly fuzz tmin -s none -a <target> <file>`. Exits 1 when any target crashed.
#
# Environment: FUZZ_SANITIZER (default none: the product code forbids unsafe; `address` for
# ASan), FUZZ_TARGETS (space-separated subset), FUZZ_REPORT (where the table goes).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=600
report=bench/results/fuzz.md
mode=full
case "${1:-}" in
  --smoke) seconds=5; report=""; mode=smoke ;;
  "") ;;
  *[!0-9]*) echo "usage: $0 [SECONDS|--smoke]" >&2; exit 2 ;;
  *) seconds=$1 ;;
esac
report=${FUZZ_REPORT-$report}
sanitizer=${FUZZ_SANITIZER:-none}
export SWITCHYARD_CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
# Sanitizer builds use their own flags: a target dir of their own keeps the shared one warm.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$SWITCHYARD_CACHE/fuzz-target}"

step() { printf '\n==> %s\n' "$*" >&2; }

if [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
rustup toolchain list | grep -q '^nightly' || { echo "needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 2; }

step "seeding corpora"
python3 fuzz/seed.py

cd fuzz
flags=(-s "$sanitizer" -a)  # -a: debug assertions, so arithmetic overflow panics
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
step "building $(echo "$targets" | wc -w) targets (sanitizer: $sanitizer)"
started=$(date +%s)
cargo +nightly fuzz build "${flags[@]}" >&2
step "built in $(( $(date +%s) - started )) s"

logs=$(mktemp -d)
rows=()
failed=0
for t in $targets; do
  step "$t: ${seconds} s"
  log=$logs/$t.log
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    # A crash ends the run before the final stats: take the last status line (`#N ...`).
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  execs=${execs:-0}
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rate=${rate:-$(( execs / (seconds > 0 ? seconds : 1) ))}
  crashes=0
  if [ "$status" != 0 ]; then
    crashes=1  # libFuzzer stops at the first crash
    failed=1
    grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | head -5 >&2 || true
    cp "$log" "$root/fuzz/artifacts/$t.log" 2>/dev/null || true
  fi
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '   %s executions, %s exec/s, %s crashes, corpus %s\n' "$execs" "$rate" "$crashes" "$corpus" >&2
  rows+=("| \`$t\` | $seconds | $execs | $rate | $crashes | $corpus |")
done
cd "$root"

table() {
  echo "| target | seconds | executions | exec/s | crashes | corpus (inputs) |"
  echo "|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
}
step "results ($mode, $(( $(date +%s) - started )) s in all)"
table
if [ -n "$report" ]; then
  commit=$(git rev-parse --short HEAD)
  dirty=$(git diff --quiet HEAD -- crates fuzz && echo "" || echo " (with uncommitted changes)")
  {
    echo "# Fuzzing"
    echo
    echo "\`scripts/fuzz.sh $seconds\`: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$commit\`$dirty,"
    echo "$(nproc) cores shared, sanitizer \`$sanitizer\`, debug assertions on (overflow panics),"
    echo "\`-rss_limit_mb=2048 -timeout=10\`, $seconds s per target, one target at a time."
    echo
    table
  } >"$report.new"
  # Notes below the table (findings, history) are written by hand and kept across runs.
  if [ -f "$report" ] && grep -q '^<!-- notes -->' "$report"; then
    sed -n '/^<!-- notes -->/,$p' "$report" | { echo; cat; } >>"$report.new"
  fi
  mv "$report.new" "$report"
  step "wrote $report"
fi
exit $failed
