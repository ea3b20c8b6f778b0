"""`EngineDouble`: construction, lifecycle, the aiohttp application and its small routes.

Validates the engine flags the way vLLM's start-up does, loads the static --lora-modules (a
failure aborts start-up), serves the routes of `routes.OpenAIRoutes` plus GET /health,
GET /metrics and the fault-injection routes under /_double, and implements crash (stop
answering) and restart (forget every runtime adapter). Called by tests and fixtures
(`EngineDouble(...)`, `await start()`, `.url`, `await stop()`), the pod simulator and `cli`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, fields, replace
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from lorapack_testworld.enginedouble.adapters import max_position_embeddings, model_dims
from lorapack_testworld.enginedouble.messages import (
    ENGINE_DEAD_MESSAGE,
    error_response,
    json_response,
)
from lorapack_testworld.enginedouble.sagemaker import SageMakerRoutes
from lorapack_testworld.enginedouble.state import Faults

__all__ = ["ALLOWED_MAX_LORA_RANKS", "EngineDouble", "EngineDoubleStartupError"]

ALLOWED_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class EngineDoubleStartupError(RuntimeError):
    """Start-up failed the way vLLM's does (bad flags, a static adapter that does not load)."""


def _parse_lora_module(value: str) -> tuple[str, str, str | None]:
    """One --lora-modules value: `name=path`, or a JSON object {name, path, base_model_name}."""
    if "=" in value and "," not in value:
        name, path = value.split("=", 1)
        return name, path, None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise EngineDoubleStartupError(f"Invalid JSON format for --lora-modules: {value}") from exc
    allowed = {"name", "path", "base_model_name", "is_3d_lora_weight"}
    if not isinstance(data, dict) or not {"name", "path"} <= set(data) or not set(data) <= allowed:
        raise EngineDoubleStartupError(
            f"Invalid fields for --lora-modules: {value} - expected an object with name and "
            "path (and optionally base_model_name, is_3d_lora_weight)"
        )
    return str(data["name"]), str(data["path"]), data.get("base_model_name")


