#!/usr/bin/env bash
# Runs a gateway through the work it does in production, for the tools that learn from a run:
# bench/hot-symbols.sh (the gateway under callgrind) and bench/pgo.sh (an instrumented build).
#
#   bench/train.sh OUT BIN [WRAPPER...]
#
# Starts BIN's mock provider, then BIN's gateway twice (OpenAI providers over h2c, then HTTP/1.1),
# each as `WRAPPER... BIN gateway ...`, through start, whole and streamed requests on the realistic
# path (bench/run.py's config: a virtual key with a rate limit, a two-backend route), the Anthropic
# translation, 100 held streams, a metrics scrape and a reload; then stops it with SIGTERM and
# waits, so that whatever the wrapper or the binary writes at exit is written. The gateway runs
# with LLVM_PROFILE_FILE=OUT/profile/%p-%m.profraw and the helpers (mock, load) with a path under
# OUT/discard, so an instrumented BIN profiles the gateway alone. Everything on 127.0.0.1.
# SECONDS_EACH (default 3) sets each load's length.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$1"; BIN="$2"; shift 2
WRAPPER=("$@")
SECS="${SECONDS_EACH:-3}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT/profile" "$OUT/discard"
export LLVM_PROFILE_FILE="$OUT/discard/%p.profraw"
source bench/lib.sh
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP=$(port)
SWITCHYARD_LOG=warn "$BIN" mock-provider --listen "127.0.0.1:$UP" > "$OUT/mock.log" 2>&1 &
pids+=($!)
for version in http2 auto; do
  GW=$(port); MET=$(port); cfg="$OUT/cfg-$version"
  $PY -c "import sys; sys.path.insert(0, 'bench'); import run; from pathlib import Path; run.switchyard_config(Path('$cfg'), $UP, '$version')"
  LLVM_PROFILE_FILE="$OUT/profile/%p-%m.profraw" SWITCHYARD_LOG=warn "${WRAPPER[@]}" \
    "$BIN" gateway --config "$cfg" --listen "127.0.0.1:$GW" --metrics-addr "127.0.0.1:$MET" > "$OUT/gateway-$version.log" 2>&1 &
  gpid=$!
  pids+=($gpid)
  for _ in $(seq 1 600); do curl -sf "127.0.0.1:$GW/readyz" > /dev/null && break; sleep 0.2; done
  load() { "$BIN" bench load --url "http://127.0.0.1:$GW/v1/chat/completions" --key sk-bench-key "$@" > /dev/null; }
  load --model bench -c 4 --duration "$SECS" --warmup 0
  load --model bench -c 4 --duration "$SECS" --warmup 0 --stream
  load --model bench-anthropic -c 2 --duration 2 --warmup 0 --stream
  load --model bench-anthropic -c 2 --duration 2 --warmup 0
  "$BIN" bench streams --url "http://127.0.0.1:$GW/v1/chat/completions" --key sk-bench-key --model bench-hold \
    --stream --count 100 --limit 60 --pid "$gpid" > /dev/null
  curl -s "127.0.0.1:$MET/metrics" > /dev/null
  sed -i 's/limits: {rpm: 100000000}/limits: {rpm: 100000001}/' "$cfg/bench.yaml"
  grep -q 'rpm: 100000001' "$cfg/bench.yaml" || { echo "the reload edit did not apply to $cfg/bench.yaml" >&2; exit 1; }
  sleep 3
  load --model bench -c 4 --duration 2 --warmup 0
  kill -TERM "$gpid"
  wait "$gpid" || true
done
