"""`lorapack agent`: the sidecar in every pool pod.

Makes its vLLM engine hold exactly the adapters the operator assigned to the pod (from the Secret
`<pod>-adapters`), downloads them from S3 into the shared cache, and reports what is really
loaded on the Pod. Settings come from the environment (POD_NAME, POD_NAMESPACE,
LORAPACK_POOL_NAME, LORAPACK_ENGINE_URL, LORAPACK_CACHE_DIR, ...): see docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from lorapack.logfmt import configure_logging

HELP = "run the in-pod agent sidecar (or fetch the base model with --fetch-model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fetch-model",
        metavar="DIR",
        type=Path,
        help="download the base model from S3 into DIR and exit (the pods' init container)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line"
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    from lorapack.agent.main import fetch_model, run_agent
    from lorapack.config import AgentConfig

    if args.fetch_model is not None:
        count = asyncio.run(fetch_model(args.fetch_model))
        print(f"fetched {count} file(s) into {args.fetch_model}")
        return 0
    asyncio.run(run_agent(AgentConfig.from_env()))
    return 0
