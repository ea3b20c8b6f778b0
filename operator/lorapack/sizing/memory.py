"""GPU-memory model of one vLLM engine with multi-LoRA: weights, LoRA slots, KV cache, host RAM.

Called by `lorapack size`, by `sizing.recommend`, and (through `from_pool_spec`) by whatever
needs a pool's capacity: placement, status, `lorapack plan`. Pure arithmetic.

It follows vLLM 0.33.0's start-up accounting (contract §7.1): vLLM may use
`requested = ceil(total × gpu_memory_utilization)`; the weights and the LoRA slot buffers
(allocated at start-up for max_loras slots of max_lora_rank, whether used or not) are exact
(§7.2); activations, non-torch allocations and CUDA graphs cannot be derived statically and
are given as a low/central/high range calibrated on the Llama-3-8B-on-L20 example (§7.4); the
KV cache gets what is left, in blocks of 16 tokens of `kv_bytes_per_token` (§7.3). All byte
figures are per GPU; a pod has `tensor_parallel` GPUs.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS, BaseModelPoolSpec
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import (
    EMBEDDING_MODULES,
    LINEAR_MODULES,
    dtype_bytes,
    lora_params,
    resolve_target_modules,
)
from lorapack.sizing.catalog import GIB, GPUS, GpuType, ModelArch, lookup_gpu, lookup_model

__all__ = [
    "BLOCK_SIZE",
    "EngineSettings",
    "Flag",
    "SizingReport",
    "Span",
    "batch_limits",
    "estimate",
    "from_pool_spec",
    "kv_bytes_per_token",
    "lora_buffer_bytes",
    "overhead_bytes",
    "smallest_allowed_rank",
    "tensor_parallel_sizes",
    "validate_settings",
    "weight_bytes",
]

BLOCK_SIZE = 16
"""vLLM's default KV page: block_size tokens (contract §7.3)."""
MAX_GPUS_PER_POD = 16
"""BaseModelPool spec.gpu.count's upper bound."""
EMBEDDING_LORA_VOCAB_LIMIT = 258048
"""vLLM refuses embedding/lm_head LoRA above this vocabulary (contract §2.1)."""

# Non-KV overhead beyond weights and LoRA buffers (contract §7.1 steps 3-4), per GPU. The
# central figure sums four parts; the constants are set so that Llama-3-8B on an L20 lands on
# the reference's ~2.5 GiB central, 1.5-3.8 GiB range (§7.4). Low and high scale the central.
_NON_TORCH_BYTES = round(0.8 * GIB)  # cuBLAS/attention workspaces, compiled-graph artefacts
_NCCL_BYTES = round(0.25 * GIB)  # NCCL / custom all-reduce buffers, only with TP > 1
_GRAPH_BYTES_PER_32_LAYERS = round(0.6 * GIB)  # CUDA graphs, scales with layer count
_GRAPH_BYTES_PER_32_LAYERS_LORA = round(0.8 * GIB)  # LoRA captures graphs with and without LoRA
_ACTIVATION_COPIES = 2  # live tensors around one layer's matmuls during the profile run
_SAMPLER_COPIES = 4  # fp32 logits plus softmax/sort copies in the dummy sampler run
_OVERHEAD_LOW, _OVERHEAD_HIGH = 0.6, 1.5

