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

The passes live in their own modules: `planning.planner` (working state, pass 1, with the
checks of `planning.eligibility`), `planning.keeping` (pass 2), `planning.placing` (pass 3)
and `planning.consolidation` (pass 4); the result types are in `planning.plan` and are
re-exported here.
"""

from __future__ import annotations

from types import MappingProxyType

from lorapack.planning.consolidation import drain_highest
from lorapack.planning.keeping import KeepPlaced
from lorapack.planning.placing import PlaceMissing
from lorapack.planning.plan import (
    CONSOLIDATION,
    NO_SLOTS,
    NOT_ELIGIBLE,
    OVER_CAPACITY,
    POD_LOST,
    POOL_CHANGED,
    POOL_DELETED,
    POOL_SHRUNK,
    AdapterPools,
    Move,
    PlacementPlan,
    PlacementPolicy,
    PoolPlan,
    Replicas,
)
from lorapack.planning.snapshot import Slot, Snapshot

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
    "plan_placement",
]


_DEFAULT_POLICY = PlacementPolicy()


def plan_placement(snapshot: Snapshot, policy: PlacementPolicy = _DEFAULT_POLICY) -> PlacementPlan:
    """Decide placement for `snapshot`; pure and deterministic (stable tie-breaks, no clock,
    no randomness). Re-planning a settled snapshot returns the same assignment and no moves."""
    return _Planner(snapshot, policy).run()


class _Planner(PlaceMissing, KeepPlaced):
    """One run of plan_placement: the passes in order, on the working state of
    `planning.planner.PlannerBase`."""

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
                    if key in serving.get((home, o), NO_SLOTS)
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
            adapter_pool=AdapterPools(self.count, self.pool_of, self.home),
            unplaceable=MappingProxyType(dict(sorted(self.unplaceable.items()))),
            replicas=Replicas(self.count),
            moves=tuple(moves),
            warnings=MappingProxyType(dict(sorted(self.warnings.items()))),
        )
