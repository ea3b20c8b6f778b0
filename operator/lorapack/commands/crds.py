"""`lorapack crds`: write the CustomResourceDefinitions generated from the typed models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write or print the CRDs generated from the API models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", action="append", type=Path, help="folder for the CRD YAML files (repeatable)"
    )
    parser.add_argument("--docs", type=Path, help="also write the API reference (Markdown) here")


def run(args: argparse.Namespace) -> int:
    # The generator is a build tool: imported only when this command runs.
    from lorapack.api import crdgen

    if not args.out:
        docs = crdgen.crd_documents().values()
        sys.stdout.write("---\n".join(crdgen.dump_yaml(d) for d in docs))
        return 0
    for path in crdgen.write_all(args.out, args.docs):
        print(f"wrote {path}")
    return 0
