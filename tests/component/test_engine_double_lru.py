"""The engine double's residency model: registry, CPU LRU, GPU slots, scheduling and drain.

vllm-lora-contract.md section 4: the registry is unbounded and changed only by load/unload;
the CPU cache holds max-cpu-loras adapters (LRU); max-loras GPU slots hold the active ones; a
request for an evicted adapter (or for one loaded with load_inplace, whose flag sticks) re-reads
its folder, and a vanished folder kills the engine.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorapack.clients.engine import EngineClient
from lorapack_testworld.enginedouble import ENGINE_DEAD_MESSAGE, EngineDouble
from tests.fixtures.artifacts import FakeAdapter, write_fake_adapter
from tests.fixtures.engines import DoubleFactory


async def post(double: EngineDouble, path: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=double.url, timeout=30) as http:
        return await http.post(path, json=body)


async def load(double: EngineDouble, name: str, path: object) -> None:
    response = await post(double, "/v1/load_lora_adapter", lora_name=name, lora_path=str(path))
    assert response.status_code == 200, response.text


async def complete(double: EngineDouble, model: str) -> httpx.Response:
    return await post(double, "/v1/completions", model=model, prompt="hi", max_tokens=3)


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Poll `condition` (requests reach the double asynchronously)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def names(entries: list[dict[str, Any]]) -> list[str | None]:
    return [e["name"] for e in entries]


async def test_cpu_cache_and_gpu_slots_evict_least_recently_used(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=1, max_cpu_loras=2)
    for name in ("a", "b", "c"):
        await load(double, name, fake_adapter(name))

    state = double.state()
    assert list(state["registry"]) == ["a", "b", "c"]
    assert names(state["cpu_cache"]) == ["b", "c"]  # oldest first
    assert names(state["gpu_slots"]) == ["c"]

    assert (await complete(double, "b")).status_code == 200
    assert names(double.state()["cpu_cache"]) == ["c", "b"]
    assert names(double.state()["gpu_slots"]) == ["b"]

    # "a" was evicted: its next request re-reads the folder from disk.
    assert (await complete(double, "a")).status_code == 200
    assert names(double.state()["cpu_cache"]) == ["b", "a"]


async def test_unload_forgets_the_name_but_keeps_the_weights_cached(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=2, max_cpu_loras=2)
    await load(double, "a", fake_adapter("a"))
    assert (await post(double, "/v1/unload_lora_adapter", lora_name="a")).status_code == 200

    state = double.state()
    assert state["registry"] == {}
    assert [e["id"] for e in state["cpu_cache"]] == [1]
    assert (await complete(double, "a")).status_code == 404

    # Loading the name again gets a new internal id; the old copy stays until evicted.
    await load(double, "a", fake_adapter("a2"))
    assert [e["id"] for e in double.state()["cpu_cache"]] == [1, 2]


async def test_a_vanished_folder_of_an_evicted_adapter_kills_the_engine(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=1, max_cpu_loras=1)
    doomed = fake_adapter("doomed")
    await load(double, "doomed", doomed)
    await load(double, "other", fake_adapter("other"))
    shutil.rmtree(doomed)

    response = await complete(double, "doomed")

    assert response.status_code == 500
    assert response.json()["error"]["message"] == ENGINE_DEAD_MESSAGE
    await asyncio.wait_for(double.stopped.wait(), timeout=10)
    assert double.crashed is True


async def test_requests_in_flight_when_the_engine_dies_fail_with_it(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=2, max_cpu_loras=2)
    doomed = fake_adapter("doomed")
    for name, folder in (
        ("doomed", doomed),
        ("x", fake_adapter("x")),
        ("busy", fake_adapter("busy")),
    ):
        await load(double, name, folder)
    shutil.rmtree(doomed)  # and it is no longer in the 2-entry CPU cache
    double.faults.completion_delay_s = 30
    busy = asyncio.create_task(complete(double, "busy"))
    await until(lambda: double.state()["running"] == ["busy"])

    doomed_response = await complete(double, "doomed")

    assert doomed_response.status_code == 500
    assert (await busy).status_code == 500
    assert (await busy).json()["error"]["message"] == ENGINE_DEAD_MESSAGE
    await asyncio.wait_for(double.stopped.wait(), timeout=10)


async def test_a_vanished_folder_of_a_cached_adapter_goes_unnoticed(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=1, max_cpu_loras=1)
    folder = fake_adapter("cached")
    await load(double, "cached", folder)
    shutil.rmtree(folder)

    assert (await complete(double, "cached")).status_code == 200


async def test_a_vanished_folder_of_an_inplace_loaded_adapter_kills_the_engine_while_cached(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    """vLLM 0.32 keeps load_inplace on the request it serves with, so every request re-reads
    the folder (docs/dev/vllm-engine-notes.md): residency does not protect it."""
    double = await engine_double(max_loras=1, max_cpu_loras=1)
    await load(double, "sticky", fake_adapter("v1"))
    folder = fake_adapter("v2")
    response = await post(
        double,
        "/v1/load_lora_adapter",
        lora_name="sticky",
        lora_path=str(folder),
        load_inplace=True,
    )
    assert response.status_code == 200
    assert (await complete(double, "sticky")).status_code == 200
    assert names(double.state()["cpu_cache"]) == ["sticky"]
    shutil.rmtree(folder)

    response = await complete(double, "sticky")

    assert response.status_code == 500
    assert response.json()["error"]["message"] == ENGINE_DEAD_MESSAGE
    await asyncio.wait_for(double.stopped.wait(), timeout=10)


async def test_more_adapters_than_slots_wait_instead_of_failing(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=1, max_cpu_loras=2)
    await load(double, "a", fake_adapter("a"))
    await load(double, "b", fake_adapter("b"))
    double.faults.completion_delay_s = 0.5

    first = asyncio.create_task(complete(double, "a"))
    await until(lambda: double.state()["running"] == ["a"])
    second = asyncio.create_task(complete(double, "b"))
    await until(lambda: double.state()["waiting"] == ["b"])
    state = double.state()
    async with httpx.AsyncClient(base_url=double.url) as http:
        metrics = (await http.get("/metrics")).text

    assert (state["running"], state["waiting"]) == (["a"], ["b"])
    deferred = [
        line
        for line in metrics.splitlines()
        if line.startswith("vllm:num_requests_waiting_by_reason{") and 'reason="deferred"' in line
    ]
    assert [line.rsplit(" ", 1)[1] for line in deferred] == ["1.0"]
    assert 'running_lora_adapters="a,b"' in metrics
    assert [(await t).status_code for t in (first, second)] == [200, 200]
    assert double.state()["running"] == double.state()["waiting"] == []


async def test_drain_follows_in_flight_requests(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(max_loras=2)
    await load(double, "a", fake_adapter("a"))
    double.faults.completion_delay_s = 0.6
    request = asyncio.create_task(complete(double, "a"))
    async with EngineClient(double.url) as client:
        for _ in range(100):
            if "a" in await client.running_adapters():
                break
            await asyncio.sleep(0.01)

        assert await client.drain("a", timeout=0.1, poll=0.02) is False
        assert await client.drain("a", timeout=10, poll=0.02) is True
        assert await client.drain("never-used", timeout=0.1) is True
    assert (await request).status_code == 200


# -- property: the residency invariants hold for any sequence of operations -------------------

Op = tuple[str, int]
ops = st.lists(
    st.tuples(st.sampled_from(["load", "unload", "complete"]), st.integers(0, 4)), max_size=25
)


@pytest.fixture(scope="module")
def five_adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("five")
    return {f"p{i}": write_fake_adapter(root / f"p{i}", rank=8) for i in range(5)}


@settings(max_examples=20, deadline=None)
@given(sequence=ops, max_loras=st.integers(1, 3), extra_cpu=st.integers(0, 2))
async def test_residency_invariants(
    five_adapters: dict[str, Path], sequence: list[Op], max_loras: int, extra_cpu: int
) -> None:
    double = EngineDouble(max_loras=max_loras, max_cpu_loras=max_loras + extra_cpu)
    await double.start()
    registered: set[str] = set()
    try:
        async with httpx.AsyncClient(base_url=double.url) as http:
            for op, index in sequence:
                name = f"p{index}"
                if op == "load":
                    body = {"lora_name": name, "lora_path": str(five_adapters[name])}
                    response = await http.post("/v1/load_lora_adapter", json=body)
                    assert response.status_code == (400 if name in registered else 200)
                    registered.add(name)
                elif op == "unload":
                    response = await http.post("/v1/unload_lora_adapter", json={"lora_name": name})
                    assert response.status_code == (200 if name in registered else 404)
                    registered.discard(name)
                else:
                    response = await http.post(
                        "/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 1}
                    )
                    assert response.status_code == (200 if name in registered else 404)
                state = double.state()
                cpu = {e["id"] for e in state["cpu_cache"]}
                gpu = {e["id"] for e in state["gpu_slots"]}
                assert set(state["registry"]) == registered
                assert len(cpu) <= max_loras + extra_cpu
                assert len(gpu) <= max_loras
                assert gpu <= cpu
    finally:
        await double.stop()
