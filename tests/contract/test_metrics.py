"""Contract: /metrics, the LoRA gauge and drain (reference 6 and 11.9).

`vllm:lora_requests_info` has one series per label combination ever seen, valued with the time
it was last written; the newest lists the adapters that have requests in flight.
"""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from lorapack.clients.engine import EngineClient
from lorapack_testworld.artifacts import ArtifactIndex
from tests.contract.conftest import Engine
from tests.fixtures.engines import unique_name


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


async def test_metrics_expose_the_request_gauges(engine: Engine) -> None:
    response = await engine.http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        ((labels, value),) = families[name]
        assert labels == {"engine": "0", "model_name": engine.served_name}
        assert value >= 0
    reasons = {labels["reason"] for labels, _ in families["vllm:num_requests_waiting_by_reason"]}
    assert reasons == {"capacity", "deferred"}
    assert "# TYPE vllm:lora_requests_info gauge" in response.text


async def test_lora_gauge_names_the_adapter_while_its_request_runs(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("busy")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200

    held = await engine.hold(name)
    busy = _families((await engine.http.get("/metrics")).text)
    assert [r.status_code for r in await held.release()] == [200, 200]
    idle = _families((await engine.http.get("/metrics")).text)

    newest_busy = max(busy["vllm:lora_requests_info"], key=lambda s: s[1])
    assert newest_busy[0]["max_lora"] == "2"
    assert name in newest_busy[0]["running_lora_adapters"].split(",")
    # vLLM fills both labels from the same per-adapter table.
    assert newest_busy[0]["waiting_lora_adapters"] == newest_busy[0]["running_lora_adapters"]
    assert newest_busy[1] > 1.7e9  # a unix timestamp, not a count
    newest_idle = max(idle["vllm:lora_requests_info"], key=lambda s: s[1])
    assert name not in newest_idle[0]["running_lora_adapters"].split(",")
    ((_, running),) = busy["vllm:num_requests_running"]
    assert running >= 1


async def test_client_drain_waits_for_the_adapters_requests(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("drain")
    assert (await engine.load(name, artifacts.path("r16"))).status_code == 200
    async with EngineClient(engine.url) as client:
        held = await engine.hold(name)
        assert await client.running_adapters() >= {name}

        assert await client.drain(name, timeout=0.3, poll=0.05) is False
        released = asyncio.create_task(held.release())
        assert await client.drain(name, timeout=60, poll=0.05) is True

        assert [r.status_code for r in await released] == [200, 200]
        assert name not in await client.running_adapters()
