"""The placement planner's working state, the facts it keeps per adapter, and pass 1.

`PlannerBase` is one run of `plan_placement` (`planning.packing`): the snapshot indexed by
pool and adapter, each pool's `PoolState`, and what the passes decide. Pass 1 (eligibility)
records, for every adapter, the pools it may use (`planning.eligibility`) and its copies and
load per copy there, or why it is unplaceable. The later passes are mixins on this base:
`planning.keeping` (pass 2), `planning.placing` (pass 3), and `planning.packing`, which runs
them all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lorapack.issues import Issue
from lorapack.planning.eligibility import Eligible, eligible, size_limit, too_large
from lorapack.planning.plan import Move, PlacementPolicy
from lorapack.planning.poolfill import PoolState
from lorapack.planning.scaling import copies_and_load
from lorapack.planning.snapshot import (
    ALL_NAMESPACES,
    AdapterView,
    PodView,
    PoolView,
    Slot,
    Snapshot,
)

__all__ = ["Demand", "PlannerBase"]

# (cands, demand): the pools an adapter may use (sorted by key) and, in the same order, its
# (copies wanted, load per copy, overloaded) in each.
Demand = tuple[int, float, bool]
_Info = tuple[tuple[str, ...], tuple[Demand, ...]]


@dataclass(frozen=True, slots=True)
class _FastPool:
    """A pool's admission rules, flattened for the per-adapter loop."""

    key: str
    allow_all: bool
    namespaces: frozenset[str]
    max_rank: int
    max_replicas: int
    pool_pods: int
    limit: float
    budget: float | None
    members: set[str]
    """The planner's `only_in` set of the pool, filled as adapters are described."""


