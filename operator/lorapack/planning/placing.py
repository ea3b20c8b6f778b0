"""Pass 3 of placement: place the copies adapters are missing.

Each pool opens as many pods as the lower bound of its demand says (scale-out, up to
replicas.max); copies go higher priority first, then busiest, then largest, each to the open
pod least full in its tightest dimension (slots, cache bytes, load). An adapter new to
placement that may use several pools first takes room already paid for, then the pool where
its copies cost least. `PlaceMissing` is a mixin of the planner (`planning.packing`), on the
working state of `planning.planner`.
"""

from __future__ import annotations

import math

from lorapack.api import conditions
from lorapack.issues import Issue
from lorapack.planning.eligibility import pools_full
from lorapack.planning.planner import PlannerBase
from lorapack.planning.scaling import EPSILON, dominant_share
from lorapack.planning.snapshot import PoolView

__all__ = ["PlaceMissing"]


class PlaceMissing(PlannerBase):
    """Pass 3: choose a pool for each adapter missing copies, then a pod for each copy."""

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
        self.unplaceable[key] = pools_full(self.views[key], [self.pools[p] for p in cands])

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
            self.unplaceable[key] = Issue(
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


def _pods_for(pool: PoolView, slots: float, nbytes: float, load: float) -> int:
    """Pods a fluid demand needs: the tightest of slots, cache bytes and load budget."""
    pods = math.ceil(slots / pool.adapters_per_pod - EPSILON)
    if pool.cache_bytes:
        pods = max(pods, math.ceil(nbytes / pool.cache_bytes - EPSILON))
    if pool.load_budget:
        pods = max(pods, math.ceil(load / pool.load_budget - EPSILON))
    return max(pods, pool.min_replicas)
