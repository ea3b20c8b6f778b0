"""Generate structural CustomResourceDefinitions (and the API reference) from the pydantic models.

This is lorapack's controller-gen: the models in `lorapack.api` are the single source of truth,
and `lorapack crds` (or `python -m lorapack.api.crdgen`) writes `crds/*.yaml`, the chart's
`crds/` copies and `docs/api.md`. Kubernetes needs *structural* schemas, so pydantic's JSON
Schema is rewritten: every `$ref` inlined, `title` dropped, `X | None` emitted as an optional X
(never `anyOf: [X, null]`), `propertyNames` dropped and `patternProperties` turned into
`additionalProperties` (the API server knows neither; CEL rules cover map keys), defaults kept
only in spec.

Runtime code never imports this module (an import-linter contract): it is a build tool.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolSpec, BaseModelPoolStatus
from lorapack.api.loraadapter import LoraAdapter, LoraAdapterSpec, LoraAdapterStatus
from lorapack.api.meta import CrdInfo
from lorapack.labels import GROUP, VERSION

__all__ = ["build_crd", "check_structural", "crd_documents", "main", "render_api_doc"]

Schema = dict[str, Any]

KINDS: list[tuple[type[BaseModel], type[BaseModel], type[BaseModel], CrdInfo]] = [
    (BaseModelPool, BaseModelPoolSpec, BaseModelPoolStatus, BaseModelPool.CRD),
    (LoraAdapter, LoraAdapterSpec, LoraAdapterStatus, LoraAdapter.CRD),
]

# Keys of JSON Schema that a CRD's JSONSchemaProps accepts (apiextensions/v1).
_ALLOWED = {
    "type", "format", "description", "default", "enum", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "required", "items", "properties",
    "additionalProperties", "nullable", "multipleOf",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
}  # fmt: skip


def _structural(node: Schema, defs: Schema, *, keep_defaults: bool) -> Schema:
    """Rewrite one pydantic JSON Schema node into a structural CRD schema node."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is None and "allOf" in node and len(node["allOf"]) == 1:
        ref = node.pop("allOf")[0].get("$ref")
    if ref is not None:
        target = dict(defs[ref.rsplit("/", 1)[-1]])
        target.update(node)  # the field's own description/default win over the model's
        node = target
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"union of several types is not structural: {branches}")
        merged = dict(branches[0])
        merged.update(node)
        return _structural(merged, defs, keep_defaults=keep_defaults)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    patterned = node.pop("patternProperties", None)
    if patterned and "additionalProperties" not in node:
        # dict[ConstrainedKey, V]: CRDs know no patternProperties; values keep their schema,
        # keys are checked by the model's CEL rules and by pydantic in the operator.
        node["additionalProperties"] = next(iter(patterned.values()))
    if node.get("default", 0) is None or not keep_defaults:
        node.pop("default", None)

    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {
                name: _structural(sub, defs, keep_defaults=keep_defaults)
                for name, sub in value.items()
            }
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value, defs, keep_defaults=keep_defaults)
        elif key == "additionalProperties":
            continue  # extra="forbid" gives `false`; CRDs forbid it beside properties (pruning)
        elif key == "description":
            out[key] = " ".join(str(value).split())
        elif key in _ALLOWED:
            out[key] = copy.deepcopy(value)
    if "properties" in out:
        out.setdefault("type", "object")
    if not out.get("required"):
        out.pop("required", None)
    # type and description first: the committed YAML reads like kubebuilder's.
    head = {k: out.pop(k) for k in ("type", "description") if k in out}
    return head | out


