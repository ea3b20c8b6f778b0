"""The operator's in-memory state between handler calls, as small typed stores.

kopf keeps the watched objects (its indexes); these stores keep what kopf does not: the last
validation of each adapter, each adapter's placement as its pool loop last decided it, what each
pool loop has written (its pods' desired states, its StatefulSet size, the generation whose
objects it applied), the objects this process has seen to be its own, and the last report of
each pod. All of it is rebuilt after a restart (validation re-runs; the pool loops list their
desired states back), so losing it never loses decisions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredState
from lorapack.issues import Issue
from lorapack.reconcilers.poolworld import AdapterPlacement, GroupPlan
from lorapack.reconcilers.validation import ValidationResult

__all__ = [
    "Claims",
    "GroupView",
    "GroupViews",
    "PlacementStore",
    "PoolState",
    "ReportStore",
    "Validation",
    "ValidationStore",
    "Waker",
]


class Waker:
    """An asyncio.Event with a timed wait, safe to set from any thread.

    kopf runs synchronous handlers in a thread pool; setting an asyncio.Event from there would
    not wake its waiter until something else woke the loop, so `set` hands the call to the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float, settle: float = 0.05) -> bool:
        """True if woken, False on timeout. After a wake it settles `settle` seconds, so a
        burst of events costs one pass and the pass sees the settled indexes."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(settle)
        return True


@dataclass
class Validation:
    """The last pre-flight of one adapter, and when it ran."""

    result: ValidationResult
    at: float
    """time.monotonic() of the check."""
    pools_version: int
    """The pools' version it was checked against (a pool change re-validates)."""


@dataclass
class ValidationStore:
    """adapter key -> its last validation, and when each generation was first seen."""

    entries: dict[str, Validation] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)

    def get(self, key: str) -> ValidationResult | None:
        found = self.entries.get(key)
        return found.result if found else None

    def record(
        self, key: str, result: ValidationResult, pools_version: int, age: float = 0.0
    ) -> None:
        self.entries[key] = Validation(result, time.monotonic() - age, pools_version)

    def due(self, key: str, generation: int, pools_version: int, period: float) -> bool:
        """Whether the adapter must be checked again."""
        found = self.entries.get(key)
        if found is None or found.result.generation != generation:
            return True
        if found.pools_version != pools_version:
            return True
        return time.monotonic() - found.at >= period

    def seen(self, key: str, *, new_generation: bool = False) -> None:
        if new_generation or key not in self.first_seen:
            self.first_seen[key] = time.monotonic()

    def forget(self, key: str) -> None:
        self.entries.pop(key, None)
        self.first_seen.pop(key, None)


@dataclass
class PlacementStore:
    """adapter key -> placement, as the pool loops last published it (with a by-pool index:
    pod events look up their pool's adapters thousands of times a minute)."""

    entries: dict[str, AdapterPlacement] = field(default_factory=dict)
    _by_pool: dict[str | None, set[str]] = field(default_factory=dict)

    def get(self, key: str) -> AdapterPlacement | None:
        return self.entries.get(key)

    def _set(self, key: str, placement: AdapterPlacement | None) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self._by_pool.get(old.pool, set()).discard(key)
        if placement is not None:
            self.entries[key] = placement
            self._by_pool.setdefault(placement.pool, set()).add(key)

    def publish(self, placements: Mapping[str, AdapterPlacement]) -> list[str]:
        """Store a pass's placements; returns the keys whose placement changed."""
        changed = [k for k, p in placements.items() if self.entries.get(k) != p]
        for key in changed:
            self._set(key, placements[key])
        return changed

    def on_pool(self, pool: str) -> list[str]:
        return sorted(self._by_pool.get(pool, ()))

    def drop_pool(self, pool: str) -> list[str]:
        """Forget the placements on a deleted pool; returns those adapters."""
        keys = self.on_pool(pool)
        for key in keys:
            self._set(key, None)
        return keys

    def forget(self, key: str) -> None:
        self._set(key, None)


@dataclass
class PoolState:
    """What one pool loop has written, in this process."""

    desired: dict[int, DesiredState] | None = None
    """ordinal -> desired state published (None: not read back from the cluster yet)."""
    desired_listed_at: float = 0.0
    statefulset_replicas: int | None = None
    owned_generation: int | None = None
    checked_generation: int | None = None
    """Generation whose base model and sizing were checked (None: not yet)."""
    pool_issues: tuple[Issue, ...] = ()
    """Why the pool cannot start pods (an incomplete base-model folder, GPUs too small)."""
    base_config: bytes | None = None
    """The base model's config.json, read once per generation (shape checks of adapters)."""

    def record_desired(self, written: Mapping[int, DesiredState | None]) -> None:
        if self.desired is None:
            return
        for ordinal, state in written.items():
            if state is None:
                self.desired.pop(ordinal, None)
            else:
                self.desired[ordinal] = state


