"""One pass of a pool's placement loop: the single writer of placement decisions for its pool.

`reconcile_pool` takes a snapshot of the world (gathered by the handler from watch-driven
indexes, never by list calls), runs the pure placement engine over every pool serving the same
base model, and then, for its own pool only, writes in this order:

1. EndpointSlices: pods that are about to lose an adapter or switch its version leave routing
   first (drain before unload);
2. per-pod desired-state Secrets (the channel to the agents and the persisted assignment, so an
   operator restart reshuffles nothing);
3. the StatefulSet's replica count (scale-in only removes pods the plan has emptied), plus the
   pool's other owned objects when the pool's spec changed;
4. nothing else: the pool status and each adapter's placement come back in `PoolOutcome` for the
   handler to publish.

Idempotent: a pass over a settled world writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolStatus
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.meta import parse_quantity, parse_s3_uri
from lorapack.api.podstate import DesiredAdapter, DesiredState, FileSpec, S3Location
from lorapack.issues import Issue
from lorapack.manifests import pool as pool_manifests
from lorapack.manifests.routing import endpoint_slice, slice_name
from lorapack.planning.admission import pool_key
from lorapack.planning.packing import PlacementPlan, plan_placement
from lorapack.planning.pods import PodObservation, is_lost
from lorapack.planning.rollout import AdapterVersion, Endpoint, choose_digests, endpoints_by_adapter
from lorapack.planning.snapshot import AdapterView, PodView, Slot, Snapshot, pool_view
from lorapack.reconcilers.ports import Presigner, Writer
from lorapack.status.conditions import now_rfc3339
from lorapack.status.pool import PoolFacts, compute_pool_status

__all__ = ["AdapterPlacement", "PoolOutcome", "PoolSettings", "PoolWorld", "reconcile_pool"]


@dataclass(frozen=True)
class PoolSettings:
    """Operator settings the pass needs."""

    agent_image: str
    presign_ttl_seconds: int = 3600
    pod_lost_seconds: float = 120.0


@dataclass(frozen=True)
class PoolWorld:
    """Everything one pass reads, gathered from the operator's indexes."""

    pool: BaseModelPool
    group: Sequence[BaseModelPool]
    """Live pools serving the same base model (including `pool`)."""
    adapters: Sequence[LoraAdapter]
    """LoraAdapters naming that base model."""
    deleting: frozenset[str]
    """Keys of adapters being deleted: unrouted and unloaded everywhere."""
    pods: Mapping[str, Sequence[PodObservation]]
    """pool key -> its pods."""
    desired: Mapping[str, Mapping[int, DesiredState]]
    """pool key -> ordinal -> the desired state currently published."""
    slices: Mapping[str, Sequence[Endpoint]]
    """name -> endpoints of the EndpointSlices this pool currently owns, by "namespace/name"."""
    statefulset_replicas: int | None
    """Replicas of the pool's StatefulSet as last applied (None: not created yet)."""
    owned_applied_generation: int | None
    """Pool generation whose owned objects were last applied (None: never in this process)."""
    now: datetime


@dataclass(frozen=True)
class AdapterPlacement:
    """What the placement loop decided for one adapter (published for its status)."""

    pool: str | None
    unplaceable: Issue | None
    desired: Mapping[str, str] = field(default_factory=dict)
    """pod name -> digest."""
    serving: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolOutcome:
    """What the pass decided and wrote."""

    status: BaseModelPoolStatus
    placements: Mapping[str, AdapterPlacement]
    desired_replicas: int
    writes: int
    owned_applied: bool


def _adapter_key(adapter: LoraAdapter) -> str:
    return f"{adapter.metadata.namespace}/{adapter.metadata.name}"


def _versions(world: PoolWorld) -> dict[str, tuple[LoraAdapter, AdapterVersion]]:
    out = {}
    for adapter in world.adapters:
        key = _adapter_key(adapter)
        artifact = adapter.status.artifact if adapter.status else None
        if key in world.deleting or artifact is None or not artifact.digest:
            continue
        out[key] = (
            adapter,
            AdapterVersion(
                key=key,
                served_name=adapter.served_name,
                digest=artifact.digest,
                min_replicas=adapter.spec.replicas.min,
            ),
        )
    return out


