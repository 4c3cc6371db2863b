#!/usr/bin/env bash
# Writes crates/switchyard/hot-symbols.txt: the functions the gateway runs, hottest first, as the
# linker's symbol names. `crates/switchyard/build.rs` hands the file to the linker (LLD's
# `--symbol-ordering-file`), which places those functions together at the start of `.text`:
# the code a gateway runs then sits in a few MiB of the binary instead of being spread over all
# of its 27 MB, and the kernel, which maps a file's pages 64 KiB at a time around each fault,
# keeps that much less of the binary resident (bench/results/profiling.md, "Hot code together").
#
#   bench/hot-symbols.sh [BIN]     BIN: the `dist` build (default: $CARGO_TARGET_DIR/dist/switchyard)
#
# Runs BIN's gateway under callgrind (valgrind) through start, whole and streamed requests over
# HTTP/1.1 and h2c upstreams, the Anthropic translation, held streams, a metrics scrape and a
# reload. Rerun after a dependency update or a large change: a symbol the file names that the
# binary lacks is skipped, and a function missing from the file is only placed after the others.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}/dist/switchyard}"
OUT="${OUT:-$(mktemp -d /tmp/switchyard-hot-XXXX)}"
PY="${PYTHON:-python3}"
port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP=$(port)
SWITCHYARD_LOG=warn "$BIN" mock-provider --listen "127.0.0.1:$UP" > "$OUT/mock.log" 2>&1 &
pids+=($!)
for version in http2 auto; do
  GW=$(port); MET=$(port); cfg="$OUT/cfg-$version"
  $PY -c "import sys; sys.path.insert(0, 'bench'); import run; from pathlib import Path; run.switchyard_config(Path('$cfg'), $UP, '$version')"
  SWITCHYARD_LOG=warn valgrind --tool=callgrind --demangle=no --callgrind-out-file="$OUT/callgrind.$version" \
    "$BIN" gateway --config "$cfg" --listen "127.0.0.1:$GW" --metrics-addr "127.0.0.1:$MET" > "$OUT/gateway-$version.log" 2>&1 &
  gpid=$!
  pids+=($gpid)
  for _ in $(seq 1 600); do curl -sf "127.0.0.1:$GW/readyz" > /dev/null && break; sleep 0.2; done
  load() { "$BIN" bench load --url "http://127.0.0.1:$GW/v1/chat/completions" --key sk-bench-key "$@" > /dev/null; }
  load --model bench -c 4 --duration 3 --warmup 0
  load --model bench -c 4 --duration 3 --warmup 0 --stream
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

# Each function's own instructions (calls excluded), summed over both runs; symbols of this
# binary only (not libc's), hottest first.
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' > "$OUT/defined"
$PY - "$OUT/defined" "$OUT"/callgrind.* > crates/switchyard/hot-symbols.txt <<'PYEOF'
import collections, re, sys
defined = set(open(sys.argv[1]).read().split())
cost = collections.Counter()
for path in sys.argv[2:]:
    names, fn, call = {}, None, False
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m and m.group(2):
                names[m.group(1)] = re.sub(r"'\d+$", "", m.group(2))
            if line.startswith("fn=") and m:
                fn, call = names.get(m.group(1)), False
                cost[fn] += 0
        elif line.startswith("calls="):
            call = True  # the next cost line is the call's, not this function's
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if call:
                call = False
            elif fn and len(parts) >= 2 and parts[1].isdigit():
                cost[fn] += int(parts[1])
for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])):
    if name in defined:
        print(name)
PYEOF
echo "$(wc -l < crates/switchyard/hot-symbols.txt) symbols written to crates/switchyard/hot-symbols.txt (callgrind files in $OUT)"
