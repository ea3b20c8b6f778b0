"""The BaseModelPool status, derived in one pure function from its pods and its plan.

Readiness reads the pods' own conditions (the scheduler's `Unschedulable` message surfaces as
the pool's Stalled reason, e.g. when no node has a free GPU). Called by the pool reconciler once
per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolStatus, PoolCapacity
from lorapack.issues import Issue
from lorapack.planning.pods import PodObservation
from lorapack.status.conditions import Verdict, kstatus_conditions

__all__ = ["PoolFacts", "compute_pool_status"]


@dataclass(frozen=True)
class PoolFacts:
    """What the pool's status depends on."""

    pods: Sequence[PodObservation]
    desired_replicas: int
    slots_used: int
    adapters_placed: int
    adapters_pending: int
    problem: Issue | None = None
    """A spec problem that stops the pool (an invalid spec or name)."""
    write_failures: Sequence[Issue] = ()
    """Writes of the pool's own objects the cluster refused in the last pass."""
    retrying: bool = False
    """The pool's refused writes were transient (retried soon)."""
    adapter_failures: int = 0
    """Adapters whose own objects were refused (their statuses say why)."""


def _verdict(pool: BaseModelPool, facts: PoolFacts, ready: int) -> Verdict:
    if facts.problem is not None:
        return Verdict("stalled", facts.problem.reason, facts.problem.message)
    if facts.write_failures:
        issue = facts.write_failures[0]
        text = "; ".join(i.message for i in facts.write_failures)
        return Verdict("progressing" if facts.retrying else "stalled", issue.reason, text)
    unschedulable = sorted(
        (p for p in facts.pods if p.unschedulable and not p.deleting), key=lambda p: p.ordinal
    )
    if unschedulable:
        first = unschedulable[0]
        names = ", ".join(p.name for p in unschedulable)
        return Verdict(
            "stalled",
            c.UNSCHEDULABLE,
            f"{len(unschedulable)} pod(s) cannot be scheduled ({names}): "
            f"{(first.unschedulable or '').rstrip('.')}. "
            f"Add nodes with {pool.spec.gpu.count} free {pool.spec.gpu.resource_name} matching "
            "spec.gpu.nodeSelector, or lower spec.replicas.max",
        )
    existing = [p for p in facts.pods if not p.deleting]
    if len(existing) != facts.desired_replicas:
        return Verdict(
            "progressing",
            c.SCALING,
            f"scaling to {facts.desired_replicas} pod(s) ({len(existing)} exist)",
        )
    if ready < facts.desired_replicas:
        return Verdict(
            "progressing",
            c.PODS_STARTING,
            f"{ready}/{facts.desired_replicas} pods ready",
        )
    pending = f", {facts.adapters_pending} pending" if facts.adapters_pending else ""
    if facts.adapter_failures:
        pending += f", {facts.adapter_failures} with refused writes (see their LoraAdapter status)"
    return Verdict(
        "ready",
        c.AS_EXPECTED,
        f"{ready}/{facts.desired_replicas} pods ready, {facts.adapters_placed} adapters placed"
        f"{pending}",
    )


def compute_pool_status(pool: BaseModelPool, facts: PoolFacts, now: str) -> BaseModelPoolStatus:
    """The complete pool status to write."""
    previous = pool.status or BaseModelPoolStatus()
    live = [p for p in facts.pods if not p.deleting]
    ready = sum(1 for p in live if p.ready and p.engine_up)
    verdict = _verdict(pool, facts, ready)
    return BaseModelPoolStatus(
        observed_generation=pool.metadata.generation,
        conditions=kstatus_conditions(previous.conditions, verdict, pool.metadata.generation, now),
        replicas=len(live),
        ready_replicas=ready,
        desired_replicas=facts.desired_replicas,
        capacity=PoolCapacity(
            slots_total=facts.desired_replicas * pool.spec.adapters_per_pod,
            slots_used=facts.slots_used,
        ),
        adapters_placed=facts.adapters_placed,
        adapters_pending=facts.adapters_pending,
        selector=f"{labels.POOL_LABEL}={pool.metadata.name}",
    )