def build_snapshot(
    world: PoolWorld,
    versions: Mapping[str, tuple[LoraAdapter, AdapterVersion]],
    lost_after: float,
) -> Snapshot:
    """The planner's view of the base model's pools, pods, adapters and current assignment."""
    by_served = {v.served_name: key for key, (_, v) in versions.items()}
    pods: list[PodView] = []
    assignment: dict[Slot, frozenset[str]] = {}
    serving: dict[Slot, frozenset[str]] = {}
    for pool in world.group:
        key = pool_key(pool)
        observed = {p.ordinal: p for p in world.pods.get(key, ())}
        desired = world.desired.get(key, {})
        for ordinal in sorted(set(observed) | set(desired)):
            pod = observed.get(ordinal)
            lost = is_lost(pod, now=world.now, lost_after=lost_after)
            pods.append(
                PodView(
                    pool=key, ordinal=ordinal, node=pod.node if pod else None, available=not lost
                )
            )
            state = desired.get(ordinal)
            if state is not None:
                assignment[(key, ordinal)] = frozenset(
                    a.adapter for a in state.adapters if a.adapter in versions
                )
            if pod is not None:
                serving[(key, ordinal)] = frozenset(
                    by_served[name] for name in pod.loaded() if name in by_served
                )
    adapters = []
    for key, (adapter, _) in sorted(versions.items()):
        artifact = adapter.status.artifact if adapter.status else None
        assert artifact is not None  # _versions keeps only validated adapters
        load = adapter.spec.expected_load
        ref = adapter.spec.pool_ref
        adapters.append(
            AdapterView(
                key=key,
                base_model=adapter.spec.base_model,
                rank=artifact.rank or 0,
                size_bytes=artifact.size_bytes or 0,
                min_replicas=adapter.spec.replicas.min,
                max_replicas=adapter.spec.replicas.max,
                load=float(load.requests_per_second) if load else 0.0,
                priority=adapter.spec.priority,
                pool_ref=f"{ref.namespace or adapter.metadata.namespace}/{ref.name}"
                if ref
                else None,
            )
        )
    return Snapshot(
        pools=tuple(pool_view(p) for p in sorted(world.group, key=pool_key)),
        pods=tuple(pods),
        adapters=tuple(adapters),
        assignment=assignment,
        serving=serving,
    )


async def _desired_adapter(
    adapter: LoraAdapter,
    pool: BaseModelPool,
    digest: str,
    previous: DesiredAdapter | None,
    presigner: Presigner,
    settings: PoolSettings,
    now: datetime,
) -> DesiredAdapter | None:
    """The entry for one adapter at `digest`, reusing the previous entry where still valid."""
    artifact = adapter.status.artifact if adapter.status else None
    fresh_enough = True
    if previous is not None and previous.urls_expire_at:
        expires = datetime.fromisoformat(previous.urls_expire_at.replace("Z", "+00:00"))
        fresh_enough = expires - now > timedelta(seconds=settings.presign_ttl_seconds / 3)
    if previous is not None and previous.digest == digest and fresh_enough:
        return previous
    if artifact is None or artifact.digest != digest:
        # The old version of a rolling adapter: only its previous entry knows its files. Its
        # presigned URLs may age out; the pod already holds those files, and the rollout
        # replaces the entry soon.
        return previous if previous is not None and previous.digest == digest else None
    source_s3 = adapter.spec.source.s3
    bucket, prefix = parse_s3_uri(artifact.uri or source_s3.uri)
    sha = adapter.spec.digests
    files = [
        FileSpec(
            path=o.path,
            size=o.size,
            etag=o.etag,
            version_id=o.version_id,
            sha256=sha.get(o.path),
            key=prefix + o.path,
        )
        for o in artifact.objects
    ]
    key = _adapter_key(adapter)
    if source_s3.credentials_secret_ref is not None:
        objects = [(prefix + o.path, o) for o in artifact.objects]
        urls, expires_at = await presigner.presign(
            adapter, pool, bucket, objects, settings.presign_ttl_seconds
        )
        files = [
            f.model_copy(update={"url": url, "key": None})
            for f, url in zip(files, urls, strict=True)
        ]
        return DesiredAdapter(
            served_name=adapter.served_name,
            adapter=key,
            uid=adapter.metadata.uid,
            digest=digest,
            files=files,
            access="presigned",
            urls_expire_at=now_rfc3339(expires_at),
        )
    return DesiredAdapter(
        served_name=adapter.served_name,
        adapter=key,
        uid=adapter.metadata.uid,
        digest=digest,
        files=files,
        access="pool",
        s3=S3Location(
            bucket=bucket,
            prefix=prefix,
            endpoint=source_s3.endpoint or pool.spec.s3.endpoint,
            region=source_s3.region or pool.spec.s3.region,
            addressing_style=source_s3.addressing_style or pool.spec.s3.addressing_style,
        ),
    )


