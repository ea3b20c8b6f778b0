"""Contract: engines started with other flags (reference 2.2, 3.1, 4.3 and 11.5).

* Static adapters (`--lora-modules`, both syntaxes) without VLLM_ALLOW_RUNTIME_LORA_UPDATING:
  listed and served, while the admin routes do not exist (FastAPI's 404 {"detail":"Not Found"}).
* A static adapter that does not load aborts start-up.
* A registered adapter whose folder vanished after it was evicted from the CPU cache kills the
  engine on its next request: 500, then the server shuts itself down.

The real variants need their own servers; one static server is shared by this module (and
started again only if a test killed it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorapack.clients.engine import EngineClient, LoadOutcome
from lorapack.errors import EngineUnavailable
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.enginedouble import (
    ENGINE_DEAD_MESSAGE,
    EngineDouble,
    EngineDoubleStartupError,
)
from lorapack_testworld.realvllm import RealVllm
from tests.contract.conftest import ENGINES, Engine
from tests.fixtures.engines import DoubleFactory, RealFactory

STATIC_FLAGS = {"max_loras": 1, "max_lora_rank": 64, "max_cpu_loras": 1}


def static_modules(artifacts: ArtifactIndex, vanish: Path) -> list[str]:
    # "vanish" goes first so that loading the others evicts it from the 1-entry CPU cache.
    return [
        f"vanish={vanish}",
        f"s8={artifacts.path('r8')}",
        json.dumps(
            {"name": "s16", "path": artifacts.path("r16"), "base_model_name": artifacts.served_name}
        ),
        json.dumps({"name": "s64", "path": artifacts.path("r64"), "base_model_name": "not-served"}),
    ]


@dataclass
class _StaticServer:
    """The module's real static server, started again if a test killed it."""

    factory: RealFactory
    artifacts: ArtifactIndex
    tmp: Path
    server: RealVllm | None = None
    vanish: Path | None = None
    starts: int = 0

    def get(self) -> tuple[RealVllm, Path]:
        if self.server is None or self.vanish is None or not self.server.running():
            if self.server is not None:
                self.server.stop()
            self.starts += 1
            self.vanish = self.tmp / f"vanish-{self.starts}"
            shutil.copytree(self.artifacts.adapter("r8").path, self.vanish)
            self.server = self.factory(
                runtime_lora_updating=False,
                lora_modules=static_modules(self.artifacts, self.vanish),
                **STATIC_FLAGS,
            )
        return self.server, self.vanish


@pytest.fixture(scope="module")
def real_static(
    real_vllm_factory: RealFactory,
    artifacts: ArtifactIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_StaticServer]:
    holder = _StaticServer(real_vllm_factory, artifacts, tmp_path_factory.mktemp("static"))
    yield holder
    if holder.server is not None:
        holder.server.stop()


@dataclass
class StaticEngine:
    engine: Engine
    vanish: Path


@pytest.fixture(params=ENGINES)
async def static_engine(
    request: pytest.FixtureRequest,
    artifacts: ArtifactIndex,
    engine_double: DoubleFactory,
    tmp_path: Path,
) -> AsyncIterator[StaticEngine]:
    double: EngineDouble | None = None
    if request.param == "double":
        vanish = tmp_path / "vanish"
        shutil.copytree(artifacts.adapter("r8").path, vanish)
        double = await engine_double(
            str(artifacts.model.path),
            served_model_name=artifacts.served_name,
            runtime_lora_updating=False,
            lora_modules=static_modules(artifacts, vanish),
            **STATIC_FLAGS,
        )
        url = double.url
    else:
        holder: _StaticServer = request.getfixturevalue("real_static")
        server, vanish = holder.get()
        url = server.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        engine = Engine(
            request.param, url, artifacts.served_name, str(artifacts.model.path), http, double
        )
        yield StaticEngine(engine, vanish)


