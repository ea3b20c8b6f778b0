"""The engine settings vLLM refuses, checked before any memory is estimated.

Choices (dtypes, KV cache dtype, --max-lora-rank), ranges (gpuMemoryUtilization, positive
counts), tensor-parallel sizes the model's heads allow, LoRA limits (max_cpu_loras >=
max_loras, target modules, the embedding vocabulary limit) and max_model_len against the
model. Every error names the field (`FIELDS`: the BaseModelPool field and the vLLM flag) and
the fix. Called by `sizing.memory.validate_settings`, which adds the check that the model fits
the GPU; `smallest_allowed_rank` and `tensor_parallel_sizes` also by `sizing.recommend`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import (
    EMBEDDING_MODULES,
    LINEAR_MODULES,
    resolve_target_modules,
)
from lorapack.sizing.catalog import ModelArch
from lorapack.sizing.report import EngineSettings

__all__ = [
    "DTYPES",
    "EMBEDDING_LORA_VOCAB_LIMIT",
    "FIELDS",
    "KV_DTYPE_BYTES",
    "LORA_DTYPES",
    "MAX_GPUS_PER_POD",
    "check_flags",
    "engine_targets",
    "smallest_allowed_rank",
    "tensor_parallel_sizes",
]

MAX_GPUS_PER_POD = 16
"""BaseModelPool spec.gpu.count's upper bound."""
EMBEDDING_LORA_VOCAB_LIMIT = 258048
"""vLLM refuses embedding/lm_head LoRA above this vocabulary (contract §2.1)."""

FIELDS = {
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
DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")
LORA_DTYPES = ("auto", "bfloat16", "float16")
# Bytes per KV-cache element of each --kv-cache-dtype vLLM accepts (0: the model dtype).
KV_DTYPE_BYTES = {"auto": 0, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


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


def engine_targets(model: ModelArch, settings: EngineSettings) -> tuple[str, ...]:
    """The modules the engine gives LoRA slot buffers: --lora-target-modules if set, else
    every linear module (and the embeddings where the model supports them)."""
    if settings.lora_target_modules is None:
        return LINEAR_MODULES + (EMBEDDING_MODULES if model.embedding_lora else ())
    return resolve_target_modules(model, settings.lora_target_modules, allow_all_linear=False)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value.lower() not in choices:
        raise InvalidSpec(
            f"{FIELDS[name]} {value!r} is not one vLLM accepts: use one of {', '.join(choices)}",
            reason="InvalidEngineSettings",
        )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise InvalidSpec(
            f"{FIELDS[name]} must be a positive integer, got {value}",
            reason="InvalidEngineSettings",
        )


def _check_parallel(model: ModelArch, settings: EngineSettings) -> None:
    t = settings.tensor_parallel
    sizes = ", ".join(str(s) for s in tensor_parallel_sizes(model))
    if t < 1 or t > MAX_GPUS_PER_POD:
        raise InvalidSpec(
            f"{FIELDS['tensor_parallel']} must be between 1 and {MAX_GPUS_PER_POD}, got {t}: "
            f"use one of {sizes} for {model.name}",
            reason="InvalidTensorParallel",
        )
    if model.num_heads % t:
        raise InvalidSpec(
            f"Total number of attention heads ({model.num_heads}) must be divisible by tensor "
            f"parallel size ({t}). Set {FIELDS['tensor_parallel']} to one of {sizes}.",
            reason="InvalidTensorParallel",
        )
    if t not in tensor_parallel_sizes(model):
        raise InvalidSpec(
            f"{model.name} has {model.num_kv_heads} KV heads, which vLLM cannot split or "
            f"replicate over {t} GPUs: set {FIELDS['tensor_parallel']} to one of {sizes}",
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
            f"{FIELDS['max_lora_rank']} {rank} is not one vLLM accepts (choose from {allowed}): "
            f"{fix}",
            reason="InvalidMaxLoraRank",
        )
    cpu = settings.max_cpu_loras
    _check_positive("max_cpu_loras", cpu)
    if cpu is not None and cpu < settings.max_loras:
        raise InvalidSpec(
            f"max_cpu_loras ({cpu}) must be >= max_loras ({settings.max_loras}). Raise "
            f"{FIELDS['max_cpu_loras']} to at least {settings.max_loras}, or lower "
            f"{FIELDS['max_loras']} to {cpu}.",
            reason="InvalidMaxCpuLoras",
        )
    if settings.lora_target_modules is not None:
        try:
            engine_targets(model, settings)
        except InvalidSpec as err:
            raise InvalidSpec(
                f"{FIELDS['lora_target_modules']}: {err.message}", reason=err.reason
            ) from None
    targets = engine_targets(model, settings)
    if (
        settings.enable_lora
        and model.vocab_size > EMBEDDING_LORA_VOCAB_LIMIT
        and any(m in targets for m in EMBEDDING_MODULES)
    ):
        raise InvalidSpec(
            f"When using LoRA, vocab size must be <= {EMBEDDING_LORA_VOCAB_LIMIT} ({model.name} "
            f"has {model.vocab_size}): set {FIELDS['lora_target_modules']} to the linear modules",
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
            f"{FIELDS['max_model_len']} to at most {limit}",
            reason="InvalidMaxModelLen",
        )


def check_flags(model: ModelArch, settings: EngineSettings) -> None:
    """Raise InvalidSpec, naming the field and the fix, for flags vLLM would refuse for this
    model (whatever the GPU)."""
    _check_choice("dtype", settings.dtype, DTYPES)
    _check_choice("lora_dtype", settings.lora_dtype, LORA_DTYPES)
    _check_choice("kv_cache_dtype", settings.kv_cache_dtype, tuple(KV_DTYPE_BYTES))
    if not 0 < settings.gpu_memory_utilization <= 1:
        raise InvalidSpec(
            f"{FIELDS['gpu_memory_utilization']} must be in (0, 1], got "
            f"{settings.gpu_memory_utilization}: e.g. 0.92, vLLM's default",
            reason="InvalidEngineSettings",
        )
    _check_parallel(model, settings)
    if settings.enable_lora:  # without --enable-lora vLLM ignores the LoRA flags
        _check_loras(model, settings)
    _check_lengths(model, settings)
