"""The result of placement: `PlacementPlan` and its parts, the knobs, and the move reasons.

`plan_placement` (`planning.packing`) returns a `PlacementPlan`: per pool a `PoolPlan` (pods to
run and what each holds, old copies kept until their replacement serves), adapter -> pool and
copies, `Issue` reasons with the fix, `Move`s with their reason, and warnings.
`PlacementPolicy` holds the trade-offs a run makes. Read by the pool reconciler, `lorapack
plan` and bench/placement.py; built by the planner's passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from lorapack.issues import Issue
from lorapack.planning.snapshot import Slot

__all__ = [
    "CONSOLIDATION",
    "NOT_ELIGIBLE",
    "NO_SLOTS",
    "OVER_CAPACITY",
    "POD_LOST",
    "POOL_CHANGED",
    "POOL_DELETED",
    "POOL_SHRUNK",
    "AdapterPools",
    "Move",
    "PlacementPlan",
    "PlacementPolicy",
    "PoolPlan",
    "Replicas",
]

# Why a copy left its pod (Move.reason).
POD_LOST = "PodLost"
POOL_DELETED = "PoolDeleted"
POOL_SHRUNK = "PoolMaxReplicasLowered"
NOT_ELIGIBLE = "NoLongerEligible"
POOL_CHANGED = "PoolChanged"
OVER_CAPACITY = "OverCapacity"
CONSOLIDATION = "Consolidation"

NO_SLOTS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    """Knobs of the trade-offs placement makes."""

    consolidate: bool = True
    """Drain the highest pods of a pool when their adapters fit on lower pods."""
    max_moves_per_cost: float = 64.0
    """A drain may move at most this many already placed copies per unit of pod cost (GPUs)
    it saves; moving an adapter costs a download and a load, a pod costs a GPU for as long as
    it runs."""


@dataclass(frozen=True, slots=True)
class Move:
    """A copy of an adapter that this plan takes off a pod, and where it goes instead."""

    adapter: str
    source: Slot
    target: Slot | None
    """None when no pod could take it."""
    reason: str
    """PodLost, PoolDeleted, PoolMaxReplicasLowered, NoLongerEligible, PoolChanged,
    OverCapacity or Consolidation."""


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """One pool's part of a plan."""

    pool: str
    desired_replicas: int
    """Pods the pool should run: within replicas.min and replicas.max, and never below one
    more than the highest ordinal holding anything (leaving copies included)."""
    assignment: Mapping[int, frozenset[str]]
    """ordinal -> adapters the pod should hold, leaving copies included, for every pod below
    desired_replicas."""
    leaving: Mapping[int, frozenset[str]] = field(default_factory=dict)
    """ordinal -> old copies kept only until their replacement serves (make-before-break)."""


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """The decision: where every adapter goes, pods per pool, and what could not be placed."""

    pools: Mapping[str, PoolPlan]
    adapter_pool: Mapping[str, str]
    """adapter -> pool serving it, for adapters with at least one copy."""
    unplaceable: Mapping[str, Issue]
    """Adapters with fewer than replicas.min copies (those with some keep them)."""
    replicas: Mapping[str, int]
    """adapter -> copies placed (leaving copies not counted)."""
    moves: tuple[Move, ...] = ()
    """Copies this plan takes off their pods, for reporting."""
    warnings: Mapping[str, str] = field(default_factory=dict)
    """adapter -> a problem that does not stop it being served (e.g. more load than its
    replicas.max copies can take within the pools' load budget)."""

    def slots_of(self, adapter: str) -> list[Slot]:
        """The pods holding `adapter` (leaving copies excluded), lowest ordinal first."""
        pool = self.adapter_pool.get(adapter)
        if pool is None:
            return []
        plan = self.pools[pool]
        return [
            (pool, o)
            for o, held in sorted(plan.assignment.items())
            if adapter in held and adapter not in plan.leaving.get(o, NO_SLOTS)
        ]


class Replicas(Mapping[str, int]):
    """adapter -> copies placed: a read-only view of a finished run's counts, zeros left out
    (building a dict of 10,000 entries would be a good part of an incremental decision)."""

    __slots__ = ("_count", "_size")

    def __init__(self, count: Mapping[str, int]) -> None:
        self._count = count
        self._size: int | None = None

    def __getitem__(self, key: str) -> int:
        copies = self._count.get(key, 0)
        if copies <= 0:
            raise KeyError(key)
        return copies

    def __iter__(self) -> Iterator[str]:
        return (key for key, copies in self._count.items() if copies > 0)

    def __len__(self) -> int:
        if self._size is None:
            self._size = sum(1 for copies in self._count.values() if copies > 0)
        return self._size

    def __repr__(self) -> str:
        return repr(dict(self))


class AdapterPools(Mapping[str, str]):
    """adapter -> pool for adapters with copies: a read-only view like `Replicas`. Adapters
    only one pool takes are in that pool; the others recorded their home."""

    __slots__ = ("_home", "_only", "_replicas")

    def __init__(
        self, count: Mapping[str, int], only: Mapping[str, str], home: Mapping[str, str]
    ) -> None:
        self._replicas = Replicas(count)
        self._only = only
        self._home = home

    def __getitem__(self, key: str) -> str:
        self._replicas[key]  # KeyError for adapters without copies
        return self._home.get(key) or self._only[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __repr__(self) -> str:
        return repr(dict(self))