_FIELDS = {
    "max_loras": "engine.maxLoras (--max-loras)",
    "max_lora_rank": "engine.maxLoraRank (--max-lora-rank)",
    "max_cpu_loras": "engine.maxCpuLoras (--max-cpu-loras)",
    "gpu_memory_utilization": "engine.gpuMemoryUtilization (--gpu-memory-utilization)",
    "max_model_len": "engine.maxModelLen (--max-model-len)",
    "dtype": "engine.dtype (--dtype)",
    "tensor_parallel": "gpu.count (--gpus)",
    "lora_dtype": "--lora-dtype",
    "kv_cache_dtype": "--kv-cache-dtype",
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "lora_target_modules": "--lora-target-modules",
    "usable_bytes": "--gpu-memory",
}
_DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")
_LORA_DTYPES = ("auto", "bfloat16", "float16")
_KV_DTYPE_BYTES = {"auto": 0, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"


def smallest_allowed_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds adapters of `rank`."""
    for allowed in ALLOWED_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise InvalidSpec(
        f"LoRA rank {rank} is above vLLM's largest --max-lora-rank {ALLOWED_LORA_RANKS[-1]}: "
        f"retrain the adapter at rank <= {ALLOWED_LORA_RANKS[-1]}",
        reason="RankTooLarge",
    )


def tensor_parallel_sizes(model: ModelArch) -> tuple[int, ...]:
    """GPU counts per pod vLLM accepts for the model (heads split evenly, KV heads too)."""
    return tuple(
        t
        for t in range(1, MAX_GPUS_PER_POD + 1)
        if model.num_heads % t == 0
        and (
            model.num_kv_heads % t == 0 if model.num_kv_heads >= t else t % model.num_kv_heads == 0
        )
    )


def resolved_dtype(model: ModelArch, dtype: str) -> str:
    """The dtype vLLM serves: "auto" keeps 16-bit checkpoints and casts float32 ones to bf16."""
    name = {"half": "float16", "float": "float32"}.get(dtype.lower(), dtype.lower())
    if name != "auto":
        return name
    published = model.dtype.lower()
    return published if published in ("bfloat16", "float16") else "bfloat16"


def _resolved_lora_dtype(model: ModelArch, settings: EngineSettings) -> str:
    if settings.lora_dtype.lower() != "auto":
        return settings.lora_dtype.lower()
    return resolved_dtype(model, settings.dtype)


def _kv_heads_per_gpu(model: ModelArch, tp: int) -> int:
    # KV heads are split across ranks, or replicated when there are fewer heads than ranks.
    return max(1, model.num_kv_heads // tp)


def weight_bytes(model: ModelArch, settings: EngineSettings) -> int:
    """Weight bytes on one GPU: vocabulary and projections split by TP, norms replicated."""
    t = settings.tensor_parallel
    h, hd = model.hidden_size, model.head_dim
    q = _ceil_div(model.q_out, t)
    kv = _kv_heads_per_gpu(model, t) * hd
    i = _ceil_div(model.intermediate_size, t)
    layer = h * q + 2 * h * kv + q * h + 3 * h * i + model.norms_per_layer * h
    if model.attention_bias:
        layer += q + 2 * kv
    if model.mlp_bias:
        layer += 2 * i + h
    vocab = _ceil_div(model.vocab_size, t) * h * (1 if model.tie_word_embeddings else 2)
    elements = vocab + model.num_layers * layer + h
    return elements * dtype_bytes(resolved_dtype(model, settings.dtype))


def _engine_targets(model: ModelArch, settings: EngineSettings) -> tuple[str, ...]:
    if settings.lora_target_modules is None:
        return LINEAR_MODULES + (EMBEDDING_MODULES if model.embedding_lora else ())
    return resolve_target_modules(model, settings.lora_target_modules, allow_all_linear=False)


def lora_buffer_bytes(model: ModelArch, settings: EngineSettings) -> tuple[int, int]:
    """(linear, embedding) LoRA slot buffer bytes on one GPU (contract §7.2).

    Column-parallel layers (qkv, gate_up) keep A whole and split B; row-parallel layers (o,
    down) split A and keep B whole; --fully-sharded-loras also splits the rest. Embedding
    buffers are counted unsplit (an upper bound under TP).
    """
    if not settings.enable_lora:
        return 0, 0
    t, r = settings.tensor_parallel, settings.max_lora_rank
    h, hd = model.hidden_size, model.head_dim
    q = _ceil_div(model.q_out, t)
    kv = _kv_heads_per_gpu(model, t) * hd
    i = _ceil_div(model.intermediate_size, t)
    r_col = _ceil_div(r, t) if settings.fully_sharded else r
    h_row = _ceil_div(h, t) if settings.fully_sharded else h
    targets = set(_engine_targets(model, settings))
    per_layer = 0  # elements per slot, rank already applied
    if targets & {"q_proj", "k_proj", "v_proj"}:
        per_layer += r_col * 3 * h + r * (q + 2 * kv)
    if "o_proj" in targets:
        per_layer += r * q + r * h_row
    if targets & {"gate_proj", "up_proj"}:
        per_layer += r_col * 2 * h + r * 2 * i
    if "down_proj" in targets:
        per_layer += r * i + r * h_row
    embedding = sum(r * (model.vocab_size + h) for m in EMBEDDING_MODULES if m in targets)
    scale = settings.max_loras * dtype_bytes(_resolved_lora_dtype(model, settings))
    return scale * model.num_layers * per_layer, scale * embedding


def kv_bytes_per_token(model: ModelArch, settings: EngineSettings) -> int:
    """KV-cache bytes per token on one GPU: 2 × layers × KV heads × head_dim × dtype (§7.3).

    An upper bound for sliding-window models (Gemma-2's windowed layers stop growing).
    """
    kv_dtype = settings.kv_cache_dtype.lower()
    size = _KV_DTYPE_BYTES.get(kv_dtype) or dtype_bytes(resolved_dtype(model, settings.dtype))
    heads = _kv_heads_per_gpu(model, settings.tensor_parallel)
    return 2 * model.num_layers * heads * model.head_dim * size


def _usable(gpu: GpuType, settings: EngineSettings) -> int:
    return settings.usable_bytes if settings.usable_bytes is not None else gpu.usable_bytes


def batch_limits(gpu: GpuType, settings: EngineSettings) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs): the flags if set, else vLLM's GPU defaults."""
    usable = _usable(gpu, settings)
    if usable >= 160 * GIB:
        tokens, seqs = 16384, 1024
    elif usable >= 70 * GIB and not gpu.is_a100:
        tokens, seqs = 8192, 1024
    else:
        tokens, seqs = 2048, 256
    return settings.max_num_batched_tokens or tokens, settings.max_num_seqs or seqs


def overhead_bytes(model: ModelArch, gpu: GpuType, settings: EngineSettings) -> Span:
    """Activations, non-torch memory and CUDA graphs on one GPU, as low / central / high."""
    t = settings.tensor_parallel
    tokens, seqs = batch_limits(gpu, settings)
    act = dtype_bytes(resolved_dtype(model, settings.dtype))
    width = (
        3 * _ceil_div(model.intermediate_size, t)
        + 2 * model.hidden_size
        + _ceil_div(model.q_out, t)
        + 2 * _kv_heads_per_gpu(model, t) * model.head_dim
    )
    activations = tokens * width * act * _ACTIVATION_COPIES
    sampler = seqs * model.vocab_size * 4 * _SAMPLER_COPIES
    graphs = 0
    if not settings.enforce_eager:
        per_32 = (
            _GRAPH_BYTES_PER_32_LAYERS_LORA if settings.enable_lora else _GRAPH_BYTES_PER_32_LAYERS
        )
        graphs = per_32 * model.num_layers // 32
    central = _NON_TORCH_BYTES + (_NCCL_BYTES if t > 1 else 0) + activations + sampler + graphs
    return Span(round(central * _OVERHEAD_LOW), central, round(central * _OVERHEAD_HIGH))


def _requested(gpu: GpuType, settings: EngineSettings) -> int:
    return math.ceil(_usable(gpu, settings) * settings.gpu_memory_utilization)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value.lower() not in choices:
        raise InvalidSpec(
            f"{_FIELDS[name]} {value!r} is not one vLLM accepts: use one of {', '.join(choices)}",
            reason="InvalidEngineSettings",
        )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise InvalidSpec(
            f"{_FIELDS[name]} must be a positive integer, got {value}",
            reason="InvalidEngineSettings",
        )


def _check_parallel(model: ModelArch, settings: EngineSettings) -> None:
    t = settings.tensor_parallel
    sizes = ", ".join(str(s) for s in tensor_parallel_sizes(model))
    if t < 1 or t > MAX_GPUS_PER_POD:
        raise InvalidSpec(
            f"{_FIELDS['tensor_parallel']} must be between 1 and {MAX_GPUS_PER_POD}, got {t}: "
            f"use one of {sizes} for {model.name}",
            reason="InvalidTensorParallel",
        )
    if model.num_heads % t:
        raise InvalidSpec(
            f"Total number of attention heads ({model.num_heads}) must be divisible by tensor "
            f"parallel size ({t}). Set {_FIELDS['tensor_parallel']} to one of {sizes}.",
            reason="InvalidTensorParallel",
        )
    if t not in tensor_parallel_sizes(model):
        raise InvalidSpec(
            f"{model.name} has {model.num_kv_heads} KV heads, which vLLM cannot split or "
            f"replicate over {t} GPUs: set {_FIELDS['tensor_parallel']} to one of {sizes}",
            reason="InvalidTensorParallel",
        )


def _check_loras(model: ModelArch, settings: EngineSettings) -> None:
    _check_positive("max_loras", settings.max_loras)
    rank = settings.max_lora_rank
    if rank not in ALLOWED_LORA_RANKS:
        allowed = ", ".join(str(r) for r in ALLOWED_LORA_RANKS)
        fix = (
            f"use {smallest_allowed_rank(rank)}, the smallest allowed rank above {rank}"
            if 0 < rank <= ALLOWED_LORA_RANKS[-1]
            else f"use a value from that list (adapters need rank <= {ALLOWED_LORA_RANKS[-1]})"
        )
        raise InvalidSpec(
            f"{_FIELDS['max_lora_rank']} {rank} is not one vLLM accepts (choose from {allowed}): "
            f"{fix}",
            reason="InvalidMaxLoraRank",
        )
    cpu = settings.max_cpu_loras
    _check_positive("max_cpu_loras", cpu)
    if cpu is not None and cpu < settings.max_loras:
        raise InvalidSpec(
            f"max_cpu_loras ({cpu}) must be >= max_loras ({settings.max_loras}). Raise "
            f"{_FIELDS['max_cpu_loras']} to at least {settings.max_loras}, or lower "
            f"{_FIELDS['max_loras']} to {cpu}.",
            reason="InvalidMaxCpuLoras",
        )
    if settings.lora_target_modules is not None:
        try:
            _engine_targets(model, settings)
        except InvalidSpec as err:
            raise InvalidSpec(
                f"{_FIELDS['lora_target_modules']}: {err.message}", reason=err.reason
            ) from None
    targets = _engine_targets(model, settings)
    if (
        settings.enable_lora
        and model.vocab_size > EMBEDDING_LORA_VOCAB_LIMIT
        and any(m in targets for m in EMBEDDING_MODULES)
    ):
        raise InvalidSpec(
            f"When using LoRA, vocab size must be <= {EMBEDDING_LORA_VOCAB_LIMIT} ({model.name} "
            f"has {model.vocab_size}): set {_FIELDS['lora_target_modules']} to the linear modules",
            reason="InvalidEngineSettings",
        )


def _check_lengths(model: ModelArch, settings: EngineSettings) -> None:
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "usable_bytes"):
        _check_positive(name, getattr(settings, name))
    limit = model.max_position_embeddings
    if settings.max_model_len is not None and settings.max_model_len > limit:
        raise InvalidSpec(
            f"User-specified max_model_len ({settings.max_model_len}) is greater than the derived "
            f"max_model_len (max_position_embeddings={limit}) of {model.name}: set "
            f"{_FIELDS['max_model_len']} to at most {limit}",
            reason="InvalidMaxModelLen",
        )


def _fit_advice(model: ModelArch, gpu: GpuType, settings: EngineSettings) -> str:
    t = settings.tensor_parallel
    bigger = [
        s
        for s in tensor_parallel_sizes(model)
        if s > t and _breakdown(model, gpu, replace(settings, tensor_parallel=s)).fits
    ]
    others = [
        g.key
        for g in sorted(GPUS.values(), key=lambda g: g.usable_bytes)
        if g.key != gpu.key and _breakdown(model, g, replace(settings, usable_bytes=None)).fits
    ]
    hints = []
    if bigger:
        hints.append(f"set {_FIELDS['tensor_parallel']} to {bigger[0]} ({gpu.key} GPUs per pod)")
    gpus_word = "one GPU" if t == 1 else f"{t} GPUs"
    hints.append(
        f"use a GPU type that holds it on {gpus_word}: {', '.join(others)}"
        if others
        else f"no catalog GPU type holds it on {gpus_word}"
    )
    return "; or ".join(hints)


def validate_settings(model: ModelArch, gpu: GpuType, settings: EngineSettings) -> None:
    """Raise InvalidSpec, naming the field and the fix, for settings vLLM would refuse or that
    cannot load the model on this GPU."""
    _check_choice("dtype", settings.dtype, _DTYPES)
    _check_choice("lora_dtype", settings.lora_dtype, _LORA_DTYPES)
    _check_choice("kv_cache_dtype", settings.kv_cache_dtype, tuple(_KV_DTYPE_BYTES))
    if not 0 < settings.gpu_memory_utilization <= 1:
        raise InvalidSpec(
            f"{_FIELDS['gpu_memory_utilization']} must be in (0, 1], got "
            f"{settings.gpu_memory_utilization}: e.g. 0.92, vLLM's default",
            reason="InvalidEngineSettings",
        )
    _check_parallel(model, settings)
    if settings.enable_lora:  # without --enable-lora vLLM ignores the LoRA flags
        _check_loras(model, settings)
    _check_lengths(model, settings)
    weights = weight_bytes(model, settings)
    lora = sum(lora_buffer_bytes(model, settings))
    requested = _requested(gpu, settings)
    if weights + lora > requested:
        what = f"{_gib(weights)} of weights"
        if lora:
            what += f" + {_gib(lora)} of LoRA slot buffers"
        per = "per GPU " if settings.tensor_parallel > 1 else ""
        lora_hint = (
            f"; or lower {_FIELDS['max_loras']} / {_FIELDS['max_lora_rank']}"
            if lora and weights <= requested
            else ""
        )
        raise InvalidSpec(
            f"{model.name} needs {what} {per}at {_FIELDS['tensor_parallel']} "
            f"{settings.tensor_parallel}, but one {gpu.key} gives vLLM {_gib(requested)} "
            f"({_gib(_usable(gpu, settings))} × {settings.gpu_memory_utilization}): "
            f"{_fit_advice(model, gpu, settings)}{lora_hint}",
            reason="ModelDoesNotFit",
        )


def _flags(report: SizingReport, model: ModelArch, gpu: GpuType) -> tuple[Flag, ...]:
    s = report.settings
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
                f"the KV cache: raise {_FIELDS['gpu_memory_utilization']}, add GPUs with "
                f"{_FIELDS['tensor_parallel']}, or lower {_FIELDS['max_loras']} / "
                f"{_FIELDS['max_lora_rank']}.)",
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
                f"{_FIELDS['max_model_len']} to at most {central}, or free memory for the KV "
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
                f"refuse to start; lower {_FIELDS['max_model_len']} or leave more memory",
            )
        )
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
                f"{_FIELDS['max_cpu_loras']} is unset, so vLLM keeps only max_loras "
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
                f"the {gpu.key}'s CUDA total ({_gib(gpu.usable_bytes)}) is an estimate: read a "
                "pod's log and pass --gpu-memory to size exactly",
            )
        )
    return tuple(flags)


