"""The release pipeline (.github/workflows/release.yml) publishes what the chart, the CLI and the
docs say it does, under one version.

* One version: `lorapack version`, the package metadata, Chart.yaml's version and appVersion,
  the operator's default agent image and the tag the workflow accepts are the same string
  (.github/scripts/release_version.py, which the workflow runs first, refuses anything else).
* The chart's default image is exactly what the workflow pushes: `helm template` with default
  values renders `<the workflow's IMAGE>:<version>` for the operator and its agents.
* The workflow pushes a multi-arch image (amd64, arm64) built from hack/image/Containerfile with
  SBOM and provenance, signs image and chart with cosign, pushes the chart to the OCI registry
  the docs install from, and publishes the sdist and wheel to PyPI with trusted publishing, all
  only after CI (ci.yml, which runs .ci/run) passed on the tag.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from lorapack import __version__
from lorapack.cli import main
from lorapack.config import OperatorConfig
from tests.unit.test_chart import Helm, helm  # noqa: F401  (the session fixture)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPT = ROOT / ".github" / "scripts" / "release_version.py"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


RELEASE = load("release.yml")
CI = load("ci.yml")


def stamp_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_version", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = RELEASE["jobs"][job]["steps"]
    return found


def step_using(job: str, action: str) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if str(s.get("uses", "")).startswith(action + "@")]
    return step


def runs(job: str) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


# ---------------------------------------------------------------------------- one version


def chart() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "charts/lorapack/Chart.yaml").read_text())
    return data


def test_one_version_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert chart()["version"] == __version__
    assert chart()["appVersion"] == __version__
    assert main(["version", "-o", "json"]) == 0
    assert f'"version": "{__version__}"' in capsys.readouterr().out
    assert OperatorConfig().agent_image == f"{RELEASE['env']['IMAGE']}:{__version__}"


def test_the_stamp_script_accepts_the_tag_of_this_version() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tag",
            f"v{__version__}",
            "--image",
            RELEASE["env"]["IMAGE"],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"version={__version__}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the files the stamp script reads."""
    for rel in (
        "operator/lorapack/__init__.py",
        "charts/lorapack/Chart.yaml",
        "charts/lorapack/values.yaml",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("edit", "tag", "words"),
    [
        pytest.param(None, "v9.9.9", "does not match __version__", id="wrong-tag"),
        pytest.param(
            ("charts/lorapack/Chart.yaml", f'appVersion: "{__version__}"', 'appVersion: "9.9.9"'),
            None,
            "appVersion is '9.9.9'",
            id="chart-app-version",
        ),
        pytest.param(
            ("charts/lorapack/Chart.yaml", f"version: {__version__}", "version: 9.9.9"),
            None,
            "Chart.yaml: version is '9.9.9'",
            id="chart-version",
        ),
        pytest.param(
            ("charts/lorapack/values.yaml", 'tag: ""', 'tag: "latest"'),
            None,
            "leave it empty",
            id="chart-pins-a-tag",
        ),
        pytest.param(
            (
                "charts/lorapack/values.yaml",
                "repository: ghcr.io/lorapack/lorapack",
                "repository: x/y",
            ),
            None,
            "image.repository is 'x/y'",
            id="chart-image-elsewhere",
        ),
        pytest.param(
            ("operator/lorapack/__init__.py", f'"{__version__}"', '"1.0.0rc1"'),
            "v1.0.0rc1",
            "is not X.Y.Z",
            id="not-semver-and-pep440",
        ),
    ],
)
def test_the_stamp_script_refuses_any_disagreement(
    tree: Path, edit: tuple[str, str, str] | None, tag: str | None, words: str
) -> None:
    if edit is not None:
        _edit(tree / edit[0], edit[1], edit[2])
    _, errors = stamp_script().problems(tag or f"v{__version__}", RELEASE["env"]["IMAGE"], tree)
    assert any(words in e for e in errors), errors


def test_the_release_runs_the_stamp_check_first_and_only_on_version_tags() -> None:
    assert RELEASE["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    assert "release_version.py" in runs("version")
    publishing = ("python", "image", "chart", "pypi", "github-release")
    needs: dict[str, set[str]] = {}
    for name, job in RELEASE["jobs"].items():
        wanted = job.get("needs", [])
        needs[name] = set([wanted] if isinstance(wanted, str) else wanted)

    def upstream(job: str) -> set[str]:
        found = set(needs[job])
        for parent in needs[job]:
            found |= upstream(parent)
        return found

    for job in publishing:
        assert {"version", "ci"} <= upstream(job), f"{job} must wait for the stamp check and CI"


def test_ci_runs_the_readme_test_command() -> None:
    assert RELEASE["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert "workflow_call" in CI["on"]
    (job,) = CI["jobs"].values()
    assert any(s.get("run") == "bash .ci/run" for s in job["steps"])
    assert (ROOT / ".ci" / "run").is_file()


# --------------------------------------------------------------------------- what is pushed


def test_image_is_multi_arch_with_sbom_provenance_and_signature() -> None:
    build = step_using("image", "docker/build-push-action")["with"]
    assert build["file"] == "hack/image/Containerfile"
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["tags"] == "${{ env.IMAGE }}:${{ needs.version.outputs.version }}"
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in runs("image")
    assert RELEASE["jobs"]["image"]["permissions"]["id-token"] == "write"  # keyless signing


def test_the_containerfile_the_release_builds_exists() -> None:
    assert (ROOT / "hack" / "image" / "Containerfile").is_file(), (
        "release.yml builds hack/image/Containerfile (`make image` uses the same file)"
    )


def test_chart_is_pushed_as_an_oci_artifact_and_signed() -> None:
    script = runs("chart")
    assert 'helm push "dist/lorapack-${VERSION}.tgz" "$CHARTS"' in script
    assert "cosign sign --yes" in script
    assert RELEASE["env"]["CHARTS"] == "oci://ghcr.io/lorapack/charts"


def test_python_package_is_published_with_trusted_publishing() -> None:
    job = RELEASE["jobs"]["pypi"]
    assert job["permissions"] == {"id-token": "write"}  # OIDC, no API token
    assert job["environment"]["name"] == "pypi"
    assert str(job["steps"][-1]["uses"]).startswith("pypa/gh-action-pypi-publish@")
    assert "python -m build --sdist --wheel" in runs("python")
    assert "secrets.PYPI" not in (WORKFLOWS / "release.yml").read_text()


def test_every_action_is_pinned_to_a_version() -> None:
    for workflow in (RELEASE, CI):
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses:
                    assert re.search(r"@(v\d+|release/v\d+)$", uses), uses


def test_the_chart_installs_exactly_the_image_the_release_pushes(helm: Helm) -> None:  # noqa: F811
    rendered = helm.template({})
    pushed = f"{RELEASE['env']['IMAGE']}:{__version__}"
    images = set(re.findall(r"^\s+image:\s*\"?([^\s\"]+)", rendered, re.M))
    assert images == {pushed}
    assert f'value: "{pushed}"' in rendered or f"value: {pushed}" in rendered  # the agents' image