class Claims:
    """Objects ("Kind namespace/name") this process has seen to be lorapack's own."""

    def __init__(self) -> None:
        self._refs: set[str] = set()

    def __contains__(self, ref: object) -> bool:
        return ref in self._refs

    def add(self, ref: str) -> None:
        self._refs.add(ref)

    def discard_namespace(self, namespace: str) -> None:
        self._refs = {r for r in self._refs if f" {namespace}/" not in r}


@dataclass
class ReportStore:
    """pod uid -> served name -> (digest, state, message) last seen, to wake only the
    adapters whose report changed."""

    entries: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)

    def update(self, uid: str, report: dict[str, tuple[str, str, str]]) -> set[str]:
        """Store a pod's report; returns the served names whose entry changed."""
        before = self.entries.get(uid, {})
        self.entries[uid] = report
        return {n for n in set(report) | set(before) if report.get(n) != before.get(n)}

    def forget(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self.entries.pop(uid, None)


@dataclass
class WrittenStatuses:
    """object key -> the status (wire form) this process last wrote for it.

    Compared besides the watched copy, which can lag our own writes: a status that flips and
    flips back faster than the watch delivers the first write would otherwise be skipped as
    "unchanged" and stay wrong in the cluster until the next resync."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, wire: dict[str, Any]) -> None:
        self.entries[key] = wire

    def forget(self, key: str) -> None:
        self.entries.pop(key, None)


@dataclass
class GroupView:
    """One base model's adapters as placement sees them (this process's newer validations
    applied) and the group plan computed from them, shared by the sibling pool loops."""

    token: tuple[Any, ...]
    """What it was made from: the group's change counter, its pools and their generations."""
    made_at: float
    adapters: list[LoraAdapter]
    deleting: frozenset[str]
    plan: GroupPlan | None = None
    """Set by the first pass that uses the view."""
    cost: float = 0.0
    """Seconds the view and its plan took to compute."""


class GroupViews:
    """The latest `GroupView` of each pool group, and a change counter per base model.

    Every input of the group plan that changes bumps the base model's counter (`touch`): an
    adapter event, a validation, a pod event, a desired state written. A view made from the
    current counter is reused by every sibling loop. Under churn the counter moves between
    siblings' passes, so a view stays usable for a short window after its inputs changed
    (four times what it cost, 0.5 to 2 s: solving takes at most a quarter of the operator's
    time however fast the inputs change): a pass that used an outdated view runs again when the
    window closes (`stale_for`), so every change is planned within a window, and the group is
    solved at most about once per window instead of once per pool per event. Views older
    than MAX_AGE are never reused (the plan reads the clock: pods that stopped reporting).
    """

    MAX_AGE = 5.0
    MIN_WINDOW = 0.5
    MAX_WINDOW = 2.0

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}
        self._views: dict[tuple[str, tuple[Any, ...]], GroupView] = {}

    def touch(self, base: str) -> None:
        self._epochs[base] = self._epochs.get(base, 0) + 1

    def epoch(self, base: str) -> int:
        return self._epochs.get(base, 0)

    def window(self, view: GroupView) -> float:
        return min(self.MAX_WINDOW, max(self.MIN_WINDOW, 4 * view.cost))

    def usable(
        self, base: str, group: tuple[Any, ...], token: tuple[Any, ...], now: float
    ) -> GroupView | None:
        """The group's view if it may be used now (same inputs, or within its window)."""
        view = self._views.get((base, group))
        if view is None or now - view.made_at >= self.MAX_AGE:
            return None
        if view.token == token or now - view.made_at < self.window(view):
            return view
        return None

    def store(self, base: str, group: tuple[Any, ...], view: GroupView) -> None:
        # One view per (base model, set of pools): a pool group that changed leaves its old
        # view behind, dropped here.
        self._views = {k: v for k, v in self._views.items() if k[0] != base or k[1] == group}
        self._views[(base, group)] = view

    def stale_for(self, view: GroupView, token: tuple[Any, ...], now: float) -> float | None:
        """Seconds until an outdated view's window closes (None: made from `token`)."""
        if view.token == token:
            return None
        return max(0.01, view.made_at + self.window(view) - now)
