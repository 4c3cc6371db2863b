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
# Runs BIN's gateway under callgrind (valgrind) through bench/train.sh's work: start, whole and
# streamed requests over HTTP/1.1 and h2c upstreams, the Anthropic translation, held streams, a
# metrics scrape and a reload. Rerun after a dependency update or a large change: a symbol the
# file names that the binary lacks is skipped, and a function missing from the file is only
# placed after the others.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}/dist/switchyard}"
OUT="${OUT:-$(mktemp -d /tmp/switchyard-hot-XXXX)}"
PY="${PYTHON:-python3}"
bench/train.sh "$OUT" "$BIN" valgrind --tool=callgrind --demangle=no --callgrind-out-file="$OUT/callgrind.%p"

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
