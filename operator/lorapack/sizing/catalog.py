"""The model and GPU catalog: architecture shapes and GPU memory figures that sizing needs.

Called by `sizing.memory` (GPU-memory estimates), `sizing.adapters` and placement (adapter
demand), and `lorapack size` (`--model`, `--gpu`, `--config`, `--list`). Everything is pure
data and lookups except `load_config_json`, the one function that reads a file. The GPUs live in
`sizing.gpus` (re-exported here).

Sources: model shapes are each model's published Hugging Face config.json (cross-checked by
recomputing the published parameter counts: tests/unit/test_sizing_catalog.py), defaults of
absent fields those of the transformers config class
(`src/transformers/models/<type>/configuration_<type>.py`), and which architectures get
embedding LoRA comes from vLLM 0.33.0's model classes (`vllm/model_executor/models/<type>.py`:
a class with `embedding_modules` gets embed_tokens/lm_head LoRA buffers). Fields that need more
than that are explained where they are defined.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapack.errors import InvalidSpec
from lorapack.sizing.gpus import GIB, GPUS, GpuType, custom_gpu, lookup_gpu

__all__ = [
    "GIB",
    "GPUS",
    "MODELS",
    "SUPPORTED_ARCHITECTURES",
    "GpuType",
    "ModelArch",
    "custom_gpu",
    "load_config_json",
    "lookup_gpu",
    "lookup_model",
    "model_from_config",
    "param_count",
]


@dataclass(frozen=True, slots=True)
class ModelArch:
    """The shape of a dense decoder-only transformer, as its config.json describes it."""

    key: str
    """Catalog key, e.g. llama-3-8b (lower case)."""
    hf_names: tuple[str, ...]
    """Hugging Face repository names with exactly this architecture."""
    architecture: str
    """transformers/vLLM model class, e.g. LlamaForCausalLM."""
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    embedding_lora: bool
    """vLLM wraps embed_tokens and lm_head with LoRA (the class declares embedding_modules)."""
    max_position_embeddings: int
    sliding_window: int | None = None
    """Sliding-window attention width (Gemma-2: every other layer); None means full attention."""
    attention_bias: bool = False
    """q/k/v projections carry a bias (Qwen2 always does)."""
    mlp_bias: bool = False
    """gate/up/down projections carry a bias (Llama's mlp_bias)."""
    norms_per_layer: int = 2
    """RMSNorm weights per decoder layer (Gemma-2 has four)."""
    dtype: str = "bfloat16"
    """torch_dtype the weights are published in."""
    display_name: str = ""

    @property
    def name(self) -> str:
        """Human name for tables and messages."""
        return self.display_name or self.key

    @property
    def q_out(self) -> int:
        """Output features of q_proj (heads x head_dim; not always hidden_size, e.g. Gemma-2)."""
        return self.num_heads * self.head_dim

    @property
    def kv_out(self) -> int:
        """Output features of k_proj and of v_proj."""
        return self.num_kv_heads * self.head_dim


def _llama(
    key: str,
    display: str,
    hf_names: tuple[str, ...],
    *,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_pos: int,
) -> ModelArch:
    # Llama 3 / 3.1 share: 8 KV heads, head_dim 128, vocabulary 128256, untied embeddings
    # (config.json). LlamaForCausalLM declares embedding_modules in vLLM 0.33.0, so it gets
    # embed_tokens/lm_head LoRA buffers.
    return ModelArch(
        key=key,
        hf_names=hf_names,
        architecture="LlamaForCausalLM",
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=intermediate,
        vocab_size=128256,
        tie_word_embeddings=False,
        embedding_lora=True,
        max_position_embeddings=max_pos,
        display_name=display,
    )


def _qwen25(key: str, display: str, hf_name: str, **shape: int) -> ModelArch:
    # Qwen2ForCausalLM: q/k/v biases always on, no embedding LoRA in vLLM 0.33.0,
    # vocabulary 152064, untied. max_position_embeddings 131072 is the base models'
    # config.json value (the -Instruct configs say 32768, which is
    # why the Instruct names are not aliases here). Their sliding_window is ignored because
    # use_sliding_window is false.
    return ModelArch(
        key=key,
        hf_names=(hf_name,),
        architecture="Qwen2ForCausalLM",
        hidden_size=shape["hidden"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        num_kv_heads=shape["kv_heads"],
        head_dim=128,
        intermediate_size=shape["intermediate"],
        vocab_size=152064,
        tie_word_embeddings=False,
        embedding_lora=False,
        max_position_embeddings=131072,
        attention_bias=True,
        display_name=display,
    )


_MODEL_LIST = (
    # config.json: max_position_embeddings 8192 (Llama 3) / 131072 (Llama 3.1, rope scaling).
    _llama(
        "llama-3-8b",
        "Llama-3-8B",
        ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"),
        hidden=4096,
        layers=32,
        heads=32,
        intermediate=14336,
        max_pos=8192,
    ),
    _llama(
        "llama-3.1-8b",
        "Llama-3.1-8B",
        (
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ),
        hidden=4096,
        layers=32,
        heads=32,
        intermediate=14336,
        max_pos=131072,
    ),
    _llama(
        "llama-3-70b",
        "Llama-3-70B",
        ("meta-llama/Meta-Llama-3-70B", "meta-llama/Meta-Llama-3-70B-Instruct"),
        hidden=8192,
        layers=80,
        heads=64,
        intermediate=28672,
        max_pos=8192,
    ),
    # Llama-3.1-70B keeps Llama-3-70B's shapes and, like
    # Llama-3.1-8B, adds llama3 rope scaling with max_position_embeddings 131072.
    _llama(
        "llama-3.1-70b",
        "Llama-3.1-70B",
        (
            "meta-llama/Llama-3.1-70B",
            "meta-llama/Llama-3.1-70B-Instruct",
            "meta-llama/Meta-Llama-3.1-70B",
            "meta-llama/Meta-Llama-3.1-70B-Instruct",
        ),
        hidden=8192,
        layers=80,
        heads=64,
        intermediate=28672,
        max_pos=131072,
    ),
    _qwen25(
        "qwen2.5-7b",
        "Qwen2.5-7B",
        "Qwen/Qwen2.5-7B",
        hidden=3584,
        layers=28,
        heads=28,
        kv_heads=4,
        intermediate=18944,
    ),
    _qwen25(
        "qwen2.5-14b",
        "Qwen2.5-14B",
        "Qwen/Qwen2.5-14B",
        hidden=5120,
        layers=48,
        heads=40,
        kv_heads=8,
        intermediate=13824,
    ),
    _qwen25(
        "qwen2.5-72b",
        "Qwen2.5-72B",
        "Qwen/Qwen2.5-72B",
        hidden=8192,
        layers=80,
        heads=64,
        kv_heads=8,
        intermediate=29568,
    ),
    # MistralForCausalLM explicitly disables embedding LoRA in vLLM 0.33.0;
    # v0.3's config.json has sliding_window null and max_position_embeddings 32768.
    ModelArch(
        key="mistral-7b-v0.3",
        hf_names=("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
        architecture="MistralForCausalLM",
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=32768,
        tie_word_embeddings=False,
        embedding_lora=False,
        max_position_embeddings=32768,
        display_name="Mistral-7B-v0.3",
    ),
    # config.json: head_dim 256 is explicit (q_out 4096 != hidden 3584); tie_word_embeddings is
    # absent from config.json, so Gemma2Config's default (true) applies. Four norms per layer,
    # sliding window 4096 on every other layer, max_position_embeddings 8192.
    ModelArch(
        key="gemma-2-9b",
        hf_names=("google/gemma-2-9b", "google/gemma-2-9b-it"),
        architecture="Gemma2ForCausalLM",
        hidden_size=3584,
        num_layers=42,
        num_heads=16,
        num_kv_heads=8,
        head_dim=256,
        intermediate_size=14336,
        vocab_size=256000,
        tie_word_embeddings=True,
        embedding_lora=False,
        max_position_embeddings=8192,
        sliding_window=4096,
        norms_per_layer=4,
        display_name="Gemma-2-9B",
    ),
)

MODELS: Mapping[str, ModelArch] = {m.key: m for m in _MODEL_LIST}


# Architectures whose modules the sizing formulas know (separate q/k/v/o and gate/up/down
# projections, dense MLP). Value: (embedding LoRA in vLLM 0.33.0, tie_word_embeddings default
# of the transformers config class, max_position_embeddings default, norms per layer).
SUPPORTED_ARCHITECTURES: Mapping[str, tuple[bool, bool, int, int]] = {
    "LlamaForCausalLM": (True, False, 2048, 2),
    "MistralForCausalLM": (False, False, 131072, 2),
    "Qwen2ForCausalLM": (False, False, 32768, 2),
    "Gemma2ForCausalLM": (False, True, 8192, 4),
}
_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
}


def _model_index() -> dict[str, ModelArch]:
    index: dict[str, ModelArch] = {}
    for model in _MODEL_LIST:
        for name in (model.key, model.display_name, *model.hf_names):
            index[name.lower()] = model
            index[name.rsplit("/", 1)[-1].lower()] = model
    return index


_MODEL_INDEX = _model_index()


def lookup_model(name: str) -> ModelArch:
    """The catalog model for a key (llama-3-8b) or Hugging Face name, case-insensitive."""
    wanted = name.strip().lower()
    model = _MODEL_INDEX.get(wanted) or _MODEL_INDEX.get(wanted.rstrip("/").rsplit("/", 1)[-1])
    if model is None:
        raise InvalidSpec(
            f"unknown model {name!r}: use one of {', '.join(MODELS)} (or a Hugging Face name "
            "such as meta-llama/Meta-Llama-3-8B), or describe the model with its config.json "
            "(`lorapack size --config path/to/config.json`)",
            reason="UnknownModel",
        )
    return model


def param_count(arch: ModelArch) -> int:
    """Total parameters, as the checkpoint stores them (tied embeddings counted once)."""
    h, i = arch.hidden_size, arch.intermediate_size
    attention = 2 * h * arch.q_out + 2 * h * arch.kv_out
    if arch.attention_bias:
        attention += arch.q_out + 2 * arch.kv_out
    mlp = 3 * h * i + (2 * i + h if arch.mlp_bias else 0)
    layer = attention + mlp + arch.norms_per_layer * h
    embeddings = arch.vocab_size * h * (1 if arch.tie_word_embeddings else 2)
    return embeddings + arch.num_layers * layer + h  # + the final norm


def _positive_int(config: Mapping[str, Any], field: str, default: int | None = None) -> int:
    value = config.get(field)
    if value is None:
        if default is not None:
            return default
        raise InvalidSpec(
            f"config.json field {field!r} is missing: it is needed to size the model; use the "
            "config.json published with the model",
            reason="InvalidModelConfig",
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSpec(
            f"config.json field {field!r} is {value!r}: it must be a positive integer",
            reason="InvalidModelConfig",
        )
    return value


def _architecture(config: Mapping[str, Any]) -> str:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        name = architectures[0]
    else:
        name = _MODEL_TYPES.get(str(config.get("model_type", "")), "")
    if name not in SUPPORTED_ARCHITECTURES:
        shown = name or f"model_type {config.get('model_type')!r}"
        raise InvalidSpec(
            f"config.json architecture {shown} is not one lorapack can size: supported "
            f"architectures are {', '.join(SUPPORTED_ARCHITECTURES)}",
            reason="InvalidModelConfig",
        )
    return name


def model_from_config(config: Mapping[str, Any], key: str) -> ModelArch:
    """A ModelArch from a Hugging Face config.json mapping, named `key`.

    head_dim defaults to hidden_size / num_attention_heads; tie_word_embeddings and
    max_position_embeddings default as the transformers config class of the architecture does.
    """
    arch = _architecture(config)
    embedding_lora, tie_default, max_pos_default, norms = SUPPORTED_ARCHITECTURES[arch]
    hidden = _positive_int(config, "hidden_size")
    heads = _positive_int(config, "num_attention_heads")
    if config.get("head_dim") is None and hidden % heads:
        raise InvalidSpec(
            f"config.json hidden_size {hidden} is not divisible by num_attention_heads {heads}: "
            "set head_dim explicitly",
            reason="InvalidModelConfig",
        )
    tie = config.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise InvalidSpec(
            f"config.json field 'tie_word_embeddings' is {tie!r}: it must be true or false",
            reason="InvalidModelConfig",
        )
    # Qwen2 configs carry a sliding_window that is off unless use_sliding_window is true.
    window = config.get("sliding_window")
    if arch == "Qwen2ForCausalLM" and not config.get("use_sliding_window", False):
        window = None
    if arch == "Gemma2ForCausalLM" and "sliding_window" not in config:
        window = 4096
    name = config.get("_name_or_path")
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    return ModelArch(
        key=key.lower(),
        hf_names=(name,) if isinstance(name, str) and name else (),
        architecture=arch,
        hidden_size=hidden,
        num_layers=_positive_int(config, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=_positive_int(config, "num_key_value_heads", heads),
        head_dim=_positive_int(config, "head_dim", hidden // heads),
        intermediate_size=_positive_int(config, "intermediate_size"),
        vocab_size=_positive_int(config, "vocab_size"),
        tie_word_embeddings=tie,
        embedding_lora=embedding_lora,
        max_position_embeddings=_positive_int(config, "max_position_embeddings", max_pos_default),
        sliding_window=window if isinstance(window, int) and window > 0 else None,
        attention_bias=arch == "Qwen2ForCausalLM" or bool(config.get("attention_bias", False)),
        mlp_bias=bool(config.get("mlp_bias", False)),
        norms_per_layer=norms,
        dtype=str(dtype),
        display_name=key,
    )


def load_config_json(path: str | Path, key: str | None = None) -> ModelArch:
    """Read a config.json (or a model folder holding one) into a ModelArch.

    The only file I/O of the sizing package. The key defaults to the folder's name.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidSpec(
            f"--config {str(path)!r}: cannot read {file}: {err.strerror or err}; pass the "
            "model's config.json or the folder holding it",
            reason="InvalidModelConfig",
        ) from err
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidSpec(
            f"--config {str(file)!r} is not valid JSON ({err.msg} at line {err.lineno}): pass "
            "the model's config.json",
            reason="InvalidModelConfig",
        ) from err
    if not isinstance(config, dict):
        raise InvalidSpec(
            f"--config {str(file)!r} holds a JSON {type(config).__name__}, not an object: pass "
            "the model's config.json",
            reason="InvalidModelConfig",
        )
    name = key or file.resolve().parent.name or "custom"
    return model_from_config(config, name)
