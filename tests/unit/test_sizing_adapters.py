"""Adapter demand: LoRA parameter counts, file and engine bytes (contract §7.6 and §8)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorapack.errors import InvalidSpec
from lorapack.sizing import adapters
from lorapack.sizing.adapters import (
    LINEAR_MODULES,
    AdapterDemand,
    adapter_demand,
    adapter_engine_bytes,
    adapter_file_bytes,
    lora_params,
    lora_tensor_count,
    resolve_target_modules,
)
from lorapack.sizing.catalog import MODELS, ModelArch

MIB = 2**20

# The tiny bf16 Llama of contract §8: H 256, I 896, 2 layers, 8 heads, 2 KV heads (head_dim 32).
TINY = ModelArch(
    key="tiny-llama",
    hf_names=(),
    architecture="LlamaForCausalLM",
    hidden_size=256,
    num_layers=2,
    num_heads=8,
    num_kv_heads=2,
    head_dim=32,
    intermediate_size=896,
    vocab_size=1000,
    tie_word_embeddings=False,
    embedding_lora=True,
    max_position_embeddings=2048,
)

# Contract §8: all-linear parameters per rank.
PER_RANK = {
    "llama-3-8b": 2_621_440,
    "llama-3.1-8b": 2_621_440,
    "qwen2.5-7b": 2_523_136,
    "qwen2.5-14b": 4_300_800,
    "qwen2.5-72b": 13_158_400,
    "llama-3-70b": 12_943_360,
    "llama-3.1-70b": 12_943_360,
    "mistral-7b-v0.3": 2_621_440,
    "gemma-2-9b": 3_376_128,
}


@pytest.mark.parametrize(("key", "want"), PER_RANK.items(), ids=list(PER_RANK))
def test_all_linear_params_per_rank(key: str, want: int) -> None:
    assert lora_params(MODELS[key], 1) == want
    assert lora_params(MODELS[key], 16, "all-linear") == 16 * want


def test_tiny_llama_adapter_matches_the_peft_experiment() -> None:
    params = lora_params(TINY, 16)
    assert params == 163_840  # 2 × 16 × (512 + 320 + 320 + 512 + 1152 + 1152 + 1152)
    tensors = lora_tensor_count(TINY)
    assert tensors == 28
    size = adapter_file_bytes(params, 4, tensors)
    assert params * 4 == 655_360
    # PEFT 0.21.2 wrote 658,960 bytes; the header estimate is within 0.1 %.
    assert size == pytest.approx(658_960, rel=1e-3)


def test_llama_3_8b_sizes_of_section_7_6_and_8() -> None:
    llama = MODELS["llama-3-8b"]
    r16 = adapter_demand(llama, 16)
    r64 = adapter_demand(llama, 64)
    assert r16.engine_bytes == 80 * MIB  # bf16 in vLLM's CPU cache
    assert r64.engine_bytes == 320 * MIB
    assert r16.params * 4 == 160 * MIB  # fp32 file, before the header
    assert r64.params * 4 == 640 * MIB
    assert 160 * MIB < r16.file_bytes < 160 * MIB + 64 * 1024


@pytest.mark.parametrize(
    ("modules", "want_per_layer"),
    [
        pytest.param(None, 2 * 256 + 2 * 64 + 4 * 256 + 3 * (256 + 896), id="none-is-all-linear"),
        pytest.param(["q_proj", "v_proj"], 256 + 256 + 256 + 64, id="q-v"),
        pytest.param(["qkv_proj"], 512 + 320 + 320, id="packed-qkv"),
        pytest.param(["gate_up_proj"], 2 * (256 + 896), id="packed-gate-up"),
        pytest.param(
            ["model.layers.0.self_attn.o_proj"], 256 + 256, id="full-path-matches-by-suffix"
        ),
        pytest.param("all-linear", 2 * 256 + 2 * 64 + 4 * 256 + 3 * (256 + 896), id="string"),
        pytest.param(["q_proj", "q_proj"], 512, id="duplicates-count-once"),
    ],
)
def test_lora_params_per_target_set(modules: list[str] | str | None, want_per_layer: int) -> None:
    assert lora_params(TINY, 1, modules) == TINY.num_layers * want_per_layer


def test_embedding_modules_only_where_vllm_serves_them() -> None:
    llama = MODELS["llama-3-8b"]
    assert lora_params(llama, 1, ["lm_head"]) == 4096 + 128256
    assert lora_params(llama, 1, ["embed_tokens", "q_proj"]) == (128256 + 4096) + 32 * 8192
    with pytest.raises(InvalidSpec) as err:
        lora_params(MODELS["qwen2.5-7b"], 8, ["lm_head"])
    assert "no embedding LoRA" in err.value.message


@pytest.mark.parametrize(
    ("rank_pattern", "want"),
    [
        pytest.param({"q_proj": 4}, 2 * (4 * 512 + 8 * (320 + 320 + 512)), id="suffix"),
        pytest.param(
            {"model.layers.0.self_attn.q_proj": 4},
            4 * 512 + 8 * 512 + 2 * 8 * (320 + 320 + 512),
            id="one-layer",
        ),
        pytest.param({r"layers\.1\..*": 2}, 8 * 1664 + 2 * 1664, id="regex"),
        pytest.param({"down_proj": 32}, 2 * 8 * 1664, id="untargeted-module-ignored"),
    ],
)
def test_rank_pattern(rank_pattern: Mapping[str, int], want: int) -> None:
    modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_params(TINY, 8, modules, rank_pattern) == want


def test_layers_counts_the_first_layers_only() -> None:
    assert lora_params(TINY, 8, layers=1) * 2 == lora_params(TINY, 8)
    assert lora_tensor_count(TINY, layers=1) == 14


@pytest.mark.parametrize(
    ("kwargs", "want_in_message"),
    [
        pytest.param({"rank": 0}, "must be a positive integer, got 0", id="zero-rank"),
        pytest.param({"rank": True}, "must be a positive integer", id="bool-rank"),
        pytest.param(
            {"rank": 8, "rank_pattern": {"q_proj": -1}}, "rank_pattern['q_proj']", id="bad-pattern"
        ),
        pytest.param({"rank": 8, "layers": 3}, "between 1 and the model's 2", id="too-many-layers"),
        pytest.param({"rank": 8, "layers": 0}, "between 1 and", id="zero-layers"),
        pytest.param(
            {"rank": 8, "target_modules": ["w1"]}, "target module 'w1' cannot be served", id="w1"
        ),
        pytest.param({"rank": 8, "target_modules": []}, "target modules are empty", id="empty"),
    ],
)
def test_lora_params_errors(kwargs: dict[str, object], want_in_message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        lora_params(TINY, **kwargs)  # type: ignore[arg-type]
    assert want_in_message in err.value.message


def test_unknown_module_error_names_the_allowed_modules() -> None:
    with pytest.raises(InvalidSpec) as err:
        resolve_target_modules(MODELS["llama-3-8b"], ["c_attn"])
    for name in (*LINEAR_MODULES, "embed_tokens", "lm_head", "all-linear"):
        assert name in err.value.message


@pytest.mark.parametrize(
    ("dtype", "want"),
    [("auto", 2), ("bfloat16", 2), ("float16", 2), ("float32", 4), ("BF16", 2)],
    ids=["auto", "bf16", "fp16", "fp32", "alias-upper"],
)
def test_engine_bytes_per_dtype(dtype: str, want: int) -> None:
    assert adapter_engine_bytes(1000, dtype) == 1000 * want


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(InvalidSpec, match="use auto, bfloat16, float16 or float32"):
        adapter_engine_bytes(10, "int4")
    with pytest.raises(InvalidSpec, match="params >= 0"):
        adapter_file_bytes(-1)
    with pytest.raises(InvalidSpec, match="load_rps must be >= 0"):
        adapter_demand(TINY, 8, load_rps=-1.0)


def test_adapter_demand_fields() -> None:
    demand = adapter_demand(
        TINY, 8, ["q_proj", "v_proj"], load_rps=2.5, rank_pattern={"v_proj": 16}
    )
    params = 2 * (8 * 512 + 16 * 320)
    assert demand == AdapterDemand(
        rank=16,
        params=params,
        file_bytes=adapter_file_bytes(params, 4, 8),
        engine_bytes=params * 2,
        slots=1,
        load_rps=2.5,
    )


@given(
    key=st.sampled_from(sorted(MODELS)),
    rank=st.integers(min_value=1, max_value=512),
    modules=st.sets(st.sampled_from(LINEAR_MODULES), min_size=1),
)
def test_params_are_linear_in_rank(key: str, rank: int, modules: set[str]) -> None:
    arch = MODELS[key]
    assert lora_params(arch, rank, modules) == rank * lora_params(arch, 1, modules)
    assert lora_params(arch, rank, modules) <= lora_params(arch, rank)


@given(
    params=st.integers(min_value=0, max_value=10**10),
    more=st.integers(min_value=0, max_value=10**6),
    tensors=st.integers(min_value=0, max_value=2000),
)
def test_file_bytes_cover_the_tensors_and_grow_with_params(
    params: int, more: int, tensors: int
) -> None:
    size = adapter_file_bytes(params, 4, tensors)
    assert size >= params * 4
    assert (size - params * 4) % 8 == 0  # the header is padded to 8 bytes
    assert adapter_file_bytes(params + more, 4, tensors) >= size


def test_public_surface() -> None:
    for name in adapters.__all__:
        assert hasattr(adapters, name), name


def test_a_backtracking_rank_pattern_is_not_evaluated() -> None:
    """rank_pattern keys are teams' regular expressions: one shaped for catastrophic
    backtracking would hang the pass (Python's re has no timeout), so it is never run."""
    from lorapack.sizing.adapters import _pattern_matches

    # Evaluated, the first would run for hours (the test's timeout fails it).
    assert not _pattern_matches("(a+)+b", "a" * 40)
    assert not _pattern_matches("(x|y*){2,}z", "y" * 40)
    assert _pattern_matches(r"layers\.\d+\.mlp\.up_proj", "model.layers.3.mlp.up_proj")
    assert _pattern_matches("q_proj", "model.layers.0.self_attn.q_proj")
