"""What the agent loop needs from the world, as Protocols.

lorapack.agent.loop.Agent talks to its engine, cache and Pod only through these; agent.main
wires the real ones (clients.engine.EngineClient, agent.cache.AdapterCache,
agent.reporter.PodReporter, clients.s3.S3Client) and component tests wire in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from lorapack.api.podstate import DesiredAdapter, ObservedState, S3Location

__all__ = ["CachePort", "EnginePort", "LoadVerdict", "ReporterPort", "S3Factory"]


class LoadVerdict(Protocol):
    """What the engine client's LoadResult offers."""

    @property
    def outcome(self) -> str: ...
    @property
    def message(self) -> str: ...


class EnginePort(Protocol):
    """The vLLM engine in this pod (lorapack.clients.engine.EngineClient)."""

    async def health(self) -> bool: ...
    async def adapters(self) -> dict[str, str]: ...
    async def load(self, name: str, path: str, *, inplace: bool = False) -> LoadVerdict: ...
    async def unload(self, name: str) -> bool: ...
    async def drain(self, name: str, *, timeout: float, poll: float = 0.2) -> bool: ...


class CachePort(Protocol):
    """The content-addressed adapter cache (lorapack.agent.cache.AdapterCache)."""

    quota_bytes: int | None

    def path_for(self, digest: str) -> Path: ...
    def is_verified(self, digest: str) -> bool: ...
    async def ensure(self, adapter: DesiredAdapter, *, s3: Any, allow_pickle: bool) -> Path: ...
    def remove_unused(self, keep: Collection[str]) -> list[str]: ...


class ReporterPort(Protocol):
    """Writes the agent's report on its own Pod."""

    async def report(self, state: ObservedState, synced: bool, message: str) -> None: ...


S3Factory = Callable[[S3Location], Any]
"""An S3 client for an adapter's location (pool access); called once per download."""
