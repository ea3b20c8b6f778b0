"""The LoRA tensors of an adapter: in PEFT's layout, and fitting the base model.

vLLM opens adapter_model.safetensors lazily and checks only the module names before it reads
the tensors, so a corrupt file, tensors of another model (same names, other hidden size) or a
declared `r` that disagrees with the shapes reach the GPU pods; the last one is even served,
scaled by lora_alpha / r of the config (reference/vllm-lora-contract.md §5). The pre-flight
(`reconcilers.validation`) reads the first bytes of the file with a ranged GET and runs
`header_length` and `parse_header` (the file format's integrity, lorapack.planning.safetensors,
re-exported here as the pre-flight's one entry point), then, here:

* `check_lora_tensors`: names in PEFT's layout, modules among target_modules, lora_A [r, in] and
  lora_B [out, r] with the r (or rank_pattern value) the config declares;
* `check_against_base`: layer indices, module names and in/out features against the pool's
  base `config.json` (`planning.baseconfig.BaseConfig`).

Pure: bytes and mappings in, Issues out (one per kind of problem, naming the first tensor).
Team-supplied regular expressions are never evaluated here (a pattern can take exponential time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorapack.api import conditions
from lorapack.issues import Issue
from lorapack.planning.baseconfig import BaseConfig
from lorapack.planning.safetensors import (
    DTYPE_BYTES,
    FIRST_READ_BYTES,
    MAX_HEADER_BYTES,
    RESAVE,
    SafetensorsHeader,
    TensorEntry,
    header_length,
    parse_header,
)

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

_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
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
                "(base_model.model.<module>.lora_A.weight, lora_B.weight): " + RESAVE)  # fmt: skip
    if not found and not other:
        out.add(conditions.NO_WEIGHTS, "empty", f"{file} holds no tensors: {RESAVE}")
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
                    + RESAVE)  # fmt: skip
        if len(shape) != 2:
            out.add(conditions.CORRUPT_WEIGHTS, "dims",
                    f"{file} tensor {name!r} has shape {shape}; LoRA tensors are 2-D: "
                    + RESAVE)  # fmt: skip
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
                f"{file} has {present} but no {missing} for {path}: " + RESAVE)  # fmt: skip
        return
    if len(a.entry.shape) != 2 or len(b.entry.shape) != 2:
        return  # reported above
    rank_a, rank_b = a.entry.shape[0], b.entry.shape[1]
    if rank_a != rank_b:
        out.add(conditions.CORRUPT_WEIGHTS, "pair-rank",
                f"{file} {path}: lora_A has rank {rank_a} (shape {list(a.entry.shape)}) but "
                f"lora_B has rank {rank_b} (shape {list(b.entry.shape)}): " + RESAVE)  # fmt: skip
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
