"""The Kubernetes client: a small typed async facade over the official kubernetes_asyncio client.

`client` holds `KubeClient` (server-side apply, create, patch, delete, list, token requests; API
errors mapped to lorapack.errors), `resources` the REST location of every kind lorapack uses,
`watch` list-then-watch. Callers: the operator's handlers (through reconciler ports), the agent,
the test world.
"""

from lorapack.clients.kube.client import KubeClient
from lorapack.clients.kube.resources import (
    ADAPTER,
    CONFIGMAP,
    ENDPOINTSLICE,
    EVENT,
    NAMESPACE,
    NETWORKPOLICY,
    NODE,
    PDB,
    POD,
    POOL,
    ROLE,
    ROLEBINDING,
    SECRET,
    SERVICE,
    SERVICEACCOUNT,
    STATEFULSET,
    ResourceType,
    resource_for,
)
from lorapack.clients.kube.watch import WatchEvent

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
    "KubeClient",
    "ResourceType",
    "WatchEvent",
    "resource_for",
]
