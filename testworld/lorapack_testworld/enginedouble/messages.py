"""Error texts and response bodies of the engine double, exactly as vLLM 0.32.0 sends them.

Holds the redaction of paths and tracebacks in error messages (`sanitize_message`), the
dead-engine message, and the JSON, error and plain-text response builders. Called by every
route of the double (`routes`, `app`) and by the request-body parser (`bodies`).
"""

from __future__ import annotations

import json
import re

from aiohttp import web

__all__ = [
    "ENGINE_DEAD_MESSAGE",
    "error_response",
    "json_response",
    "plain_response",
    "sanitize_message",
]

ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."

_PATH_UNDER_ROOTS = re.compile(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+")
_PATH_WITH_EXT = re.compile(r"(?:/[\w\-]+)+/[\w\-]+\.\w+")
_TRACEBACK_LINE = re.compile(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?')
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def sanitize_message(message: str) -> str:
    """Redact error text the way vLLM's error responses do (vllm-lora-contract.md 3.3)."""
    message = _ADDRESS.sub(">", message)
    message = _TRACEBACK_LINE.sub("", message)
    message = _PATH_UNDER_ROOTS.sub("<path>", message)
    message = _PATH_WITH_EXT.sub("<path>", message)
    return message.strip()


def json_response(body: object, status: int = 200) -> web.Response:
    # Starlette's JSONResponse: compact separators, UTF-8 kept as is.
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def error_response(
    status: int, message: str, err_type: str, param: str | None = None
) -> web.Response:
    body = {
        "error": {
            "message": sanitize_message(message),
            "type": err_type,
            "param": param,
            "code": status,
        }
    }
    return json_response(body, status)


class _UntypedResponse(web.Response):
    """A body with no Content-Type header, which aiohttp would otherwise default."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Content-Type", None)


def plain_response(text: str) -> web.Response:
    # vLLM 0.32.0 returns Response(content=str) with no media type: the sentence as bytes and
    # no Content-Type at all (section 11.4 of the reference calls it a JSON string literal; the
    # contract suite showed otherwise, and the real engine wins).
    return _UntypedResponse(body=text.encode())
