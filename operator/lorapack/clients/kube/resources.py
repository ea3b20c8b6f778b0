"""Where each kind lorapack reads or writes lives in the Kubernetes REST API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorapack.errors import InvalidSpec

__all__ = [
    "ADAPTER",
    "CONFIGMAP",
    "ENDPOINTSLICE",
    "EVENT",
    "NAMESPACE",
    "NETWORKPOLICY",
    "NODE",
    "PDB",
    "POD",
    "POOL",
    "ROLE",
    "ROLEBINDING",
    "SECRET",
    "SERVICE",
    "SERVICEACCOUNT",
    "STATEFULSET",
    "ResourceType",
    "resource_for",
]


@dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        """The REST path of the collection, or of one object (and its subresource)."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


POD = ResourceType("v1", "Pod", "pods")
SERVICE = ResourceType("v1", "Service", "services")
SECRET = ResourceType("v1", "Secret", "secrets")
CONFIGMAP = ResourceType("v1", "ConfigMap", "configmaps")
SERVICEACCOUNT = ResourceType("v1", "ServiceAccount", "serviceaccounts")
NAMESPACE = ResourceType("v1", "Namespace", "namespaces", namespaced=False)
NODE = ResourceType("v1", "Node", "nodes", namespaced=False)
EVENT = ResourceType("events.k8s.io/v1", "Event", "events")
STATEFULSET = ResourceType("apps/v1", "StatefulSet", "statefulsets")
PDB = ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
ENDPOINTSLICE = ResourceType("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
ROLE = ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLEBINDING = ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
POOL = ResourceType("lorapack.io/v1alpha1", "BaseModelPool", "basemodelpools")
ADAPTER = ResourceType("lorapack.io/v1alpha1", "LoraAdapter", "loraadapters")
NETWORKPOLICY = ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")

_BY_KIND = {
    (r.api_version, r.kind): r
    for r in (
        POD, SERVICE, SECRET, CONFIGMAP, SERVICEACCOUNT, NAMESPACE, NODE, EVENT, STATEFULSET,
        PDB, ENDPOINTSLICE, ROLE, ROLEBINDING, POOL, ADAPTER, NETWORKPOLICY,
    )
}  # fmt: skip


def resource_for(obj: Mapping[str, Any]) -> ResourceType:
    """The ResourceType of an object by its apiVersion and kind."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise InvalidSpec(f"lorapack does not manage {key[1]} ({key[0]})") from None
