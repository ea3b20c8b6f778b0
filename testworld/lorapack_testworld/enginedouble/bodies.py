"""Request bodies of the double's /v1 routes and FastAPI's validation errors for bad ones.

The pydantic models of the load, unload, completion and chat requests, and `parse_body`, which
answers a body that is not JSON, not of the required media type or not valid for the model
the way vLLM's FastAPI server does (400, type "Bad Request", one line per error). Called by
the routes (`routes`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pydantic
from aiohttp import web

from lorapack_testworld.enginedouble.messages import error_response

__all__ = [
    "Body",
    "ChatRequest",
    "CompletionRequest",
    "LoadRequest",
    "UnloadRequest",
    "parse_body",
]


class Body(pydantic.BaseModel):
    """A request body; unknown fields are allowed, as vLLM's request models allow them."""

    model_config = pydantic.ConfigDict(extra="allow")


class LoadRequest(Body):
    lora_name: str
    lora_path: str
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class UnloadRequest(Body):
    lora_name: str
    lora_int_id: int | None = None


class CompletionRequest(Body):
    prompt: str | list[str] | list[int]
    model: str | None = None
    max_tokens: int | None = 16


class ChatRequest(Body):
    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


def _summarize(value: object) -> object:
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    return value if isinstance(value, str) else str(value)


def _validation_error(errors: Sequence[dict[str, Any] | str]) -> web.Response:
    """FastAPI's RequestValidationError as vLLM renders it: 400, type "Bad Request", each error
    on its own line, `param` taken from the first error's location."""
    lines: list[str] = []
    for err in errors:
        if isinstance(err, dict):
            item = dict(err)
            if "input" in item:
                item["input"] = _summarize(item["input"])
            lines.append(str(item))
        else:
            lines.append(err)
    first = errors[0] if errors else None
    param = first.get("loc") if isinstance(first, dict) else None
    label = "error" if len(errors) == 1 else "errors"
    message = f"{len(errors)} validation {label}:\n" + "".join(f"  {line}\n" for line in lines)
    return error_response(400, message.rstrip(), "Bad Request", param)


async def parse_body(
    request: web.Request, model: type[Body], *, require_json_type: bool
) -> Body | web.Response:
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if require_json_type and media_type != "application/json":
        return _validation_error(["Unsupported Media Type: Only 'application/json' is allowed"])
    text = await request.text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _validation_error(
            [
                {
                    "type": "json_invalid",
                    "loc": f"body.{exc.pos}",
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        )
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        return _validation_error(
            [
                {**e, "loc": ".".join(["body", *(str(p) for p in e["loc"])])}
                for e in exc.errors(include_url=False)
            ]
        )
