"""The placement engine: which pods of which pool hold which adapters, and how many pods each
pool needs.

`plan_placement(snapshot)` is pure and deterministic. The pool's placement loop calls it with
the persisted assignment and what the agents report serving; `lorapack plan` calls it on YAML
from a GitOps repository; `bench/placement.py` measures it. One pass:

1. Eligibility. An adapter may use a pool that serves its base model, allows its namespace,
   takes its rank (engine.maxLoraRank) and size, and is the pool it pins, if any. When no pool
   is left, the adapter is unplaceable with the reason of the check that removed the last one
   and a message saying what to change.
2. Keep what is placed (stability). Copies stay where they are unless their pod is gone, the
   pool no longer takes the adapter, the pod is over capacity, or the adapter wants fewer
   copies. Old copies that serve stay (as "leaving") until the replacement serves.
3. Place what is missing. Each pool opens as many pods as the lower bound of its demand says
   (scale-out, up to replicas.max); copies go higher priority first, then busiest, then
   largest, each to the open pod least full in its tightest dimension (slots, cache bytes,
   load). Busy copies thus spread first and their pods are left for the quietest adapters,
   which is what lets a pool run at its lower bound; a pod is opened beyond it only when no
   open pod fits. An adapter new to placement that may use several pools first takes room
   already paid for, then the pool where its copies cost least.
4. Consolidate (`planning.consolidation`): drain the highest pods when that pays (scale-in).

Objectives, in order: fewest pods by cost, fewest moves of placed adapters, balanced pods.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lorapack.api import conditions
from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS
from lorapack.planning.consolidation import drain_highest
from lorapack.planning.scaling import EPSILON, PoolState, copies_and_load, dominant_share
from lorapack.planning.snapshot import (
    ALL_NAMESPACES,
    AdapterView,
    PodView,
    PoolView,
    Slot,
    Snapshot,
)

__all__ = [
    "CONSOLIDATION",
    "NOT_ELIGIBLE",
    "OVER_CAPACITY",
    "POD_LOST",
    "POOL_CHANGED",
    "POOL_DELETED",
    "POOL_SHRUNK",
    "Move",
    "PlacementPlan",
    "PlacementPolicy",
    "PoolPlan",
    "Unplaceable",
    "plan_placement",
]

# Why a copy left its pod (Move.reason).
POD_LOST = "PodLost"
POOL_DELETED = "PoolDeleted"
POOL_SHRUNK = "PoolMaxReplicasLowered"
NOT_ELIGIBLE = "NoLongerEligible"
POOL_CHANGED = "PoolChanged"
OVER_CAPACITY = "OverCapacity"
CONSOLIDATION = "Consolidation"

_NO_SLOTS: frozenset[str] = frozenset()


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
class Unplaceable:
    """Why an adapter has no (or not enough) copies, and what to change."""

    reason: str
    """A reason from lorapack.api.conditions, e.g. RankTooLarge."""
    message: str


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
    unplaceable: Mapping[str, Unplaceable]
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
            if adapter in held and adapter not in plan.leaving.get(o, _NO_SLOTS)
        ]


_DEFAULT_POLICY = PlacementPolicy()


def plan_placement(snapshot: Snapshot, policy: PlacementPolicy = _DEFAULT_POLICY) -> PlacementPlan:
    """Decide placement for `snapshot`; pure and deterministic (stable tie-breaks, no clock,
    no randomness). Re-planning a settled snapshot returns the same assignment and no moves."""
    return _Planner(snapshot, policy).run()


# (cands, demand): the pools an adapter may use (sorted by key) and, in the same order, its
# (copies wanted, load per copy, overloaded) in each.
_Demand = tuple[int, float, bool]
_Info = tuple[tuple[str, ...], tuple[_Demand, ...]]


@dataclass(frozen=True, slots=True)
class _Eligible:
    """The pools adapters of one kind may use (see _Planner._describe_adapters)."""

    keys: tuple[str, ...]
    limits: tuple[float, ...]
    """Largest adapter each pool accepts, in bytes."""
    largest: float


@dataclass(frozen=True, slots=True)
class _FastPool:
    """A pool's admission rules, flattened for the per-adapter loop."""

    key: str
    allow_all: bool
    namespaces: frozenset[str]
    max_rank: int
    max_replicas: int
    usable: int
    limit: float
    budget: float | None
    members: set[str]
    """The planner's `only_in` set of the pool, filled as adapters are described."""


