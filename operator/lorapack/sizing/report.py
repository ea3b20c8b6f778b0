"""The inputs and outputs of a sizing estimate: engine settings and the per-GPU report.

`EngineSettings` are the vLLM flags that decide memory use; `SizingReport` is one engine's
memory per GPU (weights, LoRA slot buffers, overhead and KV cache as `Span`s) with the `Flag`s
a platform engineer should read, and its JSON/YAML shape. Built by `sizing.memory` (estimate,
from_pool_spec); read by `lorapack size`, `sizing.recommend` and the layers that need a pool's
capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lorapack.sizing.catalog import GIB, GpuType, ModelArch

__all__ = ["BLOCK_SIZE", "EngineSettings", "Flag", "SizingReport", "Span", "gib_text"]

BLOCK_SIZE = 16
"""vLLM's default KV page: block_size tokens (contract §7.3)."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The vLLM flags that decide memory use. Defaults are lorapack's EngineSpec defaults."""

    max_loras: int = 8
    max_lora_rank: int = 64
    max_cpu_loras: int | None = None
    gpu_memory_utilization: float = 0.92
    max_model_len: int | None = None
    """None: the model's max_position_embeddings, as vLLM derives it."""
    dtype: str = "auto"
    tensor_parallel: int = 1
    lora_dtype: str = "auto"
    fully_sharded: bool = False
    enable_lora: bool = True
    """False sizes the engine without --enable-lora (one merged model per deployment)."""
    lora_target_modules: tuple[str, ...] | None = None
    kv_cache_dtype: str = "auto"
    max_num_seqs: int | None = None
    """None: vLLM's default for the GPU (batch_limits)."""
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    usable_bytes: int | None = None
    """Override of the GPU's CUDA-reported total memory (from a pod's log)."""

    @property
    def cpu_loras(self) -> int:
        """The effective --max-cpu-loras (unset means max_loras, vLLM's default)."""
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras


@dataclass(frozen=True, slots=True)
class Span:
    """An estimate as low / central / high."""

    low: int
    central: int
    high: int


@dataclass(frozen=True, slots=True)
class Flag:
    """Something the platform engineer should know; errors mean vLLM would refuse to start."""

    code: str
    severity: Literal["error", "warning", "info"]
    message: str


@dataclass(frozen=True, slots=True)
class SizingReport:
    """One engine's memory, per GPU, and what it means for KV capacity and host RAM."""

    model: ModelArch
    gpu: GpuType
    settings: EngineSettings
    dtype: str
    """Resolved weight/activation dtype."""
    lora_dtype: str
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    total_bytes: int
    """GPU memory as CUDA reports it."""
    requested_bytes: int
    weight_bytes: int
    lora_linear_bytes: int
    lora_embedding_bytes: int
    overhead_bytes: Span
    kv_bytes: Span
    kv_bytes_per_token: int
    kv_tokens: Span
    cpu_bytes_per_adapter: int
    """Host RAM of one adapter at max_lora_rank (all linear modules) in vLLM's CPU cache."""
    cpu_cache_bytes: int
    """Host RAM per pod for max_cpu_loras adapters plus one being loaded, on every TP worker."""
    flags: tuple[Flag, ...] = field(default=())

    @property
    def tensor_parallel(self) -> int:
        return self.settings.tensor_parallel

    @property
    def lora_buffer_bytes(self) -> int:
        """All LoRA slot buffers on one GPU."""
        return self.lora_linear_bytes + self.lora_embedding_bytes

    @property
    def lora_slot_bytes(self) -> int:
        """The buffers of one slot (what each extra max_loras costs, per GPU)."""
        return self.lora_buffer_bytes // self.settings.max_loras if self.settings.enable_lora else 0

    @property
    def model_bytes(self) -> int:
        """What vLLM logs as "Model loading took": weights plus LoRA buffers."""
        return self.weight_bytes + self.lora_buffer_bytes

    @property
    def kv_blocks(self) -> int:
        return self.kv_tokens.central // BLOCK_SIZE

    @property
    def fits(self) -> bool:
        """The central KV estimate holds at least one max_model_len sequence."""
        return self.kv_tokens.central >= self.max_model_len

    def max_concurrency(self) -> tuple[float, float, float]:
        """Full max_model_len sequences the KV cache holds (low, central, high), as vLLM logs."""
        t = self.kv_tokens
        return (
            t.low / self.max_model_len,
            t.central / self.max_model_len,
            t.high / self.max_model_len,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML shape for `lorapack size -o json`."""
        s = self.settings
        return {
            "model": self.model.key,
            "gpu": self.gpu.key,
            "gpus": s.tensor_parallel,
            "engine": {
                "enableLora": s.enable_lora,
                "maxLoras": s.max_loras,
                "maxLoraRank": s.max_lora_rank,
                "maxCpuLoras": s.cpu_loras,
                "gpuMemoryUtilization": s.gpu_memory_utilization,
                "maxModelLen": self.max_model_len,
                "dtype": self.dtype,
                "loraDtype": self.lora_dtype,
                "tensorParallelSize": s.tensor_parallel,
                "fullyShardedLoras": s.fully_sharded,
                "loraTargetModules": list(s.lora_target_modules or []),
                "maxNumSeqs": self.max_num_seqs,
                "maxNumBatchedTokens": self.max_num_batched_tokens,
            },
            "perGpu": {
                "totalBytes": self.total_bytes,
                "requestedBytes": self.requested_bytes,
                "weightBytes": self.weight_bytes,
                "loraLinearBytes": self.lora_linear_bytes,
                "loraEmbeddingBytes": self.lora_embedding_bytes,
                "loraSlotBytes": self.lora_slot_bytes,
                "overheadBytes": _span_dict(self.overhead_bytes),
                "kvBytes": _span_dict(self.kv_bytes),
                "kvBytesPerToken": self.kv_bytes_per_token,
            },
            "kvTokens": _span_dict(self.kv_tokens),
            "maxConcurrency": dict(
                zip(
                    ("low", "central", "high"),
                    (round(c, 2) for c in self.max_concurrency()),
                    strict=True,
                )
            ),
            "host": {
                "bytesPerAdapter": self.cpu_bytes_per_adapter,
                "cpuCacheBytes": self.cpu_cache_bytes,
            },
            "flags": [
                {"code": f.code, "severity": f.severity, "message": f.message} for f in self.flags
            ],
        }


def _span_dict(span: Span) -> dict[str, int]:
    return {"low": span.low, "central": span.central, "high": span.high}


def gib_text(value: int) -> str:
    """Bytes as GiB with two decimals, for messages."""
    return f"{value / GIB:.2f} GiB"
