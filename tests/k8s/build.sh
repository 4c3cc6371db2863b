#!/usr/bin/env bash
# Build (once) and cache the binaries of a real Kubernetes control plane for tests:
# etcd, kube-apiserver, kube-controller-manager, kubectl and helm, all from source
# through the Go module proxy (no prebuilt binary can be downloaded here).
#
#   tests/k8s/build.sh            # build what is missing, print the bin dir on the last line
#   tests/k8s/build.sh --print-bin-dir   # only print the bin dir
#
# Layout: ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s/
#   <K8S_VERSION>/bin/{etcd,kube-apiserver,kube-controller-manager,kubectl,helm}
#   <K8S_VERSION>/bin/<name>.version     stamp: the exact version a binary was built from
#   <K8S_VERSION>/work/{etcd,kubernetes,helm}   throwaway build modules
#   gomodcache/ gocache/                  Go module and build caches (shared across versions)
#
# Idempotent: a binary whose stamp matches is skipped, so a rerun is instant.
# Override versions with K8S_VERSION, ETCD_VERSION, HELM_VERSION.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

CACHE_ROOT="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s"
VDIR="$CACHE_ROOT/$K8S_VERSION"
BIN="$VDIR/bin"
WORK="$VDIR/work"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$BIN"
  exit 0
fi

log() { echo "[k8s-build] $*" >&2; }
die() { echo "[k8s-build] ERROR: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || { [[ -x /usr/local/go/bin/go ]] && export PATH="/usr/local/go/bin:$PATH"; }
command -v go >/dev/null 2>&1 || die "no Go toolchain found (need go >= 1.26 on PATH or /usr/local/go/bin/go)"

export GOMODCACHE="$CACHE_ROOT/gomodcache"
export GOCACHE="$CACHE_ROOT/gocache"
export GOTOOLCHAIN=local
export GOWORK=off
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
export GOMAXPROCS="${GOMAXPROCS:-2}"
NICE=(nice -n "${BUILD_NICE:-15}")
mkdir -p "$BIN" "$WORK" "$GOMODCACHE" "$GOCACHE"

log "go: $(go version) | GOPROXY=$(go env GOPROXY) | cache: $CACHE_ROOT"
log "versions: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION"

# A binary is up to date when it exists and its stamp names the wanted version.
have() { [[ -x "$BIN/$1" && "$(cat "$BIN/$1.version" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" > "$BIN/$1.version"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# Fail early and clearly if the proxy does not serve a version.
check_served() { # module version
  local out
  if ! out=$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "$1@$2" 2>&1); then
    die "the Go module proxy does not serve $1@$2: $out"
  fi
  printf '%s\n' "$out"
}

# ---------------------------------------------------------------------------- etcd
build_etcd() {
  if have etcd "$ETCD_VERSION"; then log "etcd $ETCD_VERSION: cached, skipped"; return; fi
  local t0; t0=$(date +%s)
  log "etcd $ETCD_VERSION: building (own module calling etcdmain.Main)"
  check_served go.etcd.io/etcd/server/v3 "$ETCD_VERSION" >/dev/null
  local d="$WORK/etcd"
  rm -rf "$d" && mkdir -p "$d"
  cat > "$d/main.go" <<'EOF'
// Command etcd: the upstream etcd server, built through the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (
    cd "$d"
    go mod init switchyard.local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go mod tidy >&2
    "${NICE[@]}" go build -trimpath -p 2 -ldflags="-s -w" -o "$BIN/etcd.tmp" . >&2
  ) || die "etcd build failed (see output above)"
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  stamp etcd "$ETCD_VERSION"
  log "etcd $ETCD_VERSION: built in $(elapsed "$t0") -> $BIN/etcd ($("$BIN/etcd" --version | head -1))"
}

# ---------------------------------------------------------------------- kubernetes
build_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kubectl; do
    if have "$b" "$K8S_VERSION"; then log "$b $K8S_VERSION: cached, skipped"; else need+=("$b"); fi
  done
  [[ ${#need[@]} -eq 0 ]] && return
  local t0; t0=$(date +%s)
  log "kubernetes $K8S_VERSION: building ${need[*]} (replace-staging-modules workaround)"

  # The release's own go.mod: its staging replace list, go and godebug lines.
  local info gomod
  info=$(check_served k8s.io/kubernetes "$K8S_VERSION")
  gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$gomod" ]] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION"
  local staging_ver="v0.${K8S_VERSION#v1.}"
  local staging
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod")
  [[ -n "$staging" ]] || die "no staging replace directives found in $gomod"
  local goline godebug
  goline=$(grep -m1 '^go ' "$gomod" || true)
  godebug=$(grep -m1 '^godebug' "$gomod" || true)
  log "kubernetes: $(echo "$staging" | wc -l) staging modules -> $staging_ver; '$goline'; '$godebug'"

  local d="$WORK/kubernetes"
  rm -rf "$d" && mkdir -p "$d"
  {
    echo "module switchyard.local/kubernetes"
    echo
    echo "${goline:-go 1.26.0}"
    [[ -n "$godebug" ]] && { echo; echo "$godebug"; }
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    while read -r m; do echo "	$m => $m $staging_ver"; done <<<"$staging"
    echo ")"
  } > "$d/go.mod"

  local pkgs=() b
  for b in "${need[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done

  local major="${K8S_VERSION#v}"; major="${major%%.*}"
  local minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done

  (
    cd "$d"
    # Resolve every requirement of the three commands into go.mod/go.sum.
    go get "${pkgs[@]/%/@$K8S_VERSION}" >&2
    mkdir -p "$BIN/.tmp"
    "${NICE[@]}" go build -trimpath -p 2 -tags=notest,grpcnotrace -ldflags="$ld" -o "$BIN/.tmp/" "${pkgs[@]}" >&2
  ) || die "kubernetes build failed (see output above)"
  for b in "${need[@]}"; do
    mv "$BIN/.tmp/$b" "$BIN/$b"
    stamp "$b" "$K8S_VERSION"
  done
  rmdir "$BIN/.tmp" 2>/dev/null || true
  log "kubernetes $K8S_VERSION: built ${need[*]} in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------- helm
build_helm() {
  if have helm "$HELM_VERSION"; then log "helm $HELM_VERSION: cached, skipped"; return; fi
  local t0; t0=$(date +%s)
  local major="${HELM_VERSION#v}"; major="${major%%.*}"
  local mod="helm.sh/helm/v$major"
  log "helm $HELM_VERSION: building $mod/cmd/helm"
  check_served "$mod" "$HELM_VERSION" >/dev/null
  local d="$WORK/helm"
  rm -rf "$d" && mkdir -p "$d"
  (
    cd "$d"
    GOBIN="$d/bin" "${NICE[@]}" go install -trimpath \
      -ldflags="-s -w -X $mod/internal/version.version=$HELM_VERSION -X $mod/internal/version.gitTreeState=clean" \
      "$mod/cmd/helm@$HELM_VERSION" >&2
  ) || die "helm build failed (see output above)"
  mv "$d/bin/helm" "$BIN/helm"
  stamp helm "$HELM_VERSION"
  log "helm $HELM_VERSION: built in $(elapsed "$t0") -> $("$BIN/helm" version --short 2>/dev/null || true)"
}

T0=$(date +%s)
build_etcd
build_helm
build_kubernetes
for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b missing after build"
done
log "all binaries present in $BIN (total $(elapsed "$T0"))"
echo "$BIN"
