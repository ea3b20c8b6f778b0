"""The placement engine's decisions, case by case: eligibility and its messages, packing, pool
choice, priorities, load, and what stays put.

The builders at the top are shared by the other placement test modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from lorapack.api import conditions
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.planning import packing, poolfill, scaling, snapshot
from lorapack.planning.packing import PlacementPlan, PlacementPolicy, plan_placement
from lorapack.planning.snapshot import AdapterView, PodView, PoolView, Slot, Snapshot
from tests import builders

MODEL = "meta-llama/Meta-Llama-3-8B"
MiB = 2**20


def make_pool(key: str = "ml/llama", **changes: Any) -> PoolView:
    """A PoolView with small, readable defaults: 4 adapters per pod, 1 to 4 pods."""
    base = PoolView(
        key=key,
        base_model=MODEL,
        max_lora_rank=64,
        adapters_per_pod=4,
        load_budget=None,
        gpus_per_pod=1,
        cost_per_pod=1.0,
        min_replicas=1,
        max_replicas=4,
        allowed_namespaces=frozenset({"*"}),
        max_adapter_bytes=None,
    )
    return dataclasses.replace(base, **changes)


def make_adapter(key: str, **changes: Any) -> AdapterView:
    """An AdapterView: rank 16, one replica, no load."""
    base = AdapterView(
        key=key,
        base_model=MODEL,
        rank=16,
        size_bytes=0,
        min_replicas=1,
        max_replicas=1,
        load=0.0,
        priority=0,
        pool_ref=None,
    )
    return dataclasses.replace(base, **changes)


def make_snapshot(
    pools: Iterable[PoolView],
    adapters: Iterable[AdapterView],
    pods: Iterable[PodView] = (),
    assignment: Mapping[Slot, Iterable[str]] | None = None,
    serving: Mapping[Slot, Iterable[str]] | None = None,
) -> Snapshot:
    return Snapshot(
        pools=tuple(pools),
        pods=tuple(pods),
        adapters=tuple(adapters),
        assignment={s: frozenset(a) for s, a in (assignment or {}).items()},
        serving={s: frozenset(a) for s, a in (serving or {}).items()},
    )


def held(plan: PlacementPlan) -> dict[Slot, frozenset[str]]:
    """Every pod's assignment in the plan, keyed by slot (empty pods left out)."""
    return {
        (pool, ordinal): adapters
        for pool, pool_plan in plan.pools.items()
        for ordinal, adapters in pool_plan.assignment.items()
        if adapters
    }


def settle(snap: Snapshot, plan: PlacementPlan) -> Snapshot:
    """The snapshot once the plan is applied and every pod serves what it was asked to."""
    done = held(plan)
    return dataclasses.replace(snap, assignment=done, serving=done)


def names(count: int, namespace: str = "team-a", prefix: str = "a") -> list[str]:
    return [f"{namespace}/{prefix}{i:02d}" for i in range(count)]


# -- eligibility: every unplaceable adapter gets a reason and a fix --------------------------

