"""The frozen input of the placement engine: pools, their pods, adapters, and who holds what.

The pool's placement loop (`reconcilers.pool`) builds a `Snapshot` from the API objects, the pod
index and the persisted per-pod desired state, then hands it to `planning.packing`; `lorapack
plan` builds one from YAML files. Everything here is plain data: frozen dataclasses with the few
numbers placement needs, so planning never touches pydantic models, clients or the clock.

Keys are strings: pools and adapters are "namespace/name"; a pod is a `Slot`, (pool key,
StatefulSet ordinal), because a pool's pods are `<pool>-0 .. <pool>-N-1`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.meta import parse_quantity
from lorapack.planning.s3access import Grant

__all__ = [
    "ALL_NAMESPACES",
    "AdapterView",
    "Grant",
    "PodView",
    "PoolView",
    "Slot",
    "Snapshot",
    "adapter_view",
    "pod_name",
    "pool_view",
    "snapshot_from_api",
]

Slot = tuple[str, int]
"""A pod of a pool: (pool key "namespace/name", StatefulSet ordinal)."""

ALL_NAMESPACES = "*"


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


@dataclass(frozen=True, slots=True)
class PoolView:
    """What placement needs to know about one BaseModelPool."""

    key: str
    """"namespace/name"."""
    base_model: str
    """spec.baseModel.name: adapters must name the same base model."""
    max_lora_rank: int
    """engine.maxLoraRank: adapters of a higher rank are refused by the engine."""
    adapters_per_pod: int
    """Adapter copies one pod holds (adapters.maxPerReplica, else engine.maxCpuLoras)."""
    load_budget: float | None
    """Requests per second one pod takes, summed over its adapters; None: load is ignored."""
    gpus_per_pod: int
    """GPUs each pod requests."""
    cost_per_pod: float
    """What one pod costs, in GPU units weighted by GPU type; placement minimises the sum."""
    min_replicas: int
    max_replicas: int
    allowed_namespaces: frozenset[str]
    """Namespaces whose adapters may use the pool besides its own: {"*"} is all."""
    max_adapter_bytes: int | None
    """adapters.maxAdapterSize in bytes; None: no limit beyond the cache."""
    cache_bytes: int | None = None
    """adapters.cacheSize in bytes: the adapter files one pod holds; None: not limited."""
    gpu_type: str = ""
    """GPU catalog type, for reports."""
    s3_grants: tuple[Grant, ...] = ()
    """spec.adapters.s3Access: where adapters without their own credentials may read."""
    s3_endpoint: str | None = None
    """spec.s3.endpoint: the only endpoint the pool's identity is used with."""

    @property
    def namespace(self) -> str:
        return _split(self.key)[0]

    @property
    def name(self) -> str:
        return _split(self.key)[1]

    def allows_namespace(self, namespace: str) -> bool:
        """Whether adapters in `namespace` may attach to this pool (the pool's own namespace
        always may, as in planning.admission)."""
        allowed = self.allowed_namespaces
        return namespace == self.namespace or ALL_NAMESPACES in allowed or namespace in allowed


@dataclass(frozen=True, slots=True)
class PodView:
    """One pod of a pool, as the pod index sees it."""

    pool: str
    ordinal: int
    node: str | None = None
    """Node the pod runs on, when known; copies of one adapter are spread over nodes."""
    available: bool = True
    """False: the pod is gone or unschedulable for good, and its adapters must be re-placed."""

    @property
    def slot(self) -> Slot:
        return (self.pool, self.ordinal)


