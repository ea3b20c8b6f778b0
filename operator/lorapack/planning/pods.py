"""What a pool pod looks like to the planner: parsed from the Pod object, pure.

`observe_pod` turns a raw Pod (as the watch delivers it) into a `PodObservation`: ordinal, node,
IP, scheduling and readiness, and the agent's report (`lorapack.io/observed` annotation). The pool
reconciler and the status builders read pods only through this, so the rules ("a pod is lost
after N seconds unschedulable", "a pod serves when its engine is healthy") live in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lorapack import labels
from lorapack.api.podstate import ObservedState

__all__ = ["PodObservation", "is_lost", "observe_pod", "parse_time"]

_ORDINAL = re.compile(r"-(\d+)$")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class PodObservation:
    """One pool pod as seen by the operator."""

    name: str
    namespace: str
    uid: str
    pool: str
    ordinal: int
    node: str | None
    ip: str | None
    phase: str
    deleting: bool
    ready: bool
    """The pod's Ready condition (containers ready and the readiness gate)."""
    scheduled: bool
    unschedulable: str | None
    """The scheduler's message while the pod cannot be placed (e.g. no free GPU)."""
    created: datetime | None
    observed: ObservedState | None
    """The agent's report; None before the agent's first report (or if it is unreadable)."""
    report_error: str | None = None
    not_ready_for: str | None = None
    """Why the pod is not ready other than its readiness gate (None: ready, or only the gate
    holds it back). The gate turns False while the agent syncs a new desired state, which must
    not take the pod's other adapters out of routing; anything else (containers not ready, the
    node lifecycle controller marking the pods of a node that stopped being Ready) does."""
    resource_version: str = ""
    """metadata.resourceVersion of the pod object it was parsed from."""

    @property
    def reachable(self) -> bool:
        """Traffic may be sent to it: not held back by its node or its containers."""
        return self.not_ready_for is None

    @property
    def engine_up(self) -> bool:
        """Running, not terminating, engine healthy per the agent."""
        return (
            self.phase == "Running"
            and not self.deleting
            and self.observed is not None
            and self.observed.engine_healthy
        )

    def loaded(self) -> dict[str, str]:
        """served name -> digest loaded and verified in the engine (empty if the engine is down)."""
        if not self.engine_up or self.observed is None:
            return {}
        return self.observed.loaded()


def _conditions(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (pod.get("status") or {}).get("conditions") or []}


def observe_pod(pod: Mapping[str, Any]) -> PodObservation | None:
    """Parse a pool pod; None for pods that are not pool pods (no pool label or no ordinal)."""
    meta = pod.get("metadata") or {}
    pod_labels = meta.get("labels") or {}
    pool = pod_labels.get(labels.POOL_LABEL)
    name = str(meta.get("name", ""))
    index = pod_labels.get("apps.kubernetes.io/pod-index")
    match = _ORDINAL.search(name)
    if not pool or (index is None and match is None):
        return None
    ordinal = int(index) if index is not None and str(index).isdigit() else int(match.group(1))  # type: ignore[union-attr]
    status = pod.get("status") or {}
    conds = _conditions(pod)
    scheduled_cond = conds.get("PodScheduled", {})
    unschedulable = None
    if scheduled_cond.get("status") == "False" and scheduled_cond.get("reason") == "Unschedulable":
        unschedulable = str(scheduled_cond.get("message") or "the scheduler found no node")
    observed: ObservedState | None = None
    report_error = None
    raw = (meta.get("annotations") or {}).get(labels.OBSERVED_ANNOTATION)
    if raw:
        try:
            observed = ObservedState.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as err:
            report_error = f"unreadable {labels.OBSERVED_ANNOTATION} annotation: {err}"
    spec = pod.get("spec") or {}
    return PodObservation(
        name=name,
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        pool=str(pool),
        ordinal=ordinal,
        node=spec.get("nodeName"),
        ip=status.get("podIP"),
        phase=str(status.get("phase", "Pending")),
        deleting=meta.get("deletionTimestamp") is not None,
        ready=conds.get("Ready", {}).get("status") == "True",
        not_ready_for=_not_ready_for(conds.get("Ready")),
        scheduled=scheduled_cond.get("status") == "True" or bool(spec.get("nodeName")),
        unschedulable=unschedulable,
        created=parse_time(meta.get("creationTimestamp")),
        observed=observed,
        report_error=report_error,
        resource_version=str(meta.get("resourceVersion", "")),
    )


# The kubelet's reason when only readiness gates keep a pod from Ready (containers are ready).
GATES_NOT_READY = "ReadinessGatesNotReady"


def _not_ready_for(ready: Mapping[str, Any] | None) -> str | None:
    if ready is None or ready.get("status") == "True":
        return None  # no Ready condition yet: the pod is judged by its agent's report alone
    reason = ready.get("reason")
    if reason == GATES_NOT_READY:
        return None
    # The node lifecycle controller flips only `status` and keeps the old reason (none when
    # the pod was Ready): "node not ready" is the usual cause of a reason-less False.
    return str(reason or "NodeNotReady")


def is_lost(pod: PodObservation | None, *, now: datetime, lost_after: float) -> bool:
    """Whether the planner should give up on this ordinal and place its adapters elsewhere.

    A pod that does not exist is not lost (the StatefulSet re-creates it at once, keeping its
    name, so its adapters wait for it); a pod that failed, or has been unschedulable for
    `lost_after` seconds, is.
    """
    if pod is None:
        return False
    if pod.phase in ("Failed", "Unknown"):
        return True
    if pod.unschedulable and pod.created is not None:
        return (now - pod.created).total_seconds() >= lost_after
    return False
