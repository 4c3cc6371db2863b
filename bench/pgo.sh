#!/usr/bin/env bash
# Builds with profile-guided optimisation: the `dist` profile built once instrumented
# (`-Cprofile-generate`), run through its work, and built again with what that run counted
# (`-Cprofile-use`): LLVM then lays out and inlines the code by how often it ran.
# bench/results/profiling.md, "Profile-guided optimisation".
#
#   bench/pgo.sh [switchyard]   what ships: the gateway run through bench/train.sh (the realistic
#                               path whole and streamed over HTTP/1.1 and h2c upstreams, the
#                               Anthropic translation, held streams, a scrape, a reload)
#   bench/pgo.sh bare-proxy     bench/run.sh's lean anchor, built the same way (so the anchors
#                               compare like with like): whole requests through it to the mock
#
# Prints the binary's path last ($CARGO_TARGET_DIR/<host>/dist/<name>, with the profile it was
# built with beside it as <name>.profdata). Needs llvm-profdata of
# rustc's LLVM major version: `rustup component add llvm-tools`, Debian's `llvm-<major>` (`rustc
# -vV` names the version), or LLVM_PROFDATA=path. The gateway's two fat-LTO builds take about half
# an hour on 2 cores, the bare proxy's two minutes. Everything it runs listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-switchyard}"
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
MAJOR="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
PROFDATA="${LLVM_PROFDATA:-}"
if [[ -z "$PROFDATA" ]]; then
  for candidate in "$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata" "llvm-profdata-$MAJOR" \
                   "/usr/lib/llvm-$MAJOR/bin/llvm-profdata"; do
    if command -v "$candidate" > /dev/null; then PROFDATA="$candidate"; break; fi
  done
fi
if [[ -z "$PROFDATA" ]]; then
  echo "bench/pgo.sh: no llvm-profdata for LLVM $MAJOR: run \`rustup component add llvm-tools\`," \
       "install Debian's llvm-$MAJOR, or set LLVM_PROFDATA" >&2
  exit 1
fi
case "$WHAT" in
  switchyard) build=(-p switchyard) ;;
  bare-proxy) build=(--manifest-path bench/bare-proxy/Cargo.toml) ;;
  *) echo "usage: bench/pgo.sh [switchyard|bare-proxy]" >&2; exit 2 ;;
esac
WORK="$CARGO_TARGET_DIR/pgo-data/$WHAT"
rm -rf "$WORK"
mkdir -p "$WORK/train/profile"
# `--target`: RUSTFLAGS then reach the binary's crates only, not build scripts and proc macros.
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/train/profile" \
  cargo build --profile dist --locked --target "$HOST" --target-dir "$CARGO_TARGET_DIR/pgo-generate" "${build[@]}" >&2
instrumented="$CARGO_TARGET_DIR/pgo-generate/$HOST/dist/$WHAT"

if [[ "$WHAT" == switchyard ]]; then
  SECONDS_EACH="${SECONDS_EACH:-5}" bench/train.sh "$WORK/train" "$instrumented" >&2
else
  # The mock upstream and the load generator are the gateway's (a `dist` build of it: the one
  # just made by `bench/pgo.sh`, or SWITCHYARD_BIN); only the bare proxy's profile is kept.
  helper="${SWITCHYARD_BIN:-$CARGO_TARGET_DIR/$HOST/dist/switchyard}"
  [[ -x "$helper" ]] || { echo "bench/pgo.sh bare-proxy: needs a switchyard binary (run bench/pgo.sh first, or set SWITCHYARD_BIN)" >&2; exit 1; }
  source bench/lib.sh
  UP=$(port); BP=$(port)
  "$helper" mock-provider --listen "127.0.0.1:$UP" > "$WORK/train/mock.log" 2>&1 &
  mock=$!
  trap 'kill $mock 2>/dev/null || true' EXIT
  LLVM_PROFILE_FILE="$WORK/train/profile/%p-%m.profraw" "$instrumented" --listen "127.0.0.1:$BP" \
    --upstream "http://127.0.0.1:$UP" > "$WORK/train/bare-proxy.log" 2>&1 &
  bare=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BP") 2>/dev/null && break; sleep 0.1; done
  "$helper" bench load --url "http://127.0.0.1:$BP/v1/chat/completions" --key sk-bench --model bench \
    -c 4 --duration "${SECONDS_EACH:-5}" --warmup 0 > /dev/null
  kill -TERM "$bare"
  wait "$bare"
fi

shopt -s nullglob
raw=("$WORK"/train/profile/*.profraw)
if (( ${#raw[@]} == 0 )); then
  echo "bench/pgo.sh: the instrumented $WHAT wrote no profile (did it exit on SIGTERM?)" >&2
  exit 1
fi
"$PROFDATA" merge -o "$WORK/$WHAT.profdata" "${raw[@]}"
out="$CARGO_TARGET_DIR/$HOST/dist/$WHAT"
rm -f "$out.profdata"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/$WHAT.profdata" \
  cargo build --profile dist --locked --target "$HOST" "${build[@]}" >&2
# Beside the binary: the profile it was built with (bench/run.py reads it as the mark of a
# profile-guided build).
cp "$WORK/$WHAT.profdata" "$out.profdata"
echo "$out"
