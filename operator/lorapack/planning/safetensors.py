"""The safetensors file format: the header of adapter_model.safetensors, checked for integrity.

Used by lorapack.planning.tensors (the LoRA checks over the parsed header) and, through it, by
the pre-flight (`reconcilers.validation`), which reads the first bytes of the file with a
ranged GET and runs:

* `header_length`: the 8-byte little-endian length N of the JSON header, bounded;
* `parse_header`: the JSON itself, every tensor's dtype, shape and data_offsets (contiguous,
  non-overlapping, the last ending at the end of the file) and the `__metadata__` map.

Pure: bytes in, a SafetensorsHeader or CorruptWeights Issues out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lorapack.api import conditions
from lorapack.issues import Issue

__all__ = [
    "DTYPE_BYTES",
    "FIRST_READ_BYTES",
    "MAX_HEADER_BYTES",
    "RESAVE",
    "SafetensorsHeader",
    "TensorEntry",
    "header_length",
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
#: The fix named by every problem with the file itself.
RESAVE = (
    "re-save the adapter with PEFT's save_pretrained(safe_serialization=True) and upload "
    "adapter_model.safetensors again"
)


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


def _corrupt(file: str, what: str) -> Issue:
    return Issue(conditions.CORRUPT_WEIGHTS, f"{file} {what}: {RESAVE}")


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