@dataclass(frozen=True, slots=True)
class AdapterView:
    """What placement needs to know about one LoraAdapter."""

    key: str
    """"namespace/name"."""
    base_model: str
    rank: int
    """LoRA rank (the largest of r and rank_pattern); 0 when not known yet (assumed to fit)."""
    size_bytes: int
    """Sum of the adapter's file sizes; 0 when not known yet."""
    min_replicas: int
    max_replicas: int
    load: float
    """Expected requests per second (spec.expectedLoad), split evenly over the copies."""
    priority: int
    """Higher priorities are placed first when capacity is short."""
    pool_ref: str | None
    """"namespace/name" of the pool the adapter pins, or None to let placement choose."""
    s3_uri: str | None = None
    """spec.source.s3.uri when the adapter reads with the pool's identity (it names no
    credentials of its own): the pool must grant it (planning.s3access); None otherwise."""
    s3_endpoint: str | None = None
    """spec.source.s3.endpoint, for adapters reading with the pool's identity."""

    @property
    def namespace(self) -> str:
        return _split(self.key)[0]

    @property
    def name(self) -> str:
        return _split(self.key)[1]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one placement decision reads. `assignment` is the persisted desired state
    (what the last plan asked each pod to hold); `serving` is what each pod's agent reported
    loaded and ready. A settled snapshot has both equal to the last plan."""

    pools: tuple[PoolView, ...]
    pods: tuple[PodView, ...]
    adapters: tuple[AdapterView, ...]
    assignment: Mapping[Slot, frozenset[str]] = field(default_factory=dict)
    serving: Mapping[Slot, frozenset[str]] = field(default_factory=dict)


def pod_name(pool_key: str, ordinal: int) -> str:
    """The StatefulSet pod name of a slot: `<pool name>-<ordinal>`."""
    return f"{_split(pool_key)[1]}-{ordinal}"


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def pool_view(pool: BaseModelPool, gpu_costs: Mapping[str, float] | None = None) -> PoolView:
    """A PoolView of a validated BaseModelPool. `gpu_costs` weighs one GPU of each type (for
    example by its hourly price); types it does not name weigh 1, so cost counts GPUs."""
    spec = pool.spec
    namespace = pool.metadata.namespace or "default"
    budget_text = spec.adapters.requests_per_second_per_replica
    # A budget of 0 would admit nothing; the field documents "unset: ignore load", and a zero
    # is read the same way rather than making every adapter unplaceable.
    budget = float(budget_text) if budget_text is not None else None
    weight = (gpu_costs or {}).get(spec.gpu.type, 1.0)
    allowed = frozenset(spec.adapters.allowed_namespaces)
    max_size = spec.adapters.max_adapter_size
    return PoolView(
        key=_key(namespace, pool.metadata.name),
        base_model=spec.base_model.name,
        max_lora_rank=spec.engine.max_lora_rank,
        adapters_per_pod=spec.adapters_per_pod,
        load_budget=budget if budget else None,
        gpus_per_pod=spec.gpu.count,
        cost_per_pod=spec.gpu.count * weight,
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        allowed_namespaces=allowed,
        max_adapter_bytes=parse_quantity(max_size) if max_size is not None else None,
        cache_bytes=parse_quantity(spec.adapters.cache_size),
        gpu_type=spec.gpu.type,
        s3_grants=tuple(
            Grant(frozenset(g.namespaces), tuple(g.uri_prefixes)) for g in spec.adapters.s3_access
        ),
        s3_endpoint=spec.s3.endpoint,
    )


def adapter_view(
    adapter: LoraAdapter, *, rank: int | None = None, size_bytes: int | None = None
) -> AdapterView:
    """An AdapterView of a validated LoraAdapter. Rank and size come from the arguments (what
    the caller read from the artifact), else from status.artifact, else spec.rank; unknown
    values are 0, which placement treats as "fits"."""
    spec = adapter.spec
    namespace = adapter.metadata.namespace or "default"
    artifact = adapter.status.artifact if adapter.status is not None else None
    if rank is None and artifact is not None:
        rank = artifact.rank
    if rank is None:
        rank = spec.rank
    if size_bytes is None and artifact is not None:
        size_bytes = artifact.size_bytes
    pool_ref = None
    if spec.pool_ref is not None:
        pool_ref = _key(spec.pool_ref.namespace or namespace, spec.pool_ref.name)
    load = float(spec.expected_load.requests_per_second) if spec.expected_load else 0.0
    source = spec.source.s3
    own_credentials = source.credentials_secret_ref is not None
    return AdapterView(
        key=_key(namespace, adapter.metadata.name),
        base_model=spec.base_model,
        rank=rank or 0,
        size_bytes=size_bytes or 0,
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        load=load,
        priority=spec.priority,
        pool_ref=pool_ref,
        s3_uri=None if own_credentials else source.uri,
        s3_endpoint=None if own_credentials else source.endpoint,
    )


def snapshot_from_api(
    pools: Sequence[BaseModelPool],
    adapters: Sequence[AdapterView],
    pods: Iterable[PodView] = (),
    assignment: Mapping[Slot, frozenset[str]] | None = None,
    serving: Mapping[Slot, frozenset[str]] | None = None,
    gpu_costs: Mapping[str, float] | None = None,
) -> Snapshot:
    """A Snapshot from API pools (converted with `pool_view`) and ready-made adapter views."""
    return Snapshot(
        pools=tuple(pool_view(p, gpu_costs) for p in pools),
        pods=tuple(pods),
        adapters=tuple(adapters),
        assignment=assignment if assignment is not None else {},
        serving=serving if serving is not None else {},
    )