UNPLACEABLE: list[tuple[str, list[PoolView], AdapterView, str, list[str]]] = [
    (
        "no pool for the base model",
        [make_pool()],
        make_adapter("team-a/x", base_model="Qwen/Qwen2.5-7B"),
        conditions.NO_POOL,
        ["no BaseModelPool serves base model Qwen/Qwen2.5-7B", f"pools serve: {MODEL}"],
    ),
    (
        "pinned pool missing",
        [make_pool()],
        make_adapter("team-a/x", pool_ref="ml/other"),
        conditions.POOL_NOT_FOUND,
        ["spec.poolRef names BaseModelPool ml/other, which does not exist"],
    ),
    (
        "pinned pool serves another model",
        [make_pool(), make_pool("ml/qwen", base_model="Qwen/Qwen2.5-7B")],
        make_adapter("team-a/x", pool_ref="ml/qwen"),
        conditions.BASE_MODEL_MISMATCH,
        ["serves Qwen/Qwen2.5-7B, not " + MODEL],
    ),
    (
        "namespace not in the allowed list",
        [make_pool(allowed_namespaces=frozenset({"team-b"}))],
        make_adapter("team-a/x"),
        conditions.NAMESPACE_NOT_ALLOWED,
        ["namespace team-a may not use ml/llama", "add team-a"],
    ),
    (
        "empty allowed list means the pool's own namespace",
        [make_pool(allowed_namespaces=frozenset())],
        make_adapter("team-a/x"),
        conditions.NAMESPACE_NOT_ALLOWED,
        ["spec.adapters.allowedNamespaces"],
    ),
    (
        "rank above the only pool",
        [make_pool()],
        make_adapter("team-a/x", rank=128),
        conditions.RANK_TOO_LARGE,
        [
            f"adapter rank 128 is above the pool's engine.maxLoraRank for {MODEL} (highest: 64)",
            "retrain with r <= 64 or ask for a pool with maxLoraRank 128",
        ],
    ),
    (
        "rank above every pool",
        [make_pool(), make_pool("ml/llama-16", max_lora_rank=16)],
        make_adapter("team-a/x", rank=100),
        conditions.RANK_TOO_LARGE,
        ["above every pool's engine.maxLoraRank", "(highest: 64)", "maxLoraRank 128"],
    ),
    (
        "more replicas than the pool may have pods",
        [make_pool(max_replicas=2)],
        make_adapter("team-a/x", min_replicas=3, max_replicas=3),
        conditions.POOL_AT_MAX_REPLICAS,
        ["spec.replicas.min is 3", "at most 2 pods", "lower spec.replicas.min to 2"],
    ),
    (
        "larger than maxAdapterSize",
        [make_pool(max_adapter_bytes=100 * MiB)],
        make_adapter("team-a/x", size_bytes=640 * MiB),
        conditions.ADAPTER_TOO_LARGE,
        ["640.0 MiB", "largest: 100.0 MiB"],
    ),
    (
        "larger than the cache",
        [make_pool(cache_bytes=512 * MiB, max_adapter_bytes=2048 * MiB)],
        make_adapter("team-a/x", size_bytes=640 * MiB),
        conditions.ADAPTER_TOO_LARGE,
        ["largest: 512.0 MiB"],
    ),
]


@pytest.mark.parametrize(
    ("case", "pools", "adapter", "want_reason", "want_text"),
    UNPLACEABLE,
    ids=[c[0] for c in UNPLACEABLE],
)
def test_unplaceable_adapters_get_a_reason_and_a_fix(
    case: str, pools: list[PoolView], adapter: AdapterView, want_reason: str, want_text: list[str]
) -> None:
    plan = plan_placement(make_snapshot(pools, [adapter]))
    assert adapter.key not in plan.adapter_pool
    problem = plan.unplaceable[adapter.key]
    assert problem.reason == want_reason
    for text in want_text:
        assert text in problem.message, problem.message


def test_rank_message_matches_the_documented_example() -> None:
    plan = plan_placement(make_snapshot([make_pool()], [make_adapter("team-a/x", rank=128)]))
    assert plan.unplaceable["team-a/x"].message == (
        "adapter rank 128 is above the pool's engine.maxLoraRank for meta-llama/Meta-Llama-3-8B "
        "(highest: 64): retrain with r <= 64 or ask for a pool with maxLoraRank 128"
    )


def test_full_pool_says_which_limit_to_raise() -> None:
    pool = make_pool(max_replicas=1, adapters_per_pod=2)
    plan = plan_placement(make_snapshot([pool], [make_adapter(k) for k in names(3)]))
    assert sorted(plan.adapter_pool) == names(2)
    problem = plan.unplaceable["team-a/a02"]
    assert problem.reason == conditions.POOL_AT_MAX_REPLICAS
    assert "ml/llama (replicas.max 1)" in problem.message
    assert "raise replicas.max" in problem.message


def test_unknown_rank_is_assumed_to_fit() -> None:
    plan = plan_placement(make_snapshot([make_pool()], [make_adapter("team-a/x", rank=0)]))
    assert plan.adapter_pool == {"team-a/x": "ml/llama"}


def test_namespace_allowed_by_name_or_star_or_own_namespace() -> None:
    listed = make_pool("team-d/own", allowed_namespaces=frozenset({"team-e"}), base_model="d")
    assert listed.allows_namespace("team-d")  # the pool's own namespace always may
    pools = [
        make_pool("ml/named", allowed_namespaces=frozenset({"team-a"}), base_model="a"),
        make_pool("ml/star", allowed_namespaces=frozenset({"*"}), base_model="b"),
        make_pool("team-c/own", allowed_namespaces=frozenset(), base_model="c"),
    ]
    adapters = [
        make_adapter("team-a/x", base_model="a"),
        make_adapter("team-z/y", base_model="b"),
        make_adapter("team-c/z", base_model="c"),
    ]
    plan = plan_placement(make_snapshot(pools, adapters))
    assert plan.adapter_pool == {
        "team-a/x": "ml/named",
        "team-z/y": "ml/star",
        "team-c/z": "team-c/own",
    }


