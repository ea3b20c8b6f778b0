"""The command line of the double: `python -m lorapack_testworld.enginedouble serve MODEL ...`.

Flags mirror `vllm serve` (those that do not change the double are accepted and ignored, so a
real engine's argv works unchanged), plus --double-* fault flags. The process exits 1 when
start-up fails or the engine crashes. Called by `__main__` (the pod simulator and the
component tests run it as a subprocess).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from lorapack_testworld.enginedouble.app import (
    ALLOWED_MAX_LORA_RANKS,
    EngineDouble,
    EngineDoubleStartupError,
)
from lorapack_testworld.enginedouble.state import Faults

__all__ = ["main"]


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lorapack_testworld.enginedouble",
        description="A vLLM look-alike for tests; flags mirror `vllm serve`.",
    )
    parser.add_argument("model_tag", nargs="?", help="model path or name (like vllm serve)")
    parser.add_argument("--model", dest="model_flag", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--enable-lora", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--max-loras", type=int, default=1)
    parser.add_argument("--max-lora-rank", type=int, default=16, choices=ALLOWED_MAX_LORA_RANKS)
    parser.add_argument("--max-cpu-loras", type=int, default=None)
    parser.add_argument("--lora-modules", nargs="+", default=[])
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--api-server-count", type=int, default=1)
    # Accepted so a real engine's argv works unchanged; they do not change the double.
    parser.add_argument("--max-model-len", type=int, default=None)
    for ignored in ("--dtype", "--gpu-memory-utilization", "--lora-dtype"):
        parser.add_argument(ignored, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    # lorapack's pool pods pass it (spec.gpu.count); on a real node the double gets their argv.
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    faults = parser.add_argument_group("engine-double faults")
    faults.add_argument("--double-load-delay", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument("--double-fail-next-loads", type=int, default=0, metavar="N")
    faults.add_argument("--double-completion-delay", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument(
        "--double-plain-worker-errors",
        action="store_true",
        help="report worker errors without the multiprocess wrapping",
    )
    return parser


async def _serve(double: EngineDouble) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(double.stop()))
    try:
        await double.start()
    except EngineDoubleStartupError as exc:
        print(f"ValueError: {exc}", file=sys.stderr)
        return 1
    print(f"Engine double listening on {double.url}", flush=True)
    await double.stopped.wait()
    return 1 if double.crashed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        args_list = args_list[1:]
    args = _parser().parse_args(args_list)
    model = args.model_flag or args.model_tag or "lorapack/tiny-llama"
    runtime = _truthy_env("VLLM_ALLOW_RUNTIME_LORA_UPDATING")
    if runtime and args.api_server_count > 1:
        print(
            "ValueError: VLLM_ALLOW_RUNTIME_LORA_UPDATING cannot be used with api_server_count > 1",
            file=sys.stderr,
        )
        return 1
    try:
        double = EngineDouble(
            model,
            served_model_name=args.served_model_name,
            enable_lora=args.enable_lora,
            max_loras=args.max_loras,
            max_lora_rank=args.max_lora_rank,
            max_cpu_loras=args.max_cpu_loras,
            lora_modules=args.lora_modules,
            runtime_lora_updating=runtime,
            # Like vLLM: --api-key, else VLLM_API_KEY (how lorapack's pods pass the key).
            api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
            wrap_worker_errors=not args.double_plain_worker_errors,
            host=args.host,
            port=args.port,
            max_model_len=args.max_model_len,
            faults=Faults(
                load_delay_s=args.double_load_delay,
                fail_next_loads=args.double_fail_next_loads,
                completion_delay_s=args.double_completion_delay,
            ),
        )
    except EngineDoubleStartupError as exc:
        print(f"ValueError: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(double))
    return 0
