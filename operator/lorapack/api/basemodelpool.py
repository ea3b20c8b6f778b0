"""BaseModelPool: a pool of vLLM GPU pods serving one base model, owned by platform engineers.

The spec says which base model the pods load, how each vLLM engine is configured for LoRA, which
GPUs the pods need, how far the pool may scale, and which namespaces may attach adapters. The
status is written only by the operator. CEL rules (`x-kubernetes-validations`) repeat the
cross-field checks of the pydantic validators so the API server refuses bad objects at apply time.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from lorapack.api.meta import (
    ApiModel,
    Condition,
    CrdInfo,
    LocalObjectReference,
    ObjectMeta,
    PrinterColumn,
    Quantity,
    name_rule,
    wire_default,
)
from lorapack.api.poolengine import (
    ALLOWED_LORA_RANKS,
    DEFAULT_ENGINE_RESOURCES,
    ContainerResources,
    EngineSpec,
    GpuSpec,
)
from lorapack.api.poolmodel import (
    BaseModelSpec,
    ModelSource,
    ModelVolume,
    PvcSource,
    S3ModelSource,
)
from lorapack.labels import API_VERSION, POOL_KIND, POOL_NAME_MAX, POOL_PLURAL

__all__ = [
    "ALLOWED_LORA_RANKS",
    "DEFAULT_ENGINE_RESOURCES",
    "AdapterPolicy",
    "AgentSpec",
    "BaseModelPool",
    "BaseModelPoolSpec",
    "BaseModelPoolStatus",
    "BaseModelSpec",
    "ContainerResources",
    "EngineSpec",
    "GpuSpec",
    "ModelSource",
    "ModelVolume",
    "PoolCapacity",
    "PoolReplicas",
    "PvcSource",
    "S3AccessGrant",
    "S3Defaults",
    "S3ModelSource",
]


class PoolReplicas(ApiModel):
    """Bounds for the number of pods; lorapack picks the count that fits the adapters."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.min <= self.max",
                    "message": "replicas.min must be <= replicas.max",
                }
            ]
        }
    }

    min: Annotated[int, Field(ge=0, le=1000)] = 1
    """Pods kept running even with no adapters."""
    max: Annotated[int, Field(ge=1, le=1000)] = 1
    """Most pods lorapack may run for this pool."""

    @model_validator(mode="after")
    def _order(self) -> PoolReplicas:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) must be <= replicas.max ({self.max})")
        return self


