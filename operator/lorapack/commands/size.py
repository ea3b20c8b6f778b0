"""`lorapack size`: size a pool's vLLM engine before buying or configuring GPUs.

Prints the memory breakdown per GPU (weights, LoRA slot buffers, overhead, KV cache), the KV
capacity, the host RAM of vLLM's adapter cache, recommended engine settings and, with
--adapters, how many GPUs a multi-LoRA pool saves over one merged deployment per adapter.
The arithmetic lives in lorapack.sizing; this module parses flags and lays out the output.
See docs/sizing.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from lorapack.api.meta import parse_quantity
from lorapack.commands.output import add_output_flag, emit, render_table
from lorapack.commands.sizetables import (
    adapter_table,
    cost_table,
    flags_text,
    host_table,
    kv_table,
    memory_table,
    recommend_table,
    serve_line,
)
from lorapack.errors import InvalidSpec
from lorapack.sizing.adapters import ALL_LINEAR, adapter_demand
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
from lorapack.sizing.memory import EngineSettings, estimate, kv_bytes_per_token
from lorapack.sizing.recommend import compare_costs, recommend

HELP = "size a pool: memory breakdown, KV capacity, recommended settings, GPUs saved"


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
        serve_line(report),
        memory_table(report),
        kv_table(report),
    ]
    if settings.enable_lora:
        sections.append(host_table(report))
        modules = _modules(args.target_modules)
        if args.rank is not None:
            demand = adapter_demand(model, args.rank, modules, lora_dtype=report.lora_dtype)
            data["adapter"] = {
                "rank": demand.rank,
                "params": demand.params,
                "fileBytes": demand.file_bytes,
                "engineBytes": demand.engine_bytes,
            }
            sections.append(adapter_table(demand, ",".join(modules or [ALL_LINEAR])))
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
        sections.append(recommend_table(report, rec))
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
            sections.append(cost_table(model, gpu.key, cost))
    if report.flags:
        sections.append(flags_text(report))
    emit(data, args.output, "\n\n".join(sections))
    return 0
