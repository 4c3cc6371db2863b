#!/usr/bin/env bash
# Time to a first answer for a newcomer (issue 18 item 5): clones the repository, runs the
# README's first command with an empty cargo home and target directory (every crate downloaded,
# everything compiled), and polls the quickstart with a chat completion until it answers 200.
#
#   bench/fresh-clone.sh [REPO]       REPO defaults to this checkout (its committed HEAD)
#
# Where the time goes: the same clone and empty directories, then `cargo build --release -p
# switchyard --timings` (the report lands in the target directory's cargo-timings/).
#
# Prints the seconds from `git clone` to the answer. Uses /tmp/switchyard-fresh*; the gateway
# listens on 127.0.0.1:8080, so nothing else may. Run it on a quiet machine: the number is the
# machine's two cores compiling, nothing more.
set -euo pipefail
REPO="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
W=/tmp/switchyard-fresh
rm -rf "$W" "$W-cargo" "$W-target"
log="$W.log"
start=$(date +%s)
git clone -q "$REPO" "$W"
cd "$W"
export CARGO_HOME="$W-cargo" CARGO_TARGET_DIR="$W-target"
# The README's first command, as written there.
cmd=$(grep -m1 '^cargo run --release' README.md)
echo "$cmd" >&2
setsid bash -c "$cmd" > "$log" 2>&1 &
pid=$!
trap 'kill -- -$pid 2>/dev/null || true' EXIT
while true; do
  code=$(curl -s -m 2 -o "$W.answer" -w '%{http_code}' http://127.0.0.1:8080/v1/chat/completions \
    -H 'authorization: Bearer sk-switchyard-demo' -H 'content-type: application/json' \
    -d '{"model":"demo-chat","messages":[{"role":"user","content":"hi"}]}' 2>/dev/null || true)
  if [[ "$code" == 200 ]]; then
    echo "answered after $(( $(date +%s) - start )) s" >&2
    grep -E 'Finished' "$log" >&2 || true
    cat "$W.answer"; echo
    exit 0
  fi
  if ! kill -0 $pid 2>/dev/null; then
    echo "the command exited before answering:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  sleep 1
done