# -- packing ---------------------------------------------------------------------------------

PACKING: list[tuple[str, dict[str, Any], list[dict[str, Any]], int]] = [
    ("one pod holds four", {}, [{}] * 4, 1),
    ("five need two pods", {}, [{}] * 5, 2),
    ("nothing keeps replicas.min", {"min_replicas": 2}, [], 2),
    ("replicas.min may be zero", {"min_replicas": 0}, [], 0),
    ("copies need distinct pods", {}, [{"min_replicas": 3, "max_replicas": 3}], 3),
    ("cache bytes bind", {"cache_bytes": 1024 * MiB}, [{"size_bytes": 400 * MiB}] * 4, 2),
    ("load budget binds", {"load_budget": 10.0}, [{"load": 4.0}] * 4, 2),
    ("load raises copies", {"load_budget": 10.0}, [{"load": 25.0, "max_replicas": 4}], 3),
]


@pytest.mark.parametrize(
    ("case", "pool_changes", "adapter_changes", "want_pods"),
    PACKING,
    ids=[c[0] for c in PACKING],
)
def test_pods_needed(
    case: str, pool_changes: dict[str, Any], adapter_changes: list[dict[str, Any]], want_pods: int
) -> None:
    pool = make_pool(**pool_changes)
    adapters = [
        make_adapter(k, **c)
        for k, c in zip(names(len(adapter_changes)), adapter_changes, strict=True)
    ]
    plan = plan_placement(make_snapshot([pool], adapters))
    assert plan.pools[pool.key].desired_replicas == want_pods
    assert not plan.unplaceable
    assert_within_capacity(plan, [pool], adapters)


def assert_within_capacity(
    plan: PlacementPlan, pools: Iterable[PoolView], adapters: Iterable[AdapterView]
) -> None:
    """No pod holds more adapters, bytes or load than its pool allows (leaving copies aside)."""
    by_key = {a.key: a for a in adapters}
    for pool in pools:
        pool_plan = plan.pools[pool.key]
        for ordinal, keys in pool_plan.assignment.items():
            members = keys - pool_plan.leaving.get(ordinal, frozenset())
            assert len(members) <= pool.adapters_per_pod
            if pool.cache_bytes:
                assert sum(by_key[k].size_bytes for k in members) <= pool.cache_bytes
            if pool.load_budget:
                load = sum(copy_load(by_key[k], pool) for k in members)
                assert load <= pool.load_budget + 1e-6


def copy_load(adapter: AdapterView, pool: PoolView) -> float:
    _, load, _ = scaling.copies_and_load(
        adapter.min_replicas,
        adapter.max_replicas,
        adapter.load,
        pool.load_budget,
        pool.max_replicas,
    )
    return load


def test_desired_replicas_never_exceed_max() -> None:
    pool = make_pool(max_replicas=2)
    plan = plan_placement(make_snapshot([pool], [make_adapter(k) for k in names(20)]))
    assert plan.pools[pool.key].desired_replicas == 2
    assert len(plan.adapter_pool) == 8
    assert len(plan.unplaceable) == 12


def test_copies_go_to_distinct_pods_on_distinct_nodes() -> None:
    pool = make_pool(max_replicas=4, min_replicas=4)
    pods = [PodView(pool.key, o, node=f"node-{o // 2}") for o in range(4)]
    adapter = make_adapter("team-a/x", min_replicas=2, max_replicas=2)
    plan = plan_placement(make_snapshot([pool], [adapter], pods))
    slots = plan.slots_of("team-a/x")
    assert len(slots) == 2
    nodes = {pods[o].node for _, o in slots}
    assert len(nodes) == 2, slots


def test_spreading_never_opens_a_pod() -> None:
    pool = make_pool(max_replicas=4, min_replicas=2)
    pods = [PodView(pool.key, o, node="node-0") for o in range(2)]
    adapter = make_adapter("team-a/x", min_replicas=2, max_replicas=2)
    plan = plan_placement(make_snapshot([pool], [adapter], pods))
    assert plan.slots_of("team-a/x") == [(pool.key, 0), (pool.key, 1)]
    assert plan.pools[pool.key].desired_replicas == 2


def test_load_spreads_over_copies_and_warns_when_max_is_too_low() -> None:
    pool = make_pool(load_budget=10.0, max_replicas=8)
    hot = make_adapter("team-a/hot", load=50.0, max_replicas=3)
    plan = plan_placement(make_snapshot([pool], [hot]))
    assert plan.replicas["team-a/hot"] == 3
    assert "raise spec.replicas.max" in plan.warnings["team-a/hot"]
    assert_within_capacity(plan, [pool], [hot])


