"""Adapter folder validation like vLLM's PEFTHelper and LoRAModel loader, without torch.

Reads an adapter folder in the order vLLM's worker does and raises on the first failure:
adapter_config.json required fields, rank (with rank_pattern) against --max-lora-rank, DoRA,
bias, lora_bias, modules_to_save and other unsupported PEFT features, weight-file priority
safetensors > bin > pt, "doesn't contain tensors", modules outside the Llama family's LoRA set,
and shapes that do not fit the base model (when --model is a folder with a config.json).
Called by the engine state (`state`: a load, and a re-read after a CPU-cache eviction) and by
`app` (the base model's dimensions at construction).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "LLAMA_LORA_MODULES",
    "AdapterFiles",
    "AdapterInvalid",
    "AdapterNotFound",
    "ModelDims",
    "max_position_embeddings",
    "model_dims",
    "read_adapter",
]

#: LoRA-capable modules of vLLM's LlamaForCausalLM (the set its loader error prints).
LLAMA_LORA_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    | {"embed_tokens", "lm_head"}
)
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
_REQUIRED_CONFIG_FIELDS = ("r", "lora_alpha", "target_modules")
_SUPPORTED_STR_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


class AdapterNotFound(Exception):
    """adapter_config.json (or the folder) is missing: vLLM's FileNotFoundError -> 404."""


class AdapterInvalid(Exception):
    """Any other load failure: the worker's message, reported as 500."""


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    intermediate: int
    q_out: int
    kv_out: int

    def in_out(self, module: str) -> tuple[int, int] | None:
        table = {
            "q_proj": (self.hidden, self.q_out),
            "k_proj": (self.hidden, self.kv_out),
            "v_proj": (self.hidden, self.kv_out),
            "o_proj": (self.q_out, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        return table.get(module)


def model_dims(model: str) -> ModelDims | None:
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    return ModelDims(
        hidden, int(config["intermediate_size"]), heads * head_dim, kv_heads * head_dim
    )


def max_position_embeddings(model: str) -> int | None:
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text()).get("max_position_embeddings")
    return int(value) if value else None


@dataclass(frozen=True)
class AdapterFiles:
    """What a successful load read from an adapter folder."""

    path: str
    rank: int
    weight_file: str
    digest: str


def read_adapter(path: str, *, max_lora_rank: int, dims: ModelDims | None) -> AdapterFiles:
    """Validate an adapter folder in the order vLLM's worker does; raise on the first failure."""
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        # vLLM resolves a relative path only if it exists; otherwise it is a hub id, which
        # HF_HUB_OFFLINE turns into a FileNotFoundError as well.
        folder = folder.resolve()
    config_path = folder / "adapter_config.json"
    try:
        raw = config_path.read_text()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise AdapterNotFound(path) from exc
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AdapterInvalid(str(exc)) from exc
    rank = _validate_config(config, max_lora_rank)
    tensors = _read_tensor_shapes(folder)
    weight_file = next(folder / name for name in _WEIGHT_FILES if (folder / name).is_file())
    _check_modules(folder, tensors, config, dims)
    digest = "sha256:" + hashlib.sha256(weight_file.read_bytes()).hexdigest()
    return AdapterFiles(path=path, rank=rank, weight_file=weight_file.name, digest=digest)


def _validate_config(config: dict[str, Any], max_lora_rank: int) -> int:
    """PEFTHelper.from_dict + validate_legal; returns the largest rank."""
    missing = {name for name in _REQUIRED_CONFIG_FIELDS if name not in config}
    if missing:
        raise AdapterInvalid(f"Missing required configuration fields: {missing}")
    r = config["r"]
    if not isinstance(r, int) or r <= 0:
        raise AdapterInvalid(f"LoRA rank `r` must be a positive integer, got {r}.")
    rank_pattern: dict[str, Any] = config.get("rank_pattern") or {}
    for key, value in rank_pattern.items():
        if not isinstance(value, int) or value <= 0:
            raise AdapterInvalid(
                f"LoRA rank for `{key}` in `rank_pattern` must be a positive integer, got {value}."
            )
    problems: list[str] = []
    modules_to_save = config.get("modules_to_save") or []
    unsupported = [m for m in modules_to_save if m not in ("classifier", "score")]
    if unsupported:
        problems.append(
            "vLLM only supports modules_to_save being either None or "
            '["classifier", "score"] for classification models. '
            f"Unsupported modules_to_save: {unsupported}"
        )
    if config.get("use_dora"):
        problems.append("vLLM does not yet support DoRA.")
    if config.get("lora_bias"):
        problems.append("vLLM does not support LoRA bias (lora_bias).")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _SUPPORTED_STR_INITS:
        problems.append(
            f"vLLM does not support init_lora_weights={init!r}. Inits such as PiSSA, OLoRA, "
            "CorDA and LoftQ modify the base model weights when PEFT loads the adapter."
        )
    for key, text in (
        ("alora_invocation_tokens", "vLLM does not support Activated LoRA (aLoRA)."),
        ("layer_replication", "vLLM does not support layer_replication."),
        ("use_bdlora", "vLLM does not support block-diagonal LoRA (BD-LoRA)."),
        ("use_qalora", "vLLM does not support QALoRA."),
    ):
        if config.get(key):
            problems.append(text)
    max_rank = max([r, *rank_pattern.values()])
    if max_rank > max_lora_rank:
        problems.append(f"LoRA rank {max_rank} is greater than max_lora_rank {max_lora_rank}.")
    if config.get("bias", "none") != "none":
        problems.append("Adapter bias is not supported.")
    if problems:
        raise AdapterInvalid(" ".join(problems))
    return int(max_rank)


def _read_tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the first weight file vLLM would pick."""
    safetensors_path = folder / _WEIGHT_FILES[0]
    if safetensors_path.is_file():
        return _safetensors_shapes(safetensors_path)
    for name in _WEIGHT_FILES[1:]:
        if (folder / name).is_file():
            return _torch_zip_shapes(folder / name)
    raise AdapterInvalid(f"{folder} doesn't contain tensors")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    # Header: little-endian u64 length, then a JSON object name -> {dtype, shape, offsets}.
    with path.open("rb") as handle:
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        except (struct.error, ValueError) as exc:
            raise AdapterInvalid(f"Error while deserializing header: {exc}") from exc
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


class _TensorStub:
    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)


def _rebuild_tensor(storage: object, offset: int, size: Sequence[int], *_: object) -> _TensorStub:
    return _TensorStub(size)


class _WeightsOnlyUnpickler(pickle.Unpickler):
    """Reads a torch.save archive's tensor names and shapes without torch, refusing anything
    torch's weights_only loader refuses (arbitrary globals)."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Callable[..., object]]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return object
        raise pickle.UnpicklingError(
            f"Weights only load failed. Unsupported global: GLOBAL {module}.{name}"
        )

    def persistent_load(self, pid: object) -> object:
        return pid


def _torch_zip_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = archive.read(pickled)
        loaded = _WeightsOnlyUnpickler(io.BytesIO(data)).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError) as exc:
        raise AdapterInvalid(f"Weights only load failed. {exc}") from exc
    if not isinstance(loaded, dict):
        raise AdapterInvalid("Weights only load failed. The file does not hold a dict.")
    return {str(k): v.shape if isinstance(v, _TensorStub) else () for k, v in loaded.items()}