class PlannerBase:
    """One run of plan_placement: the working state of its passes.

    Most adapters can use exactly one pool; their facts live in flat dicts (`pool_of`,
    `copies_of`, `load_of`, `size_of`) so the passes that touch every adapter stay cheap
    enough to re-plan 10,000 adapters in a few milliseconds. Adapters with a choice of pools
    keep an `_Info` in `multi`.
    """

    def __init__(self, snapshot: Snapshot, policy: PlacementPolicy) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.pools: dict[str, PoolView] = {p.key: p for p in sorted(snapshot.pools, key=_by_key)}
        self.by_model: dict[str, list[PoolView]] = {}
        for pool in self.pools.values():
            self.by_model.setdefault(pool.base_model, []).append(pool)
        pods_of: dict[str, list[PodView]] = {}
        for pod in snapshot.pods:
            pods_of.setdefault(pod.pool, []).append(pod)
        self.states: dict[str, PoolState] = {
            key: PoolState(pool, pods_of.get(key, ())) for key, pool in self.pools.items()
        }
        self.views: dict[str, AdapterView] = {a.key: a for a in snapshot.adapters}
        self.pool_of: dict[str, str] = {}
        self.copies_of: dict[str, int] = {}
        self.load_of: dict[str, float] = {}
        self.size_of: dict[str, int] = {}
        self.overloaded: set[str] = set()
        self.several: set[str] = set()  # adapters (one pool) wanting more than one copy
        self.only_in: dict[str, set[str]] = {key: set() for key in self.pools}
        self.multi: dict[str, _Info] = {}
        self.unplaceable: dict[str, Issue] = {}
        self.warnings: dict[str, str] = {}
        self.count: Counter[str] = Counter()
        self.home: dict[str, str] = {}
        self.removed: dict[str, list[tuple[Slot, str]]] = {}
        self.added: dict[str, list[Slot]] = {}
        self.leaving: list[tuple[str, Slot]] = []
        self.drained: list[Move] = []

    # -- facts about one adapter -------------------------------------------------------------

    def _cands(self, key: str) -> tuple[str, ...]:
        pool = self.pool_of.get(key)
        return (pool,) if pool is not None else self.multi[key][0]

    def _demand(self, key: str, pool_key: str) -> Demand:
        """(copies wanted, load per copy, overloaded) of `key` in `pool_key`."""
        if self.pool_of.get(key) == pool_key:
            return self.copies_of.get(key, 1), self.load_of[key], key in self.overloaded
        info = self.multi.get(key)
        if info is not None and pool_key in info[0]:
            return info[1][info[0].index(pool_key)]
        view = self.views[key]  # a pool that no longer takes it: an old copy
        pool = self.pools[pool_key]
        return copies_and_load(
            view.min_replicas,
            view.max_replicas,
            view.load,
            pool.load_budget,
            pool.max_replicas,
        )

    def _home(self, key: str) -> str:
        pool = self.pool_of.get(key)
        if pool is not None:
            return pool
        return self.home.get(key) or self.multi[key][0][0]

    def _copy(self, key: str, pool_key: str) -> tuple[int, float]:
        """(bytes, load) one copy of `key` takes in `pool_key`."""
        return self.views[key].size_bytes, self._demand(key, pool_key)[1]

    # -- 1. eligibility ---------------------------------------------------------------------

    def _describe_adapters(self) -> None:
        # The common case first: no pin, one pool serves the base model, and the pool takes
        # the adapter. Everything else goes through `eligible`, memoised per kind of adapter.
        single: dict[str, _FastPool] = {}
        for base, pools in self.by_model.items():
            if len(pools) == 1:
                pool = pools[0]
                allowed = pool.allowed_namespaces | {pool.namespace}
                single[base] = _FastPool(
                    key=pool.key,
                    allow_all=ALL_NAMESPACES in allowed,
                    namespaces=allowed,
                    max_rank=pool.max_lora_rank,
                    max_replicas=pool.max_replicas,
                    pool_pods=pool.max_replicas,
                    limit=size_limit(pool),
                    budget=pool.load_budget,
                    members=self.only_in[pool.key],
                )
        memo: dict[tuple[str, str, int, str | None, int], Eligible | Issue] = {}
        pool_of, copies_of, load_of = self.pool_of, self.copies_of, self.load_of
        size_of, single_get = self.size_of, single.get
        for adapter in self.snapshot.adapters:
            fast = single_get(adapter.base_model) if adapter.pool_ref is None else None
            if fast is not None:
                key = adapter.key
                size = adapter.size_bytes
                low = adapter.min_replicas
                if (
                    (fast.allow_all or key[: key.find("/")] in fast.namespaces)
                    and adapter.rank <= fast.max_rank
                    and 0 < low <= fast.max_replicas
                    and size <= fast.limit
                ):
                    load = adapter.load
                    budget = fast.budget
                    if budget is None or load <= budget * low:
                        copies, per_copy = low, load / low
                    else:
                        copies, per_copy, over = copies_and_load(
                            low, adapter.max_replicas, load, budget, fast.pool_pods
                        )
                        if over:
                            self.overloaded.add(key)
                    if copies != 1:
                        copies_of[key] = copies  # absent means one copy
                        self.several.add(key)
                    pool_of[key] = fast.key
                    load_of[key] = per_copy
                    size_of[key] = size
                    fast.members.add(key)
                    continue
            self._describe_slowly(adapter, memo)

    def _describe_slowly(
        self,
        adapter: AdapterView,
        memo: dict[tuple[str, str, int, str | None, int], Eligible | Issue],
    ) -> None:
        key = adapter.key
        namespace = adapter.namespace
        memo_key = (
            adapter.base_model,
            namespace,
            adapter.rank,
            adapter.pool_ref,
            adapter.min_replicas,
        )
        found = memo.get(memo_key)
        if found is None:
            found = memo[memo_key] = eligible(adapter, namespace, self.pools, self.by_model)
        if isinstance(found, Issue):
            self.unplaceable[key] = found
            return
        size = adapter.size_bytes
        keys = tuple(k for k, lim in zip(found.keys, found.limits, strict=True) if size <= lim)
        if not keys:
            self.unplaceable[key] = too_large(adapter, found)
            return
        demand = tuple(
            copies_and_load(
                adapter.min_replicas,
                adapter.max_replicas,
                adapter.load,
                self.pools[k].load_budget,
                self.pools[k].max_replicas,
            )
            for k in keys
        )
        if len(keys) > 1:
            self.multi[key] = (keys, demand)
            return
        self.pool_of[key] = keys[0]
        copies, self.load_of[key], over = demand[0]
        if copies != 1:
            self.copies_of[key] = copies
            self.several.add(key)
        self.size_of[key] = size
        self.only_in[keys[0]].add(key)
        if over:
            self.overloaded.add(key)


def _by_key(pool: PoolView) -> str:
    return pool.key
