"""Printing data as a table, JSON or YAML, for every subcommand whose output is data."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import yaml

__all__ = ["OutputFormat", "add_output_flag", "emit", "render_table"]

OutputFormat = Literal["table", "json", "yaml"]


def add_output_flag(parser: Any, default: OutputFormat = "table") -> None:
    """Add -o/--output {table,json,yaml}."""
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default=default,
        help=f"output format (default: {default})",
    )


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (no dependencies, copy-paste friendly)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def emit(data: Any, fmt: OutputFormat, table: str | None = None, out: TextIO | None = None) -> None:
    """Print `data` as JSON/YAML, or the pre-rendered `table` text."""
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        stream.write(yaml.safe_dump(data, sort_keys=False))
    else:
        stream.write((table if table is not None else yaml.safe_dump(data, sort_keys=False)) + "\n")
