"""Hypothesis properties of the sizing model over the catalog and random engine settings."""

from __future__ import annotations

import dataclasses

from hypothesis import assume, given
from hypothesis import strategies as st

from lorapack.api.basemodelpool import ALLOWED_LORA_RANKS
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import LINEAR_MODULES, lora_params
from lorapack.sizing.catalog import GPUS, MODELS, GpuType, ModelArch
from lorapack.sizing.memory import (
    EngineSettings,
    estimate,
    kv_bytes_per_token,
    lora_buffer_bytes,
    tensor_parallel_sizes,
    weight_bytes,
)

models = st.sampled_from(sorted(MODELS)).map(MODELS.__getitem__)
gpus = st.sampled_from(sorted(GPUS)).map(GPUS.__getitem__)
ranks = st.sampled_from(ALLOWED_LORA_RANKS)
target_sets = st.none() | st.sets(st.sampled_from(LINEAR_MODULES), min_size=1).map(
    lambda s: tuple(sorted(s))
)


@st.composite
def settings(draw: st.DrawFn) -> EngineSettings:
    max_loras = draw(st.integers(min_value=1, max_value=64))
    return EngineSettings(
        max_loras=max_loras,
        max_lora_rank=draw(ranks),
        max_cpu_loras=draw(st.none() | st.integers(min_value=max_loras, max_value=4096)),
        gpu_memory_utilization=draw(st.floats(min_value=0.05, max_value=1.0)),
        max_model_len=draw(st.none() | st.integers(min_value=16, max_value=8192)),
        dtype=draw(st.sampled_from(["auto", "bfloat16", "float16", "float32"])),
        tensor_parallel=draw(st.sampled_from([1, 2, 4, 8])),
        fully_sharded=draw(st.booleans()),
        enable_lora=draw(st.booleans()),
        lora_target_modules=draw(target_sets),
        kv_cache_dtype=draw(st.sampled_from(["auto", "fp8"])),
        enforce_eager=draw(st.booleans()),
    )


@given(
    model=models,
    max_loras=st.integers(min_value=1, max_value=256),
    rank=ranks,
    targets=target_sets,
    tp=st.sampled_from([1, 2, 4, 8]),
)
def test_lora_buffers_grow_linearly_in_slots_and_rank(
    model: ModelArch, max_loras: int, rank: int, targets: tuple[str, ...] | None, tp: int
) -> None:
    one = EngineSettings(max_loras=1, max_lora_rank=1, lora_target_modules=targets)
    base = lora_buffer_bytes(model, dataclasses.replace(one, tensor_parallel=tp))
    grown = lora_buffer_bytes(
        model,
        dataclasses.replace(one, max_loras=max_loras, max_lora_rank=rank, tensor_parallel=tp),
    )
    assert grown == (max_loras * rank * base[0], max_loras * rank * base[1])


@given(model=models, rank=ranks)
def test_one_slot_of_all_linear_buffers_equals_an_all_linear_adapter(
    model: ModelArch, rank: int
) -> None:
    """§7.2 cross-check: E_layer for the seven linear modules is PEFT's all-linear count (§8)."""
    settings = EngineSettings(max_loras=1, max_lora_rank=rank, dtype="float16")
    assert lora_buffer_bytes(model, settings)[0] == 2 * lora_params(model, rank)


@given(model=models, gpu=gpus, chosen=settings())
def test_estimates_are_ordered_and_never_negative(
    model: ModelArch, gpu: GpuType, chosen: EngineSettings
) -> None:
    try:
        report = estimate(model, gpu, chosen)
    except InvalidSpec:
        assume(False)
        return
    for span in (report.overhead_bytes, report.kv_bytes, report.kv_tokens):
        assert 0 <= span.low <= span.central <= span.high
    assert report.kv_tokens.central % 16 == 0
    assert report.kv_tokens.high * report.kv_bytes_per_token <= report.kv_bytes.high
    assert report.model_bytes <= report.requested_bytes <= report.total_bytes
    assert report.fits == (report.kv_tokens.central >= report.max_model_len)


@given(model=models, chosen=settings(), data=st.data())
def test_more_gpus_never_increase_per_gpu_bytes(
    model: ModelArch, chosen: EngineSettings, data: st.DataObject
) -> None:
    sizes = tensor_parallel_sizes(model)
    small = data.draw(st.sampled_from(sizes))
    large = data.draw(st.sampled_from([s for s in sizes if s % small == 0]))
    a = dataclasses.replace(chosen, tensor_parallel=small)
    b = dataclasses.replace(chosen, tensor_parallel=large)
    assert weight_bytes(model, b) <= weight_bytes(model, a)
    assert kv_bytes_per_token(model, b) <= kv_bytes_per_token(model, a)
    la, lb = lora_buffer_bytes(model, a), lora_buffer_bytes(model, b)
    assert lb[0] <= la[0]
    assert lb[1] <= la[1]


@given(model=models, chosen=settings())
def test_fully_sharded_never_increases_lora_buffers(
    model: ModelArch, chosen: EngineSettings
) -> None:
    plain = dataclasses.replace(chosen, fully_sharded=False)
    sharded = dataclasses.replace(chosen, fully_sharded=True)
    assert sum(lora_buffer_bytes(model, sharded)) <= sum(lora_buffer_bytes(model, plain))


@given(model=models, gpu=gpus, chosen=settings())
def test_lora_never_adds_kv_capacity(
    model: ModelArch, gpu: GpuType, chosen: EngineSettings
) -> None:
    with_lora = dataclasses.replace(chosen, enable_lora=True)
    try:
        lora = estimate(model, gpu, with_lora)
    except InvalidSpec:
        assume(False)
        return
    plain = estimate(model, gpu, dataclasses.replace(with_lora, enable_lora=False))
    assert plain.kv_tokens.central >= lora.kv_tokens.central
    assert plain.kv_tokens.low >= lora.kv_tokens.low
