"""The product wheel holds the product only: `pip wheel --no-deps .` of a clean copy of the tree.

The image (tests/realnode/test_image.py) proves the same wheel imports with only the runtime
dependencies; this is the fast check of its file list (issue 13: no test world in the product).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lorapack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]  # builds a wheel (~10-20 s)
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # A clean copy: setuptools' build/ folder in a working tree can hold deleted modules.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator", ignore=_JUNK)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("lorapack-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_holds_only_the_lorapack_package(wheel_names: list[str]) -> None:
    dist_info = f"lorapack-{lorapack.__version__}.dist-info/"
    stray = [n for n in wheel_names if not n.startswith(("lorapack/", dist_info))]
    assert stray == []
    assert not [n for n in wheel_names if "testworld" in n or "/tests/" in n or "conftest" in n]


def test_wheel_has_every_product_module_and_nothing_else(wheel_names: list[str]) -> None:
    package = ROOT / "operator" / "lorapack"
    in_tree = {
        "lorapack/" + p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    in_wheel = {n for n in wheel_names if n.endswith(".py")}
    assert in_wheel == in_tree
    assert "lorapack/py.typed" in wheel_names
