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
    S3Uri,
    Toleration,
    name_rule,
    wire_default,
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

# vLLM's --max-lora-rank is a Literal of exactly these values (vllm/config/lora.py).
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]
# A decimal in (0, 1], as a string: CRDs avoid floats (kube-api-linter "nofloats").
FRACTION_PATTERN = r"^(0?\.[0-9]*[1-9][0-9]*|1(\.0+)?)$"
# A Kubernetes resource.Quantity as people write CPU and memory: 500m, 2, 16Gi, 1.5G.
RESOURCE_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
ResourceQuantity = Annotated[str, Field(pattern=RESOURCE_QUANTITY_PATTERN, max_length=64)]
_RESOURCE_NAMES_RULE = {
    "rule": "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] "
    "|| k.startsWith('hugepages-'))",
    "message": "only cpu, memory, ephemeral-storage and hugepages-<size> can be set here; the "
    "GPUs come from spec.gpu (resourceName, count)",
}
ResourceList = Annotated[
    dict[str, ResourceQuantity],
    Field(max_length=8, json_schema_extra={"x-kubernetes-validations": [_RESOURCE_NAMES_RULE]}),
]


def _check_resource_names(where: str, values: dict[str, str]) -> None:
    for name in values:
        if name not in ("cpu", "memory", "ephemeral-storage") and not name.startswith("hugepages-"):
            raise ValueError(
                f"engine.resources.{where}.{name}: only cpu, memory, ephemeral-storage and "
                "hugepages-<size> can be set here; the GPUs come from spec.gpu (resourceName, "
                "count)"
            )


class S3ModelSource(ApiModel):
    """Base-model weights in S3, downloaded by the pod before vLLM starts."""

    uri: S3Uri
    """s3://bucket/prefix/ holding config.json, tokenizer and safetensors weights."""
    endpoint: Annotated[str, Field(pattern=r"^https?://", max_length=512)] | None = None
    """S3 endpoint URL for S3-compatible stores (Ceph, SeaweedFS...); unset means AWS."""
    region: Annotated[str, Field(max_length=64)] | None = None
    """S3 region; unset uses the pool's s3.region or the SDK default."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret in the pool's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; unset
    uses the pod's ambient identity (IRSA, EKS Pod Identity, instance profile)."""


