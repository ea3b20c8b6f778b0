"""Pre-flight artifact checks: what vLLM would refuse, with messages that say what to change."""

from __future__ import annotations

from typing import Any

import pytest

from lorapack.api import conditions
from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolSpec
from lorapack.api.loraadapter import LoraAdapter, LoraAdapterSpec
from lorapack.planning.artifact import (
    ArtifactFacts,
    ArtifactFile,
    check_for_pool,
    inspect_artifact,
    is_hub_id,
    manifest_digest,
)
from tests.builders import make_adapter, make_pool

# adapter_config.json as PEFT 0.21.2's save_pretrained writes it (a rank-64 adapter of a tiny
# Llama, from the project's test artifacts), keys trimmed to those that matter plus a few others.
PEFT_CONFIG: dict[str, Any] = {
    "alora_invocation_tokens": None,
    "alpha_pattern": {},
    "base_model_name_or_path": "meta-llama/Meta-Llama-3-8B",
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layer_replication": None,
    "layers_to_transform": None,
    "loftq_config": {},
    "lora_alpha": 128,
    "lora_bias": False,
    "lora_dropout": 0.0,
    "modules_to_save": None,
    "peft_type": "LORA",
    "peft_version": "0.21.2",
    "qalora_group_size": 16,
    "r": 64,
    "rank_pattern": {},
    "target_modules": ["v_proj", "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj"],
    "task_type": "CAUSAL_LM",
    "use_bdlora": None,
    "use_dora": False,
    "use_qalora": False,
    "use_rslora": False,
}
FILES = [
    ArtifactFile("adapter_config.json", 1176, etag="c1"),
    ArtifactFile("adapter_model.safetensors", 671_091_712, etag="w1"),
    ArtifactFile("README.md", 5_000, etag="r1"),
]


def config(**changes: Any) -> dict[str, Any]:
    out = dict(PEFT_CONFIG)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_a_peft_adapter_is_accepted_and_described() -> None:
    facts, problems = inspect_artifact(PEFT_CONFIG, FILES)
    assert problems == []
    assert facts is not None
    assert facts.rank == 64
    assert facts.alpha == 128
    assert facts.target_modules == (
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    )
    assert facts.weights == "safetensors"
    assert facts.size_bytes == 1176 + 671_091_712 + 5_000
    assert facts.files == 3
    assert facts.base_model_name_or_path == "meta-llama/Meta-Llama-3-8B"
    assert facts.paths == ("README.md", "adapter_config.json", "adapter_model.safetensors")
    assert facts.digest == manifest_digest(FILES)