def test_higher_priority_is_placed_first_when_capacity_is_short() -> None:
    pool = make_pool(max_replicas=1, adapters_per_pod=2)
    adapters = [
        make_adapter("team-a/low", priority=-5),
        make_adapter("team-a/mid"),
        make_adapter("team-a/top", priority=100),
    ]
    plan = plan_placement(make_snapshot([pool], adapters))
    assert sorted(plan.adapter_pool) == ["team-a/mid", "team-a/top"]
    assert plan.unplaceable["team-a/low"].reason == conditions.POOL_AT_MAX_REPLICAS


def test_prefers_low_ordinals() -> None:
    pool = make_pool(max_replicas=4)
    plan = plan_placement(make_snapshot([pool], [make_adapter(k) for k in names(3)]))
    assert set(held(plan)) == {(pool.key, 0)}


# -- choosing among pools --------------------------------------------------------------------


def test_rank_decides_the_pool() -> None:
    small = make_pool("ml/small", max_lora_rank=16)
    large = make_pool("ml/large", max_lora_rank=64, cost_per_pod=4.0)
    adapters = [make_adapter("team-a/r8", rank=8), make_adapter("team-a/r32", rank=32)]
    plan = plan_placement(make_snapshot([small, large], adapters))
    assert plan.adapter_pool["team-a/r32"] == "ml/large"
    assert plan.adapter_pool["team-a/r8"] == "ml/small"


def test_room_already_paid_for_comes_first() -> None:
    # Both pools run one pod anyway (replicas.min 1): the adapter takes the free room in the
    # pricier pool rather than making the cheap one grow.
    cheap = make_pool("ml/cheap", cost_per_pod=1.0, min_replicas=1, adapters_per_pod=2)
    dear = make_pool("ml/dear", cost_per_pod=3.0, min_replicas=1, adapters_per_pod=2)
    adapters = [make_adapter(k) for k in names(3)]
    plan = plan_placement(make_snapshot([cheap, dear], adapters))
    assert plan.pools["ml/cheap"].desired_replicas == 1
    assert plan.pools["ml/dear"].desired_replicas == 1
    assert len(plan.adapter_pool) == 3


def test_growth_goes_to_the_cheapest_pool_per_adapter() -> None:
    # Per adapter, 8 slots for 2 GPUs beat 2 slots for 1 GPU.
    narrow = make_pool("ml/narrow", cost_per_pod=1.0, min_replicas=0, adapters_per_pod=2)
    wide = make_pool("ml/wide", cost_per_pod=2.0, min_replicas=0, adapters_per_pod=8)
    plan = plan_placement(make_snapshot([narrow, wide], [make_adapter(k) for k in names(8)]))
    assert set(plan.adapter_pool.values()) == {"ml/wide"}
    assert plan.pools["ml/wide"].desired_replicas == 1
    assert plan.pools["ml/narrow"].desired_replicas == 0


def test_overflow_goes_to_the_next_pool() -> None:
    first = make_pool("ml/a", max_replicas=1, adapters_per_pod=2, min_replicas=0)
    second = make_pool("ml/b", max_replicas=1, adapters_per_pod=2, min_replicas=0)
    plan = plan_placement(make_snapshot([first, second], [make_adapter(k) for k in names(4)]))
    assert sorted(plan.adapter_pool.values()) == ["ml/a", "ml/a", "ml/b", "ml/b"]
    assert not plan.unplaceable


def test_pinned_adapter_uses_only_its_pool() -> None:
    cheap = make_pool("ml/cheap")
    pinned = make_pool("ml/pinned", cost_per_pod=8.0)
    adapter = make_adapter("team-a/x", pool_ref="ml/pinned")
    plan = plan_placement(make_snapshot([cheap, pinned], [adapter]))
    assert plan.adapter_pool == {"team-a/x": "ml/pinned"}


# -- determinism and the public surface ------------------------------------------------------


def test_same_input_in_another_order_gives_the_same_plan() -> None:
    pools = [make_pool("ml/a", load_budget=10.0), make_pool("ml/b", cost_per_pod=2.0)]
    adapters = [
        make_adapter(
            k, load=float(i % 5), rank=8 * (1 + i % 4), min_replicas=1 + i % 2, max_replicas=3
        )
        for i, k in enumerate(names(14))
    ]
    first = plan_placement(make_snapshot(pools, adapters))
    again = plan_placement(make_snapshot(reversed(pools), reversed(adapters)))
    assert first == again


