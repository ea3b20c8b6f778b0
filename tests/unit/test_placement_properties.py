"""Properties of the placement engine over random pools, pods and adapters (hypothesis):

* no pod holds more adapters, bytes or load than its pool allows;
* an adapter only lands in a pool of its base model that takes its rank, namespace, size and pin;
* copies sit on distinct pods, between replicas.min and replicas.max, or the adapter is reported;
* desired replicas stay within the pool's bounds and cover every pod holding something;
* re-planning a settled state changes nothing;
* adding an adapter moves no other adapter; losing a pod re-places only that pod's adapters.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorapack.api import conditions
from lorapack.planning import scaling
from lorapack.planning.packing import PlacementPlan, plan_placement
from lorapack.planning.snapshot import AdapterView, PodView, PoolView, Snapshot
from tests.unit.test_placement import held, settle

MiB = 2**20
MODELS = ("m1", "m2", "m3")
NAMESPACES = ("team-a", "team-b", "ml")
REASONS = {v for k, v in vars(conditions).items() if k.isupper() and isinstance(v, str)}


@st.composite
def pools(draw: st.DrawFn) -> list[PoolView]:
    count = draw(st.integers(1, 3))
    out = []
    for index in range(count):
        low = draw(st.integers(0, 2))
        allowed = draw(
            st.sampled_from(
                [
                    frozenset({"*"}),
                    frozenset(),
                    frozenset({"team-a"}),
                    frozenset({"team-a", "team-b"}),
                ]
            )
        )
        out.append(
            PoolView(
                key=f"ml/pool{index}",
                base_model=draw(st.sampled_from(MODELS[:2])),
                max_lora_rank=draw(st.sampled_from([8, 16, 32, 64])),
                adapters_per_pod=draw(st.integers(1, 6)),
                load_budget=draw(st.none() | st.sampled_from([5.0, 10.0, 30.0])),
                gpus_per_pod=1,
                cost_per_pod=draw(st.sampled_from([1.0, 2.0, 3.0])),
                min_replicas=low,
                max_replicas=draw(st.integers(max(low, 1), 8)),
                allowed_namespaces=allowed,
                max_adapter_bytes=draw(st.none() | st.just(300 * MiB)),
                cache_bytes=draw(st.none() | st.just(1000 * MiB)),
            )
        )
    return out


@st.composite
def adapters(draw: st.DrawFn, pool_keys: list[str]) -> list[AdapterView]:
    count = draw(st.integers(0, 25))
    out = []
    for index in range(count):
        low = draw(st.integers(1, 3))
        out.append(
            AdapterView(
                key=f"{draw(st.sampled_from(NAMESPACES))}/a{index:02d}",
                base_model=draw(st.sampled_from(MODELS)),
                rank=draw(st.sampled_from([0, 8, 16, 32, 64, 128])),
                size_bytes=draw(st.sampled_from([0, 80 * MiB, 160 * MiB, 320 * MiB, 640 * MiB])),
                min_replicas=low,
                max_replicas=draw(st.integers(low, 4)),
                load=draw(st.sampled_from([0.0, 0.5, 2.0, 7.0, 25.0])),
                priority=draw(st.integers(-1, 1)),
                pool_ref=draw(st.none() | st.none() | st.sampled_from([*pool_keys, "ml/missing"])),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    pool_list = draw(pools())
    adapter_list = draw(adapters([p.key for p in pool_list]))
    pods = []
    for pool in pool_list:
        for ordinal in range(pool.max_replicas):
            node = draw(st.sampled_from([None, "n0", "n1", "n2"]))
            pods.append(PodView(pool.key, ordinal, node=node))
    return Snapshot(pools=tuple(pool_list), pods=tuple(pods), adapters=tuple(adapter_list))


def copy_load(snap: Snapshot, adapter: AdapterView, pool: PoolView) -> float:
    _, load, _ = scaling.copies_and_load(
        adapter.min_replicas,
        adapter.max_replicas,
        adapter.load,
        pool.load_budget,
        pool.max_replicas,
    )
    return load


def check_invariants(snap: Snapshot, plan: PlacementPlan) -> None:
    pools = {p.key: p for p in snap.pools}
    by_key = {a.key: a for a in snap.adapters}
    placed: dict[str, int] = {}
    for pool_key, pool_plan in plan.pools.items():
        pool = pools[pool_key]
        assert pool.min_replicas <= pool_plan.desired_replicas <= pool.max_replicas
        for ordinal, keys in pool_plan.assignment.items():
            assert ordinal < pool_plan.desired_replicas
            members = keys - pool_plan.leaving.get(ordinal, frozenset())
            # Capacity: members only (leaving copies go once their replacement serves).
            assert len(members) <= pool.adapters_per_pod
            if pool.cache_bytes:
                assert sum(by_key[k].size_bytes for k in members) <= pool.cache_bytes
            if pool.load_budget:
                load = sum(copy_load(snap, by_key[k], pool) for k in members)
                assert load <= pool.load_budget + 1e-6
            for key in members:
                adapter = by_key[key]
                # Compatibility: base model, rank, namespace, size and pin.
                assert plan.adapter_pool[key] == pool_key
                assert adapter.base_model == pool.base_model
                assert adapter.rank <= pool.max_lora_rank
                assert pool.allows_namespace(adapter.namespace)
                assert adapter.pool_ref in (None, pool_key)
                if pool.max_adapter_bytes:
                    assert adapter.size_bytes <= pool.max_adapter_bytes
                placed[key] = placed.get(key, 0) + 1
            if keys and pool.key in {p.pool for p in snap.pods if not p.available}:
                lost = {p.ordinal for p in snap.pods if p.pool == pool_key and not p.available}
                assert ordinal not in lost or not members
    # Copies are on distinct pods (a set per pod), and their number is what the plan says.
    assert placed == dict(plan.replicas)
    for adapter in snap.adapters:
        copies = placed.get(adapter.key, 0)
        if adapter.key in plan.unplaceable:
            problem = plan.unplaceable[adapter.key]
            assert problem.reason in REASONS and problem.message
            assert copies < adapter.min_replicas
        else:
            assert adapter.min_replicas <= copies <= adapter.max_replicas


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(snapshots())
def test_fresh_plans_respect_every_constraint(snap: Snapshot) -> None:
    plan = plan_placement(snap)
    check_invariants(snap, plan)
    assert plan.moves == ()
    assert all(not p.leaving for p in plan.pools.values())


@PROPERTY
@given(snapshots())
def test_replanning_a_settled_state_changes_nothing(snap: Snapshot) -> None:
    first = plan_placement(snap)
    settled = settle(snap, first)
    again = plan_placement(settled)
    assert held(again) == held(first)
    assert again.moves == ()
    assert {k: p.desired_replicas for k, p in again.pools.items()} == {
        k: p.desired_replicas for k, p in first.pools.items()
    }
    check_invariants(settled, again)


@PROPERTY
@given(snapshots(), st.data())
def test_adding_an_adapter_moves_no_other(snap: Snapshot, data: st.DataObject) -> None:
    settled = settle(snap, plan_placement(snap))
    before = held(plan_placement(settled))
    extra = data.draw(adapters([p.key for p in snap.pools]).filter(bool)).pop()
    extra = dataclasses.replace(extra, key="team-a/new-adapter")
    grown = dataclasses.replace(settled, adapters=(*settled.adapters, extra))
    plan = plan_placement(grown)
    assert plan.moves == ()
    after = held(plan)
    for slot, keys in before.items():
        assert keys <= after.get(slot, frozenset()), slot
    check_invariants(grown, plan)


@PROPERTY
@given(snapshots(), st.data())
def test_losing_a_pod_replaces_only_its_adapters(snap: Snapshot, data: st.DataObject) -> None:
    settled = settle(snap, plan_placement(snap))
    before = held(plan_placement(settled))
    if not before:
        return
    lost = data.draw(st.sampled_from(sorted(before)))
    pods = tuple(
        dataclasses.replace(p, available=False) if (p.pool, p.ordinal) == lost else p
        for p in settled.pods
    )
    broken = dataclasses.replace(settled, pods=pods)
    plan = plan_placement(broken)
    assert {m.adapter for m in plan.moves} == set(before[lost])
    assert all(m.source == lost for m in plan.moves)
    after = held(plan)
    for slot, keys in before.items():
        if slot != lost:
            assert keys <= after.get(slot, frozenset()), slot
    check_invariants(broken, plan)
