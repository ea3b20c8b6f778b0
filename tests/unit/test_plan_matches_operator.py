"""`lorapack plan` and the operator place the same adapters the same way (issue 13).

Both build the planner's adapter views with `planning.snapshot.adapter_view`; before, the
operator used `status.artifact.rank or 0` while `lorapack plan` fell back to `spec.rank`, so an
adapter whose files did not state the rank fitted anywhere in the cluster and nowhere offline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.commands.plan import _snapshot
from lorapack.commands.planfiles import PlanAdapter as _Adapter
from lorapack.commands.planfiles import PlanInput as _Report
from lorapack.planning.packing import plan_placement
from lorapack.reconcilers.poolworld import PoolWorld, build_snapshot, name_losers, versions
from tests.builders import make_adapter, make_pool


def _adapter(name: str, artifact_rank: int | None, spec_rank: int | None) -> LoraAdapter:
    body = make_adapter(name, **({"rank": spec_rank} if spec_rank else {}))
    body["metadata"].update({"uid": f"uid-{name}", "generation": 1})
    model = LoraAdapter.model_validate(body)
    status = LoraAdapterStatus(
        artifact=ArtifactStatus(rank=artifact_rank, size_bytes=10_000, digest=f"sha256:{name}")
    )
    return model.model_copy(update={"status": status})


def test_offline_plan_and_operator_build_the_same_snapshot_and_placement() -> None:
    pools = [
        BaseModelPool.model_validate(make_pool("small", engine={"maxLoraRank": 16})),
        BaseModelPool.model_validate(make_pool("large", engine={"maxLoraRank": 64})),
    ]
    adapters = [
        _adapter("known-8", 8, None),
        _adapter("known-64", 64, None),
        _adapter("declared-only", None, 64),  # the rank fallback: spec.rank, never 0
        _adapter("declared-16", 16, 16),
    ]
    world = PoolWorld(
        pool=pools[0], group=pools, adapters=adapters, deleting=frozenset(), pods={},
        desired={}, slices={}, statefulset_replicas=None, owned_applied_generation=None,
        now=datetime.now(UTC),
    )  # fmt: skip
    operator = build_snapshot(world, versions(world, name_losers(world)), 120.0)
    # Offline, the objects come from YAML (no status); the rank from adapter_config.json
    # where one is found next to them, else nothing.
    report = _Report(pools=[(p, "x") for p in pools])
    offline_adapters = []
    for a in adapters:
        rank = a.status.artifact.rank if a.status and a.status.artifact else None
        facts = SimpleNamespace(rank=rank) if rank is not None else None
        bare = a.model_copy(update={"status": None})
        offline_adapters.append(_Adapter(bare, "x", Path("."), facts, 10_000))  # type: ignore[arg-type]
    offline = _snapshot(report, offline_adapters)
    assert sorted(operator.adapters, key=lambda v: v.key) == sorted(
        offline.adapters, key=lambda v: v.key
    )
    by_key = {v.key: v for v in operator.adapters}
    assert by_key["team-a/declared-only"].rank == 64
    ours, theirs = plan_placement(operator), plan_placement(offline)
    assert ours.adapter_pool == theirs.adapter_pool
    assert ours.adapter_pool["team-a/declared-only"].endswith("/large")
    assert {k: p.assignment for k, p in ours.pools.items()} == {
        k: p.assignment for k, p in theirs.pools.items()
    }
