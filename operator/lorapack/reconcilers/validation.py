"""Pre-flight validation of a LoraAdapter, before any pod is touched.

`validate_adapter` finds the pools that may serve the adapter, reads its S3 listing (bounded),
adapter_config.json and the safetensors header (one or two ranged GETs of at most
`planning.tensors.MAX_HEADER_BYTES`) through the `ArtifactStore` port, and runs the pure checks
of `planning.artifact` and `planning.tensors` against every candidate pool (shapes against the
pool's base config.json where the pool loop has read it). The result is either a valid
`ArtifactStatus` (what the pods will download, with its digest) or the problems that tell the
team what to change. Transient storage errors are raised (the handler retries later, keeping
the current status). Called by the LoraAdapter handler's loop; it never writes anything itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, ArtifactStatus, LoraAdapter
from lorapack.api.meta import parse_s3_uri
from lorapack.errors import AccessDenied, ArtifactNotFound, PermanentError
from lorapack.issues import Issue
from lorapack.planning.admission import candidate_pools, pool_key, served_name_conflict
from lorapack.planning.artifact import (
    SAFETENSORS_FILE,
    ArtifactFacts,
    ArtifactFile,
    check_for_pool,
    inspect_artifact,
)
from lorapack.planning.baseconfig import BaseConfig
from lorapack.planning.s3access import effective_target
from lorapack.planning.tensors import (
    FIRST_READ_BYTES,
    SafetensorsHeader,
    check_against_base,
    check_lora_tensors,
    header_length,
    parse_header,
)
from lorapack.reconcilers.ports import ArtifactStore

__all__ = ["CONFIG_FILE", "ValidationResult", "validate_adapter"]

CONFIG_FILE = "adapter_config.json"
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of checking one generation of an adapter."""

    generation: int
    artifact: ArtifactStatus | None
    problems: tuple[Issue, ...]
    pools: tuple[str, ...] = ()
    """Keys of the pools that accept the artifact."""
    shapes_checked: tuple[str, ...] = ()
    """Keys of the pools whose base config.json the tensors were checked against (a pool
    whose config arrives later calls for a new check)."""


def _refused(adapter: LoraAdapter, *issues: Issue) -> ValidationResult:
    return ValidationResult(adapter.metadata.generation, None, tuple(issues))


@dataclass
class _Read:
    """What pre-flight read from S3 for one adapter."""

    files: list[ArtifactFile]
    config: dict[str, Any] | None
    header: SafetensorsHeader | None
    header_uri: str


async def validate_adapter(
    adapter: LoraAdapter,
    pools: Sequence[BaseModelPool],
    others: Sequence[LoraAdapter],
    store: ArtifactStore,
    base_configs: Mapping[str, BaseConfig] | None = None,
) -> ValidationResult:
    """Check the adapter for the current generation (raises RetryableError on S3 hiccups).

    `base_configs` (pool key -> the pool's parsed base config.json) adds the shape checks of
    the tensors; a pool without one is checked without them."""
    candidates, refusal = candidate_pools(adapter, pools)
    if refusal is not None:
        return _refused(adapter, refusal)
    conflict = served_name_conflict(
        adapter, others, sorted({p.spec.base_model.name for p in candidates})
    )
    if conflict is not None:
        return _refused(adapter, conflict)
    read = await _read(adapter, candidates[0], store)
    if isinstance(read, Issue):
        return _refused(adapter, read)
    facts, problems = inspect_artifact(
        read.config,
        read.files,
        location=_location(adapter, candidates[0]),
        pins=adapter.spec.digests,
    )
    if not problems and facts is not None and read.config is not None:
        problems = await _header_problems(adapter, candidates[0], store, read, facts)
    if problems or facts is None:
        return _refused(adapter, *problems)

    accepted: list[BaseModelPool] = []
    first_problems: list[Issue] = []
    for pool in candidates:
        found = check_for_pool(facts, adapter.spec, pool.spec)
        base = (base_configs or {}).get(pool_key(pool))
        if not found and base is not None and read.header is not None and read.config:
            found = await asyncio.to_thread(
                check_against_base,
                read.header, read.config, base, pool.spec.base_model.name, read.header_uri,
            )  # fmt: skip
        if not found:
            accepted.append(pool)
        elif not first_problems:
            first_problems = list(found)
    if not accepted:
        return _refused(adapter, *first_problems)
    checked = tuple(pool_key(p) for p in candidates if pool_key(p) in (base_configs or {}))
    return ValidationResult(
        adapter.metadata.generation,
        _artifact(adapter, facts, read.files),
        (),
        tuple(pool_key(p) for p in accepted),
        checked if read.header is not None else (),
    )


def _location(adapter: LoraAdapter, pool: BaseModelPool) -> str:
    """Where the files are read from: the effective endpoint (None: AWS) and the URI."""
    source = adapter.spec.source.s3
    target = effective_target(
        source.endpoint, source.region, source.addressing_style,
        pool.spec.s3.endpoint, pool.spec.s3.region, pool.spec.s3.addressing_style,
    )  # fmt: skip
    return f"{target.endpoint or 'aws'} {target.region or ''} {source.uri}"


