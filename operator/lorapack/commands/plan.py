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
import sys
from pathlib import Path

from lorapack.commands.output import add_output_flag, emit
from lorapack.commands.planfiles import (
    PlanAdapter,
    PlanInput,
    check_served_names,
    read_file,
    read_metadata,
    read_text,
    yaml_files,
)
from lorapack.commands.planreport import summarise, table
from lorapack.keys import object_key as obj_key
from lorapack.labels import ADAPTER_KIND
from lorapack.planning.artifact import check_for_pool
from lorapack.planning.packing import PlacementPlan, plan_placement
from lorapack.planning.snapshot import Snapshot, adapter_view, pool_view

HELP = "check BaseModelPool/LoraAdapter YAML offline and print the placement"


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
    files = sorted({f for p in args.paths if str(p) != "-" for f in yaml_files(p)})
    if not files and not stdin:
        print("error: no .yaml or .yml files under the given paths", file=sys.stderr)
        return 2
    report = PlanInput()
    if stdin:
        read_text(sys.stdin.read(), "<stdin>", Path.cwd(), args.namespace, report)
    for path in files:
        read_file(path, args.namespace, report)
    for adapter in report.adapters:
        read_metadata(adapter, overrides, report)
    check_served_names(report)
    plan = _place(report)
    data = summarise(report, plan)
    emit(data, args.output, table(data))
    return 0 if data["summary"]["ok"] else 1


def _snapshot(report: PlanInput, adapters: list[PlanAdapter]) -> Snapshot:
    views = [
        adapter_view(a.obj, rank=a.facts.rank if a.facts else None, size_bytes=a.size)
        for a in adapters
    ]
    return Snapshot(
        pools=tuple(pool_view(p) for p, _ in report.pools),
        pods=(),
        adapters=tuple(views),
    )


def _place(report: PlanInput) -> PlacementPlan:
    """Plan, then check each placed adapter's files against its pool; adapters the pool would
    refuse leave the plan (and are reported), which is planned again without them until every
    placed adapter passes (each round refuses at least one adapter, so this ends)."""
    valid = [a for a in report.adapters if not _refused(report, a)]
    specs = {obj_key(p.metadata.namespace, p.metadata.name): p.spec for p, _ in report.pools}
    while True:
        plan = plan_placement(_snapshot(report, valid))
        refused = []
        for adapter in valid:
            key = obj_key(adapter.obj.metadata.namespace, adapter.obj.metadata.name)
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


def _refused(report: PlanInput, adapter: PlanAdapter) -> bool:
    meta = adapter.obj.metadata
    label = f"{ADAPTER_KIND} {obj_key(meta.namespace, meta.name)}"
    return any(item["object"] == label for item in report.invalid)
