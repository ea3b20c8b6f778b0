"""Which pools an adapter may use, and why none when none: refusal reasons and messages.

An adapter may use a pool that serves its base model, allows its namespace, takes its rank
(engine.maxLoraRank) and size, and is the pool it pins, if any; checks run in the order a
person would fix them, and a refusal names the reason (lorapack.api.conditions) and what to
change. Called by the placement planner (`planning.planner` for pass 1, `planning.keeping`
and `planning.placing`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lorapack.api import conditions
from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS
from lorapack.issues import Issue
from lorapack.planning.admission import admit
from lorapack.planning.s3access import location_issue
from lorapack.planning.snapshot import AdapterView, PoolView

__all__ = ["Eligible", "accepts", "eligible", "pools_full", "size_limit", "too_large"]


@dataclass(frozen=True, slots=True)
class Eligible:
    """The pools adapters of one kind may use (see planner.PlannerBase._describe_adapters)."""

    keys: tuple[str, ...]
    limits: tuple[float, ...]
    """Largest adapter each pool accepts, in bytes."""
    largest: float


def eligible(
    adapter: AdapterView,
    namespace: str,
    pools_by_key: Mapping[str, PoolView],
    by_model: Mapping[str, Sequence[PoolView]],
) -> Eligible | Issue:
    """Pools the adapter may use, or why none; checks in the order a person would fix them.
    `pools_by_key` holds every pool by key, `by_model` the pools serving each base model."""
    base = adapter.base_model
    allowed = admit(
        namespace,
        base,
        adapter.pool_ref,
        pools_by_key,
        by_model,
        (adapter.s3_uri, adapter.s3_endpoint),
    )
    if isinstance(allowed, Issue):
        return allowed
    ranked = [p for p in allowed if adapter.rank <= p.max_lora_rank]
    if not ranked:
        highest = max(p.max_lora_rank for p in allowed)
        scope = "the pool's" if len(allowed) == 1 else "every pool's"
        return Issue(
            conditions.RANK_TOO_LARGE,
            f"adapter rank {adapter.rank} is above {scope} engine.maxLoraRank for {base} "
            f"(highest: {highest}): retrain with r <= {highest} or ask for a pool with "
            f"maxLoraRank {_next_rank(adapter.rank)}",
        )
    # Against replicas.max, not the pods usable now: a lost pod is a reason to place fewer
    # copies for a while (reported), not to drop the ones that still serve.
    wide = [p for p in ranked if adapter.min_replicas <= p.max_replicas]
    if not wide:
        most = max(p.max_replicas for p in ranked)
        return Issue(
            conditions.POOL_AT_MAX_REPLICAS,
            f"spec.replicas.min is {adapter.min_replicas}, but {_names(ranked)} can run at "
            f"most {most} pods (spec.replicas.max) and copies need distinct pods: lower "
            f"spec.replicas.min to {most} or ask for a higher replicas.max",
        )
    limits = tuple(size_limit(p) for p in wide)
    return Eligible(keys=tuple(p.key for p in wide), limits=limits, largest=max(limits))


def too_large(adapter: AdapterView, found: Eligible) -> Issue:
    """Every pool that takes the adapter otherwise is too small for its files."""
    return Issue(
        conditions.ADAPTER_TOO_LARGE,
        f"adapter files take {_size_text(adapter.size_bytes)}, more than "
        f"{', '.join(found.keys)} accept (largest: {_size_text(int(found.largest))}; "
        "spec.adapters.maxAdapterSize or cacheSize): save the adapter in bfloat16 or with a "
        "lower rank, or ask the platform team to raise the limit",
    )


def pools_full(view: AdapterView, pools: list[PoolView]) -> Issue:
    """The pools that may serve the adapter have no room for its copies at replicas.max."""
    limits = ", ".join(f"{p.key} (replicas.max {p.max_replicas})" for p in pools)
    what = "the pool that can serve it is" if len(pools) == 1 else "the pools that can serve it are"
    copies = "1 copy" if view.min_replicas == 1 else f"{view.min_replicas} copies"
    return Issue(
        conditions.POOL_AT_MAX_REPLICAS,
        f"no room for {copies}: {what} full at replicas.max: {limits}: ask the platform "
        "team to raise replicas.max, or free room by lowering other adapters' replicas",
    )


def accepts(pool: PoolView, view: AdapterView) -> bool:
    """Whether the pool would still serve the adapter (only its pin moved it away)."""
    return (
        pool.base_model == view.base_model
        and pool.allows_namespace(view.namespace)
        and view.rank <= pool.max_lora_rank
        and view.size_bytes <= size_limit(pool)
        and (
            view.s3_uri is None
            or location_issue(
                view.namespace,
                view.s3_uri,
                view.s3_endpoint,
                pool.key,
                pool.s3_endpoint,
                pool.s3_grants,
            )
            is None
        )
    )


def size_limit(pool: PoolView) -> float:
    """The largest adapter the pool accepts, in bytes (maxAdapterSize and the cache size)."""
    limits = [x for x in (pool.max_adapter_bytes, pool.cache_bytes) if x]
    return min(limits) if limits else math.inf


def _next_rank(rank: int) -> int:
    return next((r for r in ALLOWED_LORA_RANKS if r >= rank), ALLOWED_LORA_RANKS[-1])


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _names(pools: list[PoolView]) -> str:
    return ", ".join(p.key for p in pools)
