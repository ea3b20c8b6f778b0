"""What `lorapack plan` reads: BaseModelPool and LoraAdapter YAML and adapter_config.json files.

Files or folders (multi-document YAML) or standard input (a kustomize render) are validated with
the operator's own models and the artifact checks of `planning.artifact`; every problem becomes
a refusal in the `PlanInput`, with the reason words the operator writes in status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.errors import InvalidSpec
from lorapack.keys import object_key as obj_key
from lorapack.labels import ADAPTER_KIND, GROUP, POOL_KIND
from lorapack.planning.admission import served_name_conflict
from lorapack.planning.artifact import CONFIG_FILE, ArtifactFacts, ArtifactFile, inspect_artifact
from lorapack.sizing.adapters import adapter_file_bytes, lora_params, lora_tensor_count
from lorapack.sizing.catalog import lookup_model

__all__ = [
    "PlanAdapter",
    "PlanInput",
    "check_served_names",
    "read_file",
    "read_metadata",
    "read_text",
    "yaml_files",
]

_YAML_SUFFIXES = (".yaml", ".yml")
_KINDS = (POOL_KIND, ADAPTER_KIND)


@dataclass
class PlanAdapter:
    """A valid LoraAdapter from the files, with what its adapter_config.json said."""

    obj: LoraAdapter
    where: str
    folder: Path
    facts: ArtifactFacts | None = None
    size: int = 0


@dataclass
class PlanInput:
    """Everything read, and every refusal."""

    pools: list[tuple[BaseModelPool, str]] = field(default_factory=list)
    adapters: list[PlanAdapter] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)
    invalid_pools: dict[str, str] = field(default_factory=dict)
    """base model name -> key of an invalid pool for it (its cause is printed first)."""

    def refuse(self, where: str, what: str, reason: str, message: str) -> None:
        self.invalid.append({"source": where, "object": what, "reason": reason, "message": message})


def yaml_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from (p for p in path.rglob("*") if p.suffix in _YAML_SUFFIXES and p.is_file())
    else:
        yield path


def read_file(path: Path, namespace: str | None, report: PlanInput) -> None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        report.refuse(str(path), "file", "InvalidYAML", f"cannot read YAML: {err}")
        return
    read_text(text, str(path), path.parent, namespace, report)


def read_text(
    text: str, source: str, folder: Path, namespace: str | None, report: PlanInput
) -> None:
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        report.refuse(source, "file", "InvalidYAML", f"cannot read YAML: {err}")
        return
    for index, doc in enumerate(documents, start=1):
        where = f"{source}: document {index}"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            report.refuse(where, "document", "InvalidSpec", "not a Kubernetes object (a mapping)")
            continue
        group = str(doc.get("apiVersion", "")).partition("/")[0]
        kind = doc.get("kind")
        if group != GROUP:
            report.ignored += 1  # Namespaces, Secrets...: not lorapack's to check
            continue
        raw_meta = doc.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        effective = meta.get("namespace") or namespace or "default"
        name = f"{kind} {effective}/{meta.get('name', '?')}"
        if kind not in _KINDS:
            report.refuse(
                where, name, "InvalidSpec", f"unknown kind {kind!r}: use {' or '.join(_KINDS)}"
            )
            continue
        model = BaseModelPool if kind == POOL_KIND else LoraAdapter
        try:
            obj = model.model_validate(doc)
        except ValidationError as err:
            report.refuse(where, name, "InvalidSpec", _validation_text(err))
            if kind == POOL_KIND:
                base = ((doc.get("spec") or {}).get("baseModel") or {}).get("name")
                report.invalid_pools[str(base)] = name.partition(" ")[2]
            continue
        if not obj.metadata.namespace and namespace is None:
            report.warnings.append(
                f"{name}: metadata.namespace is not set; assumed default (pass -n with the "
                "namespace your GitOps tool applies it to)"
            )
        obj.metadata.namespace = obj.metadata.namespace or effective
        if not obj.metadata.name:
            report.refuse(where, name, "InvalidSpec", "metadata.name: required")
            continue
        key = (kind, obj_key(obj.metadata.namespace, obj.metadata.name))
        if key in report.seen:
            report.refuse(where, name, "InvalidSpec", "defined twice: keep one definition")
            continue
        report.seen.add(key)
        if isinstance(obj, BaseModelPool):
            report.pools.append((obj, where))
        else:
            assert isinstance(obj, LoraAdapter)
            report.adapters.append(PlanAdapter(obj, where, folder))


def _validation_text(error: ValidationError) -> str:
    # The same shape as lorapack.cli.format_validation_error (which this layer may not import):
    # one "field.path: problem" per line, camelCase as written in the YAML.
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"] if p != "__root__")
        lines.append(f"{path or 'object'}: {item['msg']}")
    return "; ".join(lines)


def _config_path(adapter: PlanAdapter, overrides: dict[str, Path]) -> Path | None:
    meta = adapter.obj.metadata
    for name in (obj_key(meta.namespace, meta.name), meta.name):
        if name in overrides:
            return overrides[name]
    for candidate in (
        adapter.folder / meta.name / CONFIG_FILE,
        adapter.folder / f"{meta.name}.{CONFIG_FILE}",
    ):
        if candidate.is_file():
            return candidate
    return None


def read_metadata(adapter: PlanAdapter, overrides: dict[str, Path], report: PlanInput) -> None:
    """Inspect the adapter's adapter_config.json (and weight files, when they are there too)."""
    meta = adapter.obj.metadata
    label = f"{ADAPTER_KIND} {obj_key(meta.namespace, meta.name)}"
    path = _config_path(adapter, overrides)
    if path is None:
        if adapter.obj.spec.rank is None:
            report.warnings.append(
                f"{label}: rank unknown (no spec.rank, no {CONFIG_FILE} found next to "
                f"{adapter.where.partition(':')[0]}): assumed to fit"
            )
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        report.refuse(str(path), label, "UnsupportedAdapter", f"cannot read {CONFIG_FILE}: {err}")
        return
    if not isinstance(config, dict):
        report.refuse(str(path), label, "UnsupportedAdapter", f"{CONFIG_FILE} is not an object")
        return
    # A folder holding the config is the adapter's folder: its files are the listing. A lone
    # <name>.adapter_config.json says nothing about the weights, which live elsewhere.
    folder = path.parent if path.name == CONFIG_FILE else None
    files = [ArtifactFile(CONFIG_FILE, path.stat().st_size)]
    if folder is not None:
        files = [
            ArtifactFile(str(f.relative_to(folder)), f.stat().st_size)
            for f in sorted(folder.rglob("*"))
            if f.is_file()
        ]
    facts, problems = inspect_artifact(config, files)
    weights_known = facts is not None and facts.weights != "none"
    problems = [p for p in problems if weights_known or p.reason != "NoWeightFiles"]
    for problem in problems:
        report.refuse(str(path), label, problem.reason, problem.message)
    if problems or facts is None:
        adapter.facts = None
        return
    adapter.facts = facts
    adapter.size = facts.size_bytes if weights_known else _estimated_size(adapter, config, report)


