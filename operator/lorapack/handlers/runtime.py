"""The operator-wide runtime in kopf's `memo`: clients, stores, the adapter queue, wake-ups.

Handlers translate kopf events into two kinds of work: a pool loop pass (one kopf daemon per
BaseModelPool, woken by its `Waker`) and an adapter pass (a key on the shared `WorkQueue`).
Every event wakes only what it concerns: a pod event its pool and the adapters whose report
changed; an adapter event the pools of its base model, and only when something placement reads
changed; a pool event the adapters of its base model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lorapack.clients.kube import KubeClient
from lorapack.config import OperatorConfig
from lorapack.handlers.adapters_io import S3Access
from lorapack.handlers.state import (
    Claims,
    GroupViews,
    PlacementStore,
    PoolState,
    ReportStore,
    ValidationStore,
    Waker,
    WrittenStatuses,
)
from lorapack.handlers.workqueue import WorkQueue

__all__ = ["Indexes", "Runtime"]


@dataclass
class Indexes:
    """kopf's indexes, captured from the first handler call (kopf fills them all before it
    calls any resource handler, and passes the same live objects every time)."""

    pools: Any = None
    adapters: Any = None
    adapters_by_base: Any = None
    adapters_by_name: Any = None
    pods: Any = None
    slices: Any = None
    services: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def capture(self, kwargs: dict[str, Any]) -> bool:
        """Keep the indexes passed to a handler; True the first time."""
        if self.ready.is_set() or "lorapack_adapters" not in kwargs:
            return False
        self.pools = kwargs["lorapack_pools"]
        self.adapters = kwargs["lorapack_adapters"]
        self.adapters_by_base = kwargs["lorapack_adapters_by_base"]
        self.adapters_by_name = kwargs["lorapack_adapters_by_name"]
        self.pods = kwargs["lorapack_pods"]
        self.slices = kwargs["lorapack_slices"]
        self.services = kwargs["lorapack_services"]
        self.ready.set()
        return True


@dataclass
class Runtime:
    """Operator-wide state; one instance in memo.runtime."""

    config: OperatorConfig
    kube: KubeClient
    loop: asyncio.AbstractEventLoop
    s3: S3Access
    """Shared S3 access: its boto3 clients are cached per endpoint and credentials."""
    queue: WorkQueue | None = None
    """Adapter passes (set at start-up)."""
    indexes: Indexes = field(default_factory=Indexes)
    validations: ValidationStore = field(default_factory=ValidationStore)
    placements: PlacementStore = field(default_factory=PlacementStore)
    pools: dict[str, PoolState] = field(default_factory=dict)
    pool_wakers: dict[str, Waker] = field(default_factory=dict)
    claims: Claims = field(default_factory=Claims)
    reports: ReportStore = field(default_factory=ReportStore)
    adapter_statuses: WrittenStatuses = field(default_factory=WrittenStatuses)
    pool_statuses: WrittenStatuses = field(default_factory=WrittenStatuses)
    group_views: GroupViews = field(default_factory=GroupViews)
    """Each base model's shared placement view (what its pool loops would each compute)."""
    fingerprints: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """adapter key -> what placement reads of it, to wake pools only when that changed."""
    pools_version: int = 0
    """Bumped whenever any pool's spec changes: adapters re-validate against new limits."""

    queue_task: asyncio.Future[None] | None = None

    def capture(self, kwargs: dict[str, Any]) -> None:
        """Called by every resource handler (in kopf's context): keeps the indexes, and starts
        the adapter queue from there the first time, so its passes run in the context kopf
        sets up for handlers (Events are posted through it)."""
        if self.indexes.capture(kwargs) and self.queue is not None:
            self.queue_task = asyncio.ensure_future(self.queue.run())

    def pool_state(self, key: str) -> PoolState:
        return self.pools.setdefault(key, PoolState())

    def pool_waker(self, key: str) -> Waker:
        if key not in self.pool_wakers:
            self.pool_wakers[key] = Waker(self.loop)
        return self.pool_wakers[key]

    def wake_pools(self, keys: Iterable[str]) -> None:
        """Wake the named pool loops."""
        for key in keys:
            waker = self.pool_wakers.get(key)
            if waker is not None:
                waker.set()

    def pools_of_base(self, base: str) -> list[str]:
        """Keys of the pools serving `base`."""
        index = self.indexes.pools
        if index is None or base not in index:
            return []
        return sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in index[base])

    def base_of_pool(self, key: str) -> str | None:
        """The base model of pool `key` ("namespace/name"), from the pool index."""
        index = self.indexes.pools
        for base in index or ():
            if any(f"{p.metadata.namespace}/{p.metadata.name}" == key for p in index[base]):
                return str(base)
        return None

    def wake_adapters(self, keys: Iterable[str]) -> None:
        """Run the named adapters' passes now."""
        if self.queue is not None:
            self.queue.add_many(list(keys))

    def claimants(self, base: str, served_name: str) -> list[str]:
        """Keys of the adapters of `base` claiming `served_name`."""
        index = self.indexes.adapters_by_name
        key = (base, served_name)
        if index is None or key not in index:
            return []
        return sorted(index[key])

    def adapters_of_base(self, base: str) -> list[str]:
        index = self.indexes.adapters_by_base
        if index is None or base not in index:
            return []
        return sorted(index[base])
