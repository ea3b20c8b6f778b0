"""Scale-in by consolidation: empty the pool's highest pods when their adapters fit elsewhere.

`planning.packing` calls `drain_highest` once per pool after placing everything new. A
StatefulSet removes its highest ordinals first, so only the highest pod holding adapters is ever
drained; its copies move to lower pods by the same first-fit search placement uses. A drain is
made only when it pays: the copies it moves that were already placed before this plan (the
disruption) must not exceed `max_moves_per_cost` times the pod's cost (the saving). Copies placed
in this same plan move for free. Draining stops at the first pod that cannot be emptied, so
re-planning the result finds nothing more to drain: the decision is a fixed point.

Make-before-break is the caller's part: it keeps each moved copy on its old pod until the new
one serves, which is why the pod is removed only by a later plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lorapack.planning.poolfill import PoolState
from lorapack.planning.scaling import EPSILON, dominant_share

__all__ = ["Drain", "drain_highest"]


@dataclass(frozen=True, slots=True)
class Drain:
    """One copy moved off a drained pod."""

    adapter: str
    source: int
    target: int
    disruptive: bool
    """The copy was placed before this plan (so moving it is a real move)."""


def drain_highest(
    state: PoolState,
    demand: Callable[[str], tuple[int, float]],
    placed_now: Callable[[str, int], bool],
    copies: Callable[[str], int],
    max_moves_per_cost: float,
) -> list[Drain]:
    """Empty the highest pods of `state` while they fit into lower pods and the move pays.

    `demand(key)` gives a copy's (bytes, load); `placed_now(key, ordinal)` says whether that
    copy was placed by this plan; `copies(key)` how many copies the adapter has (only adapters
    with several need their other pods looked up, to spread them over nodes).
    """
    pool = state.pool
    budget = max_moves_per_cost * pool.cost_per_pod
    drained: list[Drain] = []
    while True:
        source = state.highest_member_pod()
        if source is None or source < pool.min_replicas:
            return drained
        if not _room_below(state, source):
            return drained
        keys = sorted(
            state.members[source],
            key=lambda k: (-dominant_share(pool, *demand(k)), k),
        )
        disruption = sum(1 for k in keys if not placed_now(k, source))
        if disruption > budget:
            return drained
        state.reset_search()
        trial: list[Drain] = []
        for key in keys:
            nbytes, load = demand(key)
            avoid: set[str | None] = set()
            if copies(key) > 1:
                avoid = {state.node[o] for o in state.ordinals_of(key) if o != source}
                avoid.discard(None)
            target = state.first_fit(key, nbytes, load, below=source, avoid_nodes=avoid)
            if target is None:
                for done in reversed(trial):
                    size, weight = demand(done.adapter)
                    state.remove(done.target, done.adapter, size, weight)
                    state.add(source, done.adapter, size, weight)
                state.reset_search()
                return drained
            state.remove(source, key, nbytes, load)
            state.add(target, key, nbytes, load)
            trial.append(Drain(key, source, target, not placed_now(key, source)))
        drained.extend(trial)


def _room_below(state: PoolState, source: int) -> bool:
    """Whether the pods below `source` have, in total, room for its members: a cheap necessary
    condition that spares settled pools the copy-by-copy search."""
    below = [o for o in range(source) if state.usable[o]]
    if not below:
        return False
    leaving_slots, leaving_bytes, leaving_load = state.leaving_used[source]
    slots = len(below) * state.cap_slots - sum(state.used_slots[o] for o in below)
    if slots < state.used_slots[source] - leaving_slots:
        return False
    nbytes = len(below) * state.cap_bytes - sum(state.used_bytes[o] for o in below)
    if nbytes < state.used_bytes[source] - leaving_bytes:
        return False
    load = len(below) * state.cap_load - sum(state.used_load[o] for o in below)
    return load + EPSILON >= state.used_load[source] - leaving_load
