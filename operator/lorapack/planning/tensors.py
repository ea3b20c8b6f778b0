"""The safetensors header of an adapter: well-formed, in PEFT's layout, and fitting the base model.

vLLM opens adapter_model.safetensors lazily and checks only the module names before it reads
the tensors, so a corrupt file, tensors of another model (same names, other hidden size) or a
declared `r` that disagrees with the shapes reach the GPU pods; the last one is even served,
scaled by lora_alpha / r of the config (reference/vllm-lora-contract.md §5). The pre-flight
(`reconcilers.validation`) reads the first bytes of the file with a ranged GET and runs, here:

* `header_length`: the 8-byte little-endian length N of the JSON header, bounded;
* `parse_header`: the JSON itself, every tensor's dtype, shape and data_offsets (contiguous,
  non-overlapping, the last ending at the end of the file) and the `__metadata__` map;
* `check_lora_tensors`: names in PEFT's layout, modules among target_modules, lora_A [r, in] and
  lora_B [out, r] with the r (or rank_pattern value) the config declares;
* `check_against_base`: layer indices, module names and in/out features against the pool's
  base `config.json` (`planning.baseconfig.BaseConfig`).

Pure: bytes and mappings in, Issues out (one per kind of problem, naming the first tensor).
Team-supplied regular expressions are never evaluated here (a pattern can take exponential time).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lorapack.api import conditions
from lorapack.issues import Issue
from lorapack.planning.baseconfig import BaseConfig

__all__ = [
    "DTYPE_BYTES",
    "FIRST_READ_BYTES",
    "MAX_HEADER_BYTES",
    "LoraTensor",
    "SafetensorsHeader",
    "TensorEntry",
    "check_against_base",
    "check_lora_tensors",
    "header_length",
    "lora_tensors",
    "parse_header",
]

#: The largest JSON header read (PEFT writes ~130 bytes per tensor: a 70B all-linear adapter
#: has 1,120 tensors, ~150 KiB).
MAX_HEADER_BYTES = 16 << 20
#: The first ranged GET: the length and, for adapters of up to ~500 tensors, the whole header.
FIRST_READ_BYTES = 64 << 10

DTYPE_BYTES: Mapping[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_RESAVE = (
    "re-save the adapter with PEFT's save_pretrained(safe_serialization=True) and upload "
    "adapter_model.safetensors again"
)
# base_model.model.<module path>.lora_A.weight (PEFT >= 0.3); embeddings without ".weight".
_LORA_NAME = re.compile(
    r"^base_model\.model\.(?P<path>(?:[A-Za-z0-9_]+\.)*(?P<module>[A-Za-z0-9_]+))\."
    r"(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$"
)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_PLAIN = re.compile(r"^[A-Za-z0-9_.]+$")
_PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
_NOT_LINEAR = frozenset({"lm_head", "embed_tokens"})


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """A well-formed header: its length N and the tensors in file order."""

    length: int
    tensors: tuple[TensorEntry, ...]
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class LoraTensor:
    """A tensor named in PEFT's layout."""

    entry: TensorEntry
    path: str
    """Module path inside the model, e.g. model.layers.0.self_attn.q_proj."""
    module: str
    """Its last component, e.g. q_proj."""
    kind: str
    """lora_A, lora_B, lora_embedding_A or lora_embedding_B."""
    layer: int | None


def _corrupt(file: str, what: str) -> Issue:
    return Issue(conditions.CORRUPT_WEIGHTS, f"{file} {what}: {_RESAVE}")


def header_length(prefix: bytes, file_size: int, file: str) -> tuple[int | None, Issue | None]:
    """N from the first 8 bytes, or the Issue why it cannot be a safetensors header length."""
    if len(prefix) < 8 or file_size < 8:
        return None, _corrupt(file, f"is {min(len(prefix), file_size)} bytes, too short for "
                              "the 8-byte header length of a safetensors file")  # fmt: skip
    n = int.from_bytes(prefix[:8], "little")
    if n >= 1 << 63:
        why = f"header length is negative ({n - (1 << 64)} as a signed 64-bit number)"
        return None, _corrupt(file, why)
    if n > MAX_HEADER_BYTES:
        return None, _corrupt(
            file, f"header length {n} is above the {MAX_HEADER_BYTES} bytes lorapack reads"
        )
    if n < 2:
        return None, _corrupt(file, f"header length {n} cannot hold a JSON header")
    if 8 + n > file_size:
        return None, _corrupt(
            file, f"header length {n} runs past the end of the file ({file_size} bytes)"
        )
    return n, None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"tensor {key!r} appears twice")
        out[key] = value
    return out


