"""Pre-flight checks of a pool before any pod starts: the base-model folder holds what vLLM needs
(planning.basemodel) and the engine fits its GPUs (sizing.poolfit)."""

from __future__ import annotations

from typing import Any

import pytest

from lorapack.api import conditions
from lorapack.api.basemodelpool import BaseModelPoolSpec
from lorapack.planning.basemodel import check_base_model_files, relative_paths, shard_names
from lorapack.sizing.poolfit import pool_fit_issue
from tests.builders import make_pool

URI = "s3://models/llama-3-8b/"
SHARDS = shard_names("model", 4)
COMPLETE = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
    *SHARDS,
]


def reasons(paths: list[str], uri: str = URI) -> list[str]:
    return [i.reason for i in check_base_model_files(paths, uri)]


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param(COMPLETE, id="sharded-hf-folder"),
        pytest.param(["config.json", "tokenizer.json", "model.safetensors"], id="single-file"),
        pytest.param(["config.json", "tokenizer.model", "model.safetensors"], id="sentencepiece"),
        pytest.param(
            ["config.json", "vocab.json", "merges.txt", "model.safetensors"], id="byte-level-bpe"
        ),
        pytest.param(["config.json", "cl100k.tiktoken", "model.safetensors"], id="tiktoken"),
        pytest.param([f"llama-3-8b/{p}" for p in COMPLETE], id="object-keys-under-the-uri-prefix"),
        pytest.param(
            [*COMPLETE, "original/consolidated.00.pth", "original/params.json"],
            id="extra-sub-folder-ignored",
        ),
    ],
)
def test_complete_folders_pass(paths: list[str]) -> None:
    assert check_base_model_files(paths, URI) == []


def test_empty_prefix_is_not_found_and_names_the_uri_and_the_tool() -> None:
    (issue,) = check_base_model_files([], URI)
    assert issue.reason == conditions.BASE_MODEL_NOT_FOUND
    assert URI in issue.message
    assert "spec.baseModel.source.s3.uri" in issue.message
    assert f"lorapack model push <model folder> {URI}" in issue.message


def test_missing_config_json() -> None:
    (issue,) = check_base_model_files([p for p in COMPLETE if p != "config.json"], URI)
    assert issue.reason == conditions.BASE_MODEL_INCOMPLETE
    assert "no config.json" in issue.message
    assert "lorapack model push" in issue.message


def test_config_one_folder_down_points_at_the_right_uri() -> None:
    (issue,) = check_base_model_files([f"snapshot/{p}" for p in COMPLETE], URI)
    assert "s3://models/llama-3-8b/snapshot/" in issue.message


def test_missing_tokenizer() -> None:
    paths = [p for p in COMPLETE if p != "tokenizer.json"]
    (issue,) = check_base_model_files(paths, URI)
    assert issue.reason == conditions.BASE_MODEL_INCOMPLETE
    assert "no tokenizer" in issue.message
    # tokenizer_config.json alone is not a tokenizer.
    assert "tokenizer_config.json" in paths


def test_half_a_bpe_tokenizer_is_not_one() -> None:
    assert reasons(["config.json", "vocab.json", "model.safetensors"]) == [
        conditions.BASE_MODEL_INCOMPLETE
    ]


def test_missing_shard_names_the_shard() -> None:
    paths = [p for p in COMPLETE if p != SHARDS[2]]
    (issue,) = check_base_model_files(paths, URI)
    assert SHARDS[2] in issue.message
    assert "unchanged files are skipped" in issue.message


def test_many_missing_shards_are_summarised() -> None:
    paths = ["config.json", "tokenizer.json", "model.safetensors.index.json"]
    paths += [shard_names("model", 30)[0]]
    (issue,) = check_base_model_files(paths, URI)
    assert "and 26 more" in issue.message


def test_shards_without_index() -> None:
    paths = [p for p in COMPLETE if p != "model.safetensors.index.json"]
    (issue,) = check_base_model_files(paths, URI)
    assert "model.safetensors.index.json" in issue.message


