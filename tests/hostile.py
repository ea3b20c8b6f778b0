"""The hostile-input corpus (tests/data/hostile/*.yaml): loading the cases and building the
files, objects and specs their recipes describe (tests/data/hostile/README.md). Used by the
per-layer runners; nothing binary is stored, every payload is built here."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorapack_testworld.safetensors import (
    build_safetensors,
    header_json,
    lora_config,
    lora_tensor_specs,
    raw_safetensors,
)
from tests.builders import deep_merge, make_adapter, make_pool

CORPUS = Path(__file__).parent / "data" / "hostile"
LAYERS = ("apiserver", "preflight", "agent", "s3")
BASE = "lorapack/tiny-llama"
TINY: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 491,
}
MODELS = {
    "tiny": TINY,
    "wide": TINY | {"hidden_size": 128, "intermediate_size": 256},
    "deep": TINY | {"num_hidden_layers": 4},
}
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Case:
    """One corpus entry."""

    id: str
    layer: str
    words: tuple[str, ...]
    reason: str | None
    raw: dict[str, Any] = field(repr=False)
    source: str = ""


def load_cases(layer: str | None = None) -> list[Case]:
    """Every case of the corpus (of one layer), in file order."""
    cases: list[Case] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text()) or []:
            cases.append(
                Case(
                    id=str(raw["id"]),
                    layer=str(raw["layer"]),
                    words=tuple(str(w) for w in raw.get("words") or ()),
                    reason=raw.get("reason"),
                    raw=raw,
                    source=path.name,
                )
            )
    return [c for c in cases if layer is None or c.layer == layer]


def text_value(value: Any) -> Any:
    """A string recipe ({repeat: prefix, then: s, times: n}) as its string; others unchanged."""
    if isinstance(value, dict) and "times" in value and "then" in value:
        return str(value.get("repeat", "")) + str(value["then"]) * int(value["times"])
    if isinstance(value, dict):
        return {k: text_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [text_value(v) for v in value]
    return value


# -- apiserver -------------------------------------------------------------------------------


def api_object(case: Case, namespace: str) -> dict[str, Any]:
    """The object a case applies: a valid one with the case's name and spec changes."""
    raw = case.raw
    name = text_value(raw.get("name")) or f"h-{case.id}"[:52].rstrip("-")
    if raw["kind"] == "BaseModelPool":
        body = make_pool(name, namespace)
    else:
        body = make_adapter(name, namespace, baseModel=BASE)
    return deep_merge(body, {"spec": text_value(raw.get("spec") or {})})


# -- files -----------------------------------------------------------------------------------


def healthy_config() -> dict[str, Any]:
    return lora_config(8, ALL, base=BASE)


def _lora(recipe: dict[str, Any]) -> list[Any]:
    specs = lora_tensor_specs(
        MODELS[recipe.get("model", "tiny")],
        int(recipe.get("rank", 8)),
        recipe.get("modules", ALL),
        ranks=recipe.get("ranks"),
        dtype=recipe.get("dtype", "F32"),
        layers=recipe.get("layers"),
    )
    if "drop" in recipe:
        del specs[int(recipe["drop"])]
    return specs + [tuple(t) for t in recipe.get("extra", ())]


def _nested(recipe: dict[str, Any]) -> bytes:
    depth = int(recipe["nested"])
    text = str(recipe["open"]) * depth + str(recipe.get("inner", "")) + str(recipe["close"]) * depth
    return text.encode()


def _edit(recipe: dict[str, Any]) -> bytes:
    specs = _lora(recipe.get("lora", {}))
    header = header_json(specs)
    payload = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
    names = [name for name, _, _ in specs]
    if "tensor" in recipe:
        entry = header[names[int(recipe["tensor"])]]
        entry.update(recipe.get("set", {}))
        shift = int(recipe.get("shift", 0))
        entry["data_offsets"] = [o + shift for o in entry["data_offsets"]]
        payload += shift
    payload += int(recipe.get("payload", 0))
    return raw_safetensors(json.dumps(header).encode(), b"\0" * payload)


def file_bytes(recipe: Any) -> bytes:
    """The content of one file recipe."""
    if isinstance(recipe, str):
        return recipe.encode()
    if "config" in recipe:
        config = healthy_config()
        for key, value in recipe["config"].items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return json.dumps(config).encode()
    if "json" in recipe:
        return json.dumps(recipe["json"]).encode()
    if "nested" in recipe:
        return _nested(recipe)
    if "text" in recipe:
        if "times" in recipe:
            text = recipe["text"] + recipe["then"] * recipe["times"] + recipe.get("end", "")
            return str(text).encode()
        return (str(recipe["text"]) * int(recipe.get("repeat", 1))).encode()
    if "hex" in recipe:
        return bytes.fromhex(recipe["hex"]) + b"\0" * int(recipe.get("pad", 0))
    if "lora" in recipe:
        return build_safetensors(_lora(recipe["lora"]))
    if "safetensors" in recipe:
        st = recipe["safetensors"]
        header = st.get("header", "")
        raw_header = header.encode() if isinstance(header, str) else file_bytes(header)
        return raw_safetensors(
            raw_header, b"\0" * int(st.get("payload", 0)), length=st.get("length")
        )
    if "edit" in recipe:
        return _edit(recipe["edit"])
    raise ValueError(f"unknown file recipe {recipe!r}")


def adapter_files(case: Case) -> tuple[dict[str, bytes], dict[str, int]]:
    """(name -> bytes, name -> listed size of objects too large to hold) of a preflight case."""
    files: dict[str, bytes] = {
        "adapter_config.json": json.dumps(healthy_config()).encode(),
        "adapter_model.safetensors": build_safetensors(lora_tensor_specs(TINY, 8, ALL)),
    }
    sizes: dict[str, int] = {}
    for name, recipe in (case.raw.get("files") or {}).items():
        if recipe is None:
            files.pop(name, None)
        elif isinstance(recipe, dict) and set(recipe) == {"size"}:
            sizes[name] = int(recipe["size"])
        else:
            files[name] = file_bytes(recipe)
    many = case.raw.get("many")
    if many:
        for i in range(int(many["count"])):
            files[str(many["name"]).format(i=i)] = b"x"
    return files, sizes


def adapter_spec(case: Case) -> dict[str, Any]:
    return copy.deepcopy(case.raw.get("spec") or {})
