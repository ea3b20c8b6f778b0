"""An adapter version's files as the agent's cache will write them, checked before any byte
is downloaded.

Called by lorapack.agent.cache on every ensure(): `plan_files(adapter)` turns the desired
state's FileSpecs into safe relative paths and refuses artifacts the engine must not be given
(no config, no weights, pickle weights where the pool does not allow them, missing URLs or
keys). Files land at paths derived from FileSpec.path after validation, never from S3 keys
or URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from lorapack.agent.cachelayout import MANIFEST_NAME
from lorapack.api import conditions
from lorapack.api.podstate import DesiredAdapter, FileSpec
from lorapack.errors import ArtifactNotFound, ArtifactRejected, InvalidSpec
from lorapack.planning.artifact import file_path_problem

__all__ = ["UNSAFE_PATH", "Planned", "plan_files", "validate_file_path"]

UNSAFE_PATH: Final = conditions.UNSAFE_PATH
_WEIGHTS_SAFE: Final = "adapter_model.safetensors"
# What vLLM falls back to when adapter_model.safetensors is missing: both are read with
# torch.load (pickle, even if restricted to weights_only).
_WEIGHTS_PICKLE: Final = ("adapter_model.bin", "adapter_model.pt")


def validate_file_path(path: str, *, adapter: str = "") -> PurePosixPath:
    """A FileSpec.path as a safe relative path, or ArtifactRejected naming what is wrong.

    Refused: empty, absolute ("/x", "C:x"), any "", "." or ".." component, backslashes (a
    path separator elsewhere), control characters, components over 255 bytes, and the
    cache's own manifest name.
    """
    who = f"adapter {adapter}: " if adapter else ""

    def refuse(why: str) -> ArtifactRejected:
        return ArtifactRejected(
            f"{who}file name {path!r} {why}; adapter files must be plain names relative to "
            "spec.source.s3.uri (rename the object in S3)",
            reason=UNSAFE_PATH,
        )

    why = file_path_problem(path)
    if why is not None:
        raise refuse(why)
    if path == MANIFEST_NAME:
        raise refuse("is reserved by lorapack")
    return PurePosixPath(path)


@dataclass(frozen=True)
class Planned:
    """One file of a version: what the desired state says of it and where it lands."""

    spec: FileSpec
    rel: PurePosixPath


def plan_files(adapter: DesiredAdapter, *, allow_pickle: bool) -> list[Planned]:
    """The files of `adapter` at their validated paths, or the error that refuses it."""
    name = adapter.adapter
    if not adapter.files:
        raise ArtifactNotFound(
            f"adapter {name} lists no files; check spec.source.s3.uri",
            reason=conditions.ARTIFACT_NOT_FOUND,
        )
    planned = [Planned(f, validate_file_path(f.path, adapter=name)) for f in adapter.files]
    _check_tree(name, planned)
    _check_weights(name, {str(p.rel) for p in planned}, allow_pickle=allow_pickle)
    _check_access(adapter, planned)
    return planned


def _check_tree(name: str, planned: list[Planned]) -> None:
    seen: set[PurePosixPath] = set()
    for p in planned:
        if p.rel in seen:
            raise ArtifactRejected(
                f"adapter {name}: file {p.spec.path!r} is listed twice",
                reason=UNSAFE_PATH,
            )
        seen.add(p.rel)
    for p in planned:  # "a" and "a/b" cannot both be created
        for parent in p.rel.parents:
            if parent in seen:
                raise ArtifactRejected(
                    f"adapter {name}: {str(parent)!r} is both a file and a folder",
                    reason=UNSAFE_PATH,
                )


def _check_weights(name: str, top: set[str], *, allow_pickle: bool) -> None:
    if "adapter_config.json" not in top:
        raise ArtifactNotFound(
            f"adapter {name} has no adapter_config.json at the top of its folder; check that "
            "spec.source.s3.uri points at the folder PEFT saved",
            reason=conditions.ARTIFACT_NOT_FOUND,
        )
    pickled = [w for w in _WEIGHTS_PICKLE if w in top]
    if _WEIGHTS_SAFE not in top and not pickled:
        raise ArtifactRejected(
            f"adapter {name} has no {_WEIGHTS_SAFE} (nor .bin / .pt weights); save the adapter "
            "with PEFT's save_pretrained",
            reason=conditions.NO_WEIGHTS,
        )
    if _WEIGHTS_SAFE not in top and not allow_pickle:
        raise ArtifactRejected(
            f"adapter {name} has only pickle weights ({', '.join(pickled)}); convert them to "
            f"{_WEIGHTS_SAFE} (save_pretrained(safe_serialization=True)), or set "
            "spec.adapters.allowPickle on the pool",
            reason=conditions.PICKLE_NOT_ALLOWED,
        )


def _check_access(adapter: DesiredAdapter, planned: list[Planned]) -> None:
    name = adapter.adapter
    if adapter.access == "presigned":
        missing = [p.spec.path for p in planned if not p.spec.url]
        if missing:
            raise InvalidSpec(f"adapter {name}: presigned access but no URL for {missing}")
    else:
        missing = [p.spec.path for p in planned if not p.spec.key]
        if adapter.s3 is None or missing:
            raise InvalidSpec(
                f"adapter {name}: pool access needs an S3 location and a key for every file "
                f"(missing keys: {missing})"
            )
