"""The agent loop against the engine double: load, verify, unload, survive restarts, roll.

The cache here copies adapter folders from local disk (the S3 download path is covered by the S3
tests); the engine is the real engine double, so load/unload/list go over HTTP exactly as in a pod.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lorapack.api.podstate import DesiredAdapter, DesiredState
from lorapack.clients.engine import EngineClient
from lorapack_testworld.enginedouble import EngineDouble
from tests.fakes.agentports import LocalCache, Reports, running_agent
from tests.fakes.agentports import desired_entry as entry


def digest_of(folder: Path) -> str:
    return "sha256:" + hashlib.sha256(str(folder).encode()).hexdigest()


@pytest.fixture
async def world(tmp_path: Path, fake_adapter: Callable[..., Path]) -> AsyncIterator[dict[str, Any]]:
    double = EngineDouble(max_loras=2, max_lora_rank=64, max_cpu_loras=4)
    await double.start()
    folders = {
        n: fake_adapter(n, rank) for n, rank in (("a", 8), ("b", 16), ("c", 64), ("big", 128))
    }
    digests = {n: digest_of(f) for n, f in folders.items()}
    cache = LocalCache(tmp_path / "cache", {digests[n]: f for n, f in folders.items()})
    reports = Reports()
    engine = EngineClient(double.url)
    async with running_agent(engine, cache, reports) as agent:
        yield {
            "agent": agent,
            "double": double,
            "digests": digests,
            "cache": cache,
            "reports": reports,
            "engine": engine,
        }
    await engine.aclose()
    await double.stop()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def desired(revision: int, *entries: DesiredAdapter) -> DesiredState:
    return DesiredState(pool="ml/p", pod="p-0", revision=revision, adapters=list(entries))


async def test_loads_what_is_desired_and_reports_only_verified_state(world: dict[str, Any]) -> None:
    agent, d, reports = world["agent"], world["digests"], world["reports"]
    agent.set_desired(desired(1, entry("a", d["a"]), entry("b", d["b"])))
    await until(lambda: reports.synced)
    assert reports.last.revision == 1
    assert reports.last.loaded() == {"a": d["a"], "b": d["b"]}
    registered = await world["engine"].adapters()
    assert set(registered) == {"a", "b"}
    timed = {a.served_name: a for a in reports.last.adapters}
    assert timed["a"].download_ms is not None and timed["a"].load_ms is not None
    assert registered["a"].endswith(d["a"].replace(":", "-"))


async def test_nothing_is_unloaded_before_the_first_desired_state(
    world: dict[str, Any], fake_adapter: Callable[..., Path]
) -> None:
    engine = world["engine"]
    stray = fake_adapter("stray", 8)
    await engine.load("stray", str(stray))
    await asyncio.sleep(0.3)
    assert "stray" in await engine.adapters()  # the agent does not guess
    world["agent"].set_desired(desired(1))
    await until(lambda: world["reports"].synced)
    assert "stray" not in await engine.adapters()


async def test_unloads_what_is_no_longer_desired_and_collects_garbage(
    world: dict[str, Any],
) -> None:
    agent, d, reports, cache = world["agent"], world["digests"], world["reports"], world["cache"]
    agent.set_desired(desired(1, entry("a", d["a"]), entry("b", d["b"])))
    await until(lambda: reports.synced and reports.last.revision == 1)
    agent.set_desired(desired(2, entry("a", d["a"])))
    await until(lambda: reports.synced and reports.last.revision == 2)
    assert set(await world["engine"].adapters()) == {"a"}
    await until(lambda: not cache.is_verified(d["b"]))  # GC removes the version nobody wants
    assert cache.is_verified(d["a"])


async def test_engine_restart_reloads_from_cache_without_downloading(world: dict[str, Any]) -> None:
    agent, d, reports, cache = world["agent"], world["digests"], world["reports"], world["cache"]
    agent.set_desired(desired(1, entry("a", d["a"]), entry("c", d["c"])))
    await until(lambda: reports.synced and len(reports.last.loaded()) == 2)
    downloads = list(cache.downloads)
    world["double"].restart()
    await until(lambda: reports.last.engine_restarts == 1 and len(reports.last.loaded()) == 2)
    assert set(await world["engine"].adapters()) == {"a", "c"}
    assert cache.downloads == downloads


async def test_rank_too_large_fails_with_the_engines_message_and_others_still_load(
    world: dict[str, Any],
) -> None:
    agent, d, reports = world["agent"], world["digests"], world["reports"]
    agent.set_desired(desired(1, entry("a", d["a"]), entry("big", d["big"])))
    await until(lambda: reports.synced)
    states = {a.served_name: a for a in reports.last.adapters}
    assert states["a"].state == "Loaded"
    assert states["big"].state == "Failed"
    assert "rank" in states["big"].message
    assert "128" in states["big"].message
    assert states["big"].attempts == 1


async def test_new_version_of_a_name_swaps_the_path(world: dict[str, Any]) -> None:
    agent, d, reports = world["agent"], world["digests"], world["reports"]
    agent.set_desired(desired(1, entry("a", d["a"])))
    await until(lambda: reports.synced and reports.last.revision == 1)
    agent.set_desired(desired(2, entry("a", d["b"])))  # same served name, new files
    await until(lambda: reports.synced and reports.last.revision == 2)
    assert reports.last.loaded() == {"a": d["b"]}
    assert (await world["engine"].adapters())["a"].endswith(d["b"].replace(":", "-"))


async def test_engine_down_is_reported_and_nothing_is_claimed(world: dict[str, Any]) -> None:
    agent, d, reports = world["agent"], world["digests"], world["reports"]
    agent.set_desired(desired(1, entry("a", d["a"])))
    await until(lambda: reports.synced)
    world["double"].faults.unhealthy = True
    await until(lambda: not reports.last.engine_healthy)
    assert not reports.synced


async def test_one_served_name_never_answers_for_two_adapters(world: dict[str, Any]) -> None:
    """A desired state naming one served name twice (the operator never writes one; the agent
    does not trust that): the adapter already served keeps the name, the other is not loaded."""
    agent, d, reports = world["agent"], world["digests"], world["reports"]
    agent.set_desired(desired(1, entry("a", d["a"])))
    await until(lambda: reports.synced and reports.last.revision == 1)
    hijack = entry("a", d["b"]).model_copy(update={"adapter": "team-b/a"})
    agent.set_desired(desired(2, entry("a", d["a"]), hijack))
    await until(lambda: reports.synced and reports.last.revision == 2)
    await asyncio.sleep(0.3)  # a few more passes: nothing swaps
    assert reports.last.loaded() == {"a": d["a"]}
    registered = await world["engine"].adapters()
    assert registered["a"].endswith(d["a"].replace(":", "-"))


async def test_an_unload_the_engine_did_not_take_is_never_reported_as_gone(
    world: dict[str, Any],
) -> None:
    """A 200 from unload is not proof: an engine whose unload does not take (the double's
    ignore_next_unloads; a frontend that keeps the name, or a resolver that registers it again)
    still serves it. The agent checks /v1/models, reports it Unloading meanwhile and unloads it
    again; no report leaves out a name the engine lists."""
    agent, d, reports, double = world["agent"], world["digests"], world["reports"], world["double"]
    agent.set_desired(desired(1, entry("a", d["a"])))
    await until(lambda: reports.synced and reports.last.revision == 1)
    reports.probe = lambda: "a" in double.state()["registry"]
    double.faults.ignore_next_unloads = 1

    agent.set_desired(desired(2))

    await until(lambda: reports.synced and reports.last.revision == 2)
    assert double.faults.ignore_next_unloads == 0  # the first unload did not take
    assert "a" not in await world["engine"].adapters()
    for state, synced, listed in reports.history:
        if listed:
            assert ([a.served_name for a in state.adapters], synced) == (["a"], False)
    messages = {a.message for state, _, _ in reports.history for a in state.adapters}
    assert "the engine still lists it after unloading" in messages


async def test_a_swap_between_two_passes_is_not_an_engine_restart(world: dict[str, Any]) -> None:
    """A version swap unloads the old version before it loads the new one: a pass in between
    finds the name missing, which is not a restart (found by the churn contract test)."""
    agent, d, reports, double = world["agent"], world["digests"], world["reports"], world["double"]
    agent.set_desired(desired(1, entry("a", d["a"])))
    await until(lambda: reports.synced and reports.last.revision == 1)
    double.faults.load_delay_s = 0.3  # several 50 ms passes fall between unload and load

    agent.set_desired(desired(2, entry("a", d["b"])))

    await until(lambda: reports.synced and reports.last.revision == 2)
    assert reports.last.loaded() == {"a": d["b"]}
    assert reports.last.engine_restarts == 0
