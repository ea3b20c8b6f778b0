"""`lorapack size` (being built)."""

from __future__ import annotations

import argparse

from lorapack.errors import PermanentError

HELP = "size (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    raise PermanentError("not implemented yet", reason="NotImplemented")
