#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (Debian packages, a Python
# virtualenv with the official SDKs, Kubernetes binaries built from the Go module proxy), checks
# formatting and lints, then runs the Rust tests and the end-to-end suites.
#
# Downloads and builds are cached outside the repo under $SWITCHYARD_CACHE
# (default ~/.cache/switchyard), keyed by version, so a second run is fast.
set -euo pipefail

cd "$(dirname "$0")/.."
export SWITCHYARD_CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHYARD_CACHE/target}"
mkdir -p "$SWITCHYARD_CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v openssl >/dev/null || need+=(openssl)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

step "python virtualenv (official SDKs)"
venv="$SWITCHYARD_CACHE/venv-$(sha256sum tests/requirements.txt | cut -c1-12)"
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r tests/requirements.txt
fi

step "kubernetes test control plane binaries (cached; a cold build takes ~20 min)"
bash tests/k8s/build.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build -p switchyard
export SWITCHYARD_BIN="$CARGO_TARGET_DIR/debug/switchyard"

step "cargo test"
cargo test --workspace

step "end-to-end suites (pytest)"
# Includes tests/soak, the spend soak's 60-second version (about 75 s: two gateways, Redis and the
# faulty mock; tests/soak/README.md). The 10-minute one: bench/soak.sh --minutes 10.
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests "$@"
