"""Operator start-up and shutdown: kopf settings, the shared clients, metrics, liveness.

Sets kopf's persistence to lorapack's own annotations and finalizer name (pinned explicitly
rather than relying on kopf's defaults), tunes watch timeouts, and builds the Runtime (clients,
wakers, caches) into the operator-wide memo.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from lorapack import labels
from lorapack.clients.kube import KubeClient
from lorapack.config import OperatorConfig
from lorapack.handlers import metrics
from lorapack.handlers.runtime import Runtime

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = labels.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=labels.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # Re-establish watches every few minutes: a silently dead connection costs at most that.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    memo.runtime = Runtime(config=config, kube=await KubeClient.connect())
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
    if runtime is not None:
        await runtime.kube.close()


@kopf.on.probe(id="poolLoops")
def pool_loops(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many pool loops this replica runs."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    return len(runtime.pool_wakers) if runtime else 0
