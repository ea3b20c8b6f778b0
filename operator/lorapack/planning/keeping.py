"""Pass 2 of placement: what is placed stays (stability), unless it must go.

Copies stay where they are unless their pod is gone, the pool no longer takes the adapter, the
pod is over capacity, or the adapter wants fewer copies; each removal records its reason (a
`Move` reason of `planning.plan`). Old copies that serve stay (as "leaving") until the
replacement serves. `KeepPlaced` is a mixin of the planner (`planning.packing`), on the
working state of `planning.planner`.
"""

from __future__ import annotations

from lorapack.planning.eligibility import accepts
from lorapack.planning.plan import (
    NO_SLOTS,
    NOT_ELIGIBLE,
    OVER_CAPACITY,
    POD_LOST,
    POOL_CHANGED,
    POOL_DELETED,
    POOL_SHRUNK,
)
from lorapack.planning.planner import PlannerBase
from lorapack.planning.poolfill import PoolState
from lorapack.planning.snapshot import Slot

__all__ = ["KeepPlaced"]


class KeepPlaced(PlannerBase):
    """Pass 2: adopt the persisted assignment, drop copies that must go."""

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
            still = pool_key in cands or accepts(self.pools[pool_key], view)
            self.removed.setdefault(key, []).append((slot, POOL_CHANGED if still else NOT_ELIGIBLE))
            if still:
                self._maybe_keep_leaving(key, slot)

    def _maybe_keep_leaving(self, key: str, slot: Slot) -> None:
        """Keep an old copy that serves, for now; `_settle_leaving` decides at the end."""
        if key not in self.snapshot.serving.get(slot, NO_SLOTS):
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
