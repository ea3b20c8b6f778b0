#!/usr/bin/env bash
# Build, or reuse from the cache, the Go programs of the real-node tier: kubelet and kube-proxy
# (k8s.io/kubernetes, through the wrapper module hack/tools/k8s-node, which pins every staging
# module as hack/tools/k8s does for the control plane) and containerd + ctr (containerd 2.x,
# through hack/tools/containerd). runc, the CNI plugins and iptables come from Debian
# (hack/realnode/install-packages.sh). Binaries land in
#   ${LORAPACK_CACHE:-~/.cache/lorapack}/bin/<name>-<version>-<go.sum hash>/
# exactly like hack/build-tools.sh, so a warm cache makes this a no-op.
#
# Usage: hack/realnode/build-node.sh [--print-dir k8s-node|containerd]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${LORAPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorapack}

K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.4.2

export GOTOOLCHAIN=local        # never download a toolchain
export GOFLAGS=-buildvcs=false  # the wrappers are not VCS checkouts of the programs they build
export CGO_ENABLED=0            # static binaries; containerd's cgo-only snapshotters are tagged out

bin_dir() {  # bin_dir NAME VERSION -> the cache folder keyed by version and the wrapper's go.sum
    local sum
    sum=$(sha256sum "$ROOT/hack/tools/$1/go.sum" | cut -c1-12)
    echo "$CACHE/bin/$1-$2-$sum"
}

if [[ "${1:-}" == "--print-dir" ]]; then
    case "${2:-}" in
        k8s-node) bin_dir k8s-node "$K8S_VERSION" ;;
        containerd) bin_dir containerd "$CONTAINERD_VERSION" ;;
        *) echo "usage: $0 --print-dir k8s-node|containerd" >&2; exit 2 ;;
    esac
    exit 0
fi

command -v go >/dev/null || { echo "error: Go >= 1.26.6 is required (https://go.dev/doc/install)" >&2; exit 1; }

log() { printf '[build-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build NAME VERSION TAGS LDFLAGS PACKAGE... : builds PACKAGEs of the wrapper NAME into its folder.
build() {
    local name=$1 version=$2 tags=$3 ldflags=$4; shift 4
    local dir; dir=$(bin_dir "$name" "$version")
    if [[ -f "$dir/.complete" ]]; then
        log "$name $version: cached in $dir"
        return
    fi
    log "$name $version: building $* (cold: minutes on 2 cores)"
    local start=$SECONDS tmp="$dir.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$ROOT/hack/tools/$name" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp/" "$@")
    echo "$((SECONDS - start))" >"$tmp/.build-seconds"
    touch "$tmp/.complete"
    rm -rf "$dir" && mv "$tmp" "$dir"   # atomic: a half-built folder is never a cache hit
    log "$name $version: built in $((SECONDS - start)) s -> $dir"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done
ctd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"

build containerd "$CONTAINERD_VERSION" "no_btrfs,no_devmapper,no_zfs,no_aufs" "$ctd_ldflags" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
build k8s-node "$K8S_VERSION" "selinux,notest,grpcnotrace" "$k8s_ldflags" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy
log "node tools ready under $CACHE/bin"
