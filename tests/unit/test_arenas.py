"""The operator caps glibc's malloc arenas unless MALLOC_ARENA_MAX says otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lorapack.arenas import limit_arenas


def test_an_explicit_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_arenas() is False


def test_glibc_arenas_are_capped() -> None:
    # In a child process: the cap is process-wide.
    code = "from lorapack.arenas import limit_arenas; print(limit_arenas())"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "True"
