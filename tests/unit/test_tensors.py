"""The safetensors header checks (planning.tensors) and the base config (planning.baseconfig):
tables of broken files and adapters of other models, and properties of the header parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorapack.api import conditions as c
from lorapack.planning.baseconfig import BaseConfig, parse_base_config
from lorapack.planning.tensors import (
    MAX_HEADER_BYTES,
    check_against_base,
    check_lora_tensors,
    header_length,
    parse_header,
)
from lorapack_testworld.safetensors import (
    build_safetensors,
    header_json,
    lora_config,
    lora_tensor_specs,
    raw_safetensors,
)
from tests.hostile import ALL, TINY

WIDE = TINY | {"hidden_size": 128, "intermediate_size": 256}
FILE = "adapter_model.safetensors"


def tiny_base() -> BaseConfig:
    base, problems = parse_base_config(json.dumps(TINY).encode())
    assert base is not None, problems
    return base


def parsed(data: bytes) -> Any:
    header, problems = parse_header(data, len(data), FILE)
    return header, problems


def reasons(problems: list[Any]) -> list[str]:
    return [p.reason for p in problems]


# -- base config -------------------------------------------------------------------------------


def test_the_tiny_llama_config_gives_gqa_features() -> None:
    base = tiny_base()
    assert base.features("q_proj") == (64, 128)  # 4 heads x 32
    assert base.features("k_proj") == (64, 64)  # 2 kv heads x 32
    assert base.features("o_proj") == (128, 64)
    assert base.features("down_proj") == (128, 64)
    assert base.features("fancy_proj") is None


def test_head_dim_defaults_to_hidden_over_heads_and_kv_heads_to_heads() -> None:
    raw = {k: v for k, v in TINY.items() if k not in ("head_dim", "num_key_value_heads")}
    base, problems = parse_base_config(json.dumps(raw).encode())
    assert problems == [] and base is not None
    assert (base.head_dim, base.num_key_value_heads) == (16, 4)


def test_phi3_packs_qkv_and_gate_up() -> None:
    base, _ = parse_base_config(json.dumps(TINY | {"model_type": "phi3"}).encode())
    assert base is not None
    assert base.features("qkv_proj") == (64, 128 + 2 * 64)
    assert base.features("gate_up_proj") == (64, 256)
    assert base.features("q_proj") is None


def test_multimodal_configs_read_text_config() -> None:
    raw = {
        "model_type": "gemma3",
        "text_config": {k: v for k, v in TINY.items() if k != "model_type"},
    }
    base, problems = parse_base_config(json.dumps(raw).encode())
    assert problems == [] and base is not None and base.hidden_size == 64


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "is not JSON"),
        (b"[1, 2]", "JSON list"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (json.dumps(TINY | {"hidden_size": "64"}).encode(), "hidden_size '64'"),
        (json.dumps(TINY | {"num_hidden_layers": 0}).encode(), "num_hidden_layers 0"),
        (json.dumps(TINY | {"num_key_value_heads": 3}).encode(), "not a multiple"),
        (json.dumps({k: v for k, v in TINY.items() if k != "model_type"}).encode(), "model_type"),
        (b" " * (2 << 20), "more than"),
    ],
)
def test_bad_base_configs_are_refused_with_the_field(raw: bytes, words: str) -> None:
    base, problems = parse_base_config(raw)
    assert base is None
    assert problems and all(p.reason == c.INVALID_BASE_CONFIG for p in problems)
    assert any(words in p.message for p in problems), problems
    assert all("config.json" in p.message for p in problems)


# -- header integrity --------------------------------------------------------------------------


def test_a_peft_layout_file_parses() -> None:
    data = build_safetensors(lora_tensor_specs(TINY, 8, ALL))
    header, problems = parsed(data)
    assert problems == []
    assert len(header.tensors) == 2 * 2 * 7
    assert header.metadata == {"format": "pt"}


def _with_header(header: Any, payload_bytes: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    ends = (
        [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if isinstance(header, dict)
        else [0]
    )
    size = max(ends, default=0) if payload_bytes is None else payload_bytes
    return raw_safetensors(text, b"\0" * size)


GOOD = lora_tensor_specs(TINY, 8, ("q_proj",), layers=1)
A, B = GOOD[0][0], GOOD[1][0]


def _edit(**changes: Any) -> dict[str, Any]:
    header = header_json(GOOD)
    for name, value in changes.items():
        key = A if name == "a" else B
        header[key] = header[key] | value
    return header


CORRUPT = [
    ("empty file", b"", "too short"),
    ("four bytes", b"\x01\0\0\0", "too short"),
    ("negative length", raw_safetensors(b"{}", b"", length=-8), "negative"),
    ("huge length", raw_safetensors(b"{}", b"", length=MAX_HEADER_BYTES + 1), "above the"),
    ("overlong length", raw_safetensors(b"{}", b"", length=4096), "runs past the end"),
    ("zero length", raw_safetensors(b"", b"", length=0), "cannot hold"),
    ("not json", raw_safetensors(b"{nope}", b""), "not JSON"),
    ("not utf-8", raw_safetensors(b'{"\xff":1}', b""), "not JSON"),
    ("json list", raw_safetensors(b"[]", b""), "JSON list"),
    ("nested", raw_safetensors(b"[" * 50_000 + b"]" * 50_000, b""), "nests too deeply"),
    ("duplicate tensor", raw_safetensors(b'{"a":{},"a":{}}', b""), "appears twice"),
    ("unknown dtype", _with_header(_edit(a={"dtype": "F12"})), "unknown dtype"),
    ("string shape", _with_header(_edit(a={"shape": "8,64"})), "not a list of sizes"),
    ("negative dim", _with_header(_edit(a={"shape": [-8, -64]})), "not a list of sizes"),
    ("bool dim", _with_header(_edit(a={"shape": [True, 64]})), "not a list of sizes"),
    ("reversed offsets", _with_header(_edit(a={"data_offsets": [2048, 0]}), 6144), "begin <= end"),
    ("three offsets", _with_header(_edit(a={"data_offsets": [0, 1, 2]}), 6144), "begin, end"),
    ("short span", _with_header(_edit(a={"data_offsets": [0, 1024]}), 6144), "needs 2048 bytes"),
    ("extra key", _with_header(_edit(a={"offset": 0})), "exactly dtype"),
    ("not a dict", raw_safetensors(json.dumps({A: [1, 2]}).encode(), b""), "exactly dtype"),
    (
        "overlap",
        _with_header(_edit(b={"data_offsets": [1024, 1024 + 4096]}), 6144),
        "overlap",
    ),
    ("gap", _with_header(_edit(b={"data_offsets": [4096, 8192]})), "gap of 2048"),
    ("truncated data", _with_header(header_json(GOOD), 1000), "truncated or padded"),
    ("padded data", _with_header(header_json(GOOD), 6144 + 7), "truncated or padded"),
    (
        "bad metadata",
        _with_header(header_json(GOOD) | {"__metadata__": {"format": 1}}),
        "__metadata__",
    ),
]


@pytest.mark.parametrize(("case", "data", "words"), CORRUPT, ids=[x[0] for x in CORRUPT])
def test_corrupt_headers_are_refused(case: str, data: bytes, words: str) -> None:
    header, problems = parsed(data)
    assert header is None
    assert reasons(problems) == [c.CORRUPT_WEIGHTS]
    assert words in problems[0].message, problems[0].message
    assert FILE in problems[0].message and "save_pretrained" in problems[0].message


def test_a_header_cut_short_by_the_read_is_refused_not_crashed() -> None:
    data = build_safetensors(GOOD)
    header, problems = parse_header(data[:20], len(data), FILE)
    assert header is None and "inside its header" in problems[0].message


def test_header_length_alone() -> None:
    assert header_length(raw_safetensors(b"{}", b""), 10, FILE) == (2, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.integers(min_value=0, max_value=1 << 20))
def test_any_bytes_give_a_header_or_a_refusal(data: bytes, extra: int) -> None:
    header, problems = parse_header(data, len(data) + extra, FILE)
    assert (header is None) == bool(problems)
    assert all(p.reason == c.CORRUPT_WEIGHTS for p in problems)


_names = st.text(alphabet="abcdefgh._", min_size=1, max_size=12)
_specs = st.lists(
    st.tuples(
        _names,
        st.sampled_from(["F32", "F16", "BF16", "I8"]),
        st.lists(st.integers(0, 5), max_size=3),
    ),
    max_size=8,
    unique_by=lambda t: t[0],
)


@settings(max_examples=200, deadline=None)
@given(_specs)
def test_every_well_formed_file_parses_back(specs: list[tuple[str, str, list[int]]]) -> None:
    specs = [s for s in specs if s[0] != "__metadata__"]
    data = build_safetensors(specs)
    header, problems = parsed(data)
    assert problems == []
    assert {t.name: (t.dtype, list(t.shape)) for t in header.tensors} == {
        n: (d, s) for n, d, s in specs
    }


@settings(max_examples=200, deadline=None)
@given(_specs, st.integers(1, 64))
def test_moving_one_offset_is_always_caught(
    specs: list[tuple[str, str, list[int]]], by: int
) -> None:
    specs = [s for s in specs if s[0] != "__metadata__"]
    header = header_json(specs)
    names = [n for n, _, _ in specs]
    if not names:
        return
    entry = header[names[-1]]
    entry["data_offsets"] = [entry["data_offsets"][0] + by, entry["data_offsets"][1] + by]
    data = raw_safetensors(json.dumps(header).encode(), b"\0" * entry["data_offsets"][1])
    got, problems = parsed(data)
    assert got is None and reasons(problems) == [c.CORRUPT_WEIGHTS]


# -- LoRA layout, declared rank and the base model ------------------------------------------


def lora_checks(
    specs: list[Any], config: dict[str, Any], base: dict[str, Any] | None = None
) -> list[Any]:
    header, problems = parsed(build_safetensors(specs))
    assert problems == []
    found = check_lora_tensors(header, config, FILE)
    if base is not None:
        b, _ = parse_base_config(json.dumps(base).encode())
        assert b is not None
        found += check_against_base(header, config, b, "lorapack/tiny-llama", FILE)
    return found


def test_a_healthy_adapter_passes_every_check() -> None:
    assert lora_checks(lora_tensor_specs(TINY, 8, ALL), lora_config(8, ALL), TINY) == []


def test_rank_pattern_is_honoured() -> None:
    specs = lora_tensor_specs(TINY, 8, ALL, ranks={"q_proj": 16})
    config = lora_config(8, ALL, rank_pattern={"q_proj": 16})
    assert lora_checks(specs, config, TINY) == []
    wrong = lora_checks(specs, lora_config(8, ALL), TINY)
    assert reasons(wrong) == [c.RANK_MISMATCH]
    assert "r=8" in wrong[0].message and "q_proj" in wrong[0].message


def test_a_regex_rank_pattern_accepts_any_declared_rank() -> None:
    specs = lora_tensor_specs(TINY, 8, ALL, ranks={"q_proj": 16})
    config = lora_config(8, ALL, rank_pattern={".*q_proj": 16})
    assert lora_checks(specs, config, TINY) == []


CASES = [
    (
        "declared r disagrees with the shapes",
        lora_tensor_specs(TINY, 16, ALL),
        lora_config(8, ALL),
        [c.RANK_MISMATCH],
        "declares r=8",
    ),
    (
        "tensors of a wider model with a matching name",
        lora_tensor_specs(WIDE, 8, ALL),
        lora_config(8, ALL),
        [c.WEIGHTS_DO_NOT_FIT],
        "has 64 input features",
    ),
    (
        "more layers than the base",
        lora_tensor_specs(TINY | {"num_hidden_layers": 4}, 8, ALL),
        lora_config(8, ALL),
        [c.WEIGHTS_DO_NOT_FIT],
        "for layer 2, but lorapack/tiny-llama has 2 layers",
    ),
    (
        "target module the architecture lacks",
        lora_tensor_specs(TINY, 8, ("fancy_proj",)),
        lora_config(8, ("fancy_proj",)),
        [c.WEIGHTS_DO_NOT_FIT],
        "fancy_proj, which lorapack/tiny-llama (llama) does not have",
    ),
    (
        "tensor module outside target_modules",
        lora_tensor_specs(TINY, 8, ("q_proj", "down_proj")),
        lora_config(8, ("q_proj",)),
        [c.UNSUPPORTED_ADAPTER],
        "target_modules does not list",
    ),
    (
        "lora_B missing",
        lora_tensor_specs(TINY, 8, ("q_proj",))[:1],
        lora_config(8, ("q_proj",)),
        [c.CORRUPT_WEIGHTS],
        "has lora_A but no lora_B",
    ),
    (
        "A and B ranks differ",
        [(A, "F32", [8, 64]), (B, "F32", [128, 4])],
        lora_config(8, ("q_proj",)),
        [c.CORRUPT_WEIGHTS],
        "lora_B has rank 4",
    ),
    (
        "a DoRA magnitude vector",
        [
            *lora_tensor_specs(TINY, 8, ("q_proj",), layers=1),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "F32", [1]),
        ],
        lora_config(8, ("q_proj",)),
        [c.UNSUPPORTED_ADAPTER],
        "not a LoRA tensor in PEFT's layout",
    ),
    (
        "integer weights",
        lora_tensor_specs(TINY, 8, ("q_proj",), dtype="I8"),
        lora_config(8, ("q_proj",)),
        [c.UNSUPPORTED_ADAPTER],
        "not a floating-point type",
    ),
    (
        "a 3-D tensor",
        [(A, "F32", [8, 64, 1]), (B, "F32", [128, 8])],
        lora_config(8, ("q_proj",)),
        [c.CORRUPT_WEIGHTS],
        "LoRA tensors are 2-D",
    ),
    ("no tensors at all", [], lora_config(8, ("q_proj",)), [c.NO_WEIGHTS], "holds no tensors"),
]


@pytest.mark.parametrize(
    ("case", "specs", "config", "want", "words"), CASES, ids=[x[0] for x in CASES]
)
def test_adapters_that_vllm_would_misload_are_refused(
    case: str, specs: list[Any], config: dict[str, Any], want: list[str], words: str
) -> None:
    found = lora_checks(specs, config, TINY)
    assert sorted(set(reasons(found))) == want, found
    assert any(words in p.message for p in found), found


def test_one_issue_per_kind_counts_the_others() -> None:
    found = lora_checks(lora_tensor_specs(WIDE, 8, ALL), lora_config(8, ALL), TINY)
    assert len(found) == 1 and "more tensors alike" in found[0].message


def test_without_a_base_config_shapes_of_another_model_pass_the_pool_free_checks() -> None:
    # The pool-independent checks cannot know the hidden size: that is the base config's job.
    assert lora_checks(lora_tensor_specs(WIDE, 8, ALL), lora_config(8, ALL)) == []


def test_embedding_lora_checks_the_hidden_side_only() -> None:
    specs = [
        ("base_model.model.model.embed_tokens.lora_embedding_A", "F32", [8, 491 + 16]),
        ("base_model.model.model.embed_tokens.lora_embedding_B", "F32", [64, 8]),
        ("base_model.model.lm_head.lora_A.weight", "F32", [8, 64]),
        ("base_model.model.lm_head.lora_B.weight", "F32", [491 + 16, 8]),
    ]
    config = lora_config(8, ("embed_tokens", "lm_head"))
    assert lora_checks(specs, config, TINY) == []
    specs[1] = ("base_model.model.model.embed_tokens.lora_embedding_B", "F32", [128, 8])
    assert reasons(lora_checks(specs, config, TINY)) == [c.WEIGHTS_DO_NOT_FIT]