def _entry(name: str, raw: object, file: str) -> tuple[TensorEntry | None, Issue | None]:
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        return None, _corrupt(
            file, f"tensor {name!r} must have exactly dtype, shape and data_offsets"
        )
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return None, _corrupt(file, f"tensor {name!r} has unknown dtype {dtype!r}")

    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(shape, list) or not all(count(d) for d in shape):
        return None, _corrupt(file, f"tensor {name!r} has shape {shape!r}, not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return None, _corrupt(
            file,
            f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with begin <= end",
        )
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != nbytes:
        return None, _corrupt(
            file,
            f"tensor {name!r} ({dtype} {shape}) needs {nbytes} bytes but data_offsets "
            f"{offsets} span {offsets[1] - offsets[0]}",
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1]), None


def _layout_issue(tensors: Sequence[TensorEntry], data_bytes: int, file: str) -> Issue | None:
    """Offsets contiguous from 0, non-overlapping, ending at the end of the file."""
    position, previous = 0, None
    for t in sorted(tensors, key=lambda t: (t.start, t.end)):
        if t.start < position:
            assert previous is not None
            return _corrupt(file, f"tensors {previous!r} and {t.name!r} overlap (data_offsets)")
        if t.start > position:
            return _corrupt(file, f"has a gap of {t.start - position} bytes before {t.name!r}")
        position, previous = t.end, t.name
    if position != data_bytes:
        return _corrupt(
            file,
            f"tensor data ends at byte {position} but the file holds {data_bytes} bytes after "
            "its header (truncated or padded)",
        )
    return None


def parse_header(
    data: bytes, file_size: int, file: str = "adapter_model.safetensors"
) -> tuple[SafetensorsHeader | None, list[Issue]]:
    """The header in `data` (the file's first 8 + N bytes, or more), checked for integrity
    against the file's size."""
    n, problem = header_length(data, file_size, file)
    if n is None:
        return None, [problem] if problem else []
    if len(data) < 8 + n:
        return None, [_corrupt(file, f"ended after {len(data)} bytes inside its header")]
    try:
        parsed = json.loads(data[8 : 8 + n], object_pairs_hook=_unique_keys)
    except RecursionError:
        return None, [_corrupt(file, "has a header that nests too deeply")]
    except ValueError as err:
        return None, [_corrupt(file, f"has a header that is not JSON ({err})")]
    if not isinstance(parsed, dict):
        return None, [_corrupt(file, f"has a JSON {type(parsed).__name__} header, not an object")]
    metadata = parsed.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return None, [_corrupt(file, "has a __metadata__ that is not a map of strings")]
    tensors: list[TensorEntry] = []
    for name, raw in parsed.items():
        entry, problem = _entry(name, raw, file)
        if entry is None:
            return None, [problem] if problem else []
        tensors.append(entry)
    layout = _layout_issue(tensors, file_size - 8 - n, file)
    if layout is not None:
        return None, [layout]
    ordered = tuple(sorted(tensors, key=lambda t: (t.start, t.name)))
    return SafetensorsHeader(n, ordered, dict(metadata)), []


def lora_tensors(header: SafetensorsHeader) -> tuple[list[LoraTensor], list[str]]:
    """The tensors in PEFT's layout, and the names of the others."""
    found: list[LoraTensor] = []
    other: list[str] = []
    for t in header.tensors:
        m = _LORA_NAME.match(t.name)
        if m is None:
            other.append(t.name)
            continue
        layer = _LAYER.search(m["path"] + ".")
        found.append(
            LoraTensor(t, m["path"], m["module"], m["kind"], int(layer[1]) if layer else None)
        )
    return found, other


