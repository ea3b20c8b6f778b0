"""Pre-flight checks of an adapter's files: what vLLM would refuse, found before any pod tries.

The operator (`reconcilers.validation`) runs `inspect_artifact` on the adapter_config.json and the
object listing it read from S3, then `check_for_pool` against each pool that could take the
adapter; `lorapack plan` runs the same checks on local adapter_config.json files. Pure: no I/O.

The rules mirror what vLLM 0.33.0 refuses when it loads an adapter (PEFTHelper.validate_legal
and the weight loader; reference/vllm-lora-contract.md §5), so a bad adapter gets a condition
saying what to change instead of a 500 from a pod, and a bad static adapter never stops a pod
from starting. Messages name the field and the fix. The adapter_config.json rules are in
lorapack.planning.peftconfig; the files, the digest and the per-pool checks are here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lorapack.api import conditions
from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS, BaseModelPoolSpec
from lorapack.api.loraadapter import LoraAdapterSpec
from lorapack.api.meta import parse_quantity
from lorapack.errors import InvalidSpec
from lorapack.issues import Issue
from lorapack.planning.peftconfig import (
    config_rank,
    config_refusals,
    config_target_modules,
    unsupported,
)
from lorapack.sizing.adapters import ALL_LINEAR, resolve_target_modules
from lorapack.sizing.catalog import lookup_model

__all__ = [
    "CONFIG_FILE",
    "MAX_ADAPTER_FILES",
    "PICKLE_FILES",
    "SAFETENSORS_FILE",
    "ArtifactFacts",
    "ArtifactFile",
    "check_for_pool",
    "file_path_problem",
    "inspect_artifact",
    "is_hub_id",
    "manifest_digest",
]

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
# vLLM falls back to these, read through torch.load(weights_only=True) (§5.1).
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt")
# Hub ids are "org/name"; PEFT records local paths (absolute, ./relative, ~) just as readily.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A plain module name, as opposed to the regular expression PEFT also accepts as a string.
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Files one adapter may have: status.artifact.objects holds at most this many, and every pod
#: downloads each one (PEFT writes two).
MAX_ADAPTER_FILES = 256


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One object under the adapter's prefix."""

    path: str
    """Name relative to the prefix, e.g. adapter_model.safetensors."""
    size: int
    etag: str = ""
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class ArtifactFacts:
    """What the files say about the adapter."""

    rank: int
    """The largest of r and the rank_pattern values (what --max-lora-rank must cover)."""
    alpha: int | None
    target_modules: tuple[str, ...]
    weights: Literal["safetensors", "pickle", "none"]
    size_bytes: int
    files: int
    base_model_name_or_path: str | None
    digest: str
    """manifest_digest of the files: changes whenever any file changes."""
    paths: tuple[str, ...] = ()
    """Every file name, sorted (spec.digests keys must be among them)."""


def manifest_digest(
    files: Iterable[ArtifactFile], *, location: str = "", pins: Mapping[str, str] | None = None
) -> str:
    """ "sha256:<hex>" over the sorted (path, size, etag, versionId) of the files, where they
    are (`location`: the effective endpoint and s3://bucket/prefix/) and the sha256 pins of
    spec.digests: names the version pods hold without reading the content.

    The digest is the pods' cache key, so everything that decides what a folder must hold is
    in it: two tenants whose listings look alike (an endpoint can list any ETag it likes, and
    a multipart ETag is checked by size only) never share a verified folder, and a folder
    verified without sha256 pins is never reused for an adapter that pins them."""
    rows: list[Any] = sorted((f.path, f.size, f.etag, f.version_id or "") for f in files)
    if location or pins:
        rows = [location, sorted((pins or {}).items()), rows]
    text = json.dumps(rows, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def is_hub_id(value: str) -> bool:
    """Whether a base_model_name_or_path looks like a Hugging Face id (org/name), not a path."""
    return bool(_HUB_ID.match(value)) and not value.startswith(".")


def file_path_problem(path: str) -> str | None:
    """Why an object name (relative to the adapter's prefix) cannot become a file in a pod's
    cache folder, or None: empty, absolute, an empty / "." / ".." component, a backslash, a
    control character, a component over 255 bytes. The agent refuses the same names
    (agent.cachefiles.validate_file_path); the pre-flight refuses them first."""
    if not path:
        return "is empty"
    if "\\" in path:
        return "contains a backslash"
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in path):
        return "contains a control character"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "is absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component"
    if any(len(p.encode()) > 255 for p in parts):
        return "has a component longer than 255 bytes"
    return None


