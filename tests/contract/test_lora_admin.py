"""Contract: runtime adapter management over HTTP (vllm-lora-contract.md 3.2-3.5 and 11.4).

Each test runs against the engine double and the real vLLM CPU engine (see conftest.py).
"""

from __future__ import annotations

import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from tests.contract.conftest import Engine
from tests.fixtures.engines import unique_name

PERMISSION_KEYS = {
    "id",
    "object",
    "created",
    "allow_create_engine",
    "allow_sampling",
    "allow_logprobs",
    "allow_search_indices",
    "allow_view",
    "allow_fine_tuning",
    "organization",
    "group",
    "is_blocking",
}
CARD_KEYS = {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}


async def test_health_is_200_with_an_empty_body(engine: Engine) -> None:
    response = await engine.http.get("/health")
    assert (response.status_code, response.content) == (200, b"")


async def test_load_answers_the_success_sentence_as_plain_text(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("plain")
    response = await engine.load(name, artifacts.path("r8"))
    assert response.status_code == 200
    # Not JSON (the reference's "JSON string literal" did not reproduce on 0.32.0).
    assert response.text == f"Success: LoRA adapter '{name}' added successfully."
    assert "json" not in response.headers.get("content-type", "")

    response = await engine.unload(name)
    assert response.status_code == 200
    assert response.text == f"Success: LoRA adapter '{name}' removed successfully."


async def test_models_lists_the_base_card_then_adapter_cards(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("cards")
    assert (await engine.load(name, artifacts.path("r16"))).status_code == 200

    response = await engine.http.get("/v1/models")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    base, adapter = cards[engine.served_name], cards[name]
    assert body["data"][0]["id"] == engine.served_name
    for card in (base, adapter):
        assert set(card) == CARD_KEYS
        assert (card["object"], card["owned_by"]) == ("model", "vllm")
        assert isinstance(card["created"], int)
        assert len(card["permission"]) == 1
        assert set(card["permission"][0]) == PERMISSION_KEYS
        assert card["permission"][0]["id"].startswith("modelperm-")
    assert (base["root"], base["parent"], base["max_model_len"]) == (engine.model_root, None, 512)
    assert (adapter["root"], adapter["parent"], adapter["max_model_len"]) == (
        artifacts.path("r16"),
        engine.served_name,
        None,
    )


@pytest.mark.parametrize("second_path", ["r8", "r16"], ids=["same-path", "other-path"])
async def test_loading_a_registered_name_again_is_400_already_loaded(
    engine: Engine, artifacts: ArtifactIndex, second_path: str
) -> None:
    name = unique_name("again")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200

    response = await engine.load(name, artifacts.path(second_path))

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": f"The lora adapter '{name}' has already been loaded. If you want to "
            "load the adapter in place, set 'load_inplace' to True.",
            "type": "InvalidUserInput",
            "param": None,
            "code": 400,
        }
    }


