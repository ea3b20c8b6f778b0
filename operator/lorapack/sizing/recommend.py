"""Engine-setting recommendations and the multi-LoRA vs merged-deployment GPU comparison.

Called by `lorapack size` (the "recommended" and "cost" sections). Pure arithmetic on top of
`sizing.memory`:

* max_lora_rank: the smallest value vLLM allows that holds the largest adapter rank, because
  every GPU slot is sized for max_lora_rank whatever the adapters' real ranks (contract §7.2);
* max_cpu_loras: enough host-RAM cache entries for the adapters a pod serves, within the host
  memory budget, so requests never reload adapters from disk inside a model step (§4.3);
* the KV-cache cost of each extra GPU slot (--max-loras);
* the seed article's comparison: one merged model deployment per adapter versus a pool of
  shared pods holding many adapters each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lorapack.errors import InvalidSpec
from lorapack.sizing.catalog import GpuType, ModelArch
from lorapack.sizing.memory import (
    EngineSettings,
    SizingReport,
    estimate,
    smallest_allowed_rank,
    tensor_parallel_sizes,
)

__all__ = [
    "CostComparison",
    "Recommendation",
    "SlotCost",
    "compare_costs",
    "gpus_for_one_copy",
    "recommend",
    "slot_cost",
]


@dataclass(frozen=True, slots=True)
class SlotCost:
    """What one more --max-loras slot costs on each GPU."""

    bytes_per_gpu: int
    kv_tokens: int
    """KV-cache tokens the engine loses for it."""


def slot_cost(report: SizingReport) -> SlotCost:
    """The buffer bytes of one LoRA slot and the KV tokens they would otherwise hold."""
    size = report.lora_slot_bytes
    return SlotCost(bytes_per_gpu=size, kv_tokens=size // report.kv_bytes_per_token)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Suggested engine settings for a set of adapters, with the reasons."""

    max_lora_rank: int
    max_cpu_loras: int
    kv_tokens_gained: int
    """KV tokens per pod gained (negative: lost) by moving to max_lora_rank."""
    host_bytes: int
    """Host RAM per pod for max_cpu_loras adapters (+1 being loaded) at max_lora_rank."""
    slot: SlotCost
    notes: tuple[str, ...]


def recommend(
    model: ModelArch,
    gpu: GpuType,
    settings: EngineSettings,
    *,
    adapter_rank: int | None = None,
    adapters: int | None = None,
    host_memory_bytes: int | None = None,
) -> Recommendation:
    """Recommend max_lora_rank and max_cpu_loras for `adapters` adapters of at most
    `adapter_rank`, keeping the vLLM CPU cache within `host_memory_bytes` per pod."""
    now = estimate(model, gpu, settings)
    notes: list[str] = []
    rank = settings.max_lora_rank
    if adapter_rank is not None:
        rank = smallest_allowed_rank(adapter_rank)
        if adapter_rank > settings.max_lora_rank:
            notes.append(
                f"LoRA rank {adapter_rank} is greater than max_lora_rank "
                f"{settings.max_lora_rank}: vLLM refuses such adapters; raise --max-lora-rank "
                f"to {rank}"
            )
    try:
        chosen = estimate(model, gpu, replace(settings, max_lora_rank=rank))
    except InvalidSpec as err:
        raise InvalidSpec(
            f"adapters of rank {adapter_rank} need --max-lora-rank {rank}, which does not fit: "
            f"{err.message}",
            reason=err.reason,
        ) from None
    gained = chosen.kv_tokens.central - now.kv_tokens.central
    if rank < settings.max_lora_rank:
        notes.append(
            f"--max-lora-rank {rank} instead of {settings.max_lora_rank} frees "
            f"{(now.lora_buffer_bytes - chosen.lora_buffer_bytes) / 2**30:.2f} GiB per GPU for "
            f"{gained:,} more KV tokens"
        )
    per_pod_adapter = chosen.cpu_bytes_per_adapter * settings.tensor_parallel
    cpu_loras = _cpu_loras(now, settings, rank, per_pod_adapter, adapters, host_memory_bytes, notes)
    host_bytes = per_pod_adapter * (cpu_loras + 1)
    if cpu_loras != settings.cpu_loras:
        cap = "" if host_memory_bytes is not None else " (pass --host-memory to cap it)"
        notes.append(
            f"--max-cpu-loras {cpu_loras} keeps {cpu_loras} adapters of a pod in host RAM: "
            f"{host_bytes / 2**30:.2f} GiB per pod at rank {rank}, one more being loaded "
            f"included{cap}"
        )
    slot = slot_cost(chosen)
    if slot.bytes_per_gpu:
        notes.append(
            f"each GPU slot (--max-loras) costs {slot.bytes_per_gpu / 2**20:,.0f} MiB per GPU, "
            f"{slot.kv_tokens:,} KV tokens"
        )
    return Recommendation(
        max_lora_rank=rank,
        max_cpu_loras=cpu_loras,
        kv_tokens_gained=gained,
        host_bytes=host_bytes,
        slot=slot,
        notes=tuple(notes),
    )


