"""Pool pod events: wake the pod's pool loop, and queue the adapters whose report changed."""

from __future__ import annotations

from typing import Any

import kopf

from lorapack import labels
from lorapack.handlers.runtime import Runtime
from lorapack.planning.pods import observe_pod

__all__ = ["pool_pod_changed"]


@kopf.on.event("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
async def pool_pod_changed(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """kopf calls event handlers after it updated its indexes for the same event, so the
    loops woken here read the new pod."""
    rt: Runtime | None = getattr(memo, "runtime", None)
    pod = observe_pod(body)
    if rt is None or pod is None:
        return
    rt.capture(kwargs)
    key = f"{namespace}/{pod.pool}"
    rt.wake_pools([key])
    if kwargs.get("type") == "DELETED":
        rt.reports.forget([pod.uid])
    report = {
        a.served_name: (a.digest, str(a.state), a.message)
        for a in (pod.observed.adapters if pod.observed else ())
    }
    changed = rt.reports.update(pod.uid, report) if kwargs.get("type") != "DELETED" else set(report)
    if changed:
        rt.wake_adapters([a for a in rt.placements.on_pool(key) if _served(rt, a) in changed])


def _served(rt: Runtime, key: str) -> str | None:
    index = rt.indexes.adapters
    if index is None or key not in index:
        return None
    adapter = next(iter(index[key]), None)
    return getattr(adapter, "served_name", None)
