"""A BaseModelPool's engine and GPU settings: vLLM's LoRA limits and flags, the vllm container's
resources, the GPUs each pod asks for. Part of the BaseModelPool CRD (`api.basemodelpool`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lorapack.api.meta import (
    ApiModel,
    Toleration,
)

__all__ = [
    "ALLOWED_LORA_RANKS",
    "DEFAULT_ENGINE_RESOURCES",
    "FRACTION_PATTERN",
    "RESOURCE_QUANTITY_PATTERN",
    "ContainerResources",
    "EngineSpec",
    "GpuSpec",
    "ResourceQuantity",
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