def _breakdown(model: ModelArch, gpu: GpuType, settings: EngineSettings) -> SizingReport:
    requested = _requested(gpu, settings)
    weights = weight_bytes(model, settings)
    linear, embedding = lora_buffer_bytes(model, settings)
    overhead = overhead_bytes(model, gpu, settings)
    free = requested - weights - linear - embedding
    kv = Span(
        max(0, free - overhead.high), max(0, free - overhead.central), max(0, free - overhead.low)
    )
    per_token = kv_bytes_per_token(model, settings)
    page = per_token * BLOCK_SIZE
    tokens = Span(*(b // page * BLOCK_SIZE for b in (kv.low, kv.central, kv.high)))
    lora_dtype = _resolved_lora_dtype(model, settings)
    per_adapter = lora_params(model, settings.max_lora_rank) * dtype_bytes(lora_dtype)
    cpu_cache = settings.tensor_parallel * (settings.cpu_loras + 1) * per_adapter
    batched, seqs = batch_limits(gpu, settings)
    report = SizingReport(
        model=model,
        gpu=gpu,
        settings=settings,
        dtype=resolved_dtype(model, settings.dtype),
        lora_dtype=lora_dtype,
        max_model_len=settings.max_model_len or model.max_position_embeddings,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        total_bytes=_usable(gpu, settings),
        requested_bytes=requested,
        weight_bytes=weights,
        lora_linear_bytes=linear,
        lora_embedding_bytes=embedding,
        overhead_bytes=overhead,
        kv_bytes=kv,
        kv_bytes_per_token=per_token,
        kv_tokens=tokens,
        cpu_bytes_per_adapter=per_adapter if settings.enable_lora else 0,
        cpu_cache_bytes=cpu_cache if settings.enable_lora else 0,
    )
    return replace(report, flags=_flags(report, model, gpu))


def estimate(
    model: ModelArch, gpu: GpuType, settings: EngineSettings | None = None
) -> SizingReport:
    """The memory breakdown of one engine; raises InvalidSpec for settings vLLM refuses."""
    chosen = settings or EngineSettings()
    validate_settings(model, gpu, chosen)
    return _breakdown(model, gpu, chosen)


# Flags of spec.engine.extraArgs that change memory use (vLLM's argparse: the last one wins).
_EXTRA_VALUE_FLAGS = {
    "--lora-dtype": "lora_dtype",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens",
}
_EXTRA_BOOL_FLAGS = {"--fully-sharded-loras": "fully_sharded", "--enforce-eager": "enforce_eager"}


def _settings_from_extra_args(args: Sequence[str]) -> dict[str, Any]:
    tokens = [part for arg in args for part in shlex.split(arg)]
    found: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        flag, _, inline = tokens[index].partition("=")
        index += 1
        if flag in _EXTRA_BOOL_FLAGS:
            found[_EXTRA_BOOL_FLAGS[flag]] = True
        elif flag == "--lora-target-modules":
            values = [inline] if inline else []
            while not inline and index < len(tokens) and not tokens[index].startswith("-"):
                values.append(tokens[index])
                index += 1
            found["lora_target_modules"] = tuple(values)
        elif flag in _EXTRA_VALUE_FLAGS:
            if not inline and index >= len(tokens):
                raise InvalidSpec(
                    f"spec.engine.extraArgs: {flag} needs a value", reason="InvalidEngineSettings"
                )
            value = inline or tokens[index]
            index += 0 if inline else 1
            name = _EXTRA_VALUE_FLAGS[flag]
            if name.startswith("max_"):
                try:
                    found[name] = int(value)
                except ValueError:
                    raise InvalidSpec(
                        f"spec.engine.extraArgs: {flag} {value!r} is not an integer",
                        reason="InvalidEngineSettings",
                    ) from None
            else:
                found[name] = value
    return found


def from_pool_spec(spec: BaseModelPoolSpec) -> SizingReport:
    """The sizing of one pod of a BaseModelPool, from its spec (and memory-relevant extraArgs)."""
    wanted = spec.base_model.architecture or spec.base_model.name
    try:
        model = lookup_model(wanted)
    except InvalidSpec as err:
        field_name = "architecture" if spec.base_model.architecture else "name"
        raise InvalidSpec(
            f"spec.baseModel.{field_name}: {err.message}; set spec.baseModel.architecture to a "
            "catalog key when the served name is not a known model",
            reason=err.reason,
        ) from None
    try:
        gpu = lookup_gpu(spec.gpu.type)
    except InvalidSpec as err:
        raise InvalidSpec(f"spec.gpu.type: {err.message}", reason=err.reason) from None
    engine = spec.engine
    settings = EngineSettings(
        max_loras=engine.max_loras,
        max_lora_rank=engine.max_lora_rank,
        max_cpu_loras=engine.max_cpu_loras,
        gpu_memory_utilization=float(engine.gpu_memory_utilization),
        max_model_len=engine.max_model_len,
        dtype=engine.dtype,
        tensor_parallel=spec.gpu.count,
        **_settings_from_extra_args(engine.extra_args),
    )
    return estimate(model, gpu, settings)
