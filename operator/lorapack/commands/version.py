"""`lorapack version`: the package version and the API version it serves."""

from __future__ import annotations

import argparse
import platform

from lorapack import __version__
from lorapack.commands.output import add_output_flag, emit, render_table
from lorapack.labels import API_VERSION

HELP = "print the lorapack version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_flag(parser)


def run(args: argparse.Namespace) -> int:
    data = {"version": __version__, "apiVersion": API_VERSION, "python": platform.python_version()}
    emit(data, args.output, render_table(["VERSION", "API", "PYTHON"], [list(data.values())]))
    return 0
