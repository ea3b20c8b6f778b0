"""`lorapack plan`: check BaseModelPool and LoraAdapter YAML offline and print the placement.

Reads the manifests a GitOps repository would apply (files or folders, multi-document YAML),
validates them with the operator's own models, reads each adapter's adapter_config.json when it
sits next to the YAML (`<dir>/<adapter>/adapter_config.json` or
`<dir>/<adapter>.adapter_config.json`, or given with --adapter-config), runs the same artifact
checks and the same placement engine as the operator, and prints per pool the pods and GPUs
needed, per adapter its pool and copies, and every adapter that is invalid or cannot be
placed with the reason and what to change.

Exit codes: 0 when everything is valid and placed, 1 otherwise (a CI job can gate a merge on
it), 2 for bad usage (a path that does not exist, a malformed flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.commands.output import add_output_flag, emit, render_table
from lorapack.errors import InvalidSpec
from lorapack.labels import ADAPTER_KIND, GROUP, POOL_KIND
from lorapack.planning.admission import served_name_conflict
from lorapack.planning.artifact import (
    CONFIG_FILE,
    ArtifactFacts,
    ArtifactFile,
    check_for_pool,
    inspect_artifact,
)
from lorapack.planning.packing import PlacementPlan, plan_placement
from lorapack.planning.snapshot import Snapshot, adapter_view, pod_name, pool_view
from lorapack.sizing.adapters import adapter_file_bytes, lora_params, lora_tensor_count
from lorapack.sizing.catalog import lookup_model

HELP = "check BaseModelPool/LoraAdapter YAML offline and print the placement"

_YAML_SUFFIXES = (".yaml", ".yml")
_KINDS = (POOL_KIND, ADAPTER_KIND)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        type=Path,
        required=True,
        metavar="DIR_OR_FILE",
        help="YAML file or folder (searched recursively), or - for standard input (e.g. "
        "`kustomize build . | lorapack plan -f -`); repeatable",
    )
    parser.add_argument(
        "--adapter-config",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="adapter_config.json of adapter NAME (name or namespace/name); repeatable",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace of objects whose metadata names none, as the GitOps tool's target "
        "namespace would set it (default: `default`, with a warning per object)",
    )
    add_output_flag(parser)


@dataclass
class _Adapter:
    """A valid LoraAdapter from the files, with what its adapter_config.json said."""

    obj: LoraAdapter
    where: str
    folder: Path
    facts: ArtifactFacts | None = None
    size: int = 0


@dataclass
class _Report:
    pools: list[tuple[BaseModelPool, str]] = field(default_factory=list)
    adapters: list[_Adapter] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)
    invalid_pools: dict[str, str] = field(default_factory=dict)
    """base model name -> key of an invalid pool for it (its cause is printed first)."""

    def refuse(self, where: str, what: str, reason: str, message: str) -> None:
        self.invalid.append({"source": where, "object": what, "reason": reason, "message": message})


def run(args: argparse.Namespace) -> int:
    stdin = any(str(p) == "-" for p in args.paths)
    missing = [str(p) for p in args.paths if str(p) != "-" and not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    overrides: dict[str, Path] = {}
    for item in args.adapter_config:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"error: --adapter-config {item!r} must be NAME=PATH", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"error: --adapter-config {item!r}: no such file", file=sys.stderr)
            return 2
        overrides[name] = Path(path)
    files = sorted({f for p in args.paths if str(p) != "-" for f in _yaml_files(p)})
    if not files and not stdin:
        print("error: no .yaml or .yml files under the given paths", file=sys.stderr)
        return 2
    report = _Report()
    if stdin:
        _read_text(sys.stdin.read(), "<stdin>", Path.cwd(), args.namespace, report)
    for path in files:
        _read_file(path, args.namespace, report)
    for adapter in report.adapters:
        _read_metadata(adapter, overrides, report)
    _check_served_names(report)
    plan = _place(report)
    data = _summarise(report, plan)
    emit(data, args.output, _table(data))
    return 0 if data["summary"]["ok"] else 1


# -- reading ---------------------------------------------------------------------------------


def _yaml_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from (p for p in path.rglob("*") if p.suffix in _YAML_SUFFIXES and p.is_file())
    else:
        yield path


def _read_file(path: Path, namespace: str | None, report: _Report) -> None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        report.refuse(str(path), "file", "InvalidYAML", f"cannot read YAML: {err}")
        return
    _read_text(text, str(path), path.parent, namespace, report)


def _read_text(
    text: str, source: str, folder: Path, namespace: str | None, report: _Report
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
        key = (kind, _obj_key(obj.metadata.namespace, obj.metadata.name))
        if key in report.seen:
            report.refuse(where, name, "InvalidSpec", "defined twice: keep one definition")
            continue
        report.seen.add(key)
        if isinstance(obj, BaseModelPool):
            report.pools.append((obj, where))
        else:
            assert isinstance(obj, LoraAdapter)
            report.adapters.append(_Adapter(obj, where, folder))


def _validation_text(error: ValidationError) -> str:
    # The same shape as lorapack.cli.format_validation_error (which this layer may not import):
    # one "field.path: problem" per line, camelCase as written in the YAML.
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"] if p != "__root__")
        lines.append(f"{path or 'object'}: {item['msg']}")
    return "; ".join(lines)


def _obj_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _config_path(adapter: _Adapter, overrides: dict[str, Path]) -> Path | None:
    meta = adapter.obj.metadata
    for name in (_obj_key(meta.namespace, meta.name), meta.name):
        if name in overrides:
            return overrides[name]
    for candidate in (
        adapter.folder / meta.name / CONFIG_FILE,
        adapter.folder / f"{meta.name}.{CONFIG_FILE}",
    ):
        if candidate.is_file():
            return candidate
    return None


def _read_metadata(adapter: _Adapter, overrides: dict[str, Path], report: _Report) -> None:
    """Inspect the adapter's adapter_config.json (and weight files, when they are there too)."""
    meta = adapter.obj.metadata
    label = f"{ADAPTER_KIND} {_obj_key(meta.namespace, meta.name)}"
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