def _artifact(
    adapter: LoraAdapter, facts: ArtifactFacts, files: Sequence[ArtifactFile]
) -> ArtifactStatus:
    return ArtifactStatus(
        rank=facts.rank,
        alpha=facts.alpha,
        target_modules=list(facts.target_modules),
        size_bytes=facts.size_bytes,
        digest=facts.digest,
        base_model_name_or_path=facts.base_model_name_or_path,
        uri=adapter.spec.source.s3.uri,
        validated_generation=adapter.metadata.generation,
        objects=[
            ArtifactObject(path=f.path, size=f.size, etag=f.etag, version_id=f.version_id)
            for f in files
        ],
    )


async def _read(adapter: LoraAdapter, pool: BaseModelPool, store: ArtifactStore) -> _Read | Issue:
    """The listing and adapter_config.json, or the Issue that refuses the adapter."""
    source = adapter.spec.source.s3
    bucket, prefix = parse_s3_uri(source.uri)
    try:
        listing = await store.list_prefix(adapter, pool, bucket, prefix)
    except ArtifactNotFound as err:
        return Issue(c.ARTIFACT_NOT_FOUND, err.message)
    except AccessDenied as err:
        return Issue(c.ACCESS_DENIED, err.message)
    except PermanentError as err:  # a missing credentials Secret, a refused request...
        return Issue.of(err)
    pinned = source.version_ids
    files = [
        ArtifactFile(
            path=o.key[len(prefix) :],
            size=o.size,
            etag=o.etag,
            version_id=pinned.get(o.key[len(prefix) :], o.version_id),
        )
        for o in sorted(listing, key=lambda o: o.key)
        if o.key.startswith(prefix) and not o.key.endswith("/") and o.key != prefix
    ]
    if not files:
        return Issue(
            c.ARTIFACT_NOT_FOUND,
            f"no objects under {source.uri}: check spec.source.s3.uri (it must be the folder "
            "that holds adapter_config.json)",
        )
    config_file = next((f for f in files if f.path == CONFIG_FILE), None)
    config = None
    if config_file is not None:
        try:
            raw = await store.get_bytes(
                adapter, pool, bucket, prefix + CONFIG_FILE, config_file.version_id
            )
        except PermanentError as err:  # gone since listed, refused, larger than a config
            return Issue.of(err)
        parsed = _parse_config(raw, f"{source.uri}{CONFIG_FILE}")
        if isinstance(parsed, Issue):
            return parsed
        config = parsed
    return _Read(files, config, None, f"{source.uri}{SAFETENSORS_FILE}")


def _parse_config(raw: bytes, where: str) -> dict[str, Any] | Issue:
    fix = "re-save the adapter with PEFT's save_pretrained"
    if len(raw) > MAX_CONFIG_BYTES:
        return Issue(
            c.UNSUPPORTED_ADAPTER, f"{where} is larger than {MAX_CONFIG_BYTES} bytes: {fix}"
        )
    try:
        parsed = json.loads(raw)
    except RecursionError:
        return Issue(c.UNSUPPORTED_ADAPTER, f"{where} nests too deeply to be a PEFT config: {fix}")
    except ValueError as err:
        return Issue(c.UNSUPPORTED_ADAPTER, f"{where} is not valid JSON ({err}): {fix}")
    if not isinstance(parsed, dict):
        return Issue(
            c.UNSUPPORTED_ADAPTER,
            f"{where} is a JSON {type(parsed).__name__}, not an object: {fix}",
        )
    return parsed


async def _header_problems(
    adapter: LoraAdapter,
    pool: BaseModelPool,
    store: ArtifactStore,
    read: _Read,
    facts: ArtifactFacts,
) -> list[Issue]:
    """Reads and checks the safetensors header (integrity, PEFT layout, declared rank);
    records it in `read` for the per-pool shape checks."""
    weights = next((f for f in read.files if f.path == SAFETENSORS_FILE), None)
    if weights is None or facts.weights != "safetensors" or read.config is None:
        return []  # pickle-only adapters: no header to read (the pool decides on pickle)
    bucket, prefix = parse_s3_uri(adapter.spec.source.s3.uri)
    key, where = prefix + weights.path, read.header_uri

    async def get(start: int, length: int) -> bytes:
        return await store.get_range(adapter, pool, bucket, key, weights.version_id, start, length)

    try:
        data = await get(0, min(weights.size, FIRST_READ_BYTES)) if weights.size >= 8 else b""
        n, problem = header_length(data, weights.size, where)
        if n is None:
            return [problem] if problem else []
        if len(data) < 8 + n:
            data += await get(len(data), 8 + n - len(data))
    except PermanentError as err:
        return [Issue.of(err)]
    # ~50 ms of CPU for a 70B all-linear adapter (1,120 tensors; bench/preflight_header.py):
    # in a worker thread, so many validations at once never stall the event loop.
    header, problems = await asyncio.to_thread(
        _checked_header, data, weights.size, where, read.config
    )
    read.header = header
    return problems


def _checked_header(
    data: bytes, size: int, where: str, config: Mapping[str, Any]
) -> tuple[SafetensorsHeader | None, list[Issue]]:
    header, problems = parse_header(data, size, where)
    if header is None:
        return None, problems
    return header, check_lora_tensors(header, config, where)
