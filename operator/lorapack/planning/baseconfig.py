"""A pool's base model as its Hugging Face `config.json` describes it: the sizes LoRA tensors
must fit.

The pool loop reads the base model's config.json from S3 once per generation
(handlers.pools, `PoolState.base_config`); the adapter pre-flight (`reconcilers.validation`)
parses it here and hands the `BaseConfig` to `planning.tensors`, which checks every LoRA tensor's
layer index and in/out features against it. Pure: bytes in, a value and Issues out.

Covers the decoder-only layouts vLLM serves LoRA on: llama, mistral, qwen2/qwen3, gemma/gemma2
(separate q/k/v/o and gate/up/down projections, grouped-query attention through
num_key_value_heads, an explicit head_dim where hidden_size / heads is not it) and phi3 (packed
qkv_proj and gate_up_proj). Multimodal configs keep the language model under `text_config`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorapack.api import conditions
from lorapack.issues import Issue

__all__ = ["MAX_BASE_CONFIG_BYTES", "BaseConfig", "base_config_of", "parse_base_config"]

#: A config.json is a few KiB; anything far larger is not one.
MAX_BASE_CONFIG_BYTES = 1 << 20

_SEPARATE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PACKED = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
# model_type values whose checkpoints pack q/k/v and gate/up into one linear each.
_PACKED_TYPES = frozenset({"phi3", "phimoe"})


@dataclass(frozen=True, slots=True)
class BaseConfig:
    """The sizes of a decoder-only transformer that LoRA tensors must match."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int

    @property
    def linear_modules(self) -> tuple[str, ...]:
        """Names of the adaptable linear modules of one decoder layer."""
        return _PACKED if self.model_type in _PACKED_TYPES else _SEPARATE

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module name a LoRA tensor may adapt (linear ones, then embeddings)."""
        return (*self.linear_modules, "embed_tokens", "lm_head")

    def features(self, module: str) -> tuple[int, int] | None:
        """(in_features, out_features) of a module, None when the model has no such module.

        Embeddings map vocab -> hidden (LoRA A [r, vocab], B [hidden, r]); lm_head is a
        linear hidden -> vocab. q has heads x head_dim outputs, k and v kv_heads x head_dim
        (grouped-query attention), o takes heads x head_dim back to hidden."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        table: dict[str, tuple[int, int]] = {
            "o_proj": (q, h),
            "down_proj": (i, h),
            "embed_tokens": (self.vocab_size, h),
            "lm_head": (h, self.vocab_size),
        }
        if self.model_type in _PACKED_TYPES:
            table |= {"qkv_proj": (h, q + 2 * kv), "gate_up_proj": (h, 2 * i)}
        else:
            table |= {
                "q_proj": (h, q),
                "k_proj": (h, kv),
                "v_proj": (h, kv),
                "gate_proj": (h, i),
                "up_proj": (h, i),
            }
        return table.get(module)

    def describe(self) -> str:
        """A short summary for messages, e.g. "llama (hidden 4096, 32 layers)"."""
        return f"{self.model_type} (hidden {self.hidden_size}, {self.num_hidden_layers} layers)"


def _invalid(message: str) -> Issue:
    return Issue(
        conditions.INVALID_BASE_CONFIG,
        f"the base model's config.json {message}: stage the model's own config.json from "
        "Hugging Face (lorapack model push) next to its weights",
    )


def _int_field(
    config: Mapping[str, Any], name: str, problems: list[Issue], default: int | None = None
) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(_invalid(f"has {name} {value!r}, which is not a positive integer"))
        return 0
    return value


def _load(raw: bytes) -> tuple[Mapping[str, Any] | None, Issue | None]:
    if len(raw) > MAX_BASE_CONFIG_BYTES:
        return None, _invalid(f"is {len(raw)} bytes, more than {MAX_BASE_CONFIG_BYTES}")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as err:
        why = "nests too deeply" if isinstance(err, RecursionError) else f"is not JSON ({err})"
        return None, _invalid(why)
    if not isinstance(parsed, dict):
        return None, _invalid(f"is a JSON {type(parsed).__name__}, not an object")
    text = parsed.get("text_config")
    if "hidden_size" not in parsed and isinstance(text, dict):
        parsed = {"model_type": parsed.get("model_type"), **text}
    return parsed, None


def parse_base_config(raw: bytes) -> tuple[BaseConfig | None, list[Issue]]:
    """The sizes in a Hugging Face config.json, or None with the Issues saying why not."""
    config, problem = _load(raw)
    if config is None:
        return None, [problem] if problem is not None else []
    problems: list[Issue] = []
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        problems.append(_invalid(f"has model_type {model_type!r}, not a model family name"))
        model_type = ""
    hidden = _int_field(config, "hidden_size", problems)
    heads = _int_field(config, "num_attention_heads", problems)
    values = {
        "intermediate_size": _int_field(config, "intermediate_size", problems),
        "num_hidden_layers": _int_field(config, "num_hidden_layers", problems),
        "num_key_value_heads": _int_field(config, "num_key_value_heads", problems, heads),
        "vocab_size": _int_field(config, "vocab_size", problems),
    }
    head_dim_default = hidden // heads if heads and hidden % heads == 0 else None
    raw_head_dim = config.get("head_dim")
    head_dim = _int_field(
        config if raw_head_dim is not None else {}, "head_dim", problems, head_dim_default
    )
    kv = values["num_key_value_heads"]
    if heads and kv and heads % kv:
        problems.append(
            _invalid(f"has num_attention_heads {heads} not a multiple of num_key_value_heads {kv}")
        )
    if problems:
        return None, problems
    return BaseConfig(
        model_type=model_type,
        hidden_size=hidden,
        num_attention_heads=heads,
        head_dim=head_dim,
        **values,
    ), []


@functools.lru_cache(maxsize=256)
def base_config_of(raw: bytes) -> BaseConfig | None:
    """parse_base_config's value alone, memoised: adapter passes ask for it every time, while
    each pool's config.json changes once per generation at most."""
    return parse_base_config(raw)[0]
