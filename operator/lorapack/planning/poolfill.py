"""One pool's pods while a plan is being made: what each holds, and the searches placement uses.

`PoolState.roomiest` is the search placement goes through (it opens a pod beyond the lower bound
only when none fits, and never past replicas.max); `PoolState.first_fit` is the one
consolidation uses: lowest ordinal first, because a StatefulSet scales in by removing its
highest ordinals. The demand arithmetic it relies on is in `planning.scaling`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from lorapack.planning.scaling import EPSILON
from lorapack.planning.snapshot import PodView, PoolView

__all__ = ["PoolState"]

_INF = math.inf
# How many pods on nodes already holding a copy the search passes over looking for another node
# before it settles: spreading is best effort and must not make placement quadratic.
_SPREAD_LOOKAHEAD = 32


class PoolState:
    """One pool's pods while a plan is made: what each holds and how full it is.

    Indexed by ordinal up to replicas.max. `members[o]` are the adapters pod o is meant to
    hold; `leaving[o]` are old copies kept until their replacement serves (make-before-break);
    both count against the pod's capacity. A pod's member set stays the snapshot's frozenset
    until something changes it, so an unchanged pod costs nothing to copy into the plan.

    Pods [0, extent) are open. Two searches find a pod for a copy: `roomiest` (placement: the
    open pod least full in its tightest dimension, through a heap) and `first_fit`
    (consolidation: the lowest ordinal below the pod being drained).
    """

    __slots__ = (
        "_heap",
        "_open",
        "cap_bytes",
        "cap_load",
        "cap_slots",
        "extent",
        "leaving",
        "leaving_used",
        "members",
        "node",
        "pool",
        "usable",
        "usable_count",
        "used_bytes",
        "used_load",
        "used_slots",
        "version",
    )

    def __init__(self, pool: PoolView, pods: Iterable[PodView]) -> None:
        size = pool.max_replicas
        self.pool = pool
        self.cap_slots = pool.adapters_per_pod
        self.cap_bytes: float = pool.cache_bytes or _INF
        self.cap_load: float = pool.load_budget or _INF
        empty: frozenset[str] = frozenset()
        self.members: list[AbstractSet[str]] = [empty] * size
        self.leaving: list[AbstractSet[str]] = [empty] * size
        self.used_slots = [0] * size
        self.used_bytes = [0] * size
        self.used_load = [0.0] * size
        # (slots, bytes, load) of the leaving copies, already counted in used_*.
        self.leaving_used: list[tuple[int, int, float]] = [(0, 0, 0.0)] * size
        self.version = [0] * size
        self.node: list[str | None] = [None] * size
        self.usable = [True] * size
        for pod in pods:
            if pod.ordinal < size:
                self.node[pod.ordinal] = pod.node
                self.usable[pod.ordinal] = pod.available
        self.usable_count = sum(self.usable)
        self.extent = min(pool.min_replicas, size)
        self._open: list[int] | None = None
        # (fullness in the tightest dimension, ordinal, version) of the open pods.
        self._heap: list[tuple[float, int, int]] | None = None

    # -- changes ----------------------------------------------------------------------------

    def adopt(self, ordinal: int, members: frozenset[str], nbytes: int, load: float) -> None:
        """Take over a pod's persisted member set whole (the common, unchanged case); only
        before any search."""
        self.members[ordinal] = members
        self.used_slots[ordinal] += len(members)
        self.used_bytes[ordinal] += nbytes
        self.used_load[ordinal] += load
        if ordinal >= self.extent:
            self.extent = ordinal + 1

    def add(self, ordinal: int, key: str, nbytes: int, load: float) -> None:
        """Put a copy of `key` on pod `ordinal` (which must not hold one)."""
        current = self.members[ordinal]
        if not isinstance(current, set):
            current = set(current)
            self.members[ordinal] = current
        current.add(key)
        self._take(ordinal, nbytes, load)

    def remove(self, ordinal: int, key: str, nbytes: int, load: float) -> None:
        """Take the copy of `key` off pod `ordinal`."""
        current = self.members[ordinal]
        if not isinstance(current, set):
            current = set(current)
            self.members[ordinal] = current
        current.discard(key)
        self._take(ordinal, -nbytes, -load, -1)

    def keep_leaving(self, ordinal: int, key: str, nbytes: int, load: float) -> None:
        """Count an old copy on pod `ordinal` that stays until its replacement serves."""
        current = self.leaving[ordinal]
        if not isinstance(current, set):
            current = set(current)
            self.leaving[ordinal] = current
        current.add(key)
        slots, size, weight = self.leaving_used[ordinal]
        self.leaving_used[ordinal] = (slots + 1, size + nbytes, weight + load)
        self._take(ordinal, nbytes, load)

    def drop_leaving(self, ordinal: int, key: str, nbytes: int, load: float) -> None:
        """Forget an old copy that need not be kept after all."""
        current = self.leaving[ordinal]
        if not isinstance(current, set):
            current = set(current)
            self.leaving[ordinal] = current
        current.discard(key)
        slots, size, weight = self.leaving_used[ordinal]
        self.leaving_used[ordinal] = (slots - 1, size - nbytes, weight - load)
        self._take(ordinal, -nbytes, -load, -1)

    def _take(self, ordinal: int, nbytes: int, load: float, slots: int = 1) -> None:
        self.used_slots[ordinal] += slots
        self.used_bytes[ordinal] += nbytes
        self.used_load[ordinal] += load
        self.version[ordinal] += 1
        if ordinal >= self.extent:
            self.open_pods(ordinal + 1)  # pushes the pod's current entry
            return
        if not self.usable[ordinal]:
            return
        self._push(ordinal)
        opened = self._open
        if opened is not None and slots < 0:
            position = bisect_left(opened, ordinal)
            if position == len(opened) or opened[position] != ordinal:
                opened.insert(position, ordinal)

    def _push(self, ordinal: int) -> None:
        """Enter the pod's current fullness in the heap (its older entry goes stale)."""
        heap = self._heap
        if heap is None:
            return
        fullness = max(
            self.used_slots[ordinal] / self.cap_slots,
            self.used_bytes[ordinal] / self.cap_bytes,
            self.used_load[ordinal] / self.cap_load,
        )
        heapq.heappush(heap, (fullness, ordinal, self.version[ordinal]))

    def open_pods(self, count: int) -> None:
        """Open pods up to ordinal `count` - 1 (at most replicas.max)."""
        opened = self._open
        for ordinal in range(self.extent, min(count, len(self.usable))):
            self.extent = ordinal + 1
            if not self.usable[ordinal]:
                continue
            self._push(ordinal)
            if opened is not None:
                opened.append(ordinal)

    def reset_search(self) -> None:
        """Forget what searches learnt (a later search may fit smaller copies)."""
        self._open = None
        self._heap = None

    # -- questions --------------------------------------------------------------------------

    def over_capacity(self, ordinal: int) -> bool:
        """Whether pod `ordinal`'s members (leaving copies aside: they go once replaced) take
        more than its slots, cache or load budget allow."""
        slots, nbytes, load = self.leaving_used[ordinal]
        return (
            self.used_slots[ordinal] - slots > self.cap_slots
            or self.used_bytes[ordinal] - nbytes > self.cap_bytes
            or self.used_load[ordinal] - load > self.cap_load + EPSILON
        )

    def used(self) -> tuple[int, int, float]:
        """(slots, bytes, load) taken over all pods."""
        return sum(self.used_slots), sum(self.used_bytes), math.fsum(self.used_load)

    def ordinals_of(self, key: str) -> list[int]:
        """Pods whose members include `key` (a scan: only for adapters with several copies)."""
        members = self.members
        return [o for o in range(self.extent) if key in members[o]]

    def highest_member_pod(self) -> int | None:
        """The highest ordinal whose pod has members (not only leaving copies)."""
        for ordinal in range(self.extent - 1, -1, -1):
            if self.members[ordinal]:
                return ordinal
        return None

    def desired_replicas(self) -> int:
        """Pods the pool needs: through the highest pod holding anything, at least replicas.min,
        at most replicas.max."""
        top = self.extent
        members, leaving = self.members, self.leaving
        while top > 0 and not members[top - 1] and not leaving[top - 1]:
            top -= 1
        return min(max(top, self.pool.min_replicas), self.pool.max_replicas)

    def assignment(self, replicas: int) -> dict[int, frozenset[str]]:
        """ordinal -> adapters (members and leaving copies) for pods 0..replicas-1, reusing the
        snapshot's sets for pods that did not change."""
        out: dict[int, frozenset[str]] = {}
        empty: frozenset[str] = frozenset()
        for ordinal in range(replicas):
            held = self.members[ordinal]
            old = self.leaving[ordinal]
            if old:
                out[ordinal] = frozenset(held) | frozenset(old)
            elif isinstance(held, frozenset):
                out[ordinal] = held
            else:
                out[ordinal] = frozenset(held) if held else empty
        return out

    # -- searches ---------------------------------------------------------------------------

    def roomiest(
        self,
        key: str,
        nbytes: int,
        load: float,
        *,
        avoid_nodes: AbstractSet[str | None] = frozenset(),
        allow_new: bool = True,
        floor_bytes: float = 0.0,
        floor_load: float = 0.0,
    ) -> int | None:
        """The open pod a new copy of `key` goes to: among pods with room that do not hold
        `key`, the least full in its tightest dimension (slots, cache bytes or load), lowest
        ordinal on ties, preferring nodes outside `avoid_nodes`; else a new pod when
        `allow_new` and the pool is below replicas.max; else None.

        Worst fit over the pods the caller opened (as many as the lower bound says) balances
        every dimension at once, and with copies placed busiest first, a pod made busy by a hot
        adapter's copy is the last to take more, so it gets the quietest adapters: complements
        pair up. A batch placing copies in decreasing size passes the smallest size and load
        still to come as floors: a pod that cannot take even those leaves the heap for the rest
        of the batch.
        """
        heap = self._heap
        if heap is None:
            heap = self._heap = []
            for ordinal in range(self.extent):
                if self.usable[ordinal]:
                    self._push(ordinal)
        cap_slots, cap_bytes = self.cap_slots, self.cap_bytes
        cap_load = self.cap_load + EPSILON
        used_slots, used_bytes, used_load = self.used_slots, self.used_bytes, self.used_load
        members, leaving, node, version = self.members, self.leaving, self.node, self.version
        kept: list[tuple[float, int, int]] = []
        fallback: tuple[float, int, int] | None = None
        found: int | None = None
        while heap:
            entry = heapq.heappop(heap)
            ordinal = entry[1]
            if entry[2] != version[ordinal]:
                continue  # stale: the pod changed since this entry was pushed
            nb = used_bytes[ordinal]
            ld = used_load[ordinal]
            if (
                used_slots[ordinal] >= cap_slots
                or nb + floor_bytes > cap_bytes
                or ld + floor_load > cap_load
            ):
                continue  # full for the rest of the batch
            kept.append(entry)
            if nb + nbytes > cap_bytes or ld + load > cap_load:
                continue
            if key in members[ordinal] or key in leaving[ordinal]:
                continue
            if avoid_nodes and node[ordinal] in avoid_nodes:
                if fallback is None:
                    fallback = entry
                if len(kept) < _SPREAD_LOOKAHEAD:
                    continue
                break
            found = ordinal
            kept.pop()
            break
        if found is None and fallback is not None:
            found = fallback[1]
            kept.remove(fallback)
        for entry in kept:
            heapq.heappush(heap, entry)
        if found is not None or not allow_new:
            return found
        return self._next_new(nbytes, load)

    def first_fit(
        self,
        key: str,
        nbytes: int,
        load: float,
        *,
        below: int,
        avoid_nodes: AbstractSet[str | None] = frozenset(),
    ) -> int | None:
        """The lowest open ordinal below `below` with room for a copy of `key` that does not
        hold it, preferring nodes outside `avoid_nodes`; None if there is none."""
        opened = self._open
        if opened is None:
            usable = self.usable
            opened = self._open = [o for o in range(self.extent) if usable[o]]
        cap_slots, cap_bytes = self.cap_slots, self.cap_bytes
        cap_load = self.cap_load + EPSILON
        used_slots, used_bytes, used_load = self.used_slots, self.used_bytes, self.used_load
        members, leaving, node = self.members, self.leaving, self.node
        fallback: int | None = None
        full: list[int] = []
        found: int | None = None
        for ordinal in opened:
            if ordinal >= below:
                break
            if used_slots[ordinal] >= cap_slots:
                full.append(ordinal)
                continue
            if used_bytes[ordinal] + nbytes > cap_bytes or used_load[ordinal] + load > cap_load:
                continue
            if key in members[ordinal] or key in leaving[ordinal]:
                continue
            if avoid_nodes and node[ordinal] in avoid_nodes:
                if fallback is None:
                    fallback = ordinal
                continue
            found = ordinal
            break
        if full:
            gone = set(full)
            self._open = [o for o in opened if o not in gone]
        return found if found is not None else fallback

    def _next_new(self, nbytes: int, load: float) -> int | None:
        if nbytes > self.cap_bytes or load > self.cap_load + EPSILON:
            return None
        ordinal = self.extent
        while ordinal < len(self.usable) and not self.usable[ordinal]:
            ordinal += 1
        if ordinal >= len(self.usable):
            return None
        return ordinal