def test_rank_is_the_largest_of_r_and_rank_pattern() -> None:
    facts, problems = inspect_artifact(
        config(r=8, rank_pattern={"q_proj": 128, "v_proj": 16}), FILES
    )
    assert problems == []
    assert facts is not None and facts.rank == 128


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("DoRA", {"use_dora": True}, conditions.UNSUPPORTED_ADAPTER, "retrain with use_dora=False"),
    ("bias all", {"bias": "all"}, conditions.UNSUPPORTED_ADAPTER, "retrain with bias='none'"),
    ("lora bias", {"lora_bias": True}, conditions.UNSUPPORTED_ADAPTER, "lora_bias=False"),
    (
        "modules to save",
        {"modules_to_save": ["lm_head"]},
        conditions.UNSUPPORTED_ADAPTER,
        "modules_to_save=None",
    ),
    ("PiSSA", {"init_lora_weights": "pissa_niter_4"}, conditions.UNSUPPORTED_ADAPTER, "PiSSA"),
    ("OLoRA", {"init_lora_weights": "olora"}, conditions.UNSUPPORTED_ADAPTER, "OLoRA"),
    ("CorDA", {"init_lora_weights": "corda"}, conditions.UNSUPPORTED_ADAPTER, "CorDA"),
    ("LoftQ", {"init_lora_weights": "loftq"}, conditions.UNSUPPORTED_ADAPTER, "LoftQ"),
    (
        "aLoRA",
        {"alora_invocation_tokens": [1, 2]},
        conditions.UNSUPPORTED_ADAPTER,
        "Activated LoRA",
    ),
    (
        "layer replication",
        {"layer_replication": [[0, 4]]},
        conditions.UNSUPPORTED_ADAPTER,
        "layer_replication",
    ),
    ("BD-LoRA", {"use_bdlora": True}, conditions.UNSUPPORTED_ADAPTER, "BD-LoRA"),
    ("QALoRA", {"use_qalora": True}, conditions.UNSUPPORTED_ADAPTER, "QALoRA"),
    ("not LoRA", {"peft_type": "IA3"}, conditions.UNSUPPORTED_ADAPTER, "peft_type is 'IA3'"),
    (
        "no lora_alpha",
        {"lora_alpha": ...},
        conditions.UNSUPPORTED_ADAPTER,
        "adapter_config.json lacks lora_alpha",
    ),
    (
        "no target_modules",
        {"target_modules": ...},
        conditions.UNSUPPORTED_ADAPTER,
        "lacks target_modules",
    ),
    ("float rank", {"r": 16.0}, conditions.UNSUPPORTED_ADAPTER, "positive integer"),
    ("zero rank", {"r": 0}, conditions.UNSUPPORTED_ADAPTER, "positive integer"),
    (
        "bad rank pattern",
        {"rank_pattern": {"q_proj": "big"}},
        conditions.UNSUPPORTED_ADAPTER,
        "rank_pattern",
    ),
]


