"""The adapter work queue: dedup, one worker per key, re-run when added while busy, delays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from lorapack.handlers.workqueue import WorkQueue


@contextlib.asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[None]:
    task = asyncio.ensure_future(queue.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.01)


async def test_keys_added_many_times_run_once_and_never_concurrently() -> None:
    runs: list[str] = []
    active: set[str] = set()
    overlap = []

    async def handle(key: str) -> float | None:
        if key in active:
            overlap.append(key)
        active.add(key)
        runs.append(key)
        await asyncio.sleep(0.05)
        active.discard(key)
        return None

    queue = WorkQueue(asyncio.get_running_loop(), handle, workers=4)
    for _ in range(10):
        queue.add("a")
        queue.add("b")
    async with running(queue):
        await until(lambda: len(runs) >= 2)
        await asyncio.sleep(0.1)
        assert sorted(runs) == ["a", "b"]
        queue.add("a")
        await asyncio.sleep(0.01)
        queue.add("a")  # while busy: once more afterwards, not twice at once
        await until(lambda: runs.count("a") >= 3)
        await asyncio.sleep(0.2)
    assert runs.count("a") == 3 and not overlap


async def test_returned_delay_schedules_the_next_run() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def handle(key: str) -> float | None:
        times.append(loop.time())
        return 0.2 if len(times) < 3 else None

    queue = WorkQueue(loop, handle, workers=1)
    queue.add("k")
    async with running(queue):
        await until(lambda: len(times) == 3)
        await asyncio.sleep(0.3)
    assert len(times) == 3
    assert times[1] - times[0] >= 0.18 and times[2] - times[1] >= 0.18


async def test_a_crashing_pass_is_retried_and_others_go_on() -> None:
    seen: list[str] = []

    async def handle(key: str) -> float | None:
        seen.append(key)
        if key == "bad" and seen.count("bad") == 1:
            raise RuntimeError("boom")
        return None

    queue = WorkQueue(asyncio.get_running_loop(), handle, workers=2)
    queue.add_many(["bad", "good"])
    async with running(queue):
        await until(lambda: "good" in seen)
    assert "good" in seen and queue.handled >= 2