class EngineDouble(SageMakerRoutes):
    """An in-process vLLM look-alike; the package docstring says what it reproduces."""

    def __init__(
        self,
        model: str = "lorapack/tiny-llama",
        *,
        served_model_name: str | Sequence[str] | None = None,
        enable_lora: bool = True,
        max_loras: int = 1,
        max_lora_rank: int = 16,
        max_cpu_loras: int | None = None,
        lora_modules: Sequence[str] = (),
        runtime_lora_updating: bool = True,
        api_key: str | None = None,
        wrap_worker_errors: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        max_model_len: int | None = None,
        dead_shutdown_delay_s: float = 0.05,
    ) -> None:
        if max_lora_rank not in ALLOWED_MAX_LORA_RANKS:
            choices = ", ".join(str(r) for r in ALLOWED_MAX_LORA_RANKS)
            raise EngineDoubleStartupError(
                f"argument --max-lora-rank: invalid choice: {max_lora_rank} (choose from {choices})"
            )
        if max_loras < 1:
            raise EngineDoubleStartupError(f"max_loras must be >= 1, got {max_loras}")
        cpu = max_cpu_loras if max_cpu_loras and max_cpu_loras > 0 else max_loras
        if cpu < max_loras:
            raise EngineDoubleStartupError(
                f"max_cpu_loras ({cpu}) must be >= max_loras ({max_loras})."
            )
        names = [served_model_name] if isinstance(served_model_name, str) else served_model_name
        self.model = model
        self.served_names: list[str] = list(names or [model])
        self.enable_lora = enable_lora
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_cpu_loras = cpu
        self.static_lora_modules = [_parse_lora_module(v) for v in lora_modules]
        self.runtime_lora_updating = runtime_lora_updating
        self.api_key = api_key
        self.wrap_worker_errors = wrap_worker_errors
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.dead_shutdown_delay_s = dead_shutdown_delay_s
        self._dims = model_dims(model)
        self.max_model_len = max_model_len or max_position_embeddings(model) or 2048
        self._runner: web.AppRunner | None = None
        self.stopped = asyncio.Event()
        self.crashed = False
        self.dead = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reset_engine()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> EngineDouble:
        """Load static adapters (a failure aborts start-up, like vLLM), then listen."""
        await self._load_static()
        app = web.Application(middlewares=[self._middleware()])
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/v1/models", self._models),
                web.post("/v1/completions", self._completions),
                web.post("/v1/chat/completions", self._chat),
                web.get("/metrics", self._metrics),
                web.get("/_double/state", self._state),
                web.get("/_double/faults", self._get_faults),
                web.post("/_double/faults", self._set_faults),
            ]
        )
        if self.runtime_lora_updating:
            app.add_routes(
                [
                    web.post("/v1/load_lora_adapter", self._load),
                    web.post("/v1/unload_lora_adapter", self._unload),
                ]
            )
        app.add_routes(self.sagemaker_routes(runtime_lora_updating=self.runtime_lora_updating))
        # A short shutdown timeout: like vLLM on SIGTERM, stopping does not wait for requests.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self.stopped.clear()
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.stopped.set()

    async def __aenter__(self) -> EngineDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def crash(self) -> None:
        """Stop answering at once, as if the process died (the CLI then exits 1)."""
        self.crashed = True
        self._drop_inflight()
        self._spawn(self.stop())

    def restart(self) -> None:
        """Forget every adapter and in-flight request, as a restarted engine would."""
        self.dead = False
        self._drop_inflight()
        self._reset_engine()
        self._spawn(self._reload_static())

    async def _reload_static(self) -> None:
        try:
            await self._load_static()
        except EngineDoubleStartupError:
            # A static adapter that no longer loads stops a restarting vLLM as well.
            self.crash()

    async def _load_static(self) -> None:
        for name, path, base in self.static_lora_modules:
            result = await self._add(name, path, load_inplace=False, base_model_name=base)
            if isinstance(result, web.Response):
                message = json.loads(result.text or "{}").get("error", {}).get("message", "")
                raise EngineDoubleStartupError(message)

    # -- HTTP: middleware and small routes ---------------------------------------------------

    def _middleware(self) -> Any:
        """--api-key on /v1 (vLLM's AuthenticationMiddleware), the dead engine, and FastAPI's
        {"detail": ...} bodies for unknown routes and methods."""

        @web.middleware
        async def middleware(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if (
                self.api_key is not None
                and request.method != "OPTIONS"
                and request.path.startswith(("/v1", "/v2", "/inference", "/cohere"))
            ):
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not secrets.compare_digest(token, self.api_key):
                    return json_response({"error": "Unauthorized"}, status=401)
            if self.dead and not request.path.startswith("/_double"):
                if request.path == "/health":
                    return web.Response(status=503)
                return error_response(500, ENGINE_DEAD_MESSAGE, "InternalServerError")
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status in (404, 405):
                    return json_response({"detail": exc.reason}, status=exc.status)
                raise

        return middleware

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.faults.unhealthy else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._prom),
            headers={"Content-Type": "text/plain; version=1.0.0; charset=utf-8"},
        )

    async def _state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return json_response(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return json_response({"error": "body must be a JSON object"}, status=400)
        known = {f.name for f in fields(Faults)} | {"crash", "restart"}
        unknown = sorted(set(body) - known)
        if unknown:
            return json_response(
                {"error": f"unknown fault fields {unknown}; known: {sorted(known)}"}, status=400
            )
        crash, restart = bool(body.pop("crash", False)), bool(body.pop("restart", False))
        try:
            self.faults = replace(self.faults, **body)
        except TypeError as exc:
            return json_response({"error": str(exc)}, status=400)
        if restart:
            self.restart()
        if crash:
            # Answer this request first, then stop listening.
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, self.crash)
        return json_response(asdict(self.faults))
