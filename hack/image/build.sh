#!/usr/bin/env bash
# Build an image hermetically, without a registry or Docker, into an OCI archive in the cache:
#   ${LORAPACK_CACHE:-~/.cache/lorapack}/images/<name>-<version>-<input hash>.oci.tar
# (plus a stable link <name>-<version>.oci.tar). Steps, each cached:
#   1. a Debian 12 rootfs with Python 3.11 made by mmdebstrap, imported into podman as the base;
#   2. wheels made on the host: the runtime dependencies from requirements.lock (the lock as a
#      constraint: the dev extra never gets in), every one checked against its pin, plus the
#      project's own wheel(s), rebuilt each time;
#   3. `podman build --network=none` with WHEELS=context, so the build itself needs no network;
#      --timestamp makes layers independent of the build time.
# Podman's storage and config live under the cache (nothing in /etc or /var).
#
# Usage: hack/image/build.sh [product|testworld]   (default product: ghcr.io/lorapack/lorapack)
#        prints the archive path on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${LORAPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorapack}
IMAGES=$CACHE/images
PY=${PY:-$ROOT/.venv/bin/python}
SUITE=bookworm
MIRROR=${LORAPACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,ca-certificates

log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
hash12() { sha256sum | cut -c1-12; }

target=${1:-product}
version=$("$PY" -c "import lorapack; print(lorapack.__version__)")
case "$target" in
    product)
        name=lorapack
        ref=ghcr.io/lorapack/lorapack:$version
        containerfile=$ROOT/hack/image/Containerfile
        projects=("$ROOT")
        ;;
    testworld)
        "$0" product >/dev/null   # its base: the product image, built or reused first
        name=lorapack-testworld
        ref=localhost/lorapack-testworld:$version
        containerfile=$ROOT/testworld/images/Containerfile
        projects=("$ROOT" "$ROOT/testworld")
        ;;
    *) echo "usage: $0 [product|testworld]" >&2; exit 2 ;;
esac

"$ROOT/hack/image/install-packages.sh" image
mkdir -p "$IMAGES/tmp" "$IMAGES/podman"

# ---- podman, configured inside the cache
export CONTAINERS_CONF=$IMAGES/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$IMAGES/podman/storage.conf
cat >"$CONTAINERS_CONF" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$IMAGES/podman/storage"
runroot = "$IMAGES/podman/run"
EOF
export TMPDIR=$IMAGES/tmp

sde=1700000000

# ---- 1. base rootfs (cached by the command that makes it)
base_key=$(echo "$SUITE $MIRROR $BASE_PACKAGES v1" | hash12)
base_ref=localhost/lorapack-base:$SUITE-$base_key
rootfs=$IMAGES/rootfs-$SUITE-$base_key.tar
if [[ ! -f $rootfs ]]; then
    log "making the $SUITE rootfs ($BASE_PACKAGES) with mmdebstrap (~1-2 min)"
    start=$SECONDS
    # Fixed epoch: the rootfs' own timestamps do not depend on when it was made.
    SOURCE_DATE_EPOCH=$sde mmdebstrap --quiet --variant=essential --include="$BASE_PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "$SUITE" "$rootfs.tmp.tar" "$MIRROR"   # the .tar name tells mmdebstrap the format
    mv "$rootfs.tmp.tar" "$rootfs"
    log "rootfs made in $((SECONDS - start)) s: $(du -h "$rootfs" | cut -f1)"
fi
if ! podman image exists "$base_ref"; then
    podman import --quiet "$rootfs" "$base_ref" >/dev/null
fi

# ---- 2. wheels on the host
deps_key=$(cat "$ROOT/requirements.lock" "${projects[@]/%//pyproject.toml}" | hash12)
deps=$IMAGES/wheels/$name-deps-$deps_key
if [[ ! -f $deps/.complete ]]; then
    log "downloading/building the runtime dependency wheels from requirements.lock"
    rm -rf "$deps.tmp" && mkdir -p "$deps.tmp"
    "$PY" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$deps.tmp" \
        --constraint "$ROOT/requirements.lock" "${projects[@]}"
    rm -f "$deps.tmp"/lorapack-*.whl "$deps.tmp"/lorapack_*.whl   # ours are rebuilt every time
    "$PY" "$ROOT/hack/image/check_wheels.py" "$ROOT/requirements.lock" "$deps.tmp"
    touch "$deps.tmp/.complete"
    rm -rf "$deps" && mv "$deps.tmp" "$deps"
fi
ctx=$IMAGES/context/$name
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
cp "$deps"/*.whl "$ctx/wheels/"
# One fixed time for our wheels' zip entries and the image's layers and config: the archive
# depends only on what goes in, so an unchanged tree gives the same image digest (sde above).
# Built from a clean copy of the sources: setuptools' build/ folder in the tree can hold modules
# that no longer exist, and they would land in the wheel.
for project in "${projects[@]}"; do
    src=$ctx/src/$(basename "$project")
    mkdir -p "$src"
    tar -C "$project" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ \
        -cf - pyproject.toml $(cd "$project" && ls -d README.md operator lorapack_testworld 2>/dev/null) \
        | tar -C "$src" -xf -
    SOURCE_DATE_EPOCH=$sde "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
        --wheel-dir "$ctx/wheels" "$src"
done
rm -rf "$ctx/src"
cp "$containerfile" "$ctx/Containerfile"

# ---- 3. the image (skipped when every input is unchanged)
product_ref=ghcr.io/lorapack/lorapack:$version
from=$base_key
if [[ $target == testworld ]]; then from=$(podman image inspect --format '{{.Id}}' "$product_ref"); fi
key=$( (echo "$from"; sha256sum "$ctx/Containerfile" "$ctx"/wheels/*.whl | cut -d' ' -f1) | hash12)
archive=$IMAGES/$name-$version-$key.oci.tar
if [[ -f $archive ]]; then
    log "$ref: unchanged, cached in $archive"
else
    log "building $ref (no network)"
    start=$SECONDS
    podman build --quiet --no-cache --network=none --timestamp "$sde" \
        --build-arg BASE="$base_ref" --build-arg PRODUCT="$product_ref" --build-arg WHEELS=context --build-arg VERSION="$version" \
        -t "$ref" -f "$ctx/Containerfile" "$ctx" >/dev/null
    rm -f "$archive.tmp"
    podman image prune --force >/dev/null   # the stages' leftovers
    podman save --quiet --format oci-archive -o "$archive.tmp" "$ref"
    mv "$archive.tmp" "$archive"
    log "built in $((SECONDS - start)) s: $(du -h "$archive" | cut -f1) $(podman image inspect --format '{{.Id}}' "$ref" | cut -c1-19)"
fi
ln -sfn "$(basename "$archive")" "$IMAGES/$name-$version.oci.tar"
echo "$archive"
