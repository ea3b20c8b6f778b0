"""The agent's level-triggered loop: make the engine hold exactly the desired adapters.

Every pass compares three things, and acts on the difference:

* desired: the pod's DesiredState (from the operator, via the watched Secret);
* the engine: what vLLM really has registered (`GET /v1/models`: name -> path);
* the cache: which adapter versions are downloaded and verified on the shared volume.

It downloads what is missing (into a folder per digest, so a new version never rewrites files a
loaded adapter may be re-read from), loads what is not registered at the right path, drains and
unloads what is no longer wanted (an unload counts once /v1/models no longer lists the name),
garbage-collects unused versions, and reports what the engine really holds. It survives an
engine restart (the engine comes back empty: everything is loaded again from the cache, nothing
re-downloaded), operator downtime (the last desired state keeps being served) and its own
restart (the cache is verified on disk, so nothing is re-downloaded).

Called by `agent.main`, which wires the real engine client, cache, S3 and Kubernetes reporter;
component tests wire in-memory fakes through the Protocols in lorapack.agent.ports; what it
knows about each served name, and the rules over it, are in lorapack.agent.tracks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from lorapack.agent.ports import CachePort, EnginePort, ReporterPort, S3Factory
from lorapack.agent.tracks import (
    Track,
    digest_of_path,
    fail,
    is_synced,
    now,
    observed_adapters,
    one_per_served_name,
    transition,
)
from lorapack.api.loraadapter import PlacementState
from lorapack.api.podstate import DesiredAdapter, DesiredState, ObservedState
from lorapack.errors import LorapackError, RetryableError

__all__ = ["Agent"]

log = logging.getLogger(__name__)

OK_OUTCOMES = ("loaded", "already_loaded")


class Agent:
    """One pod's agent. `run` until `stop` is set."""

    def __init__(
        self,
        *,
        engine: EnginePort,
        cache: CachePort,
        reporter: ReporterPort,
        s3_factory: S3Factory,
        drain_timeout: float = 30.0,
        poll_seconds: float = 2.0,
        resync_seconds: float = 30.0,
        max_parallel: int = 4,
        on_pass: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._cache = cache
        self._reporter = reporter
        self._s3_factory = s3_factory
        self._drain_timeout = drain_timeout
        self._poll = poll_seconds
        self._resync = resync_seconds
        self._limit = asyncio.Semaphore(max_parallel)
        self._on_pass = on_pass
        self._desired: DesiredState | None = None
        self._wake = asyncio.Event()
        self._tracks: dict[str, Track] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._healthy = False
        self._restarts = 0
        self._believed: dict[str, str] = {}  # name -> path we saw registered last pass
        self._last_report: tuple[ObservedState, bool, str] | None = None
        self._last_report_at = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._report_lock = asyncio.Lock()

    # -- inputs ------------------------------------------------------------------------------

    def set_desired(self, state: DesiredState | None) -> None:
        """A new desired state arrived (None: the Secret was deleted, hold nothing)."""
        if state is None and self._desired is not None:
            state = DesiredState(pool=self._desired.pool, pod=self._desired.pod, revision=0)
        if state is not None:
            self._cache.quota_bytes = state.cache_quota_bytes
        self._desired = state
        self._wake.set()

    def wake(self) -> None:
        """Run a pass now (e.g. after an engine event)."""
        self._wake.set()

    @property
    def observed(self) -> ObservedState:
        """The report as it would be written now."""
        desired = self._desired
        synced = self._synced()
        return ObservedState(
            revision=desired.revision if desired is not None and synced else -1,
            engine_healthy=self._healthy,
            engine_restarts=self._restarts,
            updated_at=now(),
            adapters=observed_adapters(self._tracks),
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until `stop`; a failing pass is logged and retried."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception:  # a bug must not kill the sidecar: log it, keep serving
                log.exception("Agent pass failed")
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def sync_once(self) -> None:
        """One comparison of desired, engine and cache, starting the work it finds."""
        desired = self._desired
        self._healthy = await self._engine.health()
        if desired is None:  # nothing known yet: never unload on a guess
            await self._report()
            return
        if not self._healthy:
            await self._report(message="engine not healthy")
            return
        try:
            registered = await self._engine.adapters()
        except RetryableError:
            self._healthy = False
            await self._report(message="engine not answering /v1/models")
            return
        # Names a task is working on may be missing for a moment (a swap unloads before it
        # loads the new version): only the others tell a restart.
        settled = sorted(n for n in self._believed if not self._busy(n))
        if settled and not any(n in registered for n in settled):
            # Everything we had loaded vanished at once: the engine restarted. Load it all
            # again from the cache (nothing is downloaded twice).
            self._restarts += 1
            log.warning("Engine lost its adapters (restart?): %s", ", ".join(settled))
        wanted = self._wanted(desired)
        for name, entry in wanted.items():
            path = str(self._cache.path_for(entry.digest))
            track = self._tracks.get(name)
            busy = self._busy(name)
            if registered.get(name) == path and self._cache.is_verified(entry.digest):
                if track is None or track.state != "Loaded" or track.digest != entry.digest:
                    self._set(name, entry.digest, "Loaded", "")
                continue
            if busy:
                continue
            if (
                track is not None
                and track.digest == entry.digest
                and track.state == "Failed"
                and time.monotonic() < track.retry_at
            ):
                continue
            if track is not None and track.state == "Loaded":
                # The engine no longer lists it at this path (restart, or someone unloaded it):
                # never report it as loaded while it is not.
                self._set(name, track.digest, "Loading", "re-loading: the engine lost it")
            self._start(
                name, functools.partial(self._bring_up, entry, desired, registered.get(name))
            )
        for name in sorted(set(registered) - set(wanted)):
            if self._busy(name):
                continue
            self._start(name, functools.partial(self._take_down, name, registered[name]))
        for name in list(self._tracks):
            if name not in wanted and name not in registered and name not in self._tasks:
                del self._tracks[name]
        self._believed = {n: p for n, p in registered.items() if n in wanted}
        keep = {a.digest for a in desired.adapters}
        keep |= {d for p in registered.values() if (d := digest_of_path(p)) is not None}
        keep |= {t.digest for n, t in self._tracks.items() if self._busy(n)}
        removed = self._cache.remove_unused(keep)
        if removed:
            log.info("Removed unused adapter versions from the cache: %s", ", ".join(removed))
        await self._report()
        if self._on_pass is not None:
            await self._on_pass()

    def _busy(self, name: str) -> bool:
        """A load, swap or unload of `name` is in progress."""
        return name in self._tasks and not self._tasks[name].done()

    def _start(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work()` as the task of `name`, at most max_parallel at once (the coroutine is
        created only once a slot is free, so a cancelled waiter leaves nothing un-awaited)."""

        async def runner() -> None:
            try:
                async with self._limit:
                    await work()
            finally:
                self._wake.set()

        self._tasks[name] = asyncio.ensure_future(runner())

    def _set(self, name: str, digest: str, state: PlacementState, message: str) -> Track:
        return transition(self._tracks, name, digest, state, message)

    def _fail(self, name: str, digest: str, message: str) -> None:
        fail(self._tracks, name, digest, message)

    async def _bring_up(
        self, entry: DesiredAdapter, desired: DesiredState, current_path: str | None
    ) -> None:
        name, digest = entry.served_name, entry.digest
        started = time.monotonic()
        try:
            if not self._cache.is_verified(digest):
                self._set(name, digest, "Downloading", f"fetching {len(entry.files)} file(s)")
                self._report_soon()
            s3 = self._s3_factory(entry.s3) if entry.access == "pool" and entry.s3 else None
            path = await self._cache.ensure(entry, s3=s3, allow_pickle=desired.allow_pickle)
        except RetryableError as err:
            self._fail(name, digest, f"download failed, will retry: {err.message}")
            return
        except LorapackError as err:
            self._fail(name, digest, f"{err.reason}: {err.message}")
            return
        download_ms = round((time.monotonic() - started) * 1000)
        self._set(name, digest, "Loading", "").download_ms = download_ms
        self._report_soon()
        loading = time.monotonic()
        try:
            if current_path is not None and current_path != str(path):
                # A new version of a served name: routing already left this pod (the operator
                # removes it from the EndpointSlice before changing the desired digest), so
                # wait for in-flight requests, then swap.
                await self._engine.drain(name, timeout=self._drain_timeout)
                await self._engine.unload(name)
            result = await self._engine.load(name, str(path))
            if result.outcome not in OK_OUTCOMES:
                self._fail(
                    name, digest, f"engine refused the adapter ({result.outcome}): {result.message}"
                )
                return
            registered = await self._engine.adapters()
        except RetryableError as err:
            self._fail(name, digest, f"engine unavailable: {err.message}")
            return
        if registered.get(name) != str(path):
            self._fail(
                name,
                digest,
                f"engine lists {name} at {registered.get(name)!r}, not {path} after loading",
            )
            return
        track = self._set(name, digest, "Loaded", "")
        track.download_ms = download_ms
        track.load_ms = round((time.monotonic() - loading) * 1000)

    async def _take_down(self, name: str, path: str) -> None:
        track = self._tracks.get(name)
        digest = track.digest if track is not None else (digest_of_path(path) or "")
        self._set(name, digest, "Unloading", "draining in-flight requests")
        self._report_soon()
        try:
            drained = await self._engine.drain(name, timeout=self._drain_timeout)
            if not drained:
                log.warning(
                    "Adapter %s still had requests after %.0f s; unloading",
                    name,
                    self._drain_timeout,
                )
            await self._engine.unload(name)
            still = name in await self._engine.adapters()
        except RetryableError as err:
            self._set(name, digest, "Unloading", f"engine unavailable: {err.message}")
            return
        if still:
            # A 200 is not proof: the engine's list is (an unload that did not take, or a
            # resolver that registered the name again). Never report it gone while it serves;
            # the next pass unloads it again.
            log.warning("Adapter %s is still listed by the engine after its unload", name)
            self._set(name, digest, "Unloading", "the engine still lists it after unloading")
            return
        self._tracks.pop(name, None)

    def _report_soon(self, delay: float = 0.05) -> None:
        """Report progress shortly, coalescing the transitions of many adapters at once into
        one Pod patch (a burst of 100 adapters must not cost 300 patches)."""
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(delay, self._flush_report)

    def _flush_report(self) -> None:
        self._flush = None
        task = asyncio.ensure_future(self._report())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _wanted(self, desired: DesiredState) -> dict[str, DesiredAdapter]:
        return one_per_served_name(desired.adapters, self._tracks)

    def _synced(self) -> bool:
        desired = self._desired
        if desired is None or not self._healthy:
            return False
        return is_synced(desired, self._wanted(desired), self._tracks)

    async def _report(self, message: str = "") -> None:
        # One report at a time, computed under the lock: two overlapping patches could land in
        # the wrong order and leave an older state on the Pod while we believe the newer one
        # is there (then nothing would correct it until the next heartbeat).
        async with self._report_lock:
            state = self.observed
            synced = self._synced()
            text = message or ("all assigned adapters processed" if synced else "syncing adapters")
            key = (state.model_copy(update={"updated_at": ""}), synced, text)
            heartbeat_due = time.monotonic() - self._last_report_at >= self._resync
            if self._last_report == key and not heartbeat_due:
                return
            try:
                await self._reporter.report(state, synced, text)
            except LorapackError as err:
                log.warning("Reporting to the Pod failed: %s", err.message)
                return
            self._last_report = key
            self._last_report_at = time.monotonic()

    def states(self) -> Mapping[str, PlacementState]:
        """served name -> state (for tests and metrics)."""
        return {n: t.state for n, t in self._tracks.items()}
