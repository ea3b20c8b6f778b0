"""Benchmark: what the safetensors pre-flight (issue 11, 0b) costs per adapter.

For PEFT all-linear adapters of real model shapes (Llama-3-8B, Llama-3-70B; ranks 16 and 64)
built with lorapack_testworld.safetensors (the header exactly as PEFT lays it out, payload
never materialised), prints: the file size, the header size, how many ranged GETs and bytes
validate_adapter reads, and the time to parse the header and run every check (integrity,
PEFT layout, declared rank, shapes against the base config). Pure CPU: no S3 server; the
in-memory store counts the requests a real S3Access would make.

    .venv/bin/python bench/preflight_header.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.builders import make_adapter, make_pool
from tests.fakes.artifacts import MemoryStore

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.planning.baseconfig import parse_base_config
from lorapack.planning.tensors import (
    check_against_base,
    check_lora_tensors,
    parse_header,
)
from lorapack.reconcilers.validation import validate_adapter
from lorapack_testworld.safetensors import header_json, lora_config, lora_tensor_specs

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODELS: dict[str, dict[str, Any]] = {
    "llama-3-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256,
    },
    "llama-3-70b": {
        "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256,
    },
}  # fmt: skip


def header_bytes(model: dict[str, Any], rank: int) -> tuple[bytes, int]:
    specs = lora_tensor_specs(model, rank, ALL, dtype="BF16")
    header = header_json(specs)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = max(h["data_offsets"][1] for k, h in header.items() if k != "__metadata__")
    return len(text).to_bytes(8, "little") + text, 8 + len(text) + data


async def one(name: str, model: dict[str, Any], rank: int, repeat: int) -> dict[str, Any]:
    head, size = header_bytes(model, rank)
    config = lora_config(rank, ALL, base=name)
    base, _ = parse_base_config(json.dumps(model).encode())
    assert base is not None
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        header, problems = parse_header(head, size, "adapter_model.safetensors")
        assert header is not None, problems
        assert not check_lora_tensors(header, config, "f")
        assert not check_against_base(header, config, base, name, "f")
        timings.append(time.perf_counter() - started)
    uri = "s3://adapters/team-a/bench/"
    store = MemoryStore(
        {"adapters/team-a/bench/adapter_config.json": json.dumps(config).encode(),
         "adapters/team-a/bench/adapter_model.safetensors": head},
        sizes={"adapters/team-a/bench/adapter_model.safetensors": size},
    )  # fmt: skip
    pool = BaseModelPool.model_validate(
        make_pool("p", baseModel={"name": name, "source": {"s3": {"uri": "s3://models/x/"}}},
                  adapters={"cacheSize": "100Gi", "s3Access": [
                      {"namespaces": ["*"], "uriPrefixes": ["s3://adapters/"]}]},
                  engine={"maxLoras": 8, "maxLoraRank": 64, "maxCpuLoras": 32})
    )  # fmt: skip
    body = make_adapter("bench", baseModel=name, source={"s3": {"uri": uri}})
    body["metadata"]["generation"] = 1
    result = await validate_adapter(
        LoraAdapter.model_validate(body), [pool], [], store, {"ml-platform/p": base}
    )
    assert result.artifact is not None, result.problems
    ranges = [c for c in store.calls if c[0] == "range"]
    return {
        "adapter": f"{name} r{rank} all-linear bf16",
        "file MiB": round(size / 2**20, 1),
        "header KiB": round(len(head) / 1024, 1),
        "ranged GETs": len(ranges),
        "bytes read": store.bytes_read,
        "check ms p50": round(statistics.median(timings) * 1000, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = [
        await one(name, model, rank, args.repeat)
        for name, model in MODELS.items()
        for rank in (16, 64)
    ]
    for row in rows:
        print("  ".join(f"{k}: {v}" for k, v in row.items()))


if __name__ == "__main__":
    asyncio.run(main())