async def test_a_nonexistent_path_is_404_with_the_path_redacted(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    name = unique_name("ghost")
    response = await engine.load(name, str(artifacts.root / "adapters" / "does_not_exist"))
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": f"Loading lora {name} failed: No adapter found for <path>",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }
    assert name not in await engine.model_ids()


async def test_unload_twice_is_200_then_404(engine: Engine, artifacts: ArtifactIndex) -> None:
    name = unique_name("twice")
    assert (await engine.load(name, artifacts.path("r8"))).status_code == 200
    assert (await engine.unload(name)).status_code == 200
    assert name not in await engine.model_ids()

    response = await engine.unload(name)

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": f"The lora adapter '{name}' cannot be found.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


async def test_reload_after_unload_is_200(engine: Engine, artifacts: ArtifactIndex) -> None:
    name = unique_name("reload")
    assert (await engine.load(name, artifacts.path("r16"))).status_code == 200
    before = await engine.text(name)
    assert (await engine.unload(name)).status_code == 200

    assert (await engine.load(name, artifacts.path("r16"))).status_code == 200

    assert await engine.text(name) == before


@pytest.mark.parametrize(
    ("body", "want_message", "want_type", "want_param"),
    [
        pytest.param(
            {"lora_name": "x"},
            "1 validation error:\n  {'type': 'missing', 'loc': 'body.lora_path', "
            "'msg': 'Field required', 'input': '<dict of 1 items>'}",
            "Bad Request",
            "body.lora_path",
            id="missing-path",
        ),
        pytest.param(
            {},
            "2 validation errors:\n  {'type': 'missing', 'loc': 'body.lora_name', 'msg': "
            "'Field required', 'input': '<dict of 0 items>'}\n  {'type': 'missing', 'loc': "
            "'body.lora_path', 'msg': 'Field required', 'input': '<dict of 0 items>'}",
            "Bad Request",
            "body.lora_name",
            id="empty-object",
        ),
        pytest.param(
            {"lora_name": 5, "lora_path": "/x"},
            "1 validation error:\n  {'type': 'string_type', 'loc': 'body.lora_name', "
            "'msg': 'Input should be a valid string', 'input': '5'}",
            "Bad Request",
            "body.lora_name",
            id="name-not-a-string",
        ),
        pytest.param(
            {"lora_name": "", "lora_path": ""},
            "Both 'lora_name' and 'lora_path' must be provided.",
            "InvalidUserInput",
            None,
            id="empty-strings",
        ),
    ],
)
async def test_bad_load_requests_are_400(
    engine: Engine,
    body: dict[str, object],
    want_message: str,
    want_type: str,
    want_param: str | None,
) -> None:
    response = await engine.http.post("/v1/load_lora_adapter", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": want_message, "type": want_type, "param": want_param, "code": 400}
    }


async def test_a_base_model_name_cannot_be_an_adapter_name(
    engine: Engine, artifacts: ArtifactIndex
) -> None:
    response = await engine.load(engine.served_name, artifacts.path("r8"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"The lora adapter '{engine.served_name}' conflicts with a served base model.",
        "type": "InvalidUserInput",
        "param": None,
        "code": 400,
    }


@pytest.mark.parametrize(
    ("content", "want_message", "want_param"),
    [
        pytest.param(
            b"not json",
            "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.0', 'msg': "
            "'JSON decode error', 'input': '<dict of 0 items>', 'ctx': {'error': "
            "'Expecting value'}}",
            "body.0",
            id="not-json",
        ),
    ],
)
async def test_a_body_that_is_not_json_is_400(
    engine: Engine, content: bytes, want_message: str, want_param: str
) -> None:
    response = await engine.http.post(
        "/v1/load_lora_adapter", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": want_message,
        "type": "Bad Request",
        "param": want_param,
        "code": 400,
    }


@pytest.mark.parametrize("route", ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"])
async def test_admin_routes_want_a_json_content_type(engine: Engine, route: str) -> None:
    response = await engine.http.post(
        route,
        content=b'{"lora_name": "a", "lora_path": "/b"}',
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is "
        "allowed",
        "type": "Bad Request",
        "param": None,
        "code": 400,
    }


async def test_unload_with_an_empty_name_is_400(engine: Engine) -> None:
    response = await engine.unload("")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "'lora_name' needs to be provided to unload a LoRA adapter.",
        "type": "InvalidUserInput",
        "param": None,
        "code": 400,
    }


@pytest.mark.parametrize(
    ("method", "path", "want_status", "want_body"),
    [
        pytest.param("GET", "/no/such/route", 404, {"detail": "Not Found"}, id="unknown-route"),
        pytest.param(
            "GET", "/v1/completions", 405, {"detail": "Method Not Allowed"}, id="wrong-method"
        ),
    ],
)
async def test_framework_errors_use_fastapis_detail_body(
    engine: Engine, method: str, path: str, want_status: int, want_body: dict[str, str]
) -> None:
    response = await engine.http.request(method, path)
    assert (response.status_code, response.json()) == (want_status, want_body)
