"""Contract: inference routed by adapter name (reference 4 and 11.4-11.6).

Outputs differ between the engines (the double names the adapter, vLLM generates tokens), so
the tests compare outputs with each other: repeatable per adapter, distinct between adapters,
identical for the same files under two names. Base requests are never sent concurrently with
adapter requests (CPU mixed-batch bug, 11.7).
"""

from __future__ import annotations

import asyncio

from lorapack_testworld.artifacts import ArtifactIndex
from tests.contract.conftest import PROMPT, ROUTING_TAG, Engine
from tests.fixtures.engines import unique_name


async def test_completions_are_deterministic_and_differ_by_adapter(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    names = {size: unique_name(size) for size in ("r8", "r16", "r64")}
    for size, name in names.items():
        assert (await engine.load(name, artifacts.path(size))).status_code == 200

    first = {size: await engine.text(name) for size, name in names.items()}
    second = {size: await engine.text(name) for size, name in names.items()}
    base = await engine.text(engine.served_name)

    assert first == second
    assert len({*first.values(), base}) == 4


async def test_completion_body_has_the_openai_shape(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("shape")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200

    response = await engine.complete(name, max_tokens=4)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == name
    assert [c["index"] for c in body["choices"]] == [0]
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    assert body["usage"]["completion_tokens"] <= 4
    assert set(body) >= {"created", "system_fingerprint", "usage", "choices"}


async def test_chat_completions_route_by_adapter(engine: Engine, artifacts: ArtifactIndex) -> None:
    name = unique_name("chat")
    assert (await engine.load(name, artifacts.path("r16"))).status_code == 200
    body = {
        "model": name,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "temperature": 0,
    }

    first = await engine.http.post("/v1/chat/completions", json=body)
    second = await engine.http.post("/v1/chat/completions", json=body)

    assert first.status_code == 200, first.text
    reply = first.json()
    assert (reply["object"], reply["model"]) == ("chat.completion", name)
    assert reply["id"].startswith("chatcmpl-")
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert second.json()["choices"][0]["message"] == reply["choices"][0]["message"]


async def test_unknown_and_unloaded_models_are_404(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("gone")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200
    assert (await engine.unload(name)).status_code == 200

    for model in (name, "no_such_model"):
        response = await engine.complete(model)
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "message": f"The model `{model}` does not exist. "
                f"Valid aliases: {engine.served_name}.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        }


async def test_load_inplace_swaps_the_weights_under_the_same_name(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name, r64 = unique_name("inplace"), unique_name("r64")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200
    assert (await engine.load(r64, artifacts.path("r64"))).status_code == 200
    r8_text, r64_text = await engine.text(name), await engine.text(r64)

    swapped = await engine.load(name, artifacts.path("r64"), load_inplace=True)
    assert swapped.status_code == 200
    assert swapped.text == f"Success: LoRA adapter '{name}' added successfully."
    assert await engine.text(name) == r64_text
    models = (await engine.http.get("/v1/models")).json()["data"]
    assert {c["id"]: c["root"] for c in models}[name] == artifacts.path("r64")

    assert (await engine.load(name, artifacts.path("r8"), load_inplace=True)).status_code == 200
    assert await engine.text(name) == r8_text


async def test_load_inplace_of_a_new_name_just_loads(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("fresh")
    response = await engine.load(name, artifacts.path("r8"), load_inplace=True)
    assert response.status_code == 200
    assert name in await engine.model_ids()


async def test_more_adapters_than_the_cpu_cache_reload_from_disk_transparently(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    # 6 names over --max-cpu-loras 4 and --max-loras 2: cycling evicts and reloads (4.3).
    files = ["r8", "r16", "r64", "r8", "r16", "r64"]
    names = [unique_name(f"lru{i}") for i in range(len(files))]
    for name, size in zip(names, files, strict=True):
        assert (await engine.load(name, artifacts.path(size))).status_code == 200

    rounds = [[await engine.text(name) for name in names] for _ in range(2)]

    assert rounds[0] == rounds[1]
    by_files: dict[str, set[str]] = {}
    for size, text in zip(files, rounds[0], strict=True):
        by_files.setdefault(size, set()).add(text)
    # Same files under two names serve the same text; different files differ.
    assert all(len(texts) == 1 for texts in by_files.values())
    assert len({next(iter(t)) for t in by_files.values()}) == 3


async def test_concurrent_requests_for_more_adapters_than_slots_all_succeed(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    # 3 adapters over 2 GPU slots at once: the third waits (deferred), nothing is rejected.
    names = [unique_name(f"slot{i}") for i in range(3)]
    for name, size in zip(names, ["r8", "r16", "r64"], strict=True):
        assert (await engine.load(name, artifacts.path(size))).status_code == 200
    sequential = [await engine.text(name) for name in names]

    responses = await asyncio.gather(*(engine.complete(name) for name in names * 2))

    assert [r.status_code for r in responses] == [200] * 6
    texts = [ROUTING_TAG.sub("", r.json()["choices"][0]["text"]) for r in responses]
    assert texts == sequential * 2


async def test_the_prompt_reaches_the_engine(engine: Engine, artifacts: ArtifactIndex) -> None:
    name = unique_name("prompt")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200
    same = await engine.complete(name, prompt=PROMPT)
    other = await engine.complete(name, prompt="Hello, how can I help you today?")
    assert same.json()["choices"][0]["text"] != other.json()["choices"][0]["text"]
