"""How many copies an adapter needs and how many pods a pool needs: the demand arithmetic.

`planning.packing` asks `copies_and_load` how many copies of an adapter to place (replicas.min,
raised up to replicas.max so no pod exceeds the pool's load budget), opens as many pods as
`lower_bound`-style arithmetic says, keeps one `PoolState` per pool while it decides, and reads
the pool's desired replica count from it. `PoolState.roomiest` is the search placement goes
through (it opens a pod beyond those only when none fits, and never past replicas.max);
`PoolState.first_fit` is the one consolidation uses: lowest ordinal first, because a
StatefulSet scales in by removing its highest ordinals. `lower_bound` is also the yardstick
the benchmark compares pod counts with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from lorapack.planning.snapshot import PoolView

__all__ = ["EPSILON", "copies_and_load", "dominant_share", "lower_bound"]

# Loads are decimal hints summed in floating point; a pod filled to its budget by 0.1 + 0.2 must
# not be refused the last copy by a rounding error.
EPSILON = 1e-9


def copies_and_load(
    min_replicas: int, max_replicas: int, load: float, budget: float | None, pool_pods: int
) -> tuple[int, float, bool]:
    """(copies, load per copy, overloaded) for an adapter in a pool.

    Copies start at replicas.min and grow, up to replicas.max and the pods the pool can have
    (`pool_pods`: its replicas.max), until each copy's share of the load fits the pool's per-pod
    budget. When even the most copies leave each above the budget, each copy is counted as a
    whole pod's budget (it gets a pod's load to itself) and `overloaded` is True so the plan
    can warn.

    Lost pods do not lower `pool_pods`: the StatefulSet brings them back, and shrinking the
    copy count while one is gone would concentrate the load on the survivors and could push an
    adapter off the very pod still serving it. The copies that cannot be placed meanwhile are
    reported instead.
    """
    if budget is None or load <= 0.0:
        return min_replicas, (load / min_replicas if min_replicas else 0.0), False
    copies = max(min_replicas, math.ceil(load / budget - EPSILON))
    if copies > min_replicas:
        copies = max(min_replicas, min(copies, max_replicas, pool_pods))
    per_copy = load / copies
    if per_copy > budget + EPSILON:
        return copies, budget, True
    return copies, per_copy, False


def dominant_share(pool: PoolView, size: int, load: float) -> float:
    """The largest fraction of one pod's capacity a copy takes (slots, cache bytes or load)."""
    share = 1.0 / pool.adapters_per_pod
    if pool.cache_bytes:
        share = max(share, size / pool.cache_bytes)
    if pool.load_budget:
        share = max(share, load / pool.load_budget)
    return share


def lower_bound(pool: PoolView, demands: Iterable[tuple[int, int, float]]) -> int:
    """Fewest pods that can hold copies described by (copies, bytes per copy, load per copy):
    the largest of ceil(total / per-pod capacity) over slots, cache bytes and load, the most
    copies of one adapter (copies need distinct pods), and the pool's replicas.min."""
    slots = size = load = 0.0
    widest = 0
    for copies, nbytes, per_copy in demands:
        slots += copies
        size += copies * nbytes
        load += copies * per_copy
        widest = max(widest, copies)
    need = math.ceil(slots / pool.adapters_per_pod - EPSILON)
    if pool.cache_bytes:
        need = max(need, math.ceil(size / pool.cache_bytes - EPSILON))
    if pool.load_budget:
        need = max(need, math.ceil(load / pool.load_budget - EPSILON))
    return max(need, widest, pool.min_replicas)
