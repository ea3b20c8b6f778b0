"""The LoraAdapter status, derived in one pure function from what was observed.

Placements come from the agents' reports (what the engine really holds, verified against
/v1/models), never from what the operator asked. `Ready` is True when at least `replicas.min`
pods serve the current version; a rollout keeps `readyReplicas` above zero while
`updatedReplicas` catches up. Called by the adapter handler's status loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lorapack.api import conditions as c
from lorapack.api.loraadapter import (
    ArtifactStatus,
    LoraAdapter,
    LoraAdapterStatus,
    PlacementState,
    PlacementStatus,
)
from lorapack.issues import Issue
from lorapack.planning.pods import PodObservation
from lorapack.status.conditions import Verdict, kstatus_conditions

__all__ = ["AdapterFacts", "compute_adapter_status"]


@dataclass(frozen=True)
class AdapterFacts:
    """Everything the status of one adapter depends on."""

    artifact: ArtifactStatus | None
    """The last valid artifact (may be of an older generation while a new one is checked)."""
    validated: bool
    """Whether the current generation has been checked (successfully or not)."""
    problems: Sequence[Issue]
    """Why the current generation cannot be served (empty if fine)."""
    pool: str | None
    """namespace/name of the pool chosen for the adapter."""
    unplaceable: Issue | None
    """Why placement could not put every copy on a pod."""
    desired: Mapping[str, str]
    """pod name -> digest the pod is asked to hold."""
    pods: Mapping[str, PodObservation]
    """The pool's pods by name."""
    serving: Sequence[str]
    """Pods in the adapter's EndpointSlice."""
    endpoint: str
    deleting: bool = False
    deleting_message: str = ""
    waiting: Issue | None = None
    """A transient obstacle being retried (e.g. S3 unreachable during validation)."""
    write_problem: Issue | None = None
    """A write for this adapter the cluster refused (its Service, EndpointSlice, URLs)."""
    write_transient: bool = False
    """The refused write is retried (the API server was unavailable)."""


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _placements(adapter: LoraAdapter, facts: AdapterFacts) -> list[PlacementStatus]:
    name = adapter.served_name
    holders = {
        p.name
        for p in facts.pods.values()
        if p.observed and any(a.served_name == name for a in p.observed.adapters)
    }
    out = []
    for pod_name in sorted(set(facts.desired) | holders):
        pod = facts.pods.get(pod_name)
        wanted = facts.desired.get(pod_name)
        seen = None
        if pod is not None and pod.observed is not None:
            seen = next((a for a in pod.observed.adapters if a.served_name == name), None)
        node = (pod.node if pod else None) or ""
        state: PlacementState
        if seen is not None and pod is not None and pod.engine_up:
            state, digest, since, message = seen.state, seen.digest, seen.since, seen.message
            if wanted is None and state == "Loaded":
                message = "removed from routing; the agent drains and unloads it"
            elif wanted is not None and wanted != digest and state == "Loaded":
                message = f"serving {_short(digest)}; switching to {_short(wanted)}"
            elif not pod.reachable and state == "Loaded":
                message = (
                    f"loaded, but out of routing: pod {pod_name} is not ready "
                    f"({pod.not_ready_for}{f' on node {node}' if node else ''})"
                )
        elif pod is None:
            state, digest, since = "Pending", wanted or "", ""
            message = f"pod {pod_name} does not exist yet"
        elif pod.unschedulable:
            state, digest, since = "Pending", wanted or "", ""
            message = f"pod {pod_name} cannot be scheduled: {pod.unschedulable}"
        elif not pod.engine_up:
            state, digest, since = "Pending", wanted or "", ""
            message = f"waiting for pod {pod_name}'s engine to become healthy"
        else:
            state, digest, since = "Pending", wanted or "", ""
            message = "waiting for the agent to pick it up"
        out.append(
            PlacementStatus(
                pod=pod_name, node=node, state=state, digest=digest, since=since, message=message
            )
        )
    return out


