"""The placement engine over time: what stays put, what moves and how (make-before-break),
scale-out and scale-in, and losing pods."""

from __future__ import annotations

import dataclasses

import pytest

from lorapack.api import conditions
from lorapack.planning import packing
from lorapack.planning.packing import PlacementPolicy, plan_placement
from lorapack.planning.snapshot import PodView
from tests.unit.test_placement import (
    held,
    make_adapter,
    make_pool,
    make_snapshot,
    names,
    settle,
)

POOL = "ml/llama"


def test_settled_snapshot_replans_to_itself() -> None:
    pool = make_pool(max_replicas=8)
    adapters = [
        make_adapter(k, min_replicas=1 + i % 3, max_replicas=3) for i, k in enumerate(names(9))
    ]
    snap = make_snapshot([pool], adapters)
    first = plan_placement(snap)
    again = plan_placement(settle(snap, first))
    assert again.pools == first.pools
    assert again.moves == ()
    assert again.replicas == first.replicas


def test_placed_adapters_stay_even_when_a_new_packing_would_differ() -> None:
    # Pod 0 holds a02 and a03, pod 1 holds a00 and a01: not how a fresh plan would do it, but
    # nothing is wrong, so nothing moves; the new adapter takes free room.
    pool = make_pool(min_replicas=2)
    adapters = [make_adapter(k) for k in names(5)]
    assignment = {(POOL, 0): ["team-a/a02", "team-a/a03"], (POOL, 1): ["team-a/a00", "team-a/a01"]}
    plan = plan_placement(
        make_snapshot([pool], adapters, assignment=assignment, serving=assignment)
    )
    assert plan.moves == ()
    assert held(plan)[(POOL, 0)] >= {"team-a/a02", "team-a/a03"}
    assert held(plan)[(POOL, 1)] >= {"team-a/a00", "team-a/a01"}
    assert plan.adapter_pool["team-a/a04"] == POOL


def test_scale_out_when_pods_are_full() -> None:
    pool = make_pool(adapters_per_pod=2, max_replicas=3)
    assignment = {(POOL, 0): ["team-a/a00", "team-a/a01"]}
    adapters = [make_adapter(k) for k in names(3)]
    plan = plan_placement(
        make_snapshot([pool], adapters, assignment=assignment, serving=assignment)
    )
    assert plan.pools[POOL].desired_replicas == 2
    assert plan.slots_of("team-a/a02") == [(POOL, 1)]


def test_lost_pod_replaces_only_its_adapters() -> None:
    pool = make_pool(adapters_per_pod=2, max_replicas=4, min_replicas=3)
    adapters = [make_adapter(k) for k in names(5)]
    assignment = {
        (POOL, 0): ["team-a/a00", "team-a/a01"],
        (POOL, 1): ["team-a/a02", "team-a/a03"],
        (POOL, 2): ["team-a/a04"],
    }
    pods = [PodView(POOL, 0), PodView(POOL, 1, available=False), PodView(POOL, 2)]
    plan = plan_placement(
        make_snapshot([pool], adapters, pods, assignment=assignment, serving=assignment)
    )
    moved = {m.adapter: m for m in plan.moves}
    assert set(moved) == {"team-a/a02", "team-a/a03"}
    assert all(m.reason == packing.POD_LOST and m.source == (POOL, 1) for m in moved.values())
    assert plan.slots_of("team-a/a00") == [(POOL, 0)]
    assert plan.slots_of("team-a/a04") == [(POOL, 2)]
    for key in moved:
        assert plan.slots_of(key)[0] != (POOL, 1)
    # The lost pod keeps its ordinal, so the pool runs one more.
    assert plan.pools[POOL].desired_replicas == 4
    assert held(plan).get((POOL, 1), frozenset()) == frozenset()


def test_lost_pod_with_no_room_left_reports_the_adapters() -> None:
    pool = make_pool(adapters_per_pod=2, max_replicas=2, min_replicas=2)
    assignment = {(POOL, 0): ["team-a/a00", "team-a/a01"], (POOL, 1): ["team-a/a02"]}
    pods = [PodView(POOL, 0), PodView(POOL, 1, available=False)]
    adapters = [make_adapter(k) for k in names(3)]
    plan = plan_placement(make_snapshot([pool], adapters, pods, assignment, assignment))
    assert plan.unplaceable["team-a/a02"].reason == conditions.POOL_AT_MAX_REPLICAS
    assert [m.target for m in plan.moves] == [None]