class PvcSource(ApiModel):
    """Base-model weights on a PersistentVolumeClaim in the pool's namespace."""

    claim_name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the PersistentVolumeClaim."""
    sub_path: Annotated[str, Field(max_length=1024, pattern=r"^[^/].*$|^$")] = ""
    """Folder inside the volume holding the model (relative; empty for the volume root)."""


class ModelSource(ApiModel):
    """Where pods load the base weights from: exactly one of s3 or pvc."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.s3) != has(self.pvc)",
                    "message": "set exactly one of source.s3 or source.pvc",
                }
            ]
        }
    }

    s3: S3ModelSource | None = None
    """Download the weights from S3 into the pod at start-up."""
    pvc: PvcSource | None = None
    """Mount the weights read-only from a PersistentVolumeClaim."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if (self.s3 is None) == (self.pvc is None):
            raise ValueError("set exactly one of source.s3 or source.pvc")
        return self


class ModelVolume(ApiModel):
    """Where each pod keeps the base model it downloads from source.s3 (the `fetch-model` init
    container writes it, vLLM reads it)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.type in ['PersistentVolumeClaim', 'Ephemeral']) "
                    "|| has(self.size)",
                    "message": "baseModel.volume.size is required with type "
                    "PersistentVolumeClaim or Ephemeral (the claim's storage request, e.g. 40Gi)",
                },
                {
                    "rule": "(self.type == 'HostPath') == has(self.hostPath)",
                    "message": "baseModel.volume.hostPath is required with type HostPath, and "
                    "only allowed with it",
                },
                {
                    "rule": "!has(self.storageClassName) "
                    "|| self.type in ['PersistentVolumeClaim', 'Ephemeral']",
                    "message": "baseModel.volume.storageClassName is only used with type "
                    "PersistentVolumeClaim or Ephemeral",
                },
                {
                    # A StatefulSet's volumeClaimTemplates cannot change after it is created.
                    "rule": "(self.type == 'PersistentVolumeClaim') == "
                    "(oldSelf.type == 'PersistentVolumeClaim') && "
                    "(self.type != 'PersistentVolumeClaim' || (self.size == oldSelf.size && "
                    "has(self.storageClassName) == has(oldSelf.storageClassName) && "
                    "(!has(self.storageClassName) || "
                    "self.storageClassName == oldSelf.storageClassName)))",
                    "message": "baseModel.volume: a PersistentVolumeClaim volume (its type, size "
                    "and storageClassName) cannot change once the pool exists (StatefulSet "
                    "volumeClaimTemplates are immutable): delete and re-create the pool",
                },
            ]
        }
    }

    type: Literal["EmptyDir", "PersistentVolumeClaim", "Ephemeral", "HostPath"] = "EmptyDir"
    """EmptyDir (default): node disk, downloaded again whenever a pod starts on a node.
    PersistentVolumeClaim: one claim per pod ordinal (StatefulSet volumeClaimTemplates), kept
    when the pod restarts or moves, so it is not downloaded again; deleted with the pool.
    Ephemeral: a claim that lives as long as the pod (disks larger than the node's ephemeral
    storage, e.g. local NVMe through a CSI driver). HostPath: a node folder shared by every pool
    pod on that node, kept between pods (needs a namespace whose Pod Security level allows
    hostPath volumes)."""
    size: ResourceQuantity | None = None
    """EmptyDir: its sizeLimit (unset: no limit, the pod is evicted only when the node's disk
    fills). PersistentVolumeClaim and Ephemeral: the claim's storage request (required). Room
    for the weights: `lorapack size` prints them (e.g. 15Gi for an 8B model in bf16)."""
    storage_class_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """StorageClass of the claims; unset uses the cluster's default class."""
    host_path: Annotated[str, Field(pattern=r"^/[^:]*$", max_length=1024)] | None = None
    """HostPath: the node folder (absolute), e.g. /var/lib/lorapack/models; each base-model URI
    gets its own subfolder."""

    @model_validator(mode="after")
    def _fields_for_type(self) -> ModelVolume:
        claim = self.type in ("PersistentVolumeClaim", "Ephemeral")
        if claim and self.size is None:
            raise ValueError(
                f"baseModel.volume.size is required with type {self.type} (the claim's storage "
                "request, e.g. 40Gi)"
            )
        if (self.type == "HostPath") != (self.host_path is not None):
            raise ValueError(
                "baseModel.volume.hostPath is required with type HostPath, and only allowed with it"
            )
        if self.storage_class_name is not None and not claim:
            raise ValueError(
                "baseModel.volume.storageClassName is only used with type PersistentVolumeClaim "
                "or Ephemeral"
            )
        return self


class BaseModelSpec(ApiModel):
    """The base model every pod of the pool serves."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.volume) || has(self.source.s3)",
                    "message": "baseModel.volume is only used with source.s3 (a source.pvc is "
                    "mounted as it is)",
                }
            ]
        }
    }

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Served model name (vLLM --served-model-name). Adapters must name the same baseModel,
    e.g. meta-llama/Meta-Llama-3-8B."""
    architecture: Annotated[str, Field(max_length=128)] | None = None
    """Key of lorapack's model catalog (e.g. llama-3-8b, see `lorapack size --list`) used for
    sizing; unset means lorapack infers it from name."""
    source: ModelSource
    """Where pods load the weights from."""
    volume: ModelVolume | None = None
    """Where pods keep the weights they download from source.s3; unset: an emptyDir without a
    size limit."""

    @model_validator(mode="after")
    def _volume_needs_s3(self) -> BaseModelSpec:
        if self.volume is not None and self.source.s3 is None:
            raise ValueError(
                "baseModel.volume is only used with source.s3 (a source.pvc is mounted as it is)"
            )
        return self


DEFAULT_ENGINE_RESOURCES = {"requests": {"cpu": "2", "memory": "16Gi"}}
"""The vLLM container's CPU and memory when spec.engine.resources is unset."""