def _verdict(
    adapter: LoraAdapter, facts: AdapterFacts, placements: Sequence[PlacementStatus]
) -> Verdict:
    spec_min = adapter.spec.replicas.min
    digest = facts.artifact.digest if facts.artifact else None
    serving = len(facts.serving)
    updated = sum(
        1 for pod in facts.serving if digest is not None and facts.desired.get(pod) == digest
    )
    if facts.deleting:
        return Verdict("progressing", c.DELETING, facts.deleting_message or "deleting")
    if facts.problems:
        first = facts.problems[0]
        extra = f" (still serving the previous version on {serving} pod(s))" if serving else ""
        text = "; ".join(p.message for p in facts.problems) + extra
        return Verdict("stalled", first.reason, text)
    if facts.artifact is None or not facts.validated:
        if facts.waiting is not None:
            return Verdict("progressing", facts.waiting.reason, facts.waiting.message)
        return Verdict("progressing", c.PROGRESSING, "reading the adapter's files from S3")
    if facts.write_problem is not None:
        kind = "progressing" if facts.write_transient else "stalled"
        return Verdict(kind, facts.write_problem.reason, facts.write_problem.message)
    if facts.unplaceable is not None and serving < spec_min:
        stuck = sorted(
            (p for p in facts.pods.values() if p.unschedulable and not p.deleting),
            key=lambda p: p.ordinal,
        )
        if stuck:  # "pool full" would mislead: the pool's pods cannot be scheduled at all
            return Verdict(
                "stalled",
                c.UNSCHEDULABLE,
                f"pool {facts.pool or stuck[0].pool} cannot schedule pod {stuck[0].name}: "
                f"{(stuck[0].unschedulable or '').rstrip('.')}; its owners must add GPU nodes",
            )
        return Verdict("stalled", facts.unplaceable.reason, facts.unplaceable.message)
    if updated >= spec_min:
        pods = ", ".join(sorted(facts.serving))
        return Verdict("ready", c.LOADED, f"served by {serving} pod(s): {pods}")
    failed = [p for p in placements if p.state == "Failed"]
    if failed and len(failed) == len(facts.desired) and facts.desired:
        detail = "; ".join(f"{p.pod}: {p.message}" for p in failed)
        return Verdict("stalled", c.LOAD_FAILED, f"no pod could load the adapter: {detail}")
    if serving and updated == serving:
        return Verdict(
            "progressing",
            c.PARTIALLY_LOADED,
            f"served by {serving} of the {spec_min} pods replicas.min asks for",
        )
    if serving and updated < serving:
        return Verdict(
            "progressing",
            c.ROLLING_OUT,
            f"rolling out {_short(digest or '')}: {updated}/{spec_min} pods updated, "
            f"{serving} serving",
        )
    if not facts.desired:
        return Verdict("progressing", c.PENDING_PLACEMENT, "waiting for a pod in the pool")
    states = {p.state for p in placements}
    if states == {"Loaded"} and (cut_off := _out_of_routing(facts)) is not None:
        return cut_off
    if states == {"Loaded"}:
        return Verdict(
            "progressing",
            c.LOADING,
            f"loaded on {len(placements)} pod(s); adding them to the adapter's Service",
        )
    if "Downloading" in states:
        return Verdict("progressing", c.DOWNLOADING, f"downloading ({updated}/{spec_min} ready)")
    if "Loading" in states:
        return Verdict("progressing", c.LOADING, f"loading ({updated}/{spec_min} ready)")
    pending = "; ".join(f"{p.pod}: {p.message}" for p in placements if p.state == "Pending")
    return Verdict(
        "progressing", c.PENDING_PLACEMENT, pending or f"{updated}/{spec_min} pods ready"
    )


def _out_of_routing(facts: AdapterFacts) -> Verdict | None:
    """Loaded everywhere, but some copies sit on pods that are not ready (node, containers)."""
    cut_off = sorted(
        p.name for p in facts.pods.values() if p.name in facts.desired and not p.reachable
    )
    if not cut_off:
        return None
    return Verdict(
        "progressing",
        c.LOADING,
        f"loaded, but out of routing while pod(s) {', '.join(cut_off)} are not ready (their "
        "node or containers); back in routing when they are ready",
    )


def compute_adapter_status(
    adapter: LoraAdapter, facts: AdapterFacts, now: str
) -> LoraAdapterStatus:
    """The complete status to write (written only if it differs from the current one)."""
    previous = adapter.status or LoraAdapterStatus()
    placements = _placements(adapter, facts)
    verdict = _verdict(adapter, facts, placements)
    digest = facts.artifact.digest if facts.artifact else None
    return LoraAdapterStatus(
        observed_generation=adapter.metadata.generation,
        conditions=kstatus_conditions(
            previous.conditions, verdict, adapter.metadata.generation, now
        ),
        served_name=adapter.served_name,
        pool=facts.pool or "",
        artifact=facts.artifact,
        placements=placements,
        ready_replicas=len(facts.serving),
        updated_replicas=sum(
            1 for pod in facts.serving if digest is not None and facts.desired.get(pod) == digest
        ),
        endpoint=facts.endpoint,
    )
