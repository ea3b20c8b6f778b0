"""`lorapack run`: the operator.

Watches BaseModelPools, LoraAdapters and their pods (all namespaces, or LORAPACK_NAMESPACES),
places adapters, and reports status. With two replicas, kopf peering keeps exactly one active
(`--peering lorapack`); `--standalone` skips peering for a single local process.
"""

from __future__ import annotations

import argparse

from lorapack.logfmt import configure_logging

HELP = "run the operator (kopf)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--standalone", action="store_true", help="no peering (one replica, local development)"
    )
    mode.add_argument(
        "--peering", default=None, help="kopf peering name for leader election between replicas"
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
    parser.add_argument(
        "--liveness",
        default=None,
        help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line"
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    from lorapack.handlers.runner import run_operator

    run_operator(
        standalone=args.standalone or args.peering is None,
        peering=args.peering,
        priority=args.priority,
        liveness=args.liveness,
    )
    return 0
