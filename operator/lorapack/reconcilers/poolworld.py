"""What one pass of a pool loop reads (`PoolWorld`), its settings, and the planner's view of it.

The handler gathers a `PoolWorld` from the operator's watch-driven indexes and stores (no list
calls per pass); `versions` and `build_snapshot` turn it into the pure placement engine's input.
The snapshot's adapter views come from `planning.snapshot.adapter_view`, the same function
`lorapack plan` uses, so the offline plan and the operator place the same adapters the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredState
from lorapack.issues import Issue
from lorapack.keys import key_of
from lorapack.planning.admission import pool_key, served_name_conflict, served_name_owners
from lorapack.planning.packing import PlacementPlan
from lorapack.planning.pods import PodObservation, is_lost
from lorapack.planning.rollout import AdapterVersion, Endpoint
from lorapack.planning.snapshot import PodView, Slot, Snapshot, adapter_view, pool_view

__all__ = [
    "AdapterPlacement",
    "GroupPlan",
    "PoolSettings",
    "PoolWorld",
    "ServiceView",
    "Versions",
    "build_snapshot",
    "name_losers",
    "versions",
]

ServiceType = Literal["Headless", "ClusterIP"]


@dataclass(frozen=True)
class PoolSettings:
    """Operator settings the pass needs."""

    agent_image: str
    presign_ttl_seconds: int = 3600
    pod_lost_seconds: float = 120.0
    service_type: ServiceType = "Headless"
    """Per-adapter Services: headless (no cluster IP; DNS lists the pods holding the adapter)
    or ClusterIP (one virtual IP each, routed by kube-proxy: opt-in, it uses the cluster's
    Service range)."""
    service_port: int = 8000
    drain_timeout_seconds: float = 30.0
    network_policy: bool = True
    """Whether each pool gets its engine NetworkPolicy (`<pool>-engine`)."""
    gateway_namespaces: Mapping[str, str] | None = None
    """Labels of the namespaces the routing layer runs in, admitted to the engine port
    (None: no gateway admitted)."""
    allow_team_namespaces: bool = False
    """Admit the pool's allowed team namespaces to the engine port too (teams holding the key)."""


@dataclass(frozen=True, slots=True)
class ServiceView:
    """An adapter's Service as the Service index sees it."""

    owner_uid: str
    """UID of the LoraAdapter named in its owner reference ("" if none)."""
    headless: bool


Versions = Mapping[str, tuple[LoraAdapter, AdapterVersion]]
"""adapter key -> (the adapter, the version placement works with)."""


@dataclass(frozen=True)
class GroupPlan:
    """The part of a pass that is the same for every pool of a base model: who may use which
    served name, the versions to place, and the placement over all the group's pools. Each
    pool loop takes its own share of it; the handler lets sibling loops share one (at 10
    pools and 10,000 adapters every pool recomputing it was most of the operator's CPU)."""

    losers: Mapping[str, Issue]
    """Adapters refused a served name (never placed)."""
    versions: Versions
    plan: PlacementPlan
    by_key: Mapping[str, LoraAdapter]
    """adapter key -> adapter, for every adapter of the world it was computed from."""
    by_version: Mapping[str, AdapterVersion]
    """adapter key -> the version to place (`versions` without the adapters)."""
    by_pool: Mapping[str | None, frozenset[str]]
    """pool key -> the adapters the planner chose it for."""


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
    services: Mapping[str, ServiceView] = field(default_factory=dict)
    """adapter key -> its Service, for the adapters lorapack made Services for."""
    pool_issues: tuple[Issue, ...] = ()
    """Why the pool cannot start pods (its base-model folder, its GPUs): nothing is written."""
    new_engine_key: str = ""
    """A fresh random key, written only if the pool's engine key Secret does not exist yet
    (randomness stays with the caller; the plan is a function of this world)."""
    shared: GroupPlan | None = None
    """The group's plan, computed from this world's adapters, pools, pods and desired states
    (by `poolplan.plan_group`, possibly for a sibling pool's pass); None: the pass computes it."""


@dataclass(frozen=True)
class AdapterPlacement:
    """What the placement loop decided for one adapter (published for its status)."""

    pool: str | None
    unplaceable: Issue | None
    desired: Mapping[str, str] = field(default_factory=dict)
    """pod name -> digest."""
    serving: tuple[str, ...] = ()
    problem: Issue | None = None
    """A write for this adapter the cluster refused (its Service, its EndpointSlice, its
    presigned URLs): the adapter's status says so; the other adapters are unaffected."""
    problem_transient: bool = False
    """The refused write is retried soon (the API server was unavailable)."""


def name_losers(world: PoolWorld) -> dict[str, Issue]:
    """Adapters that claim a served name another adapter owns (or the base model's name):
    never placed, whatever an older validation said. Renaming onto a name in use must not
    take it over (`planning.admission.served_name_owners`)."""
    live = [(key, a) for a in world.adapters if (key := key_of(a)) not in world.deleting]
    owners = served_name_owners(a for _, a in live)
    bases = sorted({p.spec.base_model.name for p in world.group})
    out = {}
    for key, adapter in live:
        name = adapter.served_name
        if name not in bases and owners.get((adapter.spec.base_model, name), key) == key:
            continue  # the owner of its name (most adapters: no conflict to word)
        conflict = served_name_conflict(adapter, [], bases, owners)
        if conflict is not None:
            out[key] = conflict
    return out


def versions(
    world: PoolWorld, losers: Mapping[str, Issue]
) -> dict[str, tuple[LoraAdapter, AdapterVersion]]:
    """The validated, live adapters placement may place, with their current version."""
    out = {}
    for adapter in world.adapters:
        key = key_of(adapter)
        artifact = adapter.status.artifact if adapter.status else None
        if key in world.deleting or key in losers or artifact is None or not artifact.digest:
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


def build_snapshot(world: PoolWorld, found: Versions, lost_after: float) -> Snapshot:
    """The planner's view of the base model's pools, pods, adapters and current assignment."""
    by_served = {v.served_name: key for key, (_, v) in found.items()}
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
                    a.adapter for a in state.adapters if a.adapter in found
                )
            if pod is not None:
                serving[(key, ordinal)] = frozenset(
                    by_served[name] for name in pod.loaded() if name in by_served
                )
    return Snapshot(
        pools=tuple(pool_view(p) for p in sorted(world.group, key=pool_key)),
        pods=tuple(pods),
        adapters=tuple(adapter_view(adapter) for _, (adapter, _) in sorted(found.items())),
        assignment=assignment,
        serving=serving,
    )
