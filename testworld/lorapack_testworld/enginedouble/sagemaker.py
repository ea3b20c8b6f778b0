"""The SageMaker-compatible routes vLLM 0.32 also serves, outside /v1 (so without the API key).

vLLM bootstraps `model_hosting_container_standards.sagemaker`, which adds, next to the OpenAI
routes:

* `POST /adapters` {"name", "src"}: loads a LoRA adapter exactly like /v1/load_lora_adapter
  (same checks, same errors) and answers `Adapter <name> registered`; only with runtime LoRA
  updating, like the /v1 route it wraps;
* `DELETE /adapters/{name}`: unloads it (`Adapter <name> unregistered`, or the /v1 route's 404);
* `POST /invocations`: a chat completion when the body has "messages", else a completion;
* `GET|POST /ping`: /health.

None of them starts with a prefix vLLM's AuthenticationMiddleware guards, so --api-key does not
protect them: the double reproduces that (tests/contract/test_api_key.py checks both engines),
which is why lorapack's pools also need the NetworkPolicy of `lorapack.manifests.network`.
"""

from __future__ import annotations

import json

from aiohttp import web

from lorapack_testworld.enginedouble.bodies import Body, parse_body
from lorapack_testworld.enginedouble.messages import error_response, plain_response
from lorapack_testworld.enginedouble.routes import OpenAIRoutes

__all__ = ["SageMakerRoutes"]


class RegisterRequest(Body):
    name: str
    src: str
    load_inplace: bool = False


class SageMakerRoutes(OpenAIRoutes):
    """The handlers above; `EngineDouble` registers them (see the module docstring)."""

    def sagemaker_routes(self, *, runtime_lora_updating: bool) -> list[web.RouteDef]:
        routes = [
            web.get("/ping", self._ping),
            web.post("/ping", self._ping),
            web.post("/invocations", self._invocations),
        ]
        if runtime_lora_updating:
            routes += [
                web.post("/adapters", self._register),
                web.delete("/adapters/{name}", self._unregister),
            ]
        return routes

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.faults.unhealthy else 200)

    async def _register(self, request: web.Request) -> web.Response:
        parsed = await parse_body(request, RegisterRequest, require_json_type=True)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, RegisterRequest)
        result = await self._add(parsed.name, parsed.src, load_inplace=parsed.load_inplace)
        if isinstance(result, web.Response):
            return result
        return plain_response(f"Adapter {parsed.name} registered")

    async def _unregister(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self._remove(name)
        if isinstance(result, web.Response):
            return result
        return plain_response(f"Adapter {name} unregistered")

    async def _invocations(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            return error_response(400, f"JSON decode error: {exc}", "Bad Request")
        # aiohttp keeps the body read above, so the handler can read it again.
        if isinstance(body, dict) and "messages" in body:
            return await self._chat(request)
        return await self._completions(request)
