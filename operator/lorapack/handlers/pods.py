"""Pool pod events: wake the pod's pool loop, and queue the adapters whose report changed."""

from __future__ import annotations

from typing import Any, cast

import kopf

from lorapack import labels
from lorapack.handlers.runtime import Runtime
from lorapack.planning.pods import PodObservation, observe_pod

__all__ = ["pool_pod_changed"]


@kopf.on.event("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
async def pool_pod_changed(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """kopf calls event handlers after it updated its indexes for the same event, so the
    loops woken here read the new pod."""
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is None:
        return
    rt.capture(kwargs)
    pod = _indexed(rt, body, namespace) or observe_pod(body)
    if pod is None:
        return
    key = f"{namespace}/{pod.pool}"
    base = rt.base_of_pool(key)
    if base is not None:
        rt.group_views.touch(base)  # every pool of the base model plans with this pod
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


def _indexed(rt: Runtime, body: kopf.Body, namespace: str | None) -> PodObservation | None:
    """The pod as the index parsed it for this same event (its report is parsed once, not
    twice: a pod's report lists every adapter it holds)."""
    meta = body.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(labels.POOL_LABEL)
    uid = meta.get("uid")
    index = rt.indexes.pods
    key = f"{namespace}/{pool}"
    if not pool or index is None or key not in index:
        return None
    version = meta.get("resourceVersion")
    for pod in index[key]:
        if pod.uid == uid and pod.resource_version == version:
            return cast(PodObservation, pod)
    return None


def _served(rt: Runtime, key: str) -> str | None:
    index = rt.indexes.adapters
    if index is None or key not in index:
        return None
    adapter = next(iter(index[key]), None)
    return getattr(adapter, "served_name", None)
