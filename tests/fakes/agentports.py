"""In-memory fakes of the agent's cache and reporter ports, for tests that run the real loop.

`LocalCache` is a CachePort over local folders (digest -> source folder, copied on `ensure`, so
the engine is given a versioned cache path exactly as in a pod); `Reports` keeps the last report
(and, with a probe, every report beside what the probe saw then); `desired_entry` makes a
desired adapter for them; `running_agent` runs the real loop over them and a real engine client
for the length of an `async with` block.
Used by tests/component/test_agent_loop.py and the churn contract test (tests/contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

from lorapack.agent.loop import Agent
from lorapack.api.podstate import DesiredAdapter, FileSpec, ObservedState
from lorapack.clients.engine import EngineClient
from lorapack.errors import ArtifactRejected

__all__ = ["LocalCache", "Reports", "desired_entry", "running_agent"]


def desired_entry(name: str, digest: str) -> DesiredAdapter:
    """A desired adapter served as `name` at version `digest` (LocalCache ignores the files)."""
    return DesiredAdapter(
        served_name=name,
        adapter=f"team-a/{name}",
        digest=digest,
        files=[FileSpec(path="adapter_model.safetensors", size=1)],
    )


class LocalCache:
    """CachePort over local folders: digest -> source folder."""

    def __init__(self, root: Path, sources: dict[str, Path]) -> None:
        self.root = root
        self.sources = sources
        self.quota_bytes: int | None = None
        self.downloads: list[str] = []

    def path_for(self, digest: str) -> Path:
        return self.root / digest.replace(":", "-")

    def is_verified(self, digest: str) -> bool:
        return (self.path_for(digest) / ".verified").exists()

    async def ensure(self, adapter: DesiredAdapter, *, s3: Any, allow_pickle: bool) -> Path:
        target = self.path_for(adapter.digest)
        if self.is_verified(adapter.digest):
            return target
        source = self.sources.get(adapter.digest)
        if source is None:
            raise ArtifactRejected(f"no such version {adapter.digest}")
        self.downloads.append(adapter.digest)
        shutil.copytree(source, target)
        (target / ".verified").touch()
        return target

    def remove_unused(self, keep: Collection[str]) -> list[str]:
        removed = []
        for folder in self.root.iterdir() if self.root.exists() else []:
            digest = folder.name.replace("-", ":", 1)
            if digest not in keep:
                shutil.rmtree(folder)
                removed.append(digest)
        return removed


class Reports:
    """ReporterPort keeping the last report and whether it said synced; with `probe`, every
    report is kept in `history` next to what `probe()` saw of the world when it was written."""

    def __init__(self, probe: Callable[[], object] | None = None) -> None:
        self.last: ObservedState | None = None
        self.synced = False
        self.probe = probe
        self.history: list[tuple[ObservedState, bool, object]] = []

    async def report(self, state: ObservedState, synced: bool, message: str) -> None:
        self.last, self.synced = state, synced
        if self.probe is not None:
            self.history.append((state, synced, self.probe()))


@contextlib.asynccontextmanager
async def running_agent(
    engine: EngineClient, cache: LocalCache, reports: Reports, *, drain_timeout: float = 1.0
) -> AsyncIterator[Agent]:
    """The real agent loop over `engine`, `cache` and `reports`, a pass at least every 50 ms,
    until the block ends."""
    agent = Agent(
        engine=engine,
        cache=cache,
        reporter=reports,
        s3_factory=lambda _: None,
        drain_timeout=drain_timeout,
        poll_seconds=0.05,
        resync_seconds=60,
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await task