def test_consolidation_moves_make_before_break() -> None:
    # a00..a02 on pod 0 and a03 on pod 1 once a04 was deleted: pod 1 can be emptied.
    pool = make_pool(max_replicas=4)
    adapters = [make_adapter(k) for k in names(4)]
    before = {(POOL, 0): ["team-a/a00", "team-a/a01", "team-a/a02"], (POOL, 1): ["team-a/a03"]}
    plan = plan_placement(make_snapshot([pool], adapters, assignment=before, serving=before))
    assert [(m.adapter, m.source, m.target, m.reason) for m in plan.moves] == [
        ("team-a/a03", (POOL, 1), (POOL, 0), packing.CONSOLIDATION)
    ]
    # The old copy stays until the new one serves, and so does its pod.
    assert plan.pools[POOL].leaving == {1: frozenset({"team-a/a03"})}
    assert plan.pools[POOL].desired_replicas == 2
    assert plan.slots_of("team-a/a03") == [(POOL, 0)]

    during = held(plan)
    still_loading = {**during, (POOL, 0): during[(POOL, 0)] - {"team-a/a03"}}
    waiting = plan_placement(
        make_snapshot([pool], adapters, assignment=during, serving=still_loading)
    )
    assert held(waiting) == during
    assert waiting.moves == ()

    done = plan_placement(make_snapshot([pool], adapters, assignment=during, serving=during))
    assert done.pools[POOL].desired_replicas == 1
    assert held(done) == {(POOL, 0): frozenset(names(4))}
    assert done.moves == ()


def test_consolidation_only_when_it_pays() -> None:
    pool = make_pool(max_replicas=4)
    adapters = [make_adapter(k) for k in names(4)]
    before = {(POOL, 0): ["team-a/a00", "team-a/a01"], (POOL, 1): ["team-a/a02", "team-a/a03"]}
    snap = make_snapshot([pool], adapters, assignment=before, serving=before)
    stingy = plan_placement(snap, PlacementPolicy(max_moves_per_cost=1.0))
    assert stingy.moves == ()
    assert stingy.pools[POOL].desired_replicas == 2
    off = plan_placement(snap, PlacementPolicy(consolidate=False))
    assert off.moves == ()
    generous = plan_placement(snap)
    assert len(generous.moves) == 2
    assert {m.reason for m in generous.moves} == {packing.CONSOLIDATION}


def test_consolidation_never_drains_below_replicas_min() -> None:
    pool = make_pool(max_replicas=4, min_replicas=2)
    adapters = [make_adapter(k) for k in names(2)]
    before = {(POOL, 0): ["team-a/a00"], (POOL, 1): ["team-a/a01"]}
    plan = plan_placement(make_snapshot([pool], adapters, assignment=before, serving=before))
    assert plan.moves == ()
    assert plan.pools[POOL].desired_replicas == 2


def test_fewer_replicas_drop_the_highest_copies() -> None:
    pool = make_pool(max_replicas=4)
    adapter = make_adapter("team-a/x", min_replicas=1, max_replicas=1)
    before = {(POOL, o): ["team-a/x"] for o in range(3)}
    plan = plan_placement(make_snapshot([pool], [adapter], assignment=before, serving=before))
    assert plan.slots_of("team-a/x") == [(POOL, 0)]
    assert plan.pools[POOL].desired_replicas == 1
    assert plan.moves == ()


def test_fewer_replicas_keep_a_serving_copy_until_the_kept_one_serves() -> None:
    pool = make_pool(max_replicas=4)
    adapter = make_adapter("team-a/x")
    before = {(POOL, 0): ["team-a/x"], (POOL, 2): ["team-a/x"]}
    serving = {(POOL, 2): ["team-a/x"]}
    plan = plan_placement(make_snapshot([pool], [adapter], assignment=before, serving=serving))
    assert plan.slots_of("team-a/x") == [(POOL, 0)]
    assert plan.pools[POOL].leaving == {2: frozenset({"team-a/x"})}
    assert plan.pools[POOL].desired_replicas == 3


