"""A keyed work queue with a few workers: how the operator runs thousands of adapter passes.

One asyncio task per adapter (kopf daemons) costs memory and scheduling for every object even
when nothing happens; controller-runtime's answer, used here, is a deduplicating queue of keys
served by a fixed number of workers. A key is handled by at most one worker at a time; adding a
key that is being handled runs it once more afterwards; adding a key already waiting only moves
its time earlier. The handler returns when to run the key again (resync or backoff), or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["WorkQueue"]

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[float | None]]


class WorkQueue:
    """Keys due at a time; `workers` coroutines take due keys and run `handler(key)`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Handler, workers: int) -> None:
        self._loop = loop
        self._handler = handler
        self._workers = workers
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self.handled = 0

    def add(self, key: str, delay: float = 0.0) -> None:
        """Run `key` after `delay` seconds (or sooner if already due sooner). Thread-safe."""
        self._loop.call_soon_threadsafe(self._add, key, delay)

    def add_many(self, keys: list[str]) -> None:
        self._loop.call_soon_threadsafe(self._add_many, keys)

    def _add_many(self, keys: list[str]) -> None:
        for key in keys:
            self._add(key, 0.0)

    def _add(self, key: str, delay: float) -> None:
        if key in self._busy:
            if delay <= 0:
                self._again.add(key)
            else:
                self._schedule(key, delay)
            return
        self._schedule(key, delay)

    def _schedule(self, key: str, delay: float) -> None:
        due = time.monotonic() + max(delay, 0.0)
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._changed.set()

    def forget(self, key: str) -> None:
        """Stop scheduling `key` (its object is gone)."""
        self._due.pop(key, None)
        self._again.discard(key)

    def __len__(self) -> int:
        return len(self._due)

    async def _next(self) -> str:
        while True:
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded or forgotten
                    heapq.heappop(self._heap)
                    continue
                if due - time.monotonic() > 0:
                    break
                if key in self._busy:  # due while still running: run it again afterwards
                    heapq.heappop(self._heap)
                    del self._due[key]
                    self._again.add(key)
                    continue
                heapq.heappop(self._heap)
                del self._due[key]
                return key
            self._changed.clear()
            timeout = None
            if self._heap:
                timeout = max(self._heap[0][0] - time.monotonic(), 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _work(self) -> None:
        while True:
            key = await self._next()
            self._busy.add(key)
            delay: float | None = None
            try:
                delay = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop the queue
                log.exception("Work on %s crashed", key)
                delay = 5.0
            finally:
                self._busy.discard(key)
                self.handled += 1
            if key in self._again:
                self._again.discard(key)
                self._schedule(key, 0.0)
            elif delay is not None:
                self._schedule(key, delay)

    async def run(self) -> None:
        """Serve keys until cancelled."""
        tasks = [asyncio.ensure_future(self._work()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
