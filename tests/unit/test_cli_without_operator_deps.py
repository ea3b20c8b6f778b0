"""`pipx install lorapack` gives platform engineers `plan`, `size` and `model check`: those run
without importing the operator's heavy dependencies (kopf, the Kubernetes client, boto3, aiohttp,
httpx, prometheus-client), so they start fast and would keep working if those were ever made
optional. Each command runs in a fresh interpreter where importing any of them fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "kopf",
    "kubernetes_asyncio",
    "boto3",
    "botocore",
    "s3transfer",
    "aiohttp",
    "httpx",
    "prometheus_client",
)
_BLOCKER = textwrap.dedent(
    f"""
    import sys
    from importlib.abc import MetaPathFinder

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ImportError(f"{{name}} is blocked: this command must not need it")
            return None

    sys.meta_path.insert(0, Block())
    from lorapack.cli import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def lorapack(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )


def test_the_blocker_blocks() -> None:
    result = lorapack("run", "--standalone")
    assert result.returncode != 0
    assert "is blocked" in result.stderr


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        pytest.param(["--help"], 0, "lorapack", id="help"),
        pytest.param(["version"], 0, "VERSION", id="version"),
        pytest.param(["size", "--model", "llama-3-8b", "--gpu", "L4"], 0, "KV CACHE", id="size"),
        pytest.param(["size", "--list"], 0, "A10G", id="size-list"),
        # The example holds one adapter that cannot be placed: exit 1 with the plan printed.
        pytest.param(["plan", "-f", "examples/gitops"], 1, "NOT PLACED", id="plan"),
        pytest.param(["model", "check", "examples"], 1, "has no config.json", id="model-check"),
    ],
)
def test_platform_commands_run_without_the_operator_deps(
    argv: list[str], code: int, words: str
) -> None:
    result = lorapack(*argv)
    assert result.returncode == code, result.stderr
    assert words in result.stdout + result.stderr
    assert "is blocked" not in result.stderr
