"""The model/GPU catalog: lookups, parameter counts (contract §7.5/§9.1), config.json loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorapack.errors import InvalidSpec
from lorapack.sizing import catalog
from lorapack.sizing.catalog import (
    GIB,
    GPUS,
    MODELS,
    load_config_json,
    lookup_gpu,
    lookup_model,
    model_from_config,
    param_count,
)

# Contract §7.5 "Params" column (and §9.1 for the 3.1 variants, which share the shapes).
PARAMS = {
    "llama-3-8b": 8_030_261_248,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-70b": 70_553_706_496,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-14b": 14_770_033_664,
    "qwen2.5-72b": 72_706_203_648,
    "mistral-7b-v0.3": 7_248_023_552,
    "gemma-2-9b": 9_241_705_984,
}

# A Llama-3-8B config.json as published (the fields sizing reads, plus some it ignores).
LLAMA3_8B_CONFIG: dict[str, Any] = {
    "_name_or_path": "meta-llama/Meta-Llama-3-8B",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

GEMMA2_9B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma2ForCausalLM"],
    "head_dim": 256,
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 16,
    "num_hidden_layers": 42,
    "num_key_value_heads": 8,
    "sliding_window": 4096,
    "torch_dtype": "float32",
    "vocab_size": 256000,
}


def test_catalog_has_the_models_and_gpus_of_the_brief() -> None:
    assert set(MODELS) == set(PARAMS)
    assert set(GPUS) == {
        "L20",
        "L40S",
        "L4",
        "A10",
        "A10G",
        "A100-40GB",
        "A100-80GB",
        "H100-SXM",
        "H100-PCIe",
        "H20",
        "H200",
    }


@pytest.mark.parametrize(("key", "want"), PARAMS.items(), ids=list(PARAMS))
def test_param_count_matches_the_reference(key: str, want: int) -> None:
    assert param_count(MODELS[key]) == want


@pytest.mark.parametrize(
    ("name", "want_key"),
    [
        pytest.param("llama-3-8b", "llama-3-8b", id="key"),
        pytest.param("LLAMA-3-8B", "llama-3-8b", id="key-upper-case"),
        pytest.param("meta-llama/Meta-Llama-3-8B", "llama-3-8b", id="hf-name"),
        pytest.param("meta-llama/meta-llama-3-8b-instruct", "llama-3-8b", id="hf-instruct-lower"),
        pytest.param("Meta-Llama-3-8B", "llama-3-8b", id="hf-name-without-org"),
        pytest.param(" meta-llama/Llama-3.1-8B ", "llama-3.1-8b", id="whitespace"),
        pytest.param("Qwen/Qwen2.5-72B", "qwen2.5-72b", id="qwen"),
        pytest.param("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3", id="mistral"),
        pytest.param("google/gemma-2-9b-it", "gemma-2-9b", id="gemma"),
        pytest.param("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b", id="old-31-name"),
    ],
)
def test_lookup_model(name: str, want_key: str) -> None:
    assert lookup_model(name).key == want_key


def test_unknown_model_lists_the_known_keys() -> None:
    with pytest.raises(InvalidSpec) as err:
        lookup_model("falcon-40b")
    assert err.value.reason == "UnknownModel"
    for key in MODELS:
        assert key in err.value.message
    assert "--config" in err.value.message


@pytest.mark.parametrize(
    ("name", "want_key"),
    [
        pytest.param("L20", "L20", id="key"),
        pytest.param("NVIDIA-L20", "L20", id="gfd-label"),
        pytest.param("nvidia-l20", "L20", id="label-lower"),
        pytest.param("l40s", "L40S", id="l40s"),
        pytest.param("NVIDIA-L20-SHARED", "L20", id="time-sliced-label"),
        pytest.param("NVIDIA-H100-80GB-HBM3", "H100-SXM", id="h100-sxm-label"),
        pytest.param("H100", "H100-SXM", id="h100-alias"),
        pytest.param("NVIDIA-H100-PCIe", "H100-PCIe", id="h100-pcie-label"),
        pytest.param("NVIDIA-A100-SXM4-80GB", "A100-80GB", id="a100-80-sxm"),
        pytest.param("NVIDIA-A100-80GB-PCIe", "A100-80GB", id="a100-80-pcie"),
        pytest.param("NVIDIA-A100-PCIE-40GB", "A100-40GB", id="a100-40-pcie"),
        pytest.param("NVIDIA A10", "A10", id="device-name-with-space"),
        pytest.param("h20", "H20", id="h20"),
        pytest.param("NVIDIA-H200", "H200", id="h200"),
    ],
)
def test_lookup_gpu(name: str, want_key: str) -> None:
    assert lookup_gpu(name).key == want_key


def test_unknown_gpu_lists_the_known_keys() -> None:
    with pytest.raises(InvalidSpec) as err:
        lookup_gpu("RTX-4090")
    for key in GPUS:
        assert key in err.value.message


@pytest.mark.parametrize(
    ("key", "want_label", "want_bandwidth", "want_tflops"),
    [
        # NVIDIA's datasheets (dense figures), L20/A10G/H20 from the sources in sizing.gpus.
        ("L20", "NVIDIA-L20", 864, 119.5),
        ("L40S", "NVIDIA-L40S", 864, 362.05),
        ("L4", "NVIDIA-L4", 300, 121),
        ("A10", "NVIDIA-A10", 600, 125),
        ("A10G", "NVIDIA-A10G", 600, 70),
        ("A100-40GB", "NVIDIA-A100-SXM4-40GB", 1555, 312),
        ("A100-80GB", "NVIDIA-A100-SXM4-80GB", 2039, 312),
        ("H100-SXM", "NVIDIA-H100-80GB-HBM3", 3350, 989),
        ("H100-PCIe", "NVIDIA-H100-PCIe", 2000, 756),
        ("H20", "NVIDIA-H20", 4000, 148),
        ("H200", "NVIDIA-H200", 4800, 989),
    ],
    ids=lambda value: value if isinstance(value, str) and value in GPUS else None,
)
def test_gpu_figures(key: str, want_label: str, want_bandwidth: float, want_tflops: float) -> None:
    gpu = GPUS[key]
    assert (gpu.product_label, gpu.bandwidth_gbps, gpu.bf16_tflops) == (
        want_label,
        want_bandwidth,
        want_tflops,
    )
    assert 0.9 * gpu.memory_bytes < gpu.usable_bytes < gpu.memory_bytes


def test_gpu_memory_figures_from_the_reference() -> None:
    assert GPUS["L20"].usable_bytes == round(44.4 * GIB)  # §7.4 assumption
    assert GPUS["A100-40GB"].usable_bytes == 42_405_855_232  # §9.2, as CUDA reports it


def test_model_from_llama_config_reproduces_the_catalog_entry() -> None:
    arch = model_from_config(LLAMA3_8B_CONFIG, "my-llama")
    want = MODELS["llama-3-8b"]
    assert arch.key == "my-llama"
    assert arch.hf_names == ("meta-llama/Meta-Llama-3-8B",)
    assert param_count(arch) == PARAMS["llama-3-8b"]
    for field in (
        "architecture",
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "tie_word_embeddings",
        "embedding_lora",
        "max_position_embeddings",
        "sliding_window",
    ):
        assert getattr(arch, field) == getattr(want, field), field


def test_gemma2_config_without_tie_key_ties_embeddings() -> None:
    arch = model_from_config(GEMMA2_9B_CONFIG, "gemma")
    assert arch.tie_word_embeddings is True  # Gemma2Config's default (§9.1)
    assert arch.norms_per_layer == 4
    assert arch.sliding_window == 4096
    assert arch.head_dim == 256
    assert param_count(arch) == PARAMS["gemma-2-9b"]


@pytest.mark.parametrize(
    ("config", "want"),
    [
        pytest.param(
            {"architectures": ["Qwen2ForCausalLM"], "sliding_window": 131072},
            {"sliding_window": None, "attention_bias": True, "tie_word_embeddings": False},
            id="qwen2-window-off-unless-used",
        ),
        pytest.param(
            {
                "architectures": ["Qwen2ForCausalLM"],
                "sliding_window": 4096,
                "use_sliding_window": True,
            },
            {"sliding_window": 4096},
            id="qwen2-window-used",
        ),
        pytest.param(
            {"model_type": "mistral", "sliding_window": None},
            {"architecture": "MistralForCausalLM", "embedding_lora": False},
            id="model-type-without-architectures",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"], "num_key_value_heads": None},
            {"num_kv_heads": 32, "head_dim": 128, "max_position_embeddings": 2048},
            id="llama-defaults",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"], "head_dim": 64},
            {"head_dim": 64},
            id="explicit-head-dim",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True},
            {"tie_word_embeddings": True, "embedding_lora": True},
            id="tied-llama",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"], "dtype": "float16", "torch_dtype": None},
            {"dtype": "float16"},
            id="transformers-v5-dtype-key",
        ),
    ],
)
def test_model_from_config_defaults(config: dict[str, Any], want: dict[str, Any]) -> None:
    base = {
        "hidden_size": 4096,
        "num_hidden_layers": 2,
        "num_attention_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
    }
    arch = model_from_config({**base, **config}, "x")
    for field, value in want.items():
        assert getattr(arch, field) == value, field


@pytest.mark.parametrize(
    ("change", "want_in_message"),
    [
        pytest.param({"hidden_size": None}, "'hidden_size' is missing", id="missing-field"),
        pytest.param({"num_hidden_layers": 0}, "'num_hidden_layers' is 0", id="zero"),
        pytest.param({"vocab_size": "big"}, "'vocab_size' is 'big'", id="not-int"),
        pytest.param({"num_attention_heads": 3}, "set head_dim explicitly", id="indivisible"),
        pytest.param({"tie_word_embeddings": "yes"}, "must be true or false", id="tie-not-bool"),
        pytest.param(
            {"architectures": ["MixtralForCausalLM"]},
            "supported architectures are LlamaForCausalLM",
            id="unsupported-architecture",
        ),
        pytest.param(
            {"architectures": None, "model_type": "phi3"},
            "model_type 'phi3'",
            id="unsupported-model-type",
        ),
    ],
)
def test_model_from_config_errors(change: dict[str, Any], want_in_message: str) -> None:
    config = {**LLAMA3_8B_CONFIG, **change}
    config = {k: v for k, v in config.items() if not (k == "hidden_size" and v is None)}
    with pytest.raises(InvalidSpec) as err:
        model_from_config(config, "bad")
    assert want_in_message in err.value.message


def test_load_config_json_from_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    from_file = load_config_json(folder / "config.json")
    from_folder = load_config_json(str(folder), "Custom-Key")
    assert from_file.key == "my-llama"  # the folder's name
    assert from_folder.key == "custom-key"
    assert param_count(from_file) == param_count(from_folder) == PARAMS["llama-3-8b"]


@pytest.mark.parametrize(
    ("content", "want_in_message"),
    [
        pytest.param(None, "cannot read", id="missing-file"),
        pytest.param("{not json", "is not valid JSON", id="bad-json"),
        pytest.param("[1, 2]", "holds a JSON list", id="not-an-object"),
    ],
)
def test_load_config_json_errors(tmp_path: Path, content: str | None, want_in_message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidSpec) as err:
        load_config_json(path)
    assert want_in_message in err.value.message
    assert "--config" in err.value.message


def test_public_surface() -> None:
    for name in catalog.__all__:
        assert hasattr(catalog, name), name