#: Writes in flight at once in one pass: enough to overlap API round trips, few enough not to
#: crowd out the other loops' requests (the Kubernetes client pools about 10 connections).
WRITE_CONCURRENCY = 8


Write = Callable[[], Awaitable[None]]
"""A write not started yet (so that an error while collecting leaves no un-awaited coroutine)."""


async def _bounded(writes: Sequence[Write]) -> None:
    """Run `writes` with at most WRITE_CONCURRENCY in flight; the first error is raised after
    all have finished (the next pass repairs whatever a failed write left)."""
    if not writes:
        return
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def one(write: Write) -> None:
        async with gate:
            await write()

    results = await asyncio.gather(*(one(w) for w in writes), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _unplaceable_owner(world: PoolWorld) -> bool:
    """Exactly one loop of a base model's pools reports adapters no pool can take."""
    return pool_key(world.pool) == min(pool_key(p) for p in world.group)


def _same(a: DesiredState | None, b: DesiredState) -> bool:
    return a is not None and a.model_copy(update={"revision": 0}) == b.model_copy(
        update={"revision": 0}
    )


async def reconcile_pool(
    world: PoolWorld, writer: Writer, presigner: Presigner, settings: PoolSettings
) -> PoolOutcome:
    """Plan, then write routing, desired states and the replica count for `world.pool`."""
    pool = world.pool
    me = pool_key(pool)
    names = pool_manifests.PoolNames(pool.metadata.name)
    versions = _versions(world)
    snapshot = build_snapshot(world, versions, settings.pod_lost_seconds)
    plan: PlacementPlan = plan_placement(snapshot)
    mine = plan.pools.get(me)
    desired_replicas = mine.desired_replicas if mine else pool.spec.replicas.min
    assignment = dict(mine.assignment) if mine else {}
    pods = {p.ordinal: p for p in world.pods.get(me, ())}
    current = world.desired.get(me, {})
    previous_digests = {
        ordinal: {a.adapter: a.digest for a in state.adapters} for ordinal, state in current.items()
    }
    digests = choose_digests(
        assignment, {k: v for k, (_, v) in versions.items()}, previous_digests, pods
    )
    writes = 0

    # Routing. A slice that loses an endpoint (or goes away) is written before any desired
    # state, so a pod leaves an adapter's routing before it is told to drop it. A slice that
    # only gains endpoints is written after the desired states: those pods already hold the
    # adapter, and new placements should not wait behind routing writes (a burst of 100
    # adapters otherwise queued 100 slice writes in front of the first desired state).
    endpoints = endpoints_by_adapter(digests, {k: v for k, (_, v) in versions.items()}, pods)
    adapters_by_key = {_adapter_key(a): a for a in world.adapters}
    shrinking: list[Mapping[str, Any]] = []
    growing: list[Mapping[str, Any]] = []
    named: set[str] = set()
    for key, eps in sorted(endpoints.items()):
        adapter = adapters_by_key[key]
        name = (
            f"{adapter.metadata.namespace}/{slice_name(adapter.metadata.name, pool.metadata.name)}"
        )
        named.add(name)
        current_eps = world.slices.get(name)
        # No slice until some pod serves the adapter: an adapter Service without any slice
        # routes exactly like one with an empty slice, and that saves a write per placement.
        if current_eps is None and not eps:
            continue
        if current_eps is not None and sorted(current_eps) == sorted(eps):
            continue
        obj = endpoint_slice(adapter, pool.metadata.namespace, pool.metadata.name, eps)
        if current_eps is None or set(current_eps) <= set(eps):
            growing.append(obj)
        else:
            shrinking.append(obj)
    gone = sorted(set(world.slices) - named)
    await _bounded(
        [partial(writer.apply, obj) for obj in shrinking]
        + [
            partial(writer.delete, "discovery.k8s.io/v1", "EndpointSlice", *name.split("/", 1))
            for name in gone
        ]
    )
    writes += len(shrinking) + len(gone)

    # 2. Desired state per pod, for every ordinal that exists or is wanted.
    desired_writes: list[Write] = []
    top = max([desired_replicas - 1, *pods, *current], default=-1)
    for ordinal in range(top + 1):
        before = current.get(ordinal)
        previous_entries = {a.adapter: a for a in before.adapters} if before else {}
        entries = []
        for key, digest in sorted(digests.get(ordinal, {}).items()):
            owner = adapters_by_key.get(key)
            if owner is None:
                continue
            entry = await _desired_adapter(
                owner, pool, digest, previous_entries.get(key), presigner, settings, world.now
            )
            if entry is not None:
                entries.append(entry)
        state = DesiredState(
            pool=me,
            pod=names.pod(ordinal),
            revision=(before.revision if before else 0),
            max_lora_rank=pool.spec.engine.max_lora_rank,
            allow_pickle=pool.spec.adapters.allow_pickle,
            cache_quota_bytes=parse_quantity(pool.spec.adapters.cache_size),
            adapters=sorted(entries, key=lambda e: e.served_name),
        )
        if ordinal >= desired_replicas and ordinal not in pods and not entries:
            if before is not None:  # the pod is gone and holds nothing: drop its Secret
                desired_writes.append(
                    partial(
                        writer.delete,
                        "v1",
                        "Secret",
                        pool.metadata.namespace,
                        names.desired_secret(ordinal),
                    )
                )
            continue
        if _same(before, state):
            continue
        state = state.model_copy(update={"revision": (before.revision + 1) if before else 1})
        desired_writes.append(
            partial(writer.apply, pool_manifests.desired_secret(pool, ordinal, state))
        )
    await _bounded(desired_writes)
    writes += len(desired_writes)

    # 3. Owned objects when the spec changed, and the replica count.
    owned_applied = False
    if world.owned_applied_generation != pool.metadata.generation:
        for obj in [
            *pool_manifests.agent_rbac(pool),
            pool_manifests.headless_service(pool),
            pool_manifests.pool_service(pool),
            pool_manifests.pod_disruption_budget(pool),
        ]:
            await writer.apply(obj)
            writes += 1
        owned_applied = True
    if owned_applied or world.statefulset_replicas != desired_replicas:
        await writer.apply(
            pool_manifests.statefulset(
                pool, replicas=desired_replicas, agent_image=settings.agent_image
            )
        )
        writes += 1

    # Slices that only gain endpoints (see above).
    await _bounded([partial(writer.apply, obj) for obj in growing])
    writes += len(growing)

    # 4. What the handler publishes: pool status and per-adapter placement.
    placements: dict[str, AdapterPlacement] = {}
    serving_by_key: dict[str, tuple[str, ...]] = {
        key: tuple(e.pod for e in eps) for key, eps in endpoints.items()
    }
    for key in versions:
        chosen = plan.adapter_pool.get(key)
        if chosen != me:
            continue
        desired_pods = {names.pod(o): d[key] for o, d in sorted(digests.items()) if key in d}
        short = plan.unplaceable.get(key)
        placements[key] = AdapterPlacement(
            pool=me,
            unplaceable=short if short else None,
            desired=desired_pods,
            serving=serving_by_key.get(key, ()),
        )
    if _unplaceable_owner(world):
        for key, why in plan.unplaceable.items():
            if key not in placements and plan.adapter_pool.get(key) is None:
                placements[key] = AdapterPlacement(pool=None, unplaceable=why)
    mine_keys = [k for k, p in placements.items() if p.pool == me]
    pending = sum(1 for k in mine_keys if placements[k].unplaceable is not None) + sum(
        1 for p in placements.values() if p.pool is None
    )
    status = compute_pool_status(
        pool,
        PoolFacts(
            pods=list(pods.values()),
            desired_replicas=desired_replicas,
            slots_used=sum(len(v) for v in digests.values()),
            adapters_placed=len(mine_keys)
            - sum(1 for k in mine_keys if placements[k].unplaceable is not None),
            adapters_pending=pending,
        ),
        now_rfc3339(world.now),
    )
    return PoolOutcome(
        status=status,
        placements=placements,
        desired_replicas=desired_replicas,
        writes=writes,
        owned_applied=owned_applied,
    )
