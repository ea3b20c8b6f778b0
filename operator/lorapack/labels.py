"""Names shared across layers: API group, labels, annotations, finalizers, field managers.

A leaf module: it imports nothing, so every layer (pure or I/O) may use it.
"""

from typing import Final

GROUP: Final = "lorapack.io"  # API_VERSION below repeats it as a literal for typing
VERSION: Final = "v1alpha1"
API_VERSION: Final = "lorapack.io/v1alpha1"
POOL_KIND: Final = "BaseModelPool"
POOL_PLURAL: Final = "basemodelpools"
ADAPTER_KIND: Final = "LoraAdapter"
ADAPTER_PLURAL: Final = "loraadapters"

# Labels on everything lorapack creates.
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "lorapack"
NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
POOL_LABEL: Final = f"{GROUP}/pool"
POOL_NAMESPACE_LABEL: Final = f"{GROUP}/pool-namespace"
ADAPTER_LABEL: Final = f"{GROUP}/adapter"
ADAPTER_NAMESPACE_LABEL: Final = f"{GROUP}/adapter-namespace"
POD_LABEL: Final = f"{GROUP}/pod"
ROLE_LABEL: Final = f"{GROUP}/role"
ROLE_DESIRED: Final = "desired-adapters"
ROLE_ENGINE: Final = "engine"
# Standard label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
ENDPOINTSLICE_MANAGED_BY_LABEL: Final = "endpointslice.kubernetes.io/managed-by"
ENDPOINTSLICE_MANAGER: Final = "operator.lorapack.io"  # a label value: no "/" allowed

# The agent's report on its own Pod (JSON, see api.podstate.ObservedState).
OBSERVED_ANNOTATION: Final = f"{GROUP}/observed"
# Pod condition the agent sets after a full sync pass; the pods' readiness gate.
SYNCED_CONDITION: Final = f"{GROUP}/adapters-synced"
# Key inside the per-pod desired-state Secret (JSON, see api.podstate.DesiredState).
DESIRED_KEY: Final = "desired.json"

FINALIZER: Final = f"{GROUP}/cleanup"
FIELD_MANAGER: Final = "lorapack-operator"
AGENT_FIELD_MANAGER: Final = "lorapack-agent"

# Ports inside a pool pod.
ENGINE_PORT: Final = 8000
AGENT_METRICS_PORT: Final = 8081

# Longest names whose derived objects fit Kubernetes' limits (see planning.names).
ADAPTER_NAME_MAX: Final = 63  # the adapter's Service name is a DNS-1035 label
POOL_NAME_MAX: Final = 52  # "<pool>-<revision hash>" is a 63-character label value
