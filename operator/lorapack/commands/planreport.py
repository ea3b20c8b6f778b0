"""What `lorapack plan` prints: the placement per pool and adapter, and every problem.

The summary is a plain dict (the `-o json|yaml` output); `table` renders it for people: the
cause first (an invalid pool before the adapters it strands), counts in the right number.
"""

from __future__ import annotations

from typing import Any

from lorapack.commands.output import render_table
from lorapack.commands.planfiles import PlanInput
from lorapack.keys import object_key as obj_key
from lorapack.labels import ADAPTER_KIND, POOL_KIND
from lorapack.planning.packing import PlacementPlan
from lorapack.planning.snapshot import pod_name

__all__ = ["summarise", "table"]


def summarise(report: PlanInput, plan: PlacementPlan) -> dict[str, Any]:
    pools_out = []
    gpus = pods = 0
    gpus_per_pod = {}
    for pool, _ in sorted(
        report.pools, key=lambda p: obj_key(p[0].metadata.namespace, p[0].metadata.name)
    ):
        key = obj_key(pool.metadata.namespace, pool.metadata.name)
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
        key = obj_key(adapter.obj.metadata.namespace, adapter.obj.metadata.name)
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


def table(data: dict[str, Any]) -> str:
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


def _explain(report: PlanInput, key: str, reason: str, message: str) -> str:
    """An adapter with no pool because its pool is invalid is told so (not NoPoolForBaseModel
    alone, which sends teams to the wrong fix)."""
    adapter = next((a for a in report.adapters if obj_key(a.obj.metadata.namespace,
                    a.obj.metadata.name) == key), None)  # fmt: skip
    if adapter is None or reason != "NoPoolForBaseModel":
        return message
    pool = report.invalid_pools.get(adapter.obj.spec.base_model)
    if pool is None:
        return message
    base = adapter.obj.spec.base_model
    return f"BaseModelPool {pool} serves {base} but is invalid (see above): {message}"
