"""LoraAdapter: one team's LoRA fine-tune in S3, to be served by a pool of its base model.

Teams write the spec; the operator validates the artifact, places it on pool pods, and reports in
the status what was really loaded where (from the agents' reports, never from what was asked).
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
    S3Uri,
    name_rule,
    wire_default,
)
from lorapack.labels import ADAPTER_KIND, ADAPTER_NAME_MAX, ADAPTER_PLURAL, API_VERSION

__all__ = [
    "SERVED_NAME_PATTERN",
    "AdapterReplicas",
    "AdapterSource",
    "ArtifactObject",
    "ArtifactStatus",
    "ExpectedLoad",
    "LoraAdapter",
    "LoraAdapterSpec",
    "LoraAdapterStatus",
    "PlacementState",
    "PlacementStatus",
    "PoolReference",
    "S3AdapterSource",
]

# Names clients put in the request's "model" field; kept URL- and label-friendly.
SERVED_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
# Relative file names inside the adapter prefix (no absolute paths, no "..").
FILE_NAME_PATTERN = r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]*$"
SHA256_PATTERN = r"^sha256:[a-f0-9]{64}$"

PlacementState = Literal["Pending", "Downloading", "Loading", "Loaded", "Unloading", "Failed"]


class PoolReference(ApiModel):
    """A BaseModelPool, by name and optionally namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the BaseModelPool."""
    namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Namespace of the pool; unset means the adapter's own namespace."""


class S3AdapterSource(ApiModel):
    """Adapter files under an S3 prefix, as PEFT's save_pretrained writes them."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.versionIds) || self.versionIds.all(k, "
                    "!k.contains('..') && !k.startsWith('/'))",
                    "message": "source.s3.versionIds keys must be file names relative to the "
                    "URI (no '..', no leading '/')",
                }
            ]
        }
    }

    uri: S3Uri
    """s3://bucket/prefix/ holding adapter_config.json and adapter_model.safetensors."""
    endpoint: Annotated[str, Field(pattern=r"^https?://", max_length=512)] | None = None
    """S3 endpoint URL for S3-compatible stores; unset uses the pool's s3.endpoint (or AWS)."""
    region: Annotated[str, Field(max_length=64)] | None = None
    """S3 region; unset uses the pool's s3.region."""
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    """Bucket addressing; unset uses the pool's s3.addressingStyle."""
    version_ids: Annotated[
        dict[str, Annotated[str, Field(min_length=1, max_length=1024)]], Field(max_length=64)
    ] = Field(default_factory=dict)
    """Pin object versions of a versioned bucket: file name (relative to uri) -> versionId."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret in the adapter's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. The
    operator reads it and hands pods short-lived presigned URLs, never the keys. Unset uses the
    pool's s3 credentials."""

    @model_validator(mode="after")
    def _relative_keys(self) -> S3AdapterSource:
        for key in self.version_ids:
            if ".." in key or key.startswith("/"):
                raise ValueError(
                    f"source.s3.versionIds key {key!r} must be a file name relative to the uri"
                )
        return self


class AdapterSource(ApiModel):
    """Where the adapter's files are."""

    s3: S3AdapterSource
    """An S3 (or S3-compatible) prefix."""


class AdapterReplicas(ApiModel):
    """How many pods serve the adapter."""

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

    min: Annotated[int, Field(ge=1, le=1000)] = 1
    """Pods that must hold the adapter for it to be Ready; never dropped below during moves
    and version rollouts."""
    max: Annotated[int, Field(ge=1, le=1000)] = 1
    """Most pods that may hold it; lorapack adds replicas above min for expected load."""

    @model_validator(mode="after")
    def _order(self) -> AdapterReplicas:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) must be <= replicas.max ({self.max})")
        return self


class ExpectedLoad(ApiModel):
    """A hint of the traffic the adapter will get, used to spread load over pods."""

    requests_per_second: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")] = "0"
    """Average requests per second, as a decimal string (e.g. "2.5")."""


class LoraAdapterSpec(ApiModel):
    """Desired state of a LoraAdapter."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.digests) || self.digests.all(k, !k.contains('..') "
                    "&& !k.startsWith('/'))",
                    "message": "digests keys must be file names relative to source.s3.uri "
                    "(no '..', no leading '/')",
                }
            ]
        }
    }

    base_model: Annotated[str, Field(min_length=1, max_length=256)]
    """The base model the adapter was trained on; must equal a pool's spec.baseModel.name."""
    pool_ref: PoolReference | None = None
    """Pin a specific pool; unset lets lorapack choose among pools serving baseModel."""
    source: AdapterSource
    """Where the adapter files are."""
    digests: Annotated[
        dict[
            Annotated[str, Field(pattern=FILE_NAME_PATTERN, max_length=512)],
            Annotated[str, Field(pattern=SHA256_PATTERN)],
        ],
        Field(max_length=64),
    ] = Field(default_factory=dict)
    """Expected sha256 per file ("adapter_model.safetensors": "sha256:<64 hex>"); pods refuse
    files that do not match."""
    served_name: Annotated[str, Field(pattern=SERVED_NAME_PATTERN)] | None = None
    """Name clients put in the request's "model" field; unset means metadata.name. Unique per
    base model (the adapter created first keeps a contested name)."""
    rank: Annotated[int, Field(ge=1, le=512)] | None = None
    """Declared LoRA rank; when set, the adapter_config.json's r must match."""
    replicas: AdapterReplicas = Field(
        default_factory=AdapterReplicas, json_schema_extra=wire_default(AdapterReplicas)
    )
    """How many pods serve the adapter."""
    expected_load: ExpectedLoad | None = None
    """Traffic hint for spreading load."""
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    """Placement order when a pool is full: higher priority adapters are placed first."""

    @model_validator(mode="after")
    def _relative_digests(self) -> LoraAdapterSpec:
        for key in self.digests:
            if ".." in key or key.startswith("/"):
                raise ValueError(
                    f"digests key {key!r} must be a file name relative to source.s3.uri"
                )
        return self