class _Planner:
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
        self.unplaceable: dict[str, Unplaceable] = {}
        self.warnings: dict[str, str] = {}
        self.count: Counter[str] = Counter()
        self.home: dict[str, str] = {}
        self.removed: dict[str, list[tuple[Slot, str]]] = {}
        self.added: dict[str, list[Slot]] = {}
        self.leaving: list[tuple[str, Slot]] = []
        self.drained: list[Move] = []

    def run(self) -> PlacementPlan:
        self._describe_adapters()
        self._read_assignment()
        surplus, missing = self._compare()
        self._trim(surplus, missing)
        self._place_missing(missing)
        if self.policy.consolidate:
            self._consolidate()
        self._settle_leaving()
        return self._assemble()

    # -- facts about one adapter -------------------------------------------------------------

    def _cands(self, key: str) -> tuple[str, ...]:
        pool = self.pool_of.get(key)
        return (pool,) if pool is not None else self.multi[key][0]

    def _demand(self, key: str, pool_key: str) -> _Demand:
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
            self.states[pool_key].usable_count,
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
        # the adapter. Everything else goes through `_eligible`, memoised per kind of adapter.
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
                    usable=self.states[pool.key].usable_count,
                    limit=_size_limit(pool),
                    budget=pool.load_budget,
                    members=self.only_in[pool.key],
                )
        memo: dict[tuple[str, str, int, str | None, int], _Eligible | Unplaceable] = {}
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
                            low, adapter.max_replicas, load, budget, fast.usable
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
        memo: dict[tuple[str, str, int, str | None, int], _Eligible | Unplaceable],
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
            found = memo[memo_key] = self._eligible(adapter, namespace)
        if isinstance(found, Unplaceable):
            self.unplaceable[key] = found
            return
        size = adapter.size_bytes
        keys = tuple(k for k, lim in zip(found.keys, found.limits, strict=True) if size <= lim)
        if not keys:
            self.unplaceable[key] = self._too_large(adapter, found)
            return
        demand = tuple(
            copies_and_load(
                adapter.min_replicas,
                adapter.max_replicas,
                adapter.load,
                self.pools[k].load_budget,
                self.states[k].usable_count,
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

    def _eligible(self, adapter: AdapterView, namespace: str) -> _Eligible | Unplaceable:
        """Pools the adapter may use, or why none; checks in the order a person would fix them."""
        base = adapter.base_model
        if adapter.pool_ref is not None:
            pinned = self.pools.get(adapter.pool_ref)
            if pinned is None:
                return Unplaceable(
                    conditions.POOL_NOT_FOUND,
                    f"spec.poolRef names pool {adapter.pool_ref}, which does not exist: fix "
                    f"spec.poolRef, or remove it to let lorapack choose a pool serving {base}",
                )
            if pinned.base_model != base:
                return Unplaceable(
                    conditions.BASE_MODEL_MISMATCH,
                    f"spec.poolRef names pool {pinned.key}, which serves {pinned.base_model}, "
                    f"not {base}: fix spec.baseModel or spec.poolRef",
                )
            pools = [pinned]
        else:
            pools = self.by_model.get(base, [])
            if not pools:
                served = sorted(self.by_model)
                known = f" (pools serve: {', '.join(served)})" if served else ""
                return Unplaceable(
                    conditions.NO_POOL,
                    f"no BaseModelPool serves base model {base}{known}: fix spec.baseModel, "
                    f"or ask the platform team for a pool with spec.baseModel.name {base}",
                )
        allowed = [p for p in pools if p.allows_namespace(namespace)]
        if not allowed:
            return Unplaceable(
                conditions.NAMESPACE_NOT_ALLOWED,
                f"namespace {namespace} may not use {_names(pools)} "
                f"(spec.adapters.allowedNamespaces): ask the platform team to add {namespace} "
                "to a pool serving the base model, or create the adapter in an allowed namespace",
            )
        ranked = [p for p in allowed if adapter.rank <= p.max_lora_rank]
        if not ranked:
            highest = max(p.max_lora_rank for p in allowed)
            scope = "the pool's" if len(allowed) == 1 else "every pool's"
            return Unplaceable(
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
            return Unplaceable(
                conditions.POOL_AT_MAX_REPLICAS,
                f"spec.replicas.min is {adapter.min_replicas}, but {_names(ranked)} can run at "
                f"most {most} pods (spec.replicas.max) and copies need distinct pods: lower "
                f"spec.replicas.min to {most} or ask for a higher replicas.max",
            )
        limits = tuple(_size_limit(p) for p in wide)
        return _Eligible(keys=tuple(p.key for p in wide), limits=limits, largest=max(limits))

    def _too_large(self, adapter: AdapterView, found: _Eligible) -> Unplaceable:
        return Unplaceable(
            conditions.ADAPTER_TOO_LARGE,
            f"adapter files take {_size_text(adapter.size_bytes)}, more than "
            f"{', '.join(found.keys)} accept (largest: {_size_text(int(found.largest))}; "
            "spec.adapters.maxAdapterSize or cacheSize): save the adapter in bfloat16 or with a "
            "lower rank, or ask the platform team to raise the limit",
        )

    # -- 2. what is placed stays -------------------------------------------------------------

    def _read_assignment(self) -> None:
        """Adopt the persisted copies that still hold; note the ones that must go."""
        views, states, count = self.views, self.states, self.count
        size_at, load_at = self.size_of.__getitem__, self.load_of.__getitem__
        pending: dict[str, list[Slot]] = {}
        for slot, held in self.snapshot.assignment.items():
            if not held:
                continue
            pool_key, ordinal = slot
            state = states.get(pool_key)
            if state is None or ordinal >= state.pool.max_replicas or not state.usable[ordinal]:
                if state is None:
                    reason = POOL_DELETED
                elif ordinal >= state.pool.max_replicas:
                    reason = POOL_SHRUNK
                else:
                    reason = POD_LOST
                for key in held:
                    if key in views:
                        self.removed.setdefault(key, []).append((slot, reason))
                continue
            # The common case, in C loops: every adapter on the pod may only use this pool.
            if held <= self.only_in[pool_key]:
                state.adopt(ordinal, held, sum(map(size_at, held)), sum(map(load_at, held)))
                count.update(held)
                continue
            for key in held:
                pending.setdefault(key, []).append(slot)
        for key in sorted(pending):
            self._adopt_pending(key, pending[key])

    def _adopt_pending(self, key: str, slots: list[Slot]) -> None:
        """Copies that need a look one by one: ineligible, pinned elsewhere, or of an adapter
        that may use several pools (its home is the first candidate pool holding a copy)."""
        view = self.views.get(key)
        if view is None:
            return  # the adapter was deleted: its copies simply go
        if key not in self.pool_of and key not in self.multi:
            for slot in slots:
                self.removed.setdefault(key, []).append((slot, NOT_ELIGIBLE))
            return
        cands = self._cands(key)
        home = self.home.get(key)
        if home is None and self.count.get(key):
            home = cands[0]  # copies were adopted whole, in the only pool it may use
        if home is None:
            held_in = {pool for pool, _ in slots}
            home = next((p for p in cands if p in held_in), None)
        for slot in sorted(slots):
            pool_key, ordinal = slot
            if pool_key == home:
                nbytes, load = self._copy(key, pool_key)
                self.states[pool_key].add(ordinal, key, nbytes, load)
                self.count[key] += 1
                self.home[key] = home
                continue
            # Another pool that would still take it (its pin moved, or it has copies in two
            # pools): the old copy may serve until the new ones do. Otherwise it goes now.
            still = pool_key in cands or self._accepts(pool_key, view)
            self.removed.setdefault(key, []).append((slot, POOL_CHANGED if still else NOT_ELIGIBLE))
            if still:
                self._maybe_keep_leaving(key, slot)

    def _accepts(self, pool_key: str, view: AdapterView) -> bool:
        """Whether the pool would still serve the adapter (only its pin moved it away)."""
        pool = self.pools[pool_key]
        return (
            pool.base_model == view.base_model
            and pool.allows_namespace(view.namespace)
            and view.rank <= pool.max_lora_rank
            and view.size_bytes <= _size_limit(pool)
        )

    def _maybe_keep_leaving(self, key: str, slot: Slot) -> None:
        """Keep an old copy that serves, for now; `_settle_leaving` decides at the end."""
        if key not in self.snapshot.serving.get(slot, _NO_SLOTS):
            return
        pool_key, ordinal = slot
        nbytes, load = self._copy(key, pool_key)
        self.states[pool_key].keep_leaving(ordinal, key, nbytes, load)
        self.leaving.append((key, slot))

    def _compare(self) -> tuple[list[str], list[str]]:
        """Adapters with more copies than they want, and adapters with fewer."""
        count = self.count
        # Most adapters want one copy and have it: set operations and one pass over the counts
        # find the others without a Python-level look at every adapter.
        absent = self.pool_of.keys() - count.keys()
        odd = {k for k, n in count.items() if n != 1} | self.several | self.multi.keys()
        surplus: list[str] = []
        missing = list(absent - odd)
        for key in odd:
            if key not in self.pool_of and key not in self.multi:
                continue
            have = count.get(key, 0)
            copies = self._demand(key, self._home(key))[0]
            if have < copies:
                missing.append(key)
            elif have > copies:
                surplus.append(key)
        return surplus, missing

    def _trim(self, surplus: list[str], missing: list[str]) -> None:
        """Drop copies an adapter no longer wants, then relieve pods over capacity (the
        adapters whose copies leave join `missing`)."""
        for key in sorted(surplus):
            home = self._home(key)
            copies = self._demand(key, home)[0]
            nbytes, load = self._copy(key, home)
            state = self.states[home]
            ordinals = state.ordinals_of(key)
            # Copies on pods over capacity go first, then the highest ordinals (scale-in).
            ordinals.sort(key=lambda o: (state.over_capacity(o), o), reverse=True)
            for ordinal in ordinals[: len(ordinals) - copies]:
                state.remove(ordinal, key, nbytes, load)
                self.count[key] -= 1
                self._maybe_keep_leaving(key, (home, ordinal))
        for pool_key, state in self.states.items():
            for ordinal in range(state.extent):
                if state.over_capacity(ordinal):
                    missing.extend(self._evict(pool_key, state, ordinal))

    def _evict(self, pool_key: str, state: PoolState, ordinal: int) -> list[str]:
        """Move copies off a pod over capacity (its pool's limits shrank, or loads grew): the
        lowest priority first, then the busiest."""
        victims = sorted(
            state.members[ordinal],
            key=lambda k: (self.views[k].priority, -self._copy(k, pool_key)[1], k),
        )
        evicted: list[str] = []
        for key in victims:
            if not state.over_capacity(ordinal):
                break
            evicted.append(key)
            nbytes, load = self._copy(key, pool_key)
            state.remove(ordinal, key, nbytes, load)
            self.count[key] -= 1
            slot = (pool_key, ordinal)
            self.removed.setdefault(key, []).append((slot, OVER_CAPACITY))
            self._maybe_keep_leaving(key, slot)
        return evicted

    # -- 3. place what is missing ------------------------------------------------------------

    def _place_missing(self, missing: list[str]) -> None:
        todo: list[tuple[int, float, float, str]] = []
        pool_of, copies_of, load_of, size_of = (
            self.pool_of,
            self.copies_of,
            self.load_of,
            self.size_of,
        )
        count_get, views, pools = self.count.get, self.views, self.pools
        floor_of: dict[str, tuple[int, float]] = {}
        for key in set(missing):
            have = count_get(key, 0)
            pool_key = pool_of.get(key)
            if pool_key is not None:
                copies, load, size = copies_of.get(key, 1), load_of[key], size_of[key]
                floor_of[key] = (size, load)
            else:
                pool_key = self._home(key) if have else self._cands(key)[0]
                copies, load, _ = self._demand(key, pool_key)
                size = views[key].size_bytes
                floor_of[key] = (size, min(self._demand(key, p)[1] for p in self._cands(key)))
            if have >= copies:
                continue
            pool = pools[pool_key]
            busy = load / pool.load_budget if pool.load_budget else 0.0
            share = dominant_share(pool, size, load)
            todo.append((-views[key].priority, -busy, -share, key))
        if not todo:
            return
        # Higher priority first (placed while there is room), then the busiest copies (a pod a
        # hot copy fills is then left for the quietest adapters), then the largest: first fit
        # decreasing, the order that packs best.
        todo.sort()
        chosen = self._choose_pools([t[3] for t in todo])
        # Smallest size and load still to come, per position: pods that cannot take even those
        # are closed for the rest of the batch.
        floors: list[tuple[int, float]] = [(0, 0.0)] * len(todo)
        low_bytes, low_load = 2**63, math.inf
        for position in range(len(todo) - 1, -1, -1):
            size, load = floor_of[todo[position][3]]
            low_bytes = min(low_bytes, size)
            low_load = min(low_load, load)
            floors[position] = (low_bytes, low_load)
        for position, (_, _, _, key) in enumerate(todo):
            self._place(key, chosen[key], floors[position])

    def _choose_pools(self, keys: list[str]) -> dict[str, str]:
        """The pool each adapter to place goes to, and the pods each pool opens for them.

        An adapter with copies, or one that only one pool takes, has no choice. One that may
        use several pools takes room already paid for (pods its pools run anyway for the
        adapters without a choice) if a pool has it, else goes where its copies cost least.
        Demand is counted as a fluid (sums against per-pod capacity), which is what the lower
        bound of a pool's pod count is made of; each pool then opens that many pods so the
        copies can be spread over them.
        """
        fluid = {k: list(st.used()) for k, st in self.states.items()}
        widest = dict.fromkeys(self.states, 0)
        chosen: dict[str, str] = {}
        choosing: list[str] = []
        pool_of, count_get = self.pool_of, self.count.get
        for key in keys:
            have = count_get(key, 0)
            pool_key = pool_of.get(key) or (self._home(key) if have else None)
            if pool_key is None:
                choosing.append(key)
                continue
            chosen[key] = pool_key
            self._add_fluid(key, pool_key, have, fluid[pool_key], widest)
        paid = {
            k: max(st.extent, _pods_for(st.pool, *fluid[k]), widest[k])
            for k, st in self.states.items()
        }
        for key in choosing:
            size = self.views[key].size_bytes
            best: tuple[bool, float, str] | None = None
            for pool_key in self._cands(key):
                copies, load, _ = self._demand(key, pool_key)
                pool = self.pools[pool_key]
                slots, nbytes, total = fluid[pool_key]
                pods = _pods_for(
                    pool, slots + copies, nbytes + copies * size, total + copies * load
                )
                pods = max(pods, widest[pool_key], copies)
                if pods > self.states[pool_key].usable_count:
                    continue
                rate = pool.cost_per_pod * copies * dominant_share(pool, size, load)
                option = (pods > paid[pool_key], rate, pool_key)
                if best is None or option < best:
                    best = option
            pool_key = best[2] if best is not None else self._cands(key)[0]
            chosen[key] = pool_key
            self._add_fluid(key, pool_key, 0, fluid[pool_key], widest)
            paid[pool_key] = max(paid[pool_key], _pods_for(self.pools[pool_key], *fluid[pool_key]))
        for pool_key, state in self.states.items():
            need = max(_pods_for(state.pool, *fluid[pool_key]), widest[pool_key])
            # Lost pods keep their ordinals (a StatefulSet cannot skip one): open past them.
            lost = sum(1 for o in range(min(need, len(state.usable))) if not state.usable[o])
            if need + lost > state.extent:
                state.open_pods(need + lost)
        return chosen

    def _add_fluid(
        self, key: str, pool_key: str, have: int, totals: list[float], widest: dict[str, int]
    ) -> None:
        copies, load, _ = self._demand(key, pool_key)
        grown = copies - have
        totals[0] += grown
        totals[1] += grown * self.views[key].size_bytes
        totals[2] += grown * load
        widest[pool_key] = max(widest[pool_key], copies)

    def _place(self, key: str, pool_key: str, floor: tuple[int, float]) -> None:
        if self._place_in(key, pool_key, floor):
            return
        if self.count.get(key):
            return  # an adapter with copies never changes pool to get more
        cands = self._cands(key)
        for other in cands:
            if other != pool_key and self._place_in(key, other, floor):
                return
        self.unplaceable[key] = self._full(self.views[key], cands)

    def _place_in(self, key: str, pool_key: str, floor: tuple[int, float]) -> bool:
        """Place the copies `key` is missing in one pool; all-or-nothing up to replicas.min."""
        view = self.views[key]
        copies, load, overloaded = self._demand(key, pool_key)
        state = self.states[pool_key]
        have = self.count.get(key, 0)
        avoid: set[str | None] = set()
        if have:
            avoid = {state.node[o] for o in state.ordinals_of(key)}
        placed: list[int] = []
        for _ in range(copies - have):
            avoid.discard(None)
            ordinal = state.roomiest(
                key,
                view.size_bytes,
                load,
                avoid_nodes=avoid,
                floor_bytes=floor[0],
                floor_load=floor[1],
            )
            if ordinal is None:
                break
            state.add(ordinal, key, view.size_bytes, load)
            placed.append(ordinal)
            avoid.add(state.node[ordinal])
        total = have + len(placed)
        if total < view.min_replicas and not have:
            for ordinal in placed:
                state.remove(ordinal, key, view.size_bytes, load)
            return False
        self.count[key] = total
        self.home[key] = pool_key
        self.added.setdefault(key, []).extend((pool_key, o) for o in placed)
        if total < view.min_replicas:
            self.unplaceable[key] = Unplaceable(
                conditions.POOL_AT_MAX_REPLICAS,
                f"only {total} of spec.replicas.min={view.min_replicas} copies fit: pool "
                f"{pool_key} is at replicas.max ({state.pool.max_replicas} pods) with no room on "
                "other pods: ask the platform team to raise the pool's replicas.max, or lower "
                "spec.replicas.min",
            )
        elif total < copies:
            self.warnings[key] = (
                f"{total} of the {copies} copies its expected load needs fit in pool {pool_key}:"
                " its pods may run above their load budget; ask for a higher replicas.max of "
                "the pool"
            )
        elif overloaded:
            self.warnings[key] = (
                f"spec.expectedLoad ({view.load:g} rps) is more than {copies} copies "
                f"(spec.replicas.max) can serve within the pool's {state.pool.load_budget:g} "
                "rps per pod: raise spec.replicas.max"
            )
        return True

    def _full(self, view: AdapterView, cands: tuple[str, ...]) -> Unplaceable:
        pools = [self.pools[p] for p in cands]
        limits = ", ".join(f"{p.key} (replicas.max {p.max_replicas})" for p in pools)
        what = (
            "the pool that can serve it is"
            if len(pools) == 1
            else "the pools that can serve it are"
        )
        copies = "1 copy" if view.min_replicas == 1 else f"{view.min_replicas} copies"
        return Unplaceable(
            conditions.POOL_AT_MAX_REPLICAS,
            f"no room for {copies}: {what} full at replicas.max: {limits}: ask the platform "
            "team to raise replicas.max, or free room by lowering other adapters' replicas",
        )

    # -- 4. consolidate, then settle make-before-break ---------------------------------------

    def _consolidate(self) -> None:
        added = self.added

        def placed_now(key: str, ordinal: int) -> bool:
            return any(o == ordinal for _, o in added.get(key, ()))

        def copies(key: str) -> int:
            return self.count.get(key, 0)

        for pool_key, state in self.states.items():
            if state.highest_member_pod() is None:
                continue

            def demand(key: str, pool_key: str = pool_key) -> tuple[int, float]:
                return self._copy(key, pool_key)

            drains = drain_highest(
                state, demand, placed_now, copies, self.policy.max_moves_per_cost
            )
            for drain in drains:
                source, target = (pool_key, drain.source), (pool_key, drain.target)
                if drain.disruptive:
                    self.drained.append(Move(drain.adapter, source, target, CONSOLIDATION))
                    self._maybe_keep_leaving(drain.adapter, source)
                else:
                    slots = added[drain.adapter]
                    slots[slots.index(source)] = target

    def _settle_leaving(self) -> None:
        """Keep an old copy only while the adapter's new copies do not yet serve as many as
        were ready before: an adapter never drops below its ready replicas during a move."""
        by_adapter: dict[str, list[Slot]] = {}
        for key, slot in self.leaving:
            by_adapter.setdefault(key, []).append(slot)
        serving = self.snapshot.serving
        for key in sorted(by_adapter):
            old = sorted(set(by_adapter[key]))
            target_serving = 0
            copies = self.views[key].min_replicas
            if self.count.get(key):
                home = self._home(key)
                copies = self._demand(key, home)[0]
                target_serving = sum(
                    1
                    for o in self.states[home].ordinals_of(key)
                    if key in serving.get((home, o), _NO_SLOTS)
                )
            need = min(len(old) + target_serving, copies) - target_serving
            for index, (pool_key, ordinal) in enumerate(old):
                if index >= need:
                    nbytes, load = self._copy(key, pool_key)
                    self.states[pool_key].drop_leaving(ordinal, key, nbytes, load)

    # -- assembling the plan -----------------------------------------------------------------

    def _assemble(self) -> PlacementPlan:
        pools: dict[str, PoolPlan] = {}
        for pool_key, state in self.states.items():
            replicas = state.desired_replicas()
            leaving = {o: frozenset(state.leaving[o]) for o in range(replicas) if state.leaving[o]}
            pools[pool_key] = PoolPlan(
                pool=pool_key,
                desired_replicas=replicas,
                assignment=MappingProxyType(state.assignment(replicas)),
                leaving=MappingProxyType(leaving),
            )
        moves = list(self.drained)
        for key in sorted(self.removed):
            targets = sorted(self.added.get(key, ()))
            for index, (slot, reason) in enumerate(sorted(self.removed[key])):
                target = targets[index] if index < len(targets) else None
                moves.append(Move(key, slot, target, reason))
        moves.sort(key=lambda m: (m.adapter, m.source))
        return PlacementPlan(
            pools=MappingProxyType(pools),
            adapter_pool=_AdapterPools(self.count, self.pool_of, self.home),
            unplaceable=MappingProxyType(dict(sorted(self.unplaceable.items()))),
            replicas=_Replicas(self.count),
            moves=tuple(moves),
            warnings=MappingProxyType(dict(sorted(self.warnings.items()))),
        )


class _Replicas(Mapping[str, int]):
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


class _AdapterPools(Mapping[str, str]):
    """adapter -> pool for adapters with copies: a read-only view like `_Replicas`. Adapters
    only one pool takes are in that pool; the others recorded their home."""

    __slots__ = ("_home", "_only", "_replicas")

    def __init__(
        self, count: Mapping[str, int], only: Mapping[str, str], home: Mapping[str, str]
    ) -> None:
        self._replicas = _Replicas(count)
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


def _next_rank(rank: int) -> int:
    return next((r for r in ALLOWED_LORA_RANKS if r >= rank), ALLOWED_LORA_RANKS[-1])


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _names(pools: list[PoolView]) -> str:
    return ", ".join(p.key for p in pools)


def _by_key(pool: PoolView) -> str:
    return pool.key


def _pods_for(pool: PoolView, slots: float, nbytes: float, load: float) -> int:
    """Pods a fluid demand needs: the tightest of slots, cache bytes and load budget."""
    pods = math.ceil(slots / pool.adapters_per_pod - EPSILON)
    if pool.cache_bytes:
        pods = max(pods, math.ceil(nbytes / pool.cache_bytes - EPSILON))
    if pool.load_budget:
        pods = max(pods, math.ceil(load / pool.load_budget - EPSILON))
    return max(pods, pool.min_replicas)


def _size_limit(pool: PoolView) -> float:
    limits = [x for x in (pool.max_adapter_bytes, pool.cache_bytes) if x]
    return min(limits) if limits else math.inf
