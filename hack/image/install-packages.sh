#!/usr/bin/env bash
# Install, or find already installed, the Debian packages the image build and the real-node tier
# use: mmdebstrap (the base rootfs), podman/buildah/skopeo/umoci (build and save an OCI archive
# without a registry or Docker), runc (the runtime; crun fails on this hybrid cgroup layout),
# catatonit (the pause image's init); for the node: the CNI plugins, iptables and conntrack
# (kube-proxy). CI starts from a fresh machine, so `make image` / `make test-realnode` call this.
# Versions are Debian 12's (checked: podman 4.3.1, buildah 1.28.2, runc 1.1.5, CNI plugins 1.1.1).
#
# Usage: hack/image/install-packages.sh image|node|all
set -euo pipefail

image_pkgs=(mmdebstrap podman buildah skopeo umoci runc uidmap fuse-overlayfs catatonit conmon)
node_pkgs=(runc containernetworking-plugins iptables conntrack catatonit)

case "${1:-all}" in
    image) pkgs=("${image_pkgs[@]}") ;;
    node) pkgs=("${node_pkgs[@]}") ;;
    all) pkgs=("${image_pkgs[@]}" "${node_pkgs[@]}") ;;
    *) echo "usage: $0 image|node|all" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
command -v apt-get >/dev/null || { echo "error: needs Debian/Ubuntu apt to install: ${missing[*]}" >&2; exit 1; }
sudo=""
if ((EUID != 0)); then sudo=sudo; fi
echo "[install-packages] apt-get install ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