class ContainerResources(ApiModel):
    """CPU and memory of the vLLM container, in the shape of core/v1 ResourceRequirements (the
    GPUs are added from spec.gpu)."""

    requests: ResourceList = Field(default_factory=dict)
    """What the scheduler reserves on the node (core/v1: unset values default to the limits)."""
    limits: ResourceList = Field(default_factory=dict)
    """Hard caps. A memory limit below what vLLM holds in host RAM (the CPU adapter cache:
    `lorapack size` prints it) gets the engine OOM-killed; memory limit = request gives the
    Guaranteed QoS class."""

    @model_validator(mode="after")
    def _names(self) -> ContainerResources:
        _check_resource_names("requests", self.requests)
        _check_resource_names("limits", self.limits)
        return self


class EngineSpec(ApiModel):
    """How each pod's vLLM engine is started."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.maxCpuLoras) || self.maxCpuLoras >= self.maxLoras",
                    "message": "engine.maxCpuLoras must be >= engine.maxLoras (vLLM refuses "
                    "max_cpu_loras < max_loras)",
                }
            ]
        }
    }

    image: Annotated[str, Field(min_length=1, max_length=512)] = "vllm/vllm-openai:v0.33.0"
    """vLLM container image."""
    max_loras: Annotated[int, Field(ge=1, le=256)] = 8
    """--max-loras: GPU slots, the most distinct adapters running in one batch."""
    max_lora_rank: LoraRank = 64
    """--max-lora-rank: every GPU slot is sized for this rank; adapters above it are refused.
    One of 1, 8, 16, 32, 64, 128, 256, 320, 512."""
    max_cpu_loras: Annotated[int, Field(ge=1, le=4096)] | None = None
    """--max-cpu-loras: adapters kept in host memory (LRU); at least maxLoras. Unset means
    maxLoras, vLLM's default."""
    max_model_len: Annotated[int, Field(ge=16, le=10_000_000)] | None = None
    """--max-model-len: longest sequence (prompt + output) in tokens; unset uses the model's."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """--dtype of the weights and activations."""
    gpu_memory_utilization: Annotated[str, Field(pattern=FRACTION_PATTERN)] = "0.92"
    """--gpu-memory-utilization as a decimal string in (0, 1], e.g. "0.92"."""
    extra_args: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=64)] = (
        Field(default_factory=list)
    )
    """More `vllm serve` arguments, appended after the ones lorapack sets."""
    resources: ContainerResources | None = None
    """CPU and memory requests and limits of the vLLM container, as in core/v1 (the GPUs come
    from spec.gpu). Unset: requests cpu 2 and memory 16Gi, no limits: vLLM's process, the CUDA
    context and the CPU adapter cache (engine.maxCpuLoras adapters in pinned host memory) live
    in host RAM."""

    @model_validator(mode="after")
    def _cpu_loras(self) -> EngineSpec:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"engine.maxCpuLoras ({self.max_cpu_loras}) must be >= engine.maxLoras "
                f"({self.max_loras}): raise maxCpuLoras or lower maxLoras"
            )
        return self

    @property
    def cpu_loras(self) -> int:
        """The effective --max-cpu-loras."""
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras


class GpuSpec(ApiModel):
    """The GPUs each pod requests and where it may run."""

    type: Annotated[str, Field(min_length=1, max_length=64)] = "L20"
    """GPU catalog type used for sizing (L20, L40S, L4, A10, A10G, A100-40GB, A100-80GB,
    H100-SXM, H100-PCIe, H20, H200; `lorapack size --list`)."""
    count: Annotated[int, Field(ge=1, le=16)] = 1
    """GPUs per pod (vLLM --tensor-parallel-size)."""
    resource_name: Annotated[str, Field(min_length=1, max_length=253)] = "nvidia.com/gpu"
    """Extended resource the pods request."""
    node_selector: Annotated[dict[str, str], Field(max_length=64)] = Field(default_factory=dict)
    """Node labels the pods require, e.g. nvidia.com/gpu.product: NVIDIA-L20."""
    tolerations: Annotated[list[Toleration], Field(max_length=64)] = Field(default_factory=list)
    """Tolerations for tainted GPU nodes."""


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
