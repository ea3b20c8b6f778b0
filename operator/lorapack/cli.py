"""The `lorapack` command line: one entry point for the operator, the in-pod agent and the
platform engineers' tools.

    lorapack run        run the operator (kopf)
    lorapack agent      run the in-pod agent sidecar
    lorapack plan       check BaseModelPool/LoraAdapter YAML offline and print the placement
    lorapack size       size a pool: memory breakdown, KV capacity, GPUs saved
    lorapack model      stage a base model in S3 for a pool (check, push)
    lorapack crds       write the generated CRDs
    lorapack version    print the version

Subcommand modules keep heavy imports (kopf, boto3) inside their `run`, so `--help` is fast.
Exit codes: 0 success, 1 failure the output explains, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from pydantic import ValidationError

from lorapack import __version__
from lorapack.api.meta import format_validation_error
from lorapack.errors import LorapackError

__all__ = ["COMMANDS", "build_parser", "format_validation_error", "main"]

COMMANDS = ("run", "agent", "plan", "size", "model", "crds", "version")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"lorapack.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lorapack",
        description="Serve many teams' LoRA adapters from shared vLLM GPU pools on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"lorapack {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        sub = subs.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args._run(args)
        return code
    except LorapackError as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return 1
    except ValidationError as err:
        print(f"error: invalid input:\n{format_validation_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
