#!/usr/bin/env bash
# Profiles the gateway's request path: the bench config (two backends, a virtual key, metrics)
# on the mock upstream, driven by `switchyard bench load`.
#
#   bench/profile.sh [BIN]            perf (cpu-clock, DWARF call graphs) under load at c=64:
#                                     the top of the report goes to stdout, perf.data stays in $OUT
#   bench/profile.sh --callgrind [BIN]
#                                     user-space instructions per request under callgrind (c=4):
#                                     immune to the noise of a shared machine, for before/after
#   LOAD_ARGS="--stream" bench/profile.sh ...
#                                     extra `switchyard bench load` arguments (streams here)
#   HTTP_VERSION=http2 bench/profile.sh ...
#                                     the providers' `httpVersion` (`http2`: h2c to the mock)
#   HELPERS=PATH bench/profile.sh ...
#                                     the binary that runs the mock upstream and the load generator
#                                     (default BIN): a `release` build's are unoptimised (Cargo.toml),
#                                     and a slower load changes the gateway's count per request, so
#                                     compare gateway builds with the same helpers
#   MODEL=bench-wild/mock-gpt bench/profile.sh ...
#                                     the model asked for (default `bench`; `bench-wild/...` is a
#                                     wildcard route over the same two backends)
#
# BIN defaults to the plain `dist` build (`cargo build --profile dist -p switchyard`: fat LTO);
# what ships is that profile built profile-guided by bench/pgo.sh, which prints its path. For
# before/after, build both sides with `cargo build --profile profiling -p switchyard` (no fat LTO:
# minutes instead of a quarter hour) and pass each binary as BIN.
# Needs perf (`apt-get install linux-perf`) or valgrind. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=perf
if [[ "${1:-}" == "--callgrind" ]]; then MODE=callgrind; shift; fi
BIN="${1:-${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}/dist/switchyard}}"
HELPERS="${HELPERS:-$BIN}"
OUT="${OUT:-$(mktemp -d /tmp/switchyard-profile-XXXX)}"
PY="${PYTHON:-python3}"
source bench/lib.sh
UP=$(port); GW=$(port); MET=$(port)
$PY -c "import sys; sys.path.insert(0, 'bench'); import run; from pathlib import Path; run.switchyard_config(Path('$OUT/cfg'), $UP, '${HTTP_VERSION:-auto}')"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SWITCHYARD_LOG=warn "$HELPERS" mock-provider --listen 127.0.0.1:$UP > "$OUT/mock.log" 2>&1 &
pids+=($!)
if [[ $MODE == callgrind ]]; then
  SWITCHYARD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" gateway --config "$OUT/cfg" --listen 127.0.0.1:$GW --metrics-addr 127.0.0.1:$MET > "$OUT/gateway.log" 2>&1 &
else
  SWITCHYARD_LOG=warn "$BIN" gateway --config "$OUT/cfg" --listen 127.0.0.1:$GW --metrics-addr 127.0.0.1:$MET > "$OUT/gateway.log" 2>&1 &
fi
GPID=$!
pids+=($GPID)
for _ in $(seq 1 300); do curl -sf "127.0.0.1:$GW/readyz" > /dev/null && break; sleep 0.2; done

# shellcheck disable=SC2086 # LOAD_ARGS is a list of arguments
load() { "$HELPERS" bench load --url "http://127.0.0.1:$GW/v1/chat/completions" --key sk-bench-key --model "${MODEL:-bench}" ${LOAD_ARGS:-} "$@"; }
served() { curl -s "127.0.0.1:$MET/metrics" | awk '/^switchyard_requests_total/ {s+=$2} END {print s+0}'; }

if [[ $MODE == callgrind ]]; then
  load -c 4 --duration 3 --warmup 1 > /dev/null
  callgrind_control -z "$GPID" > /dev/null
  n0=$(served)
  load -c 4 --duration 10 --warmup 0 > /dev/null
  n1=$(served)
  callgrind_control -d "$GPID" > /dev/null
  sleep 1
  ir=$(callgrind_annotate "$OUT/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "requests $((n1 - n0)), instructions $ir, per request $((ir / (n1 - n0)))"
  echo "self cost: callgrind_annotate --inclusive=no $OUT/callgrind.out.1 | head -60"
else
  load -c 64 --duration 12 --warmup 1 > "$OUT/load.json" &
  pids+=($!)
  sleep 2
  perf record -F 499 --call-graph dwarf,32768 -p "$GPID" -o "$OUT/perf.data" -- sleep 8 2> /dev/null
  wait "${pids[-1]}" || true
  echo "load: $(cat "$OUT/load.json")"
  perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 1 -g none 2> /dev/null \
    | grep '%' | grep -v '(inlined)' | cut -c1-160 | head -60
  echo "perf data: $OUT/perf.data"
fi
