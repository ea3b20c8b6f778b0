"""The operator's in-memory state between handler calls, kept in kopf's operator-wide `memo`.

Holds the things kopf does not: a wake-up event per pool loop and per adapter loop (so a change
reacts at once instead of waiting for the resync period), the last validation result per adapter,
each adapter's placement as the pool loops last decided it, and what this process already
applied. All of it is rebuilt after a restart (validation re-runs, the pool loops re-plan from
the persisted desired states), so losing it never loses decisions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lorapack.clients.kube import KubeClient
from lorapack.config import OperatorConfig
from lorapack.reconcilers.adapter import ValidationResult
from lorapack.reconcilers.pool import AdapterPlacement

__all__ = ["Runtime", "Waker"]


class Waker:
    """An asyncio.Event with a timed wait that never raises."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True if woken, False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass
class Runtime:
    """Operator-wide state; one instance in memo.runtime."""

    config: OperatorConfig
    kube: KubeClient
    pool_wakers: dict[str, Waker] = field(default_factory=dict)
    adapter_wakers: dict[str, Waker] = field(default_factory=dict)
    validations: dict[str, ValidationResult] = field(default_factory=dict)
    validated_at: dict[str, float] = field(default_factory=dict)
    placements: dict[str, AdapterPlacement] = field(default_factory=dict)
    statefulset_replicas: dict[str, int] = field(default_factory=dict)
    owned_generation: dict[str, int] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    """adapter key -> uid for which the Service was ensured in this process."""
    pools_version: int = 0
    """Bumped whenever any pool's spec changes: adapters re-validate against new limits."""

    def pool_waker(self, key: str) -> Waker:
        return self.pool_wakers.setdefault(key, Waker())

    def adapter_waker(self, key: str) -> Waker:
        return self.adapter_wakers.setdefault(key, Waker())

    def wake_pools(self, keys: list[str] | None = None) -> None:
        """Wake the named pool loops (all when None)."""
        for key, waker in self.pool_wakers.items():
            if keys is None or key in keys:
                waker.set()

    def wake_adapters(self, keys: list[str] | None = None) -> None:
        """Wake the named adapter loops (all when None)."""
        for key, waker in self.adapter_wakers.items():
            if keys is None or key in keys:
                waker.set()
