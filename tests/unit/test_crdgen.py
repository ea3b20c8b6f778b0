"""The CRD generator: structural schemas, CEL rules, and committed files equal to generated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.api import crdgen

ROOT = Path(__file__).resolve().parents[2]


def _schema(plural: str) -> dict[str, Any]:
    crd = crdgen.crd_documents()[f"lorapack.io_{plural}.yaml"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("name", sorted(crdgen.crd_documents()))
def test_generated_crds_are_structural(name: str) -> None:
    assert crdgen.check_structural(crdgen.crd_documents()[name]) == []


def test_check_structural_catches_problems() -> None:
    crd = crdgen.crd_documents()["lorapack.io_loraadapters.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["broken"] = {"$ref": "#/$defs/X"}
    spec["properties"]["nulls"] = {"type": "null"}
    problems = crdgen.check_structural(crd)
    assert any("'$ref'" in p for p in problems)
    assert any("broken: no type" in p for p in problems)
    assert any("nulls: null type" in p for p in problems)


@pytest.mark.parametrize("name", sorted(crdgen.crd_documents()))
@pytest.mark.parametrize("folder", ["crds", "charts/lorapack/crds"])
def test_committed_crds_match_models(name: str, folder: str) -> None:
    committed = yaml.safe_load((ROOT / folder / name).read_text())
    assert committed == crdgen.crd_documents()[name], "run `make manifests`"


def test_committed_api_doc_matches_models() -> None:
    want = crdgen.render_api_doc(crdgen.crd_documents())
    assert (ROOT / "docs/api.md").read_text() == want, "run `make manifests`"


def test_no_ref_no_anyof_no_title_anywhere() -> None:
    text = yaml.safe_dump(crdgen.crd_documents())
    for word in ("$ref", "anyOf", "allOf", "title:", "$defs", "propertyNames"):
        assert word not in text


def test_optional_fields_are_not_required_and_not_nullable() -> None:
    engine = _schema("basemodelpools")["properties"]["spec"]["properties"]["engine"]
    assert "maxCpuLoras" not in engine.get("required", [])
    assert engine["properties"]["maxCpuLoras"]["type"] == "integer"
    assert "nullable" not in engine["properties"]["maxCpuLoras"]


def test_enums_defaults_and_cel_rules() -> None:
    spec = _schema("basemodelpools")["properties"]["spec"]
    rank = spec["properties"]["engine"]["properties"]["maxLoraRank"]
    assert rank["enum"] == [1, 8, 16, 32, 64, 128, 256, 320, 512]
    assert rank["default"] == 64
    rules = [r["rule"] for r in spec["properties"]["replicas"]["x-kubernetes-validations"]]
    assert rules == ["self.min <= self.max"]
    engine_rules = spec["properties"]["engine"]["x-kubernetes-validations"]
    assert "self.maxCpuLoras >= self.maxLoras" in engine_rules[0]["rule"]
    assert spec["properties"]["engine"]["default"]["maxLoraRank"] == 64
    assert spec["properties"]["replicas"]["default"] == {"min": 1, "max": 1}


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    for plural in ("basemodelpools", "loraadapters"):
        conditions = _schema(plural)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) >= {"type", "status", "reason"}


def test_status_schema_has_no_defaults() -> None:
    text = yaml.safe_dump(_schema("loraadapters")["properties"]["status"])
    assert "default:" not in text


def test_crd_metadata() -> None:
    crd = crdgen.crd_documents()["lorapack.io_loraadapters.yaml"]
    assert crd["spec"]["names"]["shortNames"] == ["lora"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    assert '.status.conditions[?(@.type=="Ready")].status' in paths


def test_descriptions_come_from_docstrings() -> None:
    props = _schema("loraadapters")["properties"]["spec"]["properties"]
    assert props["servedName"]["description"].startswith("Name clients put in the request")
    assert "\n" not in props["servedName"]["description"]