@pytest.mark.parametrize(
    ("module", "names_"),
    [
        (snapshot, {"AdapterView", "PodView", "PoolView", "Snapshot", "snapshot_from_api"}),
        (packing, {"PlacementPlan", "PlacementPolicy", "PoolPlan", "Move", "plan_placement"}),
        (scaling, {"copies_and_load", "lower_bound"}),
        (poolfill, {"PoolState"}),
    ],
    ids=["snapshot", "packing", "scaling", "poolfill"],
)
def test_public_surface(module: Any, names_: set[str]) -> None:
    assert names_ <= set(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PlacementPolicy().consolidate = False  # type: ignore[misc]


# -- building views from the API -------------------------------------------------------------


def test_pool_view_from_the_api() -> None:
    pool = BaseModelPool.model_validate(
        builders.make_pool(
            gpu={"type": "H100-SXM", "count": 2},
            engine={"maxLoras": 8, "maxLoraRank": 32, "maxCpuLoras": 24},
            adapters={
                "allowedNamespaces": ["team-a"],
                "maxAdapterSize": "512Mi",
                "cacheSize": "10Gi",
                "requestsPerSecondPerReplica": "12.5",
            },
            replicas={"min": 0, "max": 6},
        )
    )
    view = snapshot.pool_view(pool, gpu_costs={"H100-SXM": 3.0})
    assert view == PoolView(
        key="ml-platform/llama3-8b",
        base_model=MODEL,
        max_lora_rank=32,
        adapters_per_pod=24,
        load_budget=12.5,
        gpus_per_pod=2,
        cost_per_pod=6.0,
        min_replicas=0,
        max_replicas=6,
        allowed_namespaces=frozenset({"team-a"}),
        max_adapter_bytes=512 * MiB,
        cache_bytes=10 * 2**30,
        gpu_type="H100-SXM",
        s3_grants=(snapshot.Grant(frozenset({"*"}), ("s3://adapters/",)),),
    )
    assert view.namespace == "ml-platform" and view.name == "llama3-8b"
    assert view.allows_namespace("team-a") and view.allows_namespace("ml-platform")
    assert not view.allows_namespace("team-b")
    unlimited = snapshot.pool_view(BaseModelPool.model_validate(builders.make_pool()))
    assert unlimited.load_budget is None and unlimited.cost_per_pod == 1.0


def test_adapter_view_from_the_api() -> None:
    adapter = LoraAdapter.model_validate(
        builders.make_adapter(
            "chat",
            "team-b",
            rank=16,
            replicas={"min": 2, "max": 3},
            expectedLoad={"requestsPerSecond": "2.5"},
            priority=7,
            poolRef={"name": "llama3-8b", "namespace": "ml-platform"},
        )
    )
    assert snapshot.adapter_view(adapter, size_bytes=123) == AdapterView(
        key="team-b/chat",
        base_model=MODEL,
        rank=16,
        size_bytes=123,
        min_replicas=2,
        max_replicas=3,
        load=2.5,
        priority=7,
        pool_ref="ml-platform/llama3-8b",
        s3_uri="s3://adapters/team-b/chat/",
    )
    # What the operator read from the files wins over the declared rank; unknown is 0.
    adapter.status = LoraAdapterStatus(artifact=ArtifactStatus(rank=8, size_bytes=99))
    view = snapshot.adapter_view(adapter)
    assert (view.rank, view.size_bytes) == (8, 99)
    bare = LoraAdapter.model_validate(builders.make_adapter("x", poolRef={"name": "p"}))
    view = snapshot.adapter_view(bare)
    assert (view.rank, view.size_bytes, view.load, view.pool_ref) == (0, 0, 0.0, "team-a/p")


def test_snapshot_from_the_api() -> None:
    pools = [BaseModelPool.model_validate(builders.make_pool())]
    adapters = [make_adapter("team-a/x")]
    snap = snapshot.snapshot_from_api(pools, adapters, [PodView("ml-platform/llama3-8b", 0)])
    assert [p.key for p in snap.pools] == ["ml-platform/llama3-8b"]
    assert snap.assignment == {} and snap.serving == {}
    assert snapshot.pod_name("ml-platform/llama3-8b", 3) == "llama3-8b-3"
    plan = plan_placement(snap)
    assert plan.slots_of("team-a/x") == [("ml-platform/llama3-8b", 0)]
