"""Contract: lorapack's EngineClient against both engines, outcome by outcome.

The unit tests check the client's mapping against recorded answers; these check that the
answers it was written for are the ones the engines really give.
"""

from __future__ import annotations

import pytest

from lorapack.clients.engine import EngineClient, EngineModel, LoadOutcome
from lorapack_testworld.artifacts import ArtifactIndex
from tests.contract.conftest import Engine
from tests.fixtures.engines import unique_name


@pytest.mark.parametrize(
    ("adapter", "want"),
    [
        ("r8", LoadOutcome.LOADED),
        ("r64", LoadOutcome.LOADED),
        ("r128", LoadOutcome.RANK_TOO_LARGE),
        ("rank-pattern-128", LoadOutcome.RANK_TOO_LARGE),
        ("dora", LoadOutcome.INVALID_ADAPTER),
        ("no-weights", LoadOutcome.INVALID_ADAPTER),
        ("wrong-base-shapes", LoadOutcome.INVALID_ADAPTER),
        ("missing-config", LoadOutcome.NOT_FOUND),
    ],
)
async def test_load_outcomes(
    engine: Engine, artifacts: ArtifactIndex, adapter: str, want: LoadOutcome
) -> None:
    async with EngineClient(engine.url) as client:
        result = await client.load(unique_name(adapter), artifacts.path(adapter))
    assert result.outcome is want, result.message


async def test_load_is_idempotent_and_reports_a_different_path(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("idem")
    async with EngineClient(engine.url) as client:
        assert (await client.load(name, artifacts.path("r8"))).outcome is LoadOutcome.LOADED

        again = await client.load(name, artifacts.path("r8"))
        other = await client.load(name, artifacts.path("r16"))
        assert (await client.adapters())[name] == artifacts.path("r8")
        replaced = await client.load(name, artifacts.path("r16"), inplace=True)

        assert (again.outcome, again.status) == (LoadOutcome.ALREADY_LOADED, 400)
        assert other.outcome is LoadOutcome.ALREADY_LOADED
        assert artifacts.path("r8") in other.message
        assert replaced.outcome is LoadOutcome.LOADED
        assert (await client.adapters())[name] == artifacts.path("r16")


async def test_models_adapters_and_unload(engine: Engine, artifacts: ArtifactIndex) -> None:
    name = unique_name("listed")
    async with EngineClient(engine.url) as client:
        assert await client.health() is True
        await client.load(name, artifacts.path("r16"))

        models = await client.models()
        adapters = await client.adapters()

        assert EngineModel(engine.served_name, engine.model_root, None) in models
        assert EngineModel(name, artifacts.path("r16"), engine.served_name) in models
        assert adapters[name] == artifacts.path("r16")
        assert engine.served_name not in adapters
        assert await client.unload(name) is True
        assert await client.unload(name) is False
        assert name not in await client.adapters()
