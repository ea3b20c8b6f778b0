"""Contract: what the engine does with each test adapter folder (reference 3.3, 5 and 11.4).

The expectations come from the artifacts' index.json (what hack/make_artifacts.py built and
why); both engines run with --max-lora-rank 64. A rejected load must leave the engine healthy,
the name unregistered, and earlier adapters serving.
"""

from __future__ import annotations

import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from tests.contract.conftest import Engine
from tests.fixtures.engines import unique_name

WORKER_PREFIX = "Call to add_lora method failed: Worker failed with error '"
WORKER_SUFFIX = "', please check the stack trace above for the root cause"

ADAPTERS = [
    "r8",
    "r16",
    "r64",
    "r128",
    "dora",
    "pickle-only",
    "missing-config",
    "no-weights",
    "bias-all",
    "rank-pattern-128",
    "unexpected-module",
    "wrong-base-name",
    "wrong-base-shapes",
]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_each_test_adapter_gets_the_engines_answer(
    engine: Engine, artifacts: ArtifactIndex, adapter: str
) -> None:
    entry = artifacts.adapter(adapter)
    keeper = unique_name("keeper")
    assert (await engine.load(keeper, artifacts.path("r8"))).status_code == 200
    keeper_text = await engine.text(keeper)
    name = unique_name(adapter)

    response = await engine.load(name, str(entry.path))

    if entry.engine_outcome_at_rank_64 == "loads":
        assert response.status_code == 200, response.text
        assert name in await engine.model_ids()
        assert (await engine.complete(name)).status_code == 200
        return
    error = response.json()["error"]
    if entry.engine_outcome_at_rank_64 == "not_found":
        assert (response.status_code, error["type"]) == (404, "NotFoundError")
        assert error["message"] == f"Loading lora {name} failed: No adapter found for <path>"
    else:
        assert (response.status_code, error["type"]) == (500, "InternalServerError")
        # The CPU engine runs its worker in another process, hence the wrapping (3.3).
        assert error["message"].startswith(WORKER_PREFIX)
        assert error["message"].endswith(WORKER_SUFFIX)
        assert entry.engine_detail in error["message"]
        assert str(artifacts.root) not in error["message"]
    # The engine survives a rejected load: healthy, name not registered, others still serve.
    assert (await engine.http.get("/health")).status_code == 200
    assert name not in await engine.model_ids()
    assert (await engine.complete(name)).status_code == 404
    assert await engine.text(keeper) == keeper_text


@pytest.mark.parametrize(
    ("adapter", "want_detail"),
    [
        ("r128", "'LoRA rank 128 is greater than max_lora_rank 64.'"),
        ("rank-pattern-128", "'LoRA rank 128 is greater than max_lora_rank 64.'"),
        ("dora", "'vLLM does not yet support DoRA.'"),
        ("bias-all", "'Adapter bias is not supported.'"),
        ("no-weights", "'<path> doesn't contain tensors'"),
    ],
)
async def test_validator_texts_are_exact(
    engine: Engine, artifacts: ArtifactIndex, adapter: str, want_detail: str
) -> None:
    response = await engine.load(unique_name(adapter), artifacts.path(adapter))
    assert response.status_code == 500
    assert response.json()["error"]["message"] == (
        f"Call to add_lora method failed: Worker failed with error {want_detail}, please check "
        "the stack trace above for the root cause"
    )