def _estimated_size(adapter: _Adapter, config: dict[str, Any], report: _Report) -> int:
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


def _check_served_names(report: _Report) -> None:
    objs = [a.obj for a in report.adapters]
    bases = [p.spec.base_model.name for p, _ in report.pools]
    kept = []
    for adapter in report.adapters:
        refusal = served_name_conflict(adapter.obj, objs, bases)
        if refusal is None:
            kept.append(adapter)
            continue
        meta = adapter.obj.metadata
        label = f"{ADAPTER_KIND} {_obj_key(meta.namespace, meta.name)}"
        report.refuse(adapter.where, label, refusal.reason, refusal.message)
    report.adapters = kept


# -- planning --------------------------------------------------------------------------------


def _snapshot(report: _Report, adapters: list[_Adapter]) -> Snapshot:
    views = [
        adapter_view(a.obj, rank=a.facts.rank if a.facts else None, size_bytes=a.size)
        for a in adapters
    ]
    return Snapshot(
        pools=tuple(pool_view(p) for p, _ in report.pools),
        pods=(),
        adapters=tuple(views),
    )


def _place(report: _Report) -> PlacementPlan:
    """Plan, then check each placed adapter's files against its pool; adapters the pool would
    refuse leave the plan (and are reported), which is planned again without them until every
    placed adapter passes (each round refuses at least one adapter, so this ends)."""
    valid = [a for a in report.adapters if not _refused(report, a)]
    specs = {_obj_key(p.metadata.namespace, p.metadata.name): p.spec for p, _ in report.pools}
    while True:
        plan = plan_placement(_snapshot(report, valid))
        refused = []
        for adapter in valid:
            key = _obj_key(adapter.obj.metadata.namespace, adapter.obj.metadata.name)
            pool = plan.adapter_pool.get(key)
            if pool is None or adapter.facts is None:
                continue
            problems = check_for_pool(adapter.facts, adapter.obj.spec, specs[pool])
            for problem in problems:
                report.refuse(
                    adapter.where, f"{ADAPTER_KIND} {key}", problem.reason, problem.message
                )
            if problems:
                refused.append(adapter)
        if not refused:
            return plan
        valid = [a for a in valid if a not in refused]


def _refused(report: _Report, adapter: _Adapter) -> bool:
    meta = adapter.obj.metadata
    label = f"{ADAPTER_KIND} {_obj_key(meta.namespace, meta.name)}"
    return any(item["object"] == label for item in report.invalid)


# -- output ----------------------------------------------------------------------------------


