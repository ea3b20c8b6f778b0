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
from lorapack.handlers.adapters_io import S3Access
from lorapack.reconcilers.pool import AdapterPlacement
from lorapack.reconcilers.validation import ValidationResult

__all__ = ["Runtime", "Waker"]


class Waker:
    """An asyncio.Event with a timed wait, safe to set from any thread.

    kopf runs synchronous handlers (and indexers) in a thread pool; setting an asyncio.Event
    from there would not wake the coroutine waiting on it until something else woke the loop.
    `set` therefore hands the call to the loop, which also defers it until the handler that
    called it has finished (e.g. until kopf stored the new index value).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float, settle: float = 0.05) -> bool:
        """True if woken, False on timeout.

        After a wake it waits `settle` seconds more: a wake is often sent while kopf is still
        storing the new object in an index (and more wakes follow in a burst), so the pass that
        follows sees the settled world and many events cost one pass.
        """
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(settle)
        return True


@dataclass
class Runtime:
    """Operator-wide state; one instance in memo.runtime."""

    config: OperatorConfig
    kube: KubeClient
    loop: asyncio.AbstractEventLoop
    s3: S3Access
    """Shared S3 access: its boto3 clients are cached per endpoint and credentials (creating
    one costs far more than a request)."""
    pool_wakers: dict[str, Waker] = field(default_factory=dict)
    adapter_wakers: dict[str, Waker] = field(default_factory=dict)
    validations: dict[str, ValidationResult] = field(default_factory=dict)
    validated_at: dict[str, float] = field(default_factory=dict)
    placements: dict[str, AdapterPlacement] = field(default_factory=dict)
    statefulset_replicas: dict[str, int] = field(default_factory=dict)
    owned_generation: dict[str, int] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    """adapter key -> uid for which the Service was ensured in this process."""
    served_names: dict[str, str] = field(default_factory=dict)
    """adapter key -> its served name (as last validated)."""
    pod_reports: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    """pod uid -> served name -> (digest, state, message) last seen, to wake only the adapters
    whose report changed."""
    pools_version: int = 0
    """Bumped whenever any pool's spec changes: adapters re-validate against new limits."""

    def pool_waker(self, key: str) -> Waker:
        if key not in self.pool_wakers:
            self.pool_wakers[key] = Waker(self.loop)
        return self.pool_wakers[key]

    def adapter_waker(self, key: str) -> Waker:
        if key not in self.adapter_wakers:
            self.adapter_wakers[key] = Waker(self.loop)
        return self.adapter_wakers[key]

    def wake_pools(self, keys: list[str] | None = None) -> None:
        """Wake the named pool loops (all when None)."""
        for key, waker in list(self.pool_wakers.items()):
            if keys is None or key in keys:
                waker.set()

    def wake_adapters(self, keys: list[str] | None = None) -> None:
        """Wake the named adapter loops (all when None)."""
        for key, waker in list(self.adapter_wakers.items()):
            if keys is None or key in keys:
                waker.set()
