"""The engine double's adapter validation, routing text and start-up options.

Adapter folders are written by the `fake_adapter` fixture (safetensors headers, zero data), so
these tests need neither torch nor the vLLM venv. What the real engine says for the same kinds
of folders is pinned by tests/contract.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorapack_testworld.enginedouble import (
    EngineDouble,
    EngineDoubleStartupError,
    sanitize_message,
)
from tests.fixtures.artifacts import FakeAdapter, lora_shapes
from tests.fixtures.engines import DoubleFactory

WRAP = "Call to add_lora method failed: Worker failed with error '{}', please check the stack trace above for the root cause"  # noqa: E501


async def load(double: EngineDouble, name: str, path: Path | str, **extra: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=double.url) as http:
        body = {"lora_name": name, "lora_path": str(path), **extra}
        return await http.post("/v1/load_lora_adapter", json=body)


async def complete(double: EngineDouble, model: str, **extra: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=double.url) as http:
        body = {"model": model, "prompt": "hello world", "max_tokens": 5, **extra}
        return await http.post("/v1/completions", json=body)


@pytest.mark.parametrize(
    ("config", "tensors", "want_detail"),
    [
        pytest.param({"r": None}, None, "Missing required configuration fields: {'r'}", id="no-r"),
        pytest.param(
            {"r": 0}, None, "LoRA rank `r` must be a positive integer, got 0.", id="r-zero"
        ),
        pytest.param(
            {"rank_pattern": {"q_proj": 128}},
            None,
            "LoRA rank 128 is greater than max_lora_rank 64.",
            id="rank-pattern-over-limit",
        ),
        pytest.param(
            {"rank_pattern": {"q_proj": -1}},
            None,
            "LoRA rank for `q_proj` in `rank_pattern` must be a positive integer, got -1.",
            id="rank-pattern-negative",
        ),
        pytest.param({"use_dora": True}, None, "vLLM does not yet support DoRA.", id="dora"),
        pytest.param({"bias": "lora_only"}, None, "Adapter bias is not supported.", id="bias"),
        pytest.param(
            {"lora_bias": True},
            None,
            "vLLM does not support LoRA bias (lora_bias).",
            id="lora-bias",
        ),
        pytest.param(
            {"modules_to_save": ["lm_head"]},
            None,
            "vLLM only supports modules_to_save being either None or "
            '["classifier", "score"] for classification models. Unsupported '
            "modules_to_save: ['lm_head']",
            id="modules-to-save",
        ),
        pytest.param(
            {"init_lora_weights": "pissa"},
            None,
            "vLLM does not support init_lora_weights='pissa'.",
            id="pissa",
        ),
        pytest.param(
            {"use_dora": True, "bias": "all"},
            None,
            "vLLM does not yet support DoRA. Adapter bias is not supported.",
            id="several-joined-with-spaces",
        ),
        pytest.param(
            {},
            {"base_model.model.model.layers.0.mlp.fancy_proj.lora_A.weight": (8, 64)},
            "expected target modules in {'down_proj', 'embed_tokens', 'gate_proj', 'k_proj', "
            "'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj'} but received "
            "['model.layers.0.mlp.fancy_proj']",
            id="unexpected-module",
        ),
        pytest.param(
            {},
            {"base_model.model.model.layers.0.mlp.down_proj.weight": (64, 128)},
            "model.layers.0.mlp.down_proj.weight is unsupported LoRA weight",
            id="not-a-lora-tensor",
        ),
        pytest.param(
            {},
            lora_shapes(8, modules={"self_attn.q_proj": (128, 128)}),
            "The size of tensor a (64) must match the size of tensor b (128)",
            id="wrong-base-shapes",
        ),
    ],
)
async def test_invalid_adapters_are_500_with_vllms_text(
    engine_double: DoubleFactory,
    fake_adapter: FakeAdapter,
    tiny_model_dir: Path,
    config: dict[str, Any],
    tensors: dict[str, tuple[int, ...]] | None,
    want_detail: str,
) -> None:
    double = await engine_double(str(tiny_model_dir), max_lora_rank=64)
    folder = fake_adapter("bad", config=config, tensors=tensors)

    response = await load(double, "bad", folder)

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "InternalServerError"
    assert error["message"].startswith("Call to add_lora method failed: Worker failed with error '")
    assert want_detail in error["message"]


@pytest.mark.parametrize(
    ("files", "want_status", "want_file"),
    [
        pytest.param({"adapter_model.safetensors"}, 200, "adapter_model.safetensors", id="st"),
        pytest.param(
            {"adapter_model.safetensors", "adapter_model.bin"},
            200,
            "adapter_model.safetensors",
            id="safetensors-wins-over-bin",
        ),
        pytest.param({"adapter_model.bin"}, 500, None, id="bin-that-is-not-a-torch-archive"),
        pytest.param(set(), 500, None, id="no-weights"),
    ],
)
async def test_weight_file_priority(
    engine_double: DoubleFactory,
    fake_adapter: FakeAdapter,
    files: set[str],
    want_status: int,
    want_file: str | None,
) -> None:
    double = await engine_double(max_lora_rank=64)
    weights = "safetensors" if "adapter_model.safetensors" in files else "none"
    folder = fake_adapter("a", weights=weights)
    if "adapter_model.bin" in files:
        (folder / "adapter_model.bin").write_bytes(b"not a zip")

    response = await load(double, "a", folder)

    assert response.status_code == want_status, response.text
    if want_file:
        digest = hashlib.sha256((folder / want_file).read_bytes()).hexdigest()
        assert double.state()["registry"]["a"]["digest"] == f"sha256:{digest}"


async def test_missing_config_is_404_like_a_missing_folder(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double()
    folder = fake_adapter("noconf", write_config=False)

    response = await load(double, "noconf", folder)

    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "Loading lora noconf failed: No adapter found for <path>"
    )


async def test_plain_worker_errors_option_drops_the_wrapping(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(wrap_worker_errors=False, max_lora_rank=8)

    response = await load(double, "big", fake_adapter("big", rank=16))

    assert response.json()["error"]["message"] == (
        "Call to add_lora method failed: LoRA rank 16 is greater than max_lora_rank 8."
    )


async def test_lora_not_enabled_fails_every_load(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(enable_lora=False)
    response = await load(double, "a", fake_adapter("a"))
    assert response.status_code == 500
    assert "LoRA is not enabled. Use --enable-lora to enable LoRA." in response.text


async def test_completion_text_names_the_adapter_and_its_digest(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_lora_rank=64)
    folder = fake_adapter("team-a-chat", rank=16)
    digest = (
        "sha256:" + hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
    )
    assert (await load(double, "team-a-chat", folder)).status_code == 200

    adapter = (await complete(double, "team-a-chat")).json()["choices"][0]["text"]
    base = (await complete(double, "lorapack/tiny-llama")).json()["choices"][0]["text"]
    default = (await complete(double, "")).json()["choices"][0]["text"]

    assert adapter.startswith(f"[adapter=team-a-chat digest={digest}] ")
    assert len(adapter.split("] ", 1)[1].split()) == 5
    assert base.startswith("[base=lorapack/tiny-llama] ")
    assert default == base


async def test_chat_completion_text_names_the_adapter(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double()
    assert (await load(double, "bot", fake_adapter("bot"))).status_code == 200
    async with httpx.AsyncClient(base_url=double.url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.json()["choices"][0]["message"]["content"].startswith("[adapter=bot digest=")


async def test_api_key_guards_v1_but_not_health(engine_double: DoubleFactory) -> None:
    double = await engine_double(api_key="s3cret")
    async with httpx.AsyncClient(base_url=double.url) as http:
        assert (await http.get("/health")).status_code == 200
        denied = await http.get("/v1/models")
        allowed = await http.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
    assert allowed.status_code == 200


async def test_static_modules_parse_both_syntaxes(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    a, b = fake_adapter("a"), fake_adapter("b")
    double = await engine_double(
        served_model_name=["base", "alias"],
        lora_modules=[f"a={a}", f'{{"name": "b", "path": "{b}", "base_model_name": "alias"}}'],
    )
    async with httpx.AsyncClient(base_url=double.url) as http:
        cards = (await http.get("/v1/models")).json()["data"]
    assert [(c["id"], c["parent"]) for c in cards] == [
        ("base", None),
        ("alias", None),
        ("a", "base"),
        ("b", "alias"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "want_match"),
    [
        pytest.param({"max_lora_rank": 24}, "invalid choice: 24 \\(choose from 1, 8,", id="rank"),
        pytest.param(
            {"max_loras": 8, "max_cpu_loras": 4},
            "max_cpu_loras \\(4\\) must be >= max_loras \\(8\\).",
            id="cpu-below-gpu",
        ),
        pytest.param(
            {"lora_modules": ["[1, 2]"]}, "Invalid fields for --lora-modules", id="json-array"
        ),
        pytest.param(
            {"lora_modules": ["{not json,"]},
            "Invalid JSON format for --lora-modules",
            id="bad-json",
        ),
    ],
)
def test_bad_start_up_options_fail_like_vllm(kwargs: dict[str, Any], want_match: str) -> None:
    with pytest.raises(EngineDoubleStartupError, match=want_match):
        EngineDouble(**kwargs)


@pytest.mark.parametrize(
    ("message", "want"),
    [
        pytest.param(
            "No adapter found for /tmp/x/r8", "No adapter found for <path>", id="tmp-path"
        ),
        pytest.param("at /home/u/a.b-c/d ok", "at <path> ok", id="home-path"),
        pytest.param("read /data/models/x.json failed", "read <path> failed", id="file-ext"),
        pytest.param("/data/models/x stays", "/data/models/x stays", id="other-root-no-ext"),
        pytest.param("lorapack/tiny-llama.", "lorapack/tiny-llama.", id="relative-name"),
        pytest.param("<Obj at 0xdeadBEEF>", "<Obj>", id="address"),
    ],
)
def test_sanitize_message(message: str, want: str) -> None:
    assert sanitize_message(message) == want
