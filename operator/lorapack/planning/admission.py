"""Which pools may serve an adapter, and served-name uniqueness: pure admission rules.

Called by the adapter reconciler before it touches S3 (no pool, no point reading files) and by
the pool reconciler when it builds the planner's snapshot. Every refusal is an `Issue`-shaped
(reason, message) pair telling the team what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.issues import Issue

__all__ = ["allows_namespace", "candidate_pools", "pool_key", "served_name_conflict"]


def pool_key(pool: BaseModelPool) -> str:
    """namespace/name of a pool."""
    return f"{pool.metadata.namespace}/{pool.metadata.name}"


def allows_namespace(pool: BaseModelPool, namespace: str) -> bool:
    """Whether adapters in `namespace` may attach to `pool` (empty list: the pool's own)."""
    allowed = pool.spec.adapters.allowed_namespaces
    if not allowed:
        return namespace == pool.metadata.namespace
    return "*" in allowed or namespace in allowed or namespace == pool.metadata.namespace


def candidate_pools(
    adapter: LoraAdapter, pools: Sequence[BaseModelPool]
) -> tuple[list[BaseModelPool], Issue | None]:
    """Pools that may serve the adapter (sorted by key), or why there are none."""
    live = [p for p in pools if p.metadata.deletion_timestamp is None]
    ref = adapter.spec.pool_ref
    namespace = adapter.metadata.namespace
    base = adapter.spec.base_model
    if ref is not None:
        ref_ns = ref.namespace or namespace
        pinned = [p for p in live if (p.metadata.namespace, p.metadata.name) == (ref_ns, ref.name)]
        if not pinned:
            return [], Issue(
                c.POOL_NOT_FOUND,
                f"spec.poolRef names BaseModelPool {ref_ns}/{ref.name}, which does not exist: "
                "fix spec.poolRef or remove it to let lorapack choose a pool",
            )
        pool = pinned[0]
        if pool.spec.base_model.name != base:
            return [], Issue(
                c.BASE_MODEL_MISMATCH,
                f"spec.poolRef {pool_key(pool)} serves {pool.spec.base_model.name}, not "
                f"spec.baseModel {base}",
            )
        if not allows_namespace(pool, namespace):
            return [], Issue(
                c.NAMESPACE_NOT_ALLOWED,
                f"BaseModelPool {pool_key(pool)} does not admit adapters from namespace "
                f"{namespace}: ask its owners to add it to spec.adapters.allowedNamespaces",
            )
        return [pool], None
    same_base = [p for p in live if p.spec.base_model.name == base]
    if not same_base:
        served = sorted({p.spec.base_model.name for p in live})
        known = f" (pools serve: {', '.join(served)})" if served else ""
        return [], Issue(
            c.NO_POOL,
            f"no BaseModelPool serves base model {base}{known}: check spec.baseModel or ask "
            "the platform team for a pool",
        )
    allowed = [p for p in same_base if allows_namespace(p, namespace)]
    if not allowed:
        names = ", ".join(pool_key(p) for p in same_base)
        return [], Issue(
            c.NAMESPACE_NOT_ALLOWED,
            f"pools serving {base} ({names}) do not admit adapters from namespace {namespace}: "
            "ask their owners to add it to spec.adapters.allowedNamespaces",
        )
    return sorted(allowed, key=pool_key), None


def _key(adapter: LoraAdapter) -> str:
    return f"{adapter.metadata.namespace}/{adapter.metadata.name}"


def served_name_conflict(
    adapter: LoraAdapter, others: Sequence[LoraAdapter], base_model_names: Sequence[str]
) -> Issue | None:
    """The served name must be unique among adapters of the same base model; the adapter created
    first keeps it. It must not equal a served base-model name (vLLM refuses that)."""
    name = adapter.served_name
    if name in base_model_names:
        return Issue(
            c.SERVED_NAME_CONFLICT,
            f"served name {name!r} is the base model's own name: set spec.servedName to "
            "something else",
        )

    def age(a: LoraAdapter) -> tuple[str, str]:
        return (a.metadata.creation_timestamp or "", _key(a))

    me = age(adapter)
    for other in others:
        if _key(other) == _key(adapter) or other.spec.base_model != adapter.spec.base_model:
            continue
        if other.metadata.deletion_timestamp is not None or other.served_name != name:
            continue
        if age(other) < me:
            return Issue(
                c.SERVED_NAME_CONFLICT,
                f"served name {name!r} is already used by LoraAdapter {_key(other)} on base "
                f"model {adapter.spec.base_model}: set a unique spec.servedName",
            )
    return None