def _summarise(report: _Report, plan: PlacementPlan) -> dict[str, Any]:
    pools_out = []
    gpus = pods = 0
    gpus_per_pod = {}
    for pool, _ in sorted(
        report.pools, key=lambda p: _obj_key(p[0].metadata.namespace, p[0].metadata.name)
    ):
        key = _obj_key(pool.metadata.namespace, pool.metadata.name)
        pool_plan = plan.pools[key]
        count = pool_plan.desired_replicas
        gpus_per_pod[key] = pool.spec.gpu.count
        pods += count
        gpus += count * pool.spec.gpu.count
        pools_out.append(
            {
                "pool": key,
                "baseModel": pool.spec.base_model.name,
                "gpuType": pool.spec.gpu.type,
                "gpusPerPod": pool.spec.gpu.count,
                "pods": count,
                "gpus": count * pool.spec.gpu.count,
                "adaptersPerPod": pool.spec.adapters_per_pod,
                "maxLoraRank": pool.spec.engine.max_lora_rank,
                "assignment": {
                    pod_name(key, o): sorted(a) for o, a in sorted(pool_plan.assignment.items())
                },
            }
        )
    adapters_out = []
    merged = 0
    for adapter in sorted(
        report.adapters, key=lambda a: (a.obj.metadata.namespace, a.obj.metadata.name)
    ):
        key = _obj_key(adapter.obj.metadata.namespace, adapter.obj.metadata.name)
        pool_key = plan.adapter_pool.get(key)
        if pool_key is None:
            continue
        copies = plan.replicas[key]
        merged += copies * gpus_per_pod[pool_key]
        rank = adapter.facts.rank if adapter.facts else adapter.obj.spec.rank
        adapters_out.append(
            {
                "adapter": key,
                "pool": pool_key,
                "rank": rank,
                "copies": copies,
                "pods": [pod_name(pool_key, o) for _, o in plan.slots_of(key)],
            }
        )
    unplaceable = [
        {"adapter": k, "reason": u.reason, "message": _explain(report, k, u.reason, u.message)}
        for k, u in plan.unplaceable.items()
    ]
    # The cause first: an invalid pool explains the adapters that then have no pool.
    invalid = sorted(report.invalid, key=lambda i: not i["object"].startswith(POOL_KIND))
    warnings = [*report.warnings, *(f"{ADAPTER_KIND} {k}: {w}" for k, w in plan.warnings.items())]
    total = len(report.adapters) + len(
        {i["object"] for i in report.invalid if i["object"].startswith(ADAPTER_KIND)}
    )
    return {
        "pools": pools_out,
        "adapters": adapters_out,
        "unplaceable": unplaceable,
        "invalid": invalid,
        "warnings": warnings,
        "summary": {
            "adapters": total,
            "placed": len(adapters_out),
            "pods": pods,
            "gpus": gpus,
            "mergedDeploymentGpus": merged,
            "gpusSaved": merged - gpus,
            "ignoredObjects": report.ignored,
            "ok": not unplaceable and not report.invalid,
        },
    }


def _table(data: dict[str, Any]) -> str:
    parts = []
    pools = data["pools"]
    if pools:
        rows = [
            [
                p["pool"],
                p["baseModel"],
                p["gpuType"],
                p["pods"],
                p["gpus"],
                p["adaptersPerPod"],
                " ".join(str(len(a)) for a in p["assignment"].values()) or "-",
            ]
            for p in pools
        ]
        parts.append(
            render_table(
                ["POOL", "BASE MODEL", "GPU", "PODS", "GPUS", "SLOTS/POD", "ADAPTERS ON EACH POD"],
                rows,
            )
        )
    if data["adapters"]:
        rows = [
            [
                a["adapter"],
                a["pool"],
                a["rank"] if a["rank"] is not None else "?",
                a["copies"],
                ",".join(a["pods"]),
            ]
            for a in data["adapters"]
        ]
        parts.append(render_table(["ADAPTER", "POOL", "RANK", "COPIES", "PODS"], rows))
    problems = [
        [i["object"], i["reason"], f"{i['source']}: {i['message']}"] for i in data["invalid"]
    ] + [[u["adapter"], u["reason"], u["message"]] for u in data["unplaceable"]]
    if problems:
        parts.append(render_table(["NOT PLACED", "REASON", "MESSAGE"], problems))
    parts.extend(f"warning: {w}" for w in data["warnings"])
    s = data["summary"]
    saved = (
        f"; one merged deployment per adapter copy would need {s['mergedDeploymentGpus']} GPUs "
        f"({s['gpusSaved']} more)"
        if s["placed"]
        else ""
    )
    parts.append(
        f"{s['placed']} of {_count(s['adapters'], 'adapter')} placed on "
        f"{_count(s['pods'], 'pod')}, {_count(s['gpus'], 'GPU')}{saved}."
    )
    return "\n\n".join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _explain(report: _Report, key: str, reason: str, message: str) -> str:
    """An adapter with no pool because its pool is invalid is told so (not NoPoolForBaseModel
    alone, which sends teams to the wrong fix)."""
    adapter = next((a for a in report.adapters if _obj_key(a.obj.metadata.namespace,
                    a.obj.metadata.name) == key), None)  # fmt: skip
    if adapter is None or reason != "NoPoolForBaseModel":
        return message
    pool = report.invalid_pools.get(adapter.obj.spec.base_model)
    if pool is None:
        return message
    base = adapter.obj.spec.base_model
    return f"BaseModelPool {pool} serves {base} but is invalid (see above): {message}"
