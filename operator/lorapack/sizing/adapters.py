"""Adapter demand: how many parameters, file bytes and engine bytes one LoRA adapter needs.

Called by placement (to weigh adapters against a pod's capacity), by `sizing.memory` (host RAM
of vLLM's CPU adapter cache) and by `lorapack size --adapters/--rank`. Pure arithmetic over a
`ModelArch`.

The rules are those of PEFT and vLLM (contract §8 and §7.2): an adapted linear module with
`in` input and `out` output features stores lora_A [r, in] and lora_B [out, r], so

    params = Σ_layers Σ_targets r × (in + out)

PEFT saves the tensors as float32 (it upcasts bf16 adapters), vLLM casts them to `lora_dtype`
when it loads them into its CPU cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lorapack.errors import InvalidSpec
from lorapack.sizing.catalog import ModelArch

__all__ = [
    "ALL_LINEAR",
    "EMBEDDING_MODULES",
    "LINEAR_MODULES",
    "AdapterDemand",
    "adapter_demand",
    "adapter_engine_bytes",
    "adapter_file_bytes",
    "dtype_bytes",
    "lora_params",
    "lora_tensor_count",
    "module_dims",
    "resolve_target_modules",
]

# The seven LoRA-capable linear modules of a Llama-style decoder layer, in vLLM's order.
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Modules vLLM wraps only for models that declare embedding LoRA (contract §5.3, §7.2).
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
ALL_LINEAR = "all-linear"
# vLLM's packed modules: naming either the packed or any member name selects the members.
_PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
_SELF_ATTN = frozenset(("q_proj", "k_proj", "v_proj", "o_proj"))
# safetensors header: 8-byte length, then JSON with ~130 bytes per tensor entry (name, dtype,
# shape, offsets), measured on PEFT 0.21.2 output (contract §8: 3,600 B for 28 tensors).
_HEADER_BASE_BYTES = 8 + 32
_HEADER_BYTES_PER_TENSOR = 130
_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "fp32": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "half": 2,
    "fp16": 2,
    "auto": 2,
}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name; "auto" means the 2-byte model dtype vLLM serves."""
    try:
        return _DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise InvalidSpec(
            f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32",
            reason="InvalidDtype",
        ) from None


