"""Which pools may serve an adapter, and who owns a served name: the admission rules' one home.

`admit` is the first step of every decision about an adapter and a pool: the pinned pool
exists and serves the adapter's base model, some pool serves that base model, and the adapter's
namespace is allowed. The operator's pre-flight (`candidate_pools`, before S3 is read), the
placement planner (`planning.eligibility`, which adds rank, replicas and size) and `lorapack
plan` all call it, so they refuse with the same reason and words.

`served_name_owners` decides who may use each served name among the adapters of a base model:
the adapter already serving a name keeps it (a rename onto a name in use never takes it over),
otherwise the oldest claimant wins. Pre-flight refuses the losers, and placement never places
them, so one engine name never answers for two teams.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.issues import Issue
from lorapack.keys import key_of
from lorapack.planning.s3access import location_issue
from lorapack.planning.snapshot import PoolView, pool_view

__all__ = [
    "admit",
    "candidate_pools",
    "pool_key",
    "served_name_conflict",
    "served_name_owners",
]


def pool_key(pool: BaseModelPool) -> str:
    """namespace/name of a pool."""
    return key_of(pool)


def _names(pools: Sequence[PoolView]) -> str:
    return ", ".join(p.key for p in pools)


def admit(
    namespace: str,
    base: str,
    pool_ref: str | None,
    pools_by_key: Mapping[str, PoolView],
    by_model: Mapping[str, Sequence[PoolView]],
    s3: tuple[str | None, str | None] = (None, None),
) -> list[PoolView] | Issue:
    """The pools an adapter of `namespace` for base model `base` (pinning `pool_ref`, a pool
    key, or None) may use, or why none; checks in the order a person would fix them. `s3` is
    (uri, endpoint) of an adapter that reads with the pool's identity (no credentials of its
    own): the pool must grant that location (planning.s3access)."""
    if pool_ref is not None:
        pinned = pools_by_key.get(pool_ref)
        if pinned is None:
            return Issue(
                c.POOL_NOT_FOUND,
                f"spec.poolRef names BaseModelPool {pool_ref}, which does not exist: fix "
                f"spec.poolRef, or remove it to let lorapack choose a pool serving {base}",
            )
        if pinned.base_model != base:
            return Issue(
                c.BASE_MODEL_MISMATCH,
                f"spec.poolRef names BaseModelPool {pinned.key}, which serves "
                f"{pinned.base_model}, not {base}: fix spec.baseModel or spec.poolRef",
            )
        pools: Sequence[PoolView] = [pinned]
    else:
        pools = by_model.get(base, [])
        if not pools:
            served = sorted(by_model)
            known = f" (pools serve: {', '.join(served)})" if served else ""
            return Issue(
                c.NO_POOL,
                f"no BaseModelPool serves base model {base}{known}: fix spec.baseModel, or ask "
                f"the platform team for a pool with spec.baseModel.name {base}",
            )
    allowed = [p for p in pools if p.allows_namespace(namespace)]
    if not allowed:
        return Issue(
            c.NAMESPACE_NOT_ALLOWED,
            f"namespace {namespace} may not use {_names(pools)} "
            "(spec.adapters.allowedNamespaces): ask the platform team to add "
            f"{namespace} there, or create the adapter in an allowed namespace",
        )
    uri, endpoint = s3
    if uri is not None:
        granted = [
            p
            for p in allowed
            if location_issue(namespace, uri, endpoint, p.key, p.s3_endpoint, p.s3_grants) is None
        ]
        if not granted:
            first = allowed[0]
            issue = location_issue(
                namespace, uri, endpoint, first.key, first.s3_endpoint, first.s3_grants
            )
            assert issue is not None
            return issue
        allowed = granted
    return sorted(allowed, key=lambda p: p.key)


def candidate_pools(
    adapter: LoraAdapter, pools: Sequence[BaseModelPool]
) -> tuple[list[BaseModelPool], Issue | None]:
    """`admit` over API pools (live ones only): the pools, sorted by key, or why none."""
    live = {pool_key(p): p for p in pools if p.metadata.deletion_timestamp is None}
    views = {key: pool_view(p) for key, p in live.items()}
    by_model: dict[str, list[PoolView]] = {}
    for view in views.values():
        by_model.setdefault(view.base_model, []).append(view)
    ref = adapter.spec.pool_ref
    namespace = adapter.metadata.namespace
    pinned = f"{ref.namespace or namespace}/{ref.name}" if ref is not None else None
    source = adapter.spec.source.s3
    s3 = (None, None) if source.credentials_secret_ref else (source.uri, source.endpoint)
    found = admit(namespace, adapter.spec.base_model, pinned, views, by_model, s3)
    if isinstance(found, Issue):
        return [], found
    return [live[v.key] for v in found], None


def _claim_order(adapter: LoraAdapter) -> tuple[bool, str, str]:
    """Sort key of the claimants of one served name: the incumbent (the adapter whose status
    already says it is served under that name with validated files) first, then the oldest."""
    status = adapter.status
    incumbent = (
        status is not None
        and status.served_name == adapter.served_name
        and status.artifact is not None
        and bool(status.artifact.digest)
    )
    return (not incumbent, adapter.metadata.creation_timestamp or "", key_of(adapter))


def served_name_owners(adapters: Iterable[LoraAdapter]) -> dict[tuple[str, str], str]:
    """(base model, served name) -> key of the adapter that owns it, among live adapters."""
    claims: dict[tuple[str, str], list[LoraAdapter]] = {}
    for adapter in adapters:
        if adapter.metadata.deletion_timestamp is None:
            claims.setdefault((adapter.spec.base_model, adapter.served_name), []).append(adapter)
    return {
        name: key_of(group[0] if len(group) == 1 else min(group, key=_claim_order))
        for name, group in claims.items()
    }


def served_name_conflict(
    adapter: LoraAdapter,
    others: Sequence[LoraAdapter],
    base_model_names: Sequence[str],
    owners: Mapping[tuple[str, str], str] | None = None,
) -> Issue | None:
    """Why the adapter may not use its served name, or None. It must not be a served base-model
    name (vLLM refuses that) nor a name another adapter of the base model owns
    (`served_name_owners`, computed from `others` unless given)."""
    name = adapter.served_name
    if name in base_model_names:
        return Issue(
            c.SERVED_NAME_CONFLICT,
            f"served name {name!r} is the base model's own name: set spec.servedName to "
            "something else",
        )
    me = key_of(adapter)
    if owners is None:
        group = [o for o in others if key_of(o) != me] + [adapter]
        owners = served_name_owners(group)
    owner = owners.get((adapter.spec.base_model, name), me)
    if owner != me:
        return Issue(
            c.SERVED_NAME_CONFLICT,
            f"served name {name!r} is already used by LoraAdapter {owner} on base model "
            f"{adapter.spec.base_model}: set a unique spec.servedName",
        )
    return None
