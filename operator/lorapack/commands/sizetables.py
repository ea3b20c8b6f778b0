"""The text layout of `lorapack size`: one table per part of a sizing report.

Used by lorapack.commands.size, which computes the report (lorapack.sizing) and prints these
sections in order (or the same figures as JSON/YAML with --output). Pure: figures in, text out.
"""

from __future__ import annotations

import textwrap
from typing import Any

from lorapack.commands.output import render_table
from lorapack.sizing.adapters import AdapterDemand
from lorapack.sizing.catalog import GIB, ModelArch
from lorapack.sizing.memory import SizingReport
from lorapack.sizing.recommend import CostComparison, Recommendation

__all__ = [
    "adapter_table",
    "cost_table",
    "flags_text",
    "host_table",
    "kv_table",
    "memory_table",
    "recommend_table",
    "serve_line",
]

MIB = 2**20


def _g(value: int) -> str:
    return f"{value / GIB:.2f}"


def _range(low: object, high: object, fmt: str = "{:,}") -> str:
    return f"{fmt.format(low)} - {fmt.format(high)}"


def serve_line(report: SizingReport) -> str:
    """The title and the `vllm serve` command the figures are for, wrapped like a shell line."""
    s = report.settings
    model = report.model
    units = ["vllm serve", model.hf_names[0] if model.hf_names else model.key]
    if s.enable_lora:
        units += [
            "--enable-lora",
            f"--max-loras {s.max_loras}",
            f"--max-lora-rank {s.max_lora_rank}",
            f"--max-cpu-loras {s.cpu_loras}",
        ]
    units += [
        f"--gpu-memory-utilization {s.gpu_memory_utilization}",
        f"--max-model-len {report.max_model_len}",
        f"--dtype {report.dtype}",
    ]
    if s.tensor_parallel > 1:
        units.append(f"--tensor-parallel-size {s.tensor_parallel}")
    lines = [f"  {units[0]}"]
    for unit in units[1:]:
        if len(lines[-1]) + len(unit) + 3 > 100:
            lines[-1] += " \\"
            lines.append(f"    {unit}")
        else:
            lines[-1] += f" {unit}"
    title = f"{model.name} on {s.tensor_parallel} x {report.gpu.key} per pod:"
    return "\n".join([title, *lines])


def memory_table(report: SizingReport) -> str:
    s = report.settings
    o, kv = report.overhead_bytes, report.kv_bytes
    rows: list[list[Any]] = [
        ["CUDA total", _g(report.total_bytes), ""],
        [f"vLLM may use (x {s.gpu_memory_utilization})", _g(report.requested_bytes), ""],
        ["weights", _g(report.weight_bytes), ""],
    ]
    if s.enable_lora:
        rows.append(["LoRA slots, linear layers", _g(report.lora_linear_bytes), ""])
        if report.lora_embedding_bytes:
            rows.append(["LoRA slots, embed/lm_head", _g(report.lora_embedding_bytes), ""])
    rows.append(["activations, graphs, other", _g(o.central), _range(_g(o.low), _g(o.high), "{}")])
    rows.append(["KV cache", _g(kv.central), _range(_g(kv.low), _g(kv.high), "{}")])
    return render_table(["MEMORY PER GPU", "GIB", "RANGE"], rows)


def kv_table(report: SizingReport) -> str:
    t = report.kv_tokens
    low, central, high = report.max_concurrency()
    rows: list[list[Any]] = [
        ["bytes per token (per GPU)", f"{report.kv_bytes_per_token:,}", ""],
        ["tokens", f"{t.central:,}", _range(t.low, t.high)],
        [
            f"{report.max_model_len:,}-token sequences at once",
            f"{central:.1f}",
            _range(low, high, "{:.1f}"),
        ],
    ]
    return render_table(["KV CACHE", "CENTRAL", "RANGE"], rows)


def host_table(report: SizingReport) -> str:
    s = report.settings
    per_pod = "" if s.tensor_parallel == 1 else f" x {s.tensor_parallel} GPU workers"
    rows = [
        [
            f"one adapter at rank {s.max_lora_rank} ({report.lora_dtype})",
            f"{report.cpu_bytes_per_adapter / MIB:,.0f} MiB",
        ],
        [
            f"{s.cpu_loras} cached + 1 loading{per_pod}",
            f"{report.cpu_cache_bytes / GIB:,.2f} GiB",
        ],
    ]
    return render_table(["HOST MEMORY PER POD (VLLM CPU ADAPTER CACHE)", "BYTES"], rows)


def adapter_table(demand: AdapterDemand, modules: str) -> str:
    rows = [
        ["parameters", f"{demand.params:,}"],
        ["file (safetensors, float32)", f"{demand.file_bytes / MIB:,.1f} MiB"],
        ["host RAM in vLLM's cache", f"{demand.engine_bytes / MIB:,.1f} MiB"],
    ]
    return render_table([f"ADAPTER (RANK {demand.rank}, {modules})", "SIZE"], rows)


def recommend_table(report: SizingReport, rec: Recommendation) -> str:
    s = report.settings
    rows = [
        ["--max-lora-rank", s.max_lora_rank, rec.max_lora_rank],
        ["--max-cpu-loras", s.cpu_loras, rec.max_cpu_loras],
    ]
    table = render_table(["SETTING", "NOW", "RECOMMENDED"], rows)
    notes = "\n".join(
        textwrap.fill(n, 100, initial_indent="- ", subsequent_indent="  ") for n in rec.notes
    )
    return table + ("\n" + notes if notes else "")


def cost_table(model: ModelArch, gpu: str, cost: CostComparison) -> str:
    merged = cost.merged_gpus
    per_pod = f"{cost.gpus_per_pod} {gpu}"
    rows: list[list[Any]] = [
        [
            f"one merged deployment per adapter: {cost.adapters} x "
            + (f"{cost.gpus_per_copy} {gpu}" if cost.gpus_per_copy else "(does not fit)"),
            "-" if merged is None else merged,
        ],
        [
            f"multi-LoRA pool: {cost.pods} pod{'s' if cost.pods > 1 else ''} x {per_pod}, "
            f"up to {cost.adapters_per_pod} adapters each",
            cost.pool_gpus,
        ],
    ]
    if cost.ratio is not None:
        rows.append(
            ["GPUs saved", f"{merged - cost.pool_gpus} ({cost.ratio:.1f}x fewer)" if merged else ""]
        )
    return render_table([f"GPUS FOR {cost.adapters} ADAPTERS OF {model.name}", "GPUS"], rows)


def flags_text(report: SizingReport) -> str:
    lines = []
    for flag in report.flags:
        head = f"{flag.severity}: {flag.code}: "
        lines.append(textwrap.fill(head + flag.message, 100, subsequent_indent="  "))
    return "\n".join(lines)