def _file_problems(files: Sequence[ArtifactFile]) -> list[Issue]:
    if len(files) > MAX_ADAPTER_FILES:
        return [
            Issue(
                conditions.TOO_MANY_FILES,
                f"the adapter's folder holds more than {MAX_ADAPTER_FILES} objects: point "
                "spec.source.s3.uri at the folder save_pretrained wrote (adapter_config.json "
                f"and {SAFETENSORS_FILE}), not at a folder of many adapters or checkpoints",
            )
        ]
    for f in files:
        why = file_path_problem(f.path)
        if why is not None:
            return [
                Issue(
                    conditions.UNSAFE_PATH,
                    f"object name {f.path!r} under spec.source.s3.uri {why}: adapter files must "
                    "be plain names relative to the folder; rename or remove the object in S3",
                )
            ]
    return []


def _weights(files: Sequence[ArtifactFile]) -> Literal["safetensors", "pickle", "none"]:
    names = {f.path for f in files}
    if SAFETENSORS_FILE in names:
        return "safetensors"
    if any(name in names for name in PICKLE_FILES):
        return "pickle"
    return "none"


def inspect_artifact(
    config: Mapping[str, Any] | None,
    files: Sequence[ArtifactFile],
    *,
    location: str = "",
    pins: Mapping[str, str] | None = None,
) -> tuple[ArtifactFacts | None, list[Issue]]:
    """The facts of an adapter from its adapter_config.json (None: there is none) and file
    listing, and every problem vLLM would refuse it for, whatever the pool. Facts are None
    when the config does not even say the rank. `location` and `pins` go into the digest
    (manifest_digest)."""
    if config is None:
        return None, [
            Issue(
                conditions.ARTIFACT_NOT_FOUND,
                f"no {CONFIG_FILE} under the adapter's source: upload the folder PEFT's "
                f"save_pretrained writes ({CONFIG_FILE} and {SAFETENSORS_FILE})",
            )
        ]
    problems: list[Issue] = _file_problems(files)
    missing = [f for f in ("r", "lora_alpha", "target_modules") if config.get(f) is None]
    if missing:
        problems.append(
            unsupported(
                f"{CONFIG_FILE} lacks {', '.join(missing)}: vLLM requires r, lora_alpha and "
                "target_modules; re-save the adapter with PEFT's save_pretrained"
            )
        )
    rank = config_rank(config, problems) if "r" not in missing else None
    problems.extend(config_refusals(config))
    weights = _weights(files)
    if weights == "none":
        problems.append(
            Issue(
                conditions.NO_WEIGHTS,
                f"no {SAFETENSORS_FILE} (or {' / '.join(PICKLE_FILES)}) next to {CONFIG_FILE}: "
                "upload the weights file save_pretrained wrote",
            )
        )
    if rank is None:
        return None, problems
    alpha_raw = config.get("lora_alpha")
    alpha = None
    if isinstance(alpha_raw, int | float) and not isinstance(alpha_raw, bool):
        alpha = int(alpha_raw) if math.isfinite(alpha_raw) else None
    modules = config_target_modules(config, problems)
    name_or_path = config.get("base_model_name_or_path")
    facts = ArtifactFacts(
        rank=rank,
        alpha=alpha,
        target_modules=modules,
        weights=weights,
        size_bytes=sum(f.size for f in files),
        files=len(files),
        base_model_name_or_path=name_or_path if isinstance(name_or_path, str) else None,
        digest=manifest_digest(files, location=location, pins=pins),
        paths=tuple(sorted(f.path for f in files)),
    )
    return facts, problems


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _module_problem(facts: ArtifactFacts, pool: BaseModelPoolSpec) -> Issue | None:
    """Target modules the pool's model cannot take a LoRA on, when the model is known."""
    modules = facts.target_modules
    if not modules or (
        len(modules) == 1 and modules[0] != ALL_LINEAR and not _MODULE_NAME.match(modules[0])
    ):
        return None  # a regular expression: PEFT matched it against the real model
    try:
        arch = lookup_model(pool.base_model.architecture or pool.base_model.name)
    except InvalidSpec:
        return None  # not in the catalog: vLLM's own check is the only one
    try:
        resolve_target_modules(arch, modules)
    except InvalidSpec as err:
        return unsupported(f"adapter_config.json target_modules: {err.message}")
    return None


