"""A pool pass's decisions, purely: from (world, placement plan) to the ordered writes.

`decide` runs the placement engine over every pool of the base model and picks each copy's
version (`planning.rollout`); `ordered_actions` lists the pass's writes in the order they must
happen (`reconcilers.actions`). The reconciler executes them phase by phase; when unrouting an
adapter fails, it asks `desired_actions` again with that adapter `held`, so no pod is told to
drop or switch an adapter whose traffic could not be moved away first.

Invariants (table-tested in tests/unit/test_pool_actions.py): a pod leaves an adapter's routing
in an earlier phase than the desired state that drops or switches it; pool-owned objects come
before anything written for adapters; a pass over a settled world writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.meta import parse_quantity, parse_s3_uri
from lorapack.api.podstate import DesiredAdapter, DesiredState, FileSpec, S3Location
from lorapack.issues import Issue
from lorapack.keys import key_of, split_key
from lorapack.manifests import network
from lorapack.manifests import pool as pool_manifests
from lorapack.manifests.routing import adapter_service, endpoint_slice, slice_name
from lorapack.planning.admission import pool_key
from lorapack.planning.packing import PlacementPlan, plan_placement
from lorapack.planning.pods import PodObservation
from lorapack.planning.rollout import Endpoint, choose_digests, endpoints_by_adapter
from lorapack.planning.s3access import effective_target
from lorapack.reconcilers.actions import (
    Action,
    Ensure,
    NeedsUrls,
    Phase,
    PublishDesired,
    Remove,
)
from lorapack.reconcilers.poolworld import (
    GroupPlan,
    PoolSettings,
    PoolWorld,
    build_snapshot,
    name_losers,
    versions,
)

__all__ = [
    "Decision",
    "decide",
    "desired_actions",
    "ordered_actions",
    "plan_group",
    "routing_actions",
]

Digests = dict[int, dict[str, str]]


@dataclass(frozen=True)
class Decision:
    """What the pass decided, before any write."""

    plan: PlacementPlan
    versions: Mapping[str, tuple[LoraAdapter, object]]
    adapters: Mapping[str, LoraAdapter]
    """adapter key -> adapter, every adapter of the world."""
    losers: Mapping[str, Issue]
    """Adapters refused a served name (never placed)."""
    desired_replicas: int
    digests: Digests
    """ordinal -> adapter key -> digest this pool's pods should hold."""
    endpoints: Mapping[str, Sequence[Endpoint]]
    """adapter key -> the pods of this pool that may receive its traffic now."""
    pods: Mapping[int, PodObservation]
    mine: frozenset[str]
    """Adapters this pool serves (the planner chose it)."""


def plan_group(world: PoolWorld, settings: PoolSettings) -> GroupPlan:
    """Served-name owners, versions and placement over every pool of the base model: the
    same for each pool of the group given the same world."""
    losers = name_losers(world)
    found = versions(world, losers)
    plan = plan_placement(build_snapshot(world, found, settings.pod_lost_seconds))
    by_pool: dict[str | None, set[str]] = {}
    for key, chosen in plan.adapter_pool.items():
        by_pool.setdefault(chosen, set()).add(key)
    return GroupPlan(
        losers=losers,
        versions=found,
        plan=plan,
        by_key={key_of(a): a for a in world.adapters},
        by_version={k: v for k, (_, v) in found.items()},
        by_pool={k: frozenset(v) for k, v in by_pool.items()},
    )


def decide(world: PoolWorld, settings: PoolSettings) -> Decision:
    """Placement over the base model's pools (`world.shared`, else computed now), then
    versions and routing for this pool."""
    me = pool_key(world.pool)
    group = world.shared or plan_group(world, settings)
    losers, found, plan = group.losers, group.versions, group.plan
    own = plan.pools.get(me)
    desired_replicas = own.desired_replicas if own else world.pool.spec.replicas.min
    pods = {p.ordinal: p for p in world.pods.get(me, ())}
    previous = {
        ordinal: {a.adapter: a.digest for a in state.adapters}
        for ordinal, state in world.desired.get(me, {}).items()
    }
    by_version = group.by_version
    digests = choose_digests(dict(own.assignment) if own else {}, by_version, previous, pods)
    return Decision(
        plan=plan,
        versions=found,
        adapters=group.by_key,
        losers=losers,
        desired_replicas=desired_replicas,
        digests=digests,
        endpoints=endpoints_by_adapter(digests, by_version, pods),
        pods=pods,
        mine=group.by_pool.get(me, frozenset()),
    )


