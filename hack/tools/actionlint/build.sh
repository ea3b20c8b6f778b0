#!/usr/bin/env bash
# Build, or reuse from the cache, actionlint (the GitHub Actions workflow linter) from the Go
# module proxy, the way hack/build-tools.sh builds the cluster tools: this folder's go.mod and
# go.sum pin it (`tool github.com/rhysd/actionlint/cmd/actionlint`), and the binary lands outside
# the repository in
#   ${LORAPACK_CACHE:-~/.cache/lorapack}/bin/actionlint-<version>-<go.sum hash>/actionlint
# so a warm cache makes this a no-op and a changed pin builds into a fresh folder.
#
# Usage: hack/tools/actionlint/build.sh            build if needed, print the binary's path
#        hack/tools/actionlint/build.sh --lint     build if needed, lint .github/workflows/*.yml
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CACHE=${LORAPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorapack}
VERSION=$(awk '$1 == "github.com/rhysd/actionlint" {print $2}' "$HERE/go.mod")

export GOTOOLCHAIN=local        # never download a toolchain (same rule as build-tools.sh)
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0

sum=$(sha256sum "$HERE/go.sum" | cut -c1-12)
dir="$CACHE/bin/actionlint-$VERSION-$sum"
if [[ ! -f "$dir/.complete" ]]; then
    command -v go >/dev/null || { echo "error: Go >= 1.26.6 is required (https://go.dev/doc/install)" >&2; exit 1; }
    echo "[actionlint] building $VERSION into $dir" >&2
    tmp="$dir.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    # The version stamp makes `actionlint -version` report the pin instead of "(devel)".
    (cd "$HERE" && go build -trimpath \
        -ldflags "-s -w -X github.com/rhysd/actionlint.version=$VERSION" \
        -o "$tmp/" github.com/rhysd/actionlint/cmd/actionlint)
    touch "$tmp/.complete"
    rm -rf "$dir" && mv "$tmp" "$dir"   # atomic: a half-built folder is never a cache hit
fi

if [[ "${1:-}" == "--lint" ]]; then
    cd "$ROOT"
    # actionlint's own checks (syntax, expressions, action inputs, job needs, permissions) always
    # run; the `run:` scripts are also checked by shellcheck when it is on PATH (GitHub's
    # runners have it; `apt-get install shellcheck` here).
    exec "$dir/actionlint" -no-color .github/workflows/*.yml
fi
echo "$dir/actionlint"
