"""The vLLM engine client: health, the model list, runtime LoRA load/unload, and drain.

The agent in each pool pod calls it against its own engine on localhost. It speaks vLLM's
OpenAI server exactly as vllm-lora-contract.md sections 3 and 6 (and the contract suite in
tests/contract) describe it, and turns every answer into a typed outcome:

    200                                  -> LOADED
    400 "...has already been loaded..."  -> ALREADY_LOADED (success) when /v1/models shows the
                                            same path; a different path is reloaded with
                                            load_inplace only when the caller asked for it
    400 anything else                    -> BAD_REQUEST
    404 {"detail": "Not Found"}          -> DISABLED (VLLM_ALLOW_RUNTIME_LORA_UPDATING is off)
    404 error body                       -> NOT_FOUND (no adapter_config.json at the path)
    500 "...greater than max_lora_rank"  -> RANK_TOO_LARGE
    500 other, /health fine              -> INVALID_ADAPTER (do not retry blindly)
    500 while unhealthy, other 5xx,
    timeouts, connection errors          -> raise lorapack.errors.EngineUnavailable

Only status codes and the documented message substrings are matched: vLLM redacts paths in
messages and wraps worker errors, so exact texts differ between deployments.

Drain: vLLM has no per-adapter in-flight counter, but its `vllm:lora_requests_info` gauge lists
the adapters with running or waiting requests in the labels of its newest series (the value is
a timestamp). `drain()` polls it until the adapter is gone from that series or time runs out;
the caller stops routing to the pod first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum, auto
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lorapack.errors import EngineUnavailable

__all__ = [
    "EngineClient",
    "EngineModel",
    "LoadOutcome",
    "LoadResult",
    "parse_running_adapters",
]

_ALREADY_LOADED = "has already been loaded"
_RANK_TOO_LARGE = "greater than max_lora_rank"
_LORA_INFO = "vllm:lora_requests_info"


class LoadOutcome(StrEnum):
    """What a load did; values are the lower-case member names ("loaded", "already_loaded")."""

    LOADED = auto()
    ALREADY_LOADED = auto()
    NOT_FOUND = auto()
    RANK_TOO_LARGE = auto()
    INVALID_ADAPTER = auto()
    BAD_REQUEST = auto()
    DISABLED = auto()

    @property
    def ok(self) -> bool:
        """True when the adapter is registered under the name afterwards."""
        return self in (LoadOutcome.LOADED, LoadOutcome.ALREADY_LOADED)


@dataclass(frozen=True)
class LoadResult:
    """The outcome, the HTTP status that decided it and the engine's (or our) message."""

    outcome: LoadOutcome
    status: int
    message: str


@dataclass(frozen=True)
class EngineModel:
    """One card of GET /v1/models: base models have parent None, adapters the base's name."""

    id: str
    root: str | None
    parent: str | None