def owned_actions(world: PoolWorld, decision: Decision, settings: PoolSettings) -> list[Action]:
    """The pool's own objects when its spec changed (or this process has not written them),
    and the StatefulSet when its size or spec changed."""
    pool = world.pool
    uid = pool.metadata.uid
    out: list[Action] = []
    spec_changed = world.owned_applied_generation != pool.metadata.generation
    if spec_changed:
        # The engine key first, created once: the pods' containers need it to start.
        if world.new_engine_key:
            key = network.api_key_secret(pool, world.new_engine_key)
            out.append(Ensure(Phase.OWNED, "", key, uid, create_only=True))
        for obj in (
            *pool_manifests.agent_rbac(pool),
            pool_manifests.headless_service(pool),
            pool_manifests.pool_service(pool),
            pool_manifests.pod_disruption_budget(pool),
        ):
            out.append(Ensure(Phase.OWNED, "", obj, uid))
        if settings.network_policy:
            policy = network.engine_network_policy(
                pool,
                gateway_namespaces=settings.gateway_namespaces,
                allow_team_namespaces=settings.allow_team_namespaces,
            )
            out.append(Ensure(Phase.OWNED, "", policy, uid))
    if spec_changed or world.statefulset_replicas != decision.desired_replicas:
        sts = pool_manifests.statefulset(
            pool, replicas=decision.desired_replicas, agent_image=settings.agent_image
        )
        # Growing starts pods early (OWNED); shrinking waits until the desired states that
        # empty the highest pods are written (SCALE).
        growing = (world.statefulset_replicas or 0) <= decision.desired_replicas
        out.append(Ensure(Phase.OWNED if growing else Phase.SCALE, "", sts, uid))
    return out


def _service_actions(world: PoolWorld, decision: Decision, settings: PoolSettings) -> list[Action]:
    out: list[Action] = []
    headless = settings.service_type == "Headless"
    for key in sorted(decision.mine):
        adapter, _ = decision.versions[key]
        have = world.services.get(key)
        if have is not None and have.owner_uid == adapter.metadata.uid:
            if have.headless == headless:
                continue
            # A Service's cluster IP cannot change in place: remove it, the next pass creates
            # it again in the configured type.
            namespace, name = split_key(key)
            out.append(Remove(Phase.ROUTE, key, "v1", "Service", namespace, name))
            continue
        service = adapter_service(adapter, settings.service_port, headless=headless)
        out.append(Ensure(Phase.ROUTE, key, service, adapter.metadata.uid))
    return out


def routing_actions(
    world: PoolWorld, decision: Decision, settings: PoolSettings
) -> tuple[list[Action], list[Action]]:
    """(UNROUTE, ROUTE): slices that lose pods or go away, then Services and growing slices."""
    pool = world.pool
    unroute: list[Action] = []
    route: list[Action] = _service_actions(world, decision, settings)
    named: set[str] = set()
    for key, eps in sorted(decision.endpoints.items()):
        adapter, _ = decision.versions[key]
        name = (
            f"{adapter.metadata.namespace}/{slice_name(adapter.metadata.name, pool.metadata.name)}"
        )
        named.add(name)
        current = world.slices.get(name)
        # No slice until some pod serves the adapter: a Service without slices routes like one
        # with an empty slice, and that saves a write per placement.
        if (current is None and not eps) or (
            current is not None and sorted(current) == sorted(eps)
        ):
            continue
        obj = endpoint_slice(adapter, pool.metadata.namespace, pool.metadata.name, eps)
        if current is None or set(current) <= set(eps):
            route.append(Ensure(Phase.ROUTE, key, obj, adapter.metadata.uid))
        else:
            unroute.append(Ensure(Phase.UNROUTE, key, obj, adapter.metadata.uid))
    gone = sorted(set(world.slices) - named)
    # Only slices that go away need their adapter (rare): no scan of every adapter otherwise.
    by_name = (
        {
            f"{a.metadata.namespace}/{slice_name(a.metadata.name, pool.metadata.name)}": key
            for key, a in decision.adapters.items()
        }
        if gone
        else {}
    )
    for name in gone:
        namespace, short = split_key(name)
        subject = by_name.get(name, "")
        unroute.append(
            Remove(Phase.UNROUTE, subject, "discovery.k8s.io/v1", "EndpointSlice", namespace, short)
        )
    return unroute, route


def _fresh(previous: DesiredAdapter, now: datetime, ttl: int) -> bool:
    if not previous.urls_expire_at:
        return True
    expires = datetime.fromisoformat(previous.urls_expire_at.replace("Z", "+00:00"))
    return expires - now > timedelta(seconds=ttl / 3)


