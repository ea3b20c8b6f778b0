#!/usr/bin/env python3
"""The release's one version, checked everywhere it is stamped, before anything is published.

Run by .github/workflows/release.yml on a tag push (and by tests/unit/test_release.py):

    python .github/scripts/release_version.py --tag v0.1.0 --image ghcr.io/lorapack/lorapack

The version lives in operator/lorapack/__init__.py (`__version__`: the Python package's version,
which `lorapack version` prints and the operator's default agent image carries). The tag must be
`v<version>`; charts/lorapack/Chart.yaml's `version` and `appVersion` must equal it; the chart's
default image must be `--image` with no tag of its own (the chart then uses appVersion, so the
chart installs exactly the image the workflow pushes). Versions are plain X.Y.Z: the one string
is then valid for PyPI (PEP 440), Helm (SemVer) and image tags alike.

Prints `version=<version>` (for $GITHUB_OUTPUT); exits 1 with one line per mismatch, naming the
file and the fix. Standard library only: it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def _field(text: str, name: str, path: str) -> str:
    """A top-level `name: value` of a YAML file (quotes dropped), without a YAML library."""
    match = re.search(rf"^{name}:\s*(.+?)\s*(#.*)?$", text, re.M)
    if match is None:
        raise SystemExit(f"error: {path} has no top-level {name}")
    return match.group(1).strip("\"'")


def _image(values: str) -> tuple[str, str]:
    """(repository, tag) of the `image:` block of values.yaml."""
    block = re.search(r"^image:\n((?:[ #].*\n|\n)+)", values, re.M)
    if block is None:
        raise SystemExit("error: charts/lorapack/values.yaml has no image: block")
    body = block.group(1)
    repo = re.search(r"^\s+repository:\s*(\S+)", body, re.M)
    tag = re.search(r"^\s+tag:\s*(\S*)", body, re.M)
    return (repo.group(1) if repo else "", (tag.group(1) if tag else "").strip("\"'"))


def problems(tag: str, image: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The version and what disagrees with it."""
    init = (root / "operator/lorapack/__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    version = found.group(1) if found else ""
    errors = []
    if not VERSION_RE.match(version):
        errors.append(
            f"operator/lorapack/__init__.py: __version__ {version!r} is not X.Y.Z (one string "
            "must be valid for PyPI, Helm and image tags)"
        )
    if tag != f"v{version}":
        errors.append(
            f"tag {tag!r} does not match __version__ {version!r}: tag v{version}, or set "
            f"__version__ in operator/lorapack/__init__.py to {tag.removeprefix('v')!r} first"
        )
    chart_path = "charts/lorapack/Chart.yaml"
    chart = (root / chart_path).read_text(encoding="utf-8")
    for name in ("version", "appVersion"):
        value = _field(chart, name, chart_path)
        if value != version:
            errors.append(f"{chart_path}: {name} is {value!r}, not {version!r}: set it to it")
    repository, image_tag = _image((root / "charts/lorapack/values.yaml").read_text("utf-8"))
    if repository != image:
        errors.append(
            f"charts/lorapack/values.yaml: image.repository is {repository!r}, but the release "
            f"pushes {image!r}: make them the same"
        )
    if image_tag:
        errors.append(
            f"charts/lorapack/values.yaml: image.tag is {image_tag!r}: leave it empty so the "
            "chart uses its appVersion, the tag the release pushes"
        )
    return version, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="the pushed tag, e.g. v0.1.0")
    parser.add_argument("--image", required=True, help="the image repository the release pushes")
    args = parser.parse_args(argv)
    version, errors = problems(args.tag, args.image)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"version={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
