#!/usr/bin/env bash
# Benchmarks Switchyard against the upstream directly, against the LiteLLM proxy and against the
# lean anchors (nginx proxy_pass and bench/bare-proxy, a bare axum + reqwest proxy), in one
# interleaved run on this machine: writes bench/results/<date>.md, latest.md and latency.png.
#
#   bench/run.sh            full run (about 13 minutes)
#   bench/run.sh --quick    smoke run (about 2 minutes)
#   (each after bench/pgo.sh's builds, about half an hour, unless SWITCHYARD_BIN and BARE_PROXY_BIN
#   name binaries)
#   bench/run.sh --no-litellm | --only anchors,load,stream | --rounds N | --duration S
#
# Needs wrk and nginx (Debian: `apt-get install wrk nginx`) and llvm-profdata of rustc's LLVM
# (bench/pgo.sh says where it looks). Installs what else it needs under
# ${SWITCHYARD_CACHE:-~/.cache/switchyard}: a venv with matplotlib for the plot, and LiteLLM
# (pinned) in a venv of its own. Builds what ships (bench/pgo.sh: the `dist` profile, fat LTO,
# profile-guided; about half an hour on 2 cores) unless SWITCHYARD_BIN names a binary, and the
# bare proxy (its own workspace) the same way unless BARE_PROXY_BIN does, so the anchors compare
# code built alike.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
# The newest LiteLLM whose `[proxy]` extra installs from PyPI as published (later releases pin
# litellm-proxy-extras versions that are not on the index).
LITELLM_VERSION="${LITELLM_VERSION:-1.106.12}"

if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
  SWITCHYARD_BIN="$(bench/pgo.sh switchyard)"
  export SWITCHYARD_BIN
fi
if [[ -z "${BARE_PROXY_BIN:-}" ]]; then
  BARE_PROXY_BIN="$(bench/pgo.sh bare-proxy)"
  export BARE_PROXY_BIN
fi

if [[ ! -x "$CACHE/bench-venv/bin/python" ]]; then
  python3 -m venv "$CACHE/bench-venv"
fi
"$CACHE/bench-venv/bin/python" -c 'import matplotlib' 2>/dev/null \
  || "$CACHE/bench-venv/bin/pip" install --quiet 'matplotlib==3.11.2'

if [[ " $* " != *" --no-litellm "* ]]; then
  if [[ ! -x "$CACHE/litellm-venv/bin/python" ]]; then
    python3 -m venv "$CACHE/litellm-venv"
  fi
  have="$("$CACHE/litellm-venv/bin/python" -c 'import prometheus_client, importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
  if [[ "$have" != "$LITELLM_VERSION" ]]; then
    # prometheus_client: LiteLLM's metrics callback needs it and its extras do not pull it in.
    "$CACHE/litellm-venv/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION" 'prometheus_client==0.26.0'
  fi
  export LITELLM_BIN="$CACHE/litellm-venv/bin/litellm"
fi

exec "$CACHE/bench-venv/bin/python" bench/run.py "$@"
