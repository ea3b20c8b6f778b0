"""docs/install.md (day one on a GPU cloud) says only what is true of this checkout.

Its commands need a real cloud, so they are not run; instead every claim a reader acts on is
checked against its source: the published addresses and versions against the release workflow,
`helm --set` keys against the chart's values, `lorapack` commands against the CLI's parser, each
YAML fragment against the API models (merged into a valid pool), the GPU table against the
catalog, the team-permission table and `kubectl auth can-i` answers against what
tests/integration/test_team_roles.py proves on a real API server, and stated defaults against
the code.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack import __version__
from lorapack.api.basemodelpool import DEFAULT_ENGINE_RESOURCES, BaseModelPool
from lorapack.cli import build_parser
from lorapack.planning.basemodel import TOKENIZER_FILES
from lorapack.sizing.catalog import GPUS
from tests.builders import deep_merge, make_pool
from tests.integration.test_team_roles import ADAPTERS, MATRIX, POOLS

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "install.md"
TEXT = PAGE.read_text(encoding="utf-8")
RELEASE = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Pages that tell readers how to install or upgrade from the published artifacts.
INSTALL_PAGES = [PAGE, ROOT / "docs/operations.md", ROOT / "docs/gitops.md"]


def blocks(lang: str, text: str = TEXT) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1) == lang]


def commands(text: str = TEXT) -> list[str]:
    found = []
    for body in blocks("console", text):
        found += [line[2:] for line in body.splitlines() if line.startswith("$ ")]
    return found


def test_the_page_has_what_this_test_reads() -> None:
    assert len(commands()) >= 10
    assert len(blocks("yaml")) >= 4


# ------------------------------------------------------------------ published artifacts


@pytest.mark.parametrize("page", INSTALL_PAGES, ids=lambda p: p.name)
def test_published_addresses_and_versions_are_the_releases(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    image = RELEASE["env"]["IMAGE"]
    chart = f"{RELEASE['env']['CHARTS']}/lorapack"
    for tag in re.findall(rf"{re.escape(image)}:([\w.-]+)", text):
        assert tag == __version__, f"{page.name}: {image}:{tag}"
    for ref in re.findall(r"oci://[\w./-]+", text):
        # The chart, or the repository holding it (a Flux HelmRepository's url).
        assert ref in (chart, RELEASE["env"]["CHARTS"]), f"{page.name}: {ref} is not the release's"
    for version in re.findall(r"oci://\S+ --version ([\w.-]+)", text):
        assert version == __version__
    for version in re.findall(r"lorapack==([\w.-]+)", text):
        assert version == __version__


def test_install_uses_the_published_chart() -> None:
    helm = [c for c in commands() if c.startswith("helm install")]
    assert helm and all(f"{RELEASE['env']['CHARTS']}/lorapack" in c for c in helm)
    assert f"pipx install lorapack=={__version__}" in commands()


def _values_paths(node: Any, prefix: str = "") -> set[str]:
    paths = {prefix.rstrip(".")} if prefix else set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths |= _values_paths(value, f"{prefix}{key}.")
    return paths


VALUES = _values_paths(yaml.safe_load((ROOT / "charts/lorapack/values.yaml").read_text()))


@pytest.mark.parametrize(
    "page", [*INSTALL_PAGES, ROOT / "charts/lorapack/README.md"], ids=lambda p: p.name
)
def test_helm_set_names_chart_values(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for key in re.findall(r"--set '?([\w.\\-]+)=", text):
        path = key.replace("\\.", "\0").split(".")[0:]
        # An escaped dot is part of a map key (serviceAccount.annotations.eks\.amazonaws\.com/..).
        head = ".".join(p for p in path if "\0" not in p and "/" not in p)
        assert head in VALUES, f"{page.name}: --set {key}: no value {head} in values.yaml"
    for key in re.findall(r"\b([a-z][\w]*(?:\.[a-zA-Z]\w*)+)=true\b", text):
        if key.split(".")[0] in {"metrics", "rbac", "grafanaDashboard", "podDisruptionBudget"}:
            assert key in VALUES, f"{page.name}: {key} is not a chart value"


# ------------------------------------------------------------------------ lorapack CLI


@pytest.mark.parametrize("line", [c for c in commands() if c.startswith("lorapack ")])
def test_lorapack_commands_parse(line: str) -> None:
    argv = shlex.split(line)[1:]
    args = build_parser().parse_args(argv)  # SystemExit (a usage error) fails the test
    assert args.command in ("model", "size", "plan")


def test_gpu_memory_example_sizes_an_unknown_gpu() -> None:
    assert "lorapack size --gpu RTX-6000-Ada --gpu-memory 47Gi" in TEXT


# ------------------------------------------------------------------------- pool fragments


@pytest.mark.parametrize("fragment", blocks("yaml"))
def test_pool_fragments_validate(fragment: str) -> None:
    doc = yaml.safe_load(fragment)
    assert set(doc) == {"spec"}, "fragments show part of a BaseModelPool's spec"
    pool = BaseModelPool.model_validate(deep_merge(make_pool(), doc))
    assert pool.spec is not None


def test_defaults_the_page_states() -> None:
    requests = DEFAULT_ENGINE_RESOURCES["requests"]
    assert requests == {"cpu": "2", "memory": "16Gi"}
    assert "unset, the vllm container requests 2 CPUs and 16Gi" in TEXT


def test_the_tokenizer_files_named_are_the_checks() -> None:
    for files in TOKENIZER_FILES[:3]:
        assert all(f"`{f}`" in TEXT for f in files)


GPU_ROW = re.compile(r"^\| ([\w.-]+) \| ([\w-]+) \| ([\w-]+) \| ([\w, -]+) \|$", re.M)


def test_gpu_table_is_the_catalog() -> None:
    rows = [m.groups() for m in GPU_ROW.finditer(TEXT) if m.group(2).startswith("NVIDIA-")]
    want = [
        (
            g.key,
            g.product_label,
            g.gke_accelerator or "-",
            ", ".join(g.aws_instances) or "-",
        )
        for g in GPUS.values()
    ]
    assert rows == want


@pytest.mark.parametrize("selector", re.findall(r"nodeSelector: \{([^}]+)\}", TEXT))
def test_node_selectors_use_labels_of_the_catalog(selector: str) -> None:
    key, _, value = (part.strip() for part in selector.partition(":"))
    if key == "nvidia.com/gpu.product":
        assert value in {g.product_label for g in GPUS.values()}
    elif key == "cloud.google.com/gke-accelerator":
        assert value in {g.gke_accelerator for g in GPUS.values()}
    else:
        assert key == "node.kubernetes.io/instance-type"
        family = value.split(".")[0]
        assert any(family in g.aws_instances for g in GPUS.values())


# -------------------------------------------------------------------- team permissions


def _allowed(role: str, resource: str) -> tuple[set[str], set[str]]:
    yes = {v for r, v, res, ok in MATRIX if r == role and res == resource and ok}
    no = {v for r, v, res, ok in MATRIX if r == role and res == resource and not ok}
    return yes, no


def test_permission_table_is_what_the_api_server_answers() -> None:
    rows = re.findall(r"^\| `(view|edit|admin)` \| ([^|]+) \| ([^|]+) \|", TEXT, re.M)
    assert [r[0] for r in rows] == ["view", "edit", "admin"]
    shown: dict[str, set[str]] = {}
    verb = re.compile(r"\b(get|list|watch|create|update|patch|delete)\b")
    for role, adapters, pools in rows:
        verbs = shown["edit"] if "as `edit`" in adapters else set(verb.findall(adapters))
        shown[role] = verbs | (shown["view"] if role == "edit" else set())
        yes, no = _allowed(role, ADAPTERS)
        assert yes <= shown[role], (role, yes - shown[role])
        assert not no & shown[role], (role, no & shown[role])
        pool_verbs = set(verb.findall(pools))
        assert pool_verbs == {"get", "list", "watch"}, role
        yes, no = _allowed(role, POOLS)
        assert yes <= pool_verbs and not no & pool_verbs, role


def test_can_i_answers_on_the_page_match_the_matrix() -> None:
    for body in blocks("console"):
        lines = body.splitlines()
        for i, line in enumerate(lines[:-1]):
            if "kubectl auth can-i" not in line:
                continue
            verb, resource = shlex.split(line[2:])[3:5]
            want = lines[i + 1].strip() == "yes"
            (ok,) = {a for r, v, res, a in MATRIX if r == "edit" and v == verb and res == resource}
            assert ok == want, line
