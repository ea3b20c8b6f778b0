"""The scale simulator: plays the agent of every pool pod in one process, for the scale bench.

A thousand pool pods cannot each run an agent and an engine on a 2-core machine, but the
operator only sees what an agent writes: its Pod's `lorapack.io/observed` annotation and the
`lorapack.io/adapters-synced` condition (the readiness gate). This simulator watches the pool
pods (label `lorapack.io/pool`) and the desired-state Secrets (`<pod>-adapters`, label
`lorapack.io/role=desired-adapters`), "loads" every desired adapter instantly and reports it
through the real agent's `PodReporter`, so the patch shape is exactly the agent's:

* before a pod has a desired state: engine healthy, nothing held, not synced;
* after: every desired adapter Loaded at its digest, the revision echoed, synced;
* like the agent (agent/loop.py), it reports again only when the report changed, or as a
  heartbeat every `heartbeat_seconds` (the agent's resync; spread over the pods here).

Pure parts (`report_for`) are unit-tested in tests/unit/test_scalesim.py. Used by
bench/scale.py; reports are written by `workers` tasks at once, the newest state per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lorapack import labels
from lorapack.agent.reporter import PodReporter
from lorapack.api.podstate import DesiredState, ObservedAdapter, ObservedState, desired_from_secret
from lorapack.clients.kube import POD, SECRET, KubeClient
from lorapack.errors import LorapackError

__all__ = ["Report", "ScaleSim", "report_for"]

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Report:
    """What one simulated agent writes: the observed state, synced, the condition message."""

    state: ObservedState
    synced: bool
    message: str

    def key(self) -> tuple[str, bool, str]:
        """The report without its timestamp (two reports with the same key are one)."""
        body = self.state.model_copy(update={"updated_at": ""})
        return body.model_dump_json(), self.synced, self.message


def report_for(desired: DesiredState | None, since: dict[str, tuple[str, str]], now: str) -> Report:
    """The report of an agent that loads instantly. `since` (served name -> (digest, when))
    keeps each adapter's `since` stable across reports and is updated in place."""
    if desired is None:
        return Report(ObservedState(engine_healthy=True, updated_at=now), False, "syncing adapters")
    adapters = []
    for entry in sorted(desired.adapters, key=lambda a: a.served_name):
        digest, when = since.get(entry.served_name, ("", ""))
        if digest != entry.digest:
            since[entry.served_name] = (entry.digest, now)
            when = now
        adapters.append(
            ObservedAdapter(
                served_name=entry.served_name,
                digest=entry.digest,
                state="Loaded",
                since=when,
                download_ms=0,
                load_ms=0,
            )
        )
    wanted = {a.served_name for a in desired.adapters}
    for name in [n for n in since if n not in wanted]:
        del since[name]
    state = ObservedState(
        revision=desired.revision, engine_healthy=True, updated_at=now, adapters=adapters
    )
    return Report(state, True, "all assigned adapters processed")


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    reporter: PodReporter
    since: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_key: tuple[str, bool, str] | None = None
    last_at: float = 0.0
    queued: bool = False
    synced: bool | None = None
    """Last synced value reported (PodReporter patches the condition only on a change)."""


def _running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and not meta.get("deletionTimestamp")
    )


class ScaleSim:
    """Run with `await sim.run(stop)`; counters tell the bench what it did."""

    def __init__(
        self, kube: KubeClient, *, workers: int = 16, heartbeat_seconds: float = 30.0
    ) -> None:
        self._kube = kube
        self._workers = workers
        self._heartbeat = heartbeat_seconds
        self._pods: dict[str, _Pod] = {}
        self._desired: dict[str, DesiredState | None] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.patches = 0
        """Report patches written (annotation and condition patches each count)."""
        self.failures = 0
        self.on_desired: Callable[[str, DesiredState | None], None] | None = None
        """Called with (namespace/pod, state) on every desired-state change (bench hooks)."""

    @property
    def pods(self) -> int:
        """Running pool pods the simulator plays."""
        return len(self._pods)

    def _enqueue(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is not None and not pod.queued:
            pod.queued = True
            self._queue.put_nowait(key)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.ensure_future(self._follow_pods()),
            asyncio.ensure_future(self._follow_desired()),
            asyncio.ensure_future(self._heartbeats(stop)),
            *(asyncio.ensure_future(self._work()) for _ in range(self._workers)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _follow_pods(self) -> None:
        async for event in self._kube.watch(POD, None, label_selector=labels.POOL_LABEL):
            meta = event.object["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            known = self._pods.get(key)
            if event.type == "DELETED" or not _running(event.object):
                if known is not None and known.uid == meta["uid"]:
                    del self._pods[key]
                continue
            if known is not None and known.uid == meta["uid"]:
                continue
            # A new pod (or a re-created one: new UID): a fresh agent, reporting from scratch.
            self._pods[key] = _Pod(
                meta["namespace"],
                meta["name"],
                meta["uid"],
                PodReporter(self._kube, meta["namespace"], meta["name"]),
            )
            self._enqueue(key)

    async def _follow_desired(self) -> None:
        selector = f"{labels.ROLE_LABEL}={labels.ROLE_DESIRED}"
        async for event in self._kube.watch(SECRET, None, label_selector=selector):
            meta = event.object["metadata"]
            pod = (meta.get("labels") or {}).get(labels.POD_LABEL)
            if not pod:
                continue
            key = f"{meta['namespace']}/{pod}"
            if event.type == "DELETED":
                self._desired.pop(key, None)
            else:
                self._desired[key] = desired_from_secret(event.object)
            if self.on_desired is not None:
                self.on_desired(key, self._desired.get(key))
            self._enqueue(key)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Re-report pods whose last report is older than the heartbeat (the agent's resync),
        checked in 1 s steps with jitter so the pods' heartbeats spread out."""
        if self._heartbeat <= 0:
            return
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, pod in list(self._pods.items()):
                if pod.last_at and now - pod.last_at >= self._heartbeat * random.uniform(1, 1.1):
                    self._enqueue(key)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            pod = self._pods.get(key)
            if pod is None:
                continue
            pod.queued = False
            report = report_for(self._desired.get(key), pod.since, _now())
            heartbeat_due = time.monotonic() - pod.last_at >= self._heartbeat > 0
            if report.key() == pod.last_key and not heartbeat_due:
                continue
            try:
                await pod.reporter.report(report.state, report.synced, report.message)
            except LorapackError as err:
                self.failures += 1
                log.warning("report for %s failed: %s", key, err.message)
                continue
            self.patches += 1 if pod.synced == report.synced else 2
            pod.synced = report.synced
            pod.last_key = report.key()
            pod.last_at = time.monotonic()
