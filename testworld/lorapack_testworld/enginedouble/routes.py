"""vLLM's OpenAI-server routes of the double: /v1/models, adapter load and unload, and
completions and chat completions.

`OpenAIRoutes` answers them with the status codes, error types and messages vLLM 0.32.0 sends,
including the "Worker failed with error" wrapping of the CPU engine's multiprocess executor.
It is the base class of `EngineDouble` (`app`), which registers these handlers, loads the
static --lora-modules through `_add`, and sets the attributes declared here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from aiohttp import web

from lorapack_testworld.enginedouble.adapters import AdapterInvalid, AdapterNotFound
from lorapack_testworld.enginedouble.bodies import (
    ChatRequest,
    CompletionRequest,
    LoadRequest,
    UnloadRequest,
    parse_body,
)
from lorapack_testworld.enginedouble.completions import completion_body
from lorapack_testworld.enginedouble.messages import (
    ENGINE_DEAD_MESSAGE,
    error_response,
    json_response,
    plain_response,
)
from lorapack_testworld.enginedouble.state import EngineDied, EngineState, InFlight, Registered

__all__ = ["OpenAIRoutes"]


class OpenAIRoutes(EngineState):
    """The /v1 handlers; see the module docstring."""

    # Configuration, set by EngineDouble.__init__.
    model: str
    max_model_len: int
    wrap_worker_errors: bool

    # -- HTTP: models and adapter management --------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        now = int(time.time())

        def card(id_: str, root: str, parent: str | None, max_len: int | None) -> dict[str, Any]:
            return {
                "id": id_,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": max_len,
                "permission": [
                    {
                        "id": f"modelperm-{secrets.token_hex(8)}",
                        "object": "model_permission",
                        "created": now,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }

        data = [card(name, self.model, None, self.max_model_len) for name in self.served_names]
        data += [
            card(reg.name, reg.path, reg.base_model_name or self.served_names[0], None)
            for reg in self._registry.values()
        ]
        return json_response({"object": "list", "data": data})

    async def _load(self, request: web.Request) -> web.Response:
        parsed = await parse_body(request, LoadRequest, require_json_type=True)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, LoadRequest)
        result = await self._add(
            parsed.lora_name, parsed.lora_path, load_inplace=parsed.load_inplace
        )
        return result if isinstance(result, web.Response) else plain_response(result)

    async def _add(
        self, name: str, path: str, *, load_inplace: bool, base_model_name: str | None = None
    ) -> web.Response | str:
        """OpenAIServingModels.load_lora_adapter: frontend checks, then the engine's add_lora."""
        async with self._name_locks.setdefault(name, asyncio.Lock()):
            if not name or not path:
                return error_response(
                    400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
                )
            if name in self.served_names:
                return error_response(
                    400,
                    f"The lora adapter '{name}' conflicts with a served base model.",
                    "InvalidUserInput",
                )
            if not load_inplace and name in self._registry:
                return error_response(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            previous = self._registry.get(name)
            int_id = previous.int_id if previous else self._next_id()
            if self.faults.load_delay_s > 0:
                await asyncio.sleep(self.faults.load_delay_s)
            try:
                if name in self.faults.refuse_names:
                    raise AdapterInvalid(
                        f"While loading {path}, the engine refused adapter {name} (a load "
                        "failure injected into the lorapack engine double)"
                    )
                files = self._engine_add_lora(path, int_id)
            except AdapterNotFound:
                return error_response(
                    404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
                )
            except AdapterInvalid as exc:
                return error_response(500, self._add_lora_failed(str(exc)), "InternalServerError")
            if base_model_name not in self.served_names:
                base_model_name = None
            self._registry[name] = Registered(
                name, int_id, path, base_model_name, files, load_inplace=load_inplace
            )
            return f"Success: LoRA adapter '{name}' added successfully."

    def _add_lora_failed(self, worker_message: str) -> str:
        if self.wrap_worker_errors:
            worker_message = (
                f"Worker failed with error '{worker_message}', please check the stack trace "
                "above for the root cause"
            )
        return f"Call to add_lora method failed: {worker_message}"

    async def _unload(self, request: web.Request) -> web.Response:
        parsed = await parse_body(request, UnloadRequest, require_json_type=True)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, UnloadRequest)
        result = await self._remove(parsed.lora_name)
        return result if isinstance(result, web.Response) else plain_response(result)

    async def _remove(self, name: str) -> web.Response | str:
        """OpenAIServingModels.unload_lora_adapter (also behind the SageMaker route)."""
        async with self._name_locks.setdefault(name, asyncio.Lock()):
            if not name:
                return error_response(
                    400,
                    "'lora_name' needs to be provided to unload a LoRA adapter.",
                    "InvalidUserInput",
                )
            if name not in self._registry:
                return error_response(
                    404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"
                )
            if self.faults.ignore_next_unloads > 0:
                self.faults.ignore_next_unloads -= 1
                return f"Success: LoRA adapter '{name}' removed successfully."
            # Like vLLM 0.32/0.33: only the name goes; the weights stay cached until evicted.
            del self._registry[name]
            return f"Success: LoRA adapter '{name}' removed successfully."

    # -- HTTP: inference ----------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        parsed = await parse_body(request, CompletionRequest, require_json_type=False)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, CompletionRequest)
        prompt = parsed.prompt if isinstance(parsed.prompt, str) else json.dumps(parsed.prompt)
        max_tokens = parsed.max_tokens if parsed.max_tokens is not None else 16
        return await self._generate(parsed.model, prompt, max_tokens, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        parsed = await parse_body(request, ChatRequest, require_json_type=False)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, ChatRequest)
        prompt = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in parsed.messages)
        max_tokens = parsed.max_completion_tokens or parsed.max_tokens or 16
        return await self._generate(parsed.model, prompt, max_tokens, chat=True)

    async def _generate(
        self, model: str | None, prompt: str, max_tokens: int, *, chat: bool
    ) -> web.Response:
        adapter: Registered | None = None
        if model and model not in self.served_names:
            adapter = self._registry.get(model)
            if adapter is None:
                aliases = ", ".join(self.served_names)
                return error_response(
                    404,
                    f"The model `{model}` does not exist. Valid aliases: {aliases}.",
                    "NotFoundError",
                    "model",
                )
        self._request_counter += 1
        request_id = self._request_counter
        flight = InFlight(
            adapter.name if adapter else None,
            adapter.int_id if adapter else None,
            asyncio.current_task(),
        )
        self._inflight[request_id] = flight
        try:
            self._publish()
            if adapter is not None:
                await self._admit(flight, adapter)
            flight.running = True
            self._publish()
            if self.faults.completion_delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._death.wait(), self.faults.completion_delay_s)
            if self.dead:
                # Requests in flight when the EngineCore dies fail with it.
                raise EngineDied
        except EngineDied:
            return error_response(500, ENGINE_DEAD_MESSAGE, "InternalServerError")
        finally:
            self._inflight.pop(request_id, None)
            async with self._scheduler:
                self._scheduler.notify_all()
            self._publish()
        body = completion_body(self.served_names[0], model, adapter, prompt, max_tokens, chat)
        return json_response(body)