def _entry(
    adapter: LoraAdapter,
    pool: BaseModelPool,
    digest: str,
    previous: DesiredAdapter | None,
    now: datetime,
    settings: PoolSettings,
) -> DesiredAdapter | NeedsUrls | None:
    """The entry for one adapter at `digest`, reusing the previous one where still valid."""
    if (
        previous is not None
        and previous.digest == digest
        and _fresh(previous, now, settings.presign_ttl_seconds)
    ):
        return previous
    artifact = adapter.status.artifact if adapter.status else None
    if artifact is None or artifact.digest != digest:
        # The old version of a rolling adapter: only its previous entry knows its files. Its
        # URLs may age out; the pod already holds those files and the rollout replaces it soon.
        return previous if previous is not None and previous.digest == digest else None
    source = adapter.spec.source.s3
    bucket, prefix = parse_s3_uri(artifact.uri or source.uri)
    files = [
        FileSpec(
            path=o.path,
            size=o.size,
            etag=o.etag,
            version_id=o.version_id,
            sha256=adapter.spec.digests.get(o.path),
            key=prefix + o.path,
        )
        for o in artifact.objects
    ]
    entry = DesiredAdapter(
        served_name=adapter.served_name,
        adapter=key_of(adapter),
        uid=adapter.metadata.uid,
        digest=digest,
        files=files,
        access="presigned",
    )
    if source.credentials_secret_ref is not None:
        return NeedsUrls(adapter, pool, entry, bucket, previous)
    target = effective_target(
        source.endpoint, source.region, source.addressing_style,
        pool.spec.s3.endpoint, pool.spec.s3.region, pool.spec.s3.addressing_style,
    )  # fmt: skip
    return entry.model_copy(
        update={
            "access": "pool",
            "s3": S3Location(
                bucket=bucket,
                prefix=prefix,
                endpoint=target.endpoint,
                region=target.region,
                addressing_style=target.addressing_style,
            ),
        }
    )


def _same(a: DesiredState | None, b: DesiredState) -> bool:
    return a is not None and a.model_copy(update={"revision": 0}) == b.model_copy(
        update={"revision": 0}
    )


def desired_actions(
    world: PoolWorld,
    decision: Decision,
    settings: PoolSettings,
    held: frozenset[str] = frozenset(),
) -> list[Action]:
    """Per-pod desired states. Adapters in `held` (their unrouting failed) keep their previous
    entries on every pod, so nothing drops or switches them before traffic left."""
    pool = world.pool
    me = pool_key(pool)
    names = pool_manifests.PoolNames(pool.metadata.name)
    current = world.desired.get(me, {})
    adapters = decision.adapters
    top = max([decision.desired_replicas - 1, *decision.pods, *current], default=-1)
    out: list[Action] = []
    for ordinal in range(top + 1):
        before = current.get(ordinal)
        previous = {a.adapter: a for a in before.adapters} if before else {}
        wanted = dict(decision.digests.get(ordinal, {}))
        for key in held:
            if key in previous:
                wanted[key] = previous[key].digest
        ready: list[DesiredAdapter] = []
        pending: list[NeedsUrls] = []
        for key, digest in sorted(wanted.items()):
            owner = adapters.get(key)
            entry = None
            if owner is not None:
                entry = _entry(owner, pool, digest, previous.get(key), world.now, settings)
            elif key in held:
                entry = previous[key]
            if isinstance(entry, NeedsUrls):
                pending.append(entry)
            elif entry is not None:
                ready.append(entry)
        if ordinal >= decision.desired_replicas and ordinal not in decision.pods and not wanted:
            if before is not None:  # the pod is gone and holds nothing: drop its Secret
                out.append(
                    Remove(Phase.DESIRED, "", "v1", "Secret", pool.metadata.namespace,
                           names.desired_secret(ordinal))
                )  # fmt: skip
            continue
        state = DesiredState(
            pool=me,
            pod=names.pod(ordinal),
            revision=(before.revision if before else 0) + 1,
            max_lora_rank=pool.spec.engine.max_lora_rank,
            allow_pickle=pool.spec.adapters.allow_pickle,
            cache_quota_bytes=parse_quantity(pool.spec.adapters.cache_size),
            adapters=sorted(ready, key=lambda e: e.served_name),
        )
        if not pending and _same(before, state):
            continue
        out.append(PublishDesired(pool, ordinal, state, tuple(pending)))
    return out


def ordered_actions(
    world: PoolWorld, settings: PoolSettings, held: frozenset[str] = frozenset()
) -> tuple[Decision, list[Action]]:
    """The decision and every write of the pass, in execution order (phases ascending)."""
    decision = decide(world, settings)
    unroute, route = routing_actions(world, decision, settings)
    actions = [
        *owned_actions(world, decision, settings),
        *unroute,
        *desired_actions(world, decision, settings, held),
        *route,
    ]
    return decision, sorted(actions, key=lambda a: a.phase)
