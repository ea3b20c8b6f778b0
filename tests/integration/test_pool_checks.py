"""A pool is checked before any pod starts (issue 14): its base-model folder must hold what
vLLM needs, and its engine must fit its GPUs. Otherwise the pool is Stalled with the reason and
no StatefulSet exists, instead of pods crash-looping after a download."""

from __future__ import annotations

import pytest

from tests.integration.conftest import E2E

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _stalled(e: E2E, name: str, reason: str) -> dict[str, object]:
    return e.wait(  # type: ignore[no-any-return]
        f"pool {name} Stalled with {reason}",
        lambda: (
            (o := e.try_get("bmp", name))
            and e.condition(o, "Stalled").get("reason") == reason
            and o
        ),
    )


def test_a_base_model_folder_without_a_tokenizer_stalls_the_pool_before_any_pod(
    e2e: E2E,
) -> None:
    e2e.s3.create_bucket("models")
    e2e.s3.put_bytes("models", f"{e2e.namespace}/config.json", b'{"model_type": "llama"}')
    e2e.s3.put_bytes("models", f"{e2e.namespace}/model.safetensors", b"\0" * 64)
    body = e2e.pool("no-tokenizer")
    body["spec"]["baseModel"]["source"]["s3"]["uri"] = f"s3://models/{e2e.namespace}/"
    e2e.apply(body)
    obj = _stalled(e2e, "no-tokenizer", "BaseModelIncomplete")
    assert "tokenizer" in e2e.condition(obj, "Ready")["message"]
    assert "lorapack model push" in e2e.condition(obj, "Ready")["message"]
    assert e2e.try_get("statefulset", "no-tokenizer") is None


def test_an_engine_that_cannot_fit_its_gpus_stalls_the_pool(e2e: E2E) -> None:
    body = e2e.pool("too-big")
    body["spec"]["baseModel"]["architecture"] = "llama-3-70b"
    e2e.apply(body)
    _stalled(e2e, "too-big", "ModelDoesNotFit")
    assert e2e.try_get("statefulset", "too-big") is None
