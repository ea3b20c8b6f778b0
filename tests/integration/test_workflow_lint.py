"""The GitHub Actions workflows pass actionlint, built from the Go module proxy like the other tools
(hack/tools/actionlint/build.sh, cached in ~/.cache/lorapack/bin), and actionlint really fails a
broken workflow (so a green run means something). shellcheck, when installed, checks the `run:`
scripts too.

Skipped only when Go is missing and no build is cached, unless LORAPACK_REQUIRE_CLUSTER is set
(`make test`, CI): then that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "hack" / "tools" / "actionlint" / "build.sh"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    if shutil.which("go") is None and not os.environ.get("LORAPACK_REQUIRE_CLUSTER"):
        pytest.skip("Go is not installed: actionlint cannot be built")
    result = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"building actionlint failed:\n{result.stderr}"
    return Path(result.stdout.strip())


def lint(binary: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-no-color", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_workflows_pass_actionlint(actionlint: Path) -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "release.yml"}
    result = lint(actionlint, *workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    needs: [nowhere]\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with: {fetch-depth: 0, no-such-input: true}\n"
        "      - run: echo ${{ steps.missing.outputs.x }}\n"
    )
    result = lint(actionlint, broken)
    assert result.returncode == 1
    for problem in ("nowhere", "no-such-input"):
        assert problem in result.stdout, result.stdout
