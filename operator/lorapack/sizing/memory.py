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

The settings and report types are in `sizing.report`, the flag checks in `sizing.validation`,
the report's flags in `sizing.flags` and reading a BaseModelPool spec in `sizing.poolspec`;
this module adds the arithmetic and the fit check, and re-exports the public names.
"""

from __future__ import annotations

import math
from dataclasses import replace

from lorapack.api.basemodelpool import BaseModelPoolSpec
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import EMBEDDING_MODULES, dtype_bytes, lora_params
from lorapack.sizing.catalog import GIB, GPUS, GpuType, ModelArch
from lorapack.sizing.flags import report_flags
from lorapack.sizing.poolspec import read_pool_spec
from lorapack.sizing.report import BLOCK_SIZE, EngineSettings, Flag, SizingReport, Span, gib_text
from lorapack.sizing.validation import (
    EMBEDDING_LORA_VOCAB_LIMIT as EMBEDDING_LORA_VOCAB_LIMIT,
)
from lorapack.sizing.validation import (
    FIELDS,
    KV_DTYPE_BYTES,
    check_flags,
    engine_targets,
    smallest_allowed_rank,
    tensor_parallel_sizes,
)
from lorapack.sizing.validation import MAX_GPUS_PER_POD as MAX_GPUS_PER_POD

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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
    targets = set(engine_targets(model, settings))
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
    size = KV_DTYPE_BYTES.get(kv_dtype) or dtype_bytes(resolved_dtype(model, settings.dtype))
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
        hints.append(f"set {FIELDS['tensor_parallel']} to {bigger[0]} ({gpu.key} GPUs per pod)")
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
    check_flags(model, settings)
    weights = weight_bytes(model, settings)
    lora = sum(lora_buffer_bytes(model, settings))
    requested = _requested(gpu, settings)
    if weights + lora > requested:
        what = f"{gib_text(weights)} of weights"
        if lora:
            what += f" + {gib_text(lora)} of LoRA slot buffers"
        per = "per GPU " if settings.tensor_parallel > 1 else ""
        lora_hint = (
            f"; or lower {FIELDS['max_loras']} / {FIELDS['max_lora_rank']}"
            if lora and weights <= requested
            else ""
        )
        raise InvalidSpec(
            f"{model.name} needs {what} {per}at {FIELDS['tensor_parallel']} "
            f"{settings.tensor_parallel}, but one {gpu.key} gives vLLM {gib_text(requested)} "
            f"({gib_text(_usable(gpu, settings))} × {settings.gpu_memory_utilization}): "
            f"{_fit_advice(model, gpu, settings)}{lora_hint}",
            reason="ModelDoesNotFit",
        )


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
    return replace(report, flags=report_flags(report, model, gpu))


def estimate(
    model: ModelArch, gpu: GpuType, settings: EngineSettings | None = None
) -> SizingReport:
    """The memory breakdown of one engine; raises InvalidSpec for settings vLLM refuses."""
    chosen = settings or EngineSettings()
    validate_settings(model, gpu, chosen)
    return _breakdown(model, gpu, chosen)


def from_pool_spec(spec: BaseModelPoolSpec) -> SizingReport:
    """The sizing of one pod of a BaseModelPool, from its spec (and memory-relevant extraArgs)."""
    model, gpu, settings = read_pool_spec(spec)
    return estimate(model, gpu, settings)