def check_for_pool(
    facts: ArtifactFacts, adapter: LoraAdapterSpec, pool: BaseModelPoolSpec
) -> list[Issue]:
    """Whether one pool can serve the adapter: rank, declared rank, pickle, size, digests,
    target modules and base model. Empty when it can."""
    problems = _engine_problems(facts, adapter, pool)
    problems += _size_problems(facts, pool)
    present = set(facts.paths)
    for name in sorted(adapter.digests):
        if name not in present:
            problems.append(
                Issue(
                    conditions.DIGEST_MISMATCH,
                    f"spec.digests names {name}, which is not among the adapter's files "
                    f"({', '.join(facts.paths) or 'none'}): fix the key or upload the file",
                )
            )
    module_problem = _module_problem(facts, pool)
    if module_problem is not None:
        problems.append(module_problem)
    base_problem = _base_model_problem(facts, pool)
    if base_problem is not None:
        problems.append(base_problem)
    return problems


def _engine_problems(
    facts: ArtifactFacts, adapter: LoraAdapterSpec, pool: BaseModelPoolSpec
) -> list[Issue]:
    """The rank against the engine's limit and spec.rank, and pickle weights."""
    problems: list[Issue] = []
    limit = pool.engine.max_lora_rank
    if facts.rank > limit:
        wanted = next((r for r in ALLOWED_LORA_RANKS if r >= facts.rank), ALLOWED_LORA_RANKS[-1])
        problems.append(
            Issue(
                conditions.RANK_TOO_LARGE,
                f"adapter rank {facts.rank} is above the pool's engine.maxLoraRank {limit}: "
                f"retrain with r <= {limit} or use a pool with maxLoraRank {wanted}",
            )
        )
    if adapter.rank is not None and adapter.rank != facts.rank:
        problems.append(
            Issue(
                conditions.RANK_MISMATCH,
                f"spec.rank is {adapter.rank} but {CONFIG_FILE} says {facts.rank} (the largest "
                "of r and rank_pattern): fix spec.rank, or point spec.source at the adapter "
                "you meant",
            )
        )
    if facts.weights == "pickle" and not pool.adapters.allow_pickle:
        problems.append(
            Issue(
                conditions.PICKLE_NOT_ALLOWED,
                f"the weights are only in pickle files ({' / '.join(PICKLE_FILES)}), which the "
                f"pool refuses: re-save with save_pretrained(safe_serialization=True) to get "
                f"{SAFETENSORS_FILE}, or ask the platform team for spec.adapters.allowPickle",
            )
        )
    return problems


def _size_problems(facts: ArtifactFacts, pool: BaseModelPoolSpec) -> list[Issue]:
    """The files' size against spec.adapters.maxAdapterSize and the pod's adapter cache."""
    problems: list[Issue] = []
    cache = parse_quantity(pool.adapters.cache_size)
    if pool.adapters.max_adapter_size is not None:
        largest = parse_quantity(pool.adapters.max_adapter_size)
        if facts.size_bytes > largest:
            problems.append(
                Issue(
                    conditions.ADAPTER_TOO_LARGE,
                    f"the adapter's files take {_size_text(facts.size_bytes)}, above the pool's "
                    f"spec.adapters.maxAdapterSize {pool.adapters.max_adapter_size}: save it in "
                    "bfloat16 or with a lower rank, or ask the platform team to raise the limit",
                )
            )
    if facts.size_bytes > cache:
        problems.append(
            Issue(
                conditions.ADAPTER_TOO_LARGE,
                f"the adapter's files take {_size_text(facts.size_bytes)}, more than a pod's "
                f"adapter cache (spec.adapters.cacheSize {pool.adapters.cache_size}): save it in "
                "bfloat16 or with a lower rank, or ask the platform team for a larger cacheSize",
            )
        )
    return problems


def _base_model_problem(facts: ArtifactFacts, pool: BaseModelPoolSpec) -> Issue | None:
    """The base model the config records, when both it and the pool's are hub ids that differ
    (a local path says nothing about which model it was)."""
    recorded = facts.base_model_name_or_path
    served = pool.base_model.name
    if (
        recorded
        and is_hub_id(recorded)
        and is_hub_id(served)
        and recorded.lower() != served.lower()
    ):
        return Issue(
            conditions.BASE_MODEL_MISMATCH,
            f"{CONFIG_FILE} says the adapter was trained on {recorded}, but the pool serves "
            f"{served}: fix spec.baseModel to the model it was trained on, or retrain it on "
            f"{served}",
        )
    return None
