"""One pass of a pool's placement loop: the single writer of placement decisions for its pool.

gather (the handler, from watch-driven indexes) -> decide and list the writes
(`reconcilers.poolplan`, pure) -> execute them phase by phase (`reconcilers.executor`) ->
publish what happened (`PoolOutcome`: the pool's status, each adapter's placement, and the
desired states written, for the handler's store).

Every write is isolated: one the cluster refuses is recorded on its adapter (or on the pool)
and the pass goes on. When unrouting an adapter fails, its desired entries are held where they
were, so no pod drops an adapter whose traffic still reaches it. Idempotent: a pass over a
settled world writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lorapack.api.basemodelpool import BaseModelPoolStatus
from lorapack.api.podstate import DesiredState
from lorapack.issues import Issue
from lorapack.manifests import pool as pool_manifests
from lorapack.planning.admission import pool_key
from lorapack.planning.names import pool_name_issue
from lorapack.reconcilers.actions import Ensure, Phase
from lorapack.reconcilers.executor import Claims, Executor, Report
from lorapack.reconcilers.poolplan import Decision, desired_actions, ordered_actions
from lorapack.reconcilers.poolworld import AdapterPlacement, PoolSettings, PoolWorld
from lorapack.reconcilers.ports import Presigner, Writer
from lorapack.status.conditions import now_rfc3339
from lorapack.status.pool import PoolFacts, compute_pool_status

__all__ = ["AdapterPlacement", "PoolOutcome", "PoolSettings", "PoolWorld", "reconcile_pool"]


@dataclass(frozen=True)
class PoolOutcome:
    """What the pass decided and wrote."""

    status: BaseModelPoolStatus
    placements: Mapping[str, AdapterPlacement]
    desired_replicas: int
    writes: int
    owned_applied: bool
    """Every pool-owned object and the StatefulSet were written for this generation."""
    desired_written: Mapping[int, DesiredState | None]
    statefulset_applied: bool = False
    """The StatefulSet was written at `desired_replicas`."""
    retry: bool = False
    """A write failed transiently: run again soon rather than at the resync period."""


async def reconcile_pool(
    world: PoolWorld, writer: Writer, presigner: Presigner, settings: PoolSettings, claims: Claims
) -> PoolOutcome:
    """Plan, then write the pool's objects, routing, desired states and replica count."""
    pool = world.pool
    invalid = pool_name_issue(pool.metadata.name)
    if invalid is not None:
        return _refused(world, invalid)
    if world.pool_issues:
        # Refused before any pod exists (a pool that runs already keeps its pods as they are).
        return _refused(world, world.pool_issues[0])
    decision, actions = ordered_actions(world, settings)
    executor = Executor(writer, presigner, claims, presign_ttl=settings.presign_ttl_seconds)
    report = Report()
    await executor.run([a for a in actions if a.phase == Phase.OWNED], report)
    await executor.run([a for a in actions if a.phase == Phase.UNROUTE], report)
    held = report.failed(a.subject for a in actions if a.phase == Phase.UNROUTE and a.subject)
    desired = (
        desired_actions(world, decision, settings, held)
        if held
        else [a for a in actions if a.phase == Phase.DESIRED]
    )
    await executor.run(desired, report)
    await executor.run([a for a in actions if a.phase == Phase.SCALE], report)
    await executor.run([a for a in actions if a.phase == Phase.ROUTE], report)
    owned = [a for a in actions if a.subject == "" and a.phase in (Phase.OWNED, Phase.SCALE)]
    sts = [a.ref for a in owned if isinstance(a, Ensure) and a.obj.get("kind") == "StatefulSet"]
    return PoolOutcome(
        status=_status(world, decision, report),
        placements=_placements(world, decision, report),
        desired_replicas=decision.desired_replicas,
        writes=report.writes,
        owned_applied=bool(owned) and "" not in report.failures,
        desired_written=report.desired,
        statefulset_applied=bool(sts) and not report.refused.intersection(sts),
        retry=bool(report.transient),
    )


def _refused(world: PoolWorld, issue: Issue) -> PoolOutcome:
    status = compute_pool_status(
        world.pool,
        PoolFacts(pods=[], desired_replicas=0, slots_used=0, adapters_placed=0,
                  adapters_pending=0, problem=issue),
        now_rfc3339(world.now),
    )  # fmt: skip
    return PoolOutcome(status, {}, 0, 0, False, {})


def _unplaceable_owner(world: PoolWorld) -> bool:
    """Exactly one loop of a base model's pools reports adapters no pool can take."""
    return pool_key(world.pool) == min(pool_key(p) for p in world.group)


def _placements(
    world: PoolWorld, decision: Decision, report: Report
) -> dict[str, AdapterPlacement]:
    names = pool_manifests.PoolNames(world.pool.metadata.name)
    me = pool_key(world.pool)
    plan = decision.plan
    out: dict[str, AdapterPlacement] = {}
    for key in decision.mine:
        problems = report.failures.get(key)
        short = plan.unplaceable.get(key)
        out[key] = AdapterPlacement(
            pool=me,
            unplaceable=short,
            desired={names.pod(o): d[key] for o, d in sorted(decision.digests.items()) if key in d},
            serving=tuple(e.pod for e in decision.endpoints.get(key, ())),
            problem=problems[0] if problems else None,
            problem_transient=key in report.transient,
        )
    if _unplaceable_owner(world):
        for key, why in plan.unplaceable.items():
            if key not in out and plan.adapter_pool.get(key) is None:
                out[key] = AdapterPlacement(pool=None, unplaceable=why)
        for key, why in decision.losers.items():
            out[key] = AdapterPlacement(pool=None, unplaceable=why)
    return out


def _status(world: PoolWorld, decision: Decision, report: Report) -> BaseModelPoolStatus:
    mine = decision.mine
    unplaced = sum(1 for k in mine if k in decision.plan.unplaceable)
    pending = unplaced
    if _unplaceable_owner(world):
        pending += sum(
            1 for k in decision.plan.unplaceable if decision.plan.adapter_pool.get(k) is None
        )
    own_failures = report.failures.get("", [])
    return compute_pool_status(
        world.pool,
        PoolFacts(
            pods=[p for p in decision.pods.values()],
            desired_replicas=decision.desired_replicas,
            slots_used=sum(len(v) for v in decision.digests.values()),
            adapters_placed=len(mine) - unplaced,
            adapters_pending=pending,
            write_failures=tuple(own_failures),
            retrying="" in report.transient,
            adapter_failures=sum(1 for k in report.failures if k),
        ),
        now_rfc3339(world.now),
    )
