"""What a platform engineer should know about one engine's sizing: the report's flags.

Errors mean vLLM would refuse to start (no KV cache memory, max_model_len longer than the KV
cache holds); warnings and notes cover a tight KV cache, sliding-window models, an unset
max_cpu_loras, --fully-sharded-loras and estimated GPU memory. Called by `sizing.memory` when
it builds a `SizingReport`.
"""

from __future__ import annotations

from lorapack.sizing.catalog import GIB, GpuType, ModelArch
from lorapack.sizing.report import Flag, SizingReport, gib_text
from lorapack.sizing.validation import FIELDS

__all__ = ["report_flags"]


def report_flags(report: SizingReport, model: ModelArch, gpu: GpuType) -> tuple[Flag, ...]:
    """The flags of `report` (computed without them), errors first."""
    s = report.settings
    flags = _kv_flags(report)
    if model.sliding_window is not None:
        flags.append(
            Flag(
                "SlidingWindowUpperBound",
                "info",
                f"{model.name} uses sliding-window attention ({model.sliding_window} tokens) on "
                "some layers: KV bytes per token is an upper bound and real capacity is higher",
            )
        )
    if s.enable_lora and s.max_cpu_loras is None:
        flags.append(
            Flag(
                "CpuCacheOnlyHoldsSlots",
                "info",
                f"{FIELDS['max_cpu_loras']} is unset, so vLLM keeps only max_loras "
                f"({s.max_loras}) adapters in host memory; requests for other loaded adapters "
                "reload them from disk inside a model step: set it to the adapters per pod",
            )
        )
    if s.fully_sharded:
        flags.append(
            Flag(
                "FullyShardedLoras",
                "warning",
                "--fully-sharded-loras has no effect with one GPU"
                if s.tensor_parallel == 1
                else "--fully-sharded-loras is reported broken on the V1 engine "
                "(vllm-project/vllm#20944): test it before relying on it",
            )
        )
    if s.usable_bytes is None and gpu.usable_source.startswith("estimate"):
        flags.append(
            Flag(
                "EstimatedGpuMemory",
                "info",
                f"the {gpu.key}'s CUDA total ({gib_text(gpu.usable_bytes)}) is an estimate: read a "
                "pod's log and pass --gpu-memory to size exactly",
            )
        )
    return tuple(flags)


def _kv_flags(report: SizingReport) -> list[Flag]:
    """Whether the KV cache holds one max_model_len sequence: an error when it cannot, a
    warning when only the central overhead estimate leaves room for it."""
    flags: list[Flag] = []
    length = report.max_model_len
    central = report.kv_tokens.central
    if report.kv_bytes.central <= 0:
        flags.append(
            Flag(
                "NoKvCacheMemory",
                "error",
                "No available memory for the cache blocks. Try increasing "
                "`gpu_memory_utilization` when initializing the engine. (Nothing is left for "
                f"the KV cache: raise {FIELDS['gpu_memory_utilization']}, add GPUs with "
                f"{FIELDS['tensor_parallel']}, or lower {FIELDS['max_loras']} / "
                f"{FIELDS['max_lora_rank']}.)",
            )
        )
    elif central < length:
        needed = length * report.kv_bytes_per_token
        flags.append(
            Flag(
                "MaxModelLenTooLong",
                "error",
                f"To serve at least one request with the model's max seq len ({length}), "
                f"({needed / GIB:.2f} GiB KV cache is needed, which is larger than the available "
                f"KV cache memory ({report.kv_bytes.central / GIB:.2f} GiB). Based on the "
                f"available memory, the estimated maximum model length is {central}. (Set "
                f"{FIELDS['max_model_len']} to at most {central}, or free memory for the KV "
                "cache.)",
            )
        )
    elif report.kv_tokens.low < length:
        flags.append(
            Flag(
                "KvCacheTight",
                "warning",
                f"at the high end of the overhead estimate the KV cache holds "
                f"{report.kv_tokens.low} tokens, less than one {length}-token sequence: vLLM may "
                f"refuse to start; lower {FIELDS['max_model_len']} or leave more memory",
            )
        )
    return flags
