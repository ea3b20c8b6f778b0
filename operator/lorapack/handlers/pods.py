"""Pod handler: when a pool pod changes (scheduled, ready, the agent's report), wake the pool's
placement loop and the status loops of the adapters placed on that pool."""

from __future__ import annotations

from typing import Any

import kopf

from lorapack import labels
from lorapack.handlers.runtime import Runtime
from lorapack.planning.pods import observe_pod


@kopf.on.event("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
def pool_pod_changed(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """The index already holds the new pod; the loops re-read it."""
    rt: Runtime | None = getattr(memo, "runtime", None)
    pod = observe_pod(body)
    if rt is None or pod is None:
        return
    key = f"{namespace}/{pod.pool}"
    rt.wake_pools([key])
    rt.wake_adapters([a for a, p in rt.placements.items() if p.pool == key])
