"""Completion bodies of the double: deterministic text naming what served the request.

"[adapter=<name> digest=sha256:<hex>] words..." or "[base=<served name>] words...", where the
digest is the sha256 of the weight file read at load, so tests can prove routing; the fields
and null fields are those vLLM 0.32.0 sends. Called by the inference routes (`routes`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from lorapack_testworld.enginedouble.state import Registered

__all__ = ["completion_body"]

# Words for deterministic completion text (one "token" each).
_WORDS = (  # noqa: SIM905 (one readable line beats 26)
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def completion_body(
    served_name: str,
    model: str | None,
    adapter: Registered | None,
    prompt: str,
    max_tokens: int,
    chat: bool,
) -> dict[str, Any]:
    """The body of a completion (or chat completion) answered by `adapter` or, if None, by
    the base model served as `served_name`."""
    if adapter is not None:
        tag = f"[adapter={adapter.name} digest={adapter.files.digest}]"
        seed = f"{adapter.files.digest}|{prompt}"
    else:
        tag = f"[base={served_name}]"
        seed = f"base|{served_name}|{prompt}"
    words = _words(seed, max(max_tokens, 0))
    text = f"{tag} {' '.join(words)}"
    now = int(time.time())
    usage = {
        "prompt_tokens": len(prompt.split()),
        "total_tokens": len(prompt.split()) + len(words),
        "completion_tokens": len(words),
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    # Field order and null fields as vLLM 0.32.0 sends them.
    head = {"created": now, "model": model or served_name}
    tail = {"service_tier": None, "system_fingerprint": "vllm-0.32.0-enginedouble"}
    if chat:
        message = {"role": "assistant", "content": text, "refusal": None}
        message |= {"annotations": None, "audio": None, "function_call": None}
        choice = {"index": 0, "message": message | {"reasoning": None}, "logprobs": None}
        choice |= {"finish_reason": "length", "stop_reason": None, "token_ids": None}
        return {
            "id": f"chatcmpl-{secrets.token_hex(8)}",
            "object": "chat.completion",
            **head,
            "choices": [choice | {"routed_experts": None}],
            **tail,
            "usage": usage,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
    choice |= {"stop_reason": None, "token_ids": None, "prompt_logprobs": None}
    return {
        "id": f"cmpl-{secrets.token_hex(8)}",
        "object": "text_completion",
        **head,
        "choices": [choice | {"prompt_token_ids": None, "routed_experts": None}],
        **tail,
        "usage": usage,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def _words(seed: str, count: int) -> list[str]:
    words: list[str] = []
    block = hashlib.sha256(seed.encode()).digest()
    while len(words) < count:
        words.extend(_WORDS[b % len(_WORDS)] for b in block)
        block = hashlib.sha256(block).digest()
    return words[:count]
