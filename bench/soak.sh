#!/usr/bin/env bash
# The long soak (tests/soak/soak.py): two gateways sharing a redis-server in front of the mock
# provider with faults mixed in, for N minutes; writes the per-key ledger table and the checks to
# bench/results/soak.md. Exits non-zero when a check fails.
#
#   bench/soak.sh                 10 minutes
#   bench/soak.sh --minutes 3
#
# Uses $SWITCHYARD_BIN when set, else builds the debug binary; Python from $SWITCHYARD_PYTHON,
# else the test venv scripts/test.sh makes, else python3 (needs httpx).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    *) echo "usage: bench/soak.sh [--minutes N]" >&2; exit 2 ;;
  esac
done
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
  cargo build -p switchyard
  export SWITCHYARD_BIN="$CARGO_TARGET_DIR/debug/switchyard"
fi
PYTHON="${SWITCHYARD_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  venv="$CACHE/venv-$(sha256sum tests/requirements.txt | cut -c1-12)"
  if [[ -x "$venv/bin/python" ]]; then PYTHON="$venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" tests/soak/soak.py --minutes "$MINUTES" --out bench/results/soak.md
