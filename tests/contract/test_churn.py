"""Contract: churn. Many adapters loaded, unloaded and swapped through the real agent loop.

An engine with small limits (--max-loras 1, --max-cpu-loras 2) gets 6 served names (3 x
max-cpu-loras) in a seeded random order of loads, unloads and version swaps (same served name,
new weights at a new path), over 8 adapters whose weights differ (artifacts `churn-0..7`), all
driven by the real agent (`lorapack.agent.loop.Agent` with desired states, a local cache and the
real engine client). After every step the agent's report, `/v1/models` and a greedy completion
per name must say the same thing: which names are loaded, at which version. Runs against the
engine double and the real vLLM CPU engine, as every contract test.

What vLLM 0.32.0 does under churn (measured with this module's engine and two experiments on
it; the numbers are in docs/dev/vllm-engine-notes.md). The real engine runs with
VLLM_SERVER_DEV_MODE=1 so that the tests can read the worker's CPU LoRA cache through
`POST /collective_rpc {"method": "list_loras"}`:

* Unload does not free the engine slot (vllm#42633, #54839): it only drops the name from the
  frontend's registry; the weights keep their CPU-cache entry (and GPU slot) until LRU eviction.
  After loading and unloading 6 adapters the worker still held 2 of them (ids [9, 10]) with
  /v1/models empty, and an unloaded adapter pushed a loaded one out of the 2-entry cache (the
  loaded one was re-read from disk on its next request). Names, routing and weights stay right
  (a new load gets a new internal id, so a swapped name never serves its old weights), which
  this test checks step by step; only residency is lost.
* load_inplace replaces the weights (same internal id) and sticks (vllm#33791): the flag stays on
  the request vLLM serves the adapter with, so every request re-reads the folder. With the
  adapter resident in the cache, replacing its folder changed what it answered at once, and
  removing the folder killed the engine (EngineDeadError) on the next request; a normally loaded
  adapter kept its cached weights through both.

The agent's accounting is therefore made of what the engine lists, never of what it was asked:
it never uses load_inplace (a version swap is drain, unload, load of the new versioned path), it
checks /v1/models after an unload before it reports a name gone (a 200 whose name stays listed
keeps it Unloading), and it counts an engine restart only when names it is not working on
vanish (a swap's unload between two passes is not a restart).
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from lorapack.api.podstate import DesiredState
from lorapack.clients.engine import EngineClient
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.realvllm import RealVllm
from tests.contract.conftest import ENGINES, Engine, open_engine
from tests.fakes.agentports import LocalCache, Reports, running_agent
from tests.fakes.agentports import desired_entry as entry
from tests.fixtures.engines import DoubleFactory, RealFactory, unique_name

CHURN_FLAGS = {"max_loras": 1, "max_lora_rank": 64, "max_cpu_loras": 2}
CPU_LORAS = CHURN_FLAGS["max_cpu_loras"]
VERSIONS = [f"churn-{i}" for i in range(8)]
SEED = 15
STEPS = 24
#: At most this many names desired at once: twice the CPU cache, so cycling evicts and reloads.
MAX_LIVE = 2 * CPU_LORAS
STEP_TIMEOUT = 120.0
LOAD_DELAY_S = 0.1


@pytest.fixture(scope="module")
def churn_vllm(real_vllm_factory: RealFactory) -> Iterator[RealVllm]:
    """A real engine with the small limits, its dev routes on (to read the worker's cache)."""
    server = real_vllm_factory(extra_env={"VLLM_SERVER_DEV_MODE": "1"}, **CHURN_FLAGS)
    yield server
    server.stop()


@pytest.fixture(params=ENGINES)
async def small(
    request: pytest.FixtureRequest, artifacts: ArtifactIndex, engine_double: DoubleFactory
) -> AsyncIterator[Engine]:
    async for item in open_engine(
        request.param, request, artifacts, engine_double, real="churn_vllm", **CHURN_FLAGS
    ):
        yield item


async def worker_cache(engine: Engine) -> set[int]:
    """Internal ids of the adapters in the engine's CPU LoRA cache (the worker's LRU)."""
    if engine.double is not None:
        state = (await engine.http.get("/_double/state")).json()
        return {entry["id"] for entry in state["cpu_cache"]}
    response = await engine.http.post("/collective_rpc", json={"method": "list_loras"})
    assert response.status_code == 200, response.text
    (ids,) = response.json()["results"]  # one worker
    return set(ids)


async def reference_texts(
    engine: Engine, artifacts: ArtifactIndex, versions: Sequence[str]
) -> dict[str, str]:
    """Each version's greedy completion, from the artifact folder under a probe name."""
    texts = {}
    for version in versions:
        probe = unique_name(f"probe-{version}")
        assert (await engine.load(probe, artifacts.path(version))).status_code == 200
        texts[version] = await engine.text(probe)
        assert (await engine.unload(probe)).status_code == 200
    return texts


# -- the engine's caches on unload and load_inplace ---------------------------------------------


async def test_unload_keeps_the_weights_cached_and_they_can_push_a_loaded_adapter_out(
    small: Engine, artifacts: ArtifactIndex
) -> None:
    a, b, c = (unique_name(n) for n in ("kept", "gone", "new"))
    assert (await small.load(a, artifacts.path("churn-0"))).status_code == 200
    a_text = await small.text(a)
    a_id = max(await worker_cache(small))  # ids come from a counter: the newest is the largest
    assert (await small.load(b, artifacts.path("churn-1"))).status_code == 200
    assert (await small.unload(b)).status_code == 200
    assert b not in await small.model_ids()
    assert {a_id, a_id + 1} <= await worker_cache(small)  # unload freed nothing

    assert (await small.load(c, artifacts.path("churn-2"))).status_code == 200

    # The cache's oldest entry went: the loaded a, not the unloaded b.
    assert await worker_cache(small) == {a_id + 1, a_id + 2}
    assert await small.text(a) == a_text  # re-read from disk, transparently
    assert await worker_cache(small) == {a_id + 2, a_id}
    for name in (a, c):
        assert (await small.unload(name)).status_code == 200


async def test_load_inplace_replaces_the_weights_and_keeps_rereading_the_folder(
    small: Engine, artifacts: ArtifactIndex, tmp_path: Path
) -> None:
    texts = await reference_texts(small, artifacts, ["churn-4", "churn-5", "churn-6"])
    folders = {}
    for folder, version in (("x1", "churn-3"), ("x2", "churn-4"), ("y", "churn-5")):
        folders[folder] = tmp_path / folder
        shutil.copytree(artifacts.adapter(version).path, folders[folder])
    x, y = unique_name("inplace"), unique_name("plain")
    assert (await small.load(x, str(folders["x1"]))).status_code == 200
    before = await worker_cache(small)

    assert (await small.load(x, str(folders["x2"]), load_inplace=True)).status_code == 200

    assert await small.text(x) == texts["churn-4"]
    assert await worker_cache(small) == before  # same internal id, replaced weights
    assert (await small.load(y, str(folders["y"]))).status_code == 200
    assert await small.text(x) == texts["churn-4"]
    assert await small.text(y) == texts["churn-5"]
    y_id = max(await worker_cache(small))
    # New files at both paths (new inodes: what the engine already read is not touched).
    for folder in ("x2", "y"):
        shutil.rmtree(folders[folder])
        shutil.copytree(artifacts.adapter("churn-6").path, folders[folder])

    assert await small.text(x) == texts["churn-6"]  # read again: the flag stuck
    assert y_id in await worker_cache(small)
    assert await small.text(y) == texts["churn-5"]  # served from the cache
    for name in (x, y):
        assert (await small.unload(name)).status_code == 200


# -- churn through the agent ----------------------------------------------------------------------


def churn_plan(
    seed: int, names: Sequence[str], versions: Sequence[str], steps: int, max_live: int
) -> list[dict[str, str]]:
    """The desired state of every step (served name -> version): each step applies one or two
    random operations (load a name, unload one, swap one to another version) to the previous;
    the last step unloads everything. No two names hold one version at once, so a completion
    tells every name's version apart."""
    rng = random.Random(seed)
    live: dict[str, str] = {}
    plan: list[dict[str, str]] = []
    for _ in range(steps - 1):
        for _ in range(rng.choice((1, 1, 2))):
            free = [v for v in versions if v not in live.values()]
            ops = (["load"] if len(live) < max_live else []) + (["unload", "swap"] if live else [])
            op = rng.choice(ops)
            if op == "load":
                live[rng.choice([n for n in names if n not in live])] = rng.choice(free)
            elif op == "unload":
                del live[rng.choice(sorted(live))]
            else:
                live[rng.choice(sorted(live))] = rng.choice(free)
        plan.append(dict(live))
    plan.append({})
    return plan


def coverage(plan: Sequence[dict[str, str]]) -> tuple[set[str], int, int]:
    """Names ever loaded, swaps and unloads in a plan (from the empty state)."""
    loaded: set[str] = set()
    swaps = unloads = 0
    previous: dict[str, str] = {}
    for state in plan:
        loaded |= set(state)
        swaps += sum(1 for n, v in state.items() if n in previous and previous[n] != v)
        unloads += len(set(previous) - set(state))
        previous = state
    return loaded, swaps, unloads


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None


async def test_report_models_and_completions_agree_through_churn(
    small: Engine, artifacts: ArtifactIndex, tmp_path: Path
) -> None:
    texts = await reference_texts(small, artifacts, VERSIONS)
    assert len(set(texts.values())) == len(VERSIONS), texts  # completions tell versions apart
    digests = {v: str(artifacts.adapter(v).digest) for v in VERSIONS}
    names = [unique_name(f"churn{i}") for i in range(3 * CPU_LORAS)]
    plan = churn_plan(SEED, names, VERSIONS, STEPS, MAX_LIVE)
    loaded, swaps, unloads = coverage(plan)
    assert (loaded, swaps >= 4, unloads >= 4) == (set(names), True, True), (swaps, unloads)

    if small.double is not None:
        # Loads as slow as a real adapter's on a GPU (the tiny one on the CPU engine takes ~5 ms):
        # it opens the window between a swap's unload and its load that a pass can fall into.
        small.double.faults.load_delay_s = LOAD_DELAY_S
    cache = LocalCache(
        tmp_path / "cache", {digests[v]: artifacts.adapter(v).path for v in VERSIONS}
    )
    reports = Reports()
    async with (
        EngineClient(small.url, timeout=60) as client,
        running_agent(client, cache, reports, drain_timeout=5.0) as agent,
    ):
        for revision, live in enumerate(plan, start=1):
            step = f"step {revision} of {len(plan)}, desired {live}"
            agent.set_desired(
                DesiredState(
                    pool="ml/p",
                    pod="p-0",
                    revision=revision,
                    adapters=[entry(n, digests[v]) for n, v in live.items()],
                )
            )
            await until(
                lambda r=revision: (
                    reports.synced and reports.last is not None and reports.last.revision == r
                ),
                STEP_TIMEOUT,
                f"the agent's synced report ({step})",
            )
            report = reports.last
            assert report is not None
            want = {n: digests[v] for n, v in live.items()}
            # The agent's report: exactly the desired names, Loaded at their versions.
            assert {a.served_name: (a.state, a.digest) for a in report.adapters} == {
                n: ("Loaded", d) for n, d in want.items()
            }, step
            assert (report.engine_healthy, report.engine_restarts) == (True, 0), step
            # The engine's list: the same names, at each version's cache path.
            assert await client.adapters() == {
                n: str(cache.path_for(d)) for n, d in want.items()
            }, step
            # What the engine serves: each loaded name answers with its version's weights, the
            # others are unknown.
            for name in names:
                if name in live:
                    assert await small.text(name) == texts[live[name]], (name, step)
                else:
                    assert (await small.complete(name)).status_code == 404, (name, step)
            assert len(await worker_cache(small)) <= CPU_LORAS, step
        # Everything unloaded, and the engine still holds a full CPU cache of unloaded weights.
        assert len(await worker_cache(small)) == CPU_LORAS