def test_index_without_weights() -> None:
    paths = ["config.json", "tokenizer.json", "model.safetensors.index.json"]
    (issue,) = check_base_model_files(paths, URI)
    assert "no *.safetensors weights" in issue.message
    assert "without its shards" in issue.message


def test_pickle_only_checkpoint_is_refused_with_the_conversion() -> None:
    paths = ["config.json", "tokenizer.json", "pytorch_model.bin"]
    (issue,) = check_base_model_files(paths, URI)
    assert "only pickle weights (pytorch_model.bin)" in issue.message
    assert "safe_serialization=True" in issue.message


def test_every_missing_piece_is_reported_at_once() -> None:
    assert reasons(["README.md"]) == [conditions.BASE_MODEL_INCOMPLETE] * 3


def test_relative_paths_drop_folder_markers_and_the_prefix() -> None:
    keys = ["llama-3-8b/", "llama-3-8b/config.json", "llama-3-8b/sub/", "other.json"]
    assert relative_paths(keys, URI) == ["config.json", "other.json"]
    assert relative_paths(["models/config.json"], "s3://bucket/") == ["models/config.json"]


# ------------------------------------------------------------------------------ the GPU fit


def spec(**changes: Any) -> BaseModelPoolSpec:
    return BaseModelPoolSpec.model_validate(make_pool(**changes)["spec"])


def test_llama_8b_fits_an_l20() -> None:
    assert pool_fit_issue(spec()) is None


def test_llama_70b_does_not_fit_one_l20_and_says_how_many() -> None:
    issue = pool_fit_issue(
        spec(baseModel={"name": "meta-llama/Meta-Llama-3-70B", "architecture": "llama-3-70b"})
    )
    assert issue is not None
    assert issue.reason == conditions.MODEL_DOES_NOT_FIT
    assert issue.message.startswith("spec.gpu: Llama-3-70B needs 131.42 GiB of weights")
    assert "set gpu.count (--gpus) to 8" in issue.message


def test_weights_fit_but_no_kv_cache_is_left() -> None:
    # Llama-3-8B on an L4 with 12 rank-64 slots: 14.96 GiB of weights + 4.12 GiB of slots fit
    # the 20.24 GiB vLLM may use, the overhead takes the rest.
    issue = pool_fit_issue(spec(gpu={"type": "L4"}, engine={"maxLoras": 12}))
    assert issue is not None
    assert issue.reason == conditions.MODEL_DOES_NOT_FIT
    assert issue.message.startswith("Llama-3-8B on 1 x L4: No available memory")
    assert "engine.gpuMemoryUtilization" in issue.message


def test_kv_cache_shorter_than_one_sequence() -> None:
    # With 8 slots 16 tokens of KV cache are left: not one 8,192-token sequence.
    issue = pool_fit_issue(spec(gpu={"type": "L4"}))
    assert issue is not None
    assert issue.reason == conditions.MODEL_DOES_NOT_FIT
    assert "max seq len (8192)" in issue.message
    assert "engine.maxModelLen (--max-model-len)" in issue.message


def test_rank_8_slots_on_an_l4_fit_with_a_shorter_context() -> None:
    fitted = spec(
        gpu={"type": "L4"},
        engine={"maxLoras": 2, "maxLoraRank": 8, "maxCpuLoras": 8, "maxModelLen": 4096},
    )
    assert pool_fit_issue(fitted) is None


def test_tensor_parallel_vllm_refuses_is_invalid_spec() -> None:
    issue = pool_fit_issue(
        spec(baseModel={"name": "Qwen/Qwen2.5-7B", "architecture": "qwen2.5-7b"}, gpu={"count": 3})
    )
    assert issue is not None
    assert issue.reason == conditions.INVALID_SPEC
    assert "gpu.count (--gpus)" in issue.message


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"baseModel": {"name": "my-org/private-model"}}, id="unknown-model"),
        pytest.param({"gpu": {"type": "RTX-6000-Ada"}}, id="unknown-gpu"),
    ],
)
def test_unknown_model_or_gpu_cannot_be_sized(changes: dict[str, Any]) -> None:
    assert pool_fit_issue(spec(**changes)) is None