async def test_without_runtime_updating_the_admin_routes_do_not_exist(
    static_engine: StaticEngine, artifacts: ArtifactIndex
) -> None:
    engine = static_engine.engine
    load = await engine.load("x", artifacts.path("r8"))
    unload = await engine.unload("s8")

    assert (load.status_code, load.json()) == (404, {"detail": "Not Found"})
    assert (unload.status_code, unload.json()) == (404, {"detail": "Not Found"})
    async with EngineClient(engine.url) as client:
        assert (await client.load("x", artifacts.path("r8"))).outcome is LoadOutcome.DISABLED
        with pytest.raises(EngineUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            await client.unload("s8")


async def test_static_adapters_are_listed_with_their_parent(
    static_engine: StaticEngine, artifacts: ArtifactIndex
) -> None:
    engine = static_engine.engine
    cards = (await engine.http.get("/v1/models")).json()["data"]

    got = {c["id"]: (c["root"], c["parent"]) for c in cards}

    served = engine.served_name
    assert got == {
        served: (engine.model_root, None),
        "vanish": (str(static_engine.vanish), served),
        "s8": (artifacts.path("r8"), served),
        "s16": (artifacts.path("r16"), served),
        # base_model_name that is not a served name is dropped (2.2).
        "s64": (artifacts.path("r64"), served),
    }


async def test_static_adapters_serve_like_runtime_ones(static_engine: StaticEngine) -> None:
    engine = static_engine.engine
    texts = [await engine.text(name) for name in ("s8", "s16", "s64", "s8")]
    assert texts[0] == texts[3]
    assert len(set(texts)) == 3


async def test_a_vanished_adapter_folder_kills_the_engine(static_engine: StaticEngine) -> None:
    # Runs last in this module: it takes the shared real server down.
    engine = static_engine.engine
    assert (await engine.complete("s8")).status_code == 200  # "vanish" is not cached now
    shutil.rmtree(static_engine.vanish)

    response = await engine.complete("vanish")

    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": ENGINE_DEAD_MESSAGE,
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
    # vLLM 0.32 then shuts the API server down: /health fails first, and a moment later
    # (how long depends on the machine) connections are refused.
    async with EngineClient(engine.url, timeout=5) as client:
        for _ in range(150):
            if not await client.health():
                break
            await asyncio.sleep(0.2)
        assert await client.health() is False
        for _ in range(300):
            try:
                await client.models()
            except EngineUnavailable:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the dead engine still answers GET /v1/models after 60 s")
        assert await client.health() is False


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_static_adapter_that_fails_to_load_aborts_start_up(
    kind: str, artifacts: ArtifactIndex, request: pytest.FixtureRequest
) -> None:
    flags: dict[str, Any] = {"max_loras": 1, "max_lora_rank": 64}
    modules = [f"bad={artifacts.path('r128')}"]
    want = "LoRA rank 128 is greater than max_lora_rank 64."
    if kind == "double":
        double = EngineDouble(
            str(artifacts.model.path),
            served_model_name=artifacts.served_name,
            runtime_lora_updating=False,
            lora_modules=modules,
            **flags,
        )
        with pytest.raises(EngineDoubleStartupError, match=re.escape(want)):
            await double.start()
        return
    factory: RealFactory = request.getfixturevalue("real_vllm_factory")
    server = factory(wait=False, runtime_lora_updating=False, lora_modules=modules, **flags)
    code = await asyncio.to_thread(server.wait_exit, 360)
    assert code != 0
    assert want in server.log_text()
    assert "Application startup complete" not in server.log_text()


@pytest.mark.parametrize("kind", ENGINES)
async def test_without_enable_lora_every_load_fails_with_500(
    kind: str,
    artifacts: ArtifactIndex,
    engine_double: DoubleFactory,
    request: pytest.FixtureRequest,
) -> None:
    server: RealVllm | None = None
    if kind == "double":
        url = (
            await engine_double(
                str(artifacts.model.path),
                served_model_name=artifacts.served_name,
                enable_lora=False,
            )
        ).url
    else:
        factory: RealFactory = request.getfixturevalue("real_vllm_factory")
        server = factory(enable_lora=False)
        url = server.url
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            load = await http.post(
                "/v1/load_lora_adapter",
                json={"lora_name": "a", "lora_path": artifacts.path("r8")},
            )
            models = (await http.get("/v1/models")).json()["data"]
            metrics = (await http.get("/metrics")).text
        assert load.status_code == 500
        assert load.json()["error"] == {
            "message": "Call to add_lora method failed: Worker failed with error 'LoRA is not "
            "enabled. Use --enable-lora to enable LoRA.', please check the stack trace above for "
            "the root cause",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
        assert [card["id"] for card in models] == [artifacts.served_name]
        assert "vllm:lora_requests_info" not in metrics
    finally:
        if server is not None:
            server.stop()