def _cpu_loras(
    now: SizingReport,
    settings: EngineSettings,
    rank: int,
    per_pod_adapter: int,
    adapters: int | None,
    host_memory_bytes: int | None,
    notes: list[str],
) -> int:
    """max_cpu_loras for `adapters` adapters per pod (at least max_loras), capped by the host
    memory budget; appends why to `notes`."""
    wanted = max(settings.max_loras, adapters if adapters is not None else settings.cpu_loras)
    cpu_loras = wanted
    if host_memory_bytes is not None and now.cpu_cache_bytes > host_memory_bytes:
        notes.append(
            f"as set, --max-cpu-loras {settings.cpu_loras} at rank {settings.max_lora_rank} "
            f"needs {now.cpu_cache_bytes / 2**30:.2f} GiB of host RAM per pod, more than "
            f"--host-memory {host_memory_bytes / 2**30:.2f} GiB"
        )
    if host_memory_bytes is not None:
        # One entry of headroom: vLLM loads a new adapter before it evicts the oldest (§3.4).
        room = host_memory_bytes // per_pod_adapter - 1 if per_pod_adapter else wanted
        if room < settings.max_loras:
            notes.append(
                f"--host-memory {host_memory_bytes / 2**30:.2f} GiB holds {max(room, 0)} adapters "
                f"of rank {rank}, fewer than --max-loras {settings.max_loras}: give pods more "
                "memory or lower --max-loras"
            )
        cpu_loras = max(settings.max_loras, min(wanted, room))
        if cpu_loras < wanted:
            notes.append(
                f"host memory limits the CPU cache to {cpu_loras} adapters per pod, so "
                f"{math.ceil(wanted / cpu_loras)} pods are needed for {wanted} adapters"
            )
    return cpu_loras


def gpus_for_one_copy(model: ModelArch, gpu: GpuType, settings: EngineSettings) -> int | None:
    """GPUs one merged model (no --enable-lora) needs to hold a max_model_len sequence; None if
    no pod of up to 16 of these GPUs can."""
    merged = replace(settings, enable_lora=False, max_cpu_loras=None, fully_sharded=False)
    for size in tensor_parallel_sizes(model):
        try:
            report = estimate(model, gpu, replace(merged, tensor_parallel=size))
        except InvalidSpec:
            continue
        if report.fits:
            return size
    return None


@dataclass(frozen=True, slots=True)
class CostComparison:
    """GPUs for N adapters: one merged deployment each, or a shared multi-LoRA pool."""

    adapters: int
    gpus_per_copy: int | None
    """GPUs one merged deployment needs; None when no pod of these GPUs holds the model."""
    adapters_per_pod: int
    pods: int
    gpus_per_pod: int

    @property
    def merged_gpus(self) -> int | None:
        return None if self.gpus_per_copy is None else self.adapters * self.gpus_per_copy

    @property
    def pool_gpus(self) -> int:
        return self.pods * self.gpus_per_pod

    @property
    def ratio(self) -> float | None:
        """How many times more GPUs the merged deployments take."""
        merged = self.merged_gpus
        return None if merged is None or not self.pool_gpus else merged / self.pool_gpus


def compare_costs(
    model: ModelArch,
    gpu: GpuType,
    settings: EngineSettings,
    adapters: int,
    adapters_per_pod: int | None = None,
) -> CostComparison:
    """The seed article's comparison for `adapters` adapters (one replica each).

    A pool pod holds adapters_per_pod adapters (default: max_cpu_loras, as BaseModelPool's
    adapters.maxPerReplica does), so every placed adapter stays in host memory.
    """
    if adapters < 1:
        raise InvalidSpec(f"--adapters must be >= 1, got {adapters}", reason="InvalidAdapters")
    per_pod = adapters_per_pod if adapters_per_pod is not None else settings.cpu_loras
    if per_pod < 1:
        raise InvalidSpec(
            f"--adapters-per-pod must be >= 1, got {per_pod}", reason="InvalidAdapters"
        )
    return CostComparison(
        adapters=adapters,
        gpus_per_copy=gpus_for_one_copy(model, gpu, settings),
        adapters_per_pod=per_pod,
        pods=math.ceil(adapters / per_pod),
        gpus_per_pod=settings.tensor_parallel,
    )
