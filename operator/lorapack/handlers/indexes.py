"""kopf indexes: the operator's watch-driven cache of the world (no list calls per reconcile).

kopf guarantees indexes are fully populated before any resource handler runs, so the pool loops
see every pod, desired-state Secret and EndpointSlice from their first pass. Values are parsed
once per event into the pure layer's types (pydantic models, PodObservation), so readers never
touch raw bodies.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import desired_from_secret
from lorapack.handlers.runtime import Runtime
from lorapack.planning.pods import PodObservation, observe_pod
from lorapack.planning.rollout import Endpoint

log = logging.getLogger(__name__)


@kopf.index(labels.GROUP, labels.VERSION, labels.POOL_PLURAL)
async def lorapack_pools(body: kopf.Body, **_: Any) -> dict[str, BaseModelPool]:
    """base model name -> pools (only pools whose spec validates)."""
    try:
        pool = BaseModelPool.model_validate(dict(body))
    except ValidationError:
        return {}
    return {pool.spec.base_model.name: pool}


@kopf.index(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def lorapack_adapters(body: kopf.Body, **_: Any) -> dict[str, LoraAdapter]:
    """base model name -> adapters (only adapters whose spec validates)."""
    try:
        adapter = LoraAdapter.model_validate(dict(body))
    except ValidationError:
        return {}
    return {adapter.spec.base_model: adapter}


@kopf.index("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
async def lorapack_pods(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, PodObservation]:
    """pool key -> its pods."""
    pod = observe_pod(body)
    if pod is None:
        return {}
    return {f"{namespace}/{pod.pool}": pod}


# Wake-ups live in event handlers, not in the indexers: kopf updates every index before it
# invokes the handlers of the same event, so the loops woken here always read the new object.


@kopf.on.event("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
async def pool_pod_changed(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Wake the pod's pool loop, and the status loops of adapters whose entry changed."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    pod = observe_pod(body)
    if runtime is None or pod is None:
        return
    key = f"{namespace}/{pod.pool}"
    runtime.wake_pools([key])
    report: dict[str, tuple[str, str, str]] = {
        a.served_name: (a.digest, str(a.state), a.message)
        for a in (pod.observed.adapters if pod.observed else ())
    }
    before = runtime.pod_reports.get(pod.uid, {})
    runtime.pod_reports[pod.uid] = report
    changed = {n for n in set(report) | set(before) if report.get(n) != before.get(n)}
    if changed:
        runtime.wake_adapters(
            [
                a
                for a, p in runtime.placements.items()
                if p.pool == key and runtime.served_names.get(a) in changed
            ]
        )


@kopf.on.event(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def adapter_changed(memo: kopf.Memo, **_: Any) -> None:
    """A new or changed adapter (e.g. a validated artifact): the pool loops re-plan."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.wake_pools()


@kopf.index("secrets", labels={labels.ROLE_LABEL: labels.ROLE_DESIRED})
async def lorapack_desired(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Any]:
    """pool key -> (ordinal, DesiredState) of each pod's published desired state."""
    pool = (body.get("metadata", {}).get("labels") or {}).get(labels.POOL_LABEL)
    state = desired_from_secret(dict(body), labels.DESIRED_KEY)
    if not pool or state is None:
        return {}
    ordinal = state.pod.rsplit("-", 1)[-1]
    if not ordinal.isdigit():
        return {}
    return {f"{namespace}/{pool}": (int(ordinal), state)}


@kopf.index(
    "discovery.k8s.io",
    "v1",
    "endpointslices",
    labels={labels.ENDPOINTSLICE_MANAGED_BY_LABEL: labels.ENDPOINTSLICE_MANAGER},
)
async def lorapack_slices(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, Any]:
    """pool key -> ("namespace/name", endpoints) of the EndpointSlices that pool writes."""
    meta_labels = body.get("metadata", {}).get("labels") or {}
    pool = meta_labels.get(labels.POOL_LABEL)
    pool_ns = meta_labels.get(labels.POOL_NAMESPACE_LABEL)
    if not pool or not pool_ns:
        return {}
    endpoints = []
    for item in body.get("endpoints") or []:
        ref = item.get("targetRef") or {}
        for address in item.get("addresses") or []:
            endpoints.append(
                Endpoint(
                    ip=address,
                    pod=str(ref.get("name", "")),
                    namespace=str(ref.get("namespace", "")),
                    node=item.get("nodeName"),
                )
            )
    return {f"{pool_ns}/{pool}": (f"{namespace}/{name}", tuple(sorted(endpoints)))}