class _Findings:
    """One Issue per (reason, kind of problem): the first tensor, and how many more."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], str] = {}
        self._more: dict[tuple[str, str], int] = {}

    def add(self, reason: str, kind: str, message: str) -> None:
        key = (reason, kind)
        if key in self._first:
            self._more[key] = self._more.get(key, 0) + 1
        else:
            self._first[key] = message

    def issues(self) -> list[Issue]:
        out = []
        for key, message in self._first.items():
            more = self._more.get(key, 0)
            suffix = f" ({more} more tensor{'s' if more > 1 else ''} alike)" if more else ""
            out.append(Issue(key[0], message + suffix))
        return out


def _targets(config: Mapping[str, Any]) -> frozenset[str] | None:
    """Module names the config targets; None when they cannot be known without evaluating
    a regular expression (a string that is not a plain name)."""
    raw = config.get("target_modules")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, str) and _PLAIN.match(t) for t in raw):
        return None
    names: set[str] = set()
    for t in raw:
        last = t.rsplit(".", 1)[-1]
        names.add(last)
        names.update(_PACKED.get(last, ()))
    return frozenset(names)


def _ranks(config: Mapping[str, Any], path: str) -> frozenset[int]:
    """The rank(s) the config declares for one module path (PEFT: the first rank_pattern key
    that suffix-matches, else r). A pattern key that is a regular expression is not evaluated:
    then any declared rank is accepted."""
    r = config.get("r")
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, Mapping):
        pattern = {}
    declared = {v for v in (r, *pattern.values()) if isinstance(v, int)}
    for key, value in pattern.items():
        if not isinstance(key, str) or not _PLAIN.match(key):
            return frozenset(declared)
        if path == key or path.endswith("." + key):
            return frozenset({value}) if isinstance(value, int) else frozenset(declared)
    return frozenset({r}) if isinstance(r, int) else frozenset(declared)


def check_lora_tensors(
    header: SafetensorsHeader, config: Mapping[str, Any], file: str
) -> list[Issue]:
    """Names in PEFT's layout, modules among target_modules, 2-D float tensors, A and B of each
    module present with the declared rank."""
    found, other = lora_tensors(header)
    out = _Findings()
    for name in other:
        out.add(conditions.UNSUPPORTED_ADAPTER, "name",
                f"{file} holds tensor {name!r}, which is not a LoRA tensor in PEFT's layout "
                "(base_model.model.<module>.lora_A.weight, lora_B.weight): " + _RESAVE)  # fmt: skip
    if not found and not other:
        out.add(conditions.NO_WEIGHTS, "empty", f"{file} holds no tensors: {_RESAVE}")
    targets = _targets(config)
    pairs: dict[str, dict[str, LoraTensor]] = {}
    for t in found:
        pairs.setdefault(t.path, {})[t.kind.replace("embedding_", "")] = t
        name, shape = t.entry.name, list(t.entry.shape)
        if targets is not None and t.module not in targets:
            out.add(conditions.UNSUPPORTED_ADAPTER, "target",
                    f"{file} tensor {name!r} adapts {t.module}, which adapter_config.json "
                    f"target_modules does not list ({', '.join(sorted(targets))}): add it to "
                    "target_modules or re-save the adapter")  # fmt: skip
        if t.entry.dtype not in _FLOAT_DTYPES:
            out.add(conditions.UNSUPPORTED_ADAPTER, "dtype",
                    f"{file} tensor {name!r} is {t.entry.dtype}, not a floating-point type: "
                    + _RESAVE)  # fmt: skip
        if len(shape) != 2:
            out.add(conditions.CORRUPT_WEIGHTS, "dims",
                    f"{file} tensor {name!r} has shape {shape}; LoRA tensors are 2-D: "
                    + _RESAVE)  # fmt: skip
    for path, parts in pairs.items():
        _check_pair(path, parts, config, file, out)
    return out.issues()


def _check_pair(
    path: str, parts: Mapping[str, LoraTensor], config: Mapping[str, Any], file: str, out: _Findings
) -> None:
    a, b = parts.get("lora_A"), parts.get("lora_B")
    if a is None or b is None:
        present, missing = ("lora_A", "lora_B") if b is None else ("lora_B", "lora_A")
        out.add(conditions.CORRUPT_WEIGHTS, "pair",
                f"{file} has {present} but no {missing} for {path}: " + _RESAVE)  # fmt: skip
        return
    if len(a.entry.shape) != 2 or len(b.entry.shape) != 2:
        return  # reported above
    rank_a, rank_b = a.entry.shape[0], b.entry.shape[1]
    if rank_a != rank_b:
        out.add(conditions.CORRUPT_WEIGHTS, "pair-rank",
                f"{file} {path}: lora_A has rank {rank_a} (shape {list(a.entry.shape)}) but "
                f"lora_B has rank {rank_b} (shape {list(b.entry.shape)}): " + _RESAVE)  # fmt: skip
        return
    declared = _ranks(config, path)
    if declared and rank_a not in declared:
        said = " or ".join(str(r) for r in sorted(declared))
        out.add(conditions.RANK_MISMATCH, "rank",
                f"adapter_config.json declares r={said} for {path}, but its tensor "
                f"{a.entry.name!r} has rank {rank_a} (shape {list(a.entry.shape)}); vLLM would "
                "scale it by lora_alpha / r and serve wrong outputs: set r (or rank_pattern) "
                "to the rank the adapter was trained with, or re-save it")  # fmt: skip


def _target_names(config: Mapping[str, Any]) -> list[str]:
    raw = config.get("target_modules")
    names = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [n.rsplit(".", 1)[-1] for n in names if isinstance(n, str) and _PLAIN.match(n)]


def check_against_base(
    header: SafetensorsHeader,
    config: Mapping[str, Any],
    base: BaseConfig,
    served: str,
    file: str,
) -> list[Issue]:
    """Layer indices, module names and in/out features of the LoRA tensors against the pool's
    base model (`served` names it in the messages)."""
    out = _Findings()
    fix = (
        f"the adapter was trained on another model: retrain it on {served}, or set "
        "spec.baseModel to the model it was trained on"
    )
    known = set(base.modules) | set(_PACKED) | {"all-linear"}
    for name in _target_names(config):
        if name not in known:
            out.add(conditions.WEIGHTS_DO_NOT_FIT, "target",
                    f"adapter_config.json target_modules names {name}, which {served} "
                    f"({base.model_type}) does not have (its modules: "
                    f"{', '.join(base.modules)}): {fix}")  # fmt: skip
    found, _ = lora_tensors(header)
    for t in found:
        _check_fit(t, base, served, file, fix, out)
    return out.issues()


def _check_fit(
    t: LoraTensor, base: BaseConfig, served: str, file: str, fix: str, out: _Findings
) -> None:
    name, shape = t.entry.name, list(t.entry.shape)
    features = base.features(t.module)
    if features is None:
        out.add(conditions.WEIGHTS_DO_NOT_FIT, "module",
                f"{file} tensor {name!r} adapts {t.module}, which {served} ({base.model_type}) "
                f"does not have (its modules: {', '.join(base.modules)}): {fix}")  # fmt: skip
        return
    if t.layer is not None and t.layer >= base.num_hidden_layers:
        out.add(conditions.WEIGHTS_DO_NOT_FIT, "layer",
                f"{file} tensor {name!r} is for layer {t.layer}, but {served} has "
                f"{base.num_hidden_layers} layers: {fix}")  # fmt: skip
    if len(shape) != 2:
        return
    fan_in, fan_out = features
    if t.kind == "lora_A" and t.module != "embed_tokens":
        wanted, got, what = fan_in, shape[1], "input"
    elif t.kind in ("lora_B", "lora_embedding_B") and t.module != "lm_head":
        wanted, got, what = fan_out, shape[0], "output"
    else:
        return  # the vocabulary side of embeddings: vLLM may add tokens
    if got != wanted:
        out.add(conditions.WEIGHTS_DO_NOT_FIT, "shape",
                f"{file} tensor {name!r} has shape {shape}, but {t.module} of {served} has "
                f"{wanted} {what} features ({base.describe()}): {fix}")  # fmt: skip