def module_dims(arch: ModelArch, module: str) -> tuple[int, int]:
    """(in_features, out_features) of one LoRA-capable module of `arch`."""
    h, i = arch.hidden_size, arch.intermediate_size
    dims = {
        "q_proj": (h, arch.q_out),
        "k_proj": (h, arch.kv_out),
        "v_proj": (h, arch.kv_out),
        "o_proj": (arch.q_out, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
        # Embedding LoRA: A [r, vocab], B [hidden, r]; lm_head is a linear hidden -> vocab.
        "embed_tokens": (arch.vocab_size, h),
        "lm_head": (h, arch.vocab_size),
    }
    return dims[module]


def resolve_target_modules(
    arch: ModelArch, target_modules: Iterable[str] | str | None, *, allow_all_linear: bool = True
) -> tuple[str, ...]:
    """The canonical module names an adapter (or --lora-target-modules) selects.

    None and "all-linear" mean the seven linear modules; full module paths are matched by
    their last component (PEFT's suffix rule); vLLM's packed names expand to their members.
    vLLM's --lora-target-modules matches module names only, so the engine passes
    allow_all_linear=False: there, "all-linear" would select nothing.
    """
    if target_modules is None:
        return LINEAR_MODULES
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    allowed = LINEAR_MODULES + (EMBEDDING_MODULES if arch.embedding_lora else ())
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip().rsplit(".", 1)[-1]
        if name == ALL_LINEAR and allow_all_linear:
            chosen.update(LINEAR_MODULES)
        elif name in _PACKED:
            chosen.update(_PACKED[name])
        elif name in allowed:
            chosen.add(name)
        else:
            if name in EMBEDDING_MODULES:
                why = f"{arch.architecture} gets no embedding LoRA in vLLM"
            elif name == ALL_LINEAR:
                why = "vLLM matches module names here, and no module is called all-linear"
            else:
                why = "it is not a LoRA-capable module of the model"
            names_hint = f"{ALL_LINEAR!r} or names" if allow_all_linear else "names"
            raise InvalidSpec(
                f"target module {raw!r} cannot be served ({why}): use {names_hint} from "
                f"{', '.join(allowed)}",
                reason="UnsupportedTargetModule",
            )
    if not chosen:
        raise InvalidSpec(
            f"target modules are empty: name at least one of {', '.join(allowed)}, or "
            f"{ALL_LINEAR!r}",
            reason="UnsupportedTargetModule",
        )
    return tuple(m for m in (*LINEAR_MODULES, *EMBEDDING_MODULES) if m in chosen)


def _module_path(module: str, layer: int) -> str:
    if module in EMBEDDING_MODULES:
        return f"model.{module}" if module == "embed_tokens" else module
    block = "self_attn" if module in _SELF_ATTN else "mlp"
    return f"model.layers.{layer}.{block}.{module}"


# A quantified group that itself holds a quantifier ("(a+)+", "(.*)*", "(x|y*){2,}"): the shape
# of catastrophic backtracking. rank_pattern keys come from teams' files, and Python's `re` has
# no time limit, so such keys are not evaluated (and long ones neither).
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[*+?}][^()]*\)\s*[*+{]")
_MAX_PATTERN = 256


def _pattern_matches(pattern: str, path: str) -> bool:
    # PEFT's rank_pattern keys match a module path by suffix, and may be regular expressions.
    if path == pattern or path.endswith(f".{pattern}"):
        return True
    if len(pattern) > _MAX_PATTERN or _NESTED_QUANTIFIER.search(pattern):
        return False
    try:
        return re.fullmatch(rf"(.*\.)?(?:{pattern})", path) is not None
    except re.error:
        return False


def _rank_for(path: str, rank: int, rank_pattern: Mapping[str, int]) -> int:
    for pattern, value in rank_pattern.items():
        if _pattern_matches(pattern, path):
            return value
    return rank


def _check_rank(rank: object, field: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise InvalidSpec(
            f"LoRA rank `r` must be a positive integer, got {rank!r} ({field})",
            reason="InvalidRank",
        )
    return rank


def lora_params(
    arch: ModelArch,
    rank: int,
    target_modules: Iterable[str] | None = None,
    rank_pattern: Mapping[str, int] | None = None,
    layers: int | None = None,
) -> int:
    """Parameters of a LoRA adapter: Σ_layers Σ_targets r × (in + out) (contract §8).

    `layers` counts the transformed layers (the first `layers` of the model; PEFT's
    layers_to_transform); `rank_pattern` overrides the rank per module path or pattern.
    """
    _check_rank(rank, "r")
    patterns = dict(rank_pattern or {})
    for pattern, value in patterns.items():
        _check_rank(value, f"rank_pattern[{pattern!r}]")
    count = arch.num_layers if layers is None else layers
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= arch.num_layers:
        raise InvalidSpec(
            f"layers {layers!r} must be between 1 and the model's {arch.num_layers} layers",
            reason="InvalidLayers",
        )
    modules = resolve_target_modules(arch, target_modules)
    total = 0
    for module in modules:
        fan = sum(module_dims(arch, module))
        if module in EMBEDDING_MODULES:
            total += _rank_for(_module_path(module, 0), rank, patterns) * fan
            continue
        for layer in range(count):
            total += _rank_for(_module_path(module, layer), rank, patterns) * fan
    return total


def lora_tensor_count(
    arch: ModelArch, target_modules: Iterable[str] | None = None, layers: int | None = None
) -> int:
    """Tensors in the adapter file: an A and a B per adapted module."""
    modules = resolve_target_modules(arch, target_modules)
    count = arch.num_layers if layers is None else layers
    linear = sum(1 for m in modules if m not in EMBEDDING_MODULES)
    return 2 * (linear * count + (len(modules) - linear))


def adapter_file_bytes(params: int, dtype_bytes: int = 4, tensors: int = 0) -> int:
    """Size of adapter_model.safetensors: params × dtype bytes plus the header estimate.

    PEFT saves float32 by default (dtype_bytes 4); `tensors` (see lora_tensor_count) sizes the
    header; the header is padded to 8 bytes as safetensors does.
    """
    if params < 0 or dtype_bytes <= 0 or tensors < 0:
        raise InvalidSpec(
            f"adapter size needs params >= 0, dtype_bytes > 0 and tensors >= 0; got params "
            f"{params}, dtype_bytes {dtype_bytes}, tensors {tensors}",
            reason="InvalidAdapterSize",
        )
    header = _HEADER_BASE_BYTES + _HEADER_BYTES_PER_TENSOR * tensors
    return params * dtype_bytes + -(-header // 8) * 8


def adapter_engine_bytes(params: int, dtype: str = "auto") -> int:
    """Bytes one adapter takes in vLLM's CPU cache (pinned host RAM), cast to lora_dtype."""
    if params < 0:
        raise InvalidSpec(f"params must be >= 0, got {params}", reason="InvalidAdapterSize")
    return params * dtype_bytes(dtype)


@dataclass(frozen=True, slots=True)
class AdapterDemand:
    """What one adapter asks of a pool pod."""

    rank: int
    """Largest rank in the adapter (r, or the biggest rank_pattern value)."""
    params: int
    file_bytes: int
    """Bytes on the pod's adapter cache volume (the safetensors file)."""
    engine_bytes: int
    """Bytes in vLLM's CPU cache (host RAM) at lora_dtype."""
    slots: int = 1
    """GPU LoRA slots it occupies while it has running requests."""
    load_rps: float = 0.0
    """Expected requests per second, for load-aware placement."""


def adapter_demand(
    arch: ModelArch,
    rank: int,
    target_modules: Iterable[str] | None = None,
    load_rps: float = 0.0,
    *,
    rank_pattern: Mapping[str, int] | None = None,
    layers: int | None = None,
    lora_dtype: str = "auto",
    file_dtype_bytes: int = 4,
) -> AdapterDemand:
    """The demand of an adapter of `rank` on `arch` (all seven linear modules by default)."""
    if load_rps < 0:
        raise InvalidSpec(
            f"load_rps must be >= 0 requests per second, got {load_rps}", reason="InvalidLoad"
        )
    params = lora_params(arch, rank, target_modules, rank_pattern, layers)
    tensors = lora_tensor_count(arch, target_modules, layers)
    top_rank = max([rank, *(rank_pattern or {}).values()])
    return AdapterDemand(
        rank=top_rank,
        params=params,
        file_bytes=adapter_file_bytes(params, file_dtype_bytes, tensors),
        engine_bytes=adapter_engine_bytes(params, lora_dtype),
        load_rps=load_rps,
    )
