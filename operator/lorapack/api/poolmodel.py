"""A BaseModelPool's base model: its name and architecture, where its weights come from (S3 or a
claim) and the volume each pod keeps them in. Part of the BaseModelPool CRD (`api.basemodelpool`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lorapack.api.meta import (
    ApiModel,
    LocalObjectReference,
    S3Uri,
)
from lorapack.api.poolengine import ResourceQuantity

__all__ = ["BaseModelSpec", "ModelSource", "ModelVolume", "PvcSource", "S3ModelSource"]


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