def model_schema(model: type[BaseModel], *, keep_defaults: bool) -> Schema:
    """The structural schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, keep_defaults=keep_defaults)


def build_crd(
    kind_model: type[BaseModel],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    info: CrdInfo,
) -> Schema:
    """The CustomResourceDefinition of one kind."""
    spec = model_schema(spec_model, keep_defaults=True)
    status = model_schema(status_model, keep_defaults=False)
    description = (kind_model.__doc__ or "").strip()
    schema: Schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: lorapack.io/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind: {info.kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if info.validations:
        # Root-level rules may read metadata.name (the only metadata CEL sees besides
        # generateName): names that cannot become the objects lorapack derives are refused.
        schema["x-kubernetes-validations"] = [dict(v) for v in info.validations]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "lorapack"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": info.categories,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"description": c.description} if c.description else {}),
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_documents() -> dict[str, Schema]:
    """File name -> CRD, for every kind."""
    return {
        f"{GROUP}_{info.plural}.yaml": build_crd(kind, spec, status, info)
        for kind, spec, status, info in KINDS
    }


def _walk(node: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def check_structural(crd: Schema) -> list[str]:
    """Problems that would make the API server refuse the CRD as non-structural (empty: ok)."""
    problems = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        for path, node in _walk(root, "$"):
            for key in node:
                if key not in _ALLOWED:
                    problems.append(f"{path}: key {key!r} is not allowed in a CRD schema")
            preserve = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
                "x-kubernetes-int-or-string"
            )
            if "type" not in node and not preserve:
                problems.append(f"{path}: no type")
            if node.get("type") == "null":
                problems.append(f"{path}: null type")
            if node.get("type") == "array" and "items" not in node:
                problems.append(f"{path}: array without items")
    return problems


def _type_of(node: Schema) -> str:
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: Schema) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "default" in node and node["default"] != {}:
        parts.append(f"default `{node['default']}`")
    for key, label in (("minimum", ">="), ("maximum", "<="), ("maxLength", "max length")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    for rule in node.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule['message']}")
    return "; ".join(parts)


def render_api_doc(crds: dict[str, Schema]) -> str:
    """docs/api.md: every field of both kinds, from the same schemas the API server enforces."""
    lines = [
        "# API reference (generated)",
        "",
        "Generated by `make manifests` from the pydantic models in `operator/lorapack/api/`;",
        "do not edit. Group `lorapack.io`, version `v1alpha1`, both kinds namespaced.",
        "",
    ]
    for crd in crds.values():
        names = crd["spec"]["names"]
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        lines += [
            f"## {names['kind']}",
            "",
            root["description"],
            "",
            f"Short names: {', '.join(names['shortNames'])}. Plural: `{names['plural']}`.",
            "",
        ]
        for part in ("spec", "status"):
            lines += [
                f"### {names['kind']}.{part}",
                "",
                "| Field | Type | Required | Description | Constraints |",
                "|---|---|---|---|---|",
            ]
            lines += list(_field_rows(root["properties"][part], part))
            lines.append("")
    return "\n".join(lines)


def _field_rows(node: Schema, path: str) -> Iterator[str]:
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        field = f"{path}.{name}"
        desc = " ".join(sub.get("description", "").split()).replace("|", "\\|")
        cons = _constraints(sub).replace("|", "\\|")
        req = "yes" if name in required else ""
        yield f"| `{field}` | {_type_of(sub)} | {req} | {desc} | {cons} |"
        if sub.get("type") == "object" and "properties" in sub:
            yield from _field_rows(sub, field)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from _field_rows(items, f"{field}[]")


def dump_yaml(doc: Schema) -> str:
    """Stable YAML for committed files."""
    return yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def write_all(out_dirs: list[Path], docs: Path | None) -> list[Path]:
    """Write the CRDs into each folder (and the API reference); returns the files written."""
    crds = crd_documents()
    written = []
    for folder in out_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        for name, crd in crds.items():
            problems = check_structural(crd)
            if problems:
                raise ValueError(f"{name} is not structural: {problems}")
            (folder / name).write_text(dump_yaml(crd))
            written.append(folder / name)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(render_api_doc(crds))
        written.append(docs)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lorapack.api.crdgen` and `lorapack crds`."""
    parser = argparse.ArgumentParser(prog="lorapack crds", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", action="append", type=Path, help="folder for the CRD YAML (repeatable)"
    )
    parser.add_argument("--docs", type=Path, help="also write the API reference here")
    parser.add_argument("--stdout", action="store_true", help="print the CRDs instead")
    args = parser.parse_args(argv)
    if args.stdout or not args.out:
        sys.stdout.write("---\n".join(dump_yaml(c) for c in crd_documents().values()))
        return 0
    for path in write_all(args.out, args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
