"""The chart's PodMonitor scrapes what the operator really runs, and the chart's values point at
sections that exist.

* `metrics.podMonitor.enabled`: the PodMonitor's selector matches the labels of the pool pods
  lorapack renders (manifests.pool.statefulset), its port is the vllm container's, its
  namespaces are the pool namespaces (any namespace in cluster-wide mode);
* every `README.md, "<section>"` and `docs/<page>.md, "<section>"` a comment of values.yaml
  cites is a heading of that page (values.yaml used to send readers to a missing "Alerts").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.manifests import pool as pool_manifests
from tests.builders import make_pool
from tests.unit.test_chart import Helm, helm  # noqa: F401  (the session fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lorapack"


def pod_monitor(helm: Helm, values: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    result = helm.run(
        "template", "lorapack", str(CHART), "-n", "lorapack-system",
        "--show-only", "templates/podmonitor.yaml", values=values,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = yaml.safe_load(result.stdout)
    return doc


def test_pod_monitor_is_off_by_default(helm: Helm) -> None:  # noqa: F811
    result = helm.run(
        "template", "lorapack", str(CHART), "--show-only", "templates/podmonitor.yaml"
    )
    assert result.returncode != 0  # nothing rendered from that template
    assert "could not find template" in result.stderr


def test_pod_monitor_scrapes_the_pool_pods_vllm_metrics(helm: Helm) -> None:  # noqa: F811
    monitor = pod_monitor(
        helm, {"metrics": {"podMonitor": {"enabled": True}}, "poolNamespaces": ["ml-platform"]}
    )
    assert monitor["kind"] == "PodMonitor"
    pool = make_pool(namespace="ml-platform")
    pool["metadata"]["uid"] = "u"
    sts = pool_manifests.statefulset(
        BaseModelPool.model_validate(pool), replicas=1, agent_image="agent:1"
    )
    template = sts["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    vllm = next(c for c in template["spec"]["containers"] if c["name"] == "vllm")
    assert endpoint["port"] in {p["name"] for p in vllm["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml-platform"]}
    assert "lorapack.io/pool" in monitor["spec"]["podTargetLabels"]
    assert "lorapack.io/pool" in template["metadata"]["labels"]


def test_pod_monitor_in_cluster_wide_mode_looks_everywhere(helm: Helm) -> None:  # noqa: F811
    monitor = pod_monitor(helm, {"metrics": {"podMonitor": {"enabled": True}}, "clusterWide": True})
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def headings(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


CITATIONS = re.findall(
    r"((?:README|docs/[\w/.-]+)\.md), \"([^\"]+)\"", (CHART / "values.yaml").read_text()
)


def test_values_cite_sections() -> None:
    assert ("README.md", "Monitoring") in CITATIONS  # the alerts comment, once "Alerts"


@pytest.mark.parametrize(("page", "section"), CITATIONS, ids=[f"{p}:{s}" for p, s in CITATIONS])
def test_values_cite_sections_that_exist(page: str, section: str) -> None:
    path = CHART / page if page == "README.md" else ROOT / page
    names = headings(path)
    # Sections are cited by the start of their heading ("RBAC" for "RBAC (what the chart
    # grants)").
    assert any(h == section or h.startswith(section + " ") for h in names), (
        f'values.yaml cites {page}, "{section}", but {page} has no such section: {sorted(names)}'
    )
