"""Pre-flight validation of a LoraAdapter, before any pod is touched.

`validate_adapter` finds the pools that may serve the adapter, reads its S3 listing and
adapter_config.json through the `ArtifactStore` port, and runs the pure checks of
`planning.artifact` against every candidate pool. The result is either a valid `ArtifactStatus`
(what the pods will download, with its digest) or the problems that tell the team what to
change. Transient storage errors are raised (the handler retries later, keeping the current
status). Called by the LoraAdapter handler's loop; it never writes anything itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, ArtifactStatus, LoraAdapter
from lorapack.api.meta import parse_s3_uri
from lorapack.errors import AccessDenied, ArtifactNotFound, PermanentError
from lorapack.issues import Issue
from lorapack.planning.admission import candidate_pools, pool_key, served_name_conflict
from lorapack.planning.artifact import ArtifactFile, check_for_pool, inspect_artifact
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


def _refused(adapter: LoraAdapter, *issues: Issue) -> ValidationResult:
    return ValidationResult(adapter.metadata.generation, None, tuple(issues))


async def validate_adapter(
    adapter: LoraAdapter,
    pools: Sequence[BaseModelPool],
    others: Sequence[LoraAdapter],
    store: ArtifactStore,
) -> ValidationResult:
    """Check the adapter for the current generation (raises RetryableError on S3 hiccups)."""
    candidates, refusal = candidate_pools(adapter, pools)
    if refusal is not None:
        return _refused(adapter, refusal)
    conflict = served_name_conflict(
        adapter, others, sorted({p.spec.base_model.name for p in candidates})
    )
    if conflict is not None:
        return _refused(adapter, conflict)

    source = adapter.spec.source.s3
    bucket, prefix = parse_s3_uri(source.uri)
    first = candidates[0]
    try:
        listing = await store.list_prefix(adapter, first, bucket, prefix)
    except ArtifactNotFound as err:
        return _refused(adapter, Issue(c.ARTIFACT_NOT_FOUND, err.message))
    except AccessDenied as err:
        return _refused(adapter, Issue(c.ACCESS_DENIED, err.message))
    except PermanentError as err:  # a missing credentials Secret, a refused request...
        return _refused(adapter, Issue.of(err))

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
        return _refused(
            adapter,
            Issue(
                c.ARTIFACT_NOT_FOUND,
                f"no objects under {source.uri}: check spec.source.s3.uri (it must be the folder "
                "that holds adapter_config.json)",
            ),
        )
    config = None
    config_file = next((f for f in files if f.path == CONFIG_FILE), None)
    if config_file is not None:
        try:
            raw = await store.get_bytes(
                adapter, first, bucket, prefix + CONFIG_FILE, config_file.version_id
            )
        except (ArtifactNotFound, AccessDenied) as err:
            return _refused(adapter, Issue.of(err))
        try:
            parsed = json.loads(raw[:MAX_CONFIG_BYTES])
        except ValueError as err:
            return _refused(
                adapter,
                Issue(
                    c.UNSUPPORTED_ADAPTER,
                    f"{source.uri}{CONFIG_FILE} is not valid JSON ({err}): re-save the adapter "
                    "with PEFT's save_pretrained",
                ),
            )
        config = parsed if isinstance(parsed, dict) else None

    facts, problems = inspect_artifact(config, files)
    if problems or facts is None:
        return _refused(adapter, *(p for p in problems))

    accepted: list[BaseModelPool] = []
    first_problems: list[Issue] = []
    for pool in candidates:
        found = check_for_pool(facts, adapter.spec, pool.spec)
        if not found:
            accepted.append(pool)
        elif not first_problems:
            first_problems = [p for p in found]
    if not accepted:
        return _refused(adapter, *first_problems)

    artifact = ArtifactStatus(
        rank=facts.rank,
        alpha=facts.alpha,
        target_modules=list(facts.target_modules),
        size_bytes=facts.size_bytes,
        digest=facts.digest,
        base_model_name_or_path=facts.base_model_name_or_path,
        uri=source.uri,
        validated_generation=adapter.metadata.generation,
        objects=[
            ArtifactObject(path=f.path, size=f.size, etag=f.etag, version_id=f.version_id)
            for f in files
        ],
    )
    return ValidationResult(
        adapter.metadata.generation, artifact, (), tuple(pool_key(p) for p in accepted)
    )