class EngineClient:
    """Async client for one vLLM server; see the module docstring for the outcome table."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- reads -------------------------------------------------------------------------------

    async def health(self) -> bool:
        """GET /health answered 200. Never raises."""
        try:
            response = await self._http.get("/health")
        except Exception:
            # Deliberately broad: a closed client, a transport error or a timeout all mean
            # "not healthy" here, and callers only need that bit (load() uses it to tell an
            # invalid adapter from a sick engine).
            return False
        return response.status_code == 200

    async def models(self) -> list[EngineModel]:
        """GET /v1/models: every served base model and registered adapter."""
        response = await self._request("GET", "/v1/models")
        if response.status_code != 200:
            raise self._unavailable(f"GET /v1/models answered {response.status_code}")
        try:
            cards = response.json()["data"]
            return [
                EngineModel(id=str(c["id"]), root=c.get("root"), parent=c.get("parent"))
                for c in cards
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unavailable(f"GET /v1/models returned no model list ({exc})") from exc

    async def adapters(self) -> dict[str, str]:
        """Registered adapters (name -> path they were loaded from); base models excluded."""
        return {m.id: m.root or "" for m in await self.models() if m.parent is not None}

    async def running_adapters(self) -> set[str]:
        """Adapters with running or waiting requests, from the newest lora_requests_info series."""
        response = await self._request("GET", "/metrics")
        if response.status_code != 200:
            raise self._unavailable(f"GET /metrics answered {response.status_code}")
        return parse_running_adapters(response.text)

    # -- writes ------------------------------------------------------------------------------

    async def load(self, name: str, path: str, *, inplace: bool = False) -> LoadResult:
        """Register adapter `name` from folder `path`; idempotent (see the module docstring).

        `inplace=True` lets an adapter already registered from another path be replaced under
        the same name (vLLM's load_inplace); without it that case is reported, not changed.
        The agent never uses it: vLLM 0.32 keeps the flag, so every later request re-reads the
        folder and a vanished folder kills the engine (docs/dev/vllm-engine-notes.md).
        """
        result = await self._post_load(name, path, inplace=False)
        if result.outcome is not LoadOutcome.ALREADY_LOADED:
            return result
        registered = (await self.adapters()).get(name)
        if registered is None:
            # Unloaded between the two calls: one more plain load settles it.
            return await self._post_load(name, path, inplace=False)
        if registered == path:
            return result
        if inplace:
            return await self._post_load(name, path, inplace=True)
        return LoadResult(
            LoadOutcome.ALREADY_LOADED,
            result.status,
            f"{result.message} It is registered from {registered!r}, not {path!r}; load with "
            "inplace=True to replace it, or unload it first.",
        )

    async def unload(self, name: str) -> bool:
        """Forget adapter `name`: True if it was registered, False if the engine had no such
        name (404). vLLM keeps the weights cached until LRU eviction (reference 3.4): the slot
        is not freed, an unloaded adapter can push a loaded one out of the CPU cache."""
        if not name:
            raise ValueError("unload: name must be the adapter's non-empty served name")
        response = await self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        status = response.status_code
        if status == 200:
            return True
        if status == 404 and _routes_absent(response):
            raise self._unavailable(
                "runtime LoRA updating is off: start vLLM with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                reason="RuntimeLoadingDisabled",
            )
        if status == 404:
            return False
        raise self._unavailable(f"unload of {name!r} answered {status}: {_message(response)}")

    async def drain(self, name: str, *, timeout: float, poll: float = 0.2) -> bool:
        """Wait until `name` has no running or waiting requests (True) or `timeout` passes
        (False). Stop routing to this engine before calling it, or it may never drain."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if name not in await self.running_adapters():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(poll, remaining))

    # -- internals ---------------------------------------------------------------------------

    async def _post_load(self, name: str, path: str, *, inplace: bool) -> LoadResult:
        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if inplace:
            body["load_inplace"] = True
        response = await self._request("POST", "/v1/load_lora_adapter", body)
        status = response.status_code
        message = _message(response)
        if status == 200:
            return LoadResult(LoadOutcome.LOADED, status, message)
        if status == 400:
            outcome = (
                LoadOutcome.ALREADY_LOADED
                if _ALREADY_LOADED in message
                else LoadOutcome.BAD_REQUEST
            )
            return LoadResult(outcome, status, message)
        if status == 404:
            if _routes_absent(response):
                return LoadResult(
                    LoadOutcome.DISABLED,
                    status,
                    "the engine has no /v1/load_lora_adapter route: start vLLM with "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                )
            return LoadResult(LoadOutcome.NOT_FOUND, status, message)
        if status == 500:
            if _RANK_TOO_LARGE in message:
                return LoadResult(LoadOutcome.RANK_TOO_LARGE, status, message)
            # vLLM reports every adapter validation failure as 500; only a healthy engine
            # makes that the adapter's fault rather than the engine's.
            if await self.health():
                return LoadResult(LoadOutcome.INVALID_ADAPTER, status, message)
            raise self._unavailable(f"load of {name!r} answered 500 and /health fails: {message}")
        if status >= 500:
            raise self._unavailable(f"load of {name!r} answered {status}: {message}")
        return LoadResult(LoadOutcome.BAD_REQUEST, status, message)

    async def _request(
        self, method: str, path: str, json_body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return await self._http.request(method, path, json=json_body)
        except httpx.TimeoutException as exc:
            raise self._unavailable(f"{method} {path} timed out after {self._timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise self._unavailable(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc

    def _unavailable(self, detail: str, *, reason: str | None = None) -> EngineUnavailable:
        return EngineUnavailable(f"vLLM at {self.base_url}: {detail}", reason=reason)


def parse_running_adapters(metrics_text: str) -> set[str]:
    """Running ∪ waiting adapter names of the newest `vllm:lora_requests_info` series.

    The gauge keeps one series per label combination ever seen, each valued with the time it
    was last written; only the newest describes the present (reference section 6).
    """
    newest: tuple[float, set[str]] | None = None
    # Parse only the gauge's own sample lines: the whole page (650+ lines) costs ~100x more,
    # and drain() polls it several times a second.
    lines = "\n".join(
        line for line in metrics_text.splitlines() if line.startswith(_LORA_INFO + "{")
    )
    for family in text_string_to_metric_families(lines):
        if family.name != _LORA_INFO:
            continue
        for sample in family.samples:
            labels: dict[str, str] = sample.labels
            names = {
                n
                for key in ("running_lora_adapters", "waiting_lora_adapters")
                for n in labels.get(key, "").split(",")
                if n
            }
            value = float(sample.value)
            if newest is None or value > newest[0]:
                newest = (value, names)
    return newest[1] if newest else set()


def _message(response: httpx.Response) -> str:
    """The error message of a vLLM error body, the success text, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return str(body["detail"])
    if isinstance(body, str):
        return body
    return response.text.strip()


def _routes_absent(response: httpx.Response) -> bool:
    """FastAPI's own 404 for an unregistered route, as opposed to vLLM's error body."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("detail") == "Not Found"
