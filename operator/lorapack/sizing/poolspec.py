"""A BaseModelPool spec read as sizing inputs: model, GPU type and engine settings.

Looks up spec.baseModel (or its architecture) and spec.gpu.type in the catalog and turns
spec.engine, spec.gpu.count and the memory-relevant flags of spec.engine.extraArgs into
`EngineSettings`; errors name the spec field. Called by `sizing.memory.from_pool_spec`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from lorapack.api.basemodelpool import BaseModelPoolSpec
from lorapack.errors import InvalidSpec
from lorapack.sizing.catalog import GpuType, ModelArch, lookup_gpu, lookup_model
from lorapack.sizing.report import EngineSettings

__all__ = ["read_pool_spec", "settings_from_extra_args"]


# Flags of spec.engine.extraArgs that change memory use (vLLM's argparse: the last one wins).
_EXTRA_VALUE_FLAGS = {
    "--lora-dtype": "lora_dtype",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens",
}
_EXTRA_BOOL_FLAGS = {"--fully-sharded-loras": "fully_sharded", "--enforce-eager": "enforce_eager"}


def settings_from_extra_args(args: Sequence[str]) -> dict[str, Any]:
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


def read_pool_spec(spec: BaseModelPoolSpec) -> tuple[ModelArch, GpuType, EngineSettings]:
    """The model, GPU type and engine settings of one pod of a BaseModelPool, from its spec
    (and memory-relevant extraArgs); errors name the spec field."""
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
        **settings_from_extra_args(engine.extra_args),
    )
    return model, gpu, settings