class ArtifactObject(ApiModel):
    """One file of the adapter, as listed in S3."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    path: str
    """File name relative to the URI."""
    size: int
    """Size in bytes."""
    etag: str = ""
    """S3 ETag."""
    version_id: str | None = None
    """S3 version id (versioned buckets)."""


class ArtifactStatus(ApiModel):
    """What lorapack read from the adapter's files."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    rank: int | None = None
    """LoRA rank r (the largest of r and any rank_pattern value)."""
    alpha: int | None = None
    """lora_alpha."""
    target_modules: list[str] = Field(default_factory=list)
    """Modules the adapter changes (from adapter_config.json)."""
    size_bytes: int | None = None
    """Sum of the adapter's file sizes."""
    digest: str | None = None
    """sha256 over the file manifest (names, sizes, ETags, version ids): changes whenever any
    file changes, and names the version the pods hold."""
    base_model_name_or_path: str | None = None
    """base_model_name_or_path recorded by PEFT, for reference."""
    uri: str | None = None
    """The source URI these files were read from."""
    validated_generation: int | None = None
    """The .metadata.generation whose source was validated into this artifact."""
    objects: Annotated[list[ArtifactObject], Field(max_length=256)] = Field(default_factory=list)
    """The files that make up this version (what the pods download)."""


class PlacementStatus(ApiModel):
    """The adapter on one pod, as that pod's agent reported it."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    pod: str
    """Pod name (namespace is the pool's)."""
    node: str = ""
    """Node the pod runs on."""
    state: PlacementState
    """Pending, Downloading, Loading, Loaded, Unloading or Failed."""
    digest: str = ""
    """Artifact digest of the copy on this pod."""
    since: str = ""
    """When the state last changed (RFC 3339)."""
    message: str = ""
    """Details, e.g. the engine's error for Failed."""


class LoraAdapterStatus(ApiModel):
    """Observed state of a LoraAdapter, written by the operator."""

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
    served_name: str = ""
    """The name clients use as "model"."""
    pool: str = ""
    """namespace/name of the pool serving the adapter."""
    artifact: ArtifactStatus | None = None
    """What was read from the adapter's files."""
    placements: Annotated[list[PlacementStatus], Field(max_length=1000)] = Field(
        default_factory=list
    )
    """Per-pod state, from the agents' reports."""
    ready_replicas: int = 0
    """Pods serving the adapter now (any version; never 0 during a version rollout when
    replicas.min >= 2)."""
    updated_replicas: int = 0
    """Pods serving the current version (artifact.digest)."""
    endpoint: str = ""
    """Base URL teams call (OpenAI API), e.g. http://my-adapter.team-a.svc:8000/v1."""


class LoraAdapter(ApiModel):
    """A LoRA adapter to be served from a shared pool."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["lorapack.io/v1alpha1"] = API_VERSION
    kind: Literal["LoraAdapter"] = ADAPTER_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LoraAdapterSpec
    status: LoraAdapterStatus | None = None

    CRD: ClassVar[CrdInfo] = CrdInfo(
        validations=name_rule(ADAPTER_NAME_MAX, "the name of its Service"),
        kind=ADAPTER_KIND,
        plural=ADAPTER_PLURAL,
        singular="loraadapter",
        short_names=["lora"],
        categories=["lorapack"],
        printer_columns=[
            PrinterColumn(name="Base", type="string", json_path=".spec.baseModel", priority=1),
            PrinterColumn(name="Pool", type="string", json_path=".status.pool"),
            PrinterColumn(name="Rank", type="integer", json_path=".status.artifact.rank"),
            PrinterColumn(name="Replicas", type="integer", json_path=".status.readyReplicas"),
            PrinterColumn(
                name="Ready",
                type="string",
                json_path='.status.conditions[?(@.type=="Ready")].status',
            ),
            PrinterColumn(
                name="Reason",
                type="string",
                json_path='.status.conditions[?(@.type=="Ready")].reason',
            ),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
    )

    @property
    def served_name(self) -> str:
        """The effective served name (spec.servedName or metadata.name)."""
        return self.spec.served_name or self.metadata.name
