"""Safetensors files and PEFT-style LoRA tensor sets built from a recipe, for tests.

The unit tests of `lorapack.planning.tensors`, the hostile-input corpus (tests/data/hostile) and
the integration tests build their well-formed and broken adapter weights here instead of
running torch: `lora_tensor_specs` lays out the tensors PEFT writes for a Llama-style model,
`build_safetensors` serialises them (zeros, or a byte pattern), `raw_safetensors` writes any
header bytes (broken ones included) in front of any payload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DTYPE_SIZES",
    "TensorSpec",
    "build_safetensors",
    "header_json",
    "lora_config",
    "lora_tensor_specs",
    "raw_safetensors",
]

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I32": 4}

TensorSpec = tuple[str, str, Sequence[int]]
"""(name, dtype, shape)."""

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def _dims(model: Mapping[str, Any], module: str) -> tuple[int, int]:
    h, i = model["hidden_size"], model["intermediate_size"]
    heads = model["num_attention_heads"]
    head_dim = model.get("head_dim", h // heads)
    q = heads * head_dim
    kv = model.get("num_key_value_heads", heads) * head_dim
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }.get(module, (h, h))


def lora_tensor_specs(
    model: Mapping[str, Any],
    rank: int,
    modules: Iterable[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    *,
    layers: int | None = None,
    ranks: Mapping[str, int] | None = None,
    dtype: str = "F32",
) -> list[TensorSpec]:
    """The lora_A [r, in] / lora_B [out, r] pairs PEFT saves for `modules` of every layer of a
    Llama-style `model` (its config.json sizes); `ranks` overrides r per module name."""
    out: list[TensorSpec] = []
    for layer in range(model["num_hidden_layers"] if layers is None else layers):
        for module in modules:
            block = "self_attn" if module in _ATTN else "mlp"
            path = f"base_model.model.model.layers.{layer}.{block}.{module}"
            r = (ranks or {}).get(module, rank)
            fan_in, fan_out = _dims(model, module)
            out.append((f"{path}.lora_A.weight", dtype, [r, fan_in]))
            out.append((f"{path}.lora_B.weight", dtype, [fan_out, r]))
    return out


def header_json(
    tensors: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The header dict of `tensors` laid out back to back, in order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, dtype, shape in tensors:
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    return header


def raw_safetensors(header: bytes, payload: bytes, *, length: int | None = None) -> bytes:
    """8-byte little-endian `length` (default: len(header)), header bytes, payload. `length`
    may be anything below 2**64, for broken files."""
    n = len(header) if length is None else length
    return (n % (1 << 64)).to_bytes(8, "little") + header + payload


def build_safetensors(
    tensors: Sequence[TensorSpec],
    *,
    metadata: Mapping[str, str] | None = None,
    fill: int = 0,
) -> bytes:
    """A well-formed safetensors file of `tensors` (every byte `fill`), header padded with
    spaces to 8 bytes as the reference writer does."""
    header = header_json(tensors, metadata)
    data_bytes = max((h["data_offsets"][1] for k, h in header.items() if k != "__metadata__"),
                     default=0)  # fmt: skip
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return raw_safetensors(text, bytes([fill]) * data_bytes)


def lora_config(
    rank: int,
    modules: Iterable[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    *,
    base: str = "lorapack/tiny-llama",
    **extra: Any,
) -> dict[str, Any]:
    """An adapter_config.json as PEFT writes it (the fields vLLM reads)."""
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": sorted(modules),
        "bias": "none",
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    config.update(extra)
    return config
