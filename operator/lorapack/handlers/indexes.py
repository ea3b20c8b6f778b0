"""kopf indexes: the operator's watch-driven cache of the world (no list calls per reconcile).

kopf fills every index before any resource handler runs, so the loops see every pod,
EndpointSlice, Service, pool and adapter from their first pass. Values are parsed once per event
into the pure layer's types, with what lorapack never reads dropped first (managedFields, kopf's
bookkeeping annotations): at 10,000 adapters those copies were most of the operator's memory.

Desired-state Secrets are not watched: their only writer is this operator, which lists them
back when a pool loop starts (so it needs no watch on Secrets anywhere) and keeps them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.meta import format_validation_error
from lorapack.keys import object_key
from lorapack.planning.pods import PodObservation, observe_pod
from lorapack.planning.rollout import Endpoint
from lorapack.reconcilers.poolworld import ServiceView

__all__ = ["InvalidObject", "lean_body"]


@dataclass(frozen=True)
class InvalidObject:
    """An object whose spec does not validate (it gets an InvalidSpec status)."""

    namespace: str
    name: str
    generation: int
    message: str
    status: dict[str, Any]


def lean_body(body: kopf.Body) -> dict[str, Any]:
    """The object without the metadata lorapack never reads."""
    meta = body.get("metadata") or {}
    lean_meta = {
        k: v for k, v in meta.items() if k not in ("managedFields", "annotations", "finalizers")
    }
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": lean_meta}


def _invalid(body: kopf.Body, error: ValidationError) -> InvalidObject:
    meta = body.get("metadata") or {}
    return InvalidObject(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        generation=int(meta.get("generation") or 0),
        message=format_validation_error(error),
        status=dict(body.get("status") or {}),
    )


@kopf.index(labels.GROUP, labels.VERSION, labels.POOL_PLURAL)
async def lorapack_pools(body: kopf.Body, **_: Any) -> dict[str, BaseModelPool]:
    """base model name -> pools (only pools whose spec validates)."""
    try:
        pool = BaseModelPool.model_validate(lean_body(body))
    except ValidationError:
        return {}
    return {pool.spec.base_model.name: pool}


@kopf.index(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def lorapack_adapters(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, LoraAdapter | InvalidObject]:
    """adapter key -> the adapter (or why its spec does not validate)."""
    try:
        adapter: LoraAdapter | InvalidObject = LoraAdapter.model_validate(lean_body(body))
    except ValidationError as err:
        adapter = _invalid(body, err)
    return {object_key(namespace or "", name): adapter}


@kopf.index(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def lorapack_adapters_by_base(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, str]:
    """base model name -> adapter keys."""
    base = (body.get("spec") or {}).get("baseModel")
    if not isinstance(base, str):
        return {}
    return {base: object_key(namespace or "", name)}


@kopf.index(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def lorapack_adapters_by_name(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], str]:
    """(base model, served name) -> adapter keys: who claims each name, without scanning every
    adapter of the base model on every pass (quadratic at 10,000 adapters)."""
    spec = body.get("spec") or {}
    base = spec.get("baseModel")
    if not isinstance(base, str):
        return {}
    served = spec.get("servedName") or name
    return {(base, str(served)): object_key(namespace or "", name)}


@kopf.index("pods", labels={labels.POOL_LABEL: kopf.PRESENT})
async def lorapack_pods(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, PodObservation]:
    """pool key -> its pods."""
    pod = observe_pod(body)
    if pod is None:
        return {}
    return {f"{namespace}/{pod.pool}": pod}


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


@kopf.index(
    "services",
    labels={labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.ADAPTER_LABEL: kopf.PRESENT},
)
async def lorapack_services(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, ServiceView]:
    """adapter key -> its Service (owner and type)."""
    meta = body.get("metadata") or {}
    adapter = (meta.get("labels") or {}).get(labels.ADAPTER_LABEL)
    owners = [
        str(o.get("uid"))
        for o in meta.get("ownerReferences") or []
        if o.get("kind") == labels.ADAPTER_KIND
    ]
    headless = (body.get("spec") or {}).get("clusterIP") == "None"
    return {
        object_key(namespace or "", str(adapter)): ServiceView(
            owners[0] if owners else "", headless
        )
    }