def _module_of(tensor: str) -> str:
    """vLLM's parse_fine_tuned_lora_name: the module path a LoRA tensor belongs to."""
    name = tensor.removeprefix("base_model.model.")
    parts = name.split(".")
    if len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in ("lora_A", "lora_B"):
        return ".".join(parts[:-2])
    if len(parts) >= 2 and parts[-1] in ("weight", "bias") and parts[-2] in ("score", "classifier"):
        return parts[-2]
    if parts[-1] in ("lora_embedding_A", "lora_embedding_B"):
        return ".".join(parts[:-1])
    raise AdapterInvalid(f"{name} is unsupported LoRA weight")


_MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _slot_order(tensor: str) -> tuple[int, int, str]:
    match = re.search(r"\.layers\.(\d+)\.", tensor)
    layer = int(match.group(1)) if match else -1
    module = next((i for i, m in enumerate(_MODULE_ORDER) if f".{m}." in tensor), 99)
    return layer, module, tensor


def _check_modules(
    folder: Path,
    tensors: dict[str, tuple[int, ...]],
    config: dict[str, Any],
    dims: ModelDims | None,
) -> None:
    modules_to_save = config.get("modules_to_save") or ()
    unexpected: list[str] = []
    for tensor in tensors:
        if tensor.endswith((".embed_tokens.base_layer.weight", ".lm_head.base_layer.weight")):
            continue
        if "base_layer" in tensor:
            continue
        module = _module_of(tensor)
        base = module.rsplit(".", 1)[-1]
        if base not in LLAMA_LORA_MODULES and base not in modules_to_save:
            unexpected.append(module)
    if unexpected:
        expected = "{" + ", ".join(repr(m) for m in sorted(LLAMA_LORA_MODULES)) + "}"
        raise AdapterInvalid(
            f"While loading {folder}, expected target modules in {expected} but received "
            f"{unexpected}. Please verify that the loaded LoRA module is correct"
        )
    if dims is None:
        return
    # Check in the order vLLM fills the slots (layer by layer, q..down, A then B), so the
    # first mismatch reported is the one vLLM reports.
    for tensor, shape in sorted(tensors.items(), key=lambda item: _slot_order(item[0])):
        if len(shape) != 2 or not tensor.endswith((".lora_A.weight", ".lora_B.weight")):
            continue
        in_out = dims.in_out(_module_of(tensor).rsplit(".", 1)[-1])
        if in_out is None:
            continue
        # lora_A is [r, in_features], lora_B is [out_features, r] (nn.Linear convention).
        want, got = (in_out[0], shape[1]) if ".lora_A." in tensor else (in_out[1], shape[0])
        if want != got:
            raise AdapterInvalid(
                f"The size of tensor a ({want}) must match the size of tensor b ({got}) at "
                "non-singleton dimension 1"
            )
