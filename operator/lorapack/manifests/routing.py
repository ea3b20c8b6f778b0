"""Pure builders of an adapter's routing objects: a selector-less Service and its EndpointSlice.

Each LoraAdapter gets a Service named after it in its own namespace (so teams call
`http://<adapter>.<namespace>.svc:8000/v1/...` with `"model": "<servedName>"`) and an
EndpointSlice that lorapack keeps equal to "ready pool pods whose agent reports this adapter
loaded at the wanted version". Any gateway or kube-proxy routes by it; no HTTPRoute per adapter,
so there is no 64-match limit. Both objects are owned by the adapter (deleted with it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from lorapack import labels
from lorapack.api.loraadapter import LoraAdapter
from lorapack.planning.rollout import Endpoint

__all__ = [
    "Endpoint",
    "adapter_owner_reference",
    "adapter_service",
    "endpoint_slice",
    "endpoint_url",
    "slice_name",
]

Obj = dict[str, Any]


def adapter_owner_reference(adapter: LoraAdapter) -> Obj:
    """Controller owner reference to the adapter."""
    return {
        "apiVersion": labels.API_VERSION,
        "kind": labels.ADAPTER_KIND,
        "name": adapter.metadata.name,
        "uid": adapter.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(adapter: LoraAdapter) -> dict[str, str]:
    return {
        labels.NAME_LABEL: "lorapack",
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.ADAPTER_LABEL: adapter.metadata.name,
    }


def endpoint_url(adapter: LoraAdapter, port: int, *, headless: bool = True) -> str:
    """The OpenAI base URL teams call."""
    port = labels.ENGINE_PORT if headless else port
    return f"http://{adapter.metadata.name}.{adapter.metadata.namespace}.svc:{port}/v1"


def adapter_service(adapter: LoraAdapter, port: int, *, headless: bool = True) -> Obj:
    """A Service without selector: its endpoints come only from lorapack's EndpointSlices.

    Headless (the default) takes no cluster IP: cluster DNS answers `<adapter>.<namespace>.svc`
    with the addresses of the pods that hold the adapter, and clients connect to them directly
    on the engine port. ClusterIP (opt-in) takes one virtual IP from the cluster's Service range
    and kube-proxy balances over the same endpoints.
    """
    spec: Obj = {
        "ports": [
            {
                "name": "http",
                "protocol": "TCP",
                # Without a virtual IP nothing translates ports: the engine's port is the port.
                "port": labels.ENGINE_PORT if headless else port,
                "targetPort": labels.ENGINE_PORT,
            }
        ],
    }
    if headless:
        spec["clusterIP"] = "None"
    else:
        spec["type"] = "ClusterIP"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": adapter.metadata.name,
            "namespace": adapter.metadata.namespace,
            "labels": _labels(adapter),
            "ownerReferences": [adapter_owner_reference(adapter)],
        },
        "spec": spec,
    }


def slice_name(adapter_name: str, pool_name: str) -> str:
    """One EndpointSlice per (adapter, pool): each pool's loop writes only its own slice."""
    name = f"{adapter_name}-{pool_name}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def endpoint_slice(
    adapter: LoraAdapter, pool_namespace: str, pool_name: str, endpoints: Sequence[Endpoint]
) -> Obj:
    """The EndpointSlice of `adapter` on one pool, listing exactly `endpoints` (sorted)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(adapter.metadata.name, pool_name),
            "namespace": adapter.metadata.namespace,
            "labels": {
                **_labels(adapter),
                labels.POOL_LABEL: pool_name,
                labels.POOL_NAMESPACE_LABEL: pool_namespace,
                labels.SERVICE_NAME_LABEL: adapter.metadata.name,
                labels.ENDPOINTSLICE_MANAGED_BY_LABEL: labels.ENDPOINTSLICE_MANAGER,
            },
            "ownerReferences": [adapter_owner_reference(adapter)],
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": labels.ENGINE_PORT}],
        "endpoints": [
            {
                "addresses": [e.ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "name": e.pod, "namespace": e.namespace},
                **({"nodeName": e.node} if e.node else {}),
            }
            for e in sorted(endpoints)
        ],
    }
