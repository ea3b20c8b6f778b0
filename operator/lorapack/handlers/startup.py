"""Operator start-up and shutdown: kopf settings, the shared clients, metrics, liveness.

Sets kopf's persistence to lorapack's own annotations and finalizer name (pinned explicitly
rather than relying on kopf's defaults), tunes watch timeouts, and builds the Runtime (clients,
wakers, caches) into the operator-wide memo.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterable
from functools import partial
from typing import Any, cast

import kopf

from lorapack import labels
from lorapack.clients.kube import KubeClient
from lorapack.config import OperatorConfig
from lorapack.handlers import metrics
from lorapack.handlers.adapters import adapter_work
from lorapack.handlers.adapters_io import S3Access
from lorapack.handlers.runtime import Runtime
from lorapack.handlers.workqueue import WorkQueue

log = logging.getLogger(__name__)

# Event handlers that only wake loops run for every pod and adapter event; kopf logs each
# success at INFO, which would drown the useful lines.
_QUIET_HANDLERS = ("'pool_pod_changed'", "'adapter_changed'")


class _QuietWakeups(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno <= logging.INFO
            and "succeeded" in message
            and any(name in message for name in _QUIET_HANDLERS)
        )


logging.getLogger("kopf.objects").addFilter(_QuietWakeups())


class LeanDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base ("essence"), kept only for kinds with create or update handlers.

    kopf builds the essence of every event of a resource with change handlers and, after a
    cycle without a handler to run, stores it in an annotation: for LoraAdapters, whose only
    change handler is the deletion handler, that was one PATCH per adapter created and per
    spec change (and a watch event and adapter pass each), and a deep copy of the whole body
    on every event (a tenth of the operator's CPU at 1,000 adapters). For the kinds in
    `stateless` nothing is kept or read back (kopf then sees every event as a creation it has
    no handler for, and skips it; deletion is found from the finalizer and the deletion
    timestamp, never from the diff). For the others the essence is kopf's, built from the body
    without the metadata (but labels and annotations, which kopf keeps) and status it would
    copy and drop, unless a handler watches a field outside the spec (`extra_fields`).
    """

    def __init__(self, *, stateless: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stateless = frozenset(stateless)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if body.get("kind") in self.stateless:
            return cast(kopf.BodyEssence, {})
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") in self.stateless:
            return None
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") not in self.stateless:
            super().store(body=body, patch=patch, essence=essence)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = labels.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.GROUP)
    settings.persistence.diffbase_storage = LeanDiffBase(
        stateless=[labels.ADAPTER_KIND], prefix=labels.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # Re-establish watches every few minutes: a silently dead connection costs at most that.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # boto3 calls run in threads (asyncio.to_thread): a pool sized for I/O, not for cores, so
    # a burst of new adapters is validated in parallel.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="lorapack-io")
    )
    kube = await KubeClient.connect()
    metrics.API_THROTTLED.set_function(lambda: kube.throttled)
    runtime = Runtime(config=config, kube=kube, loop=asyncio.get_running_loop(), s3=S3Access(kube))
    runtime.queue = WorkQueue(
        runtime.loop, partial(adapter_work, runtime), workers=config.adapter_workers
    )
    memo.runtime = runtime  # the queue starts with the first resource handler (Runtime.capture)
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_host)
    log.info(
        "Operator started (namespaces: %s, agent image %s)",
        config.namespaces or "all",
        config.agent_image,
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None and runtime.queue_task is not None:
        runtime.queue_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runtime.queue_task
    if runtime is not None:
        await runtime.kube.close()


@kopf.on.probe(id="poolLoops")
def pool_loops(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many pool loops this replica runs."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    return len(runtime.pool_wakers) if runtime else 0
