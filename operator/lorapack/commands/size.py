"""`lorapack size`: size a pool's vLLM engine before buying or configuring GPUs.

Prints the memory breakdown per GPU (weights, LoRA slot buffers, overhead, KV cache), the KV
capacity, the host RAM of vLLM's adapter cache, recommended engine settings and, with
--adapters, how many GPUs a multi-LoRA pool saves over one merged deployment per adapter.
The arithmetic lives in lorapack.sizing; this module parses flags and lays out the output.
See docs/sizing.md.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from lorapack.api.meta import parse_quantity
from lorapack.commands.output import add_output_flag, emit, render_table
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import ALL_LINEAR, AdapterDemand, adapter_demand
from lorapack.sizing.catalog import (
    GIB,
    GPUS,
    MODELS,
    ModelArch,
    load_config_json,
    lookup_gpu,
    lookup_model,
    param_count,
)
from lorapack.sizing.memory import EngineSettings, SizingReport, estimate, kv_bytes_per_token
from lorapack.sizing.recommend import CostComparison, Recommendation, compare_costs, recommend

HELP = "size a pool: memory breakdown, KV capacity, recommended settings, GPUs saved"

MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and GPU")
    model.add_argument("--model", help="catalog key or Hugging Face name (see --list)")
    model.add_argument("--config", help="a model's config.json (or its folder) instead of --model")
    model.add_argument(
        "--gpu", default="L20", help="GPU type, GFD or GKE label (default: L20; see --list)"
    )
    model.add_argument(
        "--gpus", type=int, default=1, help="GPUs per pod = --tensor-parallel-size (default: 1)"
    )
    model.add_argument(
        "--gpu-memory",
        help="GPU memory as CUDA reports it, e.g. 44.4Gi: overrides the catalog, and sizes a "
        "GPU it does not know",
    )
    model.add_argument("--list", action="store_true", help="list the catalog models and GPUs")
    engine = parser.add_argument_group("vLLM engine (BaseModelPool spec.engine)")
    engine.add_argument("--max-loras", type=int, default=8, help="GPU LoRA slots (default: 8)")
    engine.add_argument(
        "--max-lora-rank", type=int, default=64, help="rank every slot is sized for (default: 64)"
    )
    engine.add_argument(
        "--max-cpu-loras", type=int, help="adapters cached in host RAM (default: --max-loras)"
    )
    engine.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.92,
        help="share of GPU memory vLLM may use (default: 0.92)",
    )
    engine.add_argument("--max-model-len", type=int, help="longest sequence (default: the model's)")
    engine.add_argument("--dtype", default="auto", help="weight dtype (default: auto)")
    engine.add_argument("--lora-dtype", default="auto", help="LoRA buffer dtype (default: auto)")
    engine.add_argument("--kv-cache-dtype", default="auto", help="KV cache dtype (default: auto)")
    engine.add_argument(
        "--lora-target-modules", help="comma-separated modules that get LoRA buffers"
    )
    engine.add_argument(
        "--fully-sharded-loras", action="store_true", help="shard all LoRA buffers over the GPUs"
    )
    engine.add_argument("--max-num-seqs", type=int, help="default: vLLM's for the GPU")
    engine.add_argument("--max-num-batched-tokens", type=int, help="default: vLLM's for the GPU")
    engine.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    engine.add_argument(
        "--no-lora", action="store_true", help="size without --enable-lora (a merged model)"
    )
    adapters = parser.add_argument_group("adapters (LoraAdapter demand and cost comparison)")
    adapters.add_argument("--adapters", type=int, help="number of adapters to serve")
    adapters.add_argument("--rank", type=int, help="largest adapter rank")
    adapters.add_argument(
        "--target-modules", help=f"comma-separated adapter target modules (default: {ALL_LINEAR})"
    )
    adapters.add_argument(
        "--adapters-per-pod", type=int, help="adapters placed per pod (default: --max-cpu-loras)"
    )
    adapters.add_argument("--host-memory", help="host RAM per pod for the adapter cache, e.g. 64Gi")
    add_output_flag(parser)


def _modules(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(m.strip() for m in value.split(",") if m.strip())


def _quantity(flag: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ValueError:
        raise InvalidSpec(
            f"{flag} {value!r} is not a quantity: write it like 44.4Gi, 48G or 47674044826",
            reason="InvalidQuantity",
        ) from None


def _model(args: argparse.Namespace) -> ModelArch:
    if args.config:
        return load_config_json(args.config, args.model)
    if not args.model:
        raise InvalidSpec(
            f"--model is required: one of {', '.join(MODELS)}, or --config path/to/config.json",
            reason="MissingModel",
        )
    return lookup_model(args.model)


def _settings(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        max_cpu_loras=args.max_cpu_loras,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        tensor_parallel=args.gpus,
        lora_dtype=args.lora_dtype,
        fully_sharded=args.fully_sharded_loras,
        enable_lora=not args.no_lora,
        lora_target_modules=_modules(args.lora_target_modules),
        kv_cache_dtype=args.kv_cache_dtype,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enforce_eager=args.enforce_eager,
        usable_bytes=_quantity("--gpu-memory", args.gpu_memory),
    )


def _g(value: int) -> str:
    return f"{value / GIB:.2f}"


def _range(low: object, high: object, fmt: str = "{:,}") -> str:
    return f"{fmt.format(low)} - {fmt.format(high)}"


def _serve_line(report: SizingReport) -> str:
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


def _memory_table(report: SizingReport) -> str:
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


def _kv_table(report: SizingReport) -> str:
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


def _host_table(report: SizingReport) -> str:
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


def _adapter_table(demand: AdapterDemand, modules: str) -> str:
    rows = [
        ["parameters", f"{demand.params:,}"],
        ["file (safetensors, float32)", f"{demand.file_bytes / MIB:,.1f} MiB"],
        ["host RAM in vLLM's cache", f"{demand.engine_bytes / MIB:,.1f} MiB"],
    ]
    return render_table([f"ADAPTER (RANK {demand.rank}, {modules})", "SIZE"], rows)


def _recommend_table(report: SizingReport, rec: Recommendation) -> str:
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


def _cost_table(model: ModelArch, gpu: str, cost: CostComparison) -> str:
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


def _flags_text(report: SizingReport) -> str:
    lines = []
    for flag in report.flags:
        head = f"{flag.severity}: {flag.code}: "
        lines.append(textwrap.fill(head + flag.message, 100, subsequent_indent="  "))
    return "\n".join(lines)


def _list(fmt: Any) -> int:
    models: list[dict[str, Any]] = [
        {
            "key": m.key,
            "architecture": m.architecture,
            "params": param_count(m),
            "kvBytesPerToken": kv_bytes_per_token(m, EngineSettings()),
            "maxPositionEmbeddings": m.max_position_embeddings,
            "hfNames": list(m.hf_names),
        }
        for m in MODELS.values()
    ]
    gpus = [
        {
            "key": g.key,
            "productLabel": g.product_label,
            "memoryBytes": g.memory_bytes,
            "usableBytes": g.usable_bytes,
            "bandwidthGBps": g.bandwidth_gbps,
            "bf16Tflops": g.bf16_tflops,
            "gkeAccelerator": g.gke_accelerator,
            "awsInstances": list(g.aws_instances),
            "source": g.memory_source,
            "usableSource": g.usable_source,
        }
        for g in GPUS.values()
    ]
    model_rows = [
        [
            m["key"],
            m["architecture"],
            f"{m['params'] / 1e9:.2f}B",
            f"{m['kvBytesPerToken']:,}",
            f"{m['maxPositionEmbeddings']:,}",
            m["hfNames"][0],
        ]
        for m in models
    ]
    gpu_rows = [
        [
            g.key,
            g.product_label,
            f"{g.memory_bytes / GIB:.0f}",
            f"{g.usable_bytes / GIB:.2f}",
            f"{g.bandwidth_gbps:,.0f}",
            f"{g.bf16_tflops:g}",
        ]
        for g in GPUS.values()
    ]
    table = (
        render_table(
            ["MODEL", "ARCHITECTURE", "PARAMS", "KV B/TOKEN", "MAX LEN", "HUGGING FACE"],
            model_rows,
        )
        + "\n\n"
        + render_table(
            ["GPU", "LABEL", "GIB", "CUDA GIB", "GB/S", "BF16 TFLOPS"],
            gpu_rows,
        )
    )
    emit({"models": models, "gpus": gpus}, fmt, table)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.output)
    model = _model(args)
    settings = _settings(args)
    # --gpu-memory overrides the catalog's figure and sizes a GPU the catalog does not know.
    gpu = lookup_gpu(args.gpu, settings.usable_bytes)
    report = estimate(model, gpu, settings)
    data = report.as_dict()
    sections = [
        _serve_line(report),
        _memory_table(report),
        _kv_table(report),
    ]
    if settings.enable_lora:
        sections.append(_host_table(report))
        modules = _modules(args.target_modules)
        if args.rank is not None:
            demand = adapter_demand(model, args.rank, modules, lora_dtype=report.lora_dtype)
            data["adapter"] = {
                "rank": demand.rank,
                "params": demand.params,
                "fileBytes": demand.file_bytes,
                "engineBytes": demand.engine_bytes,
            }
            sections.append(_adapter_table(demand, ",".join(modules or [ALL_LINEAR])))
        rec = recommend(
            model,
            gpu,
            settings,
            adapter_rank=args.rank,
            adapters=args.adapters,
            host_memory_bytes=_quantity("--host-memory", args.host_memory),
        )
        data["recommended"] = {
            "maxLoraRank": rec.max_lora_rank,
            "maxCpuLoras": rec.max_cpu_loras,
            "kvTokensGained": rec.kv_tokens_gained,
            "hostBytes": rec.host_bytes,
            "slotBytesPerGpu": rec.slot.bytes_per_gpu,
            "slotKvTokens": rec.slot.kv_tokens,
            "notes": list(rec.notes),
        }
        sections.append(_recommend_table(report, rec))
        if args.adapters is not None:
            cost = compare_costs(model, gpu, settings, args.adapters, args.adapters_per_pod)
            data["cost"] = {
                "adapters": cost.adapters,
                "gpusPerMergedCopy": cost.gpus_per_copy,
                "mergedGpus": cost.merged_gpus,
                "adaptersPerPod": cost.adapters_per_pod,
                "pods": cost.pods,
                "poolGpus": cost.pool_gpus,
                "ratio": None if cost.ratio is None else round(cost.ratio, 2),
            }
            sections.append(_cost_table(model, gpu.key, cost))
    if report.flags:
        sections.append(_flags_text(report))
    emit(data, args.output, "\n\n".join(sections))
    return 0