@pytest.mark.parametrize(
    ("case", "changes", "want_reason", "want_text"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_what_vllm_refuses_is_refused_with_the_fix(
    case: str, changes: dict[str, Any], want_reason: str, want_text: str
) -> None:
    _, problems = inspect_artifact(config(**changes), FILES)
    assert [p.reason for p in problems] == [want_reason]
    assert want_text in problems[0].message, problems[0].message


def test_dora_message_is_the_documented_one() -> None:
    _, problems = inspect_artifact(config(use_dora=True), FILES)
    assert problems[0].message == (
        "use_dora is true: vLLM cannot serve DoRA adapters; retrain with use_dora=False"
    )


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("gaussian init", {"init_lora_weights": "gaussian"}),
    ("no init", {"init_lora_weights": False}),
    ("rsLoRA", {"use_rslora": True}),
    ("null bias", {"bias": None}),
    ("no peft_type", {"peft_type": ...}),
    ("empty modules_to_save", {"modules_to_save": []}),
    ("all-linear", {"target_modules": "all-linear"}),
]


@pytest.mark.parametrize(("case", "changes"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_what_vllm_accepts_is_accepted(case: str, changes: dict[str, Any]) -> None:
    assert inspect_artifact(config(**changes), FILES)[1] == []


def test_no_config_is_not_found() -> None:
    facts, problems = inspect_artifact(None, FILES[1:])
    assert facts is None
    assert [p.reason for p in problems] == [conditions.ARTIFACT_NOT_FOUND]
    assert "adapter_config.json" in problems[0].message


def test_missing_rank_gives_no_facts() -> None:
    facts, problems = inspect_artifact(config(r=...), FILES)
    assert facts is None
    assert "lacks r" in problems[0].message


def test_weights_kinds() -> None:
    pickle = [ArtifactFile("adapter_config.json", 10), ArtifactFile("adapter_model.bin", 99)]
    facts, problems = inspect_artifact(PEFT_CONFIG, pickle)
    assert problems == [] and facts is not None and facts.weights == "pickle"
    facts, problems = inspect_artifact(PEFT_CONFIG, [ArtifactFile("adapter_config.json", 10)])
    assert facts is not None and facts.weights == "none"
    assert [p.reason for p in problems] == [conditions.NO_WEIGHTS]
    # Only the top folder counts: vLLM loads the folder it is given.
    nested = [
        ArtifactFile("adapter_config.json", 10),
        ArtifactFile("x/adapter_model.safetensors", 9),
    ]
    assert inspect_artifact(PEFT_CONFIG, nested)[0].weights == "none"  # type: ignore[union-attr]


def test_manifest_digest_names_the_version() -> None:
    digest = manifest_digest(FILES)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert manifest_digest(list(reversed(FILES))) == digest
    changed = [
        [ArtifactFile("adapter_config.json", 1176, etag="c2"), *FILES[1:]],
        [ArtifactFile("adapter_config.json", 1177, etag="c1"), *FILES[1:]],
        [ArtifactFile("adapter_config.json", 1176, etag="c1", version_id="v2"), *FILES[1:]],
        FILES[:2],
    ]
    assert len({digest, *(manifest_digest(f) for f in changed)}) == 5


# -- checks against one pool -----------------------------------------------------------------


def facts_of(**changes: Any) -> ArtifactFacts:
    files = changes.pop("files", FILES)
    facts, _ = inspect_artifact(config(**changes), files)
    assert facts is not None
    return facts


def pool_spec(**spec: Any) -> BaseModelPoolSpec:
    return BaseModelPool.model_validate(make_pool(**spec)).spec


def adapter_spec(**spec: Any) -> LoraAdapterSpec:
    return LoraAdapter.model_validate(make_adapter(**spec)).spec


POOL_CHECKS: list[tuple[str, ArtifactFacts, dict[str, Any], dict[str, Any], list[str], str]] = [
    ("fits", facts_of(), {}, {"adapters": {"cacheSize": "20Gi"}}, [], ""),
    (
        "rank above the pool",
        facts_of(r=128),
        {},
        {},
        [conditions.RANK_TOO_LARGE],
        "adapter rank 128 is above the pool's engine.maxLoraRank 64: retrain with r <= 64 or use "
        "a pool with maxLoraRank 128",
    ),
    (
        "declared rank differs",
        facts_of(r=32),
        {"rank": 16},
        {},
        [conditions.RANK_MISMATCH],
        "spec.rank is 16 but adapter_config.json says 32",
    ),
    ("declared rank agrees", facts_of(r=32), {"rank": 32}, {}, [], ""),
    (
        "pickle refused",
        facts_of(
            files=[ArtifactFile("adapter_config.json", 9), ArtifactFile("adapter_model.bin", 9)]
        ),
        {},
        {},
        [conditions.PICKLE_NOT_ALLOWED],
        "spec.adapters.allowPickle",
    ),
    (
        "pickle allowed",
        facts_of(
            files=[ArtifactFile("adapter_config.json", 9), ArtifactFile("adapter_model.pt", 9)]
        ),
        {},
        {"adapters": {"allowPickle": True}},
        [],
        "",
    ),
    (
        "above maxAdapterSize",
        facts_of(),
        {},
        {"adapters": {"maxAdapterSize": "512Mi"}},
        [conditions.ADAPTER_TOO_LARGE],
        "maxAdapterSize 512Mi",
    ),
    (
        "above the cache",
        facts_of(),
        {},
        {"adapters": {"cacheSize": "600Mi"}},
        [conditions.ADAPTER_TOO_LARGE],
        "cacheSize 600Mi",
    ),
    (
        "digest for a missing file",
        facts_of(),
        {"digests": {"adapter_model.bin": "sha256:" + "a" * 64}},
        {},
        [conditions.DIGEST_MISMATCH],
        "spec.digests names adapter_model.bin",
    ),
    (
        "digest for a present file",
        facts_of(),
        {"digests": {"adapter_model.safetensors": "sha256:" + "a" * 64}},
        {},
        [],
        "",
    ),
    (
        "module the model lacks",
        facts_of(target_modules=["q_proj", "c_attn"]),
        {},
        {},
        [conditions.UNSUPPORTED_ADAPTER],
        "target module 'c_attn' cannot be served",
    ),
    ("embedding LoRA on Llama", facts_of(target_modules=["q_proj", "lm_head"]), {}, {}, [], ""),
    (
        "embedding LoRA on Qwen2",
        facts_of(
            target_modules=["q_proj", "embed_tokens"], base_model_name_or_path="Qwen/Qwen2.5-7B"
        ),
        {"baseModel": "Qwen/Qwen2.5-7B"},
        {"baseModel": {"name": "Qwen/Qwen2.5-7B"}},
        [conditions.UNSUPPORTED_ADAPTER],
        "no embedding LoRA",
    ),
    (
        "model outside the catalog skips the module check",
        facts_of(target_modules=["c_attn"], base_model_name_or_path=None),
        {"baseModel": "acme/secret-model"},
        {"baseModel": {"name": "acme/secret-model"}},
        [],
        "",
    ),
    (
        "regular expression targets are not second-guessed",
        facts_of(target_modules=r".*\.(q|v)_proj"),
        {},
        {},
        [],
        "",
    ),
    (
        "trained on another hub model",
        facts_of(base_model_name_or_path="mistralai/Mistral-7B-v0.3"),
        {},
        {},
        [conditions.BASE_MODEL_MISMATCH],
        "trained on mistralai/Mistral-7B-v0.3, but the pool serves meta-llama/Meta-Llama-3-8B",
    ),
    ("local path ignored", facts_of(base_model_name_or_path="/models/llama3"), {}, {}, [], ""),
    ("relative path ignored", facts_of(base_model_name_or_path="./llama3"), {}, {}, [], ""),
    ("null ignored", facts_of(base_model_name_or_path=None), {}, {}, [], ""),
    (
        "hub id case differs",
        facts_of(base_model_name_or_path="meta-llama/meta-llama-3-8b"),
        {},
        {},
        [],
        "",
    ),
]


@pytest.mark.parametrize(
    ("case", "facts", "adapter_changes", "pool_changes", "want_reasons", "want_text"),
    POOL_CHECKS,
    ids=[c[0] for c in POOL_CHECKS],
)
def test_check_for_pool(
    case: str,
    facts: ArtifactFacts,
    adapter_changes: dict[str, Any],
    pool_changes: dict[str, Any],
    want_reasons: list[str],
    want_text: str,
) -> None:
    problems = check_for_pool(facts, adapter_spec(**adapter_changes), pool_spec(**pool_changes))
    assert [p.reason for p in problems] == want_reasons
    if want_text:
        assert want_text in problems[0].message, problems[0].message


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("meta-llama/Meta-Llama-3-8B", True),
        ("Qwen/Qwen2.5-7B", True),
        ("/models/llama", False),
        ("./llama", False),
        ("../a/b", False),
        ("~/models/x", False),
        ("llama3", False),
        ("a/b/c", False),
        ("C:\\models\\x", False),
    ],
)
def test_hub_ids(value: str, want: bool) -> None:
    assert is_hub_id(value) is want


def test_lookalike_listings_of_two_tenants_never_share_a_cache_key() -> None:
    # The digest is the pods' cache folder: an endpoint a team controls can list any ETag, and
    # a multipart ETag is checked by size only, so where the files are and the sha256 pins
    # must be part of it (issue 11).
    a = manifest_digest(FILES, location="http://s3.storage:9000 us-east-1 s3://team-a/bot/")
    b = manifest_digest(FILES, location="https://evil.example:443 us-east-1 s3://team-a/bot/")
    c = manifest_digest(FILES, location="http://s3.storage:9000 us-east-1 s3://team-b/bot/")
    pinned = manifest_digest(
        FILES,
        location="http://s3.storage:9000 us-east-1 s3://team-a/bot/",
        pins={"adapter_model.safetensors": "sha256:" + "0" * 64},
    )
    assert len({a, b, c, pinned, manifest_digest(FILES)}) == 5
    facts, _ = inspect_artifact(PEFT_CONFIG, FILES, location="x s3://a/b/")
    assert facts is not None and facts.digest == manifest_digest(FILES, location="x s3://a/b/")