def test_pod_over_capacity_moves_the_lowest_priority_first() -> None:
    pool = make_pool(adapters_per_pod=2, max_replicas=3)
    adapters = [
        make_adapter("team-a/keep", priority=10),
        make_adapter("team-a/also", priority=5),
        make_adapter("team-a/move", priority=-1),
    ]
    before = {(POOL, 0): ["team-a/keep", "team-a/also", "team-a/move"]}
    plan = plan_placement(make_snapshot([pool], adapters, assignment=before, serving=before))
    assert [(m.adapter, m.reason, m.target) for m in plan.moves] == [
        ("team-a/move", packing.OVER_CAPACITY, (POOL, 1))
    ]
    assert plan.pools[POOL].leaving == {0: frozenset({"team-a/move"})}
    after = held(plan)
    served = {(POOL, 0): before[(POOL, 0)], (POOL, 1): ["team-a/move"]}
    done = plan_placement(make_snapshot([pool], adapters, assignment=after, serving=served))
    assert held(done) == {
        (POOL, 0): frozenset({"team-a/keep", "team-a/also"}),
        (POOL, 1): frozenset({"team-a/move"}),
    }
    assert done.moves == ()


def test_changed_pin_moves_to_the_new_pool_make_before_break() -> None:
    old, new = make_pool("ml/old"), make_pool("ml/new")
    adapter = make_adapter("team-a/x", pool_ref="ml/new")
    before = {("ml/old", 0): ["team-a/x"]}
    plan = plan_placement(make_snapshot([old, new], [adapter], assignment=before, serving=before))
    assert plan.adapter_pool == {"team-a/x": "ml/new"}
    assert [(m.source, m.target, m.reason) for m in plan.moves] == [
        (("ml/old", 0), ("ml/new", 0), packing.POOL_CHANGED)
    ]
    assert plan.pools["ml/old"].leaving == {0: frozenset({"team-a/x"})}


def test_adapter_no_longer_allowed_leaves_at_once() -> None:
    pool = make_pool(allowed_namespaces=frozenset({"team-b"}))
    adapter = make_adapter("team-a/x")
    before = {(POOL, 0): ["team-a/x"]}
    plan = plan_placement(make_snapshot([pool], [adapter], assignment=before, serving=before))
    assert plan.unplaceable["team-a/x"].reason == conditions.NAMESPACE_NOT_ALLOWED
    assert held(plan) == {}
    assert [(m.reason, m.target) for m in plan.moves] == [(packing.NOT_ELIGIBLE, None)]


def test_lowered_max_replicas_moves_copies_off_removed_pods() -> None:
    pool = make_pool(max_replicas=2)
    adapters = [make_adapter(k) for k in names(2)]
    before = {(POOL, 0): ["team-a/a00"], (POOL, 3): ["team-a/a01"]}
    plan = plan_placement(make_snapshot([pool], adapters, assignment=before, serving=before))
    assert plan.slots_of("team-a/a01") == [(POOL, 0)]
    assert [m.reason for m in plan.moves] == [packing.POOL_SHRUNK]
    assert plan.pools[POOL].desired_replicas == 1


def test_deleted_pool_and_adapter() -> None:
    pool = make_pool()
    adapters = [make_adapter("team-a/kept")]
    before = {("ml/gone", 0): ["team-a/kept"], (POOL, 0): ["team-a/deleted"]}
    plan = plan_placement(make_snapshot([pool], adapters, assignment=before, serving=before))
    assert held(plan) == {(POOL, 0): frozenset({"team-a/kept"})}
    assert [(m.adapter, m.reason) for m in plan.moves] == [("team-a/kept", packing.POOL_DELETED)]


@pytest.mark.parametrize("lost", [0, 2], ids=["low-ordinal", "middle-ordinal"])
def test_new_adapter_and_lost_pod_move_nothing_else(lost: int) -> None:
    pool = make_pool(adapters_per_pod=3, max_replicas=8, load_budget=10.0)
    adapters = [make_adapter(k, load=1.0 + (i % 4)) for i, k in enumerate(names(12))]
    snap = make_snapshot([pool], adapters)
    settled = settle(snap, plan_placement(snap))
    before = held(plan_placement(settled))

    grown = dataclasses.replace(settled, adapters=(*settled.adapters, make_adapter("team-b/new")))
    added = plan_placement(grown)
    assert added.moves == ()
    assert {s: a - {"team-b/new"} for s, a in held(added).items()} == {
        s: a for s, a in before.items()
    } | {s: frozenset() for s in held(added) if s not in before}

    pods = tuple(PodView(POOL, o, available=o != lost) for o in range(4))
    broken = plan_placement(dataclasses.replace(settled, pods=pods))
    on_lost = before[(POOL, lost)]
    assert {m.adapter for m in broken.moves} == on_lost
    for slot, keys in before.items():
        if slot != (POOL, lost):
            assert keys <= held(broken)[slot]