# An S3 folder: the bucket, or a prefix ending with "/" (so team-a/ never covers team-ab/).
S3_PREFIX_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/([A-Za-z0-9!_.*'()-]+/)*$"


class S3AccessGrant(ApiModel):
    """S3 folders that adapters of some namespaces may read with the pool's identity."""

    namespaces: Annotated[
        list[Annotated[str, Field(pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")]],
        Field(min_length=1, max_length=256),
    ]
    """Namespaces of the adapters this grant is for; ["*"] is every allowed namespace."""
    uri_prefixes: Annotated[
        list[Annotated[str, Field(pattern=S3_PREFIX_PATTERN, max_length=1024)]],
        Field(min_length=1, max_length=64),
    ]
    """Folders (s3://bucket/ or s3://bucket/prefix/) their spec.source.s3.uri may be under."""


class AdapterPolicy(ApiModel):
    """Which adapters may attach to the pool and how many each pod holds."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.allowedNamespaces) || !('*' in self.allowedNamespaces) "
                    "|| size(self.allowedNamespaces) == 1",
                    "message": "adapters.allowedNamespaces: '*' (all namespaces) must be the "
                    "only entry",
                }
            ]
        }
    }

    max_per_replica: Annotated[int, Field(ge=1, le=4096)] | None = None
    """Most adapters placed on one pod; unset means engine.maxCpuLoras, so every placed adapter
    stays in host memory."""
    allowed_namespaces: Annotated[
        list[Annotated[str, Field(pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")]],
        Field(max_length=256),
    ] = Field(default_factory=list)
    """Namespaces whose LoraAdapters may use this pool; ["*"] allows all. Empty means only the
    pool's own namespace."""
    cache_size: Quantity = "20Gi"
    """Size of each pod's adapter cache volume (emptyDir sizeLimit); also the agent's quota."""
    max_adapter_size: Quantity | None = None
    """Largest adapter (sum of its files) the pool accepts; unset means no limit beyond
    cacheSize."""
    requests_per_second_per_replica: (
        Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")] | None
    ) = None
    """Load budget of one pod, in requests per second summed over its adapters' expectedLoad;
    placement spreads busy adapters so no pod exceeds it. Unset: placement ignores load."""
    allow_pickle: bool = False
    """Accept adapters whose weights exist only as pickle (.bin/.pt). Off by default: pickle
    files can execute code when loaded by tools other than vLLM."""
    s3_access: Annotated[list[S3AccessGrant], Field(max_length=256)] = Field(default_factory=list)
    """Which S3 folders adapters of which namespaces may read with the pool's identity (the
    pool's spec.s3 credentials, or the pods' and operator's cloud identity when it names none).
    An adapter without its own spec.source.s3.credentialsSecretRef is refused unless a grant
    covers its namespace and URI; empty: every adapter must bring its own credentials."""

    @model_validator(mode="after")
    def _star_alone(self) -> AdapterPolicy:
        if "*" in self.allowed_namespaces and len(self.allowed_namespaces) != 1:
            raise ValueError("adapters.allowedNamespaces: '*' (all namespaces) must be alone")
        return self


class S3Defaults(ApiModel):
    """S3 settings the pool's agents use for adapters that name no credentials of their own."""

    endpoint: Annotated[str, Field(pattern=r"^https?://", max_length=512)] | None = None
    """S3 endpoint URL for S3-compatible stores; unset means AWS."""
    region: Annotated[str, Field(max_length=64)] | None = None
    """S3 region."""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """Bucket addressing; "path" for MinIO, Ceph and SeaweedFS."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret in the pool's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, given to
    the pool's agents; unset uses the pod's ambient identity (IRSA, EKS Pod Identity)."""


class AgentSpec(ApiModel):
    """The lorapack agent of the pool's pods and the ServiceAccount they run as."""

    service_account_annotations: Annotated[dict[str, str], Field(max_length=32)] = Field(
        default_factory=dict
    )
    """Annotations of the pods' ServiceAccount `<pool>-agent`, for a cloud identity that lets
    the agents (and the fetch-model init container) read S3 without keys: IRSA
    (eks.amazonaws.com/role-arn), GKE Workload Identity (iam.gke.io/gcp-service-account), Azure
    (azure.workload.identity/client-id). EKS Pod Identity needs none: it associates the
    ServiceAccount by name."""


class BaseModelPoolSpec(ApiModel):
    """Desired state of a BaseModelPool."""

    base_model: BaseModelSpec
    """The base model the pool serves."""
    engine: EngineSpec = Field(
        default_factory=EngineSpec, json_schema_extra=wire_default(EngineSpec)
    )
    """vLLM engine settings."""
    gpu: GpuSpec = Field(default_factory=GpuSpec, json_schema_extra=wire_default(GpuSpec))
    """GPUs per pod and node placement."""
    replicas: PoolReplicas = Field(
        default_factory=PoolReplicas, json_schema_extra=wire_default(PoolReplicas)
    )
    """Pod count bounds."""
    adapters: AdapterPolicy = Field(
        default_factory=AdapterPolicy, json_schema_extra=wire_default(AdapterPolicy)
    )
    """Adapter admission and per-pod limits."""
    s3: S3Defaults = Field(default_factory=S3Defaults, json_schema_extra=wire_default(S3Defaults))
    """S3 defaults for the pool's agents."""
    agent: AgentSpec = Field(default_factory=AgentSpec, json_schema_extra=wire_default(AgentSpec))
    """The pool's agents and their ServiceAccount."""

    @property
    def adapters_per_pod(self) -> int:
        """How many adapters placement puts on one pod."""
        if self.adapters.max_per_replica is not None:
            return self.adapters.max_per_replica
        return self.engine.cpu_loras


class PoolCapacity(ApiModel):
    """Adapter slots over the pool's current pods."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    slots_total: int = 0
    """Adapter places over all current pods (pods x adapters per pod)."""
    slots_used: int = 0
    """Places taken by placed adapter replicas."""


class BaseModelPoolStatus(ApiModel):
    """Observed state of a BaseModelPool, written by the operator."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=16,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = Field(default_factory=list)
    """Ready, Reconciling and Stalled (kstatus)."""
    replicas: int = 0
    """Pods that exist."""
    ready_replicas: int = 0
    """Pods that are ready (engine healthy and adapters synced)."""
    desired_replicas: int = 0
    """Pods the placement asks for, within replicas.min and replicas.max."""
    capacity: PoolCapacity = Field(default_factory=PoolCapacity)
    """Adapter slots."""
    adapters_placed: int = 0
    """Adapters with every requested replica assigned to a pod."""
    adapters_pending: int = 0
    """Adapters that want this pool but are not (fully) placed."""
    selector: str = ""
    """Label selector of the pool's pods (for tooling)."""


class BaseModelPool(ApiModel):
    """A pool of vLLM GPU pods for one base model."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["lorapack.io/v1alpha1"] = API_VERSION
    kind: Literal["BaseModelPool"] = POOL_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BaseModelPoolSpec
    status: BaseModelPoolStatus | None = None

    CRD: ClassVar[CrdInfo] = CrdInfo(
        validations=name_rule(POOL_NAME_MAX, "the name of its StatefulSet, pods and Services"),
        kind=POOL_KIND,
        plural=POOL_PLURAL,
        singular="basemodelpool",
        short_names=["bmp"],
        categories=["lorapack"],
        printer_columns=[
            PrinterColumn(
                name="Model",
                type="string",
                json_path=".spec.baseModel.name",
                description="Served base model",
            ),
            PrinterColumn(name="GPU", type="string", json_path=".spec.gpu.type"),
            PrinterColumn(
                name="Replicas",
                type="integer",
                json_path=".status.replicas",
            ),
            PrinterColumn(
                name="Ready",
                type="string",
                json_path='.status.conditions[?(@.type=="Ready")].status',
            ),
            PrinterColumn(
                name="Adapters",
                type="integer",
                json_path=".status.adaptersPlaced",
            ),
            PrinterColumn(
                name="Reason",
                type="string",
                priority=1,
                json_path='.status.conditions[?(@.type=="Ready")].reason',
            ),
            PrinterColumn(
                name="Age",
                type="date",
                json_path=".metadata.creationTimestamp",
            ),
        ],
    )
