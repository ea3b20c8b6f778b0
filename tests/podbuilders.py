"""Builders of pool pods and agent reports, for tests of the pure layers and reconcilers."""

from __future__ import annotations

import json
from typing import Any

from lorapack import labels
from lorapack.api.podstate import ObservedAdapter, ObservedState


def observed(*adapters: tuple[str, str, str], healthy: bool = True) -> ObservedState:
    """An agent report: (served name, digest, state) triples."""
    return ObservedState(
        revision=1,
        engine_healthy=healthy,
        updated_at="2026-11-25T00:00:00Z",
        adapters=[
            ObservedAdapter(served_name=n, digest=d, state=s, since="2026-11-25T00:00:00Z")  # type: ignore[arg-type]
            for n, d, s in adapters
        ],
    )


def make_pod(
    pool: str = "llama3-8b",
    ordinal: int = 0,
    namespace: str = "ml-platform",
    *,
    phase: str = "Running",
    ready: bool = True,
    ip: str | None = None,
    node: str | None = "gpu-l20-0",
    report: ObservedState | None = None,
    unschedulable: str | None = None,
    created: str = "2026-11-25T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    """A pool pod as the API returns it."""
    conditions = []
    if unschedulable:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    meta: dict[str, Any] = {
        "name": f"{pool}-{ordinal}",
        "namespace": namespace,
        "uid": f"uid-{pool}-{ordinal}",
        "labels": {labels.POOL_LABEL: pool, "apps.kubernetes.io/pod-index": str(ordinal)},
        "creationTimestamp": created,
        "annotations": {},
    }
    if report is not None:
        meta["annotations"][labels.OBSERVED_ANNOTATION] = json.dumps(
            report.model_dump(by_alias=True, exclude_none=True)
        )
    if deleting:
        meta["deletionTimestamp"] = "2026-11-25T00:01:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": None if unschedulable else node},
        "status": {
            "phase": "Pending" if unschedulable else phase,
            "podIP": None if unschedulable else (ip or f"198.51.100.{10 + ordinal}"),
            "conditions": conditions,
        },
    }
