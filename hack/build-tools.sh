#!/usr/bin/env bash
# Build, or reuse from the cache, every Go program the integration tier and the demo need:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes), etcd, kwok and
# helm. Each comes from the Go module proxy through a tiny wrapper module under hack/tools/<name>
# (go.mod + go.sum only, committed); binaries land outside the repository in
#   ${LORAPACK_CACHE:-~/.cache/lorapack}/bin/<name>-<version>-<go.sum hash>/
# so a warm cache makes this a no-op and a changed pin builds into a fresh folder.
#
# Usage: hack/build-tools.sh [--print-dir NAME]   (prints the bin folder of NAME and exits)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LORAPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorapack}

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0

export GOTOOLCHAIN=local        # never download a toolchain: Go 1.26.6 is what the pins need
export GOFLAGS=-buildvcs=false  # the wrappers are not VCS checkouts of the programs they build
export CGO_ENABLED=0            # static binaries, as upstream releases them

bin_dir() {  # bin_dir NAME VERSION -> the cache folder keyed by version and the wrapper's go.sum
    local sum
    sum=$(sha256sum "$ROOT/hack/tools/$1/go.sum" | cut -c1-12)
    echo "$CACHE/bin/$1-$2-$sum"
}

if [[ "${1:-}" == "--print-dir" ]]; then
    case "${2:-}" in
        k8s) bin_dir k8s "$K8S_VERSION" ;;
        etcd) bin_dir etcd "$ETCD_VERSION" ;;
        kwok) bin_dir kwok "$KWOK_VERSION" ;;
        helm) bin_dir helm "$HELM_VERSION" ;;
        *) echo "usage: $0 --print-dir k8s|etcd|kwok|helm" >&2; exit 2 ;;
    esac
    exit 0
fi

command -v go >/dev/null || { echo "error: Go >= 1.26.6 is required (https://go.dev/doc/install)" >&2; exit 1; }

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build NAME VERSION LDFLAGS PACKAGE... : builds PACKAGEs of the wrapper NAME into its cache folder.
build() {
    local name=$1 version=$2 ldflags=$3; shift 3
    local dir; dir=$(bin_dir "$name" "$version")
    if [[ -f "$dir/.complete" ]]; then
        log "$name $version: cached in $dir"
        return
    fi
    log "$name $version: building $* (cold builds take minutes; Kubernetes ~20-40 min on 2 cores)"
    local start=$SECONDS tmp="$dir.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$ROOT/hack/tools/$name" && go build -trimpath -tags "$TAGS" -ldflags "$ldflags" -o "$tmp/" "$@")
    # go names the binary of a module root ending in /v3 after "server"; etcd is what callers expect.
    if [[ -f "$tmp/server" ]]; then mv "$tmp/server" "$tmp/etcd"; fi
    touch "$tmp/.complete"
    rm -rf "$dir" && mv "$tmp" "$dir"   # atomic: a half-built folder is never mistaken for a cache hit
    log "$name $version: built in $((SECONDS - start)) s -> $dir"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k8s_ldflags="-s -w"
# Version stamps so /version reports a real version (helm's kubeVersion checks and kubectl's
# skew warnings read it); both packages carry the variables, as upstream's hack/lib/version.sh sets.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
done

TAGS=""
build etcd "$ETCD_VERSION" "-s -w" go.etcd.io/etcd/server/v3
build kwok "$KWOK_VERSION" "-s -w" sigs.k8s.io/kwok/cmd/kwok
build helm "$HELM_VERSION" "$helm_ldflags" helm.sh/helm/v3/cmd/helm
build seaweedfs v0.0.0-20261109003541-7506e5f91cd6 "-s -w" github.com/seaweedfs/seaweedfs/weed
TAGS="selinux,notest,grpcnotrace"
build k8s "$K8S_VERSION" "$k8s_ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
log "all tools ready under $CACHE/bin"