def _estimated_size(adapter: PlanAdapter, config: dict[str, Any], report: PlanInput) -> int:
    """adapter_model.safetensors bytes from the config and the base model's shape (float32, as
    PEFT saves), or 0 when the model is not in the sizing catalog."""
    base = adapter.obj.spec.base_model
    pool = next((p for p, _ in report.pools if p.spec.base_model.name == base), None)
    name = pool.spec.base_model.architecture if pool and pool.spec.base_model.architecture else base
    targets = config.get("target_modules")
    try:
        arch = lookup_model(name)
        params = lora_params(arch, config["r"], targets, config.get("rank_pattern") or None)
        return adapter_file_bytes(params, 4, lora_tensor_count(arch, targets))
    except (InvalidSpec, KeyError, TypeError, ValueError):
        return 0


def check_served_names(report: PlanInput) -> None:
    objs = [a.obj for a in report.adapters]
    bases = [p.spec.base_model.name for p, _ in report.pools]
    kept = []
    for adapter in report.adapters:
        refusal = served_name_conflict(adapter.obj, objs, bases)
        if refusal is None:
            kept.append(adapter)
            continue
        meta = adapter.obj.metadata
        label = f"{ADAPTER_KIND} {obj_key(meta.namespace, meta.name)}"
        report.refuse(adapter.where, label, refusal.reason, refusal.message)
    report.adapters = kept
