"""The test artifacts (tiny Llama, PEFT adapters good and broken): where they are, what they hold.

tests/fixtures/artifacts.py, the engine contract suite, benches and the demo call
`artifacts_dir()` / `load_index()`. The files are made by hack/make_artifacts.py, which needs
torch, transformers and peft, so it runs under the vLLM venv's python (lorapack_testworld.realvllm
finds or builds that venv). They are cached outside the repository in
`$LORAPACK_CACHE/artifacts/<first 16 hex digits of the generator's sha256>/`: a changed
generator gets a fresh folder, an unchanged one is never rebuilt. `LORAPACK_ARTIFACTS_DIR`
points at a prebuilt folder instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapack_testworld.paths import REPO_ROOT
from lorapack_testworld.realvllm import vllm_python

__all__ = [
    "GENERATOR",
    "AdapterArtifact",
    "ArtifactIndex",
    "ArtifactsError",
    "ModelArtifact",
    "artifacts_dir",
    "cache_root",
    "load_index",
]

GENERATOR = REPO_ROOT / "hack" / "make_artifacts.py"


class ArtifactsError(RuntimeError):
    """The artifacts could not be found or built."""


@dataclass(frozen=True)
class AdapterArtifact:
    """One adapter folder and what the engine does with it (at --max-lora-rank 64)."""

    name: str
    path: Path
    rank: int | None
    base_model: str | None
    weight_file: str | None
    digest: str | None
    size_bytes: int
    #: "loads", "not_found" (404) or "invalid" (500) for a server with --max-lora-rank 64.
    engine_outcome_at_rank_64: str
    #: A substring of the engine's error message ("" when it loads).
    engine_detail: str
    notes: str


@dataclass(frozen=True)
class ModelArtifact:
    """The tiny base model folder (config.json, safetensors, tokenizer)."""

    path: Path
    served_name: str
    vocab_size: int
    hidden_size: int
    head_dim: int
    parameters: int


@dataclass(frozen=True)
class ArtifactIndex:
    """index.json of an artifacts folder, with absolute paths."""

    root: Path
    model: ModelArtifact
    adapters: dict[str, AdapterArtifact]

    @property
    def served_name(self) -> str:
        return self.model.served_name

    def adapter(self, name: str) -> AdapterArtifact:
        try:
            return self.adapters[name]
        except KeyError:
            raise KeyError(
                f"no test adapter named {name!r}; known: {sorted(self.adapters)}"
            ) from None

    def path(self, name: str) -> str:
        """The adapter folder as the absolute string vLLM wants."""
        return str(self.adapter(name).path)


def cache_root() -> Path:
    """$LORAPACK_CACHE, else $XDG_CACHE_HOME/lorapack, else ~/.cache/lorapack."""
    explicit = os.environ.get("LORAPACK_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorapack"


def _expected_dir() -> Path:
    digest = hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:16]
    return cache_root() / "artifacts" / digest


def artifacts_dir(*, build: bool = True) -> Path:
    """The folder holding index.json, building it with hack/make_artifacts.py when missing."""
    prebuilt = os.environ.get("LORAPACK_ARTIFACTS_DIR")
    if prebuilt:
        folder = Path(prebuilt)
        if not (folder / "index.json").is_file():
            raise ArtifactsError(
                f"LORAPACK_ARTIFACTS_DIR={prebuilt} has no index.json: point it at a folder "
                "made by hack/make_artifacts.py, or unset it"
            )
        return folder
    if not GENERATOR.is_file():
        raise ArtifactsError(
            f"cannot find {GENERATOR}: run from a lorapack checkout or set LORAPACK_ARTIFACTS_DIR"
        )
    folder = _expected_dir()
    if (folder / "index.json").is_file():
        return folder
    if not build:
        raise ArtifactsError(f"{folder} is not built: run `make artifacts`")
    result = subprocess.run(
        [str(vllm_python()), str(GENERATOR), "--out", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        check=False,
    )
    if result.returncode != 0 or not (folder / "index.json").is_file():
        raise ArtifactsError(
            f"hack/make_artifacts.py failed with exit code {result.returncode}:\n"
            f"{result.stderr[-4000:]}"
        )
    return folder


def load_index(root: Path | None = None) -> ArtifactIndex:
    """Read index.json of `root` (default: artifacts_dir()) into typed entries."""
    folder = root or artifacts_dir()
    raw: dict[str, Any] = json.loads((folder / "index.json").read_text())
    model = raw["model"]
    adapters = {
        entry["name"]: AdapterArtifact(
            name=entry["name"],
            path=folder / entry["path"],
            rank=entry["rank"],
            base_model=entry["base_model"],
            weight_file=entry["weight_file"],
            digest=entry["digest"],
            size_bytes=entry["size_bytes"],
            engine_outcome_at_rank_64=entry["engine_outcome_at_rank_64"],
            engine_detail=entry["engine_detail"],
            notes=entry["notes"],
        )
        for entry in raw["adapters"]
    }
    return ArtifactIndex(
        root=folder,
        model=ModelArtifact(
            path=folder / model["path"],
            served_name=raw["served_name"],
            vocab_size=model["vocab_size"],
            hidden_size=model["hidden_size"],
            head_dim=model["head_dim"],
            parameters=model["parameters"],
        ),
        adapters=adapters,
    )
